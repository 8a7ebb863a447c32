"""Peak memory of the multi-delta denoiser with and without chunking at N = 60000 (Fashion-MNIST, d = 784).

Each configuration runs in a fresh subprocess; on the CPU the peak is the high-water mark of the
resident set during one call above the resident set before it (Linux: the mark is reset through
/proc/self/clear_refs), on CUDA torch's peak allocation. "Unchunked" is chunk_size = N.

    .venv/bin/python benchmarks/empirical_memory.py [--batch 256]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the resident-set high-water mark (Linux) and return the current resident set in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS") * 1024


def child(chunk: int, batch: int, device: str) -> dict:
    import torch

    import gaussdiff_lib as gd

    X = gd.data.load("fashion-mnist", split="train")
    M = gd.denoisers.EmpiricalDenoiser(X, chunk_size=chunk if chunk > 0 else X.shape[0], device=device)
    x = gd.data.load("fashion-mnist", split="test", n=batch, seed=0).to(device)
    M(x[:2], 1.0)                                         # warm up allocator and kernels
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _reset_peak_rss()
    t0 = time.perf_counter()
    out = M(x, 0.5)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = _status_kib("VmHWM") * 1024 - base
    return {"chunk": M.chunk_size, "peak_mib": peak / 2 ** 20, "seconds": time.perf_counter() - t0,
            "checksum": float(out.double().sum())}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default=None)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.device is None:
        import torch
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.child is not None:
        print(json.dumps(child(args.child, args.batch, args.device)))
        return
    print(f"device {args.device}, N = 60000, d = 784, batch {args.batch}\n")
    print(f"{'chunk_size':>10} {'peak MiB':>9} {'seconds':>8} {'peak / unchunked':>17}")
    rows = []
    for chunk in (0, 16384, 4096, 1024):
        out = subprocess.run([sys.executable, __file__, "--child", str(chunk), "--batch", str(args.batch),
                              "--device", args.device], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in rows:
        print(f"{r['chunk']:>10} {r['peak_mib']:>9.1f} {r['seconds']:>8.3f} {r['peak_mib'] / rows[0]['peak_mib']:>17.3f}")
    spread = max(r["checksum"] for r in rows) - min(r["checksum"] for r in rows)
    print(f"\nresults agree across chunk sizes: max checksum spread {spread:.2e}")


if __name__ == "__main__":
    main()
