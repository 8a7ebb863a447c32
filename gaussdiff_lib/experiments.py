"""Experiments as data: the trained networks of the book, named once per profile.

Every profile (``profiles/<name>.yml``) may hold an ``experiments`` section::

    experiments:
      heldout: ""                 # held-out images (empty: the test split of each run's dataset;
                                  # a map {dataset: source} when runs use several datasets)
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
      convergence:                # how every trained run is certified converged (gaussdiff_lib.convergence)
        every: 0.125              # EMA snapshots every 1/8 of training ...
        window: 0.25              # ... and over the last quarter ...
        tolerance: 0.05           # ... neither measure may move by more than 5%

A run is one training set (``n`` images of ``dataset`` at positions ``offset`` .. ``offset + n - 1`` of
the permutation seeded by ``subset_seed``, so sizes are nested and ``offset = n`` gives the disjoint
second half), one network (``arch``: ``unet`` this project's compact UNet, ``ncsnpp`` / ``ddpmpp`` EDM's
UNets, ``vit`` a small DiT-style transformer with ``channels`` as its width, ``num_blocks`` as its depth and
``patch`` as its patch side, ``linear`` an affine map; ``channels`` = the paper's channel size), and one training
recipe (``steps``, ``batch_size``, ``lr``, ``ema``, ``seed``, ``precond`` = ``edm`` or the baselines ``ve`` /
``vp`` of Karras et al. 2022, Table 1, optional ``fixed_sigma`` for a
denoising autoencoder at one noise level, ``snapshots`` = steps whose EMA weights are kept, the
paper's training-time checkpoints; ``ema`` is EDM's half-life in training images, ramped up). Every trained
run also keeps the snapshots its convergence criterion measures, and :func:`certificate` says whether it
converged. :func:`model` trains a run or loads it from the cache; runs are
keyed by content, so a sweep and a chapter asking for the same run share one trained network.
A run with ``checkpoint`` (a path or URL of one of NVIDIA's EDM pickles; ``checkpoint_sha256`` pins the file's
SHA-256, checked on download and on every load) is not trained: :func:`model`
loads those weights (:func:`gaussdiff_lib.checkpoints.load_edm`), and ``n``/``dataset`` name the data
they were trained on.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from . import profiles as _profiles
from . import stats as _stats
from ._checks import as_device, as_levels, positive_int, show_progress
from .convergence import INTERMEDIATE, Criterion, criterion_from
from .networks import ARCHS

__all__ = ["Run", "runs", "run", "sweep", "sweeps", "criterion", "check_same_training", "dae_label", "dae_description",
           "training_set", "heldout_set", "model", "models",
           "gaussian", "certificate", "certificates", "convergence_rows", "convergence_sentence", "compare",
           "Comparison", "compare_halves", "Halves", "INTERMEDIATE", "training_plan", "analysis_memory",
           "chapter_networks", "data_sources", "LicenseNotice"]


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
    ema: float = 500_000.0
    seed: int = 0
    snapshots: tuple[int, ...] = field(default_factory=tuple)
    fixed_sigma: float | None = None
    precond: str = "edm"
    patch: int = 2
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    convergence: Criterion | None = None

    @property
    def measured_steps(self) -> tuple[int, ...]:
        """The steps whose snapshots the convergence criterion measures (the last is the final step)."""
        if self.convergence is None or self.checkpoint:
            return ()
        return self.convergence.steps(self.steps, f"run {self.name!r}")

    @property
    def kept_steps(self) -> tuple[int, ...]:
        """Every step whose EMA weights the run keeps (its ``snapshots`` and the criterion's, not the last)."""
        return tuple(sorted((set(self.snapshots) | set(self.measured_steps)) - {self.steps}))

    @property
    def epochs(self) -> float:
        """The passes over the training set, steps * batch_size / n (the paper's training-time axis, Fig 8)."""
        return self.steps * self.batch_size / self.n

    def epoch(self, step: int) -> float:
        """The epoch reached after ``step`` optimizer steps."""
        return step * self.batch_size / self.n

    @property
    def config_key(self) -> str:
        """What the cost of one training step depends on (network, resolution, batch), as one label."""
        if self.arch == "linear":
            return f"linear@{self.resolution} b{self.batch_size}"
        if self.arch == "vit":
            return f"vit-{self.channels} depth {self.num_blocks} patch {self.patch}@{self.resolution} b{self.batch_size}"
        return (f"{self.arch}-{self.channels} x[{self.channel_mult}] blocks {self.num_blocks}@{self.resolution} "
                f"b{self.batch_size}")



_FIELDS = {f.name: f for f in dataclasses.fields(Run) if f.name not in ("name", "profile", "convergence")}
_SECTION_KEYS = {"heldout", "defaults", "runs", "sweeps", "convergence"}


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


def criterion(profile: str) -> Criterion:
    """The profile's convergence criterion (its ``experiments.convergence`` section, defaults otherwise)."""
    return criterion_from(_section(profile).get("convergence"), f"profiles/{profile}.yml")


def _make(name: str, profile: str, fields: dict, conv: Criterion | None = None) -> Run:
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise ValueError(f"run {name!r} of profile {profile!r}: unknown fields {sorted(unknown)}; "
                         f"a run may set {sorted(_FIELDS)}")
    if "n" not in fields:
        raise ValueError(f"run {name!r} of profile {profile!r} has no training-set size 'n'")
    fields = dict(fields)
    try:
        fields["n"] = positive_int(fields["n"], "n")
        for key in ("steps", "batch_size", "channels", "num_blocks", "patch"):
            if key in fields:
                fields[key] = positive_int(fields[key], key)
        fields["snapshots"] = tuple(sorted({positive_int(s, "snapshot step") for s in fields.get("snapshots") or ()}))
        if fields.get("fixed_sigma") is not None:
            fields["fixed_sigma"] = as_levels([fields["fixed_sigma"]])[0]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"run {name!r} of profile {profile!r}: {exc}") from None
    if isinstance(fields.get("channel_mult"), (list, tuple)):
        fields["channel_mult"] = ",".join(str(int(m)) for m in fields["channel_mult"])
    run_ = Run(name=name, profile=profile, convergence=None if fields.get("checkpoint") else conv, **fields)
    if run_.arch not in ARCHS:
        raise ValueError(f"run {name!r}: arch must be one of {ARCHS}, got {run_.arch!r}")
    from .denoisers import check_precond

    try:
        object.__setattr__(run_, "precond", check_precond(run_.precond))
    except ValueError as exc:
        raise ValueError(f"run {name!r} of profile {profile!r}: {exc}") from None
    if run_.checkpoint and (run_.snapshots or run_.fixed_sigma is not None):
        raise ValueError(f"run {name!r} loads a published checkpoint; it has no snapshots or fixed_sigma")
    if run_.checkpoint_sha256 and (not run_.checkpoint or len(run_.checkpoint_sha256) != 64
                                   or set(run_.checkpoint_sha256.lower()) - set("0123456789abcdef")):
        raise ValueError(f"run {name!r}: checkpoint_sha256 is the 64 hexadecimal digits of its checkpoint's SHA-256 "
                         "(sha256sum FILE), and needs a checkpoint")
    if run_.arch == "linear" and run_.fixed_sigma is None:
        raise ValueError(f"run {name!r}: a linear network is a one-level denoising autoencoder; give it fixed_sigma")
    if any(s > run_.steps for s in run_.snapshots):
        raise ValueError(f"run {name!r}: snapshots {list(run_.snapshots)} go past its {run_.steps} steps")
    from .training import _check_ema

    try:
        _check_ema(run_.ema, None, run_.batch_size)
        run_.measured_steps  # a criterion that cannot be evaluated on this run is an error now, not later
    except (TypeError, ValueError) as exc:
        raise ValueError(f"run {name!r} of profile {profile!r}: {exc}") from None
    return run_


def runs(profile: str) -> dict[str, Run]:
    """Every run a profile defines, by name."""
    section = _section(profile)
    defaults = section.get("defaults") or {}
    table = section.get("runs") or {}
    if not isinstance(table, dict) or not all(isinstance(v, dict) or v is None for v in table.values()):
        raise ValueError(f"profiles/{profile}.yml: experiments.runs must map run names to field maps")
    conv = criterion(profile)
    return {str(name): _make(str(name), profile, {**defaults, **(fields or {})}, conv) for name, fields in table.items()}


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


_DATA_FIELDS = ("dataset", "n", "offset", "subset_seed", "resolution")
_TRAINING_FIELDS = ("arch", "channels", "channel_mult", "num_blocks", "dropout", "patch", "steps", "batch_size", "lr",
                    "ema", "seed", "precond", "fixed_sigma")


def check_same_training(rs, vary=()) -> str:
    """Check that runs differ only in the fields named in ``vary`` and return a sentence saying how they differ.

    The training data (dataset, n, offset, subset_seed, resolution) must always agree. Among runs trained here the
    network and recipe must agree too, except for ``vary``; published checkpoints are compared on their data only
    (their network is whatever the file holds). Raises ``ValueError`` naming the fields that differ otherwise.
    """
    rs = list(rs)
    differing = []
    for fields, group in ((_DATA_FIELDS, rs), (_TRAINING_FIELDS, [r for r in rs if not r.checkpoint])):
        for f in fields:
            values = {getattr(r, f) for r in group}
            if len(values) > 1:
                if f not in vary:
                    detail = ", ".join(f"{r.name}: {getattr(r, f)!r}" for r in group)
                    raise ValueError(f"runs {[r.name for r in rs]} must differ only in {list(vary)}, but {f} differs "
                                     f"({detail}); compare like with like")
                differing.append(f)
    published = [r.name for r in rs if r.checkpoint]
    trained = [r.name for r in rs if not r.checkpoint]
    parts = []
    if trained:
        parts.append(f"{', '.join(trained)} {'is' if len(trained) == 1 else 'are'} trained here with the same data, "
                     f"network and recipe, differing only in {', '.join(differing) or 'nothing'}")
    if published:
        parts.append(f"{', '.join(published)} {'is a published checkpoint' if len(published) == 1 else 'are published checkpoints'}"
                     f" trained on the same data")
    return "; ".join(parts)


ARCH_NAMES = {"unet": "UNet", "ncsnpp": "NCSN++", "ddpmpp": "DDPM++", "vit": "ViT", "linear": "linear"}


def dae_label(rs) -> str:
    """The label of a sweep of one-level denoising autoencoders of one architecture, e.g. "NCSN++ DAE"."""
    rs = list(rs)
    archs = {r.arch for r in rs}
    if len(archs) != 1 or any(r.fixed_sigma is None for r in rs):
        raise ValueError(f"a DAE sweep holds runs of one architecture, each with fixed_sigma; got "
                         f"{[(r.name, r.arch, r.fixed_sigma) for r in rs]}")
    return f"{ARCH_NAMES[archs.pop()]} DAE"


def dae_description(rs) -> str:
    """How the network of a sweep's runs is sized, in words (e.g. "a ViT of width 64, 4 blocks, 2 × 2 patches")."""
    r = list(rs)[0]
    if r.arch == "vit":
        return f"a ViT of width {r.channels}, {r.num_blocks} blocks, {r.patch} × {r.patch} patches"
    if r.arch == "linear":
        return "an affine map"
    return f"{'a' if r.arch == 'unet' else 'an'} {ARCH_NAMES[r.arch]} of channel size {r.channels}"


def training_set(r: Run | str, profile: str | None = None) -> torch.Tensor:
    """The training images of a run, [n, C, H, W] in [-1, 1]."""
    from .data import load_any

    r = _as_run(r, profile)
    return load_any(r.dataset, split="train", resolution=r.resolution, n=r.n, seed=r.subset_seed, offset=r.offset)


def heldout_set(profile: str, n: int, seed: int = 0, resolution: int | None = None,
                dataset: str | None = None) -> torch.Tensor:
    """``n`` held-out images for runs on ``dataset`` (default: the dataset of the profile's defaults), at
    ``resolution`` (default: the defaults').

    The profile's ``heldout`` is a source for the default dataset (e.g. CelebA-HQ for FFHQ, paper section 2)
    or a map ``{dataset: source}``; without an entry, the test split of the dataset itself (CIFAR-10 test).
    """
    from .data import load_any

    section = _section(profile)
    defaults = section.get("defaults") or {}
    default_dataset = defaults.get("dataset", Run.dataset)
    dataset = dataset or default_dataset
    held = section.get("heldout") or ""
    if isinstance(held, dict):
        source = held.get(dataset) or dataset
    else:
        source = held if (held and dataset == default_dataset) else dataset
    resolution = resolution if resolution is not None else defaults.get("resolution", Run.resolution)
    return load_any(source, split="test", resolution=resolution, n=n, seed=seed)


def _network(r: Run, X: torch.Tensor):
    """The run's network, initialised from its seed, sized for its images X."""
    from .networks import ViT, LinearNet, UNet

    from .edm_networks import build_songunet

    channels, resolution = int(X.shape[1]), int(X.shape[-1])
    if r.arch == "linear":
        return LinearNet(channels, resolution, seed=r.seed)
    if r.arch == "vit":
        return ViT(channels, resolution, width=r.channels, depth=r.num_blocks, heads=max(1, r.channels // 16),
                   patch=r.patch, dropout=r.dropout, seed=r.seed)
    mult = tuple(int(m) for m in str(r.channel_mult).split(","))
    if r.arch in ("ncsnpp", "ddpmpp"):
        return build_songunet(r.arch, channels, resolution, r.channels, mult, r.num_blocks, r.dropout, seed=r.seed)
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
    if snapshot is not None and int(snapshot) not in (*r.kept_steps, r.steps):
        raise ValueError(f"run {r.name!r} keeps snapshots at steps {list(r.kept_steps) or 'none'}, not {snapshot}; "
                         "add the step to its 'snapshots' in the profile")
    if snapshot is not None and int(snapshot) == r.steps:
        snapshot = None
    device = as_device(device) if device is not None else default_device()
    if r.checkpoint:
        return _published(r, device)
    if X is not None and X.shape[0] != r.n:
        raise ValueError(f"X holds {X.shape[0]} images but run {r.name!r} trains on n = {r.n}; pass the run's own "
                         "training set (gd.experiments.training_set) or leave X out")
    X = training_set(r) if X is None else X
    def train_or_load():  # a fresh network each time: the run's key is that of its initial weights
        return train(_network(r, X), X, steps=r.steps, batch_size=r.batch_size, lr=r.lr, ema=r.ema, seed=r.seed,
                     snapshot_steps=r.kept_steps, fixed_sigma=r.fixed_sigma, precond=r.precond, device=device,
                     progress=progress, cache=True)

    den = train_or_load()
    if snapshot is not None:
        from .cache import CorruptFileError

        stats = den.stats
        try:
            den = load_run(den.run_dir, snapshot=int(snapshot), device=device)
        except CorruptFileError as exc:  # removed, then rebuilt by training to that step again
            import warnings

            warnings.warn(f"{exc}; rebuilding it", RuntimeWarning, stacklevel=2)
            (den.run_dir / f"snapshot-{int(snapshot):08d}.pt").unlink()
            train_or_load()
            den = load_run(den.run_dir, snapshot=int(snapshot), device=device)
        den.stats = [s for s in stats if s["step"] <= int(snapshot)]
    den.run = r
    den.step = r.steps if snapshot is None else int(snapshot)
    den.epoch = r.epoch(den.step)
    return den


class LicenseNotice(UserWarning):
    """Shown when a chapter uses weights published under another licence."""


def _published(r: Run, device):
    import warnings

    from .checkpoints import LICENSE_NOTE, load_edm

    warnings.warn(f"run {r.name!r} uses NVIDIA's published network {r.checkpoint}. {LICENSE_NOTE}", LicenseNotice,
                  stacklevel=3)
    den = load_edm(r.checkpoint, device=device, sha256=r.checkpoint_sha256 or None)
    if den.precond != r.precond:
        raise ValueError(f"run {r.name!r} says precond: {r.precond}, but {r.checkpoint} holds a model with "
                         f"{den.precond!r} preconditioning; correct the run's precond in profiles/{r.profile}.yml")
    den.run, den.step, den.epoch, den.stats = r, None, None, []
    return den


def training_plan(profile: str, throughput: dict) -> list[dict]:
    """Per run of ``profile``: images to train on and the time it takes at a measured throughput.

    ``throughput`` is the report of ``benchmarks/paper_throughput.py`` (``{"configs": {config_key: {"img_per_s",
    "peak_gib", "params"}}}``); runs that load a published checkpoint cost nothing. Hours are for one GPU of the
    measured kind; data-parallel training on k GPUs divides them by about k.
    """
    configs = throughput.get("configs", {})
    rows = []
    for r in runs(profile).values():
        row = {"run": r.name, "dataset": r.dataset, "n": r.n, "arch": r.arch if not r.checkpoint else "published",
               "channels": r.channels, "steps": 0 if r.checkpoint else r.steps,
               "mimg": 0.0 if r.checkpoint else r.steps * r.batch_size / 1e6,
               "epochs": None if r.checkpoint else r.epochs}
        measured = configs.get(r.config_key, {}) if not r.checkpoint else {}
        row["img_per_s"] = measured.get("img_per_s")
        row["peak_gib"] = measured.get("peak_gib")
        row["params"] = measured.get("params")
        row["hours"] = 0.0 if r.checkpoint else (row["mimg"] * 1e6 / row["img_per_s"] / 3600
                                                 if row["img_per_s"] else None)
        rows.append(row)
    return rows


RUN_PARAMETERS = ("large", "small", "run", "reference", "long_run")  # notebook parameters that name one run


def chapter_networks(profile: str) -> list[dict]:
    """Which networks each chapter uses under ``profile``: one row per chapter with its runs and where their
    weights come from (NVIDIA's published checkpoints, or trained by this project, and how)."""
    table = runs(profile)
    rows = []
    for nb in _profiles.notebooks():
        params = {**_profiles.defaults(nb.stem), **_profiles.parameters(nb.stem, profile)}
        names = []
        for key, value in params.items():
            if key in RUN_PARAMETERS:
                names.append(value)
            elif key == "sweep" or key.endswith(("_sweep", "_pair")):
                names.extend(sweep(value, profile))
        if not names:
            continue
        sources = []
        for name in dict.fromkeys(names):
            r = table[name]
            net = "affine" if r.arch == "linear" else r.arch
            sources.append("NVIDIA checkpoint " + r.checkpoint.rsplit("/", 1)[-1] if r.checkpoint else
                           f"trained here ({net})")
        rows.append({"chapter": nb.stem, "runs": ", ".join(dict.fromkeys(names)),
                     "weights": "; ".join(dict.fromkeys(sources))})
    return rows


def data_sources(profile: str) -> list[dict]:
    """The data a profile reads: each training dataset and held-out source, its runs, and whether it is
    present on this machine."""
    from pathlib import Path

    from .data import DATASETS

    section = _section(profile)
    held = section.get("heldout") or ""
    table: dict[str, dict] = {}
    for r in runs(profile).values():
        entry = table.setdefault(r.dataset, {"source": r.dataset, "role": "training", "runs": []})
        entry["runs"].append(r.name)
    for dataset in list(table):
        source = held.get(dataset) if isinstance(held, dict) else (held or None)
        if source and source != dataset:
            table.setdefault(source, {"source": source, "role": f"held out for {dataset}", "runs": []})
        else:
            table[dataset]["role"] = "training (its test split held out)"
    rows = []
    for entry in table.values():
        src = entry["source"]
        present = "registered name" if src in DATASETS else ("yes" if Path(src).expanduser().exists() else "no")
        rows.append({"source": src, "role": entry["role"], "runs": len(entry["runs"]), "present here": present})
    return rows


def analysis_memory(n: int, d: int, n_sigmas: int = 1, chunk_size: int = 8192, batch_size: int = 512
                    ) -> dict[str, float]:
    """GiB that each analysis holds at its peak for N training images of dimension d (all float64), counted
    from what the code allocates and checked against peaks measured on the CPU (tests/test_memory.py):

    - multi-delta (:class:`~gaussdiff_lib.denoisers.EmpiricalDenoiser`): the training set (N d) plus two chunks
      of ``chunk_size`` images while squared norms and distances are formed;
    - Gaussian fit (:meth:`~gaussdiff_lib.denoisers.GaussianDenoiser.from_data`): the larger of the
      accumulation phase (covariance d^2 plus two chunks) and the eigensolver phase (covariance, eigenvectors,
      LAPACK's 2 d^2 workspace and the reordered copy: 6 d^2), plus the input checks' N d bytes;
    - linear fit (:func:`~gaussdiff_lib.linear_fit.fit_linear`): the fitted weights (one d^2 per sigma) and
      13 d^2 of moment matrices, half-split moments, Cholesky factors and solutions for the sigma being
      solved, plus three batches of ``batch_size`` inputs and outputs.
    """
    gib = 8 / 2 ** 30
    c = min(n, chunk_size)
    return {"multi-delta": (n * d + 2 * c * d) * gib,
            "gaussian": max(d * d + 2 * c * d, 6 * d * d) * gib + n * d / 2 ** 30,
            "linear fit": ((n_sigmas + 13) * d * d + 3 * batch_size * d) * gib}


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



# ------------------------------------------------------------------------------- convergence
def certificate(r: Run | str, profile: str | None = None, device=None, progress: bool | None = None) -> dict:
    """Whether a run converged by its profile's criterion (:mod:`gaussdiff_lib.convergence`), with the evidence.

    Trains or loads the run, measures the held-out loss and RMSE(D_theta, D_G) over intermediate sigma at each of
    the criterion's snapshots, and returns {"run", "n", "steps", "epochs", "points" (one dict per measured step),
    "changes" (largest relative change of each measure over the window), "converged", "window", "tolerance"}.
    The result is stored beside the run's weights, so it is computed once. Runs that load published weights
    return ``converged = None`` (trained elsewhere; not assessed here).
    """
    import json

    from . import cache as _cache
    from .convergence import assess, measure

    r = _as_run(r, profile)
    base = {"run": r.name, "n": r.n, "steps": r.steps, "epochs": None if r.checkpoint else r.epochs}
    if r.checkpoint or r.convergence is None:
        return {**base, "points": [], "changes": {}, "converged": None, "window": [], "tolerance": None}
    crit = r.convergence
    X = training_set(r)
    final = model(r, device=device, progress=progress, X=X)
    held_spec = {"profile_heldout": _section(r.profile).get("heldout") or "", "dataset": r.dataset,
                 "resolution": r.resolution, "criterion": crit.as_dict(), "fixed_sigma": r.fixed_sigma}
    key = _cache.digest(held_spec, [s for s in r.measured_steps])
    path = final.run_dir / f"convergence-{key[:16]}.json"
    if path.exists():
        try:
            return {**base, **json.loads(path.read_text())}
        except ValueError:
            path.unlink()  # a file cut short: measure again
    held = heldout_set(r.profile, crit.images, seed=crit.seed, resolution=r.resolution, dataset=r.dataset)
    G = gaussian(r, X=X, device=device)
    points = []
    with torch.no_grad():
        for step in r.measured_steps:
            D = final if step == r.steps else model(r, snapshot=step, device=device, X=X)
            points.append({"step": step, "epoch": r.epoch(step),
                           **measure(D, G, held, fixed_sigma=r.fixed_sigma, seed=crit.seed)})
    result = {"points": points, **assess(points, crit, r.steps)}
    _cache.write_text_atomic(path, json.dumps(result, indent=1))
    return {**base, **result}


def train_job(job: tuple) -> tuple[str, float, object]:
    """Train (or load) one run and certify it: ``job = (profile, name, device, threads)``; returns (name,
    seconds, converged). The unit of work of ``python -m gaussdiff_lib train --jobs k`` (a module-level
    function, so worker processes can import it)."""
    import time

    profile, name, device, threads = job
    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    model(name, profile, device=device, progress=False)
    cert = certificate(name, profile, device=device, progress=False)
    return name, time.time() - t0, cert["converged"]


def certificates(names, profile: str, device=None, progress: bool | None = None) -> list[dict]:
    """:func:`certificate` of each run (a list of names, or a sweep's name)."""
    if isinstance(names, str):
        names = sweep(names, profile)
    return [certificate(n, profile, device=device, progress=progress) for n in dict.fromkeys(names)]


def convergence_rows(certs: list[dict]) -> list[dict]:
    """One table row per certificate: run, N, steps, epochs, the last-window changes, converged yes/no."""
    rows = []
    for c in certs:
        changes = c["changes"]
        rows.append({"run": c["run"], "N": f"{c['n']:,}", "steps": f"{c['steps']:,}",
                     "epochs": "" if c["epochs"] is None else f"{c['epochs']:,.0f}",
                     "Δ held-out loss": f"{100 * changes['heldout_loss']:.1f}%" if changes else "",
                     "Δ RMSE(θ, G)": f"{100 * changes['rmse_gaussian']:.1f}%" if changes else "",
                     "converged": {True: "yes", False: "no", None: "published weights"}[c["converged"]]})
    return rows


_MEASURE_NAMES = {"heldout_loss": "held-out loss", "rmse_gaussian": "RMSE(D_θ, D_G)"}


def _drift(c: dict) -> str:
    """How an unconverged run is still moving: each measure over its tolerance and the sign of its change."""
    pts = {p["step"]: p for p in c["points"]}
    first, last = (pts.get(s) for s in (c["window"][0], c["window"][-1]))
    parts = []
    for m, change in c["changes"].items():
        if change <= c["tolerance"]:
            continue
        word = "moves"
        if first is not None and last is not None:
            word = "still rises" if last[m] > first[m] else "still falls"
        parts.append(f"{_MEASURE_NAMES[m]} {word}")
    return f"{c['run']} ({100 * max(c['changes'].values()):.0f}%, {' and '.join(parts)})"


def convergence_sentence(certs: list[dict]) -> str:
    """Computed prose on the convergence of a chapter's runs: all converged, or which did not, by how much and in
    which direction they were still moving (a rising held-out loss means a run still memorizing its data, so its
    memorization is, if anything, understated)."""
    trained = [c for c in certs if c["converged"] is not None]
    if not trained:
        return "This chapter uses published weights only; their convergence is not assessed here."
    tol = trained[0]["tolerance"]
    window = trained[0]["window"]
    share = (window[-1] - window[0]) / window[-1] if window[-1] else 0
    bad = [c for c in trained if not c["converged"]]
    crit = (f"neither the held-out loss nor RMSE(D_θ, D_G) over intermediate σ moves by more than {100 * tol:.0f}% "
            f"over the last {100 * share:.0f}% of training")
    if not bad:
        return f"All {len(trained)} trained networks of this chapter meet the convergence criterion: {crit}."
    text = (f"{len(bad)} of the {len(trained)} trained networks of this chapter do not meet the convergence criterion "
            f"({crit}): {'; '.join(_drift(c) for c in bad)}.")
    rising = [c for c in bad if "held-out loss still rises" in _drift(c)]
    if rising and len(rising) == len(bad):
        text += (" A held-out loss that still rises is a network still memorizing its training set: at its end point "
                 "it would copy more, not less, so its memorization is understated here, not overstated.")
    else:
        text += " Their numbers describe networks still in training, not their end points."
    return text


# ------------------------------------------------------------------------------- sweep analysis


@dataclass
class Comparison:
    """What :func:`compare` measured, per model label (all tensors on the CPU).

    Per-item values are kept so that every number carries a bootstrap interval and two models can be compared
    on the same items (:meth:`estimate`, :meth:`difference`): ``distance_items`` / ``delta_items`` [S, B] per
    held-out image (the same noisy inputs for every model), ``per_sample`` per latent (the same latents),
    ``linearity_items`` [S_ls, pairs] (the same pairs), ``heldout_gl`` per held-out image.
    """

    levels: list[float]
    distance: dict[str, torch.Tensor]           # RMSE(D_theta, D_G) at each level [S]
    delta_distance: dict[str, torch.Tensor]     # RMSE(D_theta, D_M) to the multi-delta denoiser [S]
    samples: dict[str, torch.Tensor]            # Euler samples from the shared latents
    gaussian_samples: dict[str, torch.Tensor]   # Euler samples of each model's Gaussian from the same latents
    nearest: dict[str, torch.Tensor]            # nearest training image of each sample
    linearity: dict[str, torch.Tensor]          # linearity score over ``linearity_levels`` (if asked)
    rows: list[dict]                            # one summary row per model (numbers with intervals)
    distance_items: dict[str, torch.Tensor] = field(default_factory=dict)
    delta_items: dict[str, torch.Tensor] = field(default_factory=dict)
    per_sample: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    linearity_items: dict[str, torch.Tensor] = field(default_factory=dict)
    heldout_gl: dict[str, torch.Tensor] = field(default_factory=dict)

    #: measure name -> (what it is per item, how it is summarised)
    MEASURES = {"rmse_G_mid": "RMSE(D_θ, D_G) over intermediate σ, per held-out image",
                "rmse_M_mid": "RMSE(D_θ, D_M) over intermediate σ, per held-out image",
                "rmse_G_max": "RMSE(D_θ, D_G) at the highest σ, per held-out image",
                "copies": "sample copies a training image (d1/d2 < 1/3), per latent",
                "gl": "GL score, per latent",
                "gl_heldout": "GL score of real held-out images against the same training set, per image",
                "rmse_gauss_sample": "RMSE to the Gaussian model's Euler sample of the same latent",
                "min_ls": "minimum over σ of the linearity score (pairs resampled)"}

    def _mid(self, curve_items: torch.Tensor) -> torch.Tensor:
        inside = [i for i, s in enumerate(self.levels) if INTERMEDIATE[0] <= s <= INTERMEDIATE[1]]
        if not inside:
            raise ValueError(f"no sigma level lies in {INTERMEDIATE}; levels are {self.levels}")
        return curve_items[inside].mean(0)

    def items(self, label: str, measure: str) -> torch.Tensor:
        """Per-item values of one measure for one model (see :attr:`MEASURES`)."""
        if label not in self.samples:
            raise ValueError(f"no model {label!r}; the comparison has {list(self.samples)}")
        if measure == "rmse_G_mid":
            return self._mid(self.distance_items[label])
        if measure == "rmse_M_mid":
            return self._mid(self.delta_items[label])
        if measure == "rmse_G_max":
            return self.distance_items[label][self.levels.index(max(self.levels))]
        if measure in ("copies", "gl", "rmse_gauss_sample"):
            return self.per_sample[label][measure]
        if measure == "gl_heldout":
            return self.heldout_gl[label]
        if measure == "min_ls":
            if label not in self.linearity_items:
                raise ValueError("the linearity score was not measured: pass linearity_levels to compare")
            return self.linearity_items[label]
        raise ValueError(f"unknown measure {measure!r}; choose one of {sorted(self.MEASURES)}")

    @staticmethod
    def _stat(measure: str):
        return (lambda v: v.mean(-1).min()) if measure == "min_ls" else (lambda v: v.mean())

    def estimate(self, label: str, measure: str) -> _stats.Estimate:
        """The measure's value for one model with its bootstrap interval over items."""
        return _stats.bootstrap(self._stat(measure), self.items(label, measure))

    def difference(self, a: str, b: str, measure: str) -> _stats.Estimate:
        """Measure(a) - measure(b) with the interval of the difference, resampling the shared items jointly
        (the same held-out images and noise, the same latents, the same linearity pairs)."""
        if measure == "gl_heldout":
            raise ValueError("the held-out GL reference uses each model's own training set; compare it per model")
        return _stats.paired(self.items(a, measure), self.items(b, measure), self._stat(measure))

    def figure_rows(self, labels=None, n: int | None = None) -> dict[str, torch.Tensor]:
        """Rows for :func:`gaussdiff_lib.plotting.image_rows`: samples, their nearest training images and
        the Gaussian samples of the same latents, per model (the paper's Figs 6-7, right)."""
        out = {}
        for label in labels or list(self.samples):
            out[f"{label}: samples"] = self.samples[label][:n]
            out[f"{label}: nearest training"] = self.nearest[label][:n]
            out[f"{label}: Gaussian"] = self.gaussian_samples[label][:n]
        return out


@torch.no_grad()
def compare(models, train_sets, heldout: torch.Tensor, latents: torch.Tensor, levels=None, n_steps: int = 10,
            linearity_levels=None, n_pairs: int = 100, gaussians=None, seed: int = 0, device=None,
            progress: bool | None = None) -> Comparison:
    """Each model against the Gaussian denoiser of its own training set, the measurements behind the
    paper's Figs 6, 7, 8 and 13.

    Args:
        models: {label: denoiser}; train_sets: {label: its training images} (same labels).
        heldout: clean held-out images; the distances are taken on them noised at each level, and their GL
            score against each training set is the reference for the samples' GL.
        latents: unit-variance latents shared by every model (``gd.sampling.latents``).
        levels: noise levels of RMSE(D_theta, D_G) (default: the paper's 10 analysis levels).
        n_steps: steps of the paper's Euler sampler (section 1), used for the networks *and* for each Gaussian
            model, so both sides of every sample comparison share the sampler and the latents.
        linearity_levels: if given, also the linearity score over these levels (its minimum per model).
        gaussians: {label: GaussianDenoiser} when already built (default: from each training set, cached).

    Rows hold, per model, numbers with 95% bootstrap intervals: N, GL score of the samples (Eq. 14) and of
    real held-out images against the same training set, memorized fraction (d1/d2 < 1/3), mean per-sample
    RMSE to the Gaussian samples, RMSE(D_theta, D_G) and RMSE(D_theta, D_M) (the multi-delta denoiser of
    the same training set, paper section 2) averaged over the intermediate range [0.116, 20],
    RMSE(D_theta, D_G) at the highest level, and the minimum linearity score when measured.
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
        curve = metrics.distance_curve(D, G, heldout, levels, seed=seed, reduce=False)
        delta = metrics.distance_curve(D, EmpiricalDenoiser(X, device=device), heldout, levels, seed=seed,
                                       reduce=False)
        x = sampling.euler(D, latents, schedule).cpu()
        xg = sampling.euler(G, latents, schedule).cpu()
        _, idx = metrics.nearest_neighbours(x, X, k=1)
        out.distance_items[label], out.delta_items[label] = curve, delta
        out.distance[label], out.delta_distance[label] = curve.mean(1), delta.mean(1)
        out.per_sample[label] = {"copies": (metrics.copy_ratio(x, X) < 1 / 3).double().cpu(),
                                 "gl": metrics.gl_score(x, X, reduce=False),
                                 "rmse_gauss_sample": metrics.sample_rmse(x, xg).cpu()}
        out.heldout_gl[label] = metrics.gl_score(heldout, X, reduce=False)
        if linearity_levels is not None:
            ls = metrics.linearity_curve(D, heldout, as_levels(linearity_levels), n_pairs=n_pairs, seed=seed,
                                         reduce=False)
            out.linearity_items[label] = ls
            out.linearity[label] = ls.mean(1)
        out.samples[label], out.gaussian_samples[label] = x, xg
        out.nearest[label] = X[idx[:, 0].cpu()].cpu()
        row = {"model": label, "N": int(X.shape[0]), "GL score": out.estimate(label, "gl"),
               "GL of held-out images": out.estimate(label, "gl_heldout"),
               "memorized fraction": out.estimate(label, "copies"),
               "RMSE to Gaussian sample": out.estimate(label, "rmse_gauss_sample"),
               "RMSE(θ, G) intermediate σ": out.estimate(label, "rmse_G_mid"),
               "RMSE(θ, M) intermediate σ": out.estimate(label, "rmse_M_mid"),
               "RMSE(θ, G) at σ max": out.estimate(label, "rmse_G_max")}
        if linearity_levels is not None:
            row["min LS"] = out.estimate(label, "min_ls")
        out.rows.append(row)
    return out


@dataclass
class Halves:
    """What :func:`compare_halves` measured: samples {"S1", "S2", "G1", "G2", and "F" for the floor run},
    per-latent RMSEs and copy flags (``items``), and the summary ``row`` (numbers with intervals)."""

    samples: dict[str, torch.Tensor]
    items: dict[str, torch.Tensor]
    row: dict

    def estimate(self, key: str) -> _stats.Estimate:
        """Mean over latents of one per-latent quantity (a key of ``items``), with its interval."""
        if key not in self.items:
            raise ValueError(f"no quantity {key!r}; measured {sorted(self.items)}")
        return _stats.mean(self.items[key])


@torch.no_grad()
def compare_halves(run1: Run | str, run2: Run | str, latents: torch.Tensor, profile: str | None = None,
                   snapshot: int | None = None, n_steps: int = 10, device=None, floor: Run | str | None = None
                   ) -> Halves:
    """Strong generalization (paper claim 9, Fig 9): two runs trained on disjoint training sets S1, S2 with
    different seeds, sampled from the same latents with the same Euler sampler as each set's Gaussian model.

    ``floor``: a run on the *same* images as ``run1`` with another seed; its agreement with ``run1``,
    RMSE(S1, F), is how close two networks trained on one data set come, the floor against which the halves'
    agreement RMSE(S1, S2) is read.

    Per latent: RMSE(S1, S2), RMSE(S1, G1), RMSE(S2, G2), RMSE(G1, G2), RMSE(S1, F) and whether each network's
    sample copies an image of its own training set; the row holds their means with 95% bootstrap intervals.
    """
    from . import metrics, sampling

    r1, r2 = _as_run(run1, profile), _as_run(run2, profile)
    same_order = (r1.dataset, r1.subset_seed) == (r2.dataset, r2.subset_seed)
    if same_order and r1.offset < r2.offset + r2.n and r2.offset < r1.offset + r1.n:
        raise ValueError(f"runs {r1.name!r} and {r2.name!r} draw overlapping positions of one seeded order "
                         f"({r1.offset}..{r1.offset + r1.n - 1} and {r2.offset}..{r2.offset + r2.n - 1}); the halves "
                         "must be disjoint: give the second run offset = n of the first")
    if r1.seed == r2.seed:
        raise ValueError(f"runs {r1.name!r} and {r2.name!r} share seed {r1.seed} (initial weights, batches, noise), "
                         "which inflates their agreement; give the second half another seed")
    rf = _as_run(floor, profile) if floor is not None else None
    if rf is not None:
        if (rf.dataset, rf.n, rf.offset, rf.subset_seed) != (r1.dataset, r1.n, r1.offset, r1.subset_seed):
            raise ValueError(f"the floor run {rf.name!r} must train on the images of {r1.name!r} (same dataset, n, "
                             "offset and subset_seed)")
        if rf.seed == r1.seed:
            raise ValueError(f"the floor run {rf.name!r} must differ from {r1.name!r} in its seed")
    X1, X2 = training_set(r1), training_set(r2)
    schedule = sampling.edm_sigmas(positive_int(n_steps, "n_steps"))
    samples = {}
    for tag, r, X in (("1", r1, X1), ("2", r2, X2)):
        D = model(r, snapshot=snapshot, device=device, X=X)
        samples["S" + tag] = sampling.euler(D, latents, schedule).cpu()
        samples["G" + tag] = sampling.euler(gaussian(r, X=X, device=device), latents, schedule).cpu()
    items = {}
    rm = lambda a, b: metrics.sample_rmse(samples[a], samples[b]).cpu()  # noqa: E731
    items["RMSE(S1, S2)"], items["RMSE(S1, G1)"] = rm("S1", "S2"), rm("S1", "G1")
    items["RMSE(S2, G2)"], items["RMSE(G1, G2)"] = rm("S2", "G2"), rm("G1", "G2")
    if rf is not None:
        samples["F"] = sampling.euler(model(rf, snapshot=snapshot, device=device, X=X1), latents, schedule).cpu()
        items["RMSE(S1, F)"] = rm("S1", "F")
    items["copies S1"] = (metrics.copy_ratio(samples["S1"], X1) < 1 / 3).double().cpu()
    items["copies S2"] = (metrics.copy_ratio(samples["S2"], X2) < 1 / 3).double().cpu()
    row = {k: _stats.mean(v) for k, v in items.items()}
    return Halves(samples, items, row)
