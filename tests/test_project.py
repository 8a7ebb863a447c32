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


def _pyproject_pins():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra, items in meta["optional-dependencies"].items():
        reqs += [r for r in items if not r.startswith("gaussdiff")]
    return reqs


def test_every_dependency_is_pinned_exactly():
    for req in _pyproject_pins():
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[\w.]+", req), f"{req} is not pinned with =="


def test_environment_yml_mirrors_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(p for p in pip if not p.startswith("-e")) == sorted(_pyproject_pins())
    assert "python=3.11" in env["dependencies"]


def test_constraints_agree_with_pins():
    lines = [ln.strip() for ln in (ROOT / "constraints.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    pinned = {ln.split("==")[0].lower().replace("_", "-"): ln.split("==")[1] for ln in lines}
    for req in _pyproject_pins():
        name, version = req.split("==")
        assert pinned.get(name.lower().replace("_", "-")) == version, f"constraints.txt disagrees on {req}"


def _parameters(nb):
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets}


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_a_clean_template(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name} has committed outputs"
    params = _parameters(nb)            # literals only, or literal_eval raises
    assert params["profile"] == "cpu"


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
        known = _parameters(json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text()))
        unknown = set(params) - set(known)
        assert not unknown, f"profile {profile} sets unknown parameters of {name}: {sorted(unknown)}"
        for key, value in params.items():
            assert type(value) is type(known[key]) or isinstance(known[key], float) and isinstance(value, int), \
                f"{profile}/{name}: {key} = {value!r} has another type than the default {known[key]!r}"
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
        assert (ROOT / f"{f}.md").exists() or (ROOT / "notebooks" / f"{Path(f).name}.ipynb").exists(), f


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
    key = gd.profiles.execution_key(nb, params, experiments)
    assert key != gd.profiles.execution_key(nb, {**params, "seed": 1}, experiments)
    assert key != gd.profiles.execution_key(nb, params, {**experiments, "heldout": "elsewhere"})
    done = nbformat.v4.new_notebook(metadata={"gaussdiff": {"execution_key": key}})
    nbformat.write(done, tmp_path / nb.name)
    calls = []

    def fake_execute(source, target, **kwargs):
        calls.append(source)
        nbformat.write(nbformat.v4.new_notebook(), target)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    gd.profiles.execute("smoke", tmp_path, only=[nb.stem])
    assert calls == []                                          # up to date: skipped
    gd.profiles.execute("smoke", tmp_path, only=[nb.stem], force=True)   # forced: papermill is called
    assert len(calls) == 1


def test_parameter_overrides_reach_papermill(tmp_path, monkeypatch):
    import papermill

    assert gd.profiles.parse_overrides(["dataset_size.sweep=halves", "dataset_size.n_show=3"]) == \
        {"dataset_size": {"sweep": "halves", "n_show": 3}}
    with pytest.raises(ValueError, match="NOTEBOOK.PARAMETER=VALUE"):
        gd.profiles.parse_overrides(["sweep=halves"])
    calls = []

    def fake_execute(source, target, **kwargs):
        calls.append(kwargs["parameters"])
        __import__("nbformat").write(__import__("nbformat").v4.new_notebook(), target)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    gd.profiles.execute("smoke", tmp_path, only=["dataset_size"], overrides={"dataset_size": {"n_show": 3}})
    assert calls[0]["n_show"] == 3 and calls[0]["profile"] == "smoke"
    with pytest.raises(ValueError, match="notebooks that do not exist"):
        gd.profiles.execute("smoke", tmp_path, overrides={"nope": {"a": 1}})


# ------------------------------------------------------------------ fault injection: the executor
def _no_papermill(monkeypatch):
    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: pytest.fail("a notebook ran"))


@pytest.mark.parametrize("only, names", [(["strong_generalisation"], "strong_generalisation"),
                                         (["dataset_size", "nope.ipynb"], "nope")])
def test_a_mistyped_notebook_name_fails_before_anything_runs(tmp_path, monkeypatch, only, names):
    _no_papermill(monkeypatch)
    with pytest.raises(ValueError, match=f"no notebook named \\['{names}'\\]; the notebooks are .*strong_generalization"):
        gd.profiles.execute("smoke", tmp_path, only=only)


def test_a_mistyped_parameter_fails_before_anything_runs(tmp_path, monkeypatch):
    _no_papermill(monkeypatch)
    with pytest.raises(ValueError, match="--set sets parameters that gaussian_shadow does not have: \\['n_sampels'\\]; "
                                         "its parameters are .*'n_samples'"):
        gd.profiles.execute("smoke", tmp_path, overrides={"gaussian_shadow": {"n_sampels": 8}})


def test_name_with_ipynb_and_the_cli_exit_codes(tmp_path, monkeypatch, capsys):
    import papermill

    ran = []

    def fake_execute(source, target, **kwargs):
        ran.append(Path(source).stem)
        __import__("nbformat").write(__import__("nbformat").v4.new_notebook(), target)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    gd.profiles.execute("smoke", tmp_path, only=["scale.ipynb"])
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
        gd.profiles.execute("smoke", tmp_path, only=three)
    assert ran == ["dataset_size", "gaussian_shadow"]           # stopped at the failure
    ran.clear()
    with pytest.raises(RuntimeError, match="1 of 3 notebooks failed: \\['gaussian_shadow'\\]"):
        gd.profiles.execute("smoke", tmp_path, only=three, keep_going=True, force=True)
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
        gd.profiles.execute("smoke", tmp_path, only=["scale"], force=True)
    assert nbformat.read(tmp_path / "scale.ipynb", as_version=4).cells[0].source == "the previous good run"
    # the partial copy is a hidden file, which the shell's *.ipynb (nbval's argument) and the book leave out
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [".scale.partial.ipynb", "scale.ipynb"]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_snapshot_steps_named_by_notebooks_are_kept(profile):
    """The early-stopped pair and the training-time run need snapshots the profile actually keeps."""
    prof = gd.profiles.load(profile)
    nbs = {p.stem: _parameters(json.loads(p.read_text())) for p in NOTEBOOKS}
    sg = {**nbs["strong_generalization"], **prof.get("strong_generalization", {})}
    for name in gd.experiments.sweep(sg["small_pair"], profile):
        assert sg["early_step"] in gd.experiments.run(name, profile).kept_steps, (profile, name)
    tt = {**nbs["training_time"], **prof.get("training_time", {})}
    assert len(gd.experiments.run(tt["run"], profile).kept_steps) >= 2


def test_execution_key_follows_the_files_a_notebook_depends_on(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    report = tmp_path / "benchmarks" / "results" / "a.json"
    report.write_text("{}")
    monkeypatch.setenv("GAUSSDIFF_ROOT", str(tmp_path))
    scale, other = tmp_path / "notebooks" / "scale.ipynb", tmp_path / "notebooks" / "gaussian_shadow.ipynb"
    before = [gd.profiles.execution_key(nb, {"profile": "cpu"}) for nb in (scale, other)]
    report.write_text('{"device": "another card"}')
    after = [gd.profiles.execution_key(nb, {"profile": "cpu"}) for nb in (scale, other)]
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
