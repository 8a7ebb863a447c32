"""Training speed on the CPU: the library's training loop against the loop it replaced, in one run.

The baseline is the earlier loop, written out here: per-step seeding of the global generator for dropout,
Adam's for-loop implementation, an EMA updated parameter by parameter, the loss read back to the host every
step, contiguous (NCHW) tensors. The current loop (`gd.training.train`) uses fused Adam, one multi-tensor EMA
update, one host sync per logging interval, channels-last convolutions on the CPU, and seeds the global generator
only when the network has dropout. Both train the same network on the same batches for the same steps.

A second comparison measures throughput when a 2-core machine trains two runs at a time, one core each
(`python -m gaussdiff_lib train --jobs 2`), against one run at a time on both cores.

    python benchmarks/training_step.py                 # the cpu profile's configurations
    python benchmarks/training_step.py --steps 60      # quicker
"""
import argparse
import copy
import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import torch

import gaussdiff_lib as gd

CONFIGS = [  # (resolution, channels, batch): the cpu profile's networks
    (16, 16, 64),
    (8, 4, 64),
    (8, 64, 64),
]


def _baseline(net, X, steps, batch_size, lr=2e-3, ema=0.995, seed=0):
    """The earlier training step, kept as the baseline (same loss, sampling of batches and noise)."""
    ema_net = copy.deepcopy(net).eval().requires_grad_(False)
    opt = torch.optim.Adam(net.parameters(), lr=lr, foreach=False)
    D = gd.denoisers.EDMDenoiser(net, 0.5).train()
    stats = []
    for step in range(steps):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(X.shape[0], (batch_size,), generator=g)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed * 1_000_003 + step)
            loss = gd.training.edm_loss(D, X[idx], g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if not torch.isfinite(loss):
            raise FloatingPointError("diverged")
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema_net.parameters(), net.parameters()):
                pe.lerp_(p, 1 - ema)
        stats.append(loss.item())
    return ema_net


def _time(fn, repeats=3):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _one(res, ch, batch, steps, threads):
    torch.set_num_threads(threads)
    X = gd.data.load("fashion-mnist", split="train", resolution=res, n=2048, seed=0)
    net = lambda: gd.networks.UNet(1, ch, res, (1, 2), 1, 0.0, seed=0)  # noqa: E731
    # warm both paths once (allocator, oneDNN primitive caches)
    _baseline(net(), X, 5, batch)
    gd.training.train(net(), X, steps=5, batch_size=batch, progress=False)
    old = _time(lambda: _baseline(net(), X, steps, batch))
    new = _time(lambda: gd.training.train(net(), X, steps=steps, batch_size=batch, progress=False))
    return old / steps, new / steps


def _worker(args):
    """One of two concurrent runs on one core; both wait at a barrier after warming up, so the timed parts
    overlap. Returns the timed part's start and end (perf_counter is system-wide on Linux)."""
    res, ch, batch, steps = args
    torch.set_num_threads(1)
    X = gd.data.load("fashion-mnist", split="train", resolution=res, n=2048, seed=0)
    gd.training.train(gd.networks.UNet(1, ch, res, (1, 2), 1, 0.0, seed=0), X, steps=5, batch_size=batch,
                      progress=False)
    _BARRIER.wait()
    t = time.perf_counter()
    gd.training.train(gd.networks.UNet(1, ch, res, (1, 2), 1, 0.0, seed=1), X, steps=steps, batch_size=batch,
                      progress=False)
    return t, time.perf_counter()


_BARRIER = None


def _init(barrier):
    global _BARRIER
    _BARRIER = barrier


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "training_step_cpu.json"))
    a = p.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    for res, ch, batch in CONFIGS:
        old, new = _one(res, ch, batch, a.steps, threads=min(2, cores))
        rows.append({"resolution": res, "channels": ch, "batch": batch, "baseline_ms": 1000 * old,
                     "current_ms": 1000 * new, "speedup": old / new})
        print(f"{res}x{res} channels {ch} batch {batch}: baseline {1000 * old:.1f} ms/step, current "
              f"{1000 * new:.1f} ms/step, {old / new:.2f}x", flush=True)
    res, ch, batch = CONFIGS[0]
    torch.set_num_threads(min(2, cores))
    X = gd.data.load("fashion-mnist", split="train", resolution=res, n=2048, seed=0)
    single = _time(lambda: gd.training.train(gd.networks.UNet(1, ch, res, (1, 2), 1, 0.0, seed=0), X,
                                             steps=a.steps, batch_size=batch, progress=False), repeats=2)
    ctx = mp.get_context("spawn")
    with ctx.Pool(2, initializer=_init, initargs=(ctx.Barrier(2),)) as pool:
        spans = pool.map(_worker, [(res, ch, batch, a.steps)] * 2)
    pair = max(e for _, e in spans) - min(s for s, _ in spans)
    parallel = {"one_run_two_threads_s": single, "two_runs_one_thread_each_s": pair,
                "throughput_ratio": 2 * single / pair}
    print(f"two runs at a time, one core each: {2 * single / pair:.2f}x the steps per second of one run on "
          f"{min(2, cores)} cores", flush=True)
    out = {"cores": cores, "torch": torch.__version__, "steps": a.steps, "configs": rows, "parallel": parallel}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
