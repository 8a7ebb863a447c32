import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "_build" / "smoke" / "src"


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory):
    """Tests never download, and write their cache entries into a temporary folder."""
    os.environ["GAUSSDIFF_OFFLINE"] = "1"
    os.environ["GAUSSDIFF_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


def devices():
    """CPU always; CUDA too when present (the same oracle tests run on both)."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture
def rng():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def smoke_book():
    """The book under the smoke profile: every notebook executed by papermill into _build/smoke/src/book, then
    built by Jupyter Book with warnings as errors (the executed notebooks stay there for nbval, the HTML for
    the browser test). Returns (executed notebooks, the build's CompletedProcess)."""
    import gaussdiff_lib as gd
    from gaussdiff_lib.chapters import assets as book_assets

    if SRC.exists():
        shutil.rmtree(SRC)
    (SRC / "book").mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, SRC / name)
    for page in [*(ROOT / "book").glob("*.md"), *(ROOT / "book").glob("*.bib")]:
        shutil.copy(page, SRC / "book" / page.name)
    for folder in (ROOT / "book").glob("_*"):      # the book's extension, scripts and static files
        if folder.is_dir():
            shutil.copytree(folder, SRC / "book" / folder.name)
    (SRC / ".assets").symlink_to(book_assets.fetch(quiet=True).parent, target_is_directory=True)
    # two notebooks at a time, as make book runs them on a CPU, with the time record the Status page shows
    executed = gd.chapters.execute.execute("smoke", SRC / "book", jobs=2, timings=SRC / "_build" / "timings.json")
    jb = Path(sys.executable).parent / "jupyter-book"
    build = subprocess.run([str(jb), "build", str(SRC), "--warningiserror", "--nitpick", "--keep-going"],
                           capture_output=True, text=True, timeout=900)
    return executed, build
