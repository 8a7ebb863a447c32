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

Results as data: a chapter that records its quoted numbers (:mod:`gaussdiff_lib.chapters.results`) carries them
in a display output of its own MIME type. Each such page gets ``<page>.results.json`` written beside it in the
HTML output, and a link to it under the recorded table; the ``{paper-vs-ours}`` directive (Status page) gathers
every executed notebook of its folder into one table, paper vs ours, when it is read (so whatever the order the
pages are read in).
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


def _results_cell(path):
    """Index of the cell holding a notebook's results record (None if it has none)."""
    import json

    from gaussdiff_lib.chapters.results import MIME

    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    return next((i for i, c in enumerate(cells) if c.get("cell_type") == "code"
                 and any(MIME in o.get("data", {}) for o in c.get("outputs", []))), None)


def collect_results(app, doctree):
    """Keep a notebook page's results record for ``<page>.results.json`` and link the file under its table."""
    from pathlib import Path

    from docutils import nodes
    from sphinx.util import logging

    from gaussdiff_lib.chapters import results

    env = app.env
    path = Path(env.doc2path(env.docname))
    if path.suffix != ".ipynb" or app.builder.format != "html":
        return
    try:
        data = results.read(path)
    except ValueError as err:
        logging.getLogger(__name__).warning(f"malformed results record: {err}", location=env.docname)
        return
    if data is None:
        return
    if not hasattr(env, "gaussdiff_results"):
        env.gaussdiff_results = {}
    env.gaussdiff_results[env.docname] = data
    index = _results_cell(path)
    name = f"{path.stem}.results.json"
    link = nodes.paragraph("", "These numbers as data: ", nodes.reference(name, name, refuri=name),
                           classes=["gaussdiff-results-link"])
    for cell in doctree.findall(nodes.container):
        if cell.get("nb_element") == "cell_code" and cell.get("cell_index") == index:
            outputs = [c for c in cell.children if c.get("nb_element") == "cell_code_output"]
            (outputs[0] if outputs else cell).append(link)
            return
    doctree.append(link)     # the cell was removed from the page: link at the end instead


def purge_results(app, env, docname):
    getattr(env, "gaussdiff_results", {}).pop(docname, None)
    getattr(env, "gaussdiff_tables", set()).discard(docname)


def outdated_tables(app, env, added, changed, removed):
    """Pages with a paper-vs-ours table are read again whenever a page is added or removed: a chapter that
    appears or disappears changes the table, though no file the table was read from did."""
    if added or removed:
        return sorted(getattr(env, "gaussdiff_tables", set()) - set(removed))
    return []


def merge_results(app, env, docnames, other):
    theirs = getattr(other, "gaussdiff_results", {})
    if not hasattr(env, "gaussdiff_results"):
        env.gaussdiff_results = {}
    env.gaussdiff_results.update({d: theirs[d] for d in docnames if d in theirs})
    if not hasattr(env, "gaussdiff_tables"):
        env.gaussdiff_tables = set()
    env.gaussdiff_tables |= {d for d in getattr(other, "gaussdiff_tables", set()) if d in docnames}


def write_results(app, exception):
    """Write each recorded page's ``<page>.results.json`` beside the page."""
    import json
    from pathlib import Path

    if exception is not None or app.builder.format != "html":
        return
    for docname, data in getattr(app.env, "gaussdiff_results", {}).items():
        if docname not in app.env.found_docs:
            continue
        target = Path(app.outdir) / f"{docname}.results.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({**data, "page": app.builder.get_target_uri(docname)}, indent=1,
                                     ensure_ascii=False) + "\n", encoding="utf-8")


def _paper_vs_ours():
    from docutils import nodes
    from sphinx import addnodes
    from sphinx.util.docutils import SphinxDirective

    class PaperVsOurs(SphinxDirective):
        """One table of every chapter's quoted numbers beside the paper's, from the executed notebooks in this
        page's folder: chapter (linked), quantity, ours [interval], paper, reproduced. The page is read again
        when one of those notebooks changes (a dependency) and when a page is added or removed (see
        ``outdated_tables``)."""

        has_content = False

        def run(self):
            import posixpath
            from pathlib import Path

            from gaussdiff_lib.chapters import results

            folder = Path(self.env.doc2path(self.env.docname)).parent.resolve()
            if not hasattr(self.env, "gaussdiff_tables"):
                self.env.gaussdiff_tables = set()
            self.env.gaussdiff_tables.add(self.env.docname)
            for path in sorted(folder.glob("*.ipynb")):
                self.env.note_dependency(str(path))
            try:
                rows = results.gather(folder)
            except ValueError as err:
                raise self.error(f"paper-vs-ours: {err}") from None
            if not rows:
                return [nodes.paragraph(text="No chapter of this build records the numbers it quotes.")]
            base = posixpath.dirname(self.env.docname)
            docname = lambda chapter: posixpath.join(base, chapter) if base else chapter  # noqa: E731
            site = list(getattr(self.env, "external_site_map", None) or [])
            order = {d: i for i, d in enumerate(site)}
            rows.sort(key=lambda r: order.get(docname(r["chapter"]), len(order)))   # stable: rows keep their order
            return [self._table(rows, docname)]

        def _table(self, rows, docname):
            from gaussdiff_lib.chapters.results import Quoted

            heads = ["chapter", "quantity", "ours [95% interval]", "paper", "reproduced"]
            table = nodes.table(classes=["paper-vs-ours"])
            table += nodes.title(text="Paper vs ours: the numbers each chapter quotes")
            group = nodes.tgroup(cols=len(heads))
            table += group
            group.extend(nodes.colspec(colwidth=w) for w in (20, 30, 20, 20, 10))
            cell = lambda *children, **kw: nodes.entry("", nodes.paragraph("", "", *children), **kw)  # noqa: E731
            head = nodes.thead()
            head += nodes.row("", *(cell(nodes.Text(h)) for h in heads))
            body = nodes.tbody()
            chapters = list(dict.fromkeys(r["chapter"] for r in rows))
            for chapter in chapters:
                mine = [r for r in rows if r["chapter"] == chapter]
                target = docname(chapter)
                xref = addnodes.pending_xref("", nodes.inline(text=mine[0]["title"] or chapter), refdomain="std",
                                             reftype="doc", reftarget="/" + target, refexplicit=True,
                                             refwarn=True, refdoc=self.env.docname)
                data = nodes.reference("data", "data", refuri=f"{chapter}.results.json")
                for i, r in enumerate(mine):
                    q = Quoted.from_dict({k: v for k, v in r.items() if k not in ("chapter", "title")})
                    row = nodes.row()
                    if i == 0:
                        row += cell(xref, nodes.Text(" ("), data, nodes.Text(")"), morerows=len(mine) - 1)
                    row.extend(cell(nodes.Text(t)) for t in (q.quantity, q.ours_text(), q.paper_text(), q.reproduced))
                    body += row
            group += head
            group += body
            return table

    return PaperVsOurs


def setup(app):
    app.add_directive("paper-vs-ours", _paper_vs_ours())
    app.connect("doctree-read", collect_results)
    app.connect("env-purge-doc", purge_results)
    app.connect("env-merge-info", merge_results)
    app.connect("env-get-outdated", outdated_tables)
    app.connect("build-finished", write_results)
    app.connect("html-page-context", launch_templates, priority=600)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.connect("doctree-read", record_execution)
    app.connect("doctree-resolved", figure_alt_text)
    app.connect("html-page-context", light_mode)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

