"""The book end to end under the smoke profile: papermill executes every notebook, Jupyter Book builds
with warnings as errors, and the pages carry their figures and glued numbers. The executed notebooks
stay in _build/smoke/src/book for the nbval pass that `make test` runs next."""
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
    assert "colab.research.google.com/github/gaussdiff/gaussdiff/blob/main/gaussdiff_lib/chapters/notebooks/gaussian_shadow.ipynb" in page
    assert "mybinder.org/v2/gh/gaussdiff/gaussdiff/main" in page
    assert "blob/main/book/gaussian_shadow.ipynb" not in page
    assert "_sources/book/gaussian_shadow.ipynb" in page        # the download button: the executed notebook
    assert "jupyter-stacks-datascience" not in page and 'repo: "gaussdiff/gaussdiff"' in page   # Thebe: this repo
