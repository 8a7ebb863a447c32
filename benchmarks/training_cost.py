"""What training the cpu profile costs on this machine: the projection of ``train --estimate`` against real training.

1. The projection (:mod:`gaussdiff_lib.chapters.cost`): a few timed steps and forward passes of each distinct network,
   two processes at a time as ``make book`` trains, give each run's training and certificate seconds and the
   training phase's wall-clock.
2. The check, in the same run: a few of the profile's runs (by default a small 8 x 8 UNet and a 16 x 16 denoising autoencoder, so the
   check takes minutes) are trained and certified for real, two at a time, in a fresh cache; their training
   seconds (from each run's log) and certificate seconds are set against the projection (ratio measured /
   projected).

    python benchmarks/training_cost.py                    # writes benchmarks/results/training_cost_cpu.json
    python benchmarks/training_cost.py --check w4-n32 w8-n32   # other runs
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--check", nargs="*", default=["w16-n32", "dae-unet-1.5"], help="runs trained for real to check the "
                                                                             "projection")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "training_cost_cpu.json"))
    args = ap.parse_args()
    os.environ.setdefault("GAUSSDIFF_PROGRESS", "0")
    cache = tempfile.mkdtemp(prefix="gaussdiff-cost-")
    os.environ["GAUSSDIFF_CACHE"] = cache
    import torch

    from gaussdiff_lib.__main__ import _cost
    from gaussdiff_lib.chapters import cost, runs, timings

    table = runs.runs(args.profile)
    t0 = time.time()
    probes = cost.probe(list(table.values()), jobs=args.jobs)
    probe_seconds = time.time() - t0
    rows = cost.project(list(table.values()), probes)
    order = sorted(table, key=lambda n: _cost(table[n]), reverse=True)
    _, totals = cost.table(rows, args.jobs, order=order)
    by_name = {r["name"]: r for r in rows}

    # the check: train those runs for real, two at a time, as make book does
    record = Path(cache) / "timings.json"
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "gaussdiff_lib", "train", "--profile", args.profile, "--jobs",
                    str(args.jobs), "--runs", *args.check, "--timings", str(record)], check=True)
    check_wall = time.time() - t0
    real = {r["name"]: r for r in timings.load(record)["runs"]}
    check = [{"run": n, "projected_training": round(by_name[n]["training"], 1),
              "measured_training": real[n]["training_seconds"],
              "training_ratio": round(real[n]["training_seconds"] / by_name[n]["training"], 3),
              "projected_certificate": round(by_name[n]["certificate"], 1),
              "measured_certificate": real[n]["certificate_seconds"],
              "certificate_ratio": round(real[n]["certificate_seconds"] / by_name[n]["certificate"], 3)}
             for n in args.check]
    result = {"profile": args.profile, "jobs": args.jobs, "date": time.strftime("%Y-%m-%d"),
              "machine": {"cores": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "torch": torch.__version__},
              "probe_seconds": round(probe_seconds, 1),
              "step_ms": {probes[k]["example"]: round(1000 * probes[k]["step"], 1) for k in probes},
              "forward_ms_per_image": {probes[k]["example"]: round(1000 * probes[k]["forward"], 3) for k in probes},
              "projection": {k: round(v, 1) if isinstance(v, float) else v for k, v in totals.items()},
              "runs": {r["name"]: {"training": round(r["training"], 1), "certificate": round(r["certificate"], 1)}
                       for r in rows},
              "check": check, "check_wall_seconds": round(check_wall, 1)}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("step_ms", "projection", "check", "probe_seconds")}, indent=1))


if __name__ == "__main__":
    main()
