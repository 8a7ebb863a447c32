"""The book's executor: every chapter template run with papermill under a profile into an output folder
(``python -m gaussdiff_lib execute --profile cpu --out book``), each notebook re-executed only when its
template, parameters, named runs or the library's source changed."""
from __future__ import annotations

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


def execute(profile: str, out: str | Path, only: list[str] | None = None, timeout: int = 3600,
            force: bool = False, overrides: dict[str, dict] | None = None, keep_going: bool = False,
            progress: bool | None = None) -> list[Path]:
    """Execute each notebook template with papermill under ``profile`` into ``out`` (one .ipynb each).

    ``timeout`` is the most seconds one cell may run (a cell past it fails its notebook). ``progress`` shows a
    bar of the notebook's cells on stderr (None: when stderr is a terminal); either way each notebook's start
    and end are printed with its time.

    A notebook whose executed copy in ``out`` was made from the same template, parameters and library
    source is left as it is (``force=True`` re-executes it); trained models are cached separately.
    ``overrides`` ({notebook: {parameter: value}}) change single parameters on top of the profile, e.g. to
    run the dataset-size chapter on the CIFAR-10 sweep of the ``paper`` profile.

    Names in ``only`` (with or without ``.ipynb``), notebooks named by the profile or the overrides, and every
    parameter set for a notebook are checked before anything runs; a mistake is a ``ValueError`` listing the
    valid names. A failing notebook stops the rest, unless ``keep_going``: then the others run and a
    ``RuntimeError`` at the end names the failed ones. Executed notebooks are written under a temporary name and
    moved into place only when complete, so an interrupted run leaves the previous good copy as it was.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise ValueError(f"timeout is the most seconds one cell may run, a positive integer; got {timeout!r}")
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
    out.mkdir(parents=True, exist_ok=True)
    # progress bars would be frozen into the pages as widgets; the executor prints its own progress
    previous = os.environ.get("GAUSSDIFF_PROGRESS")
    os.environ["GAUSSDIFF_PROGRESS"] = "0"
    done, failed = [], []
    try:
        for nb in chosen:
            params = {**prof.get(nb.stem, {}), **overrides.get(nb.stem, {}), "profile": profile}
            try:
                done.append(_execute_one(nb, out / nb.name, params, timeout, force, prof.get(EXPERIMENTS), progress))
            except Exception as exc:
                if not keep_going:
                    raise
                first = str(exc).splitlines()[0] if str(exc) else ""
                print(f"[{profile}] {nb.name} FAILED: {type(exc).__name__}: {first}", flush=True)
                failed.append(nb.stem)
    finally:
        if previous is None:
            os.environ.pop("GAUSSDIFF_PROGRESS", None)
        else:
            os.environ["GAUSSDIFF_PROGRESS"] = previous
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(chosen)} notebooks failed: {failed}; their partial outputs are "
                           f"in {out} as .<name>.partial.ipynb")
    return done


def _execute_one(nb: Path, target: Path, params: dict, timeout: int, force: bool, experiments=None,
                 progress: bool | None = None) -> Path:
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
            print(f"[{params['profile']}] {nb.name} is up to date", flush=True)
            return target
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
    print(f"[{params['profile']}] {nb.name} done in {time.time() - t0:.0f} s", flush=True)
    return target
