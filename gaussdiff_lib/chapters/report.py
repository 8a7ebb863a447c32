"""The diagnosis report: ``gd.diagnose`` (:func:`gaussdiff_lib.diagnosis.diagnose`) as an executed notebook, its HTML and a JSON record.

- :func:`load_inputs` reads what the command line and the report template are given: a model (a path, a diffusers
  folder, an EDM checkpoint, or ``run:NAME`` for a trained run of a profile), its training images and held-out
  images (a dataset name, an image folder, an array file; the run's own when the model is a run).
- :func:`payload` turns a :class:`gaussdiff_lib.diagnosis.Report` into the book's results format
  (:mod:`gaussdiff_lib.chapters.results`, chapter ``"diagnose"``): every number with its interval, every check with
  its controls.
- :func:`distance_figure`, :func:`linearity_figure` and :func:`sample_rows` draw the report's panels.
- :func:`run` executes the report template (``notebooks/tools/diagnose.ipynb``) with papermill and writes
  ``diagnose.ipynb``, ``diagnose.html`` and ``diagnose.json``; ``gaussdiff diagnose`` calls it.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

__all__ = ["load_inputs", "diagnose_run", "payload", "record", "distance_figure", "linearity_figure", "sample_rows", "regime_rows",
           "template", "run", "to_html", "SETTINGS"]

#: The report's sizes, by name. "smoke" cuts the held-out images, latents and pairs to a minimum, so its intervals
#: are wide; "full" is the default.
SETTINGS = {"smoke": {"n_heldout": 64, "n_samples": 48, "n_pairs": 20, "n_fit": 128, "n_noise": 2},
            "full": {"n_heldout": 256, "n_samples": 64, "n_pairs": 100, "n_fit": 512, "n_noise": 4}}


def template() -> Path:
    """The report template: ``tools/diagnose.ipynb`` beside the chapter templates
    (:func:`gaussdiff_lib.chapters.profiles.templates`)."""
    from .profiles import templates

    path = templates() / "tools" / "diagnose.ipynb"
    if not path.exists():
        raise FileNotFoundError(f"no report template at {path}; reinstall gaussdiff")
    return path


def load_inputs(model: str, train: str | None = None, heldout: str | None = None, resolution: int | None = None,
                n_train: int | None = None, profile: str = "cpu", n_heldout: int = 1024, device=None,
                scheduler: str | None = None, value_range: tuple | None = None):
    """The denoiser, its training images and held-out images, from the strings a command line gives.

    ``model``: ``run:NAME`` (a run of ``profile``, trained or loaded from the cache: its training images and the
    profile's held-out images come with it), or anything :func:`gaussdiff_lib.adapters.as_denoiser` accepts as a
    path (a diffusers folder, a ``.pkl`` / ``.pt`` checkpoint). ``train`` / ``heldout``: a dataset name
    (:data:`gaussdiff_lib.data.DATASETS`) or a path :func:`gaussdiff_lib.data.load_path` reads; ``heldout``
    defaults to the test split of a named training set; ``n_heldout`` of its images are read. ``n_train`` keeps a
    seeded subset (it must be the set the model was trained on: D_G and D_M are built on it). ``scheduler``: a
    diffusers scheduler folder, for a network folder saved without one. ``value_range``: the range float pixels of an
    array file lie in, e.g. (0, 1). Returns (denoiser, train images, held-out images, label).
    """
    from .. import data
    from ..adapters import as_denoiser

    if model.startswith("run:"):
        from . import runs as _runs
        from .models import model as _model

        name = model[4:]
        r = _runs.run(name, profile)
        X = _runs.training_set(r)
        H = _runs.heldout_set(profile, n_heldout, resolution=X.shape[-1]) if heldout is None else \
            data.load_any(heldout, split="test", resolution=X.shape[-1], n=n_heldout)
        return _model(r, device=device), X, H, name
    if train is None:
        raise ValueError("diagnose needs the model's training images: --train DATASET or PATH (the set it was "
                         "trained on; D_G and D_M are built on it)")
    options = {**({"device": device} if device is not None else {}), **({"scheduler": scheduler} if scheduler else {})}
    D = as_denoiser(model, **options)
    X = _load(train, "train", resolution=resolution, n=n_train, value_range=value_range)
    heldout = train if heldout is None else heldout
    if heldout == train and not _has_test_split(train):
        raise ValueError(f"{train} has no test split (only named datasets and the CIFAR-10 python archive do): pass "
                         "--heldout with images the model did not see")
    # the test split where the source has one (a named set, the CIFAR-10 archive); other layouts have no splits
    H = _load(heldout, "test", resolution=X.shape[-1], value_range=value_range)[:n_heldout]
    return D, X, H, Path(str(model).rstrip("/")).name or str(model)


def diagnose_run(run: str, profile: str, setting: str = "full", seed: int = 0, progress: bool | None = False):
    """:func:`gaussdiff_lib.diagnosis.diagnose` of one of a profile's trained runs, on its own training images and the
    profile's held-out images, at one of the report's :data:`SETTINGS` (the page "Diagnose your own model")."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {sorted(SETTINGS)}")
    from ..diagnosis import diagnose

    sizes = SETTINGS[setting]
    D, X, H, label = load_inputs(f"run:{run}", profile=profile, n_heldout=sizes["n_heldout"] + sizes["n_fit"])
    return diagnose(D, X, H, seed=seed, name=label, progress=progress, **sizes)


def _evidence_checks(report) -> dict:
    return {key: next(c for c in report.checks if c.claim == claim) for key, claim in report.keys.items()}


def payload(report) -> dict:
    """The report as a results record (chapter ``"diagnose"``), validated: every number of
    :meth:`~gaussdiff_lib.diagnosis.Report.rows` quoted with the check it informs, and every check."""
    from .results import payload as _payload
    from .results import quote, validate

    return validate(_payload("diagnose", _quoted(report), report.checks), "diagnose report")


def _quoted(report) -> list:
    """The report's rows as :class:`~gaussdiff_lib.chapters.results.Quoted`: a row some check rests on is quoted
    with that check; a measurement no check rests on says "not tested" and cites none."""
    from ..stats import Estimate
    from .results import Quoted, quote

    checks, out = _evidence_checks(report), []
    for r in report.rows():
        if r["evidence"] is not None:
            out.append(quote(r["quantity"], r["value"], None, checks[r["evidence"]]))
        else:
            v = r["value"]
            interval = (v.lo, v.hi) if isinstance(v, Estimate) else None
            out.append(Quoted(r["quantity"], v.value if isinstance(v, Estimate) else v, None, "not tested", interval))
    return out


def record(report) -> None:
    """Show the report's numbers as a table and store them in the notebook as a results record
    (:func:`gaussdiff_lib.chapters.results.record`), from which :func:`run` writes ``diagnose.json``."""
    from .results import record as _record

    _record("diagnose", _quoted(report), report.checks)


def regime_rows(report) -> list[dict]:
    """One table row per σ: the distances (relative to the D_G–D_M gap), how much D_M copies there, the regime."""
    return [{"σ": f"{r['sigma']:.4g}", "band": r["band"], "RMSE(D, D_G) / gap": str(r["to_gaussian"]),
             "RMSE(D, D_M) / gap": str(r["to_memorizer"]), "gap RMSE(D_M, D_G)": str(r["rmse_GM"]),
             "inputs D_M copies": f"{r['copies']:.0%}", "regime": r["regime"]} for r in report.per_level]


def distance_figure(report, ax=None):
    """RMSE(D, D_G), RMSE(D, D_M) and the gap RMSE(D_M, D_G) over σ, the intermediate range shaded."""
    from ..compare import INTERMEDIATE
    from .plotting import curves

    levels = [r["sigma"] for r in report.per_level]
    ax = curves(levels, {"RMSE(D, D_G)": [r["rmse_G"] for r in report.per_level],
                         "RMSE(D, D_M)": [r["rmse_M"] for r in report.per_level],
                         "RMSE(D_M, D_G) (the gap)": [r["rmse_GM"] for r in report.per_level]},
                ax=ax, ylabel="RMSE", logy=True)
    ax.axvspan(*INTERMEDIATE, color="0.92", zorder=0)
    ax.set_title(report.name)
    return ax


def linearity_figure(report, ax=None):
    """The model's linearity score over σ beside D_M's (1: additive like a linear map)."""
    from ..compare import INTERMEDIATE
    from .plotting import curves

    levels = [r["sigma"] for r in report.per_level]
    ax = curves(levels, {report.name: [r["linearity"] for r in report.per_level],
                         "D_M": [r["linearity_D_M"] for r in report.per_level]}, ax=ax, ylabel="linearity score")
    ax.axvspan(*INTERMEDIATE, color="0.92", zorder=0)
    return ax


def sample_rows(report, n: int = 10) -> dict:
    """Rows for :func:`gaussdiff_lib.chapters.plotting.image_rows`: the model's samples, D_G's samples from the
    same latents (same sampler), and each sample's nearest training image."""
    s = report.samples
    return {f"{report.name}": s["model"][:n], "D_G, same latents": s["gaussian"][:n],
            "nearest training image": s["nearest"][:n]}


def run(model: str, out: str | os.PathLike, train: str | None = None, heldout: str | None = None,
        resolution: int | None = None, n_train: int | None = None, profile: str = "cpu", setting: str = "full",
        seed: int = 0, timeout: int = 7200, progress: bool | None = None, scheduler: str | None = None,
        value_range: tuple | None = None, n_heldout: int | None = None) -> dict:
    """Execute the report template on one model into ``out``: ``diagnose.ipynb`` (executed), ``diagnose.html``
    and ``diagnose.json`` (the results record). The inputs are checked before the notebook starts; with
    ``progress`` the notebook's own output (the announced cost, the notes) is shown as it runs. Returns
    {"notebook", "html", "json"} paths."""
    try:
        import papermill
    except ImportError:
        raise ImportError('gaussdiff diagnose executes a notebook and needs the book stack: pip install '
                          '"gaussdiff[book]" (papermill, ipykernel)') from None
    from .. import data

    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {sorted(SETTINGS)}")
    if str(model).startswith("run:"):
        from .runs import runs as _runs

        if model[4:] not in _runs(profile):
            raise ValueError(f"no run {model[4:]!r} in the {profile} profile (gaussdiff list --profile {profile} "
                             "names them)")
    elif train is None:
        raise ValueError("diagnose needs the model's training images: --train DATASET or PATH (the set it was "
                         "trained on; D_G and D_M are built on it)")
    for what, source in (("--train", train), ("--heldout", heldout), ("--scheduler", scheduler)):
        if source is not None and source not in data.DATASETS and not Path(source).expanduser().exists():
            raise FileNotFoundError(f"{what} {source!r} is neither a dataset name ({', '.join(sorted(data.DATASETS))})"
                                    " nor an existing file or folder")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    target = out / "diagnose.ipynb"
    params = {"model": str(model), "train": train, "heldout": heldout, "resolution": resolution, "n_train": n_train,
              "profile": profile, "setting": setting, "seed": seed, "scheduler": scheduler,
              "value_range": list(value_range) if value_range is not None else None, "n_heldout": n_heldout}
    if not str(model).startswith(("run:", "http://", "https://")):
        params["model"] = str(Path(model).expanduser().resolve())      # the notebook runs in ``out``
        if not Path(params["model"]).exists():
            raise FileNotFoundError(f"no model at {params['model']}: pass a diffusers folder, an EDM .pkl or .pt "
                                    "checkpoint, or run:NAME")
    for key in ("train", "heldout", "scheduler"):
        value = params[key]
        if value is not None and not _named(value):
            params[key] = str(Path(value).expanduser().resolve())
    partial = out / ".diagnose.partial.ipynb"
    if progress:                  # the notebook's own output, as it runs: the announced cost, the notes
        import logging
        import sys

        log = logging.getLogger("papermill")
        if not log.handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            log.addHandler(handler)
        log.setLevel(logging.INFO)
    try:
        papermill.execute_notebook(str(template()), str(partial), parameters=params, kernel_name="python3",
                                   progress_bar=False, log_output=bool(progress), stdout_file=None,
                                   execution_timeout=timeout, cwd=str(out))
    except papermill.PapermillExecutionError as err:
        raise RuntimeError(f"the report failed in cell {err.exec_count}: {err.ename}: {err.evalue} (the partly "
                           f"executed notebook is {partial})") from None
    partial.replace(target)
    from .results import read, validate

    record = read(target)
    if record is None:
        raise RuntimeError(f"{target} holds no results record; the template's last cell did not run")
    record = validate({k: v for k, v in record.items() if k not in ("profile", "title")}, str(target))
    (out / "diagnose.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    to_html(target, out / "diagnose.html")
    return {"notebook": target, "html": out / "diagnose.html", "json": out / "diagnose.json"}


def _load(source: str, split: str, resolution=None, n=None, value_range=None):
    """Images from a dataset name or a path, with an error that names both kinds when it is neither."""
    from .. import data

    if source not in data.DATASETS and not Path(source).expanduser().exists():
        raise FileNotFoundError(f"{source!r} is neither a dataset name ({', '.join(sorted(data.DATASETS))}) nor an "
                                "existing file or folder")
    if source in data.DATASETS or value_range is None:
        return data.load_any(source, split=split, resolution=resolution, n=n)
    return data.load_path(source, resolution=resolution, n=n, split=split, value_range=value_range)


def _has_test_split(source: str) -> bool:
    from ..data import DATASETS

    return source in DATASETS or "cifar-10" in Path(str(source)).name.lower()


def _named(source: str) -> bool:
    from ..data import DATASETS

    return source in DATASETS


def to_html(notebook: str | os.PathLike, path: str | os.PathLike) -> Path:
    """A self-contained HTML page of an executed notebook: its markdown (rendered by markdown-it when installed,
    else shown as text), its code folded, and its outputs (PNG figures inline, tables as HTML or markdown, text)."""
    nb = json.loads(Path(notebook).read_text())
    try:
        from markdown_it import MarkdownIt

        md = MarkdownIt("commonmark").enable("table").render
    except ImportError:                       # the book's stack brings markdown-it; without it, the text itself
        md = lambda text: f"<pre>{html.escape(text)}</pre>"  # noqa: E731
    parts = []
    for cell in nb.get("cells", []):
        source = "".join(cell.get("source", ""))
        if cell.get("cell_type") == "markdown":
            parts.append(f'<div class="md">{md(source)}</div>')
            continue
        if cell.get("cell_type") != "code" or "parameters" in cell.get("metadata", {}).get("tags", []):
            continue
        parts.append(f"<details><summary>code</summary><pre>{html.escape(source)}</pre></details>")
        for o in cell.get("outputs", []):
            data = o.get("data", {})
            if "image/png" in data:
                parts.append(f'<img src="data:image/png;base64,{"".join(data["image/png"]).strip()}">')
            elif "text/html" in data:
                parts.append("".join(data["text/html"]))
            elif "text/markdown" in data:
                parts.append(md("".join(data["text/markdown"])))
            elif "text/plain" in data:
                parts.append(f"<pre>{html.escape(''.join(data['text/plain']))}</pre>")
            elif o.get("output_type") == "stream":
                parts.append(f"<pre>{html.escape(''.join(o.get('text', '')))}</pre>")
            elif o.get("output_type") == "error":
                parts.append(f"<pre class='error'>{html.escape(o.get('ename', ''))}: "
                             f"{html.escape(o.get('evalue', ''))}</pre>")
    title = next((line[2:] for c in nb.get("cells", []) if c.get("cell_type") == "markdown"
                  for line in "".join(c["source"]).splitlines() if line.startswith("# ")), "Diagnosis")
    page = ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>body{{max-width:60em;margin:2em auto;font-family:sans-serif}}"
            "img{max-width:100%}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
            "pre{background:#f6f6f6;padding:.5em;overflow-x:auto}.error{color:#a00}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    Path(path).write_text(page)
    return Path(path)
