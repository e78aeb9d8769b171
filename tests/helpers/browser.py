"""Opening a page from disk in headless Chromium (Debian's package) through Playwright."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

# The flags a closed network needs (no background connections to Google), and software WebGL.
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]


def chromium_path() -> Optional[str]:
    """Debian's Chromium, or another one on PATH."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def why_no_browser() -> Optional[str]:
    """None when a browser test can run, else the reason to skip."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if chromium_path() is None:
        return "no Chromium on this machine (apt-get install chromium; .ci/run installs it)"
    return None


def open_report(page_path: Path, screenshot: Path, timeout_ms: int = 60_000) -> dict[str, Any]:
    """Open ``page_path``, wait until every 3D view loaded or failed, screenshot it; what the page saw."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as play:
        browser = play.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            console: list[str] = []
            page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
            page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
            page.goto(page_path.resolve().as_uri())
            page.wait_for_function("() => window.img2meshReport && (window.img2meshReport.loaded "
                                   "+ window.img2meshReport.errors.length >= window.img2meshReport.expected)",
                                   timeout=timeout_ms)
            page.wait_for_timeout(1500)  # let the first frame render before the screenshot
            state = page.evaluate("""() => ({
                report: window.img2meshReport,
                images: Array.from(document.images).map(i => ({src: i.getAttribute('src'),
                                                               ok: i.complete && i.naturalWidth > 0})),
                links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
                videos: Array.from(document.querySelectorAll('video')).map(v => v.getAttribute('src')),
                text: document.body.innerText,
            })""")
            page.screenshot(path=str(screenshot), full_page=True)
            state["console"] = console
            return state
        finally:
            browser.close()
