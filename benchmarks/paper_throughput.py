"""Training throughput of every network a profile trains, measured on this machine's GPU.

For each distinct training configuration of the profile's runs (architecture, channel size, multipliers,
resolution, batch size; published checkpoints are skipped) it times a few steps of
:func:`gaussdiff_lib.training.train` on synthetic data of the run's shape and records seconds per step,
images per second and peak GPU memory. The book's page "Reproducing the paper at scale" turns these
into training-time estimates for each run.

    python benchmarks/paper_throughput.py --profile paper --out paper_throughput.json
"""
from __future__ import annotations

import argparse
import json
import time

import torch

import gaussdiff_lib as gd


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--channels", type=int, default=3, help="image channels of the synthetic data")
    parser.add_argument("--out", default="paper_throughput.json")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="fp32: the float32 loop the reports in gaussdiff_lib/chapters/reports were measured with; "
                             "bf16: autocast (the training default on CUDA)")
    parser.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--accumulate", type=int, default=1, help="micro-batches per step")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "profile": args.profile, "configs": {}}
    report["settings"] = {"precision": args.precision, "tf32": args.tf32, "accumulate": args.accumulate}
    seen = {}
    for r in gd.experiments.runs(args.profile).values():
        if not r.checkpoint:
            seen.setdefault(r.config_key, r)
    for key, r in seen.items():
        X = torch.rand(max(r.batch_size, 64), args.channels, r.resolution, r.resolution, device=device) * 2 - 1
        net = gd.networks.make(r.arch, args.channels, r.resolution, r.channels, r.channel_mult, r.num_blocks,
                               r.dropout, r.patch, seed=r.seed)
        params = sum(p.numel() for p in net.parameters())
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        entry = {"params": params}
        try:
            D = gd.training.train(net, X, steps=args.steps, batch_size=r.batch_size, lr=r.lr, ema=r.ema,
                                  fixed_sigma=r.fixed_sigma, device=device, progress=False, log_every=1,
                                  precision=args.precision, tf32=args.tf32, accumulate=args.accumulate)
            secs = [s["seconds"] for s in D.stats]
            per_step = (secs[-1] - secs[1]) / (len(secs) - 2)   # the first step pays for allocation/autotuning
            entry.update(s_per_step=round(per_step, 4), img_per_s=round(r.batch_size / per_step, 1))
            del D
        except torch.cuda.OutOfMemoryError as exc:
            entry["error"] = f"out of memory: {str(exc)[:200]}"
        entry["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2) if device == "cuda" else None
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        report["configs"][key] = entry
        print(f"{key:55s} {entry}", flush=True)
        del net, X
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
