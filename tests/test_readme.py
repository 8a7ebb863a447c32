"""The README's library example runs as written, and the cost it states is the one measured on it.

The block is executed exactly as the README shows it (a fresh process, offline, an empty model cache, the
embedded default data). Its time is not asserted here (timing claims live in benchmarks/): the README's cost
paragraph is rendered from ``benchmarks/results/readme_example.json``, and this test checks that the paragraph is
that rendering and that the record was measured on the block as it stands now.
"""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("readme_example", ROOT / "benchmarks" / "readme_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_stated_cost_was_measured_on_this_block_and_is_rendered_from_the_record():
    bench = _bench()
    record = json.loads(bench.RECORD.read_text())
    assert record["block_sha256"] == bench.digest(bench.block()), \
        "the README example changed since it was measured: run python benchmarks/readme_example.py --write-readme"
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(bench.BEGIN):readme.index(bench.END)]
    assert bench.render(record) in section
    assert record["cold"]["seconds"] <= record["budget_seconds"] == 120     # the promise: 2 minutes on 2 cores
    assert record["cores"] <= 2
    assert [r["line"] for r in bench.slow_lines(record)] == [9, 10]         # the two train calls
    assert all("gd.training.train(" in bench.block().splitlines()[r["line"] - 1] for r in bench.slow_lines(record))


def test_the_readme_example_runs_as_written(tmp_path):
    source = _bench().block()
    script = tmp_path / "example.py"
    script.write_text(source)
    env = {**os.environ, "GAUSSDIFF_CACHE": str(tmp_path / "cache"), "GAUSSDIFF_OFFLINE": "1",
           "GAUSSDIFF_PROGRESS": "0", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    env.pop("GAUSSDIFF_ROOT", None)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[-2] in {"yes", "partly", "no", "not tested"}, done.stdout
    assert "[" in lines[0] and "]" in lines[0]                               # a mean with its interval
    copied_net, copied_memorizer = (float(v) for v in lines[1].split())
    assert copied_memorizer == 1.0                                           # D_M's samples are training images
