"""How long `gaussdiff --version` takes, against the import of torch it no longer pays for, in one run.

Each command runs in a fresh process (what a user typing it gets); the median of --repeat runs is reported, and
the ratio to the baseline `python -c "import torch"`. The command line imports nothing heavy before a command
needs it (the package's modules are imported on first use), so --version and --help answer in a fraction of
torch's import time; the target is under 0.5 s.

    python benchmarks/cli_version.py
    python benchmarks/cli_version.py --repeat 9
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _seconds(argv: list[str], repeat: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command (the median is reported)")
    args = parser.parse_args()
    _seconds([sys.executable, "-c", "import torch"], 1)          # warm the file cache for both
    _seconds([sys.executable, "-m", "gaussdiff_lib", "--version"], 1)
    rows = [("python -c 'import torch' (baseline)", [sys.executable, "-c", "import torch"]),
            ("python -c 'pass' (interpreter start)", [sys.executable, "-c", "pass"]),
            ("python -c 'import gaussdiff_lib'", [sys.executable, "-c", "import gaussdiff_lib"]),
            ("gaussdiff --version", [sys.executable, "-m", "gaussdiff_lib", "--version"]),
            ("gaussdiff --help", [sys.executable, "-m", "gaussdiff_lib", "--help"])]
    base = None
    print(f"median of {args.repeat} runs, each in a fresh process")
    for label, argv in rows:
        seconds = _seconds(argv, args.repeat)
        base = seconds if base is None else base
        print(f"{label:40s} {seconds:7.3f} s   {seconds / base:5.2f} x the baseline")


if __name__ == "__main__":
    main()
