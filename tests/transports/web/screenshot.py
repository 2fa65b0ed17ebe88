"""Writes the README's screenshot of the web UI after one generation on the offline `tiny` model.

Run: `PYTHONPATH=src python -m tests.transports.web.screenshot docs/web-ui.png`
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.transports.http.app import create_app
from tests.loopback import serving_app

CHROMIUM = "/usr/bin/chromium"


def write_screenshot(target: Path) -> None:
    """Serve a fresh tiny-model service, generate once in the page, and save a full-page PNG to `target`."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        settings = Settings(_env_file=None, default_model="tiny", root_dir=root, data_dir=root / "data")
        service = build_service(settings)
        with serving_app(create_app(service)) as base_url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.goto(base_url + "/")
            expect(page.locator("body")).to_have_attribute("data-ready", "true")
            page.get_by_label("Prompt", exact=True).fill("a lighthouse at dusk")
            page.get_by_label("Style").select_option("sketch")
            page.get_by_label("Size", exact=True).select_option("256x256")
            page.get_by_label("Seed").fill("42")
            page.get_by_role("button", name="Generate").click()
            # The tiny model needs 2 steps, generous for a first load that builds its weights.
            expect(page.locator("#result-meta")).to_contain_text("seed 42", timeout=120_000)
            page.screenshot(path=str(target), full_page=True)
            browser.close()


if __name__ == "__main__":
    write_screenshot(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/web-ui.png"))
