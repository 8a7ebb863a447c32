"""What training a profile's runs will cost on this machine, measured before it starts.

``python -m gaussdiff_lib train --profile cpu --estimate`` times a few optimizer steps and forward passes of each
distinct network of the profile (its architecture, width, resolution, batch, noise-level mode and
preconditioning), in as many processes as the build trains at once and with the same threads each, so that the
cores are shared as they will be. From those it projects each run's training (steps x seconds per step) and
certificate (the forward passes its convergence measurements take, :func:`certificate_images`), and the build's
training phase as the pool would schedule it (longest first onto the first free process).

A run that is ``part_of`` a longer one costs nothing of its own (the longer run's training serves it) apart from its
certificate. The projection leaves out what a probe cannot see (loading data, writing weights, a machine busy with
other work); ``benchmarks/training_cost.py`` compares it with a real training of the same runs.
"""
from __future__ import annotations

import time

import torch

__all__ = ["probe_key", "certificate_images", "probe", "project", "schedule", "table"]

#: untimed warm-up steps (allocation, oneDNN's kernel choice); then steps are timed in growing chunks until a chunk
#: lasts at least PROBE_SECONDS (a short chunk of a small network is mostly timer noise and the machine's jitter)
WARMUP_STEPS, PROBE_SECONDS = 3, 1.5


def probe_key(r) -> tuple:
    """What one step's cost depends on: the network, the image size, the batch, one noise level or many, and the
    preconditioning. Runs with equal keys share a probe."""
    return (r.arch, r.channels, r.channel_mult, r.num_blocks, r.patch, r.resolution, r.batch_size,
            r.fixed_sigma is not None, r.precond, r.accumulate)


def certificate_images(r) -> int:
    """Images one network pass sees while a run's convergence certificate is measured
    (:func:`gaussdiff_lib.convergence.measure` at each measured step): the loss levels on the held-out and on as many
    training images (all of them when there are fewer), RMSE(D, D_G) on the held-out images at each intermediate level, and (not for a one-level
    autoencoder) the Euler samples of the memorized fraction, 10 steps from 64 latents."""
    from ..convergence import INTERMEDIATE, LOSS_LEVELS
    from ..sampling import edm_sigmas

    if r.convergence is None or r.checkpoint:
        return 0
    images = r.convergence.images
    train = min(r.n, images)                                 # the training loss is taken on at most n images
    if r.fixed_sigma is not None:
        per_point = 2 * images + train
    else:
        rmse_levels = [s for s in edm_sigmas(10)[:-1].tolist() if INTERMEDIATE[0] <= s <= INTERMEDIATE[1]]
        per_point = len(LOSS_LEVELS) * (images + train) + len(rmse_levels) * images + 10 * min(64, images)
    return per_point * len(r.measured_steps)


def _probe_one(job: tuple) -> tuple:
    """(key, seconds per step, seconds per forward image) of one run's network: ``job = (run, device, threads)``."""
    from .. import training
    from ..denoisers import EDMDenoiser
    from .models import network

    r, device, threads = job
    if threads:
        torch.set_num_threads(threads)
    device = torch.device(device) if device else training.default_device()
    shape = (1 if r.dataset in ("fashion-mnist", "mnist", "digits") else 3, r.resolution or 32, r.resolution or 32)
    X = torch.rand(max(r.batch_size, 64), *shape) * 2 - 1
    net = network(r, X)
    kwargs = dict(batch_size=r.batch_size, lr=r.lr, seed=r.seed, fixed_sigma=r.fixed_sigma, precond=r.precond,
                  device=device, progress=False, accumulate=r.accumulate, ema_rampup=None)

    def timed(steps: int) -> float:
        t0 = time.perf_counter()
        training.train(network(r, X), X, steps=steps, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    base = timed(WARMUP_STEPS)                               # first allocations and kernel choices
    base = min(base, timed(WARMUP_STEPS))                    # the fixed cost of a call: a network and its set-up
    extra = 8
    while True:
        chunk = timed(WARMUP_STEPS + extra) - base
        if chunk >= PROBE_SECONDS or extra >= 4096:
            break
        extra *= 2
    step = chunk / extra
    D = EDMDenoiser(net.to(device), 0.5, r.precond).eval()   # the denoiser whose forward passes are timed
    x, sigma = X[:64].to(device), torch.full((64,), 1.0, device=device)
    with torch.no_grad():
        D(x, sigma)
        t0 = time.perf_counter()
        for _ in range(3):
            D(x, sigma)
        if device.type == "cuda":
            torch.cuda.synchronize()
        forward = (time.perf_counter() - t0) / (3 * 64)
    return probe_key(r), max(step, 0.0), forward


def probe(runs, jobs: int = 1, device=None, progress: bool = True) -> dict[tuple, dict]:
    """{probe key: {"step": seconds per optimizer step, "forward": seconds per image of a forward pass, "example":
    a run name}} for the distinct networks of ``runs``, each timed in ``jobs`` processes at once with ``cores // jobs``
    threads each (as ``train --jobs`` trains two runs side by side)."""
    import os

    distinct = {}
    for r in runs:
        if not r.checkpoint:
            distinct.setdefault(probe_key(r), r)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0
    # each network is timed in all processes at once (copies handed out together), so the cores are shared while it
    # is timed as they are while runs train side by side; the copies' mean is its cost
    work = [(r, None if device is None else str(device), threads) for r in distinct.values() for _ in range(jobs)]
    if progress:
        print(f"timing {len(distinct)} distinct networks (about {PROBE_SECONDS:g} s of steps each, {jobs} "
              f"process{'es' if jobs > 1 else ''} at once)", flush=True)
    if jobs == 1:
        found = [_probe_one(w) for w in work]
    else:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(jobs)
        try:
            found = pool.map(_probe_one, work, chunksize=1)
        finally:
            pool.close()
            pool.join()
    merged: dict[tuple, list] = {}
    for key, step, fwd in found:
        merged.setdefault(key, []).append((step, fwd))
    found = [(key, sum(s for s, _ in v) / len(v), sum(f for _, f in v) / len(v)) for key, v in merged.items()]
    return {key: {"step": step, "forward": fwd, "example": distinct[key].name} for key, step, fwd in found}


def project(runs, probes: dict) -> list[dict]:
    """One row per run: ``name``, ``steps``, ``training`` (seconds: steps x the probe's step; 0 for a run that is
    ``part_of`` another of ``runs``, whose training is that run's; a run whose longer run is not among ``runs`` trains
    that run as far as its own steps, as ``train`` does), ``certificate`` (seconds: :func:`certificate_images` x the
    probe's forward pass) and ``part_of`` (empty when the run pays its own steps)."""
    runs = list(runs)
    names = {r.name for r in runs}
    rows = []
    for r in runs:
        if r.checkpoint:
            rows.append({"name": r.name, "steps": 0, "training": 0.0, "certificate": 0.0, "part_of": ""})
            continue
        p = probes[probe_key(r)]
        shared = r.part_of if r.part_of in names else ""
        rows.append({"name": r.name, "steps": r.steps, "training": 0.0 if shared else r.steps * p["step"],
                     "certificate": certificate_images(r) * p["forward"], "part_of": shared})
    return rows


def schedule(seconds: list[float], jobs: int) -> float:
    """The wall-clock time of work items of the given lengths, taken in the given order by ``jobs`` processes, each
    item going to the first process that is free (how ``train --jobs`` hands out runs)."""
    import heapq

    free = [0.0] * max(1, int(jobs))
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + float(s))
    return max(free)


def table(rows: list[dict], jobs: int, order: list[str] | None = None) -> tuple[list[list[str]], dict]:
    """The projection as text rows (longest first) and totals: ``training`` and ``certificates`` (compute, all runs)
    and ``wall`` (the training phase's wall-clock with ``jobs`` processes, runs taken in ``order``, by default the
    longest first)."""
    by_name = {row["name"]: row for row in rows}
    order = order or sorted(by_name, key=lambda n: -(by_name[n]["training"] + by_name[n]["certificate"]))
    wall = schedule([by_name[n]["training"] + by_name[n]["certificate"] for n in order], jobs)
    text = [[row["name"], f"{row['steps']:,}", f"{row['training']:,.0f} s" if not row["part_of"]
             else f"in {row['part_of']}", f"{row['certificate']:,.0f} s"]
            for row in sorted(rows, key=lambda x: -(x["training"] + x["certificate"]))]
    totals = {"training": sum(r["training"] for r in rows), "certificates": sum(r["certificate"] for r in rows),
              "wall": wall, "jobs": jobs, "runs": len(rows)}
    return text, totals
