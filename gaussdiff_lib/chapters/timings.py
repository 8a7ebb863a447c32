"""The build's time record: what building the book cost, as data (``_build/timings.json``).

``make book`` writes it in four steps: the set-up (installing the environment and finding the data), training
(``python -m gaussdiff_lib train --timings ...``: every run with the seconds it took in this build, whether it
was trained now or loaded from the cache, and the seconds its training and its convergence certificate took
when they were computed), execution (``python -m gaussdiff_lib execute --timings ...``: every notebook with its
seconds) and rendering the HTML. Each step is a *phase* with its wall-clock seconds; the record also names the
machine (cores, threads, torch, device). The Status page shows the record (the book's ``{build-timings}``
directive), and the book's statements of time come from it, not from typing.

A warm rebuild trains and executes nothing, so its phases are short; the per-run and per-notebook seconds *as
recorded* (taken from each run's training log and certificate, and from each executed notebook's metadata) still
say what a cold build of the same runs and pages costs on the machine that made them.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

__all__ = ["RECORD", "load", "start", "phase", "mark", "set_items", "totals", "summary", "sentence", "tables", "machine", "run_seconds"]

#: where ``make book`` keeps the record, relative to the book's root
RECORD = Path("_build") / "timings.json"
SECTIONS = ("runs", "notebooks")


def machine(jobs: int | None = None) -> dict:
    """The machine a phase ran on: CPU cores, torch's threads, torch version, device, Python."""
    info = {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(terse=True)}
    try:
        import torch

        info.update(torch=torch.__version__, threads=torch.get_num_threads(),
                    device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
    except ImportError:  # the set-up phase is recorded before torch may be importable
        pass
    if jobs is not None:
        info["jobs"] = int(jobs)
    return info


def load(path: str | Path) -> dict:
    """The record at ``path`` ({} when there is none). A file that is not a JSON object is refused by name."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a time record (invalid JSON: {exc}); delete it, the next make book "
                         "writes a new one") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a time record (it holds a JSON {type(data).__name__}, not an object); "
                         "delete it, the next make book writes a new one")
    return data


def _save(path: Path, data: dict) -> None:
    from ..cache import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(data, indent=1) + "\n")


def start(path: str | Path, since: float | None = None, name: str | None = None) -> dict:
    """Begin a new record at ``path`` (the previous one is replaced): the build started at ``since`` (a Unix time,
    default now); with ``name``, the time from ``since`` to now is the build's first phase (the set-up, which runs
    before Python can record anything)."""
    now = time.time()
    since = now if since is None else float(since)
    if since > now + 1:
        raise ValueError(f"the build cannot start in the future ({since:.0f} > now {now:.0f})")
    data = {"started": since, "last": since, "phases": [], "machine": machine()}
    _save(Path(path), data)
    return mark(path, name) if name else data


def phase(path: str | Path, name: str, seconds: float, **extra) -> dict:
    """Add a phase of ``seconds`` wall-clock (with ``extra`` facts, e.g. jobs) to the record; a record that does not
    exist yet is started now (a step run on its own, outside ``make book``)."""
    path = Path(path)
    data = load(path) or {"started": time.time() - float(seconds), "phases": [], "machine": machine()}
    seconds = float(seconds)
    if not seconds >= 0:
        raise ValueError(f"a phase lasts >= 0 seconds, got {seconds}")
    data["phases"] = [p for p in data.get("phases", []) if p.get("name") != name] + \
        [{"name": name, "seconds": round(seconds, 1), **extra}]
    data["last"] = time.time()
    _save(path, data)
    return data


def mark(path: str | Path, name: str) -> dict:
    """Close phase ``name``: it lasted from the end of the previous phase (or the record's start) until now."""
    data = load(path)
    if not data:
        raise ValueError(f"no time record at {path} to add phase {name!r} to; start one first "
                         "(python -m gaussdiff_lib timings start)")
    return phase(path, name, time.time() - float(data.get("last", data.get("started", time.time()))))


def set_items(path: str | Path, section: str, rows: list[dict]) -> dict:
    """Record one row per run (``section = "runs"``) or per notebook (``"notebooks"``), each with at least a
    ``name``; rows of the same name replace earlier ones, others are kept (a build of part of the book)."""
    if section not in SECTIONS:
        raise ValueError(f"a time record has sections {SECTIONS}, not {section!r}")
    path = Path(path)
    data = load(path) or {"started": time.time(), "phases": [], "machine": machine()}
    new = {r["name"]: r for r in rows}
    data[section] = [r for r in data.get(section, []) if r.get("name") not in new] + list(new.values())
    _save(path, data)
    return data


def run_seconds(run_dir: str | Path) -> float | None:
    """The training seconds a run's own log recorded, or None for a folder without a log. Each start of training
    (the first, and every resumption: a chunk trained ``until`` a step, an interrupted run) counts its clock from
    zero and marks its entries with the step it started from (``from``), so the total is the sum of each start's
    last entry (a log written before entries were marked counts its last entry only)."""
    log = Path(run_dir) / "stats.jsonl"
    if not log.exists():
        return None
    last: dict = {}
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and "seconds" in entry:
            last[entry.get("from", "unmarked")] = float(entry["seconds"])
    if "unmarked" in last and len(last) > 1:
        last.pop("unmarked")
    return sum(last.values()) if last else None


def totals(data: dict) -> dict:
    """Sums of a record: ``wall`` (all phases), each phase by name, ``training`` and ``certificates`` (the runs'
    seconds as recorded when computed: the compute a cold build spends on them, before running two at a time),
    ``notebooks`` (the notebooks' seconds as recorded), and the counts of runs trained and notebooks executed in
    this build."""
    phases = {p["name"]: float(p["seconds"]) for p in data.get("phases", [])}
    runs, nbs = data.get("runs", []), data.get("notebooks", [])
    return {"wall": sum(phases.values()), "phases": phases,
            "training": sum(r.get("training_seconds") or 0.0 for r in runs),
            "certificates": sum(r.get("certificate_seconds") or 0.0 for r in runs),
            "notebooks": sum(n.get("seconds") or 0.0 for n in nbs),
            "runs_trained": sum(bool(r.get("trained")) for r in runs), "runs": len(runs),
            "notebooks_executed": sum(bool(n.get("executed")) for n in nbs), "notebook_count": len(nbs)}


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def summary(data: dict) -> str:
    """The record in a few lines: each phase, the build's wall-clock total, what was trained and executed now, and
    the compute the runs and notebooks recorded when they were made."""
    t = totals(data)
    m = data.get("machine", {})
    lines = [f"build on {m.get('cores', '?')} cores ({m.get('device', 'cpu')}): {_minutes(t['wall'])} wall-clock"]
    lines += [f"  {name}: {_minutes(s)}" for name, s in t["phases"].items()]
    if t["runs"]:
        lines.append(f"runs: {t['runs_trained']} of {t['runs']} trained in this build; as recorded when made, "
                     f"training {_minutes(t['training'])} and certificates {_minutes(t['certificates'])} of compute")
    if t["notebook_count"]:
        lines.append(f"notebooks: {t['notebooks_executed']} of {t['notebook_count']} executed in this build; as "
                     f"recorded, {_minutes(t['notebooks'])} of execution in all")
    return "\n".join(lines)


def tables(data: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """The record as tables (title, column heads, rows of text) for the Status page: the phases, the runs and the
    notebooks, each with its seconds; the longest first."""
    out = []
    phases = data.get("phases", [])
    if phases:
        wall = sum(float(p["seconds"]) for p in phases)
        rows = [[p["name"], _minutes(float(p["seconds"])), _facts(p)] for p in phases]
        rows.append(["all phases", _minutes(wall), ""])
        out.append(("The build's phases, wall-clock", ["phase", "time", "what"], rows))
    runs = sorted(data.get("runs", []), key=lambda r: -(r.get("training_seconds") or 0))
    if runs:
        rows = [[r["name"], f"{r.get('steps') or '':,}" if r.get("steps") else "",
                 _secs(r.get("training_seconds")), _secs(r.get("certificate_seconds")),
                 "trained" if r.get("trained") else f"part of {r['part_of']}" if r.get("part_of") else "cached",
                 _secs(r.get("seconds")),
                 {True: "yes", False: "no", None: "published weights"}.get(r.get("converged"), "")] for r in runs]
        out.append(("Every run: its training and certificate as recorded when made, and this build's time",
                    ["run", "steps", "training", "certificate", "this build", "this build's time", "converged"], rows))
    nbs = sorted(data.get("notebooks", []), key=lambda n: -(n.get("seconds") or 0))
    if nbs:
        rows = [[n["name"], _secs(n.get("seconds")), "executed" if n.get("executed") else "up to date"] for n in nbs]
        out.append(("Every notebook: its execution time as recorded", ["notebook", "execution", "this build"], rows))
    return out


def _secs(value) -> str:
    return "" if value is None else f"{float(value):,.0f} s"


def _facts(p: dict) -> str:
    parts = []
    if "jobs" in p:
        parts.append(f"{p['jobs']} at a time")
    if "runs" in p:
        parts.append(f"{p.get('trained', 0)} of {p['runs']} runs trained")
    if "notebooks" in p:
        parts.append(f"{p.get('executed', 0)} of {p['notebooks']} notebooks executed")
    return ", ".join(parts)


def sentence(data: dict) -> str:
    """The record in one paragraph of prose (the Status page's): the machine, each phase so far, and the compute
    the runs and notebooks recorded when they were made."""
    t = totals(data)
    m = data.get("machine", {})
    where = f"{m.get('cores', '?')} CPU cores" + (f" and {m['device']}" if m.get("device", "cpu") != "cpu" else "")
    parts = [f"{name} {_minutes(s)}" for name, s in t["phases"].items()]
    text = f"This build ran on {where}" + (f" with torch {m['torch']}" if m.get("torch") else "") + ". "
    if parts:
        text += f"Its phases so far took {_minutes(t['wall'])} wall-clock: {', '.join(parts)}. "
    if t["runs"]:
        text += (f"{t['runs_trained']} of its {t['runs']} runs were trained in this build (the others came from the "
                 f"cache); as recorded when they were made, training them took {_minutes(t['training'])} and "
                 f"certifying their convergence {_minutes(t['certificates'])} of compute. ")
    if t["notebook_count"]:
        text += (f"{t['notebooks_executed']} of its {t['notebook_count']} notebooks were executed in this build; as "
                 f"recorded, executing all of them took {_minutes(t['notebooks'])}. ")
    return text.strip()
