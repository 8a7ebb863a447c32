"""The build's time record (gaussdiff_lib.chapters.timings): phases, runs and notebooks as data, and the CLI that
make book uses to write it."""
import json
import time

import pytest

import gaussdiff_lib as gd
from gaussdiff_lib.__main__ import main

T = gd.chapters.timings


def test_phases_add_up_and_mark_measures_from_the_last_phase(tmp_path):
    path = tmp_path / "_build" / "timings.json"
    t0 = time.time() - 30
    data = T.start(path, since=t0, name="set-up")
    assert data["phases"][0]["name"] == "set-up" and 29 <= data["phases"][0]["seconds"] <= 60
    T.phase(path, "training", 100.0, jobs=2, runs=3, trained=1)
    time.sleep(0.3)
    data = T.mark(path, "rendering")
    rendering = data["phases"][-1]["seconds"]
    assert 0.2 <= rendering < 5                     # since the training phase ended, not since the start
    totals = T.totals(data)
    assert [p["name"] for p in data["phases"]] == ["set-up", "training", "rendering"]
    assert totals["wall"] == pytest.approx(sum(p["seconds"] for p in data["phases"]))
    assert totals["phases"]["training"] == 100.0
    T.phase(path, "training", 50.0)                  # the same phase again replaces it: no double count
    assert T.totals(T.load(path))["phases"]["training"] == 50.0
    assert "training 100 s" not in T.sentence(T.load(path)) and "training 50 s" in T.sentence(T.load(path))


def test_items_replace_by_name_and_totals_use_recorded_seconds(tmp_path):
    path = tmp_path / "timings.json"
    T.set_items(path, "runs", [{"name": "a", "trained": True, "training_seconds": 100.0, "certificate_seconds": 10.0},
                               {"name": "b", "trained": False, "training_seconds": 40.0, "certificate_seconds": None}])
    T.set_items(path, "runs", [{"name": "a", "trained": False, "training_seconds": 100.0, "certificate_seconds": 10.0}])
    T.set_items(path, "notebooks", [{"name": "x", "seconds": 12.5, "executed": True}])
    t = T.totals(T.load(path))
    assert (t["runs"], t["runs_trained"], t["training"], t["certificates"]) == (2, 0, 140.0, 10.0)
    assert (t["notebook_count"], t["notebooks_executed"], t["notebooks"]) == (1, 1, 12.5)
    titles = [title for title, _, _ in T.tables(T.load(path))]
    assert len(titles) == 2 and "run" in titles[0].lower() and "notebook" in titles[1].lower()
    runs = T.tables(T.load(path))[0][2]
    assert [r[0] for r in runs] == ["a", "b"]         # the longest first
    with pytest.raises(ValueError, match="sections"):
        T.set_items(path, "pages", [])


def test_bad_records_and_phases_are_refused_by_name(tmp_path):
    path = tmp_path / "timings.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="timings.json is not a time record .*JSON list"):
        T.load(path)
    path.write_text("{cut sh")
    with pytest.raises(ValueError, match="timings.json is not a time record \\(invalid JSON"):
        T.load(path)
    path.unlink()
    assert T.load(path) == {}
    with pytest.raises(ValueError, match="no time record at .* start one first"):
        T.mark(path, "rendering")
    with pytest.raises(ValueError, match="cannot start in the future"):
        T.start(path, since=time.time() + 3600)
    T.start(path)
    with pytest.raises(ValueError, match="lasts >= 0 seconds"):
        T.phase(path, "training", -1)
    with pytest.raises(ValueError, match="lasts >= 0 seconds"):
        T.phase(path, "training", float("nan"))


def test_run_seconds_reads_the_runs_own_log(tmp_path):
    (tmp_path / "stats.jsonl").write_text('{"step": 50, "loss": 1.0, "seconds": 3.5}\n'
                                          '{"step": 100, "loss": 0.9, "seconds": 7.25}\n{"step": 1')  # cut short
    assert T.run_seconds(tmp_path) == 7.25
    assert T.run_seconds(tmp_path / "nothing") is None


def test_cli_start_mark_show(tmp_path, capsys):
    path = tmp_path / "t.json"
    stamp = tmp_path / "started"
    stamp.write_text(f"{time.time() - 5:.0f}\n")
    assert main(["timings", "start", "--file", str(path), "--since", str(stamp), "--phase", "set-up"]) == 0
    assert main(["timings", "mark", "--file", str(path), "--phase", "rendering"]) == 0
    assert "rendering:" in capsys.readouterr().out
    assert main(["timings", "show", "--file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "set-up:" in out and "rendering:" in out and "wall-clock" in out
    assert [p["name"] for p in json.loads(path.read_text())["phases"]] == ["set-up", "rendering"]
    assert main(["timings", "mark", "--file", str(path)]) == 2          # no phase named: one line, exit 2
    assert "needs --phase" in capsys.readouterr().err
    assert main(["timings", "start", "--file", str(path), "--since", "yesterday"]) == 2
    assert "--since takes a Unix time" in capsys.readouterr().err


def test_parallel_execution_keeps_going_and_records_each_notebook(tmp_path):
    """Two notebooks at a time in worker processes: a failing one is named at the end, the other completes, and
    the time record holds the one that ended with its seconds and the execution phase."""
    record = tmp_path / "timings.json"
    with pytest.raises(RuntimeError, match="1 of 2 notebooks failed: \\['scale'\\]"):
        gd.chapters.execute.execute("smoke", tmp_path / "out", only=["status", "scale"], jobs=2, keep_going=True,
                                    overrides={"scale": {"throughput_report": "no-such-report.json"}}, timings=record)
    assert (tmp_path / "out" / "status.ipynb").exists() and not (tmp_path / "out" / "scale.ipynb").exists()
    data = T.load(record)
    assert [n["name"] for n in data["notebooks"]] == ["status"] and data["notebooks"][0]["executed"]
    assert data["notebooks"][0]["seconds"] > 0
    assert data["phases"][0]["name"] == "execution" and data["phases"][0]["jobs"] == 2
    with pytest.raises(ValueError, match="jobs is the number of notebooks executed at a time"):
        gd.chapters.execute.execute("smoke", tmp_path / "out", jobs=0)
