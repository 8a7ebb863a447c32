"""The command line guides a newcomer (issue 27, item 3): usage with examples instead of a whole-book build, help
with defaults and examples, one-line errors, Ctrl-C in one line, a cheap --version, and `gaussdiff new`."""
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import gaussdiff_lib as gd
from gaussdiff_lib import __main__ as cli
from gaussdiff_lib.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["list", "data", "assets", "execute", "timings", "train", "new"]


def _cli(*argv, env=None, cwd=None):
    return _python("-m", "gaussdiff_lib", *argv, env=env, cwd=cwd)


def _python(*argv, env=None, cwd=None):
    """This interpreter on the checkout's library, in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    env.pop("GAUSSDIFF_TRACEBACK", None)
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture
def papermill_calls(monkeypatch):
    """papermill replaced by a stub that writes an empty notebook: the notebooks it was asked to run."""
    import nbformat
    import papermill

    calls = []

    def fake(source, target, **kwargs):
        calls.append((Path(source), Path(target)))
        nbformat.write(nbformat.v4.new_notebook(), target)

    monkeypatch.setattr(papermill, "execute_notebook", fake)
    return calls


def test_no_command_prints_where_to_start_and_exits_2(tmp_path):
    out = _cli(cwd=tmp_path)
    assert out.returncode == 2, out
    assert "usage: gaussdiff" in out.stderr and "start here:" in out.stderr
    assert "gaussdiff execute --only" in out.stderr and "gaussdiff new" in out.stderr
    assert "Traceback" not in out.stderr


def test_execute_with_nothing_chosen_shows_examples_and_runs_nothing(papermill_calls, tmp_path, capsys):
    assert main(["execute", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert papermill_calls == [] and not list(tmp_path.glob("*.ipynb"))
    assert "usage: gaussdiff execute" in captured.err and "examples:" in captured.err
    assert "--all" in captured.err.splitlines()[-1] and "--only" in captured.err.splitlines()[-1]


def test_execute_at_the_process_level_exits_2_without_executing(tmp_path):
    out = _cli("execute", "--out", str(tmp_path / "book"), cwd=tmp_path)
    assert out.returncode == 2 and "examples:" in out.stderr, out
    assert not (tmp_path / "book").exists()


def test_execute_all_with_only_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["execute", "--all", "--only", "scale"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --all") and "\n" not in err


def test_a_mistake_in_set_is_named_before_the_usage(capsys):
    assert main(["execute", "--set", "scale.n_sampels=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --set sets parameters that scale does not have") and "\n" not in err


def test_execute_names_each_notebook_by_its_absolute_path(papermill_calls, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["execute", "--only", "scale", "--profile", "smoke", "--out", "out"]) == 0
    out = capsys.readouterr().out
    target = (tmp_path / "out" / "scale.ipynb").resolve()
    assert re.search(rf"done in \d+ s: {re.escape(str(target))}\n", out) and target.exists()
    assert main(["execute", "--only", "scale", "--profile", "smoke", "--out", "out"]) == 0
    assert f"is up to date: {target}" in capsys.readouterr().out


def test_a_prose_change_re_executes_only_the_chapter_it_touches(papermill_calls, tmp_path, monkeypatch, capsys):
    """Issue 26, item 4: a rebuild with nothing changed executes nothing, and a sentence changed in one chapter's
    template re-executes that chapter alone (its key holds the template; the others' keys do not)."""
    import json
    import shutil

    project = tmp_path / "project"
    shutil.copytree(ROOT / "notebooks", project / "notebooks")
    shutil.copytree(ROOT / "gaussdiff_lib" / "chapters" / "profiles", project / "profiles")
    monkeypatch.setenv("GAUSSDIFF_ROOT", str(project))
    out = str(tmp_path / "book")
    assert main(["execute", "--all", "--profile", "smoke", "--out", out]) == 0
    assert len(papermill_calls) == len(gd.profiles.notebooks())
    papermill_calls.clear()
    assert main(["execute", "--all", "--profile", "smoke", "--out", out]) == 0
    assert papermill_calls == []
    template = project / "notebooks" / "dataset_size.ipynb"
    nb = json.loads(template.read_text())
    prose = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    prose["source"] = [*prose["source"], "\n\nA sentence added to the prose."]
    template.write_text(json.dumps(nb, indent=1))
    capsys.readouterr()
    assert main(["execute", "--all", "--profile", "smoke", "--out", out]) == 0
    assert [s.name for s, _ in papermill_calls] == ["dataset_size.ipynb"]
    assert capsys.readouterr().out.count("is up to date") == len(gd.profiles.notebooks()) - 1


def test_a_profile_alone_still_runs_every_chapter_and_says_so(papermill_calls, tmp_path, capsys):
    """The chosen rule: no chapter and no profile shows the usage; an explicit --profile (what `make notebooks`
    runs) keeps meaning every chapter, with a note that --all says so explicitly."""
    assert main(["execute", "--profile", "smoke", "--out", str(tmp_path)]) == 0
    assert sorted(s.stem for s, _ in papermill_calls) == sorted(p.stem for p in gd.profiles.notebooks())
    assert "running every chapter under profile smoke (--all says so explicitly)" in capsys.readouterr().out
    papermill_calls.clear()
    assert main(["execute", "--all", "--profile", "smoke", "--out", str(tmp_path), "--force"]) == 0
    assert len(papermill_calls) == len(gd.profiles.notebooks())


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_shows_the_program_defaults_and_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: gaussdiff {command}")
    assert "default" in text and "examples:" in text and f"  gaussdiff {command}" in text
    assert "python -m gaussdiff_lib" not in text


def test_the_main_help_lists_each_command_with_a_line(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert f"\n    {command} " in text, command


def test_a_command_line_mistake_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["execute", "--bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unrecognized arguments: --bogus") and "gaussdiff execute --help" in err
    assert "\n" not in err


def test_an_error_of_several_lines_is_printed_as_one(monkeypatch, capsys):
    monkeypatch.setattr(gd.data, "find_fashion_mnist", lambda split: (_ for _ in ()).throw(
        FileNotFoundError("not found; looked in:\n  /a\n  /b\nand downloads are off")))
    assert main(["data"]) == 2
    assert capsys.readouterr().err == "error: not found; looked in: /a /b and downloads are off\n"
    monkeypatch.setenv("GAUSSDIFF_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError):
        main(["data"])


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    def interrupted(profile):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_list", interrupted)
    assert main(["list"]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted") and err.count("\n") == 1


def test_an_interrupted_execute_leaves_the_previous_notebook_in_place(monkeypatch, tmp_path, capsys):
    import papermill

    given = []

    def interrupted(source, target, **kwargs):
        given.append(Path(target))
        Path(target).write_text('{"partial": ')            # papermill had written part of the notebook
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    previous = tmp_path / "scale.ipynb"
    previous.write_text("the previous good copy")
    assert main(["execute", "--only", "scale", "--profile", "smoke", "--out", str(tmp_path), "--force"]) == 130
    assert previous.read_text() == "the previous good copy"
    assert given and given[0].parent == tmp_path and given[0] != previous
    err = capsys.readouterr().err
    assert err == "interrupted; files already written are kept, notebooks being executed were not replaced\n"


def test_version_and_import_do_not_import_torch(tmp_path):
    code = ("import sys, gaussdiff_lib as gd, gaussdiff_lib.__main__ as m\n"
            "try:\n    m.main(['--version'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print('torch' in sys.modules, 'denoisers' in dir(gd), 'gaussdiff_lib.denoisers' in sys.modules)")
    out = _python("-c", code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["gaussdiff", gd.__version__, "False", "True", "False"], out.stdout
    version = _cli("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"gaussdiff {gd.__version__}"


def test_the_library_modules_are_imported_on_first_use(tmp_path):
    code = ("import sys, gaussdiff_lib as gd; print('torch' in sys.modules); gd.denoisers; "
            "from gaussdiff_lib import metrics; print('torch' in sys.modules, gd.metrics is metrics, "
            "sorted(set(gd.__all__) - set(dir(gd))))")
    out = _python("-c", code, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["False", "True True []"], out.stdout


def test_new_copies_a_chapter_that_then_runs_from_its_folder(papermill_calls, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "mywork"
    assert main(["new", "gaussian_shadow", str(folder), "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert (folder / "notebooks" / "gaussian_shadow.ipynb").read_bytes() == \
        (gd.profiles.templates() / "gaussian_shadow.ipynb").read_bytes()
    names = gd.profiles.names()
    assert sorted(p.stem for p in (folder / "profiles").glob("*.yml")) == names
    for name in names:
        original = gd.profiles.load(name)
        monkeypatch.setenv("GAUSSDIFF_ROOT", str(folder))
        copy = gd.profiles.load(name)
        monkeypatch.delenv("GAUSSDIFF_ROOT")
        assert copy == {k: original[k] for k in ("experiments", "gaussian_shadow")}
    assert f"GAUSSDIFF_ROOT={folder.resolve()} gaussdiff execute --only gaussian_shadow --profile smoke" in out
    # the printed command runs the copy
    monkeypatch.setenv("GAUSSDIFF_ROOT", str(folder))
    assert main(["execute", "--only", "gaussian_shadow", "--profile", "smoke", "--out", str(folder / "out")]) == 0
    assert papermill_calls[0][0] == folder / "notebooks" / "gaussian_shadow.ipynb"
    assert (folder / "out" / "gaussian_shadow.ipynb").exists()


def test_new_copies_the_files_a_chapter_reads(papermill_calls, tmp_path, capsys, monkeypatch):
    """The scale chapter reads the measured reports and plans every chapter's runs from the whole paper profile:
    its copy holds the reports, the whole profiles and every template, and runs from its folder."""
    root = gd.profiles.root()
    assert main(["new", "scale.ipynb", str(tmp_path)]) == 0
    assert sorted(p.name for p in (tmp_path / "reports").glob("*.json")) == \
        sorted(p.name for p in (root / "reports").glob("*.json"))
    assert sorted(p.name for p in (tmp_path / "notebooks").glob("*.ipynb")) == \
        sorted(p.name for p in gd.profiles.templates().glob("*.ipynb"))
    assert (tmp_path / "profiles" / "paper.yml").read_text() == (root / "profiles" / "paper.yml").read_text()
    monkeypatch.setenv("GAUSSDIFF_ROOT", str(tmp_path))
    assert main(["execute", "--only", "scale", "--profile", "smoke", "--out", str(tmp_path / "out")]) == 0
    assert [source for source, _ in papermill_calls] == [tmp_path / "notebooks" / "scale.ipynb"]


def test_new_refuses_to_overwrite_and_names_the_chapters(tmp_path, capsys):
    assert main(["new", "gaussian_shadow", str(tmp_path)]) == 0
    edited = tmp_path / "notebooks" / "gaussian_shadow.ipynb"
    edited.write_text("my edits")
    capsys.readouterr()
    assert main(["new", "gaussian_shadow", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "--force" in err and "\n" not in err
    assert edited.read_text() == "my edits"
    assert main(["new", "gaussian_shadow", str(tmp_path), "--force"]) == 0
    assert edited.read_text() != "my edits"
    capsys.readouterr()
    assert main(["new", "gaussian_shadw", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no chapter named 'gaussian_shadw'") and "gaussian_shadow" in err and "\n" not in err
    assert not (tmp_path / "other").exists()


def test_train_progress_counts_runs_and_estimates_from_their_costs(capsys):
    def run(steps, channels):
        return SimpleNamespace(checkpoint=None, arch="unet", channels=channels, steps=steps, batch_size=64,
                               resolution=16, n=64)

    table = {"big": run(2000, 16), "small": run(1000, 16), "cached": run(1000, 16)}
    progress = cli._Progress(table, ["big", "small", "cached"], jobs=1)
    progress.start("big")
    assert "[0/3] now: big (2000 steps of 64)" in capsys.readouterr().out
    assert progress.eta() == "unknown until a run has trained"
    progress.finished({"name": "big", "seconds": 100.0, "trained": True, "converged": True, "steps": 2000})
    line = capsys.readouterr().out
    assert line.startswith("[1/3] big: 100 s (trained, 2000 steps), converged;") and "elapsed" in line
    assert "ETA about 1 min 40 s" in line                  # two more runs of half its cost
    progress.finished({"name": "cached", "seconds": 0.1, "trained": False, "converged": False, "steps": 1000})
    line = capsys.readouterr().out
    assert "[2/3] cached: 0 s (cached)" in line and "NOT converged" in line and "ETA about 50 s" in line
