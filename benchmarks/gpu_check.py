"""Paper-scale kernels on one GPU, on synthetic data of FFHQ-64 shape (N = 70000, d = 3 x 64 x 64 = 12288).

Times and peak GPU memory of: training steps at channel size 128 (this project's UNet and the NCSN++
of EDM), the Gaussian fit (mean, covariance and eigendecomposition at d = 12288), the multi-delta
denoiser over all 70000 images, the closed-form least-squares linear fit of a width-128 network at one
sigma, and the closed-form Gaussian sampler. Writes a JSON report (``--out``) and prints a table.

    python benchmarks/gpu_check.py --out gpu_check.json

Synthetic data: a low-rank-plus-noise image model squashed into [-1, 1], so the covariance has a
realistic decaying spectrum. Nothing here is a unit test; the numbers go to benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import torch

import gaussdiff_lib as gd

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def synthetic(n: int, shape=(3, 64, 64), rank: int = 256, seed: int = 0, device=None) -> torch.Tensor:
    device = device or DEVICE
    g = torch.Generator(device=device).manual_seed(seed)
    d = math.prod(shape)
    basis = torch.randn(rank, d, generator=g, device=device) / math.sqrt(d)
    scales = torch.logspace(1.2, -1, rank, device=device)
    X = torch.empty(n, d, device=device)
    for i in range(0, n, 8192):
        m = min(8192, n - i)
        z = torch.randn(m, rank, generator=g, device=device) * scales
        X[i:i + m] = torch.tanh(z @ basis * 3 + 0.05 * torch.randn(m, d, generator=g, device=device))
    return X.view(n, *shape)


CUDA = DEVICE == "cuda"


class Stage:
    """Wall time and peak GPU memory of one block; an out-of-memory error is recorded and skipped."""

    def __init__(self, report: dict, name: str):
        self.report, self.name = report, name

    def __enter__(self):
        if CUDA:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self.base = torch.cuda.memory_allocated() if CUDA else 0
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb):
        if CUDA:
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() if CUDA else 0
        entry = {"seconds": round(time.perf_counter() - self.t0, 3), "peak_gib": round(peak / 2 ** 30, 2),
                 "peak_above_start_gib": round((peak - self.base) / 2 ** 30, 2)}
        if exc is not None:
            entry["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
        self.report[self.name] = {**self.report.get(self.name, {}), **entry}
        print(f"{self.name:60s} {entry}", flush=True)
        if CUDA:
            torch.cuda.empty_cache()
        return isinstance(exc, torch.cuda.OutOfMemoryError)  # record an out-of-memory error and go on


def step_time(net, X, batch, steps, report, name):
    with Stage(report, name) as st:
        D = gd.training.train(net, X, steps=steps, batch_size=batch, lr=2e-4, device=DEVICE,
                              progress=False, log_every=1)
        secs = [s["seconds"] for s in D.stats]
        per_step = (secs[-1] - secs[1]) / (len(secs) - 2)  # skip the first step (allocation, cudnn autotune)
        report[name] = {"batch": batch, "steps": steps, "s_per_step": round(per_step, 4),
                        "img_per_s": round(batch / per_step, 1)}
    del st


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--n", type=int, default=70000)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--resolution", type=int, default=64, help="64 is FFHQ-64; smaller for a dry run on a CPU")
    parser.add_argument("--width", type=int, default=128, help="the channel size of the trained networks")
    parser.add_argument("--batches", default="64,256", help="training batch sizes to time")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False  # report float32 numbers as the library computes them
    res, w, shape = args.resolution, args.width, (3, args.resolution, args.resolution)
    d = 3 * res * res
    report = {"device": torch.cuda.get_device_name() if CUDA else "cpu", "torch": torch.__version__,
              "gaussdiff": gd.__version__, "n": args.n, "d": d}
    print(report, flush=True)

    with Stage(report, f"synthetic data {args.n} x 3 x {res} x {res}"):
        X = synthetic(args.n, shape)
    X_small = X[:1094].clone()

    # training steps at channel size 128 (the book page 'The paper's claims', 'The setup'), on N = 1094 (the training set is not the cost)
    def ncsn(seed=0, dropout=0.05):
        return gd.edm_networks.build_songunet("ncsnpp", 3, res, w, (1, 2, 2, 2), 4, dropout=dropout,
                                              attn_resolutions=(res // 4,), seed=seed)

    for batch in (int(b) for b in args.batches.split(",")):
        step_time(gd.networks.UNet(3, w, res, (1, 2, 2, 2), 4, 0.05, seed=0), X_small, batch, args.steps, report,
                  f"train UNet-{w} batch {batch}")
        step_time(ncsn(), X_small, batch, args.steps, report, f"train NCSN++-{w} batch {batch}")
    report["params"] = {f"UNet-{w}": sum(p.numel() for p in gd.networks.UNet(3, w, res, (1, 2, 2, 2), 4).parameters()),
                        f"NCSN++-{w}": sum(p.numel() for p in ncsn().parameters())}

    with Stage(report, f"Gaussian fit d={d} (N={args.n}, float64 eigh)"):
        G = gd.denoisers.GaussianDenoiser.from_data(X, device=DEVICE)
    held = synthetic(256, shape, seed=1)
    with Stage(report, f"multi-delta D_M over {args.n}, 100 queries x 3 sigmas"):
        M = gd.denoisers.EmpiricalDenoiser(X, device=DEVICE)
        for s in (80.0, 1.5, 0.002):
            out = M(held[:100], s)
        report["multi-delta finite"] = bool(torch.isfinite(out).all())
    del M
    with Stage(report, "closed-form Gaussian sampler, 100 samples x 10 levels"):
        z = gd.sampling.latents(range(100), shape, device=DEVICE)
        traj = gd.sampling.gaussian_closed_form(G, z, gd.sampling.edm_sigmas(10))
        report["closed-form finite"] = bool(torch.isfinite(traj).all())
    n_fit = max(64, -(-(d + 1) * 4 // 3 // 4))  # images x 4 noise draws >= 4/3 (d + 1) samples
    images = synthetic(n_fit, shape, seed=2)
    with Stage(report, f"fit_linear d={d}, 1 sigma, {n_fit} x 4 samples (NCSN++-{w})"):
        D = gd.denoisers.EDMDenoiser(ncsn(dropout=0.0).eval().requires_grad_(False)).to(DEVICE)
        L = gd.linear_fit.fit_linear(D, images, [1.5017], n_noise=4, batch_size=256, device=DEVICE, progress=False)
        report["fit_linear condition"] = float(L.info[0]["condition"])
    with Stage(report, "fit_linear of D_G itself (oracle: W_G)"):
        LG = gd.linear_fit.fit_linear(G, images, [1.5017], n_noise=4, batch_size=512, device=DEVICE, progress=False)
        report["fit of D_G: rel. error of W"] = gd.metrics.weight_distance(LG.weight(1.5017).cpu(),
                                                                           G.weight(1.5017).cpu())
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
