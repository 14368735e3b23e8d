"""Open the built book in headless Chromium and check it as a reader would.

    python scripts/check_book.py runs/embedded/book/_build/html [--chromium .venv/chromium/chromium] [--shots DIR]

Every page of the table of contents is loaded (file://, no server) and must render without a script error; the
landing page must link to every page; each table page must show at least one table with the paper's numbers and
ours, and at least one figure; each figure page at least one figure. Every image must have loaded (a decoded
picture, naturalWidth > 0), and every internal link must lead to an existing page and, with a #fragment, to an
element with that id. Exit code 1 and one line per problem otherwise.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CHROMIUM = REPO / ".venv" / "chromium" / "chromium"
# headless, offline, as root in a container: no sandbox, no GPU, no background network (REFERENCE / env notes)
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
TABLE_PAGES = ("01_", "02_", "03_", "04_", "05_", "06_")  # notebooks/<prefix>*.html: a table of the paper's
FIGURE_PAGES = ("00_", "07_", "08_")

READ_PAGE = """() => ({
  title: document.title,
  h1: Array.from(document.querySelectorAll('main h1, article h1')).map(h => h.textContent.trim()),
  tables: Array.from(document.querySelectorAll('article table')).map(t => ({
      rows: t.querySelectorAll('tr').length, head: t.querySelector('tr') ? t.querySelector('tr').innerText : ''})),
  images: Array.from(document.querySelectorAll('article img')).map(i => ({
      src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0, w: i.naturalWidth})),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
  text: document.body.innerText.length,
  notice: Array.from(document.querySelectorAll('.bd-header-announcement')).map(e => e.innerText.trim()).join(' '),
})"""


def chromium_path(given: str | None = None) -> Path | None:
    """--chromium, else $DIFFCORE_CHROMIUM (a CI runner's own Chrome), else the unpacked Debian chromium."""
    import os

    env = os.environ.get("DIFFCORE_CHROMIUM")
    for p in ([given] if given else []) + ([env] if env else []) + [str(DEFAULT_CHROMIUM), "/usr/bin/chromium"]:
        if p and Path(p).is_file():
            return Path(p)
    return None


def toc_pages(html: Path) -> list[Path]:
    """The pages of _toc.yml as built, the landing page (the toc's root) first."""
    import yaml

    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = [toc["root"]] + [ch["file"] for part in toc.get("parts", []) for ch in part["chapters"]]
    return [html / f"{f}.html" for f in files]


def _ids(path: Path, cache: dict) -> set[str]:
    if path not in cache:
        cache[path] = set(re.findall(r'\sid="([^"]+)"', path.read_text(errors="replace")))
    return cache[path]


def check_links(page: Path, links: list[str], html: Path, cache: dict) -> list[str]:
    """Internal links (file:// under the book) that lead nowhere."""
    bad = []
    for href in links:
        u = urlparse(href)
        if u.scheme != "file":
            continue
        target = Path(unquote(u.path))
        if html.resolve() not in target.resolve().parents and target.resolve() != html.resolve():
            bad.append(f"{page.name}: link outside the book: {href}")
        elif target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            bad.append(f"{page.relative_to(html)}: broken link {href}")
        elif u.fragment and target.suffix == ".html" and unquote(u.fragment) not in _ids(target, cache):
            bad.append(f"{page.relative_to(html)}: link to a missing anchor {href}")
    return bad


def check_page(rel: str, info: dict, errors: list[str], notice: str | None = None) -> list[str]:
    """What a reader must see on this page (notice: a line it must show at its top, e.g. the rehearsal's)."""
    bad = [f"{rel}: script error: {e}" for e in errors]
    if notice and notice not in info["notice"]:
        bad.append(f"{rel}: the notice {notice!r} is not shown at the top of the page")
    if not info["h1"] or info["text"] < 200:
        bad.append(f"{rel}: no heading or almost no text (did it render?)")
    bad += [f"{rel}: image did not load: {i['src'][:120]}" for i in info["images"] if not i["ok"]]
    name = Path(rel).name
    if name.startswith(TABLE_PAGES):
        if not any(t["rows"] > 2 and "paper" in t["head"] and "ours" in t["head"] for t in info["tables"]):
            bad.append(f"{rel}: no table with the paper's numbers beside ours")
        if not any(i["ok"] and i["w"] > 100 for i in info["images"]):
            bad.append(f"{rel}: no figure")
    if name.startswith(FIGURE_PAGES) and not any(i["ok"] and i["w"] > 100 for i in info["images"]):
        bad.append(f"{rel}: no figure")
    return bad


def check_book(
    html: Path, chromium: Path, shots: Path | None = None, notice: str | None = None
) -> tuple[list[str], list[str]]:
    """(problems, one line per checked page)."""
    from playwright.sync_api import sync_playwright

    html = html.resolve()
    problems, seen, cache = [], [], {}
    pages = toc_pages(html)
    problems += [f"missing page {p.relative_to(html)}" for p in pages if not p.is_file()]
    index = html / "index.html"  # Jupyter Book's index.html only redirects to the landing page
    if not index.is_file() or pages[0].relative_to(html).as_posix() not in index.read_text():
        problems.append(f"index.html does not lead to the landing page {pages[0].relative_to(html)}")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        for path in [p for p in pages if p.is_file()]:
            errors.clear()
            page.goto(path.as_uri(), wait_until="load")
            info = page.evaluate(READ_PAGE)
            rel = str(path.relative_to(html))
            problems += check_page(rel, info, list(errors), notice) + check_links(path, info["links"], html, cache)
            if path == pages[0]:  # the landing page leads to every page
                linked = {Path(unquote(urlparse(h).path)).resolve() for h in info["links"]}
                problems += [f"{rel}: no link to {p.relative_to(html)}" for p in pages[1:] if p.resolve() not in linked]
            seen.append(
                f"{rel}: {len(info['tables'])} tables, {sum(i['ok'] for i in info['images'])} images, "
                f"{len(info['links'])} links"
            )
            if shots:
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / (rel.replace("/", "_") + ".png")), full_page=True)
        browser.close()
    return problems, seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", help="the built book: <out>/book/_build/html")
    ap.add_argument("--chromium", help=f"browser executable (default {DEFAULT_CHROMIUM}, else /usr/bin/chromium)")
    ap.add_argument("--shots", help="write a full-page screenshot of every page here")
    ap.add_argument("--notice", help="a line every page must show at its top (the rehearsal's notice)")
    a = ap.parse_args(argv)
    chromium = chromium_path(a.chromium)
    if chromium is None:
        print(
            "check_book: no Chromium (run `make setup`, which unpacks Debian's chromium into .venv/chromium)",
            file=sys.stderr,
        )
        return 2
    problems, seen = check_book(Path(a.html), chromium, Path(a.shots) if a.shots else None, a.notice)
    print("\n".join(seen))
    print("\n".join(problems) if problems else f"book OK: {len(seen)} pages checked in {chromium}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
