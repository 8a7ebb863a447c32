"""What the README's library example costs: the whole block, and each of its statements, in a fresh process.

The block is read from README.md (the first ``python`` block under "## The library", the one tests/test_readme.py
executes). It runs twice, each time in a fresh process and in the same session:

- cold: with an empty model cache (what a new user pays: both networks are trained);
- warm: again on the same cache (both networks are loaded), the baseline the cold run is compared with.

Each top-level statement is timed; the statements that take most of the cold run are "the slow lines". The record
(``benchmarks/results/readme_example.json``) holds the block's SHA-256, the machine (cores, torch threads, torch
version) and every statement's seconds; ``--write-readme`` puts the cost paragraph rendered from it into README.md,
between the ``readme-example-cost`` markers. tests/test_readme.py checks that the paragraph equals what the record
renders and that the record was measured on the block as it stands, so a changed example needs a new measurement.

    python benchmarks/readme_example.py                    # measure and print
    python benchmarks/readme_example.py --write-readme     # measure, record, and update README.md
"""
from __future__ import annotations

import argparse
import ast
import datetime
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "benchmarks" / "results" / "readme_example.json"
BEGIN, END = "<!-- readme-example-cost:", "<!-- /readme-example-cost -->"
BUDGET_S = 120          # the README's promise (issue 27): at most 2 minutes on 2 cores

# run inside the measured process: execute the block's statements one by one, timing each
_RUNNER = r"""
import ast, json, sys, time
t0 = time.perf_counter()
source = open(sys.argv[1]).read()
rows, env = [], {"__name__": "__main__"}
for node in ast.parse(source).body:
    code = compile(ast.Module([node], []), "<readme>", "exec")
    t = time.perf_counter()
    exec(code, env)
    rows.append({"line": node.lineno, "statement": ast.get_source_segment(source, node).splitlines()[0],
                 "seconds": time.perf_counter() - t})
import torch
json.dump({"statements": rows, "seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(),
           "torch": torch.__version__}, open(sys.argv[2], "w"))
"""


def block(readme: Path = ROOT / "README.md") -> str:
    """The README's library example: the first ```python block after the heading "## The library"."""
    text = readme.read_text()
    if "## The library" not in text:
        raise ValueError(f"{readme} has no '## The library' section")
    rest = text[text.index("## The library"):]
    if "```python\n" not in rest:
        raise ValueError(f"{readme}: no ```python block under '## The library'")
    body = rest[rest.index("```python\n") + len("```python\n"):]
    return body[:body.index("```")]


def digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def run(source: str, cache: Path, timeout: float = 1800) -> dict:
    """Execute the block in a fresh process on ``cache`` (offline, no progress bars): its statements' seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        script, out = Path(tmp) / "readme.py", Path(tmp) / "times.json"
        script.write_text(source)
        env = {**os.environ, "GAUSSDIFF_CACHE": str(cache), "GAUSSDIFF_OFFLINE": "1", "GAUSSDIFF_PROGRESS": "0",
               "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
        env.pop("GAUSSDIFF_ROOT", None)
        done = subprocess.run([sys.executable, "-c", _RUNNER, str(script), str(out)], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"the README example failed:\n{done.stderr[-3000:]}")
        return {**json.loads(out.read_text()), "stdout": done.stdout}


def slow_lines(record: dict, share: float = 0.25) -> list[dict]:
    """The cold run's statements that each took at least ``share`` of the block's time."""
    cold = record["cold"]
    return [r for r in cold["statements"] if r["seconds"] >= share * cold["seconds"]]


def render(record: dict) -> str:
    """The README's cost paragraph, from a record."""
    cold, warm = record["cold"], record["warm"]
    slow = slow_lines(record)
    names = " and ".join(f"the block's line {r['line']} (`{r['statement'].split('=')[0].strip()} = ...`, {r['seconds']:.0f} s)"
                         for r in slow)
    return (f"Measured cost: from an empty cache the block ran in **{cold['seconds']:.0f} s** on {record['cores']} "
            f"CPU cores ({cold['threads']} torch threads, torch {cold['torch']}, {record['date']}); its slow lines "
            f"are {names}, together {sum(r['seconds'] for r in slow) / cold['seconds']:.0%} of it. Run again, with "
            f"both networks in the cache, it took {warm['seconds']:.0f} s ({warm['seconds'] / cold['seconds']:.2f} "
            f"of the first run). Measured by `benchmarks/readme_example.py`, recorded in "
            f"`benchmarks/results/readme_example.json`.")


def write_readme(record: dict, readme: Path = ROOT / "README.md") -> None:
    text = readme.read_text()
    head = text.index(BEGIN)
    first = text.index("\n", head) + 1
    tail = text.index(END)
    readme.write_text(text[:first] + render(record) + "\n" + text[tail:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-readme", action="store_true", help="record the measurement and update README.md")
    args = parser.parse_args()
    source = block()
    with tempfile.TemporaryDirectory() as cache:
        cold = run(source, Path(cache))
        warm = run(source, Path(cache))
    record = {"block_sha256": digest(source), "cores": os.cpu_count(),
              "date": datetime.date.today().isoformat(), "budget_seconds": BUDGET_S,
              "cold": {k: v for k, v in cold.items() if k != "stdout"},
              "warm": {k: v for k, v in warm.items() if k != "stdout"}}
    for r in cold["statements"]:
        print(f"line {r['line']:3d}  {r['seconds']:7.2f} s  {r['statement'][:90]}")
    print(f"cold: {cold['seconds']:.1f} s ({cold['seconds'] / BUDGET_S:.2f} of the {BUDGET_S} s budget); "
          f"warm (baseline, same cache): {warm['seconds']:.1f} s; cold / warm = {cold['seconds'] / warm['seconds']:.1f}")
    print(render(record))
    if args.write_readme:
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(record, indent=1) + "\n")
        write_readme(record)
        print(f"wrote {RECORD} and README.md")


if __name__ == "__main__":
    main()
