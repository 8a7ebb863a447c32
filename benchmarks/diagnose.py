"""What a cpu-scale diagnosis costs, and how close the cost it announces is to what it takes.

A UNet (channel size 16, 16 x 16 Fashion-MNIST, the cpu profile's architecture) trained briefly on N = 4096 images
(its quality does not change the cost), diagnosed with ``gd.diagnose`` at the report's "full" and "smoke" settings
(`gd.chapters.report.SETTINGS`). Baseline in the same run: one forward pass of the network on a batch of 64, and the
cost ``gd.diagnosis.estimate_cost`` announces before the work starts; the ratio measured / announced says how far a
user can trust the announcement.

    python benchmarks/diagnose.py            # prints, and writes benchmarks/results/diagnose_cpu.json
"""
import json
import os
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    os.environ.setdefault("GAUSSDIFF_PROGRESS", "0")
    os.environ.setdefault("GAUSSDIFF_CACHE", tempfile.mkdtemp(prefix="gaussdiff-bench-"))
    import gaussdiff_lib as gd
    from gaussdiff_lib.chapters.report import SETTINGS

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    X = gd.data.load("fashion-mnist", split="train", resolution=16, n=4096, seed=0)
    H = gd.data.load("fashion-mnist", split="test", resolution=16, n=1024, seed=0)
    D = gd.training.train(gd.networks.UNet(1, 16, 16, (1, 2), seed=0), X, steps=200, batch_size=64, lr=2e-3,
                          cache=True, progress=False)
    x = H[:64]
    with torch.no_grad():
        D(x, 1.5)
        t0 = time.perf_counter()
        D(x, 1.5)
        forward = time.perf_counter() - t0
    rows = {}
    for setting in ("smoke", "full"):
        t0 = time.perf_counter()
        rep = gd.diagnose(D, X, H, progress=False, **SETTINGS[setting])
        seconds = time.perf_counter() - t0
        rows[setting] = {"seconds": seconds, "announced_seconds": rep.cost["seconds"],
                         "measured_over_announced": seconds / rep.cost["seconds"],
                         "over_one_forward_pass": seconds / forward, **SETTINGS[setting]}
        print(f"{setting:6s} {seconds:7.1f} s  announced {rep.cost['seconds']:6.1f} s  "
              f"(measured / announced {seconds / rep.cost['seconds']:.2f}; {seconds / forward:,.0f} forward passes "
              f"of a batch of 64)")
    record = {"cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "N": int(X.shape[0]), "d": int(X[0].numel()),
              "forward_batch64_seconds": forward, "settings": rows}
    out = ROOT / "benchmarks" / "results" / "diagnose_cpu.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
