"""Profiles: named sets of notebook parameters (``profiles/<name>.yml``, shipped in ``gaussdiff_lib/chapters/``)
for the chapter templates (``notebooks/<chapter>.ipynb``, at the repository's top level; a wheel carries them as
``gaussdiff_lib/chapters/notebooks/``, see :func:`templates`).

A profile maps a notebook name to its parameters; its reserved ``experiments`` section names the trained networks
the notebooks share (:mod:`gaussdiff_lib.chapters.runs`). Three ship: ``smoke`` (CI: the smallest scale that runs every cell),
``cpu`` (the book's default on a 2-core CPU) and ``paper`` (the paper's settings, for a GPU).
:mod:`gaussdiff_lib.chapters.execute` runs the notebooks under a profile.
"""
from __future__ import annotations

import os
from pathlib import Path

import yaml

__all__ = ["root", "templates", "project", "names", "load", "parameters", "defaults", "fill", "notebooks", "report_path",
           "EXPERIMENTS"]

EXPERIMENTS = "experiments"  # the reserved profile key holding the named runs


def root() -> Path:
    """The folder holding ``profiles/`` and ``reports/``: the package's own copies (``gaussdiff_lib/chapters``), or
    ``$GAUSSDIFF_ROOT`` (a folder with your own profiles and templates, as ``gaussdiff new`` writes it)."""
    env = os.environ.get("GAUSSDIFF_ROOT")
    return Path(env) if env else Path(__file__).resolve().parent


def templates() -> Path:
    """The folder of chapter templates (``<chapter>.ipynb``).

    - ``$GAUSSDIFF_ROOT/notebooks`` when ``$GAUSSDIFF_ROOT`` is set;
    - in an installed wheel, ``gaussdiff_lib/chapters/notebooks`` (the build maps the repository's ``notebooks/``
      there, see ``pyproject.toml``);
    - in a source checkout (or an editable install of one), the repository's top-level ``notebooks/``, the only
      copy there is.
    """
    env = os.environ.get("GAUSSDIFF_ROOT")
    if env:
        return Path(env) / "notebooks"
    here = Path(__file__).resolve().parent
    packaged = here / "notebooks"
    if any(packaged.glob("*.ipynb")):
        return packaged
    checkout = here.parents[1] / "notebooks"
    if any(checkout.glob("*.ipynb")):
        return checkout
    raise FileNotFoundError(f"no chapter templates: neither {packaged} (an installed wheel) nor {checkout} (a source "
                            "checkout) holds any; reinstall gaussdiff, or set GAUSSDIFF_ROOT to a folder with "
                            "notebooks/ and profiles/ (gaussdiff new CHAPTER FOLDER writes one)")


def project() -> Path:
    """The book's source folder (the one holding ``_config.yml``): ``$GAUSSDIFF_PROJECT``, else the nearest
    folder at or above the working directory that holds ``_config.yml``, else the working directory."""
    env = os.environ.get("GAUSSDIFF_PROJECT")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    return next((p for p in (here, *here.parents) if (p / "_config.yml").is_file()), here)


def report_path(report: str | os.PathLike) -> Path:
    """A measurement report the book reads: the path itself if it exists, else the report of that name shipped in
    ``reports/`` (the GPU measurements behind the scale page)."""
    path = Path(report).expanduser()
    if path.exists():
        return path
    shipped = root() / "reports" / path.name
    if not shipped.exists():
        raise FileNotFoundError(f"no report {report}: neither that path nor {shipped} exists")
    return shipped


def names() -> list[str]:
    """The profiles there are (the stems of ``profiles/*.yml``)."""
    return sorted(p.stem for p in (root() / "profiles").glob("*.yml"))


def load(profile: str) -> dict:
    """The whole profile: {notebook name: {parameter: value}}."""
    path = root() / "profiles" / f"{profile}.yml"
    if not path.exists():
        raise ValueError(f"unknown profile {profile!r}; choose one of {names()}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path} must map notebook names to parameter maps")
    return data


def parameters(notebook: str, profile: str) -> dict:
    """The parameters a profile sets for one notebook (empty: the notebook's own defaults)."""
    if notebook == EXPERIMENTS:
        raise ValueError(f"{EXPERIMENTS!r} is the profile's section of named runs, not a notebook")
    return dict(load(profile).get(notebook, {}))


def notebooks() -> list[Path]:
    """The chapter templates, sorted by name."""
    return sorted(templates().glob("*.ipynb"))


def defaults(notebook: str) -> dict:
    """The values of a notebook template's ``parameters`` cell (literal assignments)."""
    import ast
    import json

    path = templates() / f"{notebook}.ipynb"
    if not path.exists():
        raise ValueError(f"no notebook {notebook!r}; the notebooks are {[p.stem for p in notebooks()]}")
    cells = json.loads(path.read_text())["cells"]
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    tree = ast.parse("".join(cell["source"]))
    return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets}


def fill(notebook: str, namespace: dict) -> dict:
    """Give every parameter of a chapter that is still ``None`` its value from the profile named by
    ``namespace["profile"]`` (a chapter calls ``gd.profiles.fill("<chapter>", globals())`` after its parameters
    cell). So editing ``profile`` in Jupyter, or ``papermill -p profile smoke``, switches every profile-dependent
    parameter at once, while a value set by hand (or injected by the executor) is kept. Returns the parameters.
    A parameter left at ``None`` that the profile does not set either is an error naming both."""
    profile = namespace.get("profile")
    if not isinstance(profile, str):
        raise ValueError(f"the chapter's parameter 'profile' must name a profile ({names()}), got {profile!r}")
    values = parameters(notebook, profile)
    template = defaults(notebook)
    unknown = sorted(set(values) - set(template) - {"profile"})
    if unknown:
        raise ValueError(f"profiles/{profile}.yml sets parameters that {notebook} does not have: {unknown}")
    missing = []
    for name in template:
        if name != "profile" and namespace.get(name) is None:
            if name in values:
                namespace[name] = values[name]
            elif template[name] is None:
                missing.append(name)
    if missing:
        raise ValueError(f"{notebook}: {missing} left at None and profile {profile!r} does not set them; set them in "
                         f"the parameters cell or in profiles/{profile}.yml")
    return {name: namespace.get(name) for name in template}
