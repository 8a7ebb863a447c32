"""The built book in a real browser, offline: headless Chromium loads every page of the smoke book from a
local server with every other host unresolvable, and each page must run without console errors, typeset its
math, load its figures, render its widgets and link only to pages that exist. Screenshots of each page go to
_build/screenshots/ (kept as CI artifacts)."""
import functools
import http.server
import re
import shutil
import subprocess
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from conftest import ROOT, SRC

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")
SHOTS = ROOT / "_build" / "screenshots"
# what a page may not print to the console: script errors, failed loads, blocked network
CONSOLE_ERROR = re.compile(r"Uncaught|Error|Failed to load|net::ERR|Refused to", re.I)


def _chromium(url: str, *extra: str, timeout: int = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--disable-background-networking", "--no-first-run", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",   # networking off, localhost only
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=20000", *extra, url],
        capture_output=True, text=True, timeout=timeout)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.imgs = [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if tag == "img" and a.get("src"):
            self.imgs.append(a["src"])


def _local_target(html_root: Path, page: Path, ref: str) -> Path | None:
    parts = urlparse(ref)
    if parts.scheme or parts.netloc or ref.startswith(("#", "mailto:", "javascript:")) or not parts.path:
        return None
    return (page.parent / unquote(parts.path)).resolve()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(smoke_book):
    _, build = smoke_book
    assert build.returncode == 0, "the smoke book did not build; see test_book"
    html = SRC / "_build" / "html"
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield html, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _pages(html: Path) -> list[Path]:
    return sorted((html / "book").glob("*.html"))


def test_every_page_renders_offline(served):
    html, base = served
    start = re.search(r'url=([^"]+)"', (html / "index.html").read_text())
    assert start and (html / start.group(1)).is_file(), "index.html does not redirect to the first page"
    pages = _pages(html)
    assert len(pages) >= 10
    problems = []
    for page in pages:
        rel = page.relative_to(html).as_posix()
        run = _chromium(f"{base}/{rel}", "--dump-dom")
        dom, static = run.stdout, page.read_text()
        console = [line.split('"', 1)[-1][:200] for line in run.stderr.splitlines() if ":CONSOLE" in line]
        errors = [c for c in console if CONSOLE_ERROR.search(c)]
        if run.returncode or not dom:
            problems.append(f"{rel}: Chromium failed ({run.returncode})")
            continue
        if errors:
            problems.append(f"{rel}: console errors {errors[:3]}")
        n_math = static.count('class="math') + static.count("class=\"math")
        if n_math:
            if "mjx-container" not in dom:
                problems.append(f"{rel}: {n_math} math elements but nothing typeset by MathJax")
            if re.search(r"\$\$|\\\(|\\\[", re.sub(r"<(script|style)[^>]*>.*?</\1>", "", dom, flags=re.S)):
                problems.append(f"{rel}: raw TeX delimiters left on the page")
        if "application/vnd.jupyter.widget-view+json" in static and "jupyter-widgets" not in dom:
            problems.append(f"{rel}: widget views did not render")
        links = _Links()
        links.feed(dom)
        for src in links.imgs:
            target = _local_target(html, page, src)
            if src.startswith(("data:", f"blob:{base}/")):
                continue   # inline bytes, or an object URL the widget manager made from bytes embedded in the page
            if target is None:
                problems.append(f"{rel}: image from another host {src}")
            elif not target.is_file() or target.stat().st_size == 0:
                problems.append(f"{rel}: image {src} missing")
        for href in links.hrefs:
            target = _local_target(html, page, href)
            if target is not None and not (target.is_file() or (target / "index.html").is_file()):
                problems.append(f"{rel}: link {href} leads nowhere")
    assert not problems, "\n".join(problems)


def test_screenshots_of_every_page(served):
    html, base = served
    for page in _pages(html):
        rel = page.relative_to(html).as_posix()
        shot = SHOTS / (page.stem + ".png")
        shot.unlink(missing_ok=True)
        run = _chromium(f"{base}/{rel}", f"--screenshot={shot}", "--window-size=1280,1600")
        assert shot.is_file() and shot.stat().st_size > 10_000, f"{rel}: no screenshot ({run.stderr[-300:]})"
