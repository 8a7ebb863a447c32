"""Intervals and verdicts: percentile bootstrap over the items a number averages (images, samples, pairs).

Every number a chapter compares is a mean over items drawn at random (held-out images and their noise,
latents, image pairs), so it carries an interval: :func:`bootstrap` resamples the items with replacement and
reports the percentile interval of the statistic. Two models measured on the *same* items (the same noisy
held-out images, the same latents) are compared by :func:`paired`, which resamples the items jointly, so the
interval is that of the difference itself. :func:`direction` turns such an interval into a word only when
it excludes zero. A training seed is a sample too: :func:`hierarchical` resamples replicates (seeds) and then the
items within each. A count of k events in n trials (copies among samples) gets the exact Clopper-Pearson interval
(:func:`proportion`).

Checks and verdicts: a :class:`Check` is a *gate* (the regime a claim needs: a converged network, a memorizing one,
N against d) or *evidence* (a test of the claim). Evidence carries :class:`Control` outcomes, the same test run on
models whose answer is known: negative controls (the memorizer D_M, an untrained network, shuffled latents) must
fail it, positive controls (D_G where the claim predicts Gaussian behaviour) must pass it. Only evidence whose
controls all behave is *informative*, and :func:`verdict` counts informative evidence only: a failed gate makes its
claim "not tested", never "no" (the book page "How a claim is judged"; the claims themselves are stated on the
book page "The paper's claims").
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Callable, Sequence

import torch

__all__ = ["Estimate", "bootstrap", "mean", "paired", "direction", "hierarchical", "proportion", "clopper_pearson",
           "Check", "Control", "verdict", "verdicts", "VERDICTS", "KINDS", "N_BOOT", "LEVEL", "FEW_REPLICATES"]

N_BOOT = 2000   #: bootstrap resamples
LEVEL = 0.95    #: coverage of every interval
FEW_REPLICATES = 5   #: below this many seeds, an interval must also hold each seed's own interval (hierarchical)


@dataclass(frozen=True)
class Estimate:
    """A statistic with its bootstrap interval [lo, hi] at coverage ``level``."""

    value: float
    lo: float
    hi: float
    level: float = LEVEL
    n: int = 0

    def excludes(self, x: float = 0.0) -> bool:
        """Whether x lies outside the interval."""
        return not self.lo <= x <= self.hi

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        return f"{self.value:{spec}} [{self.lo:{spec}}, {self.hi:{spec}}]"

    def __str__(self) -> str:
        return format(self)

    def scaled(self, factor: float) -> "Estimate":
        """The same estimate in other units (e.g. a fraction as a percentage)."""
        lo, hi = sorted((self.lo * factor, self.hi * factor))
        return Estimate(self.value * factor, lo, hi, self.level, self.n)


def _items(values, name: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).detach().cpu()
    if t.ndim == 0 or t.shape[-1] == 0:
        raise ValueError(f"{name}: need a non-empty set of per-item values (last axis = items), got shape "
                         f"{tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name}: the per-item values contain NaN or infinity; an interval over them is undefined")
    return t


def bootstrap(statistic: Callable[..., torch.Tensor | float], *values, n_boot: int = N_BOOT, level: float = LEVEL,
              seed: int = 0) -> Estimate:
    """Percentile bootstrap interval of ``statistic(*values)``.

    Each of ``values`` holds per-item numbers with the items on its last axis, the same items (same length) in
    every array: all are resampled with the same indices, so paired measurements stay paired. ``statistic``
    receives the resampled arrays and returns a scalar; it is evaluated once on the data for the estimate.
    """
    if not values:
        raise ValueError("bootstrap needs at least one array of per-item values")
    if not 0 < level < 1:
        raise ValueError(f"level is a coverage in (0, 1), got {level}")
    n_boot = int(n_boot)
    if n_boot < 100:
        raise ValueError(f"n_boot = {n_boot} is too few resamples for a {level:.0%} interval; use at least 100")
    arrays = [_items(v, f"values[{i}]") for i, v in enumerate(values)]
    n = arrays[0].shape[-1]
    if any(a.shape[-1] != n for a in arrays):
        raise ValueError(f"paired values need the same number of items, got {[a.shape[-1] for a in arrays]}")
    value = float(statistic(*arrays))
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(n, (n_boot, n), generator=g)
    boots = torch.tensor([float(statistic(*(a[..., i] for a in arrays))) for i in idx], dtype=torch.float64)
    lo, hi = torch.quantile(boots, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    return Estimate(value, min(lo, value), max(hi, value), level, n)


def _mean_interval(v: torch.Tensor, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Estimate:
    """Vectorised :func:`bootstrap` of the mean over everything, for the common case (same resamples)."""
    if not 0 < level < 1:
        raise ValueError(f"level is a coverage in (0, 1), got {level}")
    if int(n_boot) < 100:
        raise ValueError(f"n_boot = {n_boot} is too few resamples for a {level:.0%} interval; use at least 100")
    n = v.shape[-1]
    idx = torch.randint(n, (int(n_boot), n), generator=torch.Generator().manual_seed(int(seed)))
    flat = v.reshape(-1, n)                                   # [rows, items]
    boots = flat[:, idx].mean(dim=(0, 2))                     # [n_boot]
    lo, hi = torch.quantile(boots, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    value = float(v.mean())
    return Estimate(value, min(lo, value), max(hi, value), level, n)


def mean(values, **kwargs) -> Estimate:
    """Mean over items with its bootstrap interval (values [..., items]: the mean over everything)."""
    return _mean_interval(_items(values, "values"), **kwargs)


def paired(a, b, statistic: Callable[[torch.Tensor], torch.Tensor] | None = None, **kwargs) -> Estimate:
    """statistic(a) - statistic(b) for two measurements on the same items (default: the difference of means),
    with the interval of the difference from resampling the items jointly."""
    if statistic is None:
        a, b = _items(a, "a"), _items(b, "b")
        if a.shape != b.shape:
            raise ValueError(f"paired values need the same shape (same items), got {tuple(a.shape)} and "
                             f"{tuple(b.shape)}")
        return _mean_interval(a - b, **kwargs)
    return bootstrap(lambda x, y: statistic(x) - statistic(y), a, b, **kwargs)


def direction(diff: Estimate, up: str, down: str, flat: str) -> str:
    """``up`` if the interval of a difference lies above zero, ``down`` if below, else ``flat``."""
    if diff.lo > 0:
        return up
    if diff.hi < 0:
        return down
    return flat


def hierarchical(statistic: Callable[..., torch.Tensor | float], replicates: Sequence, n_boot: int = N_BOOT,
                 level: float = LEVEL, seed: int = 0) -> Estimate:
    """Two-level percentile bootstrap: the mean over replicates (training seeds) of ``statistic`` on each.

    ``replicates`` holds one entry per independent replicate: a tensor of per-item values, or a tuple of them
    (paired: the same items, resampled together). Each resample draws the replicates with replacement and then,
    within each drawn replicate, its items; so the interval holds the seed-to-seed spread as well as the
    evaluation noise. With one replicate it is :func:`bootstrap`. ``n`` of the result counts the replicates.

    With 2 to ``FEW_REPLICATES - 1`` replicates, resampling the seeds cannot reach the nominal coverage (with two,
    the seed level of the bootstrap only ever sees the two seeds' values). The interval is then widened to contain
    each replicate's own item-level interval as well, so it excludes a value only when every seed, taken on its own,
    excludes it: a difference is called only when each training seed shows it.
    """
    reps = [r if isinstance(r, (tuple, list)) else (r,) for r in replicates]
    if not reps:
        raise ValueError("hierarchical needs at least one replicate")
    if not 0 < level < 1:
        raise ValueError(f"level is a coverage in (0, 1), got {level}")
    if int(n_boot) < 100:
        raise ValueError(f"n_boot = {n_boot} is too few resamples for a {level:.0%} interval; use at least 100")
    arrays = []
    for j, rep in enumerate(reps):
        a = [_items(v, f"replicates[{j}][{i}]") for i, v in enumerate(rep)]
        if len({x.shape[-1] for x in a}) != 1:
            raise ValueError(f"replicate {j}: paired values need the same number of items, got "
                             f"{[x.shape[-1] for x in a]}")
        arrays.append(a)
    if len({len(a) for a in arrays}) != 1:
        raise ValueError("every replicate needs the same number of arrays (the same paired measurements)")
    value = sum(float(statistic(*a)) for a in arrays) / len(arrays)
    g = torch.Generator().manual_seed(int(seed))
    boots = torch.empty(int(n_boot), dtype=torch.float64)
    for b in range(int(n_boot)):
        picks = torch.randint(len(arrays), (len(arrays),), generator=g).tolist()
        total = 0.0
        for j in picks:
            n = arrays[j][0].shape[-1]
            idx = torch.randint(n, (n,), generator=g)
            total += float(statistic(*(a[..., idx] for a in arrays[j])))
        boots[b] = total / len(picks)
    lo, hi = torch.quantile(boots, torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)).tolist()
    if 1 < len(arrays) < FEW_REPLICATES:
        for j, a in enumerate(arrays):
            own = bootstrap(statistic, *a, n_boot=n_boot, level=level, seed=int(seed) + 1 + j)
            lo, hi = min(lo, own.lo), max(hi, own.hi)
    return Estimate(value, min(lo, value), max(hi, value), level, len(arrays))


def _binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact for the n of a sample set)."""
    if p <= 0:
        return 1.0
    if p >= 1:
        return 1.0 if k >= n else 0.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _solve_p(f, target: float) -> float:
    """The p in [0, 1] where the decreasing function f(p) equals target (bisection to float precision)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if f(mid) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial proportion, k events in n trials: the p whose
    binomial tail probabilities of k are (1 - level) / 2 on either side."""
    if isinstance(k, bool) or isinstance(n, bool) or int(k) != k or int(n) != n:
        raise ValueError(f"clopper_pearson counts whole events: k = {k!r}, n = {n!r}")
    k, n = int(k), int(n)
    if n < 1 or not 0 <= k <= n:
        raise ValueError(f"clopper_pearson needs 0 <= k <= n and n >= 1, got k = {k}, n = {n}")
    if not 0 < level < 1:
        raise ValueError(f"level is a coverage in (0, 1), got {level}")
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else _solve_p(lambda p: _binom_cdf(k - 1, n, p), 1 - a)       # P(X >= k) = a
    hi = 1.0 if k == n else _solve_p(lambda p: _binom_cdf(k, n, p), a)               # P(X <= k) = a
    return lo, hi


def proportion(flags, level: float = LEVEL) -> Estimate:
    """The fraction of items flagged (1.0) among 0/1 values, e.g. samples that copy a training image, with its exact
    Clopper-Pearson interval (not a bootstrap: with k of 64 the bootstrap interval collapses to a point at k = 0)."""
    t = _items(flags, "flags").reshape(-1)
    if not ((t == 0) | (t == 1)).all():
        raise ValueError("proportion counts 0/1 flags; got values other than 0 and 1")
    k, n = int(t.sum()), t.numel()
    lo, hi = clopper_pearson(k, n, level)
    return Estimate(k / n, min(lo, k / n), max(hi, k / n), level, n)


# ------------------------------------------------------------------------------------------- checks and verdicts
KINDS = ("evidence", "gate")                      #: the two kinds of check (a test of the claim, or the regime it needs)
VERDICTS = ("yes", "partly", "no", "not tested")   #: the words of :func:`verdict`
ROLES = ("negative", "positive")


@dataclass(frozen=True)
class Control:
    """The outcome of one check's test on a control model: ``role`` "negative" (a model the claim does not
    describe, e.g. the memorizer D_M or an untrained network: it must fail) or "positive" (a model it does
    describe, e.g. the Gaussian denoiser D_G: it must pass)."""

    name: str
    role: str
    passed: bool
    evidence: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a control needs a name, got {self.name!r}")
        if self.role not in ROLES:
            raise ValueError(f"control {self.name!r}: role must be one of {ROLES}, got {self.role!r}")
        object.__setattr__(self, "passed", bool(self.passed))

    @property
    def as_expected(self) -> bool:
        """A negative control fails the test, a positive control passes it."""
        return self.passed == (self.role == "positive")

    def as_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "passed": self.passed, "evidence": self.evidence}


@dataclass(frozen=True)
class Check:
    """One testable part of a paper's claim: what was tested, whether the data pass it, and the evidence.

    ``kind`` is "evidence" (a test of the claim) or "gate" (a regime the claim needs); ``number`` is the paper's
    claim it belongs to (1 ... 12; gates apply to the evidence of the same number); ``controls`` are the test's
    outcomes on control models (:class:`Control`); ``replicates`` is the number of independent training seeds behind
    the comparison, where networks are compared (None where no training seed enters).
    """

    claim: str
    passed: bool
    evidence: str = ""
    kind: str = "evidence"
    controls: tuple = ()
    number: int | None = None
    replicates: int | None = None

    def __post_init__(self):
        if not isinstance(self.claim, str) or not self.claim.strip():
            raise ValueError(f"a check needs a description of what it tests, got {self.claim!r}")
        if self.kind not in KINDS:
            raise ValueError(f"check {self.claim!r}: kind must be one of {KINDS}, got {self.kind!r}")
        controls = tuple(self.controls)
        if not all(isinstance(c, Control) for c in controls):
            raise ValueError(f"check {self.claim!r}: controls must be gd.stats.Control outcomes")
        if self.kind == "gate" and controls:
            raise ValueError(f"check {self.claim!r}: a gate states a regime and has no controls")
        if self.number is not None and (isinstance(self.number, bool) or int(self.number) != self.number
                                        or not 1 <= int(self.number) <= 12):
            raise ValueError(f"check {self.claim!r}: number is the paper's claim, 1 ... 12, got {self.number!r}")
        if self.replicates is not None and (isinstance(self.replicates, bool) or int(self.replicates) < 1):
            raise ValueError(f"check {self.claim!r}: replicates counts training seeds (>= 1) or is None")
        object.__setattr__(self, "controls", controls)
        object.__setattr__(self, "passed", bool(self.passed))

    @property
    def informative(self) -> bool:
        """Evidence whose negative controls all fail and positive controls all pass, with at least one of each."""
        roles = {c.role for c in self.controls}
        return self.kind == "evidence" and roles == set(ROLES) and all(c.as_expected for c in self.controls)

    @property
    def why_uninformative(self) -> str:
        """Why the verdict leaves this evidence out ("" when it counts)."""
        if self.kind == "gate" or self.informative:
            return ""
        reasons = [f"{c.name} also passes" for c in self.controls if c.role == "negative" and c.passed]
        reasons += [f"{c.name} fails it" for c in self.controls if c.role == "positive" and not c.passed]
        roles = {c.role for c in self.controls}
        reasons += [f"no {r} control" for r in ROLES if r not in roles]
        return "; ".join(reasons)

    @property
    def status(self) -> str:
        """"gate passed" / "gate failed" for a gate; "passes" / "fails" for informative evidence; else
        "uninformative"."""
        if self.kind == "gate":
            return "gate passed" if self.passed else "gate failed"
        if not self.informative:
            return "uninformative"
        return "passes" if self.passed else "fails"

    def as_dict(self) -> dict:
        """The check as JSON-ready data (what a chapter's results record holds)."""
        return {"claim": self.claim, "number": self.number, "kind": self.kind, "passed": self.passed,
                "evidence": self.evidence, "controls": [c.as_dict() for c in self.controls],
                "replicates": self.replicates, "informative": self.informative, "status": self.status,
                "why_uninformative": self.why_uninformative}

    @classmethod
    def from_dict(cls, data: dict) -> "Check":
        """A check back from :meth:`as_dict`; derived fields (informative, status) are recomputed, not trusted."""
        if not isinstance(data, dict):
            raise ValueError(f"a check must be a JSON object, got {type(data).__name__}")
        missing = {"claim", "kind", "passed"} - set(data)
        if missing:
            raise ValueError(f"malformed check {data.get('claim', data)!r}: missing {sorted(missing)}")
        controls = data.get("controls") or []
        if not isinstance(controls, list) or not all(isinstance(c, dict) for c in controls):
            raise ValueError(f"check {data['claim']!r}: controls must be a list of objects")
        try:
            made = tuple(Control(c["name"], c["role"], c["passed"], c.get("evidence", "")) for c in controls)
        except KeyError as err:
            raise ValueError(f"check {data['claim']!r}: a control lacks {err}") from None
        return cls(data["claim"], data["passed"], data.get("evidence", ""), data["kind"], made, data.get("number"),
                   data.get("replicates"))


def _one_claim(checks: list[Check]) -> str:
    if any(c.kind == "gate" and not c.passed for c in checks):
        return "not tested"
    counted = [c for c in checks if c.informative]
    if not counted:
        return "not tested"
    passed = sum(c.passed for c in counted)
    word = "yes" if passed == len(counted) else ("no" if passed == 0 else "partly")
    if word == "yes" and any(c.replicates == 1 for c in counted):
        word = "partly"      # one training seed: the comparison is not replicated
    return word


def verdicts(checks: Sequence[Check]) -> dict:
    """The verdict of each claim, {number: word}, from the checks of that number (see :func:`verdict`)."""
    checks = list(checks)
    if not checks or not all(isinstance(c, Check) for c in checks):
        raise ValueError("a verdict needs at least one check (gd.stats.Check)")
    groups: dict = {}
    for c in checks:
        groups.setdefault(c.number, []).append(c)
    return {k: _one_claim(v) for k, v in groups.items()}


def verdict(checks: Sequence[Check]) -> str:
    """Reproduced: "yes", "partly", "no" or "not tested", counting informative evidence only.

    Per claim (checks grouped by ``number``): a failed gate makes the claim "not tested"; so does evidence none of
    which is informative (a negative control passed it, a positive control failed it, or it has no controls).
    Otherwise "yes" when every informative check passes, "no" when none does, else "partly"; a "yes" resting on a
    comparison with one training seed (``replicates == 1``) is "partly". Over several claims: "yes" when all are
    yes, "not tested" when none was tested, "no" when every tested claim is no, else "partly".
    """
    words = list(verdicts(checks).values())
    tested = [w for w in words if w != "not tested"]
    if not tested:
        return "not tested"
    if all(w == "yes" for w in words):
        return "yes"
    if all(w == "no" for w in tested):
        return "no"
    return "partly"
