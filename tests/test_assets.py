"""The offline book's pinned assets: verified against their sha512 before use, unpacked to the configured paths."""
import io
import shutil
import tarfile

import pytest
import yaml

from gaussdiff_lib.chapters import assets as book_assets
from conftest import ROOT


def _tarball(path, files):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_verified_tarballs_are_unpacked_once(tmp_path, monkeypatch):
    npm = tmp_path / "assets" / "npm"
    npm.mkdir(parents=True)
    tgz = _tarball(npm / "mathjax-9.9.9.tgz", {"package/es5/tex.js": b"tex", "package/es5/tex.js.map": b"map",
                                                "package/es5/output/font.woff": b"font", "package/README.md": b"r"})
    pkg = {"spec": "mathjax@9.9.9", "url": "https://registry.invalid/mathjax/-/mathjax-9.9.9.tgz",
           "integrity": book_assets._integrity(tgz), "copy": {"package/es5": "mathjax"}}
    monkeypatch.setattr(book_assets, "PACKAGES", {"mathjax": pkg})
    monkeypatch.setattr(book_assets, "_download", lambda *a: pytest.fail("a verified local tarball is not fetched"))
    html = book_assets.fetch(tmp_path / "assets", quiet=True)
    out = html / "_assets"
    assert (out / "mathjax" / "tex.js").read_bytes() == b"tex"
    assert (out / "mathjax" / "output" / "font.woff").exists() and not (out / "mathjax" / "tex.js.map").exists()
    assert not (out / "README.md").exists()
    assert (out / "widgets-mathjax.js").exists()          # the project's own shim rides along
    (out / "mathjax" / "tex.js").write_bytes(b"edited")
    book_assets.fetch(tmp_path / "assets", quiet=True)       # pins unchanged: nothing is unpacked again
    assert (out / "mathjax" / "tex.js").read_bytes() == b"edited"


def test_widget_fonts_are_where_the_manager_looks_for_them(tmp_path, monkeypatch):
    """The HTML manager loads its icon fonts from @jupyter-widgets/html-manager/dist/ relative to the page."""
    npm = tmp_path / "assets" / "npm"
    npm.mkdir(parents=True)
    tgz = _tarball(npm / "hm.tgz", {"package/dist/embed-amd.js": b"js", "package/dist/abc.woff2": b"font",
                                    "package/dist/def.ttf": b"ttf"})
    pkg = {"spec": "@jupyter-widgets/html-manager@9.9.9", "url": "https://registry.invalid/hm.tgz",
           "integrity": book_assets._integrity(tgz), "copy": {"package/dist": "html-manager"}}
    monkeypatch.setattr(book_assets, "PACKAGES", {"html-manager": pkg})
    html = book_assets.fetch(tmp_path / "assets", quiet=True)
    fonts = html / "book" / "@jupyter-widgets" / "html-manager" / "dist"
    assert sorted(p.name for p in fonts.iterdir()) == ["abc.woff2", "def.ttf"]
    assert (fonts / "abc.woff2").read_bytes() == b"font"
    shutil.rmtree(fonts)
    book_assets.fetch(tmp_path / "assets", quiet=True)       # restored even when nothing is unpacked again
    assert (fonts / "def.ttf").read_bytes() == b"ttf"
    # the chapters are the pages that carry widgets, and they all live in the folder the copies go to
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [c["file"] for part in toc["parts"] for c in part["chapters"]]
    assert all(f.startswith(book_assets.PAGES + "/") for f in files)


def test_a_tarball_that_fails_its_checksum_is_deleted(tmp_path, monkeypatch):
    npm = tmp_path / "npm"
    npm.mkdir()
    tgz = _tarball(npm / "requirejs-2.3.4.tgz", {"package/require.js": b"tampered"})
    monkeypatch.setattr(book_assets, "PACKAGES", {"requirejs": book_assets.PACKAGES["requirejs"]})
    with pytest.raises(book_assets.AssetError, match="does not match its pinned checksum"):
        book_assets.fetch(tmp_path, quiet=True)
    assert not tgz.exists()


def test_failed_fetch_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(book_assets.shutil, "which", lambda name: None)      # no npm: plain download
    def refuse(*a, **k):
        raise OSError("network is unreachable")
    monkeypatch.setattr(book_assets.urllib.request, "urlopen", refuse)
    monkeypatch.setattr(book_assets, "PACKAGES", {"requirejs": book_assets.PACKAGES["requirejs"]})
    with pytest.raises(book_assets.AssetError, match="install npm or allow downloads from https://registry.npmjs.org"):
        book_assets.fetch(tmp_path, quiet=True)


def test_config_points_at_the_unpacked_files():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert cfg["html_extra_path"] == [".assets/html"]
    targets = {"mathjax": "tex-mml-chtml.js", "requirejs": "require.js", "html-manager": "embed-amd.js"}
    referenced = [cfg["mathjax_path"], *cfg["nb_ipywidgets_js"]]
    for name, pkg in book_assets.PACKAGES.items():
        dst = next(iter(pkg["copy"].values()))
        assert any(r.startswith(f"../_assets/{dst}") and r.endswith(targets[name]) for r in referenced), name
    assert all(not r.startswith("http") for r in referenced)
