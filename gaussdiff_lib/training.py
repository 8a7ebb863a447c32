"""EDM training (paper section 1): log-normal sigma, weighted denoising loss, Adam, EMA, resumable runs.

A run folder describes itself like EDM's: ``options.json`` (everything that defines the run),
``stats.jsonl`` (loss per logging interval), ``checkpoint-*.pt`` (the latest two, for resuming),
``snapshot-*.pt`` (EMA weights kept at requested steps) and ``final.pt``. All ``.pt`` files are
written atomically with a digest (:mod:`gaussdiff_lib.cache`) and verified on load. Each step draws
its batch, noise and dropout from a generator seeded by (seed, step), so a run resumed from any
checkpoint ends with exactly the weights of an uninterrupted one.
"""
from __future__ import annotations

import copy
import json
import math
import time
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from . import cache as _cache
from ._checks import as_levels, image_shape_matches, positive_int, show_progress
from .denoisers import EDMDenoiser, _flat_data
from .networks import UNet, build

__all__ = ["edm_loss", "train", "train_unet", "load_run", "run_key", "default_device"]


def default_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def edm_loss(D: EDMDenoiser, y: torch.Tensor, generator: torch.Generator, P_mean: float = -1.2,
             P_std: float = 1.2, fixed_sigma: float | None = None) -> torch.Tensor:
    """EDM loss (Karras et al. 2022, section 5; paper section 1): ln sigma ~ N(P_mean, P_std^2),
    lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2, mean of lambda ||D(y + sigma n; sigma) - y||^2.

    With ``fixed_sigma`` every example is noised at that level: the loss of a denoising autoencoder
    for one noise level (paper, Theorem 1 and Fig 24)."""
    b = y.shape[0]
    sigma = (torch.randn(b, generator=generator, dtype=torch.float64) * P_std + P_mean).exp()
    if fixed_sigma is not None:
        sigma = torch.full_like(sigma, float(fixed_sigma))
    noise = torch.randn(y.shape, generator=generator, dtype=torch.float32).to(y.device)
    sd = D.sigma_data
    weight = ((sigma ** 2 + sd ** 2) / (sigma * sd) ** 2).to(y.device, y.dtype).view(-1, 1, 1, 1)
    s = sigma.to(y.device, y.dtype).view(-1, 1, 1, 1)
    return (weight * (D(y + s * noise, sigma.to(y.device)) - y).square()).mean()


def run_key(net: nn.Module, X: torch.Tensor, **options) -> str:
    """Cache key of a run: network config and initial weights, data, and every training option."""
    config = getattr(net, "config", None)
    if config is None:
        raise TypeError("train needs a network with a .config dict (e.g. gd.networks.UNet) to describe the run")
    return _cache.digest({"net": config, "init": _cache.digest(net.state_dict(), version=False),
                          "data": _cache.digest(X, version=False), **options})


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


def _checkpoints(run_dir: Path, prefix: str = "checkpoint") -> list[Path]:
    return sorted(run_dir.glob(f"{prefix}-*.pt"))


def _load_latest(run_dir: Path):
    for path in reversed(_checkpoints(run_dir)):
        try:
            return _cache.load_verified(path)
        except _cache.CorruptFileError as exc:
            warnings.warn(f"{exc}; trying an earlier checkpoint", RuntimeWarning, stacklevel=3)
            path.unlink()
    return None


@torch.enable_grad()  # callers (notebooks) may have switched autograd off
def train(net: nn.Module, X: torch.Tensor, steps: int, batch_size: int = 64, lr: float = 1e-3,
          ema: float = 0.999, run_dir: str | Path | None = None, seed: int = 0, warmup_steps: int | None = None,
          checkpoint_every: int = 500, snapshot_steps: Sequence[int] = (), sigma_data: float = 0.5,
          P_mean: float = -1.2, P_std: float = 1.2, fixed_sigma: float | None = None, device=None,
          progress: bool | None = None, cache: bool = False, log_every: int = 50) -> EDMDenoiser:
    """Train ``net`` as an EDM denoiser on images X and return the EMA model, wrapped in :class:`EDMDenoiser`.

    Args:
        net: the raw network F (e.g. ``gd.networks.UNet(..., seed=0)``); trained in place.
        X: training images [N, C, H, W] in [-1, 1].
        steps: optimizer steps; batches are drawn with replacement, so epochs = steps * batch_size / N.
        batch_size, lr: Adam settings (lr ramps up linearly over ``warmup_steps``, default min(500, steps // 10)).
        ema: EMA decay per step (0 disables averaging).
        run_dir: run folder for options, stats and checkpoints; an interrupted run resumes from it.
        seed: seed of batches, noise and dropout (the weight init is the network's own).
        fixed_sigma: train at this one noise level instead of EDM's log-normal sigma: a denoising
            autoencoder for that level (paper, Theorem 1 and Fig 24).
        snapshot_steps: steps whose EMA weights are kept as ``snapshot-<step>.pt`` (training-time studies).
        cache: keep the run under ``cache_root()/runs/<key>`` and return it at once when already finished.
        device: where to train (default: CUDA when present, else CPU).
        progress: show a progress bar (None: unless ``$GAUSSDIFF_PROGRESS`` is 0).

    Returns:
        EDMDenoiser around the EMA network in eval mode, with ``.run_dir`` and ``.stats`` (the loss log).
    """
    X = _flat_data(X)
    image_shape_matches(X, (net.in_channels, net.resolution, net.resolution), "the network")
    steps, batch_size = positive_int(steps, "steps"), positive_int(batch_size, "batch_size")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be finite and > 0, got {lr}")
    if not 0 <= ema < 1:
        raise ValueError(f"ema is a per-step decay in [0, 1), got {ema}")
    warmup_steps = min(500, max(1, steps // 10)) if warmup_steps is None else max(1, int(warmup_steps))
    snapshot_steps = sorted({int(s) for s in snapshot_steps})
    if any(s < 1 or s > steps for s in snapshot_steps):
        raise ValueError(f"snapshot_steps must lie in [1, steps={steps}], got {snapshot_steps}")
    device = torch.device(device) if device is not None else default_device()
    options = dict(steps=steps, batch_size=batch_size, lr=float(lr), ema=float(ema), seed=int(seed),
                   warmup_steps=warmup_steps, sigma_data=float(sigma_data), P_mean=float(P_mean), P_std=float(P_std),
                   snapshot_steps=snapshot_steps)
    if fixed_sigma is not None:  # only then, so the keys of diffusion runs stay as they were
        options["fixed_sigma"] = as_levels([fixed_sigma])[0]
    key = run_key(net, X, **options)
    if run_dir is None and cache:
        run_dir = _cache.cache_root() / "runs" / key[:20]
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is None and snapshot_steps:
        raise ValueError("snapshot_steps are written into the run folder: pass run_dir= or cache=True")
    if run_dir is None:
        return _run(net, X, run_dir, key, options, device, progress, checkpoint_every, log_every)
    run_dir.mkdir(parents=True, exist_ok=True)
    with _cache.file_lock(run_dir / "train"):   # a second process asking for this run waits, then loads it
        return _run(net, X, run_dir, key, options, device, progress, checkpoint_every, log_every)


def _run(net, X, run_dir, key, options, device, progress, checkpoint_every, log_every) -> EDMDenoiser:
    steps, batch_size, lr, ema, seed = (options[k] for k in ("steps", "batch_size", "lr", "ema", "seed"))
    warmup_steps, sigma_data, P_mean, P_std = (options[k] for k in ("warmup_steps", "sigma_data", "P_mean", "P_std"))
    snapshot_steps = options["snapshot_steps"]
    net = net.to(device)
    ema_net = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    start, stats = 0, []
    if run_dir is not None:
        opt_file = run_dir / "options.json"
        record = {"key": key, "net": net.config, "n_images": int(X.shape[0]), **options}
        if opt_file.exists():
            old = json.loads(opt_file.read_text())
            if old.get("key") != key:
                raise ValueError(f"{run_dir} holds a different run (options or data differ); "
                                 "choose another run_dir or delete that folder")
        else:
            opt_file.write_text(json.dumps(record, indent=2))
        final = run_dir / "final.pt"
        if final.exists():
            try:
                state = _cache.load_verified(final, map_location=device)
                ema_net.load_state_dict(state["ema"])
                net.load_state_dict(state["net"])
                return _wrap(ema_net, sigma_data, run_dir)
            except _cache.CorruptFileError as exc:
                warnings.warn(f"{exc}; resuming from the last checkpoint", RuntimeWarning, stacklevel=2)
                final.unlink()
        state = _load_latest(run_dir)
        if state is not None:
            net.load_state_dict(state["net"])
            ema_net.load_state_dict(state["ema"])
            opt.load_state_dict(state["opt"])
            start = int(state["step"])
        stats = _read_stats(run_dir, upto=start)

    D = EDMDenoiser(net, sigma_data).train()
    data = X.to(device)
    n = data.shape[0]
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="train", disable=not show_progress(progress), leave=False)
    window, t0 = [], time.time()
    for step in bar:
        g = _step_generator(seed, step)
        idx = torch.randint(n, (batch_size,), generator=g)
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup_steps)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(int(seed) * 1_000_003 + step)  # dropout masks
            loss = edm_loss(D, data[idx.to(device)], g, P_mean, P_std, options.get("fixed_sigma"))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"training diverged at step {step} (loss {loss.item()}); lower lr (now {lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema_net.parameters(), net.parameters()):
                pe.lerp_(p, 1 - ema)
            for be, b in zip(ema_net.buffers(), net.buffers()):
                be.copy_(b)
        window.append(loss.item())
        done = step + 1
        if done % log_every == 0 or done == steps:
            entry = {"step": done, "loss": sum(window) / len(window), "lr": opt.param_groups[0]["lr"],
                     "seconds": round(time.time() - t0, 3)}
            stats.append(entry)
            window = []
            bar.set_postfix(loss=f"{entry['loss']:.4f}")
            if run_dir is not None:
                with open(run_dir / "stats.jsonl", "a") as f:
                    f.write(json.dumps(entry) + "\n")
        if run_dir is not None:
            if done in snapshot_steps:
                _cache.save_atomic({"step": done, "ema": ema_net.state_dict()}, run_dir / f"snapshot-{done:08d}.pt")
            if done % checkpoint_every == 0 and done < steps:
                _cache.save_atomic({"step": done, "net": net.state_dict(), "ema": ema_net.state_dict(),
                                    "opt": opt.state_dict()}, run_dir / f"checkpoint-{done:08d}.pt")
                for old in _checkpoints(run_dir)[:-2]:
                    old.unlink()
    bar.close()
    if run_dir is not None:
        _cache.save_atomic({"step": steps, "net": net.state_dict(), "ema": ema_net.state_dict()},
                           run_dir / "final.pt")
        for old in _checkpoints(run_dir):
            old.unlink()
    den = _wrap(ema_net, sigma_data, run_dir)
    den.stats = stats
    return den


def _read_stats(run_dir: Path, upto: int) -> list[dict]:
    path = run_dir / "stats.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interruption
            continue
        if row.get("step", 0) <= upto:
            rows.append(row)
    # rewrite without entries past the checkpoint, so a resumed run logs each step once
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _wrap(ema_net: nn.Module, sigma_data: float, run_dir: Path | None) -> EDMDenoiser:
    den = EDMDenoiser(ema_net.eval().requires_grad_(False), sigma_data)
    den.run_dir = run_dir
    den.stats = _read_stats(run_dir, upto=10 ** 12) if run_dir is not None else []
    return den


def load_run(run_dir: str | Path, snapshot: int | None = None, device=None) -> EDMDenoiser:
    """Load a finished run (its EMA weights, or those of ``snapshot``) without its training data."""
    run_dir = Path(run_dir)
    opt_file = run_dir / "options.json"
    if not opt_file.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no options.json)")
    options = json.loads(opt_file.read_text())
    path = run_dir / ("final.pt" if snapshot is None else f"snapshot-{int(snapshot):08d}.pt")
    if not path.exists():
        have = [p.name for p in sorted(run_dir.glob("*.pt"))]
        raise FileNotFoundError(f"{path.name} not in {run_dir}; it holds {have or 'no weights'}")
    net = build(options["net"])
    net.load_state_dict(_cache.load_verified(path, map_location=device or "cpu")["ema"])
    return _wrap(net.to(device or "cpu"), options.get("sigma_data", 0.5), run_dir)


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
