"""Project invariants: pins in sync, notebooks are clean templates, profiles name real parameters."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import gaussdiff_lib as gd

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "gaussdiff_lib" / "chapters"          # profiles, shipped reports
NOTEBOOKS_DIR = ROOT / "notebooks"                       # the chapter templates, the only copy


def _requirements(extras=("book", "test")):
    from packaging.requirements import Requirement

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"]) + [r for e in extras for r in meta["optional-dependencies"][e]]
    out = []
    for r in map(Requirement, reqs):          # an extra that names another of ours ("gaussdiff[diffusers]") brings its
        if r.name == meta["name"]:            # requirements
            out += [x for x in _requirements(tuple(r.extras)) if x not in out and x.name != meta["name"]]
        elif r not in out:
            out.append(r)
    return out


def _constraints() -> dict:
    lines = [ln.strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    return {ln.split("==")[0].lower().replace("_", "-"): ln.split("==")[1] for ln in lines}


def test_library_requirements_are_ranges_and_the_book_pins_each_inside_its_range():
    """A wheel (pip install ., or from git on Colab) must not replace the torch or numpy already installed; the
    book's exact versions are constraints.txt's, and every one of them must satisfy the library's range."""
    pinned = _constraints()
    for req in _requirements():
        assert "==" not in str(req.specifier), f"{req}: the library states ranges; exact pins go in constraints.txt"
        version = pinned.get(req.name.lower().replace("_", "-"))
        assert version is not None, f"constraints.txt pins no {req.name}"
        assert req.specifier.contains(version, prereleases=True), f"constraints.txt's {req.name}=={version} is outside {req}"


def test_environment_files_apply_the_constraints():
    def pip_lines(path):
        env = yaml.safe_load(path.read_text())
        assert "python=3.11" in env["dependencies"]
        return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)

    conda = pip_lines(ROOT / "environment.yml")
    assert "-c constraints.txt" in conda and "-e .[book,test]" in conda
    binder = pip_lines(ROOT / "binder" / "environment.yml")
    assert "-c ../constraints.txt" in binder
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in binder        # Binder gets a CPU torch
    names = {r.name for r in _requirements(extras=("book",))}
    assert names <= set(binder), f"binder/environment.yml lacks {sorted(names - set(binder))}"
    assert os.access(ROOT / "binder" / "postBuild", os.X_OK)


def _parameters(nb):
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets}


NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_a_clean_template(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name} has committed outputs"
    params = _parameters(nb)            # literals only, or literal_eval raises
    assert params["profile"] == "cpu"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_has_a_caption_for_its_alt_text(path):
    """The book's extension gives each figure's image its caption as alt text; a figure cell without a caption
    would publish an image described only by its file name."""
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code" and "plt.show()" in "".join(cell["source"]):
            caption = cell["metadata"].get("mystnb", {}).get("figure", {}).get("caption", "")
            assert len(caption.split()) >= 5, f"{path.name} cell {cell.get('id')}: a figure without a caption"


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_every_profile_sets_what_the_templates_leave_to_it(profile):
    """A template's parameters left at None come from the profile (gd.profiles.fill), so each shipped profile must
    set every one of them: editing `profile` in Jupyter then switches the chapter completely."""
    for path in NOTEBOOKS:
        left = [k for k, v in _parameters(json.loads(path.read_text())).items() if v is None]
        missing = sorted(set(left) - set(gd.profiles.parameters(path.stem, profile)))
        assert not missing, f"profile {profile} sets no {missing} for {path.stem}"
        code = "".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
        if left:
            assert f'gd.profiles.fill("{path.stem}", globals())' in code, f"{path.stem} never fills them"


def test_fill_takes_the_profile_s_values_and_keeps_what_was_set():
    ns = {"profile": "smoke", "large": None, "small": "n512", "n_samples": None, "n_show": None, "n_explore": None,
          "seed": 0, "device": "auto"}
    got = gd.profiles.fill("gaussian_shadow", ns)
    smoke = gd.profiles.parameters("gaussian_shadow", "smoke")
    assert ns["large"] == smoke["large"] and ns["n_samples"] == smoke["n_samples"]
    assert ns["small"] == "n512" and got["small"] == "n512"                 # set by hand: kept
    ns = {"profile": "cpu", "large": None}
    gd.profiles.fill("gaussian_shadow", ns)
    assert ns["large"] == gd.profiles.parameters("gaussian_shadow", "cpu")["large"] != smoke["large"]
    with pytest.raises(ValueError, match="must name a profile"):
        gd.profiles.fill("gaussian_shadow", {"profile": None})
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        gd.profiles.fill("gaussian_shadow", {"profile": "nope"})


def test_import_does_not_pull_in_pyplot_or_the_book_stack():
    code = ("import sys, gaussdiff_lib as gd; bad = [m for m in ('matplotlib.pyplot', 'myst_nb', 'papermill', "
            "'ipywidgets', 'gaussdiff_lib.chapters') if m in sys.modules]; print(bad); "
            "gd.experiments.runs('smoke'); gd.profiles.names(); print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["[]", "False"], out.stdout


def test_no_private_names_cross_modules_and_no_import_cycles():
    """Modules import each other's public names only (shared helpers live in the private modules _checks,
    _unpickling and _version), and the library never imports the book's machinery."""
    lib = ROOT / "gaussdiff_lib"
    for path in sorted(lib.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                for alias in node.names:
                    assert not alias.name.startswith("_") or alias.name.startswith("__"), \
                        f"{path.relative_to(ROOT)} imports {alias.name}"
                if path.parent == lib and path.name not in ("__init__.py", "__main__.py", "experiments.py"):
                    assert not (node.module or "").startswith("chapters"), \
                        f"{path.relative_to(ROOT)}: the library imports the book's machinery"
    assert "from . import __version__" not in (lib / "cache.py").read_text()


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_profiles_set_only_existing_parameters(profile):
    prof = gd.profiles.load(profile)
    stems = {p.stem for p in NOTEBOOKS}
    assert set(prof) <= stems | {"experiments"}
    assert set(prof) >= stems, f"profile {profile} leaves out notebooks {sorted(stems - set(prof))}"
    runs, sweeps = gd.experiments.runs(profile), gd.experiments.sweeps(profile)   # both validate
    for name, params in prof.items():
        if name == "experiments":
            continue
        known = _parameters(json.loads((NOTEBOOKS_DIR / f"{name}.ipynb").read_text()))
        unknown = set(params) - set(known)
        assert not unknown, f"profile {profile} sets unknown parameters of {name}: {sorted(unknown)}"
        cpu = gd.profiles.parameters(name, "cpu")
        for key, value in params.items():
            ref = known[key] if known[key] is not None else cpu[key]     # left to the profile: the book's value
            assert type(value) is type(ref) or isinstance(ref, float) and isinstance(value, int), \
                f"{profile}/{name}: {key} = {value!r} has another type than {ref!r}"
        # run and sweep names, whether set by the profile or left at the template's default, must exist
        for key, value in {**known, **params}.items():
            if key in ("large", "small", "run", "reference"):
                assert value in runs, f"{profile}/{name}: {key} = {value!r} is not a run of the profile"
            if key == "sweep" or key.endswith(("_sweep", "_pair")):
                assert value in sweeps, f"{profile}/{name}: {key} = {value!r} is not a sweep of the profile"


def test_unknown_profile():
    with pytest.raises(ValueError, match=r"unknown profile 'gpu'; choose one of \['cpu', 'paper', 'smoke'\]"):
        gd.profiles.load("gpu")


def test_toc_lists_every_notebook_and_page():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]
    for nb in NOTEBOOKS:
        assert f"book/{nb.stem}" in files, f"{nb.name} is not in _toc.yml"
    for f in files:
        assert (ROOT / f"{f}.md").exists() or (NOTEBOOKS_DIR / f"{Path(f).name}.ipynb").exists(), f


def test_readme_gives_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make book" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_up_to_date_notebooks_are_not_re_executed(tmp_path, monkeypatch):
    import nbformat
    import papermill

    nb = gd.profiles.notebooks()[0]
    params = {**gd.profiles.parameters(nb.stem, "smoke"), "profile": "smoke"}
    experiments = gd.profiles.load("smoke")["experiments"]
    key = gd.chapters.execute.execution_key(nb, params, experiments)
    assert key != gd.chapters.execute.execution_key(nb, {**params, "seed": 1}, experiments)
    assert key != gd.chapters.execute.execution_key(nb, params, {**experiments, "heldout": "elsewhere"})
    done = nbformat.v4.new_notebook(metadata={"gaussdiff": {"execution_key": key}})
    nbformat.write(done, tmp_path / nb.name)
    calls = []

    def fake_execute(source, target, **kwargs):
        calls.append(source)
        nbformat.write(nbformat.v4.new_notebook(), target)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    gd.chapters.execute.execute("smoke", tmp_path, only=[nb.stem])
    assert calls == []                                          # up to date: skipped
    gd.chapters.execute.execute("smoke", tmp_path, only=[nb.stem], force=True)   # forced: papermill is called
    assert len(calls) == 1


def test_parameter_overrides_reach_papermill(tmp_path, monkeypatch):
    import papermill

    assert gd.chapters.execute.parse_overrides(["dataset_size.sweep=halves", "dataset_size.n_show=3"]) == \
        {"dataset_size": {"sweep": "halves", "n_show": 3}}
    with pytest.raises(ValueError, match="NOTEBOOK.PARAMETER=VALUE"):
        gd.chapters.execute.parse_overrides(["sweep=halves"])
    calls = []

    def fake_execute(source, target, **kwargs):
        calls.append(kwargs["parameters"])
        __import__("nbformat").write(__import__("nbformat").v4.new_notebook(), target)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    gd.chapters.execute.execute("smoke", tmp_path, only=["dataset_size"], overrides={"dataset_size": {"n_show": 3}})
    assert calls[0]["n_show"] == 3 and calls[0]["profile"] == "smoke"
    with pytest.raises(ValueError, match="notebooks that do not exist"):
        gd.chapters.execute.execute("smoke", tmp_path, overrides={"nope": {"a": 1}})


# ------------------------------------------------------------------ fault injection: the executor
def _no_papermill(monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a notebook ran"))


@pytest.mark.parametrize("only, names", [(["strong_generalisation"], "strong_generalisation"),
                                         (["dataset_size", "nope.ipynb"], "nope")])
def test_a_mistyped_notebook_name_fails_before_anything_runs(tmp_path, monkeypatch, only, names):
    _no_papermill(monkeypatch)
    with pytest.raises(ValueError, match=f"no notebook named \\['{names}'\\]; the notebooks are .*strong_generalization"):
        gd.chapters.execute.execute("smoke", tmp_path, only=only)


def test_a_mistyped_parameter_fails_before_anything_runs(tmp_path, monkeypatch):
    _no_papermill(monkeypatch)
    with pytest.raises(ValueError, match="--set sets parameters that gaussian_shadow does not have: \\['n_sampels'\\]; "
                                         "its parameters are .*'n_samples'"):
        gd.chapters.execute.execute("smoke", tmp_path, overrides={"gaussian_shadow": {"n_sampels": 8}})


def test_name_with_ipynb_and_the_cli_exit_codes(tmp_path, monkeypatch, capsys):
    import papermill

    ran = []

    def fake_execute(source, target, **kwargs):
        ran.append(Path(source).stem)
        __import__("nbformat").write(__import__("nbformat").v4.new_notebook(), target)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    gd.chapters.execute.execute("smoke", tmp_path, only=["scale.ipynb"])
    assert ran == ["scale"]
    from gaussdiff_lib.__main__ import main

    assert main(["execute", "--profile", "smoke", "--out", str(tmp_path), "--only", "strong_generalisation"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no notebook named") and "\n" not in err and "Traceback" not in err


def test_keep_going_runs_the_rest_and_names_the_failure(tmp_path, monkeypatch):
    import papermill

    ran = []

    def fake_execute(source, target, **kwargs):
        ran.append(Path(source).stem)
        if Path(source).stem == "gaussian_shadow":
            raise RuntimeError("cell 4 failed")
        __import__("nbformat").write(__import__("nbformat").v4.new_notebook(), target)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    three = ["dataset_size", "gaussian_shadow", "scale"]
    with pytest.raises(RuntimeError, match="cell 4 failed"):
        gd.chapters.execute.execute("smoke", tmp_path, only=three)
    assert ran == ["dataset_size", "gaussian_shadow"]           # stopped at the failure
    ran.clear()
    with pytest.raises(RuntimeError, match="1 of 3 notebooks failed: \\['gaussian_shadow'\\]"):
        gd.chapters.execute.execute("smoke", tmp_path, only=three, keep_going=True, force=True)
    assert ran == three


def test_an_interrupted_execution_keeps_the_previous_notebook(tmp_path, monkeypatch):
    import nbformat
    import papermill

    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("the previous good run")])
    nbformat.write(good, tmp_path / "scale.ipynb")

    def killed(source, target, **kwargs):
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("half")]), target)
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", killed)
    with pytest.raises(KeyboardInterrupt):
        gd.chapters.execute.execute("smoke", tmp_path, only=["scale"], force=True)
    assert nbformat.read(tmp_path / "scale.ipynb", as_version=4).cells[0].source == "the previous good run"
    # the partial copy is a hidden file, which the shell's *.ipynb (nbval's argument) and the book leave out
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [".scale.partial.ipynb", "scale.ipynb"]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_snapshot_steps_named_by_notebooks_are_kept(profile):
    """The early-stopping candidates (snapshots every small-halves run keeps) exist, and the training-time run and
    its seed replicates keep the same snapshots (each replicate chooses its own among them)."""
    prof = gd.profiles.load(profile)
    nbs = {p.stem: _parameters(json.loads(p.read_text())) for p in NOTEBOOKS}
    sg = {**nbs["strong_generalization"], **prof.get("strong_generalization", {})}
    halves = [r for h in gd.experiments.halves_design(sg["small_pair"], profile) for r in h]
    assert set.intersection(*(set(r.kept_steps) for r in halves)), profile
    tt = {**nbs["training_time"], **prof.get("training_time", {})}
    run = gd.experiments.run(tt["run"], profile)
    assert len(run.kept_steps) >= 2
    others = gd.experiments.replicates([run.name], tt["seeds"], profile)[run.name]
    assert others and all(o.kept_steps == run.kept_steps for o in others), (profile, [o.name for o in others])


def test_execution_key_follows_the_files_a_notebook_depends_on(tmp_path, monkeypatch):
    shutil.copytree(NOTEBOOKS_DIR, tmp_path / "notebooks")
    shutil.copytree(TEMPLATES / "profiles", tmp_path / "profiles")
    (tmp_path / "reports").mkdir(parents=True)
    report = tmp_path / "reports" / "a.json"
    report.write_text("{}")
    monkeypatch.setenv("GAUSSDIFF_ROOT", str(tmp_path))
    scale, other = tmp_path / "notebooks" / "scale.ipynb", tmp_path / "notebooks" / "gaussian_shadow.ipynb"
    before = [gd.chapters.execute.execution_key(nb, {"profile": "cpu"}) for nb in (scale, other)]
    report.write_text('{"device": "another card"}')
    after = [gd.chapters.execute.execution_key(nb, {"profile": "cpu"}) for nb in (scale, other)]
    assert before[0] != after[0] and before[1] == after[1]


def test_workflows_follow_the_makefile():
    book = yaml.safe_load((ROOT / ".github" / "workflows" / "book.yml").read_text())
    steps = [s.get("run", "") for s in book["jobs"]["build"]["steps"]]
    assert any("make book" in s for s in steps)
    assert any(s.get("with", {}).get("path") == ".cache/gaussdiff" for s in book["jobs"]["build"]["steps"])
    assert any(s.get("with", {}).get("path") == "_build/html" for s in book["jobs"]["build"]["steps"])
    tests = yaml.safe_load((ROOT / ".github" / "workflows" / "tests.yml").read_text())
    assert "pull_request" in tests[True]                   # YAML reads the key `on` as True
    assert any(s.get("run") == ".ci/run" for s in tests["jobs"]["test"]["steps"])


@pytest.mark.parametrize("argv, msg", [
    (["train", "--profile", "nope"], "error: unknown profile 'nope'; choose one of"),
    (["train", "--profile", "smoke", "--runs", "n999"], "error: profile 'smoke' has no runs ['n999']"),
    (["train", "--profile", "smoke", "--sweep", "nosuch"], "error: "),
    (["execute", "--profile", "nope"], "error: unknown profile 'nope'"),
    (["execute", "--set", "scale.n_sampels=8"], "error: "),
    (["execute", "--profile", "smoke", "--timeout", "0"], "error: timeout is the most seconds one cell may run"),
])
def test_cli_mistakes_are_one_line_and_exit_2(argv, msg, tmp_path):
    """Issue 13, item 10: every command's mistakes end in one line on stderr and exit status 2, no traceback."""
    env = {**os.environ, "GAUSSDIFF_CACHE": str(tmp_path / "cache"), "GAUSSDIFF_OFFLINE": "1",
           "GAUSSDIFF_DATA": str(tmp_path / "none"), "PYTHONPATH": str(ROOT)}
    env.pop("GAUSSDIFF_TRACEBACK", None)
    out = subprocess.run([sys.executable, "-m", "gaussdiff_lib", *argv], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    err = out.stderr.strip()
    assert out.returncode == 2, (out.returncode, err)
    assert err.startswith(msg) and "\n" not in err and "Traceback" not in err, err


def test_glue_without_myst_nb_prints_what_the_prose_would_quote(monkeypatch, capsys):
    """On Colab the book stack is missing: a chapter still runs, and shows each value where it is computed."""
    monkeypatch.setitem(sys.modules, "myst_nb", None)          # import myst_nb now raises ImportError
    assert gd.chapters.glue("rmse_large", "0.123", display=False) is None
    assert capsys.readouterr().out.strip() == "rmse_large = 0.123"


def test_a_template_switched_by_its_profile_parameter_alone_runs(tmp_path):
    """papermill -p profile smoke (or editing `profile` in Jupyter) used to fail: the other defaults were the cpu
    profile's run names. Now the parameters left at None follow the profile."""
    import papermill

    out = tmp_path / "training_time.ipynb"
    papermill.execute_notebook(str(NOTEBOOKS_DIR / "training_time.ipynb"), str(out),
                               parameters={"profile": "smoke"}, kernel_name="python3", progress_bar=False,
                               cwd=str(tmp_path))
    nb = json.loads(out.read_text())
    text = "".join("".join(o["text"]) for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")
    assert gd.profiles.parameters("training_time", "smoke")["run"] in text


def test_one_repository_address_feeds_the_launch_buttons_and_every_install_cell():
    """Issue 27, item 6: the address in _config.yml (repository.url) is the one the Colab/Binder install cell of
    every chapter template installs from, and the one Thebe's settings name; the cell shows pip's own error first."""
    import json

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    url = config["repository"]["url"]
    assert config["sphinx"]["config"]["thebe_config"]["repository_url"] == url
    templates = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    assert len(templates) == len(gd.profiles.notebooks()) > 0
    for path in templates:
        cells = ["".join(c["source"]) for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        install = [c for c in cells if "pip" in c and "install" in c]
        assert len(install) == 1, path.name
        assert f'REPOSITORY = "{url}"' in install[0], f"{path.name} installs from another address than {url}"
        assert "pip.stderr" in install[0] and "raise SystemExit" in install[0], path.name


def test_the_top_level_is_the_promised_layout():
    """Issue 27, item 1: the top level holds book/, notebooks/ (the chapter templates, the only copy: a folder, not a
    link, and no second copy inside the package), gaussdiff_lib/, environment.yml, tests/ and _config.yml; a source
    checkout reads its templates from notebooks/; pyproject's package list names every package of the source and maps
    notebooks/ into the wheel."""
    for name in ("book", "notebooks", "gaussdiff_lib", "tests"):
        assert (ROOT / name).is_dir() and not (ROOT / name).is_symlink(), name
    for name in ("environment.yml", "_config.yml", "_toc.yml"):
        assert (ROOT / name).is_file(), name
    assert not (TEMPLATES / "notebooks").exists()
    assert gd.profiles.templates() == NOTEBOOKS_DIR.resolve()
    assert [p.stem for p in gd.profiles.notebooks()] == sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "gaussdiff_lib").rglob("__init__.py"))
    assert sorted(setup["packages"]) == sorted([*packages, "gaussdiff_lib.chapters.notebooks"])
    assert setup["package-dir"] == {"gaussdiff_lib.chapters.notebooks": "notebooks"}
    assert setup["package-data"]["gaussdiff_lib.chapters.notebooks"] == ["*.ipynb", "tools/*.ipynb"]


_TYPED_TIME = re.compile(r"(?<![\w.{`$])(?:\d+(?:[.,]\d+)?\s*(?:seconds?|secs?|minutes?|mins?|hours?|hrs?|s|min|h)"
                         r"|(?:a|an|one)\s+(?:minute|hour)|(?:two|few|several|a few)\s+(?:seconds|minutes|hours))"
                         r"(?![\w-])", re.I)


def test_no_typed_times_in_the_book_readme_profiles_or_cli():
    """Issue 27, item 4: statements of time come from measurement (the build's time record, the scale chapter's
    computed GPU-hours, the README example's benchmark record), never typed. This scans the prose that a reader takes
    as fact: the book's pages, the chapter templates' markdown, README (apart from the paragraph rendered from the
    benchmark record, which tests/test_readme.py ties to its record), CONTRIBUTING, the profiles and the CLI's help.
    The pattern itself is checked on typed times it must catch and ordinals it must not."""
    for typed in ("about a minute", "takes 40 s", "in 2 hours", "1.5 h", "90 min", "a few minutes"):
        assert _TYPED_TIME.search(typed), typed
    for fine in ("a second seed", "as", "{glue:text}`hours_128` hours", "8 hidden", "2 CPU cores"):
        assert not _TYPED_TIME.search(fine), fine
    texts = {p.name: p.read_text() for p in [ROOT / "CONTRIBUTING.md", *sorted((ROOT / "book").glob("*.md")),
                                            *sorted(TEMPLATES.glob("profiles/*.yml"))]}
    readme = (ROOT / "README.md").read_text()
    begin, end = readme.index("<!-- readme-example-cost:"), readme.index("<!-- /readme-example-cost -->")
    texts["README.md"] = readme[:begin] + readme[end:]
    for path in NOTEBOOKS_DIR.glob("*.ipynb"):
        texts[path.name] = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"]
                                     if c["cell_type"] == "markdown")
    helps = [[]] + [[c] for c in ("list", "execute", "train", "new", "timings", "data", "assets")]
    texts["gaussdiff --help"] = "\n".join(
        subprocess.run([sys.executable, "-m", "gaussdiff_lib", *c, "--help"], capture_output=True, text=True,
                       cwd=ROOT).stdout for c in helps)
    found = [(name, m.group(0), line.strip()[:120]) for name, text in texts.items() for line in text.splitlines()
             for m in _TYPED_TIME.finditer(line)]
    assert not found, found
