"""Experiments as data: the trained networks of the book, named once per profile.

Every profile (``profiles/<name>.yml``) may hold an ``experiments`` section::

    experiments:
      heldout: ""                 # held-out images (empty: the test split of each run's dataset)
      defaults:                   # fields every run starts from
        dataset: fashion-mnist
        resolution: 16
        channels: 16
        steps: 2000
        ...
      runs:                       # name -> the fields that differ from the defaults
        n16: {n: 16}
        n64-half2: {n: 64, offset: 64}
        w64-n64: {n: 64, channels: 64, snapshots: [100, 250, 500, 1000]}
        dae-linear-1.5: {n: 4096, arch: linear, fixed_sigma: 1.5}
      sweeps:                     # name -> list of run names
        dataset_size: [n16, n64, ...]

A run is one training set (``n`` images of ``dataset`` at positions ``offset`` .. ``offset + n - 1`` of
the permutation seeded by ``subset_seed``, so sizes are nested and ``offset = n`` gives the disjoint
second half), one network (``arch`` unet or linear, ``channels`` = the paper's channel size), and one
training recipe (``steps``, ``batch_size``, ``lr``, ``ema``, ``seed``, optional ``fixed_sigma`` for a
denoising autoencoder at one noise level, ``snapshots`` = steps whose EMA weights are kept, the
paper's training-time checkpoints). :func:`model` trains a run or loads it from the cache; runs are
keyed by content, so a sweep and a chapter asking for the same run share one trained network.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from . import profiles as _profiles
from ._checks import as_levels, positive_int, show_progress

__all__ = ["Run", "runs", "run", "sweep", "sweeps", "training_set", "heldout_set", "model", "models", "gaussian",
           "compare", "Comparison", "compare_halves", "INTERMEDIATE"]


@dataclass(frozen=True)
class Run:
    """One named training run of a profile (see the module docstring for the fields)."""

    name: str
    profile: str
    n: int
    dataset: str = "fashion-mnist"
    resolution: int | None = 16
    offset: int = 0
    subset_seed: int = 0
    arch: str = "unet"
    channels: int = 16
    channel_mult: str = "1,2"
    num_blocks: int = 1
    dropout: float = 0.0
    steps: int = 2000
    batch_size: int = 64
    lr: float = 0.002
    ema: float = 0.995
    seed: int = 0
    snapshots: tuple[int, ...] = field(default_factory=tuple)
    fixed_sigma: float | None = None

    @property
    def epochs(self) -> float:
        """Passes over the training set: steps * batch_size / n (the paper's training-time axis, Fig 8)."""
        return self.steps * self.batch_size / self.n

    def epoch(self, step: int) -> float:
        """The epoch reached after ``step`` optimizer steps."""
        return step * self.batch_size / self.n



_FIELDS = {f.name: f for f in dataclasses.fields(Run) if f.name not in ("name", "profile")}
_SECTION_KEYS = {"heldout", "defaults", "runs", "sweeps"}


def _section(profile: str) -> dict:
    section = _profiles.load(profile).get("experiments")
    if not section:
        raise ValueError(f"profile {profile!r} defines no experiments (add an 'experiments' section with "
                         f"'defaults', 'runs' and 'sweeps' to profiles/{profile}.yml)")
    unknown = set(section) - _SECTION_KEYS
    if unknown:
        raise ValueError(f"profiles/{profile}.yml: unknown keys {sorted(unknown)} in 'experiments'; "
                         f"allowed: {sorted(_SECTION_KEYS)}")
    return section


def _make(name: str, profile: str, fields: dict) -> Run:
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise ValueError(f"run {name!r} of profile {profile!r}: unknown fields {sorted(unknown)}; "
                         f"a run may set {sorted(_FIELDS)}")
    if "n" not in fields:
        raise ValueError(f"run {name!r} of profile {profile!r} has no training-set size 'n'")
    fields = dict(fields)
    try:
        fields["n"] = positive_int(fields["n"], "n")
        for key in ("steps", "batch_size", "channels", "num_blocks"):
            if key in fields:
                fields[key] = positive_int(fields[key], key)
        fields["snapshots"] = tuple(sorted({positive_int(s, "snapshot step") for s in fields.get("snapshots") or ()}))
        if fields.get("fixed_sigma") is not None:
            fields["fixed_sigma"] = as_levels([fields["fixed_sigma"]])[0]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"run {name!r} of profile {profile!r}: {exc}") from None
    if isinstance(fields.get("channel_mult"), (list, tuple)):
        fields["channel_mult"] = ",".join(str(int(m)) for m in fields["channel_mult"])
    run_ = Run(name=name, profile=profile, **fields)
    if run_.arch not in ("unet", "linear"):
        raise ValueError(f"run {name!r}: arch must be 'unet' or 'linear', got {run_.arch!r}")
    if run_.arch == "linear" and run_.fixed_sigma is None:
        raise ValueError(f"run {name!r}: a linear network is a one-level denoising autoencoder; give it fixed_sigma")
    if any(s > run_.steps for s in run_.snapshots):
        raise ValueError(f"run {name!r}: snapshots {list(run_.snapshots)} go past its {run_.steps} steps")
    return run_


def runs(profile: str) -> dict[str, Run]:
    """Every run a profile defines, by name."""
    section = _section(profile)
    defaults = section.get("defaults") or {}
    table = section.get("runs") or {}
    if not isinstance(table, dict) or not all(isinstance(v, dict) or v is None for v in table.values()):
        raise ValueError(f"profiles/{profile}.yml: experiments.runs must map run names to field maps")
    return {str(name): _make(str(name), profile, {**defaults, **(fields or {})}) for name, fields in table.items()}


def run(name: str, profile: str) -> Run:
    """The run called ``name`` in ``profile``."""
    table = runs(profile)
    if name not in table:
        raise ValueError(f"profile {profile!r} has no run {name!r}; it defines {sorted(table)}")
    return table[name]


def sweeps(profile: str) -> dict[str, list[str]]:
    """Every sweep (a list of run names) a profile defines; each name is checked against the runs."""
    section = _section(profile)
    table = {str(k): [str(r) for r in v] for k, v in (section.get("sweeps") or {}).items()}
    known = runs(profile)
    for name, members in table.items():
        missing = [m for m in members if m not in known]
        if missing:
            raise ValueError(f"sweep {name!r} of profile {profile!r} names undefined runs {missing}")
    return table


def sweep(name: str, profile: str) -> list[str]:
    """The run names of one sweep, in the profile's order."""
    table = sweeps(profile)
    if name not in table:
        raise ValueError(f"profile {profile!r} has no sweep {name!r}; it defines {sorted(table)}")
    return table[name]


def _as_run(r: Run | str, profile: str | None) -> Run:
    if isinstance(r, Run):
        return r
    if profile is None:
        raise ValueError(f"give the profile of run {r!r}")
    return run(r, profile)


def training_set(r: Run | str, profile: str | None = None) -> torch.Tensor:
    """The training images of a run, [n, C, H, W] in [-1, 1]."""
    from .data import load_any

    r = _as_run(r, profile)
    return load_any(r.dataset, split="train", resolution=r.resolution, n=r.n, seed=r.subset_seed, offset=r.offset)


def heldout_set(profile: str, n: int, seed: int = 0, resolution: int | None = None,
                dataset: str | None = None) -> torch.Tensor:
    """``n`` held-out images for a profile: its ``heldout`` source, else the test split of ``dataset``
    (default: the dataset of the profile's defaults), at ``resolution`` (default: the defaults')."""
    from .data import load_any

    section = _section(profile)
    defaults = section.get("defaults") or {}
    source = section.get("heldout") or dataset or defaults.get("dataset", Run.dataset)
    resolution = resolution if resolution is not None else defaults.get("resolution", Run.resolution)
    return load_any(source, split="test", resolution=resolution, n=n, seed=seed)


def _network(r: Run, X: torch.Tensor):
    """The run's network, initialised from its seed, sized for its images X."""
    from .networks import LinearNet, UNet

    channels, resolution = int(X.shape[1]), int(X.shape[-1])
    if r.arch == "linear":
        return LinearNet(channels, resolution, seed=r.seed)
    mult = tuple(int(m) for m in str(r.channel_mult).split(","))
    return UNet(channels, r.channels, resolution, mult, r.num_blocks, r.dropout, seed=r.seed)


def model(r: Run | str, profile: str | None = None, snapshot: int | None = None, device=None,
          progress: bool | None = None, X: torch.Tensor | None = None):
    """Train a run, or load it from the cache, and return its EMA denoiser (an ``EDMDenoiser``).

    Args:
        r: a run name (with ``profile``) or a :class:`Run`.
        snapshot: a step listed in the run's ``snapshots``: the EMA weights at that step.
        device: where to train and evaluate (default: CUDA when present).
        progress: show the training progress bar (None: unless ``$GAUSSDIFF_PROGRESS`` is 0).
        X: the run's training set when the caller already holds it (skips reloading).

    The result carries ``.run`` (this :class:`Run`), ``.step`` and ``.epoch`` besides the training log.
    """
    from .training import default_device, load_run, train

    r = _as_run(r, profile)
    if snapshot is not None and int(snapshot) not in r.snapshots:
        raise ValueError(f"run {r.name!r} keeps snapshots at steps {list(r.snapshots) or 'none'}, not {snapshot}; "
                         "add the step to its 'snapshots' in the profile")
    device = torch.device(device) if device is not None else default_device()
    if X is not None and X.shape[0] != r.n:
        raise ValueError(f"X holds {X.shape[0]} images but run {r.name!r} trains on n = {r.n}; pass the run's own "
                         "training set (gd.experiments.training_set) or leave X out")
    X = training_set(r) if X is None else X
    net = _network(r, X)
    den = train(net, X, steps=r.steps, batch_size=r.batch_size, lr=r.lr, ema=r.ema, seed=r.seed,
                snapshot_steps=r.snapshots, fixed_sigma=r.fixed_sigma, device=device, progress=progress, cache=True)
    if snapshot is not None:
        stats = den.stats
        den = load_run(den.run_dir, snapshot=int(snapshot), device=device)
        den.stats = [s for s in stats if s["step"] <= int(snapshot)]
    den.run = r
    den.step = r.steps if snapshot is None else int(snapshot)
    den.epoch = r.epoch(den.step)
    return den


def models(names, profile: str, device=None, progress: bool | None = None) -> dict:
    """{name: denoiser} for a list of run names (or a sweep's name), training what is not cached yet."""
    if isinstance(names, str):
        names = sweep(names, profile)
    names = list(names)
    out = {}
    bar = tqdm(names, desc="runs", disable=not show_progress(progress) or len(names) < 2, leave=False)
    for name in bar:
        bar.set_postfix_str(name)
        out[name] = model(name, profile, device=device, progress=progress)
    return out


def gaussian(r: Run | str, profile: str | None = None, device=None, X: torch.Tensor | None = None):
    """The Gaussian denoiser D_G of a run's training set (cached statistics)."""
    from .denoisers import GaussianDenoiser

    r = _as_run(r, profile)
    return GaussianDenoiser.from_data(training_set(r) if X is None else X, device=device, cache=True)



# ------------------------------------------------------------------------------- sweep analysis
INTERMEDIATE = (0.116, 20.0)  # the paper's crucial intermediate sigma range (section 4)


@dataclass
class Comparison:
    """What :func:`compare` measured, per model label (all tensors on the CPU)."""

    levels: list[float]
    distance: dict[str, torch.Tensor]           # RMSE(D_theta, D_G) at each level [S]
    delta_distance: dict[str, torch.Tensor]     # RMSE(D_theta, D_M) to the multi-delta denoiser [S]
    samples: dict[str, torch.Tensor]            # Euler samples from the shared latents
    gaussian_samples: dict[str, torch.Tensor]   # closed-form samples of each model's Gaussian
    nearest: dict[str, torch.Tensor]            # nearest training image of each sample
    linearity: dict[str, torch.Tensor]          # linearity score over ``linearity_levels`` (if asked)
    rows: list[dict]                            # one summary row per model

    def figure_rows(self, labels=None, n: int | None = None) -> dict[str, torch.Tensor]:
        """Rows for :func:`gaussdiff_lib.plotting.image_rows`: samples, their nearest training images and
        the Gaussian samples of the same latents, per model (the paper's Figs 6-7, right)."""
        out = {}
        for label in labels or list(self.samples):
            out[f"{label}: samples"] = self.samples[label][:n]
            out[f"{label}: nearest training"] = self.nearest[label][:n]
            out[f"{label}: Gaussian"] = self.gaussian_samples[label][:n]
        return out


def _mean_in(curve: torch.Tensor, levels: list[float], lo: float, hi: float) -> float:
    inside = [i for i, s in enumerate(levels) if lo <= s <= hi]
    if not inside:
        raise ValueError(f"no sigma level lies in [{lo}, {hi}]; levels are {levels}")
    return float(curve[inside].mean())


@torch.no_grad()
def compare(models, train_sets, heldout: torch.Tensor, latents: torch.Tensor, levels=None, n_steps: int = 10,
            linearity_levels=None, n_pairs: int = 100, gaussians=None, seed: int = 0, device=None,
            progress: bool | None = None) -> Comparison:
    """Each model against the Gaussian denoiser of its own training set, the measurements behind the
    paper's Figs 6, 7, 8 and 13.

    Args:
        models: {label: denoiser}; train_sets: {label: its training images} (same labels).
        heldout: clean held-out images; the distances are taken on them noised at each level.
        latents: unit-variance latents shared by every model (``gd.sampling.latents``).
        levels: noise levels of RMSE(D_theta, D_G) (default: the paper's 10 analysis levels).
        n_steps: steps of the paper's Euler sampler (section 1); the Gaussian is sampled in closed form.
        linearity_levels: if given, also the linearity score over these levels (its minimum per model).
        gaussians: {label: GaussianDenoiser} when already built (default: from each training set, cached).

    Rows hold, per model: N, GL score (Eq. 14), memorized fraction (d1/d2 < 1/3), mean per-sample RMSE to
    the Gaussian samples, RMSE(D_theta, D_G) and RMSE(D_theta, D_M) (the multi-delta denoiser of the same
    training set, paper section 2) averaged over the intermediate range [0.116, 20], RMSE(D_theta, D_G) at
    the highest level, and the minimum linearity score when measured.
    """
    from . import metrics, sampling
    from .denoisers import EmpiricalDenoiser, GaussianDenoiser
    from .sampling import edm_sigmas

    if set(models) != set(train_sets):
        raise ValueError(f"models and train_sets need the same labels, got {sorted(models)} and {sorted(train_sets)}")
    levels = edm_sigmas(10)[:-1].tolist() if levels is None else as_levels(levels)
    schedule = edm_sigmas(positive_int(n_steps, "n_steps"))
    out = Comparison(levels, {}, {}, {}, {}, {}, {}, [])
    for label in tqdm(list(models), desc="models", disable=not show_progress(progress) or len(models) < 2,
                      leave=False):
        D, X = models[label], train_sets[label]
        G = (gaussians or {}).get(label)
        G = GaussianDenoiser.from_data(X, device=device, cache=True) if G is None else G
        curve = metrics.distance_curve(D, G, heldout, levels, seed=seed)
        delta = metrics.distance_curve(D, EmpiricalDenoiser(X, device=device), heldout, levels, seed=seed)
        x = sampling.euler(D, latents, schedule).cpu()
        xg = sampling.gaussian_closed_form(G, latents, schedule).cpu()
        _, idx = metrics.nearest_neighbours(x, X, k=1)
        row = {"model": label, "N": int(X.shape[0]), "GL score": metrics.gl_score(x, X),
               "memorized fraction": metrics.memorized_fraction(x, X),
               "RMSE to Gaussian sample": float(metrics.sample_rmse(x, xg).mean()),
               "RMSE(θ, G) intermediate σ": _mean_in(curve, levels, *INTERMEDIATE),
               "RMSE(θ, M) intermediate σ": _mean_in(delta, levels, *INTERMEDIATE),
               "RMSE(θ, G) at σ max": float(curve[levels.index(max(levels))])}
        if linearity_levels is not None:
            ls = metrics.linearity_curve(D, heldout, as_levels(linearity_levels), n_pairs=n_pairs, seed=seed)
            out.linearity[label] = ls
            row["min LS"] = float(ls.min())
        out.distance[label], out.delta_distance[label] = curve, delta
        out.samples[label], out.gaussian_samples[label] = x, xg
        out.nearest[label] = X[idx[:, 0].cpu()].cpu()
        out.rows.append(row)
    return out


@torch.no_grad()
def compare_halves(run1: Run | str, run2: Run | str, latents: torch.Tensor, profile: str | None = None,
                   snapshot: int | None = None, n_steps: int = 10, device=None) -> tuple[dict, dict]:
    """Strong generalization (paper claim 9, Fig 9): two runs trained on disjoint training sets S1, S2,
    sampled from the same latents, beside the closed-form samples of each set's Gaussian.

    Returns (samples {"S1", "S2", "G1", "G2"}, row) where the row holds the mean per-sample RMSE between
    the two networks' samples, between each and its Gaussian's, between the two Gaussians', and the
    fraction of each network's samples that copy an image of its own training set.
    """
    from . import metrics, sampling

    r1, r2 = _as_run(run1, profile), _as_run(run2, profile)
    same_order = (r1.dataset, r1.subset_seed) == (r2.dataset, r2.subset_seed)
    if same_order and r1.offset < r2.offset + r2.n and r2.offset < r1.offset + r1.n:
        raise ValueError(f"runs {r1.name!r} and {r2.name!r} draw overlapping positions of one seeded order "
                         f"({r1.offset}..{r1.offset + r1.n - 1} and {r2.offset}..{r2.offset + r2.n - 1}); the halves "
                         "must be disjoint: give the second run offset = n of the first")
    X1, X2 = training_set(r1), training_set(r2)
    schedule = sampling.edm_sigmas(positive_int(n_steps, "n_steps"))
    out = {}
    for tag, r, X in (("1", r1, X1), ("2", r2, X2)):
        D = model(r, snapshot=snapshot, device=device, X=X)
        out["S" + tag] = sampling.euler(D, latents, schedule).cpu()
        out["G" + tag] = sampling.gaussian_closed_form(gaussian(r, X=X, device=device), latents, schedule).cpu()
        out["memorized S" + tag] = metrics.memorized_fraction(out["S" + tag], X)
    rmse = lambda a, b: float(metrics.sample_rmse(out[a], out[b]).mean())  # noqa: E731
    row = {"RMSE(S1, S2)": rmse("S1", "S2"), "RMSE(S1, G1)": rmse("S1", "G1"), "RMSE(S2, G2)": rmse("S2", "G2"),
           "RMSE(G1, G2)": rmse("G1", "G2"), "memorized S1": out.pop("memorized S1"),
           "memorized S2": out.pop("memorized S2")}
    return out, row
