"""Writes the docs' screenshots of the web UI on the offline `tiny` model.

Run: `PYTHONPATH=src python -m tests.transports.web.screenshot docs/web-ui.png` for the README's one, or
`... screenshot docs/` for it and one per feature (web-ui-queue.png, web-ui-batch.png, ...) in that folder.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, expect, sync_playwright

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.transports.http.app import create_app
from tests.gated import GatedBackend
from tests.loopback import serving_app

CHROMIUM = "/usr/bin/chromium"
# The tiny model needs 2 steps: generous for a first load that builds its weights.
LONG_MS = 120_000


@contextmanager
def _serving() -> Iterator[tuple[str, GatedBackend, Browser]]:
    """A fresh tiny-model server whose steps hold until released, and a headless Chromium."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        settings = Settings(_env_file=None, default_model="tiny", root_dir=root, data_dir=root / "data")
        backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
        service = build_service(settings, backend=backend)
        with serving_app(create_app(service)) as base_url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                yield base_url, backend, browser
            finally:
                backend.release(100_000)
                browser.close()


def _open(browser: Browser, base_url: str, width: int = 1280, height: int = 800) -> Page:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(base_url + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page


def _generate(page: Page, prompt: str, seed: int) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Seed").fill(str(seed))
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#result-meta")).to_contain_text(f"seed {seed}", timeout=LONG_MS)
    page.wait_for_function("() => document.querySelector('#result-image').naturalWidth > 0")


def _main(page: Page, target: Path) -> None:
    page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")
    page.get_by_label("Style").select_option("sketch")
    # The style fills the prompt and sets its own size when its template arrives: pick the size after that.
    expect(page.get_by_label("Size", exact=True)).to_have_value("768x768")
    page.get_by_label("Size", exact=True).select_option("256x256")
    _generate(page, page.get_by_label("Prompt", exact=True).input_value(), 42)
    page.screenshot(path=str(target), full_page=True)


def write_screenshot(target: Path) -> None:
    """Serve a fresh tiny-model service, generate once in the page, and save a full-page PNG to `target`."""
    with _serving() as (base_url, backend, browser):
        backend.release(100_000)
        _main(_open(browser, base_url, 1100, 900), target)


def write_all(folder: Path) -> None:
    """The README's screenshot and one per feature, into `folder`."""
    with _serving() as (base_url, backend, browser):
        backend.release(2)  # the tiny model's 2 steps
        _main(_open(browser, base_url, 1100, 900), folder / "web-ui.png")

        # A running job with two more queued behind it: held at its first step while the screenshot is taken.
        page = _open(browser, base_url)
        page.get_by_label("Prompt", exact=True).fill("a red fox in the snow, watercolor")
        page.get_by_role("button", name="Generate").click()
        backend.wait_for_step()
        for prompt in ["a snowy owl on a branch", "a harbour at night, oil painting"]:
            page.get_by_label("Prompt", exact=True).fill(prompt)
            page.get_by_role("button", name="Add to queue").click()
        expect(page.locator("#queue li")).to_have_count(2)
        page.screenshot(path=str(folder / "web-ui-queue.png"), full_page=True)
        backend.release(100_000)
        expect(page.locator("#queue-panel")).to_be_hidden(timeout=LONG_MS)
        page.close()

        page = _open(browser, base_url)
        page.get_by_label("Images").fill("4")
        _generate(page, "a paper boat on a pond", 7)
        page.locator("#result-panel").screenshot(path=str(folder / "web-ui-batch.png"))
        page.locator("#result-image").click()
        page.wait_for_function("() => parseFloat(document.querySelector('#zoom img').style.width) > 0")
        page.screenshot(path=str(folder / "web-ui-zoom.png"))
        page.keyboard.press("Escape")

        page.get_by_label("Images").fill("1")
        page.get_by_role("button", name="Use as input").click()
        page.get_by_label("Inpaint").check()
        canvas = page.get_by_label("Mask: paint the area to repaint")
        canvas.scroll_into_view_if_needed()
        box = canvas.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.6, steps=8)
        page.mouse.up()
        page.locator("#input-box").screenshot(path=str(folder / "web-ui-inpaint.png"))
        _generate(page, "a paper boat with a red sail", 8)
        page.locator("#result").screenshot(path=str(folder / "web-ui-compare.png"))
        page.close()

        page = _open(browser, base_url)
        page.emulate_media(color_scheme="dark")
        page.get_by_label("Size", exact=True).select_option("256x256")
        _generate(page, "a lighthouse at dusk", 42)
        page.screenshot(path=str(folder / "web-ui-dark.png"), full_page=True)
        page.close()

        page = _open(browser, base_url, 390, 844)
        page.get_by_label("Size", exact=True).select_option("256x256")
        _generate(page, "a lighthouse at dusk", 42)
        page.locator("#result-panel").scroll_into_view_if_needed()
        page.screenshot(path=str(folder / "web-ui-phone.png"))
        page.close()


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/web-ui.png")
    if target.is_dir():
        write_all(target)
    else:
        write_screenshot(target)
