"""Sphinx extension of the gaussdiff book (loaded from _config.yml, ``sphinx.local_extensions``).

sphinx-thebe registers its inline configuration script in a way that Sphinx 7 emits twice per page; the
second copy redeclares ``const THEBE_JS_URL`` and the browser reports a SyntaxError. Each page's script
list is de-duplicated here (same file or same inline body, same attributes: kept once, first position).
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


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=900)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
