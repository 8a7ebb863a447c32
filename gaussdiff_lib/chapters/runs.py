"""Runs as data: the trained networks of the book, named once per profile.

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
recipe (``steps``, ``batch_size``, ``lr``, ``ema``, ``seed``, ``accumulate`` = micro-batches per step, which
changes memory, not the run, ``precond`` = ``edm`` or the baselines ``ve`` /
``vp`` of Karras et al. 2022, Table 1, optional ``fixed_sigma`` for a
denoising autoencoder at one noise level, ``snapshots`` = steps whose EMA weights are kept, the
paper's training-time checkpoints; ``ema`` is EDM's half-life in training images, ramped up; ``warmup`` = the
learning rate's warm-up steps, by default a tenth of the run, at least 1 and at most 500). A run with
``part_of: <run>`` is not trained on its own: it is that longer run's EMA weights at its own ``steps`` (the same
data, network and recipe, checked), so a run and its longer control cost one training. Every trained
run also keeps the snapshots its convergence criterion measures, and :func:`~gaussdiff_lib.chapters.models.certificate` says whether it
converged. :func:`~gaussdiff_lib.chapters.models.model` trains a run or loads it from the cache; runs are
keyed by content, so a sweep and a chapter asking for the same run share one trained network.
A run with ``checkpoint`` (a path or URL of one of NVIDIA's EDM pickles; ``checkpoint_sha256`` pins the file's
SHA-256, checked on download and on every load) is not trained: :func:`~gaussdiff_lib.chapters.models.model`
loads those weights (:func:`gaussdiff_lib.checkpoints.load_edm`), and ``n``/``dataset`` name the data
they were trained on.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from .._checks import as_levels, as_sha256, positive_int
from ..convergence import Criterion, criterion_from
from ..networks import ARCHS
from .. import training as _training
from ..training import DEFAULT_BATCH_SIZE, DEFAULT_LR, DEFAULT_STEPS, EMA_HALFLIFE
from . import profiles as _profiles

__all__ = ["Run", "runs", "run", "sweep", "sweeps", "criterion", "section", "as_run", "check_same_training",
           "replicates", "dae_label", "dae_description", "training_set", "heldout_set", "ARCH_NAMES"]


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
    steps: int = DEFAULT_STEPS
    batch_size: int = DEFAULT_BATCH_SIZE
    lr: float = DEFAULT_LR
    ema: float = EMA_HALFLIFE
    seed: int = 0
    snapshots: tuple[int, ...] = field(default_factory=tuple)
    fixed_sigma: float | None = None
    precond: str = "edm"
    patch: int = 2
    checkpoint: str = ""
    checkpoint_sha256: str = ""
    accumulate: int = 1
    warmup: int | None = None
    part_of: str = ""
    convergence: Criterion | None = None

    @property
    def warmup_steps(self) -> int:
        """The learning rate's warm-up in steps (``warmup``, or else training's default: a tenth of the run, at
        least 1 and at most 500)."""
        return self.warmup if self.warmup is not None else _training.default_warmup(self.steps)

    @property
    def trained_as(self) -> str:
        """Name of the run whose training produces these weights (the ``part_of`` run, or this run itself)."""
        return self.part_of or self.name

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


def section(profile: str) -> dict:
    """The profile's ``experiments`` section, checked for unknown keys."""
    sec = _profiles.load(profile).get("experiments")
    if not sec:
        raise ValueError(f"profile {profile!r} defines no experiments (add an 'experiments' section with "
                         f"'defaults', 'runs' and 'sweeps' to profiles/{profile}.yml)")
    unknown = set(sec) - _SECTION_KEYS
    if unknown:
        raise ValueError(f"profiles/{profile}.yml: unknown keys {sorted(unknown)} in 'experiments'; "
                         f"allowed: {sorted(_SECTION_KEYS)}")
    return sec


def criterion(profile: str) -> Criterion:
    """The profile's convergence criterion (its ``experiments.convergence`` section, defaults otherwise)."""
    return criterion_from(section(profile).get("convergence"), f"profiles/{profile}.yml")


# each field's kind and an example value, for the one-line error a wrong type gets (before anything runs)
_KINDS = {"n": ("int", 4096), "dataset": ("str", "fashion-mnist"), "resolution": ("int?", 16), "offset": ("int0", 0),
          "subset_seed": ("int0", 0), "arch": ("str", "unet"), "channels": ("int", 16),
          "channel_mult": ("mult", "1,2"), "num_blocks": ("int", 1), "dropout": ("float0", 0.0),
          "steps": ("int", 2000), "batch_size": ("int", 64), "lr": ("float", 1e-3), "ema": ("float0", 500000),
          "seed": ("int0", 0), "snapshots": ("ints", [100, 500]), "fixed_sigma": ("float?", 1.5),
          "precond": ("str", "edm"), "patch": ("int", 2), "checkpoint": ("str", "edm-cifar10.pkl"),
          "checkpoint_sha256": ("str", "<64 hexadecimal digits>"), "accumulate": ("int", 1),
          "warmup": ("int?", 300), "part_of": ("str", "n16384-long")}
_KIND_WORDS = {"int": "a positive integer", "int?": "a positive integer or null", "int0": "an integer >= 0",
               "str": "a string", "mult": "a list of integers or a string like '1,2'",
               "float": "a number > 0", "float0": "a number >= 0", "float?": "a number > 0 or null",
               "ints": "a list of positive integers"}


def _check_type(name: str, profile: str, key: str, value) -> None:
    """Refuse a run field of the wrong type in one line naming the key, the type expected and an example."""
    import numbers

    if key not in _KINDS:
        return
    kind, example = _KINDS[key]
    integer = lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)  # noqa: E731
    number = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)  # noqa: E731
    ok = {"int": lambda v: integer(v) and v >= 1, "int?": lambda v: v is None or integer(v) and v >= 1,
          "int0": lambda v: integer(v) and v >= 0, "str": lambda v: isinstance(v, str),
          "mult": lambda v: isinstance(v, str) or isinstance(v, (list, tuple)) and all(integer(m) and m >= 1
                                                                                       for m in v),
          "float": lambda v: number(v) and v > 0, "float0": lambda v: number(v) and v >= 0,
          "float?": lambda v: v is None or number(v) and v > 0,
          "ints": lambda v: v is None or isinstance(v, (list, tuple)) and all(integer(t) and t >= 1 for t in v)}[kind]
    if not ok(value):
        raise ValueError(f"profiles/{profile}.yml, run {name!r}: {key} must be {_KIND_WORDS[kind]}, got {value!r} "
                         f"(e.g. {key}: {example})")


def _make(name: str, profile: str, fields: dict, conv: Criterion | None = None) -> Run:
    unknown = set(fields) - set(_FIELDS)
    if unknown:
        raise ValueError(f"run {name!r} of profile {profile!r}: unknown fields {sorted(unknown)}; "
                         f"a run may set {sorted(_FIELDS)}")
    if "n" not in fields:
        raise ValueError(f"run {name!r} of profile {profile!r} has no training-set size 'n'")
    fields = dict(fields)
    for key, value in fields.items():
        _check_type(name, profile, key, value)
    try:
        fields["n"] = positive_int(fields["n"], "n")
        for key in ("steps", "batch_size", "channels", "num_blocks", "patch", "accumulate") + (
                ("warmup",) if fields.get("warmup") is not None else ()):
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
    from ..denoisers import check_precond

    try:
        object.__setattr__(run_, "precond", check_precond(run_.precond))
    except ValueError as exc:
        raise ValueError(f"run {name!r} of profile {profile!r}: {exc}") from None
    if run_.batch_size % run_.accumulate:
        raise ValueError(f"run {name!r}: accumulate = {run_.accumulate} micro-batches must divide its batch of "
                         f"{run_.batch_size}")
    if run_.checkpoint and (run_.snapshots or run_.fixed_sigma is not None):
        raise ValueError(f"run {name!r} loads a published checkpoint; it has no snapshots or fixed_sigma")
    if run_.checkpoint_sha256:
        if not run_.checkpoint:
            raise ValueError(f"run {name!r}: checkpoint_sha256 pins a checkpoint's file, and needs a checkpoint")
        try:
            object.__setattr__(run_, "checkpoint_sha256", as_sha256(run_.checkpoint_sha256, "checkpoint_sha256"))
        except ValueError as exc:
            raise ValueError(f"run {name!r}: {exc}") from None
    if run_.arch == "linear" and run_.fixed_sigma is None:
        raise ValueError(f"run {name!r}: a linear network is a one-level denoising autoencoder; give it fixed_sigma")
    if any(s > run_.steps for s in run_.snapshots):
        raise ValueError(f"run {name!r}: snapshots {list(run_.snapshots)} go past its {run_.steps} steps")
    from ..training import check_ema

    try:
        check_ema(run_.ema, None, run_.batch_size)
        run_.measured_steps  # a criterion that cannot be evaluated on this run is an error now, not later
    except (TypeError, ValueError) as exc:
        raise ValueError(f"run {name!r} of profile {profile!r}: {exc}") from None
    return run_


def runs(profile: str) -> dict[str, Run]:
    """Every run a profile defines, by name."""
    sec = section(profile)
    defaults = sec.get("defaults") or {}
    table = sec.get("runs") or {}
    if not isinstance(table, dict) or not all(isinstance(v, dict) or v is None for v in table.values()):
        raise ValueError(f"profiles/{profile}.yml: experiments.runs must map run names to field maps")
    conv = criterion(profile)
    made = {str(name): _make(str(name), profile, {**defaults, **(fields or {})}, conv) for name, fields in table.items()}
    return _join_parts(made, profile)


# fields in which a run that is the first steps of another (``part_of``) may differ from it
_PART_FREE = {"name", "steps", "snapshots", "part_of", "warmup", "convergence"}


def _join_parts(made: dict[str, Run], profile: str) -> dict[str, Run]:
    """Resolve ``part_of``: a run that names another is that run's EMA weights at its own ``steps`` (one training
    serves both, e.g. a run and its longer control). Checks that the two are the same training up to that step (the
    same data, network and recipe; the learning-rate warm-up is the longer run's) and adds the shorter run's final,
    measured and snapshot steps to the longer run's snapshots."""
    extra: dict[str, set[int]] = {}
    for name, r in made.items():
        if not r.part_of:
            continue
        where = f"profiles/{profile}.yml, run {name!r}: part_of {r.part_of!r}"
        parent = made.get(r.part_of)
        if parent is None:
            raise ValueError(f"{where} names no run of the profile; name one of {sorted(made)}")
        if parent.part_of:
            raise ValueError(f"{where} is itself part of {parent.part_of!r}; name the run that is trained, "
                             f"{parent.part_of!r}")
        if r.checkpoint or parent.checkpoint:
            raise ValueError(f"{where}: a published checkpoint is not trained here and has no earlier steps")
        if r.steps >= parent.steps:
            raise ValueError(f"{where}: its {r.steps} steps must be fewer than the {parent.steps} of {r.part_of!r} "
                             "(it is that run's weights at an earlier step)")
        differ = [f.name for f in dataclasses.fields(Run)
                  if f.name not in _PART_FREE and getattr(r, f.name) != getattr(parent, f.name)]
        if differ:
            raise ValueError(f"{where}: it differs from {r.part_of!r} in {differ}; a run that is part of another "
                             "shares its data, network and recipe, and differs only in steps and snapshots")
        if r.warmup is not None and r.warmup != parent.warmup_steps:
            raise ValueError(f"{where}: warmup {r.warmup} differs from the {parent.warmup_steps} warm-up steps of "
                             f"{r.part_of!r}, whose training it is; leave warmup out or make them equal")
        made[name] = dataclasses.replace(r, warmup=parent.warmup_steps)
        extra.setdefault(r.part_of, set()).update({r.steps, *made[name].kept_steps})
    for name, steps in extra.items():
        made[name] = dataclasses.replace(made[name], snapshots=tuple(sorted(set(made[name].snapshots) | steps)))
    return made


def run(name: str, profile: str) -> Run:
    """The run called ``name`` in ``profile``."""
    table = runs(profile)
    if name not in table:
        raise ValueError(f"profile {profile!r} has no run {name!r}; it defines {sorted(table)}")
    return table[name]


def sweeps(profile: str) -> dict[str, list[str]]:
    """Every sweep (a list of run names) a profile defines; each name is checked against the runs."""
    sec = section(profile)
    table = {str(k): [str(r) for r in v] for k, v in (sec.get("sweeps") or {}).items()}
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


def as_run(r: Run | str, profile: str | None) -> Run:
    """A :class:`~gaussdiff_lib.chapters.runs.Run` as given, or the run of that name in ``profile``."""
    if isinstance(r, Run):
        return r
    if profile is None:
        raise ValueError(f"give the profile of run {r!r}")
    return run(r, profile)


_DATA_FIELDS = ("dataset", "n", "offset", "subset_seed", "resolution")
_TRAINING_FIELDS = ("arch", "channels", "channel_mult", "num_blocks", "dropout", "patch", "steps", "batch_size", "lr",
                    "ema", "seed", "precond", "fixed_sigma", "warmup_steps")


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


def replicates(names, pool, profile: str) -> dict[str, list[Run]]:
    """For each run of ``names``, the runs of ``pool`` (a list of run names, or a sweep's name; "" or None: none)
    that train the same network with the same recipe on the same data and differ only in their ``seed`` (initial
    weights, data order and noise): the seed replicates of a comparison. A pool may serve several chapters, so runs
    of it that replicate none of ``names`` are skipped; a pool of which no run replicates any of them is an error
    (a profile naming the wrong sweep)."""
    names = [as_run(n, profile) for n in names]
    out = {r.name: [] for r in names}
    if not pool:
        return out
    pool = [as_run(n, profile) for n in (sweep(pool, profile) if isinstance(pool, str) else pool)]
    fields = [f for f in _DATA_FIELDS + _TRAINING_FIELDS if f != "seed"]
    for p in pool:
        for r in names:
            if all(getattr(r, f) == getattr(p, f) for f in fields) and p.seed != r.seed:
                out[r.name].append(p)
    if pool and not any(out.values()):
        raise ValueError(f"no run of {[p.name for p in pool]} replicates any of {[r.name for r in names]}: a replicate "
                         "trains the same network with the same recipe on the same data, with another seed")
    return out


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
    from ..data import load_any

    r = as_run(r, profile)
    return load_any(r.dataset, split="train", resolution=r.resolution, n=r.n, seed=r.subset_seed, offset=r.offset)


def heldout_set(profile: str, n: int, seed: int = 0, resolution: int | None = None,
                dataset: str | None = None, offset: int = 0) -> torch.Tensor:
    """``n`` held-out images for runs on ``dataset`` (default: the dataset of the profile's defaults), at
    ``resolution`` (default: the defaults'): positions ``offset`` ... ``offset + n - 1`` of the split's order seeded
    by ``seed``, so two calls with the same seed and offsets n apart draw disjoint images (one set to choose a
    setting, another to judge it).

    The profile's ``heldout`` is a source for the default dataset (e.g. CelebA-HQ for FFHQ, as the paper holds
    out; the book page 'The paper's claims', 'The denoisers')
    or a map ``{dataset: source}``; without an entry, the test split of the dataset itself (CIFAR-10 test).
    """
    from ..data import load_any

    sec = section(profile)
    defaults = sec.get("defaults") or {}
    default_dataset = defaults.get("dataset", Run.dataset)
    dataset = dataset or default_dataset
    held = sec.get("heldout") or ""
    if isinstance(held, dict):
        source = held.get(dataset) or dataset
    else:
        source = held if (held and dataset == default_dataset) else dataset
    resolution = resolution if resolution is not None else defaults.get("resolution", Run.resolution)
    return load_any(source, split="test", resolution=resolution, n=n, seed=seed, offset=offset)

