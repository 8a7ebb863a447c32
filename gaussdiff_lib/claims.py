"""The paper's claims as checks that can fail, for any denoisers ``D(x, sigma)``.

Each claim group is one function: it takes the models under test (trained networks, or anything with the
denoiser contract), their training sets, held-out images and latents, measures them *and their controls* the same
way, and returns a :class:`Result` whose checks are :class:`gaussdiff_lib.stats.Check` objects:

- *gates* state the regime a claim needs (the small-N network memorizes, the large-N one does not); a failed gate
  makes the claim "not tested";
- *evidence* tests the claim, and carries the same test's outcome on control models
  (:class:`gaussdiff_lib.stats.Control`): the memorizer D_M of the same training set and an untrained network of the
  same architecture and preconditioning must fail it (negative controls); D_G, or the ideal transition from D_M to
  D_G, must pass it (positive control). Evidence that a negative control also passes, or that its positive control
  fails, is *uninformative* and left out of the verdict (:func:`gaussdiff_lib.stats.verdict`).

Substituting D_M for the networks in any of these functions therefore gives no "yes": a memorizer is its own
negative control. The measures are normalized where the raw number moves for reasons of its own: the distance to
D_G is read against D_M's distance to D_G at the same N (``ratio``), a sample distance against D_M's samples and
against chance (shuffled latents), the linearity score against D_M's. Seed replicates enter the intervals through a
two-level bootstrap (:func:`gaussdiff_lib.stats.hierarchical`). The book page "The paper's claims" (section "The
twelve claims") says which function tests which claim; the page "How a claim is judged" says why each control is
the right one.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from . import stats as _stats
from .compare import Comparison, compare
from .convergence import INTERMEDIATE
from .stats import Check, Control, Estimate

__all__ = ["Result", "assess", "gate", "memorizer", "untrained", "Blend", "Identity", "transition", "check_rows",
           "ratio", "gaussian_shadow", "emerging_linearity", "training_matters", "linear_gaussian", "dataset_size",
           "model_capacity", "training_time", "strong_generalization", "denoising_autoencoders", "CLAIMS",
           "COPY_GATE", "NEW_GATE", "AGREEMENT", "EPOCHS_GATE", "SELECTION_SEED", "selection_latents"]

#: latent seeds from here on are *selection* latents: they choose data-dependent settings (an early-stopping
#: snapshot, a pilot's regime); the book judges on seeds below it, so no choice is judged on the data that made it
SELECTION_SEED = 1_000_000
COPY_GATE = 0.5    #: a setting memorizes when the exact interval of its memorized fraction lies above this
NEW_GATE = 0.1     #: a setting generalizes when the upper end of that interval lies below this


def selection_latents(n: int, shape, seed: int = 0, device=None) -> torch.Tensor:
    """``n`` latents that *choose* a setting, disjoint from the judgement latents ``gd.sampling.latents(range(seed,
    seed + n), ...)`` of the same ``seed``: seeds ``SELECTION_SEED + seed`` onwards."""
    from .sampling import latents

    return latents(range(SELECTION_SEED + seed, SELECTION_SEED + seed + int(n)), shape, device=device)


# ----------------------------------------------------------------------------------------------- control models
def memorizer(X: torch.Tensor, device=None):
    """The negative control every check runs on: the multi-delta denoiser D_M of the training set X, the exact
    optimum of the denoising loss on X, which can only return training images (the book page "The paper's
    claims", section "The denoisers")."""
    from .denoisers import EmpiricalDenoiser

    return EmpiricalDenoiser(X, device=device)


def untrained(D: nn.Module, seed: int = 1_000_003) -> nn.Module:
    """An untrained copy of a network denoiser: the same architecture and preconditioning, freshly initialised.

    A denoiser of this library (``EDMDenoiser`` over a registered network) is rebuilt from its network's config with
    seed ``seed``; for any other module, a copy whose submodules' ``reset_parameters`` are called under that seed.
    With EDM's zero-initialised output layer the result is c_skip(σ)·x, the Wiener filter of an isotropic Gaussian
    of variance σ_data²: a linear denoiser that has learned nothing about the data.
    """
    from .denoisers import EDMDenoiser
    from .networks import build

    net = getattr(D, "net", None)
    if isinstance(D, EDMDenoiser) and isinstance(getattr(net, "config", None), dict):
        param = next(net.parameters())
        fresh = build(net.config, seed=seed).to(param.device, param.dtype).eval()
        return EDMDenoiser(fresh, D.sigma_data, D.precond)
    out = copy.deepcopy(D)
    resettable = [m for m in out.modules() if callable(getattr(m, "reset_parameters", None))]
    if not resettable:
        raise ValueError(f"cannot make an untrained copy of {type(D).__name__}: none of its modules has "
                         "reset_parameters(); build one yourself and pass it as a control")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for m in resettable:
            m.reset_parameters()
    return out.eval()


class Blend(nn.Module):
    """(1 - t) a(x, σ) + t b(x, σ): with a = D_M and b = D_G, a model partway from memorizing to Gaussian."""

    def __init__(self, a: nn.Module, b: nn.Module, t: float):
        super().__init__()
        if not 0.0 <= float(t) <= 1.0:
            raise ValueError(f"a blend weight t lies in [0, 1], got {t}")
        self.a, self.b, self.t = a, b, float(t)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        if self.t == 0.0:
            return self.a(x, sigma)
        if self.t == 1.0:
            return self.b(x, sigma)
        ya, yb = self.a(x, sigma), self.b(x, sigma)
        return (1 - self.t) * ya.to(torch.float64) + self.t * yb.to(torch.float64).to(ya.device)


def transition(memorizers: list, gaussians: list) -> list:
    """The positive control of a trend: along a sweep ordered from the memorizing to the generalizing end, the
    blend of each setting's D_M and D_G with weight t = i / (k - 1) on D_G (pure D_M first, pure D_G last)."""
    if len(memorizers) != len(gaussians) or len(memorizers) < 2:
        raise ValueError("a transition needs one D_M and one D_G per setting, at least two settings")
    k = len(memorizers)
    return [Blend(m, g, i / (k - 1)) for i, (m, g) in enumerate(zip(memorizers, gaussians))]


# ----------------------------------------------------------------------------------------- running the checks
Test = Callable[[dict], tuple]   # roles {setting: [labels]} -> (passed, evidence text, Estimate or None)


def assess(claim: str, number: int, test: Test, subject: dict, controls: dict, replicates: int | None = None,
           values: dict | None = None, key: str | None = None) -> Check:
    """Run one test on the models under test and on each control; return the evidence
    :class:`gaussdiff_lib.stats.Check`.

    ``test(roles)`` maps each setting of the comparison to the labels that play it ({setting: [label, ...]}: several
    labels are replicates, i.e. training seeds) and returns (passed, evidence, estimate). ``subject`` is the roles of
    the models under test, ``controls`` {name: (role, roles)} with role "negative" or "positive". The subject's
    estimate is stored in ``values[key]`` when both are given.
    """
    passed, evidence, estimate = test(subject)
    outcomes = []
    for name, (role, roles) in controls.items():
        c_passed, c_evidence, _ = test(roles)
        outcomes.append(Control(name, role, c_passed, c_evidence))
    if values is not None and key is not None:
        values[key] = estimate
    return Check(claim, passed, evidence, "evidence", tuple(outcomes), number, replicates)


def gate(claim: str, number: int, passed: bool, evidence: str = "") -> Check:
    """A regime condition of claim ``number``: if it fails, the claim is "not tested"."""
    return Check(claim, passed, evidence, "gate", (), number)


def check_rows(checks) -> list[dict]:
    """One display row per check: the claim it belongs to, its kind, what it tests, the result on the models under
    test, each control's outcome (✓ when it behaves as a control must) and whether the verdict counts it."""
    rows = []
    for c in checks:
        controls = "; ".join(f"{k.name}: {'passes' if k.passed else 'fails'} {'✓' if k.as_expected else '✗'}"
                             for k in c.controls)
        counted = {"gate passed": "gate", "gate failed": "gate (failed: not tested)", "passes": "counted",
                   "fails": "counted"}.get(c.status, f"uninformative: {c.why_uninformative}")
        rows.append({"claim": c.number if c.number is not None else "", "kind": c.kind, "check": c.claim,
                     "result": ("passes" if c.passed else "fails") + (f" ({c.evidence})" if c.evidence else ""),
                     "controls": controls or "—", "in the verdict": counted,
                     **({"seeds": c.replicates} if c.replicates else {})})
    return rows


@dataclass
class Result:
    """What a claim function found: its ``checks`` (gates and evidence with control outcomes), the
    ``comparison`` measured (subjects, replicates and controls by label), and named ``values`` for the prose
    (:class:`~gaussdiff_lib.stats.Estimate` objects, numbers or text)."""

    checks: list[Check]
    comparison: Comparison | None = None
    values: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)      # role -> {setting: label} (subjects, replicates, controls)

    @property
    def verdict(self) -> str:
        """The chapter's verdict, one of yes / partly / no / not tested (:func:`gaussdiff_lib.stats.verdict`)."""
        return _stats.verdict(self.checks)

    @property
    def verdicts(self) -> dict:
        """The verdict of each claim, keyed by the paper's claim number."""
        return _stats.verdicts(self.checks)

    def rows(self) -> list[dict]:
        """The checks as display rows (:func:`check_rows`)."""
        return check_rows(self.checks)

    def add(self, *checks: Check) -> "Result":
        """Add checks the caller knows and the function cannot, e.g. gates on the networks' convergence."""
        if not all(isinstance(c, Check) for c in checks):
            raise ValueError("add takes gd.stats.Check objects (e.g. gd.claims.gate(...))")
        self.checks.extend(checks)
        return self

    def find(self, text: str) -> Check:
        """The check whose description starts with ``text``."""
        found = [c for c in self.checks if c.claim.startswith(text)]
        if len(found) != 1:
            raise ValueError(f"{len(found)} checks start with {text!r}; the checks are {[c.claim for c in self.checks]}")
        return found[0]


# --------------------------------------------------------------------------------------------- shared statistics
def _fmt(e: Estimate | float) -> str:
    return format(e, ".3f") if isinstance(e, Estimate) else f"{e:.3f}"


def _pairs(roles: dict, a: str, b: str) -> list[tuple[str, str]]:
    """Replicate pairs of two settings: the i-th seed of one with the i-th seed of the other."""
    la, lb = roles[a], roles[b]
    n = min(len(la), len(lb))
    return list(zip(la[:n], lb[:n]))


def _ratio_stat(a_g, a_gm, b_g, b_gm):
    return b_g.mean() / b_gm.mean() - a_g.mean() / a_gm.mean()


def _ratio_change(cmp: Comparison, roles: dict, a: str, b: str) -> Estimate:
    """ratio(b) - ratio(a), ratio = RMSE(D, D_G) / RMSE(D_M, D_G) over intermediate σ, paired over held-out images
    within each seed pair and bootstrapped over seed pairs too."""
    reps = [(cmp.items(x, "rmse_G_mid"), cmp.items(x, "rmse_GM_mid"), cmp.items(y, "rmse_G_mid"),
             cmp.items(y, "rmse_GM_mid")) for x, y in _pairs(roles, a, b)]
    return _stats.hierarchical(_ratio_stat, reps)


def ratio(cmp: Comparison, labels: list[str]) -> Estimate:
    """RMSE(D, D_G) / RMSE(D_M, D_G) over intermediate σ for a setting's replicates (0: D_G itself, 1: as far from
    D_G as the memorizer of the same data), with its two-level interval."""
    return _stats.hierarchical(lambda g, gm: g.mean() / gm.mean(),
                               [(cmp.items(x, "rmse_G_mid"), cmp.items(x, "rmse_GM_mid")) for x in labels])


def _paired_change(cmp: Comparison, roles: dict, a: str, b: str, measure: str, stat=None) -> Estimate:
    """measure(b) - measure(a) over seed pairs, paired over the shared items."""
    stat = stat or (lambda v: v.mean())
    reps = [(cmp.items(x, measure), cmp.items(y, measure)) for x, y in _pairs(roles, a, b)]
    return _stats.hierarchical(lambda u, v: stat(v) - stat(u), reps)


def _advantage(cmp: Comparison, roles: dict, setting: str, memorizer_label: dict) -> list[tuple]:
    """Per seed: (RMSE of D_M's samples to the Gaussian samples, RMSE of the model's), on the same latents."""
    m = memorizer_label[setting]
    return [(cmp.items(m, "rmse_gauss_sample"), cmp.items(x, "rmse_gauss_sample")) for x in roles[setting]]


def _min_ls(v):
    return v.mean(-1).min()


# -------------------------------------------------------------------------------------- sweeps of one setting
@dataclass
class _Sweep:
    """Subjects, replicates and controls of one sweep, measured together by :func:`compare`."""

    settings: list[str]                 # ordered from the memorizing to the generalizing end
    comparison: Comparison
    subject: dict                       # {setting: [labels of its replicates]}
    controls: dict                      # {name: (role, {setting: [label]})}
    memorizer: dict                     # {setting: label of its D_M}
    replicates: int

    def roles(self, name: str) -> dict:
        return self.subject if name == "subject" else self.controls[name][1]


def _sweep(models: dict, train_sets: dict, heldout, latents, replicates: dict | None, order: list[str],
           linearity_levels=None, n_pairs: int = 100, seed: int = 0, device=None, progress=None,
           untrained_models=None, extra: dict | None = None) -> _Sweep:
    """Measure a sweep's models, their replicates, their controls and ``extra`` {label: (denoiser, setting)} models
    (measured on the setting's training set) in one :func:`compare`."""
    from .denoisers import GaussianDenoiser

    if set(models) != set(train_sets):
        raise ValueError(f"models and train_sets need the same settings, got {sorted(models)} and {sorted(train_sets)}")
    if len(models) < 2:
        raise ValueError("a sweep compares at least two settings")
    replicates = {k: list(v) for k, v in (replicates or {}).items()}
    unknown = set(replicates) - set(models)
    if unknown:
        raise ValueError(f"replicates name settings {sorted(unknown)} that are not among the models {list(models)}")
    all_models, all_sets = {}, {}
    subject = {}
    for s in order:
        subject[s] = [s]
        all_models[s], all_sets[s] = models[s], train_sets[s]
        for i, D in enumerate(replicates.get(s, []), start=2):
            label = f"{s} (seed {i})"
            subject[s].append(label)
            all_models[label], all_sets[label] = D, train_sets[s]
    gaussians = {s: GaussianDenoiser.from_data(train_sets[s], device=device, cache=True) for s in order}
    memo = {s: memorizer(train_sets[s], device=device) for s in order}
    blends = dict(zip(order, transition([memo[s] for s in order], [gaussians[s] for s in order])))
    ctrl = {"D_M": ("negative", {}), "untrained network": ("negative", {}), "D_M → D_G transition": ("positive", {})}
    for s in order:
        for name, D in (("D_M", memo[s]), ("untrained network", _untrained_for(untrained_models, models, s)),
                        ("D_M → D_G transition", blends[s])):
            label = f"{name} | {s}"
            ctrl[name][1][s] = [label]
            all_models[label], all_sets[label] = D, train_sets[s]
    for label, (D, s) in (extra or {}).items():
        if s not in models or label in all_models:
            raise ValueError(f"extra model {label!r} must name a setting of the sweep and a new label")
        all_models[label], all_sets[label] = D, train_sets[s]
    gauss_by_label = {lab: gaussians[s] for s in order for lab in
                      [*subject[s], *(ctrl[n][1][s][0] for n in ctrl)]}
    gauss_by_label.update({label: gaussians[s] for label, (_, s) in (extra or {}).items()})
    cmp = compare(all_models, all_sets, heldout, latents, linearity_levels=linearity_levels, n_pairs=n_pairs,
                  gaussians=gauss_by_label, seed=seed, device=device, progress=progress)
    n_rep = min(len(v) for v in subject.values())
    return _Sweep(list(order), cmp, subject, ctrl, {s: ctrl["D_M"][1][s][0] for s in order}, n_rep)


def _untrained_for(given, models: dict, setting: str):
    """The untrained control of one setting: the caller's (one model, or {setting: model}), else a fresh copy of the
    setting's network (:func:`untrained`)."""
    if isinstance(given, dict):
        if setting not in given:
            raise ValueError(f"untrained gives no model for setting {setting!r}; it has {sorted(given)}")
        return given[setting]
    if given is not None:
        return given
    return untrained(models[setting])


def _decisive_replicates(sw: _Sweep, a: str, b: str) -> int:
    return min(len(sw.subject[a]), len(sw.subject[b]))


def _regime_gates(sw: _Sweep, number: int, mem_end: str, gen_end: str, what: dict) -> list[Check]:
    cmp = sw.comparison
    mem = _stats.proportion(torch.cat([cmp.items(x, "copies") for x in sw.subject[mem_end]]))
    new = _stats.proportion(torch.cat([cmp.items(x, "copies") for x in sw.subject[gen_end]]))
    return [gate(f"regime for claim {number}: {what[mem_end]} memorizes (most samples copy a training image)", number,
                 mem.lo > COPY_GATE, f"copies {mem:.0%}"),
            gate(f"regime for claim {number}: {what[gen_end]} copies almost no training image (fewer than "
                 f"{NEW_GATE:.0%})", number, new.hi < NEW_GATE, f"copies {new:.0%}")]


def _ratio_check(sw: _Sweep, number: int, a: str, b: str, text: str, values: dict, key: str) -> Check:
    def test(roles):
        d = _ratio_change(sw.comparison, roles, a, b)
        return d.hi < 0, f"change {_fmt(d)}", d
    return assess(text, number, test, sw.subject, sw.controls, _decisive_replicates(sw, a, b), values, key)


def _sample_checks(sw: _Sweep, number: int, a: str, b: str, what: dict, values: dict) -> list[Check]:
    """The sample-level version: how much closer to the Gaussian samples the model's samples are than D_M's samples
    (the memorizer's 'advantage', paired over latents), at the generalizing end and its change along the sweep."""
    cmp = sw.comparison

    def at_end(roles):
        adv = _stats.hierarchical(lambda m, x: m.mean() - x.mean(), _advantage(cmp, roles, b, sw.memorizer))
        return adv.lo > 0, f"D_M's sample distance minus the model's {_fmt(adv)}", adv

    def grows(roles):
        reps = [(*ma, *mb) for ma, mb in zip(_advantage(cmp, roles, a, sw.memorizer),
                                             _advantage(cmp, roles, b, sw.memorizer))]
        d = _stats.hierarchical(lambda ma, xa, mb, xb: (mb.mean() - xb.mean()) - (ma.mean() - xa.mean()), reps)
        return d.lo > 0, f"change {_fmt(d)}", d
    return [assess(f"samples of {what[b]} lie closer to the Gaussian model's samples than D_M's samples do", number,
                   at_end, sw.subject, sw.controls, len(sw.subject[b]), values, "sample_advantage"),
            assess(f"that advantage over D_M grows from {what[a]} to {what[b]}", number, grows, sw.subject,
                   sw.controls, _decisive_replicates(sw, a, b), values, "sample_advantage_change")]


def _linearity_change(cmp: Comparison, roles: dict, a: str, b: str, memorizer_label: dict) -> Estimate:
    """[minLS(D_b) - minLS(D_M of b)] - [minLS(D_a) - minLS(D_M of a)], paired over the linearity pairs."""
    reps = [(cmp.items(x, "min_ls"), cmp.items(memorizer_label[a], "min_ls"), cmp.items(y, "min_ls"),
             cmp.items(memorizer_label[b], "min_ls")) for x, y in _pairs(roles, a, b)]
    return _stats.hierarchical(lambda xa, ma, xb, mb: (_min_ls(xb) - _min_ls(mb)) - (_min_ls(xa) - _min_ls(ma)),
                               reps)


def _sweep_values(sw: _Sweep, values: dict) -> None:
    cmp = sw.comparison
    for s in sw.settings:
        labels = sw.subject[s]
        values[f"ratio | {s}"] = ratio(cmp, labels)
        values[f"ratio D_M | {s}"] = ratio(cmp, [sw.memorizer[s]])
        values[f"copies | {s}"] = _stats.proportion(torch.cat([cmp.items(x, "copies") for x in labels]))
        values[f"seed range of the ratio | {s}"] = [float(ratio(cmp, [x]).value) for x in labels]


# ----------------------------------------------------------------------------------------------- claim groups
#: The epochs gate of claim 6. Training the largest set several times longer may move its ratio
#: RMSE(D, D_G) / RMSE(D_M, D_G) by at most this much (the whole interval of the change), fixed before any
#: network is measured so that the gate does not depend on the effect it guards.
EPOCHS_GATE = 0.025


def dataset_size(models: dict, train_sets: dict, heldout: torch.Tensor, latents: torch.Tensor,
                 replicates: dict | None = None, linearity_levels=None, n_pairs: int = 100, long_run=None,
                 untrained=None, seed: int = 0, device=None, progress: bool | None = None) -> Result:
    """Claims 6 and 12 (paper Figs 6, 13): at fixed capacity, a larger training set brings out the Gaussian
    structure, and the GL and linearity scores rise with N.

    Args:
        models: {setting: denoiser} in order of growing N (one network, nested training sets); train_sets likewise.
        heldout, latents: clean held-out images (distances, GL reference) and shared latents (samples).
        replicates: {setting: [denoiser, ...]} the same setting trained with other seeds (model, data order and
            noise); the decisive comparison is between the first and last setting, so those two need them.
        linearity_levels: σ levels of the linearity score (claim 12's second half); None leaves it out.
        long_run: (setting, denoiser) the largest-N network trained several times longer: the epochs gate.
        untrained: the untrained control, one model or {setting: model} (default: a fresh copy of each network,
            :func:`untrained`; give one when the models are not networks, e.g. D_M substituted for them).

    Gates (claims 6 and 12): the smallest N memorizes, the largest copies almost nothing; with ``long_run``, the
    longer training moves the ratio by less than ``EPOCHS_GATE``. Evidence: the ratio
    RMSE(D, D_G) / RMSE(D_M, D_G) over intermediate σ falls from the smallest to the largest N (claim 6); the GL
    score of the samples rises (claim 12); the minimum linearity score rises relative to D_M's at the same N
    (claim 12). Controls: D_M at every N (ratio 1 throughout), an untrained network, and the transition from D_M at
    the smallest N to D_G at the largest (positive).
    """
    order = list(models)
    extra = {}
    if long_run is not None:
        name, D = long_run
        if name not in models:
            raise ValueError(f"long_run trains setting {name!r} longer, but the settings are {order}")
        extra = {f"{name}, trained longer": (D, name)}
    sw = _sweep(models, train_sets, heldout, latents, replicates, order, linearity_levels, n_pairs, seed, device,
                progress, untrained, extra)
    cmp, values = sw.comparison, {}
    a, b = order[0], order[-1]
    what = {s: f"N = {train_sets[s].shape[0]:,}" for s in order}
    _sweep_values(sw, values)
    checks = []
    for number in (6, 12):
        checks += _regime_gates(sw, number, a, b, what)
    if extra:
        (longer, (_, name)), = extra.items()
        d_long = _stats.paired(cmp.items(longer, "rmse_G_mid") / cmp.items(longer, "rmse_GM_mid").mean(),
                               cmp.items(name, "rmse_G_mid") / cmp.items(name, "rmse_GM_mid").mean())
        effect = abs(values[f"ratio | {b}"].value - values[f"ratio | {a}"].value)
        values["longer"] = d_long
        values["longer copies"] = cmp.estimate(longer, "copies")
        values["longer ratio"] = ratio(cmp, [longer])
        checks.append(gate(f"epochs: training {what[name]} longer moves its ratio to D_M by less than "
                           f"{EPOCHS_GATE:g}", 6, max(abs(d_long.lo), abs(d_long.hi)) < EPOCHS_GATE,
                           f"change {_fmt(d_long)} (for scale: the N effect is {effect:.3f})"))
    checks.append(_ratio_check(sw, 6, a, b, f"RMSE(D, D_G) / RMSE(D_M, D_G) over intermediate σ falls from "
                               f"{what[a]} to {what[b]}", values, "ratio_change"))

    def gl_rises(roles):
        d = _paired_change(cmp, roles, a, b, "gl")
        return d.lo > 0, f"change {_fmt(d)}", d
    checks.append(assess(f"the GL score of the samples rises from {what[a]} to {what[b]}", 12, gl_rises, sw.subject,
                         sw.controls, _decisive_replicates(sw, a, b), values, "gl_change"))
    if linearity_levels is not None:
        def ls_rises(roles):
            d = _linearity_change(cmp, roles, a, b, sw.memorizer)
            return d.lo > 0, f"change of minLS(D) − minLS(D_M) {_fmt(d)}", d
        checks.append(assess(f"the minimum linearity score, relative to D_M's at the same N, rises from {what[a]} to "
                             f"{what[b]}", 12, ls_rises, sw.subject, sw.controls, _decisive_replicates(sw, a, b),
                             values, "ls_change"))
    return Result(checks, cmp, values, {"subject": sw.subject, "memorizer": sw.memorizer,
                                        **{n: r for n, (_, r) in sw.controls.items()}})


def gaussian_shadow(models: dict, train_sets: dict, heldout: torch.Tensor, latents: torch.Tensor,
                    replicates: dict | None = None, untrained=None, seed: int = 0, device=None,
                    progress: bool | None = None) -> Result:
    """Claim 6 at the level of samples (paper Figs 1 and 6): two networks of one recipe, trained on a small and a
    large nested set ({"small": D, "large": D}), sampled from the same latents beside their Gaussian models.

    Gates: the small-set network memorizes, the large-set one copies almost nothing. Evidence: the large-set
    network's samples lie closer to its Gaussian model's samples than its memorizer's samples do (paired over
    latents), and that advantage over D_M grows from the small to the large set. Controls as in
    :func:`dataset_size`.
    """
    if list(models) != ["small", "large"]:
        raise ValueError(f"gaussian_shadow compares the settings 'small' and 'large' (in that order), got {list(models)}")
    sw = _sweep(models, train_sets, heldout, latents, replicates, ["small", "large"], seed=seed, device=device,
                progress=progress, untrained_models=untrained)
    values = {}
    _sweep_values(sw, values)
    what = {s: f"the {s}-set network (N = {train_sets[s].shape[0]:,})" for s in models}
    checks = _regime_gates(sw, 6, "small", "large", what)
    checks += _sample_checks(sw, 6, "small", "large", {"small": "the small set", "large": "the large set"}, values)
    cmp = sw.comparison
    for s in models:
        values[f"sample distance | {s}"] = _stats.hierarchical(lambda v: v.mean(), [
            cmp.items(x, "rmse_gauss_sample") for x in sw.subject[s]])
        values[f"sample distance D_M | {s}"] = cmp.estimate(sw.memorizer[s], "rmse_gauss_sample")
        values[f"chance | {s}"] = cmp.estimate(s, "rmse_chance")
    return Result(checks, cmp, values, {"subject": sw.subject, "memorizer": sw.memorizer,
                                        **{n: r for n, (_, r) in sw.controls.items()}})


def emerging_linearity(models: dict, train_sets: dict, heldout: torch.Tensor, levels, n_pairs: int = 100,
                       replicates: dict | None = None, untrained=None, seed: int = 0, device=None,
                       progress: bool | None = None) -> Result:
    """Claim 1 (paper Fig 1): denoisers become more linear as N grows, least linear at intermediate σ.

    ``models`` in order of growing N. Measures the linearity score over ``levels`` on the same pairs of noisy
    held-out images for every model and every control. Evidence: the minimum linearity score relative to D_M's at
    the same N rises from the smallest to the largest N; at the largest N the network is more linear than D_M; the
    least linear level of every network lies in the intermediate range. Controls: D_M at every N, an untrained
    network, the D_M → D_G transition (positive).
    """
    from . import metrics

    order = list(models)
    if set(models) != set(train_sets) or len(order) < 2:
        raise ValueError("emerging_linearity needs at least two settings, with a training set each")
    from .denoisers import GaussianDenoiser

    levels = [float(s) for s in levels]
    gaussians = {s: GaussianDenoiser.from_data(train_sets[s], device=device, cache=True) for s in order}
    memo = {s: memorizer(train_sets[s], device=device) for s in order}
    blends = dict(zip(order, transition([memo[s] for s in order], [gaussians[s] for s in order])))
    curves, subject = {}, {}
    ctrl = {"D_M": ("negative", {}), "untrained network": ("negative", {}), "D_M → D_G transition": ("positive", {})}

    def measure(label, D):
        curves[label] = metrics.linearity_curve(D, heldout, levels, n_pairs=n_pairs, seed=seed, reduce=False)
    for s in order:
        subject[s] = [s]
        measure(s, models[s])
        for i, D in enumerate((replicates or {}).get(s, []), start=2):
            subject[s].append(f"{s} (seed {i})")
            measure(subject[s][-1], D)
        for name, D in (("D_M", memo[s]), ("untrained network", _untrained_for(untrained, models, s)),
                        ("D_M → D_G transition", blends[s])):
            ctrl[name][1][s] = [f"{name} | {s}"]
            measure(f"{name} | {s}", D)
    mem = {s: ctrl["D_M"][1][s][0] for s in order}
    a, b = order[0], order[-1]
    what = {s: f"N = {train_sets[s].shape[0]:,}" for s in order}
    n_dec = min(len(subject[a]), len(subject[b]))
    values = {}

    def rises(roles):
        reps = [(curves[x], curves[mem[a]], curves[y], curves[mem[b]]) for x, y in _pairs(roles, a, b)]
        d = _stats.hierarchical(lambda xa, ma, xb, mb: (_min_ls(xb) - _min_ls(mb)) - (_min_ls(xa) - _min_ls(ma)),
                                reps)
        return d.lo > 0, f"change of minLS(D) − minLS(D_M) {_fmt(d)}", d

    def above(roles):
        d = _stats.hierarchical(lambda x, m: _min_ls(x) - _min_ls(m), [(curves[x], curves[mem[b]]) for x in roles[b]])
        return d.lo > 0, f"minLS(D) − minLS(D_M) {_fmt(d)}", d

    def where(roles):
        at = {s: [levels[int(curves[x].mean(1).argmin())] for x in roles[s]] for s in order}
        ok = all(INTERMEDIATE[0] <= v <= INTERMEDIATE[1] for vs in at.values() for v in vs)
        return ok, "least linear at σ ≈ " + ", ".join(f"{v:.3g}" for vs in at.values() for v in vs), None
    checks = [assess(f"the minimum linearity score, relative to D_M's at the same N, rises from {what[a]} to "
                     f"{what[b]}", 1, rises, subject, ctrl, n_dec, values, "ls_change"),
              assess(f"at {what[b]} the network is more linear than D_M of its training set (minimum over σ)", 1,
                     above, subject, ctrl, len(subject[b]), values, "ls_above_memorizer"),
              assess("every network is least linear at an intermediate σ (0.116 to 20)", 1, where, subject, ctrl)]
    for s in order:
        values[f"min LS | {s}"] = _stats.hierarchical(_min_ls, [curves[x] for x in subject[s]])
        values[f"min LS D_M | {s}"] = _stats.bootstrap(_min_ls, curves[mem[s]])
        values[f"argmin | {s}"] = levels[int(curves[s].mean(1).argmin())]
    res = Result(checks, None, values, {"subject": subject, "memorizer": mem, **{n: r for n, (_, r) in ctrl.items()}})
    res.curves = curves
    return res


def model_capacity(models: dict, train_sets: dict, heldout: torch.Tensor, latents: torch.Tensor,
                   replicates: dict | None = None, linearity_levels=None, n_pairs: int = 100, untrained=None,
                   seed: int = 0, device=None, progress: bool | None = None) -> Result:
    """Claim 7 (paper Fig 7): at fixed N, a smaller network is closer to the Gaussian structure, at the price of
    accuracy at high σ.

    ``models`` in order of growing width, all on one training set. Gates: the widest network memorizes, the
    narrowest copies almost nothing. Evidence: the ratio RMSE(D, D_G) / RMSE(D_M, D_G) over intermediate σ falls
    from the widest to the narrowest network; the narrowest network's samples are closer to the Gaussian samples
    than D_M's, and more so than the widest network's. The high-σ price is reported with its interval but has no
    positive control (no exact model carries a network's high-σ error), so it does not enter the verdict.
    Controls: D_M, an untrained network of each width, the D_M → D_G transition from the widest to the narrowest
    (positive).
    """
    widths = list(models)
    order = widths[::-1]            # from the memorizing (widest) to the generalizing (narrowest) end
    sw = _sweep(models, train_sets, heldout, latents, replicates, order, linearity_levels, n_pairs, seed, device,
                progress, untrained)
    cmp, values = sw.comparison, {}
    wide, narrow = order[0], order[-1]
    what = {s: f"the {'widest' if s == wide else 'narrowest' if s == narrow else ''} network ({s})" for s in order}
    _sweep_values(sw, values)
    checks = _regime_gates(sw, 7, wide, narrow, what)
    checks.append(_ratio_check(sw, 7, wide, narrow, f"RMSE(D, D_G) / RMSE(D_M, D_G) over intermediate σ falls from "
                               f"{what[wide]} to {what[narrow]}", values, "ratio_change"))
    checks += _sample_checks(sw, 7, wide, narrow, what, values)

    def high(roles):
        d = _paired_change(cmp, roles, wide, narrow, "rmse_G_max")
        return d.lo > 0, f"narrowest minus widest {_fmt(d)}", d
    checks.append(assess(f"the price: {what[narrow]} is farther from D_G at the highest σ than {what[wide]}", 7, high,
                         sw.subject, {k: v for k, v in sw.controls.items() if v[0] == "negative"},
                         _decisive_replicates(sw, wide, narrow), values, "high_sigma_price"))
    return Result(checks, cmp, values, {"subject": sw.subject, "memorizer": sw.memorizer,
                                        **{n: r for n, (_, r) in sw.controls.items()}})


# ---------------------------------------------------------------------------------- linear models (claims 3-5, 11)
class Identity(nn.Module):
    """D(x, σ) = x: the denoiser every good denoiser tends to as σ → 0 (claim 11's positive control)."""

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return x


def _corrected(per: torch.Tensor, errors: list[float]) -> Callable:
    """A statistic over per-image distances [S, B] to a fitted linear model: the RMS over images at each level with
    the fit's own output error removed in squares (E d² = d*² + e² for a fit error uncorrelated with the rest),
    averaged over the levels."""
    e2 = torch.tensor([float(e or 0.0) ** 2 for e in errors], dtype=torch.float64)

    def stat(v):
        return (v.square().mean(-1) - e2).clamp_min(0).sqrt().mean()
    return stat


def linear_gaussian(nets: dict, train_sets: dict, fit_images: torch.Tensor, eval_images: torch.Tensor,
                    latents: torch.Tensor, levels=None, n_noise: int = 8, target_error: float | None = 0.05,
                    max_noise: int = 32, unreachable: str = "report", k_align: int | None = None, untrained=None,
                    seed: int = 0, device=None, progress: bool | None = None) -> Result:
    """Claims 3, 4, 5 and 11 (paper Figs 2-5, 16): the best linear approximation D_L of a generalizing network is
    the Gaussian denoiser D_G; a memorizing network's is not.

    Args:
        nets: {"small": memorizing network, "large": generalizing network}, trained with one recipe.
        train_sets: their training images; fit_images / eval_images: disjoint held-out images for the fits and the
            distances; latents: for the samples of the linear models.
        levels: the σ levels fitted (default: the paper's 10).
        n_noise, target_error, max_noise, unreachable: the fits' options (:func:`gaussdiff_lib.linear_fit.fit_linear`).
        k_align: singular vectors compared (default min(100, d / 2)).

    Every network *and every control* is fitted the same way, on the same images and draws: D_M of each training
    set, an untrained network (it is affine, so its fit is exact). D_G is its own best affine approximation. Distances
    to a fitted model are corrected for the fit's output error, weight distances for its W error, so a noisier fit
    (D_M's, whose residual is large) is not made to look farther from D_G by its noise.

    Evidence, each run on the controls:

    - claim 3: RMSE(D_L, D) < 0.05 at the high (σ > 20) and low (σ < 0.116) levels for the generalizing network;
    - claim 4 at intermediate σ (0.116 to 20), for the generalizing network: its D_L is closer to D_G than D_M's D_L
      is; RMSE(D_L, D_G) < 0.05 at every level; its weights are closer to W_G than D_M's; its top singular
      vectors are better aligned with W_G's than D_M's; its D_L's samples lie closer to D_G's samples than those
      of D_M's D_L. Negative controls: D_M, the untrained network; positive: D_G.
    - claim 5 for the memorizing network (the claim predicts memorizer-like behaviour, so D_M is the *positive*
      control and D_G and the untrained network the negative ones): its D_L is closer to D_M's D_L than to D_G;
      the linear model fits it worse than it fits the generalizing network.
    - claim 11 at the lowest level, for the set with N < d: the gap RMSE(D, D_G) equals the identity map's within
      10% (a rank-N-1 D_G cannot reach the identity, whatever the network). Positive controls: the identity and
      the untrained network (c_skip x ≈ x there); negative: D_M (it returns a training image), D_G.
    """
    from . import metrics, sampling
    from .denoisers import GaussianDenoiser
    from .linear_fit import fit_linear

    if sorted(nets) != ["large", "small"] or set(train_sets) != set(nets):
        raise ValueError(f"linear_gaussian compares nets 'small' and 'large' with their training sets, got "
                         f"{sorted(nets)} and {sorted(train_sets)}")
    levels = [float(s) for s in (sampling.edm_sigmas(10)[:-1].tolist() if levels is None else levels)]
    d = int(eval_images[0].numel())
    k_align = min(100, d // 2) if k_align is None else int(k_align)
    mid = [i for i, s in enumerate(levels) if INTERMEDIATE[0] <= s <= INTERMEDIATE[1]]
    ends = [i for i, s in enumerate(levels) if s > INTERMEDIATE[1] or s < INTERMEDIATE[0]]
    if not mid or not ends:
        raise ValueError(f"levels {levels} need intermediate (0.116 to 20) and high or low levels")
    G = {k: GaussianDenoiser.from_data(X, device=device, cache=True) for k, X in train_sets.items()}
    M = {k: memorizer(X, device=device) for k, X in train_sets.items()}
    U = _untrained_for(untrained, nets, "large")
    fit = lambda D: fit_linear(D, fit_images, levels, n_noise=n_noise, target_error=target_error,  # noqa: E731
                               max_noise=max_noise, device=device, seed=seed, unreachable=unreachable,
                               progress=progress)
    models = {"large": nets["large"], "small": nets["small"], "D_M | large": M["large"], "D_M | small": M["small"],
              "untrained": U}
    linear = {k: fit(D) for k, D in models.items()}
    models.update({"D_G | large": G["large"], "D_G | small": G["small"]})
    linear.update({"D_G | large": G["large"], "D_G | small": G["small"]})
    errors = {k: [i["rmse_error"] for i in L.info] if hasattr(L, "info") else [0.0] * len(levels)
              for k, L in linear.items()}
    rel = {k: [i["rel_error"] or 0.0 for i in L.info] if hasattr(L, "info") else [0.0] * len(levels)
           for k, L in linear.items()}
    gauss_of = lambda k: G["small"] if k.endswith("small") else G["large"]  # noqa: E731
    dist = lambda a, b: metrics.distance_curve(a, b, eval_images, levels, seed=seed, reduce=False)  # noqa: E731
    per = {}
    for k in models:
        per[k, "(L, θ)"] = dist(linear[k], models[k])
        per[k, "(L, G)"] = dist(linear[k], gauss_of(k))
        per[k, "(G, θ)"] = dist(gauss_of(k), models[k])
        per[k, "(M, θ)"] = dist(M["small" if k.endswith("small") else "large"], models[k])
    per["small", "(L, L_M)"] = dist(linear["small"], linear["D_M | small"])
    for k in ("D_M | small", "D_G | small", "untrained"):
        per[k, "(L, L_M)"] = dist(linear[k], linear["D_M | small"])
    wd = {k: [metrics.weight_distance(linear[k].weight(s), gauss_of(k).weight(s), fit_error=rel[k][i])
              for i, s in enumerate(levels)] for k in linear}
    werr = {k: [rel[k][i] * float(torch.linalg.norm(linear[k].weight(s))) / float(torch.linalg.norm(
        gauss_of(k).weight(s))) for i, s in enumerate(levels)] for k in linear}
    schedule = sampling.edm_sigmas(len(levels)) if levels == sampling.edm_sigmas(len(levels))[:-1].tolist() else None
    samples = {}
    if schedule is not None:
        xg = sampling.euler(G["large"], latents, schedule).cpu()
        for k in ("large", "D_M | large", "untrained", "D_G | large"):
            samples[k] = sampling.euler(linear[k], latents, schedule).cpu()
        samples["network"] = sampling.euler(nets["large"], latents, schedule).cpu()
        samples["Gaussian"] = xg
    values = {}
    large_roles = {"subject": "large", "D_M": "D_M | large", "untrained network": "untrained", "D_G": "D_G | large"}
    neg_pos = {"D_M": "negative", "untrained network": "negative", "D_G": "positive"}

    def run(text, number, test, roles=large_roles, kinds=neg_pos, key=None):
        controls = {name: (kinds[name], {"x": [roles[name]]}) for name in kinds}
        return assess(text, number, lambda r: test(r["x"][0]), {"x": [roles["subject"]]}, controls, 1, values, key)

    def fit_close(k):
        stats_ = [_stats.bootstrap(_corrected(per[k, "(L, θ)"][[i]], [errors[k][i]]), per[k, "(L, θ)"][[i]])
                  for i in ends]
        worst = max(stats_, key=lambda e: e.hi)
        return all(e.hi < 0.05 for e in stats_), f"largest {_fmt(worst)}", worst

    def closer_than_memorizer(k):
        m = "D_M | large"
        a = _corrected(per[k, "(L, G)"][mid], [errors[k][i] for i in mid])
        b = _corrected(per[m, "(L, G)"][mid], [errors[m][i] for i in mid])
        diff = _stats.bootstrap(lambda u, v: b(v) - a(u), per[k, "(L, G)"][mid], per[m, "(L, G)"][mid])
        return diff.lo > 0, f"D_M's minus this {_fmt(diff)}", diff

    def below_005(k):
        stats_ = [_stats.bootstrap(_corrected(per[k, "(L, G)"][[i]], [errors[k][i]]), per[k, "(L, G)"][[i]])
                  for i in range(len(levels))]
        worst = max(range(len(levels)), key=lambda i: stats_[i].hi)
        return all(e.hi < 0.05 for e in stats_), f"largest {_fmt(stats_[worst])} at σ = {levels[worst]:.3g}", \
            stats_[worst]

    def weights_closer(k):
        m = "D_M | large"
        measured = [metrics.weight_distance(linear[k].weight(levels[i]), gauss_of(k).weight(levels[i])) for i in mid]
        mine, theirs = sum(measured) / len(mid), sum(wd[m][i] for i in mid) / len(mid)
        return mine < theirs, f"{mine:.3f} as measured vs D_M's {theirs:.3f} corrected for its fit error, mean over " \
            "intermediate σ", None

    usable = [i for i in mid if all(rel[k][i] <= 0.1 for k in ("large", "D_M | large"))]

    def aligned(k):
        m = "D_M | large"
        ov = lambda key, i: _overlap(linear[key].weight(levels[i]), G["large"].weight(levels[i]), k_align)  # noqa
        mine = sum(ov(k, i) for i in usable) / len(usable)
        theirs = sum(ov(m, i) for i in usable) / len(usable)
        return mine > theirs, f"top-{k_align} subspace overlap {mine:.3f} vs D_M's {theirs:.3f} at σ = " + \
            ", ".join(f"{levels[i]:.3g}" for i in usable), mine

    def samples_closer(k):
        m = "D_M | large"
        a, b = metrics.sample_rmse(samples[k], samples["Gaussian"]), metrics.sample_rmse(samples[m], samples["Gaussian"])
        diff = _stats.paired(b.cpu(), a.cpu())
        return diff.lo > 0, f"D_M's D_L sample distance minus this {_fmt(diff)}", diff
    checks = [run("claim 3: the linear model fits the generalizing network to RMSE < 0.05 at every high and low level",
                  3, fit_close, key="claim3_worst"),
              run("claim 4: over intermediate σ, the generalizing network's D_L is closer to D_G than D_M's D_L is", 4,
                  closer_than_memorizer, key="lg_vs_memorizer"),
              run("claim 4: RMSE(D_L, D_G) < 0.05 at every σ (the paper's threshold)", 4, below_005, key="lg_worst"),
              run("claim 4: over intermediate σ its weights are closer to W_G than D_M's D_L weights are (its distance "
                  "as measured, D_M's corrected)", 4, weights_closer)]
    if usable:
        checks.append(run(f"claim 4: its top-{k_align} singular directions align with W_G's better than D_M's D_L's do",
                          4, aligned, key="alignment"))
    else:
        checks.append(Check(f"claim 4: its top-{k_align} singular directions align with W_G's better than D_M's D_L's "
                            "do", False, "not run: at no intermediate level do both fits resolve W to 10%",
                            number=4, replicates=1))
    if samples:
        checks.append(run("claim 4: its D_L's samples lie closer to D_G's samples than those of D_M's D_L", 4,
                          samples_closer, key="linear_samples"))
    small_roles = {"subject": "small", "D_M": "D_M | small", "D_G": "D_G | small", "untrained network": "untrained"}
    swapped = {"D_M": "positive", "D_G": "negative", "untrained network": "negative"}

    def nearer_memorizer(k):
        dm = per[k, "(L, L_M)"][mid].mean(0)
        dg = per[k, "(L, G)"][mid].mean(0) if k != "untrained" else per["untrained", "(L, G)"][mid].mean(0)
        if k == "untrained":     # the untrained map against the small set's D_G
            dg = dist(linear["untrained"], G["small"])[mid].mean(0)
        diff = _stats.paired(dg, dm)
        return diff.lo > 0, f"RMSE to D_G minus RMSE to D_M's D_L {_fmt(diff)}", diff

    def fits_worse(k):
        own = per[k, "(L, θ)"][mid].mean(0) if k != "untrained" else per["untrained", "(L, θ)"][mid].mean(0)
        diff = _stats.paired(own, per["large", "(L, θ)"][mid].mean(0))
        return diff.lo > 0, f"RMSE(D_L, D) minus the generalizing network's {_fmt(diff)}", diff
    checks += [run("claim 5: the memorizing network's D_L is nearer D_M's D_L than D_G (intermediate σ)", 5,
                   nearer_memorizer, small_roles, swapped, "small_nearer_memorizer"),
               run("claim 5: the linear model fits the memorizing network worse than the generalizing one", 5,
                   fits_worse, small_roles, swapped, "small_fits_worse")]
    low = min(range(len(levels)), key=lambda i: levels[i])
    ident = Identity()
    gap_id = metrics.denoiser_distance(ident, G["small"], eval_images, levels[low], seed=seed, reduce=False)
    low_models = {"small": nets["small"], "D_M | small": M["small"], "D_G | small": G["small"], "identity": ident,
                  "untrained": U}

    def gap_is_identity(k):
        mine = metrics.denoiser_distance(low_models[k], G["small"], eval_images, levels[low], seed=seed, reduce=False)
        rel_gap = _stats.bootstrap(lambda a, b: (a.mean() - b.mean()).abs() / b.mean(), mine, gap_id)
        return rel_gap.hi < 0.1, f"|gap − identity's gap| / identity's gap {_fmt(rel_gap)}", rel_gap
    n_small, n_large = train_sets["small"].shape[0], train_sets["large"].shape[0]
    checks.append(gate(f"claim 11 regime: the small set has fewer images than dimensions (N = {n_small} < d = {d})",
                       11, n_small < d, f"N = {n_small}, d = {d}"))
    checks.append(run(f"claim 11: at σ = {levels[low]:.3g} the small-set network's gap to D_G is the identity's (within "
                      "10%): it measures N, not the network", 11, gap_is_identity,
                      {"subject": "small", "D_M": "D_M | small", "D_G": "D_G | small", "identity": "identity",
                       "untrained network": "untrained"},
                      {"D_M": "negative", "D_G": "negative", "identity": "positive", "untrained network": "positive"},
                      "low_gap"))
    values["identity gap"] = _stats.mean(gap_id)
    values["n"] = (n_small, n_large, d)
    res = Result(checks, None, values, {})
    res.linear, res.distances, res.weight_distance, res.weight_error = linear, per, wd, werr
    res.samples, res.errors, res.rel_errors, res.levels, res.k_align = samples, errors, rel, levels, k_align
    return res


def _overlap(W: torch.Tensor, W_ref: torch.Tensor, k: int) -> float:
    """How much of the top-k left singular subspace of W lies in W_ref's: ||U_kᵀ V_k||_F² / k (1: the same
    subspace; k / d for unrelated ones), insensitive to the order of near-equal singular values."""
    from .metrics import singular_vector_alignment

    M, _ = singular_vector_alignment(W, W_ref, k=k)
    return float(M.square().sum() / M.shape[0])


# ------------------------------------------------------------------------------------- training recipe (claim 2)
def training_matters(edm, baselines: dict, train_set: torch.Tensor, heldout: torch.Tensor, latents: torch.Tensor,
                     seed_control=None, linearity_levels=None, n_pairs: int = 100, untrained=None, seed: int = 0,
                     device=None, progress: bool | None = None) -> Result:
    """Claim 2 (paper Fig 11): linearity, and closeness to D_G, need a well-trained model: one network trained with
    EDM's preconditioning and loss against the same network trained as the baselines ({name: denoiser}).

    ``seed_control``: EDM trained again with another seed; the difference between the two EDM runs is the floor a
    difference must exceed. Evidence per baseline: EDM's minimum linearity score (over all σ, and over intermediate
    σ alone) exceeds the baseline's by more than the floor; EDM is closer to D_G over intermediate σ (by more than
    the floor of that distance). Each is run with D_M, an untrained network and D_G in EDM's place.
    """
    if not baselines:
        raise ValueError("training_matters compares EDM with at least one baseline")
    lv = linearity_levels if linearity_levels is not None else None
    if lv is None:
        raise ValueError("training_matters needs linearity_levels (the linearity score is the claim)")
    from .denoisers import GaussianDenoiser

    G = GaussianDenoiser.from_data(train_set, device=device, cache=True)
    models = {"EDM": edm, **baselines}
    if seed_control is not None:
        models["EDM, other seed"] = seed_control
    models.update({"D_M": memorizer(train_set, device=device),
                   "untrained network": _untrained_for(untrained, {"EDM": edm}, "EDM"), "D_G": G})
    cmp = compare(models, {k: train_set for k in models}, heldout, latents, linearity_levels=lv, n_pairs=n_pairs,
                  gaussians={k: G for k in models}, seed=seed, device=device, progress=progress)
    mid = [i for i, s in enumerate(cmp.linearity_levels) if INTERMEDIATE[0] <= s <= INTERMEDIATE[1]]
    values = {}

    def floor_of(measure, stat=None, rows=None):
        if seed_control is None:
            return 0.0
        a, b = cmp.items("EDM", measure), cmp.items("EDM, other seed", measure)
        if rows is not None:
            a, b = a[rows], b[rows]
        e = _stats.paired(a, b, stat)
        return max(abs(e.lo), abs(e.hi))
    floors = {"min_ls": floor_of("min_ls", _min_ls), "mid_ls": floor_of("min_ls", _min_ls, mid),
              "rmse_G_mid": floor_of("rmse_G_mid")}
    values["floors"] = floors
    controls = {"D_M": ("negative", {"EDM": ["D_M"]}), "untrained network": ("negative", {"EDM": ["untrained network"]}),
                "D_G": ("positive", {"EDM": ["D_G"]})}
    reps = 1     # each baseline is trained once; the EDM seed control sets the floor, it does not replicate them
    checks = []
    for b in baselines:
        def more_linear(roles, b=b):
            x = roles["EDM"][0]
            gap = _stats.paired(cmp.items(x, "min_ls"), cmp.items(b, "min_ls"), _min_ls)
            return gap.lo > floors["min_ls"], f"difference {_fmt(gap)}, seed floor {floors['min_ls']:.3f}", gap

        def more_linear_mid(roles, b=b):
            x = roles["EDM"][0]
            gap = _stats.paired(cmp.items(x, "min_ls")[mid], cmp.items(b, "min_ls")[mid], _min_ls)
            return gap.lo > floors["mid_ls"], f"difference {_fmt(gap)}, seed floor {floors['mid_ls']:.3f}", gap

        def closer(roles, b=b):
            x = roles["EDM"][0]
            gap = cmp.difference(b, x, "rmse_G_mid")
            return gap.lo > floors["rmse_G_mid"], f"difference {_fmt(gap)}, seed floor {floors['rmse_G_mid']:.3f}", gap
        subject = {"EDM": ["EDM"]}
        checks += [assess(f"EDM's minimum linearity exceeds the {b}'s by more than two EDM seeds differ", 2,
                          more_linear, subject, controls, reps, values, f"ls gap | {b}"),
                   assess(f"over intermediate σ alone, EDM's minimum linearity exceeds the {b}'s by more than the "
                          "seed floor", 2, more_linear_mid, subject, controls, reps, values, f"mid ls gap | {b}"),
                   assess(f"EDM is closer to D_G over intermediate σ than the {b}, by more than the seed floor", 2,
                          closer, subject, controls, reps, values, f"rmse gap | {b}")]
    return Result(checks, cmp, values, {"subject": {"EDM": ["EDM"]}})


# ----------------------------------------------------------------------------------------- training time (claim 8)
def _disjoint_latents(z_sel: torch.Tensor, z_jud: torch.Tensor) -> None:
    """Refuse selection latents that share a row with the judgement latents (the winner's curse)."""
    a, b = z_sel.reshape(z_sel.shape[0], -1), z_jud.reshape(z_jud.shape[0], -1)
    if a.shape[1] == b.shape[1]:
        judged = {row.numpy().tobytes() for row in b.detach().float().cpu()}
        shared = sum(row.numpy().tobytes() in judged for row in a.detach().float().cpu())
        if shared:
            raise ValueError(f"{shared} selection latents are also judgement latents: choose on latents drawn from "
                             "another seed (gd.claims.selection_latents) so the choice is not judged on its own data")


def _series_select(cmp: Comparison, labels: list[str]) -> int:
    """Index of the snapshot (not the last) whose samples lie closest to the Gaussian samples on ``cmp``'s latents."""
    means = [float(cmp.items(x, "rmse_gauss_sample").mean()) for x in labels[:-1]]
    return min(range(len(means)), key=lambda i: means[i])


def training_time(series: dict, train_set: torch.Tensor, selection: tuple, judgement: tuple,
                  replicates: list | None = None, untrained=None, seed: int = 0, device=None,
                  progress: bool | None = None) -> Result:
    """Claim 8 (paper Fig 8): an over-parameterized network passes through the Gaussian structure early in training,
    then memorizes, so early stopping generalizes.

    Args:
        series: {label: denoiser} the snapshots of one run in training order (the last is the end of training).
        train_set: its training images.
        selection: (held-out images, latents): the latents *choose* the early-stopping snapshot, the one (before
            the end) whose samples lie closest to the Gaussian model's samples; the held-out images only feed the
            selection comparison's other measures, kept in ``Result.selection`` for display. judgement: (held-out
            images, latents) that *judge* the choice; their latents must share no row with the selection latents.
            Choosing and judging on the same latents would favour the chosen snapshot by chance alone (a winner's
            curse).
        replicates: the same snapshots of runs with other seeds, [{label: denoiser}, ...] with the same labels;
            each run chooses its own snapshot.

    Gate: the run memorizes by its end. Evidence (on the judgement data): the samples at the chosen snapshot lie
    closer to the Gaussian samples than at the end; the ratio RMSE(D, D_G) / RMSE(D_M, D_G) over intermediate σ is
    lower at the chosen snapshot than at the end; more samples copy at the end than at the chosen snapshot. Controls:
    D_M and an untrained network at every snapshot (negative), and the transition from D_G at the first snapshot to
    D_M at the end (positive).
    """
    from .denoisers import GaussianDenoiser

    labels = list(series)
    if len(labels) < 3:
        raise ValueError("training_time needs at least three snapshots (early, later, end)")
    runs = [series, *(replicates or [])]
    for r in runs[1:]:
        if list(r) != labels:
            raise ValueError(f"every replicate needs the snapshots {labels}, got {list(r)}")
    G = GaussianDenoiser.from_data(train_set, device=device, cache=True)
    M = memorizer(train_set, device=device)
    U = _untrained_for(untrained, {"end": series[labels[-1]]}, "end")
    blends = transition([M] * len(labels), [G] * len(labels))[::-1]      # D_G first, D_M at the end
    models, roles = {}, {"subject": [], "D_M": [], "untrained network": [], "D_G → D_M transition": []}
    for j, r in enumerate(runs):
        tag = "" if j == 0 else f" (seed {j + 1})"
        roles["subject"].append([f"{lab}{tag}" for lab in labels])
        models.update({f"{lab}{tag}": r[lab] for lab in labels})
    for name, make in (("D_M", lambda i: M), ("untrained network", lambda i: U),
                       ("D_G → D_M transition", lambda i: blends[i])):
        roles[name].append([f"{name} | {lab}" for lab in labels])
        models.update({f"{name} | {lab}": make(i) for i, lab in enumerate(labels)})
    sets = {k: train_set for k in models}
    gs = {k: G for k in models}
    (h_sel, z_sel), (h_jud, z_jud) = selection, judgement
    _disjoint_latents(z_sel, z_jud)
    sel = compare(models, sets, h_sel, z_sel, gaussians=gs, seed=seed + 1, device=device, progress=progress)
    jud = compare(models, sets, h_jud, z_jud, gaussians=gs, seed=seed, device=device, progress=progress)
    values = {"chosen": {}}

    def chosen(series_labels):
        i = _series_select(sel, series_labels)
        return series_labels[i], series_labels[-1]

    def closer(rs):
        reps = []
        for lab in rs:
            best, end = chosen(lab)
            reps.append((jud.items(best, "rmse_gauss_sample"), jud.items(end, "rmse_gauss_sample")))
        d = _stats.hierarchical(lambda b, e: e.mean() - b.mean(), reps)
        return d.lo > 0, f"end minus chosen snapshot {_fmt(d)}", d

    def ratio_lower(rs):
        reps = []
        for lab in rs:
            best, end = chosen(lab)
            reps.append((jud.items(best, "rmse_G_mid"), jud.items(end, "rmse_G_mid"), jud.items(end, "rmse_GM_mid")))
        d = _stats.hierarchical(lambda b, e, gm: (e.mean() - b.mean()) / gm.mean(), reps)
        return d.lo > 0, f"ratio at the end minus at the chosen snapshot {_fmt(d)}", d

    def copies_rise(rs):
        reps = []
        for lab in rs:
            best, end = chosen(lab)
            reps.append((jud.items(best, "copies"), jud.items(end, "copies")))
        d = _stats.hierarchical(lambda b, e: e.mean() - b.mean(), reps)
        return d.lo > 0, f"memorized fraction at the end minus at the chosen snapshot {_fmt(d)}", d
    subject = {"x": roles["subject"]}
    ctrl = {"D_M": ("negative", {"x": roles["D_M"]}), "untrained network": ("negative", {"x": roles["untrained network"]}),
            "D_G → D_M transition": ("positive", {"x": roles["D_G → D_M transition"]})}
    wrap = lambda f: (lambda r: f(r["x"]))  # noqa: E731
    n = len(runs)
    end_copies = _stats.proportion(torch.cat([jud.items(lab[-1], "copies") for lab in roles["subject"]]))
    checks = [gate("regime: the network memorizes by the end of training (most samples copy)", 8,
                   end_copies.lo > COPY_GATE, f"copies {end_copies:.0%}"),
              assess("the samples at the chosen snapshot lie closer to the Gaussian samples than at the end", 8,
                     wrap(closer), subject, ctrl, n, values, "samples_closer"),
              assess("the ratio RMSE(D, D_G) / RMSE(D_M, D_G) over intermediate σ is lower at the chosen snapshot", 8,
                     wrap(ratio_lower), subject, ctrl, n, values, "ratio_lower"),
              assess("more samples copy a training image at the end than at the chosen snapshot", 8, wrap(copies_rise),
                     subject, ctrl, n, values, "copies_rise")]
    for j, lab in enumerate(roles["subject"]):
        values["chosen"][j] = chosen(lab)[0]
    values["end copies"] = end_copies
    res = Result(checks, jud, values, roles)
    res.selection = sel
    return res


# ------------------------------------------------------------------------------------ strong generalization (9)
#: How near "near-identical" is. Beyond the seed floor, disjoint halves may change a model's samples by at most
#: the change they make to the Gaussian models' samples plus this much (in units of the chance distance)
AGREEMENT = 0.05


def _check_halves(name: str, pair) -> tuple[list, list]:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not pair[0] or not pair[1]:
        raise ValueError(f"{name}: give (networks on half 1, networks on half 2), at least one each; the i-th of "
                         "each list form a pair and must differ in their seed")
    return list(pair[0]), list(pair[1])


def strong_generalization(large, small, train_sets: dict, latents: dict, narrow=None, early: dict | None = None,
                          selection_latents: torch.Tensor | None = None, gaussian_pair: tuple | None = None,
                          n_steps: int = 10, untrained=None, device=None, progress: bool | None = None) -> Result:
    """Claim 9 (paper Figs 9, 26): networks trained on disjoint halves S1, S2 of a large set produce near-identical
    samples from the same noise, which match their Gaussian models' samples; on small halves they memorize and
    differ; early stopping or a narrow network restores agreement; Gaussians of a small and a large set agree.

    Args:
        large, small, narrow: (networks on half 1, networks on half 2). The i-th networks of the two lists form a
            *cross pair* (disjoint data, different seeds); two networks on one half are a *floor* pair (same data,
            different seeds). With two seeds per half (half 1 with seeds a, b; half 2 with b, a) there are two cross
            pairs and two floors: the replicates.
        train_sets: {"large": (X1, X2), "small": (X1, X2)}; ``narrow`` and ``early`` use the small halves.
        latents: {"large": z, "small": z} shaped like each setting's images (the judgement latents).
        early: {step: (half 1 networks, half 2 networks)} snapshots of the small-halves runs; the step is *chosen* on
            ``selection_latents`` (disjoint from the judgement latents): the one whose samples lie closest to their
            own Gaussian model's samples, a criterion that needs no held-out data.
        gaussian_pair: (small set, large set at the small set's resolution) for "Gaussians of a small and a large
            set give near-identical samples".
        untrained: the untrained control, one model or {"large": model, "small": model} (default: a fresh copy of
            each setting's first network, so each has that setting's resolution).

    Every agreement is measured on the chance scale: RMSE(x, y) over latents divided by the RMSE of x to the
    sample of another latent (shuffled latents), so 0 is identical and 1 is unrelated; a pair's *position* puts its
    disagreement between that of the two halves' Gaussians (0) and that of their memorizers (1). Evidence: on large
    halves, disjoint data add to the seed floor (in squares: sqrt(cross² − floor²)) no more than they change the
    Gaussian models' samples (plus ``AGREEMENT``) *and* each network's samples lie closer to its own Gaussian's
    samples than its memorizer's do (the claim as the paper states it, both halves at once); the second part alone;
    small halves sit nearer their memorizers than large halves do; early stopping and a narrow network move the
    small halves towards their Gaussians; two Gaussians agree better than two memorizers. Controls: D_M of each half
    (negative: a memorizer's halves share no images), an untrained network (negative), D_G of each half (positive); for the remedies, the ideal D_G
    halves against D_M halves; for the Gaussians, shuffled latents (negative) and one Gaussian against itself
    (positive).
    """
    from . import metrics, sampling
    from .denoisers import GaussianDenoiser

    settings = {"large": _check_halves("large", large), "small": _check_halves("small", small)}
    if narrow is not None:
        settings["narrow"] = _check_halves("narrow", narrow)
    schedule = sampling.edm_sigmas(int(n_steps))
    data_of = lambda s: "large" if s == "large" else "small"  # noqa: E731
    for key in ("large", "small"):
        if key not in train_sets or len(train_sets[key]) != 2 or key not in latents:
            raise ValueError(f"train_sets[{key!r}] must be (half 1, half 2) and latents[{key!r}] its latents")
    G = {k: [GaussianDenoiser.from_data(X, device=device, cache=True) for X in train_sets[k]] for k in ("large", "small")}
    M = {k: [memorizer(X, device=device) for X in train_sets[k]] for k in ("large", "small")}
    # one untrained control per data setting: the small halves may have another resolution than the large ones
    U = {k: _untrained_for(untrained, {k: settings[k][0][0]}, k) for k in ("large", "small")}
    sample = lambda D, z: sampling.euler(D, z, schedule).cpu()  # noqa: E731
    X = {k: train_sets[data_of(k)] for k in settings}
    values = {}

    def agreement(x, y):
        return metrics.sample_rmse(x, y).cpu(), metrics.sample_rmse(x, y.roll(-1, dims=0)).cpu()

    # the models playing each setting: the networks, and the controls (one 'seed' each: they have none)
    def play(k, halves, z):
        h1, h2 = halves
        s1, s2 = [sample(D, z) for D in h1], [sample(D, z) for D in h2]
        return {"cross": [agreement(a, b) for a, b in zip(s1, s2)],
                "floor": ([agreement(s1[0], s1[1])] if len(s1) > 1 else []) +
                         ([agreement(s2[0], s2[1])] if len(s2) > 1 else []),
                "samples": (s1, s2)}
    gs = {k: (sample(G[data_of(k)][0], latents[data_of(k)]), sample(G[data_of(k)][1], latents[data_of(k)]))
          for k in settings}
    played = {"subject": {k: play(k, settings[k], latents[data_of(k)]) for k in settings}}
    for name, halves in (("D_M", lambda k: ([M[data_of(k)][0]], [M[data_of(k)][1]])),
                         ("untrained network", lambda k: ([U[data_of(k)]], [U[data_of(k)]])),
                         ("D_G", lambda k: ([G[data_of(k)][0]], [G[data_of(k)][1]]))):
        played[name] = {k: play(k, halves(k), latents[data_of(k)]) for k in settings}
    chosen = None
    if early:
        if selection_latents is None:
            raise ValueError("early stopping is chosen on selection_latents, disjoint from the judgement latents")
        _disjoint_latents(selection_latents, latents["small"])
        score = {}
        for step, halves in early.items():
            h1, h2 = _check_halves(f"early[{step}]", halves)
            dists = [metrics.sample_rmse(sample(D, selection_latents), sample(G["small"][0 if i < len(h1) else 1],
                                                                                selection_latents)).mean()
                     for i, D in enumerate([*h1, *h2])]
            score[step] = float(sum(dists) / len(dists))
        chosen = min(score, key=score.get)
        values["early"] = {"chosen step": chosen, "scores": score, "chosen on": "selection latents"}
        played["subject"]["early"] = play("early", early[chosen], latents["small"])
        X["early"] = train_sets["small"]
        gs["early"] = gs["small"]
        for name in ("D_M", "untrained network", "D_G"):
            played[name]["early"] = played[name]["small"]
    ideal = {k: played["D_G"][k] for k in played["subject"]}
    ideal["small"] = played["D_M"]["small"]          # the positive control of a remedy: memorizer, then Gaussian

    def a_stat(r, c):           # chance-scale agreement of one pair: mean RMSE / mean chance RMSE
        return r.mean() / c.mean()

    def own_gaussian(pl, k):
        s1, s2 = pl[k]["samples"]
        g1, g2 = gs[k]
        m1, m2 = played["D_M"][k]["samples"][0][0], played["D_M"][k]["samples"][1][0]
        reps = [(metrics.sample_rmse(m1, g1).cpu(), metrics.sample_rmse(x, g1).cpu()) for x in s1] + \
               [(metrics.sample_rmse(m2, g2).cpu(), metrics.sample_rmse(x, g2).cpu()) for x in s2]
        return _stats.hierarchical(lambda m, x: m.mean() - x.mean(), reps)

    def data_effect(pl, k):
        """Chance-scale agreement of the cross pairs, of the floors (0 for models without a seed: a second training
        of an exact model is the same model), and the data's own effect over replicate pairs. Seed noise and the
        change of data add as independent squared distances, so the data effect is sqrt(cross² − floor²) (0 when
        the cross pair differs less than the floor)."""
        cross_pairs = pl[k]["cross"]
        floors = pl[k]["floor"] or [(torch.zeros_like(r), torch.ones_like(c)) for r, c in cross_pairs]
        cross = _stats.hierarchical(a_stat, cross_pairs)
        floor = _stats.hierarchical(a_stat, floors)
        reps = [(*c, *f) for c, f in zip(cross_pairs, floors)]
        eff = _stats.hierarchical(
            lambda r, c, fr, fc: max(float(r.mean() / c.mean()) ** 2 - float(fr.mean() / fc.mean()) ** 2, 0.0) ** 0.5,
            reps)
        return cross, floor, eff

    def a_gauss(k):              # how much the two halves' Gaussians differ (chance units): what the data allow
        r, c = agreement(*gs[k])
        return float(r.mean() / c.mean())

    def strong(pl):
        _, _, eff = data_effect(pl, "large")
        adv = own_gaussian(pl, "large")
        limit = a_gauss("large") + AGREEMENT
        ok = eff.hi < limit and adv.lo > 0
        return ok, (f"data effect {_fmt(eff)} against the Gaussians' {a_gauss('large'):.3f} + {AGREEMENT:g} (chance "
                    f"units); own-Gaussian advantage over D_M {_fmt(adv)}"), eff

    def near_gauss(pl):
        adv = own_gaussian(pl, "large")
        return adv.lo > 0, f"D_M's distance to the Gaussian samples minus the networks' {_fmt(adv)}", adv

    def position(pl, k):
        """Per cross pair: where the pair's disagreement lies between the Gaussians' (0) and the memorizers' (1),
        on the chance scale, as arrays for the bootstrap."""
        r_m, c_m = agreement(played["D_M"][k]["samples"][0][0], played["D_M"][k]["samples"][1][0])
        r_g, c_g = agreement(*gs[k])
        return [(r, c, r_g, c_g, r_m, c_m) for r, c in pl[k]["cross"]]

    def pos_stat(r, c, rg, cg, rm, cm):
        ag, am = rg.mean() / cg.mean(), rm.mean() / cm.mean()
        return (r.mean() / c.mean() - ag) / (am - ag)

    def differ(pl):
        reps = [(*s, *l) for s, l in zip(position(pl, "small"), position(pl, "large"))]
        d = _stats.hierarchical(lambda *v: pos_stat(*v[:6]) - pos_stat(*v[6:]), reps)
        return d.lo > 0, f"small minus large, position between the Gaussians (0) and the memorizers (1) {_fmt(d)}", d

    def restores(k):
        def test(pl):
            reps = [(*r, *s) for r, s in zip(position(pl, k), position(pl, "small"))]
            d = _stats.hierarchical(lambda *v: pos_stat(*v[6:]) - pos_stat(*v[:6]), reps)
            return d.lo > 0, f"small halves minus {k}, position between Gaussians (0) and memorizers (1) {_fmt(d)}", d
        return test
    controls = {"D_M": ("negative", played["D_M"]), "untrained network": ("negative", played["untrained network"]),
                "D_G": ("positive", played["D_G"])}
    remedy_controls = {"D_M": ("negative", played["D_M"]),
                       "untrained network": ("negative", played["untrained network"]),
                       "D_M → D_G (memorizer, then Gaussian)": ("positive", ideal)}
    n_cross = lambda k: len(played["subject"][k]["cross"])  # noqa: E731
    copies = {k: _stats.proportion(torch.cat([(metrics.copy_ratio(x, Xh) < 1 / 3).double().cpu()
                                              for xs, Xh in zip(played["subject"][k]["samples"], X[k]) for x in xs]))
              for k in settings}
    values.update({f"copies | {k}": v for k, v in copies.items()})
    checks = [gate("regime: the networks on the large halves copy almost no training image (fewer than "
                   f"{NEW_GATE:.0%})", 9, copies["large"].hi < NEW_GATE, f"copies {copies['large']:.0%}"),
              gate("regime: the networks on the small halves memorize (most samples copy)", 9,
                   copies["small"].lo > COPY_GATE, f"copies {copies['small']:.0%}"),
              assess("large halves: beyond the seed floor, disjoint data change the networks' samples no more than the "
                     f"Gaussian models' (+ {AGREEMENT:g} of chance), and each network's samples match its own "
                     "Gaussian's better than its memorizer's do", 9, strong,
                     played["subject"], controls, n_cross("large"), values, "data_effect"),
              assess("large halves: each network's samples lie closer to its own Gaussian's samples than D_M's do", 9,
                     near_gauss, played["subject"], controls, len(settings["large"][0]) + len(settings["large"][1]),
                     values, "own_gaussian"),
              assess("small halves disagree more than large halves, relative to their Gaussians and memorizers", 9,
                     differ, played["subject"],
                     remedy_controls, min(n_cross("small"), n_cross("large")), values, "small_vs_large")]
    for k, what in (("early", "stopping early"), ("narrow", "a narrow network")):
        if k in played["subject"]:
            checks.append(assess(f"{what} restores agreement on the small halves", 9, restores(k), played["subject"],
                                 {**remedy_controls, "D_M → D_G (memorizer, then Gaussian)":
                                  ("positive", {**ideal, k: played["D_G"][k]})},
                                 min(n_cross(k), n_cross("small")), values, f"restores | {k}"))
    for k in played["subject"]:
        cross, floor, eff = data_effect(played["subject"], k)
        values[f"agreement | {k}"], values[f"floor | {k}"], values[f"data effect | {k}"] = cross, floor, eff
        values[f"RMSE(S1, S2) | {k}"] = _stats.hierarchical(lambda r, c: r.mean(), played["subject"][k]["cross"])
        s1, s2 = played["subject"][k]["samples"]
        values[f"RMSE(S, own G) | {k}"] = _stats.hierarchical(lambda r: r.mean(), [
            metrics.sample_rmse(x, g).cpu() for xs, g in ((s1, gs[k][0]), (s2, gs[k][1])) for x in xs])
        values[f"chance | {k}"] = _stats.hierarchical(lambda r, c: c.mean(), played["subject"][k]["cross"])
        if played["subject"][k]["floor"]:
            values[f"RMSE floor | {k}"] = _stats.hierarchical(lambda r, c: r.mean(), played["subject"][k]["floor"])
            values[f"ratio to floor | {k}"] = _stats.hierarchical(
                lambda r, c, fr, fc: r.mean() / fr.mean(),
                [(*c, *f) for c, f in zip(played["subject"][k]["cross"], played["subject"][k]["floor"])])
    if gaussian_pair is not None:
        Xs, Xl = gaussian_pair
        zs = latents["small"]
        g_s = sample(GaussianDenoiser.from_data(Xs, device=device), zs)
        g_l = sample(GaussianDenoiser.from_data(Xl, device=device), zs)
        m_s, m_l = sample(memorizer(Xs, device=device), zs), sample(memorizer(Xl, device=device), zs)
        pairs = {"subject": (g_s, g_l), "D_M": (m_s, m_l), "shuffled latents": (g_s, g_l.roll(-1, dims=0)),
                 "one Gaussian against itself": (g_l, g_l)}
        mem = agreement(m_s, m_l)

        def gauss_agree(p):
            r, c = agreement(*pairs[p["x"][0]])
            d = _stats.paired(torch.stack([mem[0] / mem[1].mean()]), torch.stack([r / c.mean()]))
            return d.lo > 0, f"memorizers' disagreement minus the Gaussians' (chance units) {_fmt(d)}", d
        checks.append(assess("Gaussians of a small and a large set agree better than their memorizers", 9,
                             gauss_agree, {"x": ["subject"]},
                             {"D_M": ("negative", {"x": ["D_M"]}),
                              "shuffled latents": ("negative", {"x": ["shuffled latents"]}),
                              "one Gaussian against itself": ("positive", {"x": ["one Gaussian against itself"]})},
                             None, values, "gaussians_agree"))
        values["gaussian pair"] = _stats.mean(metrics.sample_rmse(g_s, g_l).cpu())
        values["gaussian pair samples"] = (g_s, g_l)
    res = Result(checks, None, values, {})
    res.samples = {k: v["samples"] for k, v in played["subject"].items()}
    res.gaussian_samples = gs
    return res


# ---------------------------------------------------------------------------------- denoising autoencoders (10)
def denoising_autoencoders(daes: dict, linear: dict, train_set: torch.Tensor, fit_images: torch.Tensor,
                           eval_images: torch.Tensor, diffusion=None, target_error: float | None = 0.05,
                           n_noise: int = 8, max_noise: int = 32, untrained=None, seed: int = 0, device=None,
                           progress: bool | None = None) -> Result:
    """Claim 10 (paper Fig 24): the Gaussian bias belongs to denoising autoencoders in general, not to diffusion
    training: one-level DAEs of several architectures, each trained at one σ, have best linear approximations near
    D_G's.

    Args:
        daes: {architecture: {σ: denoiser}} the nonlinear DAEs; linear: {σ: denoiser} the linear DAE trained on the
            same loss, images and σ (its steps and batch may differ; Theorem 1 says it converges to D_G: the
            *positive control* of the training objective).
        diffusion: the diffusion model on the same images, fitted the same way for comparison (not a check).

    Each DAE, D_M, an untrained network, the linear DAE and the diffusion model are fitted by the closed-form
    least-squares fit at the DAE's σ on ``fit_images``. A fit's sampling error adds to the distance it measures, so
    a DAE's distance to W_G is taken *as measured* (in expectation an upper bound) and D_M's *corrected* for its fit
    error (in expectation unbiased): every doubt counts against the DAE. Evidence per architecture, at every trained
    σ: its D_L is closer to W_G than D_M's D_L; its outputs are closer to D_G than to D_M (paired over held-out
    images); its D_L is within the paper's 0.2 of W_G (as measured). Controls: D_M and the untrained network (negative), D_G and
    the linear DAE (positive).
    """
    from . import metrics
    from .denoisers import GaussianDenoiser
    from .linear_fit import fit_linear

    if not daes:
        raise ValueError("denoising_autoencoders needs at least one architecture of DAEs")
    levels = sorted({float(s) for table in daes.values() for s in table}, reverse=True)
    for name, table in daes.items():
        if sorted(float(s) for s in table) != sorted(levels):
            raise ValueError(f"every architecture must be trained at the same σ levels; {name} has {sorted(table)}")
    if linear is not None and sorted(float(s) for s in linear) != sorted(levels):
        raise ValueError(f"the linear DAEs must cover the σ levels {levels}, got {sorted(linear)}")
    G = GaussianDenoiser.from_data(train_set, device=device, cache=True)
    M = memorizer(train_set, device=device)
    first = next(iter(daes.values()))
    U = _untrained_for(untrained, {"x": first[max(first)]}, "x")
    models = {s: {**{k: table[s] for k, table in daes.items()}, "D_M": M, "untrained network": U,
                  **({"linear DAE": linear[s]} if linear is not None else {}),
                  **({"diffusion model": diffusion} if diffusion is not None else {})} for s in levels}
    fits, wd, werr, per, raw = {}, {}, {}, {}, {}
    for s in levels:
        for k, D in models[s].items():
            f = fit_linear(D, fit_images, [s], n_noise=n_noise, target_error=target_error, max_noise=max_noise,
                           device=device, seed=seed, unreachable="report", progress=progress)
            e = f.info[0]["rel_error"] or 0.0
            fits[k, s] = f
            wd[k, s] = metrics.weight_distance(f.weight(s), G.weight(s), fit_error=e)
            raw[k, s] = metrics.weight_distance(f.weight(s), G.weight(s))
            werr[k, s] = e * float(torch.linalg.norm(f.weight(s))) / float(torch.linalg.norm(G.weight(s)))
            per[k, s] = {r: metrics.denoiser_distance(D, R, eval_images, s, seed=seed, reduce=False)
                         for r, R in (("D_G", G), ("D_M", M))}
        fits["D_G", s], wd["D_G", s], werr["D_G", s], raw["D_G", s] = G, 0.0, 0.0, 0.0
        per["D_G", s] = {"D_G": torch.zeros(eval_images.shape[0], dtype=torch.float64),
                         "D_M": metrics.denoiser_distance(G, M, eval_images, s, seed=seed, reduce=False)}
    values = {}

    def weights_closer(k):
        ok = all(raw[k, s] < wd["D_M", s] for s in levels)
        return ok, ", ".join(f"σ = {s:.3g}: {raw[k, s]:.3f} as measured vs D_M's {wd['D_M', s]:.3f} corrected"
                             for s in levels), max(raw[k, s] for s in levels)

    def outputs_closer(k):
        diffs = [_stats.paired(per[k, s]["D_M"], per[k, s]["D_G"]) for s in levels]
        return all(d.lo > 0 for d in diffs), "RMSE to D_M minus to D_G: " + ", ".join(
            f"{_fmt(d)} (σ = {s:.3g})" for d, s in zip(diffs, levels)), min(diffs, key=lambda d: d.lo)

    def threshold(k):
        worst = max(raw[k, s] for s in levels)
        return worst < 0.2, f"largest distance as measured {worst:.3f} (corrected: {max(wd[k, s] for s in levels):.3f})", \
            worst
    positives = {"D_G": ("positive", {"x": ["D_G"]})}
    if linear is not None:
        positives["linear DAE"] = ("positive", {"x": ["linear DAE"]})
    controls = {"D_M": ("negative", {"x": ["D_M"]}), "untrained network": ("negative", {"x": ["untrained network"]}),
                **positives}
    checks = []
    for name in daes:
        for text, test, key in ((f"the {name}'s best linear approximation is closer to W_G than D_M's at every "
                                 "trained σ (its distance as measured, D_M's corrected)", weights_closer, f"wd | {name}"),
                                (f"the {name}'s outputs are closer to D_G than to D_M at every trained σ",
                                 outputs_closer, f"outputs | {name}"),
                                (f"the {name}'s best linear approximation lies within 0.2 of W_G at every trained σ "
                                 "(claim 4's criterion, as measured)", threshold, f"threshold | {name}")):
            checks.append(assess(text, 10, lambda r, test=test: test(r["x"][0]), {"x": [name]}, controls, 1, values,
                                 key))
    res = Result(checks, None, values, {})
    res.levels, res.fits, res.weight_distance, res.weight_error, res.distances = levels, fits, wd, werr, per
    res.weight_distance_measured = raw
    return res


#: claim number -> (what the paper claims, the claim function that tests it)
CLAIMS = {
    1: ("denoisers become more linear as N grows; least linear at intermediate σ", "emerging_linearity"),
    2: ("linearity needs a well-trained model (EDM against the baselines)", "training_matters"),
    3: ("D_θ is well approximated by its linear model at high and low σ", "linear_gaussian"),
    4: ("the best linear approximation of a generalizing network is D_G", "linear_gaussian"),
    5: ("in memorization D_L ≠ D_G, and both approximate D_θ poorly", "linear_gaussian"),
    6: ("larger N at fixed capacity brings out the Gaussian structure", "dataset_size, gaussian_shadow"),
    7: ("smaller capacity at fixed N brings it out too, at a cost at high σ", "model_capacity"),
    8: ("over-parameterized models are Gaussian early in training, then memorize", "training_time"),
    9: ("networks on disjoint halves agree and match the Gaussian samples (strong generalization)",
        "strong_generalization"),
    10: ("the Gaussian bias belongs to denoising autoencoders in general", "denoising_autoencoders"),
    11: ("low-σ agreement is not evidence; with N < d the low-σ gap measures N only", "linear_gaussian"),
    12: ("the GL score rises with N together with the linearity score", "dataset_size"),
}
