"""The built book in a real browser, offline, with no kernel.

Playwright for Python drives the system's Chromium (``executable_path``: no browser download) over every page of
the smoke book, served from localhost; every request to another host is blocked and counted. Each page must log
no console error (messages are read with their levels), typeset its math, load every figure with alt text,
render its widgets with labels, keep wide tables scrollable and link only to pages that exist. On every explorer
the test moves each slider with the keyboard and checks that the picture shown changes to the frame the slider
names, and each explorer page must stay within :data:`PAGE_BUDGET`. Screenshots go to _build/screenshots/ (kept
as CI artifacts): ``<page>.png`` for each page and ``<page>-explorer<k>-<state>.png`` for each explorer state,
with ``page-weights.json`` beside them.

Another built book can be tested the same way: ``GAUSSDIFF_BOOK_HTML=<its _build/html>`` (e.g. the cpu book after
``make book``) replaces the smoke book, and ``GAUSSDIFF_SCREENSHOTS`` names another folder for the screenshots."""
import functools
import http.server
import json
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from conftest import ROOT, SRC

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)"),
    pytest.mark.skipif(sync_playwright is None, reason="Playwright for Python is not installed (pip install "
                                                       "playwright; it drives the system's Chromium, no download)")]
SHOTS = Path(os.environ.get("GAUSSDIFF_SCREENSHOTS") or ROOT / "_build" / "screenshots")
#: a built book to test instead of the smoke book: a folder holding index.html and book/*.html
BOOK_HTML = os.environ.get("GAUSSDIFF_BOOK_HTML")
#: the most bytes one page may add to the site's shared scripts and styles: its HTML (with the frames and the
#: widget state embedded in it) and its figures
PAGE_BUDGET = 3_000_000
#: bytes of the shared scripts, styles and fonts every page loads (theme, MathJax, widget manager), reported
SHARED = ("/_static/", "/_assets/", "/_sphinx_design_static/", "/book/@jupyter-widgets/")
WIDE = 760        # the window width (px) at which tables must scroll inside the page rather than be clipped


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def served(request):
    if BOOK_HTML:
        html = Path(BOOK_HTML)
        assert (html / "book").is_dir(), f"GAUSSDIFF_BOOK_HTML={BOOK_HTML} holds no built book (no book/ folder)"
    else:
        _, build = request.getfixturevalue("smoke_book")
        assert build.returncode == 0, "the smoke book did not build; see test_book"
        html = SRC / "_build" / "html"
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield html, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"])   # no name resolves but localhost
        yield chromium
        chromium.close()


class Visit:
    """One page opened in a fresh browser context, with what it logged and loaded."""

    def __init__(self, browser, url: str, width: int = 1280, height: int = 1600):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.console, self.errors, self.failed, self.offsite, self.loaded = [], [], [], [], []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.console.append((m.type, m.text[:300])))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)[:300]))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} ({r.failure})"))
        self.page.on("response", lambda r: r.status >= 400 and self.failed.append(f"{r.url} (HTTP {r.status})"))
        self.page.on("requestfinished", lambda r: self.loaded.append((r.url, r.sizes()["responseBodySize"])))
        self.page.goto(url, wait_until="load")
        self.page.wait_for_function(      # MathJax has typeset the page (when the page has math)
            "() => !document.querySelector('.math') || document.querySelector('mjx-container')", timeout=60_000)
        if self.page.locator("script[type='application/vnd.jupyter.widget-view+json']").count():
            self.page.wait_for_selector(".jupyter-widgets", timeout=60_000)
        self.page.wait_for_load_state("networkidle")

    def _route(self, route):
        if urlparse(route.request.url).hostname in ("127.0.0.1", None):
            route.continue_()
        else:
            self.offsite.append(route.request.url)
            route.abort()

    def close(self):
        self.context.close()


@pytest.fixture(scope="module")
def pages(served):
    html, base = served
    found = sorted((html / "book").glob("*.html"))
    assert len(found) >= (1 if BOOK_HTML else 10)
    return [(p, f"{base}/{p.relative_to(html).as_posix()}") for p in found]


def _explorer_pages(pages):
    return [(p, url) for p, url in pages if "StackModel" in p.read_text()]


def _local_target(page: Path, ref: str) -> Path | None:
    parts = urlparse(ref)
    if parts.scheme or parts.netloc or ref.startswith(("#", "mailto:", "javascript:")) or not parts.path:
        return None
    return (page.parent / unquote(parts.path)).resolve()


_PAGE_FACTS = """() => {
  const article = document.querySelector('article') || document.body;
  const imgs = [...article.querySelectorAll('img')].map(i => ({
      src: i.getAttribute('src') || '', alt: (i.getAttribute('alt') || '').trim(),
      loaded: i.complete && i.naturalWidth > 0, visible: i.offsetParent !== null}));
  const text = article.cloneNode(true);
  text.querySelectorAll('script, style, mjx-container, mjx-assistive-mml').forEach(e => e.remove());
  const sliders = [...document.querySelectorAll('.widget-slider')].map(s => {
      const label = s.querySelector('.widget-label');
      const handle = s.querySelector('[role=slider]');
      return {label: label ? label.textContent.trim() : '', aria: handle ? handle.getAttribute('aria-label') : null};
  });
  return {imgs, sliders, hrefs: [...article.querySelectorAll('a[href]')].map(a => a.getAttribute('href')),
          rawTeX: /\\$\\$|\\\\\\(|\\\\\\[/.test(text.textContent),
          math: document.querySelectorAll('.math').length, typeset: document.querySelectorAll('mjx-container').length,
          widgetErrors: document.querySelectorAll('.jupyter-widgets-error-widget, .widget-error').length};
}"""


def test_every_page_renders_offline(served, browser, pages):
    html, base = served
    start = re.search(r'url=([^"]+)"', (html / "index.html").read_text())
    assert start and (html / start.group(1)).is_file(), "index.html does not redirect to the first page"
    problems, warnings = [], {}
    for page, url in pages:
        rel = page.relative_to(html).as_posix()
        visit = Visit(browser, url)
        try:
            facts = visit.page.evaluate(_PAGE_FACTS)
            visit.page.screenshot(path=str(SHOTS / f"{page.stem}.png"))
        finally:
            visit.close()
        errors = [text for kind, text in visit.console if kind == "error"] + visit.errors
        warnings[rel] = [text for kind, text in visit.console if kind == "warning"]
        if errors:
            problems.append(f"{rel}: console errors {errors[:3]}")
        if visit.failed:
            problems.append(f"{rel}: failed loads {visit.failed[:3]}")
        if visit.offsite:
            problems.append(f"{rel}: requests to other hosts {visit.offsite[:3]}")
        if facts["math"] and not facts["typeset"]:
            problems.append(f"{rel}: {facts['math']} math elements but nothing typeset by MathJax")
        if facts["rawTeX"]:
            problems.append(f"{rel}: raw TeX delimiters left on the page")
        if "application/vnd.jupyter.widget-view+json" in page.read_text() and not facts["sliders"]:
            problems.append(f"{rel}: widget views did not render")
        if facts["widgetErrors"]:
            problems.append(f"{rel}: {facts['widgetErrors']} widgets rendered as errors")
        for s in facts["sliders"]:
            if not s["label"]:
                problems.append(f"{rel}: a slider without a label")
        for img in facts["imgs"]:
            if img["visible"] and not img["loaded"]:
                problems.append(f"{rel}: image {img['src'][:80]} did not load")
            if not img["alt"] or re.search(r"\.(png|jpe?g|svg|gif)$", img["alt"], re.I):
                problems.append(f"{rel}: image {img['src'][:80]} has no alt text ({img['alt']!r})")
            if img["src"].startswith(("data:", f"blob:{base}/")):
                continue   # inline bytes, or an object URL the widget manager made from bytes embedded in the page
            if _local_target(page, img["src"]) is None:
                problems.append(f"{rel}: image from another host {img['src'][:80]}")
        for href in facts["hrefs"]:
            target = _local_target(page, href)
            if target is not None and not (target.is_file() or (target / "index.html").is_file()):
                problems.append(f"{rel}: link {href} leads nowhere")
    (SHOTS / "console-warnings.json").write_text(json.dumps(warnings, indent=1, ensure_ascii=False))
    assert not problems, "\n".join(problems)


def test_explorers_respond_to_their_sliders_without_a_kernel(served, browser, pages):
    """Each slider, moved with the keyboard, changes the picture to the frame it names; no kernel, no network."""
    explorer_pages = _explorer_pages(pages)
    assert explorer_pages, "no page of the smoke book carries an explorer"
    moved = 0
    for page, url in explorer_pages:
        visit = Visit(browser, url)
        try:
            boxes = visit.page.locator(".widget-vbox:has(> .widget-slider)")
            assert boxes.count(), f"{page.name}: the explorers did not render"
            for k in range(boxes.count()):
                box = boxes.nth(k)
                handle = box.locator("[role=slider]").first
                readout = box.locator(".widget-readout").first
                name = box.locator(".widget-slider .widget-label").first.inner_text().strip()

                def state():
                    """(readout, src, alt) once the frame shown is the one the readout names, or after 10 s: the
                    link and the image swap run asynchronously in the page, so the test polls instead of sleeping."""
                    for _ in range(200):
                        imgs = box.locator("img:visible")
                        label = readout.inner_text().strip()
                        if imgs.count() == 1:
                            alt = imgs.first.get_attribute("alt") or ""
                            if alt.startswith(f"{name} = {label}:"):
                                break
                        visit.page.wait_for_timeout(50)
                    assert imgs.count() == 1, f"{page.name} explorer {k}: {imgs.count()} frames shown at once"
                    return label, imgs.first.get_attribute("src"), imgs.first.get_attribute("alt")

                handle.focus()
                handle.press("Home")
                seen = [state()]
                box.screenshot(path=str(SHOTS / f"{page.stem}-explorer{k}-first.png"))
                for step in range(3):
                    handle.press("ArrowRight")
                    seen.append(state())
                    box.screenshot(path=str(SHOTS / f"{page.stem}-explorer{k}-step{step + 1}.png"))
                handle.press("End")
                seen.append(state())
                box.screenshot(path=str(SHOTS / f"{page.stem}-explorer{k}-last.png"))
                labels = [s[0] for s in seen]
                assert len(set(labels)) > 1, f"{page.name} explorer {k}: the slider did not move ({labels})"
                for label, src, alt in seen:
                    # the frame shown is the one the slider names (its alt text starts with the slider's value)
                    assert alt.startswith(f"{name} = {label}:"), \
                        f"{page.name} explorer {k}: slider at {label!r} shows {alt!r}"
                by_label = {label: src for label, src, _ in seen}
                assert len(set(by_label.values())) == len(by_label), \
                    f"{page.name} explorer {k}: different slider values show the same picture"
                moved += 1
        finally:
            visit.close()
        errors = [text for kind, text in visit.console if kind == "error"] + visit.errors
        assert not errors and not visit.offsite, f"{page.name}: {errors[:3]} {visit.offsite[:3]}"
    assert moved >= 2


def test_explorer_pages_stay_within_their_weight_budget(served, browser, pages):
    weights = {}
    for page, url in _explorer_pages(pages):
        visit = Visit(browser, url)
        visit.close()
        own = sum(size for u, size in visit.loaded if not urlparse(u).path.startswith(SHARED))
        shared = sum(size for u, size in visit.loaded if urlparse(u).path.startswith(SHARED))
        weights[page.name] = {"page_bytes": own, "shared_bytes": shared, "html_bytes": page.stat().st_size}
    assert weights, "no explorer page to weigh"
    (SHOTS / "page-weights.json").write_text(json.dumps(weights, indent=1))
    heavy = {name: w["page_bytes"] for name, w in weights.items() if w["page_bytes"] > PAGE_BUDGET}
    assert not heavy, f"explorer pages over the {PAGE_BUDGET:,}-byte budget: {heavy}"
    assert all(w["page_bytes"] >= w["html_bytes"] for w in weights.values())   # the measure saw the page itself


def test_wide_tables_scroll_inside_the_page(served, browser, pages):
    """At a narrow window, no table is cut off: a table wider than the text column scrolls in its own box, and
    the page itself never scrolls sideways."""
    problems, wide = [], 0
    for page, url in pages:
        visit = Visit(browser, url, width=WIDE, height=900)
        try:
            facts = visit.page.evaluate("""() => {
              const overflow = document.documentElement.scrollWidth - window.innerWidth;
              const tables = [...document.querySelectorAll('article table')].map(t => {
                let box = t.parentElement, scrolls = false;
                while (box && box.tagName !== 'ARTICLE') {
                  const s = getComputedStyle(box).overflowX;
                  if (s === 'auto' || s === 'scroll') { scrolls = true; break; }
                  if (s === 'hidden' || s === 'clip') break;
                  box = box.parentElement;
                }
                const wide = t.getBoundingClientRect().width > (box ? box.clientWidth : window.innerWidth) + 1;
                return {wide, scrolls, reach: box ? box.scrollWidth - box.clientWidth : 0};
              });
              return {overflow, tables};
            }""")
        finally:
            visit.close()
        if facts["overflow"] > 1:
            problems.append(f"{page.name}: the page scrolls sideways by {facts['overflow']} px at {WIDE} px")
        for i, t in enumerate(facts["tables"]):
            wide += t["wide"]
            if t["wide"] and not t["scrolls"]:
                problems.append(f"{page.name}: table {i} is wider than its column and clipped")
            elif t["wide"] and t["reach"] <= 0:
                problems.append(f"{page.name}: table {i} is wider than its column but its box does not scroll")
    assert not problems, "\n".join(problems)
    assert wide, f"no table is wider than its column at {WIDE} px, so nothing here tested the scrolling"
