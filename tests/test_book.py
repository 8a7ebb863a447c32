"""The book end to end under the smoke profile: papermill executes every notebook, Jupyter Book builds
with warnings as errors, and the pages carry their figures and glued numbers. The executed notebooks
stay in _build/smoke/src/book for the nbval pass that `make test` runs next."""
import re

import nbformat

import gaussdiff_lib as gd
from conftest import SRC


def test_every_notebook_executed(smoke_book):
    executed, _ = smoke_book
    assert {p.stem for p in executed} == {p.stem for p in gd.profiles.notebooks()}
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and 'profile = "smoke"' in injected[0].source


def test_book_builds_without_warnings(smoke_book):
    _, build = smoke_book
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    html = SRC / "_build" / "html"
    assert (html / "index.html").exists()
    for nb in gd.profiles.notebooks():
        page = (html / "book" / f"{nb.stem}.html").read_text()
        if nb.stem != "status":  # the status page is tables and text
            assert page.count("<img") >= 3, f"{nb.stem}: figures missing"
        assert "pasted-text" in page, f"{nb.stem}: no glued numbers rendered"
        assert "{glue:" not in page, f"{nb.stem}: an unresolved glue role"


def test_status_and_api_pages(smoke_book):
    html = SRC / "_build" / "html" / "book"
    status = (html / "status.html").read_text()
    for nb in gd.profiles.notebooks():      # one execution record per notebook, taken from papermill's metadata
        assert f"book/{nb.stem}" in status, f"{nb.stem} missing from the execution table"
    assert status.count("papermill, profile smoke") == len(gd.profiles.notebooks()) and "❌" not in status
    # the time record: the notebooks ran two at a time, each is in the record and in the page's table
    record = gd.chapters.timings.load(SRC / "_build" / "timings.json")
    assert {n["name"] for n in record["notebooks"]} == {nb.stem for nb in gd.profiles.notebooks()}
    assert all(n["executed"] and n["seconds"] > 0 for n in record["notebooks"])
    phase = record["phases"][-1]
    assert phase["name"] == "execution" and phase["jobs"] == 2
    assert phase["seconds"] < sum(n["seconds"] for n in record["notebooks"])     # in parallel: less than the sum
    tables = re.findall(r'<table class="[^"]*build-timings.*?</table>', status, re.S)
    assert len(tables) == 2 and all(f">{nb.stem}<" in tables[1] for nb in gd.profiles.notebooks())
    api = (html / "api.html").read_text()
    for name in ("gaussdiff_lib.checkpoints.load_edm", "gaussdiff_lib.denoisers.GaussianDenoiser",
                 "gaussdiff_lib.chapters.models.model", "gaussdiff_lib.linear_fit.fit_linear"):
        assert f'id="{name}"' in api, f"{name} not documented"


def test_figures_are_captioned_and_referenced(smoke_book):
    html = SRC / "_build" / "html" / "book"
    for nb in gd.profiles.notebooks():
        cells = nbformat.read(nb, as_version=4).cells
        names = [c.metadata["mystnb"]["figure"]["name"] for c in cells if "figure" in c.metadata.get("mystnb", {})]
        if nb.stem == "status":
            continue
        assert names, f"{nb.stem}: no captioned figure"
        page = (html / f"{nb.stem}.html").read_text()
        for name in names:
            assert f'id="{name}"' in page, f"{nb.stem}: figure {name} not rendered with its label"
            assert f'href="#{name}"' in page, f"{nb.stem}: figure {name} is never referenced in the text"


def test_launch_buttons_open_the_templates(smoke_book):
    page = (SRC / "_build" / "html" / "book" / "gaussian_shadow.html").read_text()
    assert "colab.research.google.com/github/gaussdiff/gaussdiff/blob/main/notebooks/gaussian_shadow.ipynb" in page
    assert "mybinder.org/v2/gh/gaussdiff/gaussdiff/main" in page
    assert "blob/main/book/gaussian_shadow.ipynb" not in page
    assert "_sources/book/gaussian_shadow.ipynb" in page        # the download button: the executed notebook
    assert "jupyter-stacks-datascience" not in page and 'repo: "gaussdiff/gaussdiff"' in page   # Thebe: this repo


def _glued(path, name):
    """The value a notebook glued under ``name`` (myst-nb's record of it), as text."""
    import ast

    for cell in nbformat.read(path, as_version=4).cells:
        for out in cell.get("outputs", []):
            if out.get("metadata", {}).get("scrapbook", {}).get("name") == name:
                return ast.literal_eval(out["data"]["application/papermill.record/text/plain"])
    raise AssertionError(f"{path.name}: nothing glued as {name!r}")


def test_results_published_beside_each_page_and_gathered(smoke_book):
    """Results as data (issue 16): every chapter that quotes the paper records its numbers; the page links
    <page>.results.json, which holds that record; the record agrees with the verdict the prose states; the Status
    page's paper-vs-ours table holds every row."""
    import json
    import re

    from gaussdiff_lib.chapters import results

    executed, _ = smoke_book
    html = SRC / "_build" / "html" / "book"
    status = (html / "status.html").read_text()
    table = re.search(r'<table class="paper-vs-ours.*?</table>', status, re.S)
    assert table, "the Status page has no paper-vs-ours table"
    recorded = {p.stem: results.read(p) for p in executed}
    recorded = {k: v for k, v in recorded.items() if v is not None}
    # the pages that quote no paper numbers: the Status page, the scale page and the diagnosis page (whose checks
    # judge two single networks, not the claims, so they stay out of the claims' tables)
    assert set(recorded) == {p.stem for p in executed} - {"status", "scale", "diagnose_your_model"}
    for stem, data in recorded.items():
        published = json.loads((html / f"{stem}.results.json").read_text())
        assert published == {**data, "page": f"book/{stem}.html"}
        assert f'href="{stem}.results.json"' in (html / f"{stem}.html").read_text()
        verdict = _glued(SRC / "book" / f"{stem}.ipynb", "verdict")
        assert published["verdict"] == verdict, stem
        words = {r["reproduced"] for r in published["rows"]}
        allowed = {"yes": {"yes", "not tested"}, "no": {"no", "not tested"}, "not tested": {"not tested"}}
        assert verdict == "partly" or words <= allowed[verdict], f"{stem}: verdict {verdict} but rows say {words}"
        _every_counted_check_is_controlled(stem, published)
        assert f'href="{stem}.html"' in table.group(0) and f'href="{stem}.results.json"' in table.group(0)
    assert table.group(0).count("<tr") == 1 + sum(len(d["rows"]) for d in recorded.values())


def _every_counted_check_is_controlled(stem, record):
    """Evidence that a verdict counts failed on every negative control and passed on every positive one, with at
    least one of each; evidence that does not is marked uninformative with its reason; gates carry no controls; the
    per-claim summary agrees with the checks (recomputed here from the raw outcomes, not from the stored status)."""
    checks = record["checks"]
    assert checks, f"{stem}: a chapter that quotes the paper records its checks"
    assert any(c["kind"] == "evidence" for c in checks), f"{stem}: no evidence, only gates"
    for c in checks:
        behaved = [k["passed"] == (k["role"] == "positive") for k in c["controls"]]
        roles = {k["role"] for k in c["controls"]}
        if c["kind"] == "gate":
            assert not c["controls"] and c["status"].startswith("gate"), (stem, c["claim"])
            continue
        informative = all(behaved) and roles == {"negative", "positive"}
        assert c["informative"] == informative, (stem, c["claim"])
        if c["status"] in ("passes", "fails"):
            assert informative, (stem, c["claim"])
        else:
            assert c["status"] == "uninformative" and c["why_uninformative"], (stem, c["claim"])
        if c["controls"]:          # a test that could not be run has none, and is uninformative
            assert any(k["role"] == "negative" and k["name"] in ("D_M", "shuffled latents", "D_G")
                       for k in c["controls"]), f"{stem}: {c['claim']!r} has no memorizer or chance control"
    for number, summary in record["claims"].items():
        mine = [c for c in checks if str(c["number"]) == number]
        assert summary["informative"] == sum(c["informative"] for c in mine), (stem, number)
