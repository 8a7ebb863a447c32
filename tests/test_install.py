"""The library installed from a wheel, used from a folder that is not the repository: the chapter templates,
profiles and measured reports ship as package data, and the executor runs a chapter with them."""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, unpacked as pip would install a pure-Python wheel."""
    dist = tmp_path_factory.mktemp("dist")
    source = tmp_path_factory.mktemp("source") / "gaussdiff"      # built from a copy: no build/ left in the checkout
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "_build", ".cache", ".assets", "build",
                                                                "*.egg-info", "__pycache__", "book"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                            "--wheel-dir", str(dist), str(source)], capture_output=True, text=True, timeout=600)
    if built.returncode != 0 and "No module named pip" in built.stderr:
        pytest.skip("this interpreter has no pip to build the wheel with")
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(dist.glob("gaussdiff-*.whl"))
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(site)
    return wheel, names, site


def _run(site, cwd, *args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(site), "GAUSSDIFF_PROGRESS": "0"}
    env.pop("GAUSSDIFF_ROOT", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_wheel_ships_templates_profiles_and_reports(installed):
    wheel, names, _ = installed
    for profile in ("smoke", "cpu", "paper"):
        assert f"gaussdiff_lib/chapters/profiles/{profile}.yml" in names
    templates = {n for n in names if n.startswith("gaussdiff_lib/chapters/notebooks/") and n.endswith(".ipynb")
                 and n.count("/") == 3}
    assert {Path(n).stem for n in templates} == {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert "gaussdiff_lib/chapters/notebooks/tools/diagnose.ipynb" in names        # the report template
    assert "gaussdiff_lib/chapters/reports/paper_throughput_h200.json" in names
    # the pinned stack ships too (issue 27, item 6), the same bytes as the checkout's constraints.txt
    with zipfile.ZipFile(wheel) as z:
        assert z.read("gaussdiff_lib/constraints.txt") == (ROOT / "constraints.txt").read_bytes()
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    with zipfile.ZipFile(wheel) as z:
        requires = [ln for ln in z.read(meta).decode().splitlines() if ln.startswith("Requires-Dist: torch")]
    assert requires and "==" not in requires[0], requires       # a range: Colab's torch stays


def test_an_installed_library_runs_a_chapter_from_any_folder(installed, tmp_path):
    _, _, site = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run(site, work, "-c", "import gaussdiff_lib as gd; print(gd.__file__); print(gd.profiles.names())")
    assert where.returncode == 0, where.stderr
    path, names = where.stdout.splitlines()[:2]
    assert Path(path).is_relative_to(site) and names == "['cpu', 'paper', 'smoke']", where.stdout
    listed = _run(site, work, "-m", "gaussdiff_lib", "list", "--profile", "smoke")
    assert listed.returncode == 0 and "scale: target='paper'" in listed.stdout, listed.stderr
    done = _run(site, work, "-m", "gaussdiff_lib", "execute", "--profile", "smoke", "--only", "scale", "--out",
                "chapters")
    assert done.returncode == 0, done.stderr[-3000:]
    executed = json.loads((work / "chapters" / "scale.ipynb").read_text())
    assert executed["metadata"]["gaussdiff"]["profile"] == "smoke"
    errors = [o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    version = _run(site, work, "-m", "gaussdiff_lib", "--version")
    assert version.stdout.strip().startswith("gaussdiff ")


def test_an_installed_library_names_its_pinned_stack(installed, tmp_path):
    """Issue 27, item 6: a wheel user can apply the book's pins (pip install -c PATH "gaussdiff[book]")."""
    _, _, site = installed
    shown = _run(site, tmp_path, "-c", "import gaussdiff_lib as gd, pathlib; p = pathlib.Path(gd.constraints()); "
                                       "print(p.is_file(), 'torch==' in p.read_text())")
    assert shown.returncode == 0 and shown.stdout.split() == ["True", "True"], shown.stderr


def test_an_installed_library_copies_a_chapter_and_runs_the_copy(installed, tmp_path):
    """Issue 27's acceptance, from the wheel outside the repository: `gaussdiff new CHAPTER FOLDER`, then the printed
    command executes the copy under the smoke profile and prints where the executed notebook went. The templates
    come from the package data the build mapped from the repository's notebooks/."""
    _, _, site = installed
    where = _run(site, tmp_path, "-c", "import gaussdiff_lib as gd; print(gd.profiles.templates())")
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(site), (where.stdout, where.stderr)
    made = _run(site, tmp_path, "-m", "gaussdiff_lib", "new", "gaussian_shadow", "mine")
    assert made.returncode == 0, made.stderr
    copy = tmp_path / "mine" / "notebooks" / "gaussian_shadow.ipynb"
    assert copy.read_bytes() == (ROOT / "notebooks" / "gaussian_shadow.ipynb").read_bytes()
    command = next(ln.strip() for ln in made.stdout.splitlines() if "--profile smoke" in ln)
    assert command.startswith(f"GAUSSDIFF_ROOT={(tmp_path / 'mine').resolve()} gaussdiff execute"), made.stdout
    env = {**os.environ, "PYTHONPATH": str(site), "GAUSSDIFF_PROGRESS": "0",
           "GAUSSDIFF_ROOT": str(tmp_path / "mine")}
    out = tmp_path / "mine" / "out"
    done = subprocess.run([sys.executable, "-m", "gaussdiff_lib", "execute", "--only", "gaussian_shadow",
                           "--profile", "smoke", "--out", str(out)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    executed = out / "gaussian_shadow.ipynb"
    assert str(executed) in done.stdout + done.stderr
    nb = json.loads(executed.read_text())
    assert nb["metadata"]["gaussdiff"]["profile"] == "smoke"
    assert not [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                if o.get("output_type") == "error"]
