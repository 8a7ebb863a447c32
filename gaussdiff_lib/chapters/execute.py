"""The book's executor: every chapter template run with papermill under a profile into an output folder
(``python -m gaussdiff_lib execute --profile cpu --out book``), each notebook re-executed only when its
template, parameters, named runs or the library's source changed."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from .profiles import EXPERIMENTS, defaults, load, notebooks, root

__all__ = ["execute", "execution_key", "parse_overrides"]


def execution_key(nb: Path, params: dict, experiments: dict | None = None) -> str:
    """Hash of what an executed notebook depends on: its template, its parameters, the profile's named
    runs, the library's source, and the files its metadata lists under ``gaussdiff.depends`` (globs relative
    to :func:`~gaussdiff_lib.chapters.profiles.root`, e.g. the measured reports the scale page reads)."""
    import json

    from ..cache import digest

    lib = Path(__file__).resolve().parents[1]
    sources = {str(p.relative_to(lib)): p.read_text() for p in sorted(lib.rglob("*.py"))}
    depends = json.loads(nb.read_text()).get("metadata", {}).get("gaussdiff", {}).get("depends", [])
    extra = {str(p.relative_to(root())): p.read_text() for pattern in depends for p in sorted(root().glob(pattern))}
    return digest(nb.read_text(), params, experiments or {}, sources, extra)


def parse_overrides(items: list[str] | None) -> dict[str, dict]:
    """``["dataset_size.sweep=dataset_size_cifar", ...]`` -> ``{"dataset_size": {"sweep": "dataset_size_cifar"}}``
    (values read as YAML: numbers, lists and strings)."""
    out: dict[str, dict] = {}
    for item in items or []:
        target, sep, value = item.partition("=")
        notebook, dot, name = target.partition(".")
        if not sep or not dot or not notebook or not name:
            raise ValueError(f"--set takes NOTEBOOK.PARAMETER=VALUE, e.g. dataset_size.sweep=dataset_size_cifar; "
                             f"got {item!r}")
        out.setdefault(notebook, {})[name] = yaml.safe_load(value)
    return out


def _check_parameters(stem: str, params: dict, where: str) -> None:
    """Every parameter set for a notebook must exist in its parameters cell: papermill would inject an unknown one
    as a new variable and the notebook would silently run with its default."""
    known = set(defaults(stem)) | {"profile"}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"{where} sets parameters that {stem} does not have: {unknown}; its parameters are "
                         f"{sorted(known - {'profile'})}")


def _kind(value) -> str | None:
    """The kind of a parameter's value that a replacement must share (None: any)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "a boolean (true or false)"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return None


def _check_types(stem: str, params: dict, profile_values: dict, where: str) -> dict:
    """Each value set for a notebook must have the kind of the template's default (or, where that is None, of the
    profile's value): ``n_samples=abc`` is refused here in one line, not 37 lines into the notebook. Integers pass
    where a number is expected, and a number where a string is expected (``alphas2=0.9``) becomes that string.
    Returns the values as the notebook takes them."""
    template = defaults(stem)
    params = dict(params)
    for name, value in params.items():
        reference = template.get(name)
        reference = profile_values.get(name) if reference is None else reference
        want = _kind(reference)
        got = _kind(value)
        if want is None or value is None or got == want or (want == "a number" and got == "an integer"):
            continue
        if want == "a string" and got in ("an integer", "a number"):
            params[name] = str(value)
            continue
        shown = json.dumps(reference) if not isinstance(reference, str) else reference
        raise ValueError(f"{where} {stem}.{name}={value!r}: {name} must be {want}, got {got or type(value).__name__} "
                         f"(e.g. {stem}.{name}={shown})")
    return params


def execute(profile: str, out: str | Path, only: list[str] | None = None, timeout: int = 3600,
            force: bool = False, overrides: dict[str, dict] | None = None, keep_going: bool = False,
            progress: bool | None = None, jobs: int = 1, timings: str | Path | None = None) -> list[Path]:
    """Execute each notebook template with papermill under ``profile`` into ``out`` (one .ipynb each).

    ``timeout`` is the most seconds one cell may run (a cell past it fails its notebook). ``progress`` shows a
    bar of the notebook's cells on stderr (None: when stderr is a terminal; never with ``jobs`` > 1); either way
    each notebook's start and end are printed with its time.

    A notebook whose executed copy in ``out`` was made from the same template, parameters and library
    source is left as it is (``force=True`` re-executes it); trained models are cached separately.
    ``overrides`` ({notebook: {parameter: value}}) change single parameters on top of the profile, e.g. to
    run the dataset-size chapter on the CIFAR-10 sweep of the ``paper`` profile.

    ``jobs`` notebooks run at a time, each kernel with its share of the CPU cores (the chapters are independent:
    they read trained runs from the cache and write only their own page), the longest first by the seconds their
    previous executed copy recorded. ``timings``: a time record (:mod:`gaussdiff_lib.chapters.timings`) that gets
    one row per notebook (its seconds, and whether it was executed now or was up to date) and the phase's
    wall-clock seconds.

    Names in ``only`` (with or without ``.ipynb``), notebooks named by the profile or the overrides, and every
    parameter set for a notebook are checked before anything runs; a mistake is a ``ValueError`` listing the
    valid names. A failing notebook stops the rest (notebooks already running finish first), unless
    ``keep_going``: then the others run and a ``RuntimeError`` at the end names the failed ones. Executed notebooks
    are written under a temporary name and moved into place only when complete, so an interrupted run leaves the
    previous good copy as it was.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise ValueError(f"timeout is the most seconds one cell may run, a positive integer; got {timeout!r}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs is the number of notebooks executed at a time, a positive integer; got {jobs!r}")
    out = Path(out)
    prof = load(profile)
    stems = {p.stem for p in notebooks()}
    unknown = set(prof) - stems - {EXPERIMENTS}
    if unknown:
        raise ValueError(f"profile {profile!r} names notebooks that do not exist: {sorted(unknown)}")
    overrides = overrides or {}
    unknown = set(overrides) - stems
    if unknown:
        raise ValueError(f"overrides name notebooks that do not exist: {sorted(unknown)}; "
                         f"the notebooks are {sorted(stems)}")
    wanted = None
    if only:
        wanted = {str(name).removesuffix(".ipynb") for name in only}
        unknown = wanted - stems
        if unknown:
            raise ValueError(f"no notebook named {sorted(unknown)}; the notebooks are {sorted(stems)}")
    chosen = [nb for nb in notebooks() if wanted is None or nb.stem in wanted]
    for nb in chosen:
        _check_parameters(nb.stem, prof.get(nb.stem, {}), f"profiles/{profile}.yml")
        _check_parameters(nb.stem, overrides.get(nb.stem, {}), "--set")
        if nb.stem in overrides:
            overrides[nb.stem] = _check_types(nb.stem, overrides[nb.stem], prof.get(nb.stem, {}), "--set")
    out.mkdir(parents=True, exist_ok=True)
    jobs = min(jobs, max(1, len(chosen)))
    work = [(nb, out / nb.name, {**prof.get(nb.stem, {}), **overrides.get(nb.stem, {}), "profile": profile},
             timeout, force, prof.get(EXPERIMENTS), progress if jobs == 1 else False) for nb in chosen]
    if jobs > 1:  # the longest first, so the last ones end together
        work.sort(key=lambda w: _recorded_seconds(w[1]), reverse=True)
    # progress bars would be frozen into the pages as widgets; the executor prints its own progress
    previous = os.environ.get("GAUSSDIFF_PROGRESS")
    os.environ["GAUSSDIFF_PROGRESS"] = "0"
    t0, rows, failed = time.time(), [], []
    try:
        _run_all(work, jobs, keep_going, profile, rows, failed)
    finally:
        if previous is None:
            os.environ.pop("GAUSSDIFF_PROGRESS", None)
        else:
            os.environ["GAUSSDIFF_PROGRESS"] = previous
        if timings is not None:
            from . import timings as _timings

            if rows:   # those that ended, also when one failed
                _timings.set_items(timings, "notebooks", rows)
            _timings.phase(timings, "execution", time.time() - t0, jobs=jobs, notebooks=len(rows),
                           executed=sum(r["executed"] for r in rows))
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(chosen)} notebooks failed: {failed}; their partial outputs are "
                           f"in {out} as .<name>.partial.ipynb")
    order = {nb.stem: i for i, nb in enumerate(chosen)}
    return [out / f"{r['name']}.ipynb" for r in sorted(rows, key=lambda r: order[r["name"]])]


def _recorded_seconds(target: Path) -> float:
    """The seconds a notebook's previous executed copy took (0 when there is none)."""
    import json

    try:
        return float(json.loads(target.read_text()).get("metadata", {}).get("gaussdiff", {}).get("seconds") or 0)
    except (OSError, ValueError, TypeError, AttributeError):
        return 0.0


_RUNNING = False   # a worker process is executing a notebook


def _worker_init() -> None:
    """A worker of :func:`execute` with ``jobs`` > 1 ignores Ctrl-C (the main process ends the workers, with no
    traceback from each); SIGTERM, the main process's request to stop, interrupts the notebook being executed, so
    that its kernel is shut down with it."""
    import signal

    def stop(signum, frame):
        if _RUNNING:
            raise KeyboardInterrupt
        os._exit(0)    # an idle worker

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop)


def _job(args) -> dict:
    """One notebook in a worker process (:func:`execute` with ``jobs`` > 1): the kernel it starts inherits this
    process's share of the cores through ``OMP_NUM_THREADS``."""
    global _RUNNING

    *work, threads = args
    os.environ["GAUSSDIFF_PROGRESS"] = "0"
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    _RUNNING = True
    try:
        return _execute_one(*work)
    except KeyboardInterrupt:   # asked to stop: the kernel has been shut down, the partial notebook stays aside
        os._exit(1)
    finally:
        _RUNNING = False


def _run_all(work: list, jobs: int, keep_going: bool, profile: str, rows: list, failed: list) -> None:
    """Execute ``work`` (argument tuples of :func:`_execute_one`), ``jobs`` at a time, appending each finished
    notebook's row to ``rows`` and each failed one's name to ``failed`` (with ``keep_going``; else the first
    failure is raised once the notebooks already running have ended)."""

    def failure(nb: Path, exc: BaseException):
        if not keep_going:
            raise exc
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"[{profile}] {nb.name} FAILED: {type(exc).__name__}: {first}", flush=True)
        failed.append(nb.stem)

    if jobs == 1:
        for w in work:
            try:
                rows.append(_execute_one(*w))
            except Exception as exc:
                failure(w[0], exc)
        return
    import multiprocessing as mp
    from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // jobs)
    # the workers ignore Ctrl-C (each would print a traceback); on KeyboardInterrupt this process stops them, each
    # with its kernel; no partial notebook replaces a finished one
    with ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_worker_init) as pool:
        try:
            futures = {pool.submit(_job, (*w, threads)): w[0] for w in work}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    exc = f.exception()
                    if exc is None:
                        rows.append(f.result())
                        continue
                    if not keep_going:
                        for p in pending:
                            p.cancel()
                        wait(pending)
                    failure(futures[f], exc)
        except KeyboardInterrupt:
            processes = list((getattr(pool, "_processes", None) or {}).values())  # no public way before 3.14
            pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            for process in processes:
                process.join(timeout=20)
                if process.is_alive():
                    process.kill()
            raise


def _execute_one(nb: Path, target: Path, params: dict, timeout: int, force: bool, experiments=None,
                 progress: bool | None = None) -> dict:
    """Execute one notebook unless its executed copy is up to date; its row of the time record (``name``,
    ``seconds`` as recorded in the executed copy, ``executed`` now or not)."""
    import logging
    import sys

    import nbformat
    import papermill as pm

    # papermill and the kernel client log at INFO (each cell, the kernel's start and stop); the executor's own
    # lines and the progress bar say what is happening
    for name in ("papermill", "traitlets", "nbclient"):
        logging.getLogger(name).setLevel(logging.WARNING)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = {"desc": f"[{params['profile']}] {nb.stem}", "unit": "cell", "leave": False, "file": sys.stderr} if show \
        else False

    key = execution_key(nb, params, experiments)
    if not force and target.exists():
        try:
            done = nbformat.read(target, as_version=4).metadata.get("gaussdiff", {}).get("execution_key")
        except Exception:  # an unreadable executed copy is simply redone
            done = None
        if done == key:
            print(f"[{params['profile']}] {nb.name} is up to date: {target.resolve()}", flush=True)
            return {"name": nb.stem, "seconds": _recorded_seconds(target), "executed": False}
    t0 = time.time()
    print(f"[{params['profile']}] {nb.name} ...", flush=True)
    partial = target.with_name(f".{target.stem}.partial.ipynb")  # hidden from *.ipynb globs and the book
    pm.execute_notebook(str(nb), str(partial), parameters=params, kernel_name="python3",
                        cwd=os.getcwd(), progress_bar=bar, execution_timeout=timeout)
    # the parameter cells are kept for the record, folded away in the rendered page
    doc = nbformat.read(partial, as_version=4)
    for cell in doc.cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if "parameters" in tags or "injected-parameters" in tags:
            cell["metadata"]["tags"] = sorted(set(tags) | {"hide-cell"})
    doc.metadata["gaussdiff"] = {"execution_key": key, "profile": params["profile"],
                                 "seconds": round(time.time() - t0, 1)}
    nbformat.write(doc, partial)
    os.replace(partial, target)  # only a complete notebook replaces the previous one
    seconds = doc.metadata["gaussdiff"]["seconds"]
    print(f"[{params['profile']}] {nb.name} done in {seconds:.0f} s: {target.resolve()}", flush=True)
    return {"name": nb.stem, "seconds": seconds, "executed": True}
