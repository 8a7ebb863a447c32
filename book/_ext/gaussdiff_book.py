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

Results as data: a chapter that records its quoted numbers (:mod:`gaussdiff_lib.chapters.results`) carries them,
with every check of the paper's claims, in a display output of its own MIME type. Each such page gets
``<page>.results.json`` written beside it in the HTML output, and a link to it under the recorded table; three
directives of the Status page gather every executed notebook of its folder when the page is read (so whatever the
order the pages are read in): ``{claims-status}`` (per claim: verdict, informative and uninformative checks,
gates), ``{checks-status}`` (every check with its kind and its controls' outcomes) and ``{paper-vs-ours}``.
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
    """Point the launch buttons (Binder, Colab) at the notebook *template* in the repository's ``notebooks/`` rather
    than the executed copy in ``book/``, which is a build product and not in the repository."""
    if not pagename.startswith("book/"):
        return
    stem = pagename.rsplit("/", 1)[-1]

    def fix(value):
        if isinstance(value, str) and value.startswith(("http://", "https://")):  # launch links, not downloads
            return value.replace(f"book/{stem}.ipynb", f"notebooks/{stem}.ipynb")
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


def _gathering_directive(render):
    """A directive that gathers the executed notebooks of its page's folder (read again when one of them changes,
    and when a page is added or removed: ``outdated_tables``) and renders them with ``render(self, folder,
    docname)``, a function of the directive returning docutils nodes."""
    from sphinx.util.docutils import SphinxDirective

    class Gathering(SphinxDirective):
        has_content = False

        def run(self):
            from pathlib import Path

            folder = Path(self.env.doc2path(self.env.docname)).parent.resolve()
            if not hasattr(self.env, "gaussdiff_tables"):
                self.env.gaussdiff_tables = set()
            self.env.gaussdiff_tables.add(self.env.docname)
            for path in sorted(folder.glob("*.ipynb")):
                self.env.note_dependency(str(path))
            import warnings

            from sphinx.util import logging

            from gaussdiff_lib.chapters.results import SkippedNotebook

            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", SkippedNotebook)
                    nodes_ = render(self, folder)
            except ValueError as err:
                raise self.error(f"{self.name}: {err}") from None
            for w in caught:  # a half-written file is noted, not a warning that fails a -W build
                if issubclass(w.category, SkippedNotebook):
                    logging.getLogger(__name__).info(f"{self.name}: {w.message}", location=self.env.docname)
                else:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            return nodes_

    return Gathering


def _docname(env, chapter):
    import posixpath

    base = posixpath.dirname(env.docname)
    return posixpath.join(base, chapter) if base else chapter


def _chapter_link(directive, chapter, title):
    from docutils import nodes
    from sphinx import addnodes

    return addnodes.pending_xref("", nodes.inline(text=title or chapter), refdomain="std", reftype="doc",
                                 reftarget="/" + _docname(directive.env, chapter), refexplicit=True, refwarn=True,
                                 refdoc=directive.env.docname)


def _table(title, heads, widths, classes):
    from docutils import nodes

    table = nodes.table(classes=classes)
    table += nodes.title(text=title)
    group = nodes.tgroup(cols=len(heads))
    table += group
    group.extend(nodes.colspec(colwidth=w) for w in widths)
    head = nodes.thead()
    head += nodes.row("", *(_cell(nodes.Text(h)) for h in heads))
    body = nodes.tbody()
    group += head
    group += body
    return table, body


def _cell(*children, **kw):
    from docutils import nodes

    return nodes.entry("", nodes.paragraph("", "", *children), **kw)


def _in_site_order(directive, rows):
    site = list(getattr(directive.env, "external_site_map", None) or [])
    order = {d: i for i, d in enumerate(site)}
    return sorted(rows, key=lambda r: order.get(_docname(directive.env, r["chapter"]), len(order)))   # stable


def _render_paper_vs_ours(self, folder):
    """One table of every chapter's quoted numbers beside the paper's: chapter (linked), quantity,
    ours [interval], paper, reproduced."""
    from docutils import nodes

    from gaussdiff_lib.chapters import results
    from gaussdiff_lib.chapters.results import Quoted

    rows = results.gather(folder)
    if not rows:
        return [nodes.paragraph(text="No chapter of this build records the numbers it quotes.")]
    rows = _in_site_order(self, rows)
    table, body = _table("Paper vs ours: the numbers each chapter quotes",
                         ["chapter", "quantity", "ours [95% interval]", "paper", "reproduced"], (20, 30, 20, 20, 10),
                         ["paper-vs-ours"])
    for chapter in dict.fromkeys(r["chapter"] for r in rows):
        mine = [r for r in rows if r["chapter"] == chapter]
        data = nodes.reference("data", "data", refuri=f"{chapter}.results.json")
        for i, r in enumerate(mine):
            q = Quoted.from_dict({k: v for k, v in r.items() if k not in ("chapter", "title")})
            row = nodes.row()
            if i == 0:
                row += _cell(_chapter_link(self, chapter, mine[0]["title"]), nodes.Text(" ("), data, nodes.Text(")"),
                             morerows=len(mine) - 1)
            row.extend(_cell(nodes.Text(t)) for t in (q.quantity, q.ours_text(), q.paper_text(), q.reproduced))
            body += row
    return [table]


def _render_claims(self, folder):
    """Per claim of the paper: what it says, the chapters that test it, the verdict, the informative and
    uninformative evidence checks and the gates passed."""
    from docutils import nodes

    from gaussdiff_lib.chapters import results
    from gaussdiff_lib.claims import CLAIMS

    checks = results.gather_checks(folder)
    if not checks:
        return [nodes.paragraph(text="No chapter of this build records its checks.")]
    titles = {c["chapter"]: c["title"] for c in checks}
    table, body = _table("The paper's claims: verdicts from informative checks only",
                         ["claim", "the paper claims", "tested in", "verdict", "informative checks",
                          "uninformative checks", "gates passed"], (6, 34, 20, 10, 10, 10, 10), ["claims-status"])
    for s in results.claims_summary(checks):
        links = []
        for i, ch in enumerate(s["chapters"]):
            links += ([nodes.Text(", ")] if i else []) + [_chapter_link(self, ch, titles[ch])]
        row = nodes.row()
        row += _cell(nodes.Text(str(s["claim"])))
        row += _cell(nodes.Text(CLAIMS[s["claim"]][0]))
        row += _cell(*(links or [nodes.Text("no chapter")]))
        row.extend(_cell(nodes.Text(t)) for t in (s["verdict"], str(s["informative"]), str(s["uninformative"]),
                                                  f"{s['gates passed']} of {s['gates']}"))
        body += row
    return [table]


def _render_checks(self, folder):
    """Every check of every chapter: claim, kind, what it tests, the result on the models under test, each
    control's outcome, and whether the verdict counts it."""
    from docutils import nodes

    from gaussdiff_lib.chapters import results

    checks = _in_site_order(self, results.gather_checks(folder))
    if not checks:
        return [nodes.paragraph(text="No chapter of this build records its checks.")]
    table, body = _table("Every check, with its controls", ["chapter", "claim", "kind", "check", "result",
                                                            "controls (✓: behaves as a control must)",
                                                            "in the verdict"], (14, 5, 7, 26, 16, 20, 12),
                         ["checks-status"])
    for chapter in dict.fromkeys(c["chapter"] for c in checks):
        mine = [c for c in checks if c["chapter"] == chapter]
        for i, c in enumerate(mine):
            controls = "; ".join(f"{k['name']} ({k['role']}): {'passes' if k['passed'] else 'fails'} "
                                 f"{'✓' if k['passed'] == (k['role'] == 'positive') else '✗'}" for k in c["controls"])
            counted = {"gate passed": "gate", "gate failed": "gate failed: claim not tested", "passes": "counted",
                       "fails": "counted"}.get(c["status"], f"uninformative ({c['why_uninformative']})")
            row = nodes.row()
            if i == 0:
                row += _cell(_chapter_link(self, chapter, c["title"]), morerows=len(mine) - 1)
            row.extend(_cell(nodes.Text(t)) for t in (
                str(c["number"] or ""), c["kind"], c["claim"],
                ("passes" if c["passed"] else "fails") + (f": {c['evidence']}" if c["evidence"] else ""),
                controls or "—", counted))
            body += row
    return [table]


class BuildTimings:
    """``{build-timings}``: the build's time record (``_build/timings.json`` under the book's root,
    :mod:`gaussdiff_lib.chapters.timings`) as a sentence and tables. The page is read again when the record
    changes."""

    @staticmethod
    def directive():
        from sphinx.util.docutils import SphinxDirective

        class Timings(SphinxDirective):
            has_content = False

            def run(self):
                from pathlib import Path

                from docutils import nodes

                from gaussdiff_lib.chapters import timings

                path = Path(self.env.app.confdir) / timings.RECORD
                self.env.note_dependency(str(path))
                try:
                    data = timings.load(path)
                except ValueError as err:
                    raise self.error(f"build-timings: {err}") from None
                if not data:
                    return [nodes.paragraph(text="This copy of the book was built without a time record (make book "
                                                 "writes one to _build/timings.json).")]
                out = [nodes.paragraph(text=timings.sentence(data) + " Rendering the HTML follows this page; "
                                       "its time is added to the record afterwards.")]
                for title, heads, rows in timings.tables(data):
                    table, body = _table(title, heads, [max(6, 60 // len(heads))] * len(heads), ["build-timings"])
                    for row in rows:
                        body += nodes.row("", *(_cell(nodes.Text(t)) for t in row))
                    out.append(table)
                return out

        return Timings


def setup(app):
    app.add_directive("build-timings", BuildTimings.directive())
    app.add_directive("paper-vs-ours", _gathering_directive(_render_paper_vs_ours))
    app.add_directive("claims-status", _gathering_directive(_render_claims))
    app.add_directive("checks-status", _gathering_directive(_render_checks))
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

