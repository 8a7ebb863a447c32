"""Results as data (gaussdiff_lib.chapters.results): a chapter's quoted numbers go into its executed notebook as a
display output, come back out of it unchanged, are refused when malformed, and the book publishes them beside
each page and gathers them on the Status page (the extension in book/_ext, built here on two small pages)."""
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

import gaussdiff_lib as gd
from gaussdiff_lib.chapters import results

ROOT = Path(__file__).resolve().parent.parent
CONTROLS = (gd.stats.Control("D_M", "negative", False), gd.stats.Control("D_G", "positive", True))
PASS = gd.stats.Check("passes", True, controls=CONTROLS, number=4)
FAIL = gd.stats.Check("fails", False, controls=CONTROLS, number=4)


def _record_cell(chapter="demo", extra=""):
    """A notebook cell that records three quoted numbers, one of each verdict, with their values known here."""
    return nbformat.v4.new_code_cell(f"""\
import gaussdiff_lib as gd
ctl = (gd.stats.Control("D_M", "negative", False), gd.stats.Control("D_G", "positive", True))
a = gd.stats.Check("passes", True, controls=ctl, number=4)
b = gd.stats.Check("fails", False, controls=ctl, number=4)
q = gd.chapters.results.quote
gd.chapters.results.record({chapter!r}, [
    q("an estimate", gd.stats.Estimate(0.031, 0.02, 0.045), "< 0.05", a, claim="claim 4, Fig 2"),
    q("a count", "7 of 10", "most σ", [a, b]),
    q("a number", 841.0, None, b, unit="epochs"),
], [a, b])
{extra}""")


def _executed(tmp_path, name="demo", cells=None):
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# A demo chapter\n\nSome prose."), *(cells or [_record_cell(name)])]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


EXPECTED = [
    {"chapter": "demo", "title": "A demo chapter", "quantity": "an estimate", "ours": 0.031, "interval": [0.02, 0.045],
     "paper": "< 0.05", "reproduced": "yes", "claim": "claim 4, Fig 2", "unit": ""},
    {"chapter": "demo", "title": "A demo chapter", "quantity": "a count", "ours": "7 of 10", "interval": None,
     "paper": "most σ", "reproduced": "partly", "claim": "", "unit": ""},
    {"chapter": "demo", "title": "A demo chapter", "quantity": "a number", "ours": 841.0, "interval": None,
     "paper": None, "reproduced": "no", "claim": "", "unit": "epochs"},
]


def test_record_then_gather_through_an_executed_notebook(tmp_path):
    path = _executed(tmp_path)
    assert results.gather(tmp_path) == EXPECTED
    data = results.read(path)
    assert data["verdict"] == "partly" and data["schema"] == results.SCHEMA and data["title"] == "A demo chapter"
    assert [r["checks"] for r in data["rows"]] == [["passes"], ["passes", "fails"], ["fails"]]
    # the page shows a table, and the output is one display bundle (record returns None: no second copy)
    outputs = nbformat.read(path, as_version=4).cells[1].outputs
    assert len(outputs) == 1 and outputs[0].output_type == "display_data"
    table = outputs[0].data["text/markdown"]
    assert "| an estimate | 0.031 [0.02, 0.045] | < 0.05 (claim 4, Fig 2) | yes |" in table
    assert "| a number | 841 epochs | (no value given) | no |" in table


def test_reproduced_is_the_verdict_of_the_checks():
    """Oracle: yes when every check passes, no when none does, partly otherwise (enumerated, not computed)."""
    cases = {(True,): "yes", (False,): "no", (True, True): "yes", (False, False): "no", (True, False): "partly",
             (False, True, True): "partly"}
    for passed, word in cases.items():
        checks = [gd.stats.Check(f"c{i}", p, controls=CONTROLS) for i, p in enumerate(passed)]
        assert results.quote("x", 1.0, None, checks).reproduced == word
    est = gd.stats.mean([0.1, 0.2, 0.3, 0.4])
    row = results.quote("mean", est, "0.25", PASS)
    assert (row.ours, row.interval) == (est.value, (est.lo, est.hi)) and row.checks == ("passes",)


@pytest.mark.parametrize("kwargs, msg", [
    ({"reproduced": "maybe"}, "reproduced must be one of"),
    ({"interval": (0.3, 0.1)}, "lo > hi"),
    ({"interval": (0.0, float("nan"))}, "must be finite"),
    ({"ours": float("nan")}, "must be finite"),
    ({"ours": float("inf")}, "must be finite"),
    ({"ours": True}, "must be a real number"),
    ({"ours": 0.5, "interval": (0.0, 0.2)}, "outside its own interval"),
    ({"ours": "3 of 10", "interval": (0.0, 1.0)}, "needs a numeric value"),
    ({"quantity": " "}, "quantity must be a non-empty string"),
    ({"paper": ""}, "paper must be a non-empty string or None"),
    ({"interval": (0.1,)}, "must be a pair"),
])
def test_bad_rows_are_refused(kwargs, msg):
    base = {"quantity": "q", "ours": 0.15, "paper": "< 0.2", "reproduced": "yes", "interval": (0.1, 0.2)}
    with pytest.raises(ValueError, match=msg):
        results.Quoted(**{**base, **kwargs})


def test_bad_records_are_refused():
    row = results.quote("q", 0.1, None, PASS)
    with pytest.raises(ValueError, match="lower case"):
        results.payload("Linear Gaussian", [row])
    with pytest.raises(ValueError, match="non-empty list of Quoted"):
        results.payload("demo", [])
    with pytest.raises(ValueError, match="quoted once"):
        results.payload("demo", [row, row])
    with pytest.raises(ValueError, match="not among the chapter's checks"):
        results.payload("demo", [row], [FAIL])
    with pytest.raises(ValueError, match="gd.stats.Check"):
        results.quote("q", 0.1, None, [])
    with pytest.raises(ValueError, match="share a description"):
        results.payload("demo", [row], [PASS, PASS])
    # a row typed by hand cannot contradict its chapter: its reproduced is derived again from its checks
    assert results.payload("demo", [results.Quoted("q", 0.1, None, "no", checks=("passes",))],
                           [PASS])["rows"][0]["reproduced"] == "yes"


def test_a_row_is_not_reproduced_when_its_claim_was_not_tested():
    """The gates of a row's claim join its checks: a failed gate makes the row 'not tested' although its own
    evidence passes; a row whose evidence is uninformative (its negative control passed) is 'not tested' too;
    gates of other claims do not touch it."""
    failed_gate = gd.stats.Check("regime", False, kind="gate", number=4)
    other_gate = gd.stats.Check("another regime", False, kind="gate", number=6)
    leaky = gd.stats.Check("leaky", True, controls=(gd.stats.Control("D_M", "negative", True), CONTROLS[1]), number=6)
    data = results.payload("demo", [results.quote("q", 0.1, None, PASS), results.quote("r", 0.2, None, leaky)],
                           [PASS, failed_gate, leaky])
    assert [r["reproduced"] for r in data["rows"]] == ["not tested", "not tested"]
    assert data["verdict"] == "not tested"
    assert data["claims"]["4"] == {"verdict": "not tested", "informative": 1, "uninformative": 0,
                                   "gates": [{"claim": "regime", "passed": False, "evidence": ""}]}
    assert data["claims"]["6"]["uninformative"] == 1
    ok = results.payload("demo", [results.quote("q", 0.1, None, PASS)], [PASS, other_gate])
    assert ok["rows"][0]["reproduced"] == "yes" and ok["verdict"] == "partly"
    statuses = {c["claim"]: c["status"] for c in data["checks"]}
    assert statuses == {"passes": "passes", "regime": "gate failed", "leaky": "uninformative"}
    assert [c["why_uninformative"] for c in data["checks"]][2] == "D_M also passes"


def test_claims_summary_combines_chapters():
    """Claim 6 tested 'yes' in one chapter and 'not tested' (failed gate) in another is 'partly'; a claim no chapter
    records is 'not tested' with no chapters; counts add up over chapters."""
    gate6 = gd.stats.Check("gate", False, kind="gate", number=6)
    ev6 = gd.stats.Check("ev", True, controls=CONTROLS, number=6)
    leaky = gd.stats.Check("leaky", True, controls=(gd.stats.Control("D_M", "negative", True),), number=6)
    rows = [{"chapter": "one", "title": "One", **ev6.as_dict()},
            {"chapter": "two", "title": "Two", **gate6.as_dict()}, {"chapter": "two", "title": "Two", **ev6.as_dict()},
            {"chapter": "two", "title": "Two", **leaky.as_dict()}]
    table = {s["claim"]: s for s in results.claims_summary(rows)}
    assert table[6] == {"claim": 6, "chapters": ["one", "two"], "verdict": "partly", "informative": 2,
                        "uninformative": 1, "gates passed": 0, "gates": 1}
    assert table[1]["verdict"] == "not tested" and table[1]["chapters"] == []
    assert results.claims_summary(rows[:1])[5]["verdict"] == "yes"


def _write(tmp_path, name, data):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("display_data", data={results.MIME: d, "text/plain": ""}) for d in data]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / f"{name}.ipynb")


def test_gather_refuses_malformed_records(tmp_path):
    good = results.payload("demo", [results.quote("q", 0.1, "< 0.2", PASS)], [PASS])
    row = good["rows"][0]
    bad = {
        "schema": ({**good, "schema": 99}, "schema 99"),
        "rows": ({**good, "rows": []}, "non-empty list of rows"),
        "field": ({**good, "rows": [{k: v for k, v in row.items() if k != "paper"}]}, "missing fields \\['paper'\\]"),
        "unknown": ({**good, "rows": [{**row, "colour": "red"}]}, "unknown fields \\['colour'\\]"),
        "word": ({**good, "rows": [{**row, "reproduced": "Yes"}]}, "reproduced must be one of"),
        "nan": ({**good, "rows": [{**row, "ours": math.nan}]}, "must be finite"),
        "verdict": ({**good, "verdict": "no"}, "says 'no' but its checks give 'yes'"),
        "forged": ({**good, "checks": [{**good["checks"][0], "controls": [{**good["checks"][0]["controls"][0],
                                                                           "passed": True}]}]},
                   "says 'yes' but its checks give 'not tested'"),
        "control": ({**good, "checks": [{**good["checks"][0], "controls": [{"name": "D_M"}]}]}, "lacks 'role'"),
    }
    for name, (data, msg) in bad.items():
        folder = tmp_path / name
        folder.mkdir()
        _write(folder, "demo", [data])
        with pytest.raises(ValueError, match=msg):
            results.gather(folder)
    _write(tmp_path, "twice", [good, good])
    with pytest.raises(ValueError, match="2 results records"):
        results.read(tmp_path / "twice.ipynb")
    _write(tmp_path, "other", [good])
    with pytest.raises(ValueError, match="names chapter 'demo' but sits in other.ipynb"):
        results.read(tmp_path / "other.ipynb")
    with pytest.raises(ValueError, match="not a folder"):
        results.gather(tmp_path / "missing")


def _mini_book(tmp_path, chapters):
    """A two-page Sphinx project with myst-nb and the book's extension, built with warnings as errors."""
    src = tmp_path / "src"
    (src / "book").mkdir(parents=True)
    shutil.copytree(ROOT / "book" / "_ext", src / "_ext")
    (src / "conf.py").write_text(
        "import sys, os\nsys.path.insert(0, os.path.abspath('_ext'))\n"
        "extensions = ['myst_nb', 'gaussdiff_book']\nnb_execution_mode = 'off'\nnb_render_markdown_format = 'myst'\n"
        "suppress_warnings = ['mystnb.unknown_mime_type']\nexclude_patterns = ['_build', '_ext']\n")
    toc = "\n".join(f"book/{c}" for c in [*chapters, "status"])
    (src / "index.md").write_text(f"# Index\n\n```{{toctree}}\n{toc}\n```\n")
    for name, path in chapters.items():
        shutil.copy(path, src / "book" / f"{name}.ipynb")
    status = nbformat.v4.new_notebook()
    status.cells = [nbformat.v4.new_markdown_cell("# Status\n\n```{claims-status}\n```\n\n```{checks-status}\n```\n\n"
                                                  "```{paper-vs-ours}\n```")]
    nbformat.write(status, src / "book" / "status.ipynb")
    out = src / "_build" / "html"
    run = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "-n", "-q", str(src), str(out)],
                         capture_output=True, text=True, timeout=300)
    return run, out / "book"


def test_the_book_publishes_the_records_and_gathers_them(tmp_path):
    path = _executed(tmp_path)
    run, html = _mini_book(tmp_path, {"demo": path})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    published = json.loads((html / "demo.results.json").read_text())
    assert published["rows"] == results.read(path)["rows"] and published["page"] == "book/demo.html"
    page = (html / "demo.html").read_text()
    assert 'href="demo.results.json"' in page and "<td><p>0.031 [0.02, 0.045]</p></td>" in page   # a table
    status = (html / "status.html").read_text()
    table = _table(status, "paper-vs-ours")
    assert table.count("<tr") == 1 + len(EXPECTED)
    assert 'href="demo.html"' in table and 'href="demo.results.json"' in table
    for text in ("0.031 [0.02, 0.045]", "7 of 10", "841 epochs", "&lt; 0.05 (claim 4, Fig 2)", "no value given"):
        assert text in table, text
    claims = _table(status, "claims-status")        # one row per claim of the paper; claim 4 tested here
    assert claims.count("<tr") == 1 + 12
    row4 = claims.split("<tr")[5]
    assert ">4<" in row4 and "partly" in row4 and 'href="demo.html"' in row4 and row4.count("<td>") == 7
    checks = _table(status, "checks-status")        # every check, with its controls
    assert checks.count("<tr") == 1 + 2 and "D_M (negative): fails ✓" in checks and "counted" in checks
    assert not (html / "status.results.json").exists()


def _table(page, cls):
    import re

    found = re.search(rf'<table class="{cls}.*?</table>', page, re.S)
    assert found, f"no table {cls}"
    return found.group(0)


def test_a_chapter_added_later_joins_the_table_without_a_clean_build(tmp_path):
    """The Status page is read again when a page is added, although none of the files it was read from changed."""
    run, html = _mini_book(tmp_path, {"demo": _executed(tmp_path)})
    assert run.returncode == 0 and _table((html / "status.html").read_text(), "paper-vs-ours").count("<tr") == 1 + len(EXPECTED)
    src = tmp_path / "src"
    shutil.copy(_executed(tmp_path, "other"), src / "book" / "other.ipynb")
    (src / "index.md").write_text("# Index\n\n```{toctree}\nbook/demo\nbook/other\nbook/status\n```\n")
    run = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "-n", "-q", str(src), str(html.parent)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = (html / "status.html").read_text()
    assert _table(status, "paper-vs-ours").count("<tr") == 1 + 2 * len(EXPECTED) and 'href="other.html"' in status
    assert _table(status, "checks-status").count("<tr") == 1 + 4


def test_a_malformed_record_fails_the_build(tmp_path):
    path = _executed(tmp_path, "demo")
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs[0].data[results.MIME]["rows"][0]["reproduced"] = "sure"
    nbformat.write(nb, path)
    run, _ = _mini_book(tmp_path, {"demo": path})
    assert run.returncode != 0 and "reproduced must be one of" in run.stdout + run.stderr


def test_a_row_s_checks_must_be_a_list_of_claims():
    """A string in place of the list would otherwise become a tuple of its characters."""
    row = {"quantity": "q", "ours": 0.1, "paper": None, "reproduced": "yes", "checks": "claim 3"}
    with pytest.raises(ValueError, match="checks must be a list of the checks' claims, got str"):
        results.Quoted.from_dict(row)
    assert results.Quoted.from_dict({**row, "checks": ["claim 3"]}).checks == ("claim 3",)
