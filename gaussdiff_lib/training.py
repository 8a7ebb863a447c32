"""EDM training (the book page 'The paper's claims', 'The setup'): log-normal sigma, weighted denoising loss,
Adam, EMA, resumable runs.

A run folder describes itself like EDM's: ``options.json`` (everything that defines the run),
``stats.jsonl`` (loss per logging interval), ``checkpoint-*.pt`` (the latest two, for resuming),
``snapshot-*.pt`` (EMA weights kept at requested steps) and ``final.pt``. All ``.pt`` files are
written atomically with a digest (:mod:`gaussdiff_lib.cache`) and verified on load. Each step draws
its batch, noise and dropout from a generator seeded by (seed, step), so a run resumed from any
checkpoint ends with exactly the weights of an uninterrupted one.

Several processes: under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`train` joins the process group
(NCCL on GPUs, gloo on CPUs), wraps the network in ``DistributedDataParallel`` and gives each rank an
equal slice of the same global batch: indices, noise levels and noise are drawn for the whole batch
from the (seed, step) generator on every rank, so a run with ``batch_size`` B on k processes takes the
same steps as one process with batch B (up to the order of floating-point sums; dropout masks differ
per rank). Rank 0 alone writes options, logs, checkpoints, snapshots and the final weights; the run's
key does not depend on the number of processes, so a run resumes on any world size.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from . import cache as _cache
from ._checks import (as_device, as_levels, as_training_set, image_shape_matches, positive_float, positive_int,
                      show_progress)
from .denoisers import (VE_SIGMA_MAX, VE_SIGMA_MIN, VP_EPSILON_T, EDMDenoiser, check_precond,
                         vp_sigma)
from .networks import UNet, build

__all__ = ["edm_loss", "training_sigma", "loss_weight", "ema_beta", "train", "default_warmup", "train_unet", "load_run", "run_key", "default_device", "distributed",
           "EMA_HALFLIFE", "EMA_RAMPUP"]

#: EDM's EMA half-life in training images (500 kimg) and its ramp-up ratio (Karras et al. 2022, appendix F)
EMA_HALFLIFE = 500_000.0
EMA_RAMPUP = 0.05
#: The one home of the training defaults: :func:`train` and a profile's runs (gaussdiff_lib.chapters.runs.Run)
#: both start from these (Adam's learning rate, images per step, and the run length a run gets when its profile
#: names none).
DEFAULT_LR = 2e-3
DEFAULT_BATCH_SIZE = 64
DEFAULT_STEPS = 2000


def distributed(backend: str | None = None) -> tuple[int, int]:
    """(rank, world size) of this process; joins the process group that ``torchrun`` describes in the
    environment (``WORLD_SIZE`` > 1) on first use, with ``backend`` (default: NCCL when CUDA is present,
    else gloo). (0, 1) outside torchrun."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def default_device() -> torch.device:
    """CUDA when present (under torchrun: this process's GPU, ``LOCAL_RANK``), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = os.environ.get("LOCAL_RANK")
    return torch.device("cuda", int(local)) if local is not None else torch.device("cuda")


def training_sigma(precond: str, n: int, generator: torch.Generator, P_mean: float = -1.2,
                   P_std: float = 1.2) -> torch.Tensor:
    """``n`` training noise levels (float64) as each preconditioning's loss draws them (Karras et al. 2022,
    Table 1): "edm" ln sigma ~ N(P_mean, P_std^2); "ve" sigma log-uniform in [0.02, 100]; "vp" t uniform in
    [epsilon_t, 1] = [1e-5, 1] and sigma = sigma(t) with beta_d = 19.9, beta_min = 0.1."""
    precond = check_precond(precond)
    if precond == "edm":
        return (torch.randn(n, generator=generator, dtype=torch.float64) * P_std + P_mean).exp()
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    if precond == "ve":
        return VE_SIGMA_MIN * (VE_SIGMA_MAX / VE_SIGMA_MIN) ** u
    return vp_sigma(1 + u * (VP_EPSILON_T - 1))


def loss_weight(precond: str, sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """The loss weight lambda(sigma): EDM's (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, the baselines' 1/sigma^2."""
    if check_precond(precond) == "edm":
        return (sigma ** 2 + sigma_data ** 2) / (sigma * sigma_data) ** 2
    return 1 / sigma ** 2


#: What the training log's ``loss`` is, in EDM's terms (Karras et al. 2022, training/loss.py and its training loop):
#: EDM's loss function returns lambda(sigma) (D(y + sigma n; sigma) - y)^2 per element, its loop logs the mean over
#: every element of the batch (``Loss/loss`` in its stats.jsonl) and back-propagates the sum over the batch's
#: elements divided by the batch size. gaussdiff optimises and logs the first of these: its logged losses compare
#: with EDM's logged ones directly, and its gradient is EDM's divided by C * H * W (the same direction; Adam's update
#: is invariant to that scale up to its epsilon).
LOSS_CONVENTION = ("mean over batch x C x H x W of lambda(sigma) (D(y + sigma n; sigma) - y)^2, as EDM logs "
                   "Loss/loss (EDM back-propagates the sum over C x H x W divided by the batch: C*H*W times this)")


def edm_loss(D: EDMDenoiser, y: torch.Tensor, generator: torch.Generator, P_mean: float = -1.2,
             P_std: float = 1.2, fixed_sigma: float | None = None, shard: tuple[int, int] = (0, 1)) -> torch.Tensor:
    """The denoising loss of D's preconditioning (``D.precond``; the book page 'The paper's claims', 'The setup';
    Karras et al. 2022, Table 1):
    lambda(sigma) (D(y + sigma n; sigma) - y)^2 averaged over the batch and every pixel
    (``gd.training.LOSS_CONVENTION``),
    with sigma drawn by :func:`training_sigma` and lambda from :func:`loss_weight`. For "edm": ln sigma ~ N(P_mean, P_std^2), lambda = (sigma^2 + sigma_data^2) /
    (sigma sigma_data)^2; for the "ve" and "vp" baselines their own sigma distributions and lambda = 1/sigma^2.

    With ``fixed_sigma`` every example is noised at that level: the loss of a denoising autoencoder
    for one noise level (paper, Theorem 1 and Fig 24).

    ``shard = (rank, world)``: y is slice ``rank`` of a global batch of ``world * len(y)`` images; the noise
    levels and noise of the whole global batch are drawn and this slice's part is used."""
    rank, world = shard
    b = y.shape[0]
    part = slice(rank * b, (rank + 1) * b)
    precond = getattr(D, "precond", "edm")
    sigma = training_sigma(precond, b * world, generator, P_mean, P_std)[part]
    if fixed_sigma is not None:
        sigma = torch.full_like(sigma, float(fixed_sigma))
    noise = torch.randn((b * world, *y.shape[1:]), generator=generator, dtype=torch.float32)[part].to(y.device)
    weight = loss_weight(precond, sigma, D.sigma_data).to(y.device, y.dtype).view(-1, 1, 1, 1)
    s = sigma.to(y.device, y.dtype).view(-1, 1, 1, 1)
    return (weight * (D(y + s * noise, sigma.to(y.device)) - y).square()).mean()


def ema_beta(images_seen: int, batch_size: int, halflife: float = EMA_HALFLIFE,
             rampup: float | None = EMA_RAMPUP) -> float:
    """Per-step EMA decay as EDM computes it (Karras et al. 2022, appendix F): the half-life is measured in
    training images and, with ``rampup``, capped at ``rampup`` times the images seen so far (counted after this
    step), so an early snapshot averages over recent weights instead of keeping the initial ones.
    beta = 0.5 ** (batch_size / half-life); ``halflife = 0`` means no averaging (beta = 0)."""
    if halflife == 0:
        return 0.0
    h = float(halflife)
    if rampup is not None:
        h = min(h, images_seen * float(rampup))
    return 0.5 ** (batch_size / max(h, 1e-8))


def check_ema(ema, ema_rampup, batch_size: int) -> tuple[float, float | None]:
    try:
        ema = float(ema)
    except (TypeError, ValueError):
        raise TypeError(f"ema is an EMA half-life in training images (a number), got {ema!r}") from None
    if not math.isfinite(ema) or ema < 0:
        raise ValueError(f"ema is an EMA half-life in training images (>= 0; 0 = no averaging), got {ema}")
    if 0 < ema < 1:
        hint = batch_size * math.log(0.5) / math.log(ema)
        raise ValueError(f"ema = {ema} looks like a per-step decay; ema is now EDM's half-life in training images "
                         f"(e.g. {EMA_HALFLIFE:.0f}, ramped up by ema_rampup). A decay of {ema} per step at batch "
                         f"{batch_size} is a half-life of {hint:.0f} images; 0 disables averaging")
    if ema_rampup is not None:
        ema_rampup = float(ema_rampup)
        if not 0 < ema_rampup <= 1:
            raise ValueError(f"ema_rampup is a fraction of the images seen, in (0, 1] (EDM: {EMA_RAMPUP}), or None "
                             f"for a fixed half-life; got {ema_rampup}")
    return ema, ema_rampup


def run_key(net: nn.Module, X: torch.Tensor, **options) -> str:
    """Cache key of a run: network config and initial weights, data, and every training option."""
    config = getattr(net, "config", None)
    if config is None:
        raise TypeError("train needs a network with a .config dict (e.g. gd.networks.UNet) to describe the run")
    return _cache.digest({"net": config, "init": _cache.digest(net.state_dict(), version=False),
                          "data": _cache.digest(X, version=False), **options})


def default_warmup(steps: int) -> int:
    """The learning rate's default warm-up in steps: a tenth of the run, at least 1 and at most 500."""
    return min(500, max(1, int(steps) // 10))


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def _checkpoints(run_dir: Path, prefix: str = "checkpoint") -> list[Path]:
    return sorted(run_dir.glob(f"{prefix}-*.pt"))


def _load_latest(run_dir: Path, key: str | None = None):
    for path in reversed(_checkpoints(run_dir)):
        try:
            return _cache.load_verified(path, key=key)
        except _cache.CorruptFileError as exc:
            warnings.warn(f"{exc}; trying an earlier checkpoint", RuntimeWarning, stacklevel=3)
            path.unlink()
    return None


@torch.enable_grad()  # callers (notebooks) may have switched autograd off
def train(net: nn.Module, X: torch.Tensor, steps: int, batch_size: int = DEFAULT_BATCH_SIZE, lr: float = DEFAULT_LR,
          ema: float = EMA_HALFLIFE, ema_rampup: float | None = EMA_RAMPUP, run_dir: str | Path | None = None, seed: int = 0, warmup_steps: int | None = None,
          checkpoint_every: int = 500, snapshot_steps: Sequence[int] = (), sigma_data: float = 0.5,
          P_mean: float = -1.2, P_std: float = 1.2, fixed_sigma: float | None = None, precond: str = "edm",
          device=None, progress: bool | None = None, cache: bool = False, log_every: int = 50,
          until: int | None = None, accumulate: int = 1, precision: str | None = None, tf32: bool | None = None,
          compile: bool = False) -> EDMDenoiser:
    """Train ``net`` as an EDM denoiser on images X and return the EMA model, wrapped in
    :class:`~gaussdiff_lib.denoisers.EDMDenoiser`.

    Args:
        net: the raw network F (e.g. ``gd.networks.UNet(..., seed=0)``); trained in place.
        X: training images [N, C, H, W] in [-1, 1].
        steps: optimizer steps; batches are drawn with replacement, so epochs = steps * batch_size / N.
        batch_size, lr: Adam settings (lr ramps up linearly over ``warmup_steps``, default
            ``default_warmup(steps)``: a tenth of the run, at least 1 and at most 500).
        ema: EMA half-life in training images (EDM: 500 kimg); 0 disables averaging.
        ema_rampup: cap the half-life at this fraction of the images seen so far (EDM: 0.05; None: no cap), so
            early snapshots are averages of recent weights, not of the initial ones (:func:`ema_beta`).
        run_dir: run folder for options, stats and checkpoints; an interrupted run resumes from it.
        seed: seed of batches, noise and dropout (the weight init is the network's own).
        fixed_sigma: train at this one noise level instead of EDM's log-normal sigma: a denoising
            autoencoder for that level (paper, Theorem 1 and Fig 24).
        precond: "edm" (EDM's preconditioning and loss), or the baselines "ve" / "vp" of Karras et al. (2022),
            Table 1, each with its own sigma distribution and weight 1/sigma^2 (:func:`edm_loss`; claim 2, Fig 11).
            ``P_mean`` and ``P_std`` apply to "edm" only.
        snapshot_steps: steps whose EMA weights are kept as ``snapshot-<step>.pt`` (training-time studies).
        cache: keep the run under ``cache_root()/runs/<key>`` and return it at once when already finished.
        device: where to train (default: CUDA when present, else CPU).
        progress: show a progress bar (None: unless ``$GAUSSDIFF_PROGRESS`` is 0).
        accumulate: split each step's batch into this many micro-batches whose gradients are summed before the
            step, so a batch that does not fit the device at once still trains (the channel-128 runs at batch 256
            on one 80 GB card). The noise levels and noise are drawn for the whole batch and sliced, so without
            dropout the step is the same as one batch, up to float rounding; it does not enter the run's key.
        precision: "fp32", or "bf16" (the forward and loss under bfloat16 autocast, weights, optimizer and EMA in
            float32). None: "bf16" on CUDA, "fp32" elsewhere. "bf16" enters the run's key.
        tf32: TensorFloat-32 matmuls and convolutions on CUDA (None: on with CUDA). Enters the key when on.
        compile: run the network through ``torch.compile`` (off by default: it pays a compile time per process).
        until: stop after this step, keeping a checkpoint there, and return the EMA weights reached; a
            later call with the same arguments continues (training in chunks, e.g. under a job time limit).

    Under ``torchrun`` every process calls ``train`` with the same arguments; ``batch_size`` is the global
    batch and must be divisible by the number of processes (see the module docstring).

    Returns:
        EDMDenoiser around the EMA network in eval mode, with ``.run_dir``, ``.stats`` (the loss log: ``loss`` is
        the mean over each logging interval of ``LOSS_CONVENTION``, EDM's logged Loss/loss) and
        ``.trained`` (whether this call ran training steps; False when the cache served the final weights).
    """
    X = as_training_set(X)
    image_shape_matches(X, (net.in_channels, net.resolution, net.resolution), "the network")
    steps, batch_size = positive_int(steps, "steps"), positive_int(batch_size, "batch_size")
    lr = positive_float(lr, "lr", "2e-4")
    sigma_data = positive_float(sigma_data, "sigma_data", "0.5, EDM's standard deviation of images in [-1, 1]")
    log_every = positive_int(log_every, "log_every")
    checkpoint_every = positive_int(checkpoint_every, "checkpoint_every")
    ema, ema_rampup = check_ema(ema, ema_rampup, batch_size)
    warmup_steps = default_warmup(steps) if warmup_steps is None else max(1, int(warmup_steps))
    snapshot_steps = sorted({int(s) for s in snapshot_steps})
    if any(s < 1 or s > steps for s in snapshot_steps):
        raise ValueError(f"snapshot_steps must lie in [1, steps={steps}], got {snapshot_steps}")
    if until is not None and not 1 <= int(until) <= steps:
        raise ValueError(f"until must lie in [1, steps={steps}], got {until}")
    device = as_device(device) if device is not None else default_device()
    rank, world = distributed("nccl" if device.type == "cuda" else "gloo")
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {world} processes; "
                         f"use a multiple of {world}")
    accumulate = positive_int(accumulate, "accumulate")
    if (batch_size // world) % accumulate:
        raise ValueError(f"accumulate = {accumulate} micro-batches must divide the batch of {batch_size // world} "
                         f"images{' per process' if world > 1 else ''}; choose a divisor")
    precision = ("bf16" if device.type == "cuda" else "fp32") if precision is None else str(precision).lower()
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16' (or None: bf16 on CUDA), got {precision!r}")
    tf32 = (device.type == "cuda") if tf32 is None else bool(tf32)
    options = dict(steps=steps, batch_size=batch_size, lr=float(lr), ema=ema, ema_rampup=ema_rampup, seed=int(seed),
                   warmup_steps=warmup_steps, sigma_data=float(sigma_data), P_mean=float(P_mean), P_std=float(P_std),
                   snapshot_steps=snapshot_steps)
    if fixed_sigma is not None:  # only then, so the keys of diffusion runs stay as they were
        options["fixed_sigma"] = as_levels([fixed_sigma])[0]
    precond = check_precond(precond)
    if precond != "edm":  # likewise: EDM runs keep the keys they had before the baselines existed
        options["precond"] = precond
    if precision != "fp32":  # and float32 runs keep theirs
        options["precision"] = precision
    if tf32 and device.type == "cuda":
        options["tf32"] = True
    key = run_key(net, X, **options)
    if run_dir is None and cache:
        run_dir = _cache.cache_root() / "runs" / key[:20]
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is None and (snapshot_steps or until is not None):
        raise ValueError("snapshot_steps and until are kept in the run folder: pass run_dir= or cache=True")
    speed = {"accumulate": accumulate, "compile": bool(compile)}
    args = (net, X, run_dir, key, options, device, progress, checkpoint_every, log_every, until, (rank, world), speed)
    if run_dir is None:
        return _run(*args)
    if rank == 0:
        _cache.make_dirs(run_dir)
    # a second job asking for this run waits, then loads it; the other ranks of this job follow rank 0
    with _cache.file_lock(run_dir / "train") if rank == 0 else contextlib.nullcontext():
        return _run(*args)


def _read_options(opt_file: Path) -> dict | None:
    """A run folder's options, or None when the file is empty or cut short (a write interrupted before options
    were written atomically)."""
    try:
        old = json.loads(opt_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return old if isinstance(old, dict) else None


def _clean_leftovers(run_dir: Path, finished: bool) -> None:
    """Remove what an interrupted process left behind: temporary files of atomic writes (``.*.tmp``) and, once the
    run has its final weights, the checkpoints a kill between writing them and cleaning up kept. Called under the
    run's lock, so no other process is writing these files."""
    for tmp in run_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    if finished:
        for old in _checkpoints(run_dir):
            old.unlink(missing_ok=True)


def _resume_point(run_dir: Path, key: str, record: dict, device):
    """Rank 0's look at the run folder: ('final', state), ('checkpoint', state) or ('start', None)."""
    opt_file = run_dir / "options.json"
    old = _read_options(opt_file) if opt_file.exists() else None
    if opt_file.exists() and old is None:
        warnings.warn(f"{opt_file} was unreadable (cut short by an interrupted write); rewritten for this run. Its "
                      "weights files carry their run's key, so only files of this run are used", RuntimeWarning,
                      stacklevel=3)
    if old is not None and old.get("key") != key:
        raise ValueError(f"{run_dir} holds a different run (options or data differ); "
                         "choose another run_dir or delete that folder")
    if old is None:
        _cache.write_text_atomic(opt_file, json.dumps(record, indent=2))
    final = run_dir / "final.pt"
    _clean_leftovers(run_dir, finished=False)
    if final.exists():
        try:
            state = _cache.load_verified(final, map_location=device, key=key)
            _clean_leftovers(run_dir, finished=True)
            return "final", state
        except _cache.CorruptFileError as exc:
            warnings.warn(f"{exc}; resuming from the last checkpoint", RuntimeWarning, stacklevel=3)
            final.unlink()
    state = _load_latest(run_dir, key)
    return ("checkpoint", state) if state is not None else ("start", None)


def _share(obj, rank: int, world: int, device):
    """Rank 0's object (a state dict, an error message ...) on every rank."""
    if world == 1:
        return obj
    import torch.distributed as dist

    box = [obj if rank == 0 else None]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def _uses_dropout(net: nn.Module) -> bool:
    return any(isinstance(m, nn.Dropout) and m.p > 0 for m in net.modules())


def _channels_last(net: nn.Module, device) -> bool:
    """Channels-last layout for convolutional networks: on the CPU oneDNN's convolutions run faster in it
    (``benchmarks/training_step.py``), on CUDA the tensor-core convolutions do; the weights it produces are the
    same up to float rounding."""
    return device.type in ("cpu", "cuda") and any(isinstance(m, nn.Conv2d) for m in net.modules())


@contextlib.contextmanager
def _tf32(on: bool):
    """TensorFloat-32 matmuls and cuDNN convolutions while training, the process's settings restored after."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if on:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _run(net, X, run_dir, key, options, device, progress, checkpoint_every, log_every, until, shard,
         speed=None) -> EDMDenoiser:
    with _tf32(bool(options.get("tf32"))):
        return _train_loop(net, X, run_dir, key, options, device, progress, checkpoint_every, log_every, until, shard,
                           speed or {})


def _train_loop(net, X, run_dir, key, options, device, progress, checkpoint_every, log_every, until, shard,
                speed) -> EDMDenoiser:
    steps, batch_size, lr, ema, seed = (options[k] for k in ("steps", "batch_size", "lr", "ema", "seed"))
    ema_rampup = options["ema_rampup"]
    precond = options.get("precond", "edm")
    warmup_steps, sigma_data, P_mean, P_std = (options[k] for k in ("warmup_steps", "sigma_data", "P_mean", "P_std"))
    snapshot_steps = set(options["snapshot_steps"])
    layout = torch.channels_last if _channels_last(net, device) else torch.contiguous_format
    net = net.to(device, memory_format=layout)
    ema_net = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=lr, fused=True)
    start, stats = 0, []
    rank, world = shard
    writer = run_dir is not None and rank == 0
    if run_dir is not None:
        found = None
        if rank == 0:
            record = {"key": key, "net": net.config, "n_images": int(X.shape[0]), **options}
            try:
                found = _resume_point(run_dir, key, record, "cpu")
            except ValueError as exc:
                found = ("error", str(exc))
        found = _share(found, rank, world, device)
        kind, state = found
        if kind == "error":
            raise ValueError(state)
        if kind == "final":
            missing = [t for t in sorted(snapshot_steps) if not (run_dir / f"snapshot-{t:08d}.pt").exists()]
            if missing and world == 1:
                _rebuild_snapshots(copy.deepcopy(net), X, run_dir, key, options, device, missing, log_every)
            ema_net.load_state_dict(state["ema"])
            net.load_state_dict(state["net"])
            den = _wrap(ema_net, sigma_data, run_dir, precond)
            den.trained = False  # served by the cache: this call ran no step
            return den
        if kind == "checkpoint":
            net.load_state_dict(state["net"])
            ema_net.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            start = int(state["step"])
        stats = _read_stats(run_dir, upto=start, rewrite=writer)

    D = EDMDenoiser(net, sigma_data, precond).train()
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        D.net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if speed.get("compile"):
        D.net = torch.compile(D.net)
    accumulate = int(speed.get("accumulate", 1))
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if options.get("precision") == "bf16" \
        else contextlib.nullcontext
    data = X.to(device).contiguous(memory_format=layout)
    n, local = data.shape[0], batch_size // world
    stop = steps if until is None else int(until)
    bar = tqdm(range(start, stop), initial=start, total=steps, desc="train",
               disable=not show_progress(progress) or rank != 0, leave=False)
    params, ema_params = list(net.parameters()), list(ema_net.parameters())
    buffers, ema_buffers = list(net.buffers()), list(ema_net.buffers())
    dropout = _uses_dropout(net)
    window, t0 = [], time.time()
    for step in bar:
        g = _step_generator(seed, step)
        idx = torch.randint(n, (batch_size,), generator=g)[rank * local:(rank + 1) * local]
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup_steps)
        opt.zero_grad(set_to_none=True)
        drawn, micro, loss = g.get_state(), local // accumulate, 0.0
        for j in range(accumulate):
            # micro-batch j of this rank's share: the whole global batch's noise levels and noise are drawn again
            # from the same state and sliced, so k micro-batches see exactly what one batch would
            g.set_state(drawn)
            part = (rank * accumulate + j, world * accumulate)
            y = data[idx[j * micro:(j + 1) * micro].to(device)]
            sync = world == 1 or j == accumulate - 1 or not hasattr(D.net, "no_sync")
            with contextlib.nullcontext() if sync else D.net.no_sync():
                if dropout:  # dropout masks come from the global generator: seeded per step, rank and micro-batch
                    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                        torch.manual_seed(((int(seed) * 1_000_003 + step) * world + rank) * accumulate + j)
                        with autocast():
                            part_loss = edm_loss(D, y, g, P_mean, P_std, options.get("fixed_sigma"), part)
                else:
                    with autocast():
                        part_loss = edm_loss(D, y, g, P_mean, P_std, options.get("fixed_sigma"), part)
                (part_loss.float() / accumulate).backward()   # under DDP: averaged over ranks = the global batch's
            loss = loss + part_loss.detach().float() / accumulate
        if world > 1:
            import torch.distributed as dist

            loss = loss.clone()
            dist.all_reduce(loss)
            loss /= world
        opt.step()
        done = step + 1
        with torch.no_grad():
            beta = ema_beta(done * batch_size, batch_size, ema, ema_rampup)
            torch._foreach_lerp_(ema_params, params, 1.0 - beta)
            for be, b in zip(ema_buffers, buffers):
                be.copy_(b)
        window.append(loss)
        saving = writer and (done in snapshot_steps or done % checkpoint_every == 0)
        if done % log_every == 0 or done == stop or saving:  # one host sync per interval, none per step
            losses = torch.stack(window)
            if not torch.isfinite(losses).all():
                j = int((~torch.isfinite(losses)).nonzero()[0])
                raise FloatingPointError(f"training diverged at step {done - len(window) + 1 + j} (loss "
                                         f"{losses[j].item()}); lower lr (now {lr})")
        # an entry at every interval, at the end, where a chunk stops and at every snapshot (a shorter run read from a
        # snapshot, ``part_of`` another, has its loss logged up to its own last step)
        if done % log_every == 0 or done == steps or done == stop or done in snapshot_steps:
            entry = {"step": done, "loss": losses.mean().item(), "lr": opt.param_groups[0]["lr"],
                     "seconds": round(time.time() - t0, 3), "from": start}
            stats.append(entry)
            window = []
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
            if writer:
                with open(run_dir / "stats.jsonl", "a") as f:
                    f.write(json.dumps(entry) + "\n")
        if writer:
            if done in snapshot_steps:
                _cache.save_atomic({"step": done, "ema": ema_net.state_dict()}, run_dir / f"snapshot-{done:08d}.pt",
                                   key=key)
            if done % checkpoint_every == 0 and done < steps:
                _cache.save_atomic({"step": done, "net": net.state_dict(), "ema": ema_net.state_dict(),
                                    "opt": opt.state_dict()}, run_dir / f"checkpoint-{done:08d}.pt", key=key)
                for old in _checkpoints(run_dir)[:-2]:
                    old.unlink()
    bar.close()
    if stop < steps:  # a chunk of the run: leave a checkpoint where it stopped
        if writer and start < stop:
            _cache.save_atomic({"step": stop, "net": net.state_dict(), "ema": ema_net.state_dict(),
                                "opt": opt.state_dict()}, run_dir / f"checkpoint-{stop:08d}.pt", key=key)
        _barrier(world)
        den = _wrap(ema_net, sigma_data, None, precond)
        den.run_dir, den.stats, den.trained = run_dir, stats, start < stop
        return den
    if writer:
        _cache.save_atomic({"step": steps, "net": net.state_dict(), "ema": ema_net.state_dict()},
                           run_dir / "final.pt", key=key)
        for old in _checkpoints(run_dir):
            old.unlink()
    _barrier(world)  # the other ranks return once the final weights are on disk
    den = _wrap(ema_net, sigma_data, None, precond)
    den.run_dir, den.stats, den.trained = run_dir, stats, True
    return den


def _rebuild_snapshots(init_net, X, run_dir: Path, key: str, options: dict, device, missing: list[int],
                       log_every: int) -> None:
    """Snapshots of a finished run that are missing (deleted, or removed as corrupt): retrain from the start to the
    last of them in a scratch folder, keeping only those snapshots, and move them into the run. Training is
    deterministic per (seed, step), so they are the snapshots the run wrote the first time."""
    warnings.warn(f"{run_dir}: snapshots at steps {missing} are missing; rebuilding them by training steps 1 ... "
                  f"{max(missing)} again (the run's final weights are kept)", RuntimeWarning, stacklevel=4)
    scratch = run_dir / ".rebuild"
    shutil.rmtree(scratch, ignore_errors=True)  # what an interrupted rebuild left
    _cache.make_dirs(scratch)
    _run(init_net, X, scratch, key, {**options, "snapshot_steps": missing}, device, False, 10 ** 12, log_every,
         max(missing), (0, 1))
    for t in missing:
        os.replace(scratch / f"snapshot-{t:08d}.pt", run_dir / f"snapshot-{t:08d}.pt")
    shutil.rmtree(scratch)


def _barrier(world: int):
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _read_stats(run_dir: Path, upto: int, rewrite: bool = True) -> list[dict]:
    path = run_dir / "stats.jsonl"
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interruption
            continue
        if not isinstance(row, dict) or not isinstance(row.get("step", 0), (int, float)):
            raise ValueError(f"{path}, line {number}: a training-log entry must be a JSON object with a numeric "
                             f"'step', got {line[:60]!r}; the log was edited or replaced: delete {path.parent} to "
                             "train the run again")
        if row.get("step", 0) <= upto:
            rows.append(row)
    # rewrite without entries past the checkpoint, so a resumed run logs each step once
    if rewrite:
        _cache.write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _wrap(ema_net: nn.Module, sigma_data: float, run_dir: Path | None, precond: str = "edm") -> EDMDenoiser:
    den = EDMDenoiser(ema_net.eval().requires_grad_(False), sigma_data, precond)
    den.run_dir = run_dir
    den.stats = _read_stats(run_dir, upto=10 ** 12, rewrite=False) if run_dir is not None else []
    return den


def load_run(run_dir: str | Path, snapshot: int | None = None, device=None) -> EDMDenoiser:
    """Load a finished run (its EMA weights, or those of ``snapshot``) without its training data."""
    run_dir = Path(run_dir)
    opt_file = run_dir / "options.json"
    if not opt_file.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no options.json)")
    options = _read_options(opt_file)
    if options is None:
        raise ValueError(f"{opt_file} is unreadable (empty or cut short); train the run again with the same "
                         "arguments (its options are rewritten and its weights reused) or delete the folder")
    path = run_dir / ("final.pt" if snapshot is None else f"snapshot-{int(snapshot):08d}.pt")
    if not path.exists():
        have = [p.name for p in sorted(run_dir.glob("*.pt"))]
        raise FileNotFoundError(f"{path.name} not in {run_dir}; it holds {have or 'no weights'}")
    net = build(options["net"])
    net.load_state_dict(_cache.load_verified(path, map_location=device or "cpu", key=options.get("key"))["ema"])
    return _wrap(net.to(device or "cpu"), options.get("sigma_data", 0.5), run_dir, options.get("precond", "edm"))


def train_unet(X: torch.Tensor, channels: int, channel_mult="1,2", num_blocks: int = 1, dropout: float = 0.0,
               seed: int = 0, **train_kwargs) -> EDMDenoiser:
    """Build a :class:`~gaussdiff_lib.networks.UNet` sized for X (initialised from ``seed``) and train it
    with :func:`train` (``cache=True`` unless given), so every chapter asking for the same model shares one
    cached run. ``channel_mult`` may be a tuple or a string such as "1,2,2"."""
    if isinstance(channel_mult, str):
        channel_mult = tuple(int(m) for m in channel_mult.split(","))
    net = UNet(int(X.shape[1]), channels, int(X.shape[-1]), channel_mult, num_blocks, dropout, seed=seed)
    train_kwargs.setdefault("cache", True)
    return train(net, X, seed=seed, **train_kwargs)
