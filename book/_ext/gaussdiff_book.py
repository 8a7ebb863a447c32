"""Sphinx extension of the gaussdiff book (loaded from _config.yml, ``sphinx.local_extensions``).

Execution records: the notebooks are executed by papermill before the build (``execute_notebooks: off``),
so myst-nb records no execution data and its ``{nb-exec-table}`` would be empty. Each executed notebook
carries papermill's record (start, duration, exception) and ours (profile, seconds); they are handed to
myst-nb as its execution data, so the Status page's table lists every chapter's run time and result.

sphinx-thebe registers its inline configuration script in a way that Sphinx 7 emits twice per page; the
second copy redeclares ``const THEBE_JS_URL`` and the browser reports a SyntaxError. Each page's script
list is de-duplicated here (same file or same inline body, same attributes: kept once, first position).

Alt text: a notebook's figure output is written with its file name as alt text; an image inside a captioned
figure takes the caption instead (every figure of a chapter has a caption: tests/test_project.py).
"""


def _key(js):
    filename = getattr(js, "filename", js) or ""   # inline scripts come as None or "" depending on the path
    attributes = getattr(js, "attributes", {}) or {}
    return str(filename), tuple(sorted((k, str(v)) for k, v in attributes.items()))


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        key = _key(js)
        if key not in seen:
            seen.add(key)
            kept.append(js)
    context["script_files"] = kept


def record_execution(app, doctree):
    """myst-nb execution data for a notebook page, from the papermill metadata stored in the notebook."""
    import json
    from datetime import datetime
    from pathlib import Path

    from myst_nb.sphinx_ import NbMetadataCollector

    env = app.env
    path = Path(env.doc2path(env.docname))
    if path.suffix != ".ipynb":
        return
    meta = json.loads(path.read_text()).get("metadata", {})
    pm, ours = meta.get("papermill") or {}, meta.get("gaussdiff") or {}
    if not pm:
        return
    end = pm.get("end_time")
    try:
        mtime = datetime.fromisoformat(end).timestamp() if end else path.stat().st_mtime
    except ValueError:
        mtime = path.stat().st_mtime
    failed = bool(pm.get("exception"))
    NbMetadataCollector.set_exec_data(env, env.docname, {
        "mtime": mtime, "runtime": pm.get("duration", ours.get("seconds")),
        "method": f"papermill, profile {ours.get('profile', '?')}", "succeeded": not failed,
        "error": "exception" if failed else None, "traceback": None})


def launch_templates(app, pagename, templatename, context, doctree):
    """Point the launch buttons (Binder, Colab) at the notebook *template* in ``gaussdiff_lib/chapters/notebooks/``
    rather than the
    executed copy in ``book/``, which is a build product and not in the repository."""
    if not pagename.startswith("book/"):
        return
    stem = pagename.rsplit("/", 1)[-1]

    def fix(value):
        if isinstance(value, str) and value.startswith(("http://", "https://")):  # launch links, not downloads
            return value.replace(f"book/{stem}.ipynb", f"gaussdiff_lib/chapters/notebooks/{stem}.ipynb")
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    if "header_buttons" in context:
        context["header_buttons"] = fix(context["header_buttons"])


def figure_alt_text(app, doctree, docname):
    """Every image inside a captioned figure gets the caption as its alt text, unless it has its own: a notebook's
    figure output otherwise carries its file name as alt text, which tells a screen reader nothing."""
    from docutils import nodes

    for figure in doctree.findall(nodes.figure):
        captions = list(figure.findall(nodes.caption))
        if not captions:
            continue
        text = " ".join(captions[0].astext().split())
        for image in figure.findall(nodes.image):
            alt = image.get("alt", "")
            if not alt or alt == image.get("uri") or alt.rsplit("/", 1)[-1] == image.get("uri", "").rsplit("/", 1)[-1]:
                image["alt"] = text


def light_mode(app, pagename, templatename, context, doctree):
    """The theme's colour mode (the page template's ``default_mode``) is left empty by this theme, so every page
    logs "Got invalid theme mode" as a console error before falling back to auto; the book's figures are drawn
    on white, so it opens in light mode (readers can still switch)."""
    if not context.get("default_mode"):
        context["default_mode"] = "light"


def setup(app):
    app.connect("html-page-context", launch_templates, priority=600)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.connect("doctree-read", record_execution)
    app.connect("doctree-resolved", figure_alt_text)
    app.connect("html-page-context", light_mode)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

