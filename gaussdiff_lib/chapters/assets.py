"""Local copies of the three scripts the rendered book would otherwise load from CDNs.

Out of the box a Jupyter Book page loads MathJax, require.js and the ipywidgets HTML manager from the
internet; offline, the math shows as raw TeX and the widgets vanish. :func:`fetch` takes pinned releases
from the npm registry (``npm pack``, or a plain download of the same tarball when npm is missing),
checks each against the sha512 integrity the registry publishes (pinned in :data:`PACKAGES`), and unpacks
the needed files into ``.assets/html/_assets/`` (git-ignored, outside ``_static/``, which Jupyter Book
would load wholesale into every page). ``_config.yml`` copies that folder into the built site
(``html_extra_path``) and points ``mathjax_path`` and ``nb_ipywidgets_js`` at it, so ``_build/html``
renders completely with no network, and still works when hosted online.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from . import profiles

__all__ = ["PACKAGES", "fetch", "assets_dir", "AssetError"]

#: For each package its npm spec, registry URL, sha512 integrity, and which tarball paths go where under _assets
#:
#: :meta hide-value:
PACKAGES = {
    "mathjax": {
        "spec": "mathjax@3.2.2",
        "url": "https://registry.npmjs.org/mathjax/-/mathjax-3.2.2.tgz",
        "integrity": "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        "copy": {"package/es5": "mathjax"},
    },
    "requirejs": {
        "spec": "requirejs@2.3.4",
        "url": "https://registry.npmjs.org/requirejs/-/requirejs-2.3.4.tgz",
        "integrity": "sha512-qPD5gRrj6kGQ0ZySAJgqbArkaDqPMbQIT0zSZDkIv1mfA17w/tR2Faq5l2qqRf2CdQx6FWln9nUrgd2UDzb19A==",
        "copy": {"package/require.js": "require.js"},
    },
    "html-manager": {
        "spec": "@jupyter-widgets/html-manager@1.0.6",
        "url": "https://registry.npmjs.org/@jupyter-widgets/html-manager/-/html-manager-1.0.6.tgz",
        "integrity": "sha512-+Mn+Ra8wyIHrYaUpfmf9A3dsLkt/NuwzPQN8sthdxBD35VV5cOJbpmgMhNR27n/rmP3mKyEe0PWCJrtZrXTXDQ==",
        "copy": {"package/dist": "html-manager"},
    },
}


class AssetError(RuntimeError):
    """A pinned asset could not be fetched or did not match its checksum."""


def assets_dir() -> Path:
    """``.assets`` in the project folder (``$GAUSSDIFF_ASSETS`` overrides)."""
    env = os.environ.get("GAUSSDIFF_ASSETS")
    return Path(env) if env else profiles.project() / ".assets"


def _integrity(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def _download(name: str, pkg: dict, folder: Path) -> Path:
    """The package's tarball in ``folder``, by ``npm pack`` when npm is installed, else from the registry URL."""
    target = folder / pkg["url"].rsplit("/", 1)[-1]
    tmp = Path(tempfile.mkdtemp(dir=folder, prefix=".pack-"))
    try:
        npm = shutil.which("npm")
        if npm:
            proc = subprocess.run([npm, "pack", pkg["spec"], "--json", "--pack-destination", str(tmp)],
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise AssetError(f"npm pack {pkg['spec']} failed: {proc.stderr.strip()[-500:]}")
            got = tmp / json.loads(proc.stdout)[0]["filename"]
        else:
            got = tmp / target.name
            with urllib.request.urlopen(pkg["url"], timeout=60) as r, open(got, "wb") as f:
                shutil.copyfileobj(r, f)
        os.replace(got, target)
        return target
    except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        raise AssetError(f"could not fetch {pkg['spec']} for the offline book ({exc}); install npm or allow "
                         f"downloads from {pkg['url']}, or put that file into {folder}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verified(name: str, pkg: dict, folder: Path) -> Path:
    tarball = folder / pkg["url"].rsplit("/", 1)[-1]
    if not tarball.exists():
        tarball = _download(name, pkg, folder)
    got = _integrity(tarball)
    if got != pkg["integrity"]:
        tarball.unlink()
        raise AssetError(f"{tarball.name} does not match its pinned checksum ({got[:24]}... instead of "
                         f"{pkg['integrity'][:24]}...); it was deleted, run the fetch again")
    return tarball


def _unpack(tarball: Path, copy: dict, out: Path):
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            for src, dst in copy.items():
                if member.isfile() and (member.name == src or member.name.startswith(src + "/")) \
                        and not member.name.endswith(".map"):
                    rel = Path(dst) / Path(member.name).relative_to(src) if member.name != src else Path(dst)
                    path = out / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as f, open(path, "wb") as g:
                        shutil.copyfileobj(f, g)


def fetch(dest: str | os.PathLike | None = None, quiet: bool = False) -> Path:
    """Make ``<dest>/html/_assets`` hold the pinned MathJax, require.js and HTML manager; returns ``<dest>/html``.

    Tarballs are kept in ``<dest>/npm`` and re-verified on every call; unpacking is redone only when the
    pins change. Raises :class:`AssetError` with what to do when a package cannot be fetched or fails its
    checksum."""
    dest = Path(dest) if dest is not None else assets_dir()
    npm_dir, html = dest / "npm", dest / "html"
    npm_dir.mkdir(parents=True, exist_ok=True)
    stamp = html / "_assets" / "PINS.json"
    pins = {name: pkg["integrity"] for name, pkg in PACKAGES.items()}
    tarballs = {name: _verified(name, pkg, npm_dir) for name, pkg in PACKAGES.items()}
    if stamp.exists() and json.loads(stamp.read_text()) == pins:
        _own_scripts(html / "_assets")
        _widget_fonts(html)
        return html
    shutil.rmtree(html, ignore_errors=True)
    for name, pkg in PACKAGES.items():
        _unpack(tarballs[name], pkg["copy"], html / "_assets")
        if not quiet:
            print(f"assets: {pkg['spec']} verified and unpacked", flush=True)
    _own_scripts(html / "_assets")
    _widget_fonts(html)
    stamp.write_text(json.dumps(pins, indent=1))
    return html


def _own_scripts(out: Path):
    """This project's own small scripts for the built site (``book/_js``), copied beside the packages."""
    for js in sorted((profiles.project() / "book" / "_js").glob("*.js")):
        shutil.copy2(js, out / js.name)


#: where the pages live in the built site (every chapter is under book/ in _toc.yml)
PAGES = "book"
#: the folder, relative to a page, from which the HTML manager loads the icon fonts of its style sheet: it takes
#: its own module name, ``@jupyter-widgets/html-manager/dist/...``, resolved against the page, as its base URL
WIDGET_FONTS = "@jupyter-widgets/html-manager/dist"


def _widget_fonts(html: Path):
    """Copies of the HTML manager's icon fonts where it looks for them, beside the pages
    (``<site>/book/@jupyter-widgets/html-manager/dist/``); without them every page with a widget logs six failed
    font requests (404) to the console."""
    src, dst = html / "_assets" / "html-manager", html / PAGES / WIDGET_FONTS
    if not src.is_dir():
        return
    dst.mkdir(parents=True, exist_ok=True)
    for font in src.iterdir():
        if font.suffix in (".woff", ".woff2", ".ttf", ".eot", ".svg") and not (dst / font.name).is_file():
            shutil.copy2(font, dst / font.name)
