"""fit_linear's own error estimate against its true error, at two sample sizes (CPU, about a minute).

The denoiser is an affine map plus a known smooth nonlinear residual, D(x) = 0.3 W x + 0.5 tanh(C x), on the
8 x 8 digits (d = 64) at sigma = 1, so the least-squares fit has a genuine sampling error. The "true" error of
a fit is its relative Frobenius distance to a reference fit on far more samples (all 1500 images, 64 noise draws
each); the reference's own estimated error is reported too, so its share of the "true" error is visible.
For each sample size, several seeds; the calibration ratio is mean(reported) / mean(true).

Then a target the images cannot reach: at sigma = 0.1, 200 images drawn from the Gaussian of the digits (so that
images are in unlimited supply) leave a floor above target_error = 0.05. Per seed: the floor fit_linear
estimates (from its first two rounds) against the floor of the same images measured with 256 draws, and the
images_needed it names, refitted on that many fresh images with max_noise = 64 draws: achieved / target, where
"achieved" is the distance to a fit on 100000 such images.

    .venv/bin/python benchmarks/fit_error.py [--seeds 6] [--out benchmarks/results/fit_error_cpu.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import gaussdiff_lib as gd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_linear_fit import SmoothResidual, _digit_like  # noqa: E402  the calibration test's denoiser and images


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--out", default="benchmarks/results/fit_error_cpu.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    X = gd.data.load("digits", n=1500, seed=0)
    D = SmoothResidual(64)
    t0 = time.perf_counter()
    ref = gd.linear_fit.fit_linear(D, X, [1.0], n_noise=64, seed=99, progress=False)
    Wr = ref.weights[0]
    report = {"d": 64, "sigma": 1.0, "reference_samples": ref.info[0]["samples"],
              "reference_reported_error": ref.info[0]["rel_error"], "sizes": []}
    print(f"reference: {ref.info[0]['samples']} samples, its reported error {ref.info[0]['rel_error']:.4f}")
    print(f"{'samples':>8} {'m/d':>6} {'reported':>9} {'true':>7} {'ratio':>6}")
    for n, k in ((250, 2), (500, 4)):
        reported, true = [], []
        for seed in range(args.seeds):
            L = gd.linear_fit.fit_linear(D, X[:n], [1.0], n_noise=k, seed=seed + 10, progress=False)
            reported.append(L.info[0]["rel_error"])
            true.append(float((L.weights[0] - Wr).norm() / Wr.norm()))
        row = {"samples": n * k, "m_over_d": n * k / 64, "reported": sum(reported) / len(reported),
               "true": sum(true) / len(true), "seeds": args.seeds}
        row["ratio"] = row["reported"] / row["true"]
        report["sizes"].append(row)
        print(f"{row['samples']:>8} {row['m_over_d']:>6.1f} {row['reported']:>9.4f} {row['true']:>7.4f} "
              f"{row['ratio']:>6.2f}")
    s, t = 0.1, 0.05
    ref = gd.linear_fit.fit_linear(D, _digit_like(100_000, 12345), [s], n_noise=2, seed=777, progress=False)
    Wr = ref.weights[0]
    floors, needed, achieved = [], [], []
    for seed in range(args.seeds):
        Y = _digit_like(200, seed)
        info = gd.linear_fit.fit_linear(D, Y, [s], n_noise=2, seed=seed, target_error=t, max_noise=64,
                                        unreachable="report", progress=False).info[0]
        full = gd.linear_fit.fit_linear(D, Y, [s], n_noise=256, seed=seed + 50, progress=False)
        floors.append((info["floor"], float((full.weights[0] - Wr).norm() / Wr.norm())))
        needed.append(info["images_needed"])
        L = gd.linear_fit.fit_linear(D, _digit_like(needed[-1], 1000 + seed), [s], n_noise=64, seed=seed + 99,
                                     progress=False)
        achieved.append(float((L.weights[0] - Wr).norm() / Wr.norm()))
    report["unreachable"] = {"sigma": s, "images": 200, "target": t, "max_noise": 64, "seeds": args.seeds,
                             "floor_estimated": sum(f for f, _ in floors) / len(floors),
                             "floor_measured_256_draws": sum(f for _, f in floors) / len(floors),
                             "images_needed": needed, "achieved_over_target": sum(achieved) / len(achieved) / t}
    u = report["unreachable"]
    print(f"200 images at sigma = {s}: floor estimated {u['floor_estimated']:.4f}, measured with 256 draws "
          f"{u['floor_measured_256_draws']:.4f}; images needed for {t}: {needed}; achieved / target with that many "
          f"images x 64 draws: {u['achieved_over_target']:.3f}")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"{report['seconds']} s; written to {args.out}")


if __name__ == "__main__":
    main()
