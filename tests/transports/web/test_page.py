"""The web UI in a real headless Chromium against a real server on loopback, on the offline `tiny` model."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, FilePayload, Page, ViewportSize, expect, sync_playwright

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import Progress, Sampler
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.gated import GatedBackend, StepHookBackend
from tests.loopback import serving_app

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.slow
# A first generation loads the tiny model: on a busy 2-core machine that outlasts Playwright's 5 s default.
expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium per module: the system's own, since no browser download works here."""
    if shutil.which(CHROMIUM) is None:
        reason = f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (./start.sh test does)"
        # CI installs it, so there a missing browser is a broken setup, not a reason to skip.
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def _open(browser: Browser, base_url: str, viewport: ViewportSize | None = None) -> Page:
    page = browser.new_page(viewport=viewport or {"width": 1280, "height": 800})
    # Everything the page's Content-Security-Policy blocks is kept for the tests to read.
    page.add_init_script(
        "window.cspViolations = [];"
        "document.addEventListener('securitypolicyviolation', e => window.cspViolations.push(e.violatedDirective"
        " + ' ' + e.blockedURI));"
    )
    page.goto(base_url + "/")
    # The page marks itself ready once /models, /templates and /policy have filled its controls.
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    return page


@pytest.fixture
def served(service: ImageService) -> Iterator[str]:
    with serving_app(create_app(service)) as base_url:
        yield base_url


@contextmanager
def _gated_server(settings: Settings, api_keys: ApiKeys | None = None) -> Iterator[tuple[str, GatedBackend]]:
    """A server whose generations hold at every step until the test releases them."""
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings, backend=backend)
    with serving_app(create_app(service, api_keys=api_keys)) as base_url:
        try:
            yield base_url, backend
        finally:
            backend.release(1000)


@pytest.fixture
def gated(settings: Settings) -> Iterator[tuple[str, GatedBackend]]:
    with _gated_server(settings) as served:
        yield served


def _generate(page: Page, prompt: str = "a red fox", seed: int | str = 7) -> None:
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Seed").fill(str(seed))
    page.get_by_role("button", name="Generate").click()


def _generate_with_progress(page: Page, backend: GatedBackend, seed: int) -> None:
    """Generate, see the first step and its preview while the job holds, then let it finish."""
    _generate(page, seed=seed)
    backend.wait_for_step()
    expect(page.locator("#progress-text")).to_have_text(re.compile(r"step 1 of \d+"))
    expect(page.get_by_role("img", name="Live preview")).to_have_attribute("src", re.compile(r"^data:image/png"))
    backend.release(1000)
    expect(page.locator("#result-meta")).to_contain_text(f"seed {seed}")


def _inpaint_a_result(page: Page) -> None:
    """Draw an image (seed 5) and take it as the input of an inpaint."""
    _generate(page, seed=5)
    expect(page.locator("#result-meta")).to_contain_text("seed 5")
    _wait_for_result_image(page)
    page.get_by_role("button", name="Use as input").click()
    page.get_by_label("Inpaint").check()
    expect(page.locator("#input-image")).to_have_attribute("src", re.compile(r"^data:image/png"))


def _wait_for_result_image(page: Page) -> None:
    """Wait until the result image has loaded: the browser fetches it after the page shows the metadata, so a
    check at once can come before its bytes on a busy machine."""
    page.wait_for_function(
        "() => { const img = document.querySelector('#result-image'); return img.complete && img.naturalWidth > 0 }"
    )


def _latest_job(base_url: str) -> dict[str, object]:
    jobs: list[dict[str, object]] = httpx.get(f"{base_url}/jobs?status=succeeded").json()["jobs"]
    return jobs[0]


def test_page_is_served_at_root_with_its_assets(served: str) -> None:
    page = httpx.get(served + "/")
    script = httpx.get(served + "/ui/app.js")

    assert page.status_code == 200
    assert 'src="/ui/app.js"' in page.text
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]


def test_page_fills_models_policy_and_sizes_from_the_api(browser: Browser, served: str) -> None:
    page = _open(browser, served)

    expect(page.get_by_label("Model")).to_have_value("tiny")
    expect(page.locator("#model-info")).to_contain_text("Tasks:")
    expect(page.get_by_role("region", name="What the server's policy adds")).to_contain_text("watermark")
    expect(page.get_by_label("Size", exact=True)).to_contain_text("(model default)")
    page.close()


def test_generate_shows_step_progress_then_the_image_with_its_metadata(
    browser: Browser, gated: tuple[str, GatedBackend]
) -> None:
    base_url, backend = gated
    page = _open(browser, base_url)

    _generate_with_progress(page, backend, seed=7)
    expect(page.locator("#result-meta")).to_contain_text("tiny")
    expect(page.get_by_role("link", name="Download")).to_have_attribute("href", re.compile(r"/images/.+\.png$"))
    expect(page.locator("#progress-box")).to_be_hidden()
    _wait_for_result_image(page)
    expect(page.locator("#history img")).to_have_count(1)
    page.get_by_role("button", name="Random").click()
    expect(page.get_by_label("Seed")).to_have_value(re.compile(r"^\d+$"))
    page.get_by_role("button", name="Reuse last").click()
    expect(page.get_by_label("Seed")).to_have_value("7")
    page.close()


def test_template_fills_the_prompt_with_the_subject_and_sets_its_size(browser: Browser, served: str) -> None:
    page = _open(browser, served)

    page.get_by_label("Prompt", exact=True).fill("a paper plane")
    page.get_by_label("Style").select_option("icon")

    expect(page.get_by_label("Prompt", exact=True)).to_have_value(re.compile(r"icon of a paper plane"))
    expect(page.get_by_label("Size", exact=True)).to_have_value("512x512")
    page.close()


def test_cancel_during_a_running_job_shows_cancelled_and_frees_the_form(
    browser: Browser, gated: tuple[str, GatedBackend]
) -> None:
    base_url, backend = gated
    page = _open(browser, base_url)

    _generate(page)
    backend.wait_for_step()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#progress-text")).to_have_text("cancelling…")
    # The job notices the cancel at its next step boundary.
    backend.release(1000)

    expect(page.get_by_role("alert")).to_contain_text("The job was cancelled.")
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    page.close()


def test_invalid_custom_size_is_refused_beside_the_field_with_the_bounds_the_server_declares(
    browser: Browser, served: str
) -> None:
    page = _open(browser, served)
    max_res = httpx.get(served + "/models").json()["max_res"]

    page.get_by_label("Size", exact=True).select_option("custom")
    page.get_by_label("Width").fill("100")
    _generate(page)

    expect(page.get_by_role("alert")).to_have_text(f"Width must be a multiple of 8 from 64 to {max_res}.")
    expect(page.get_by_label("Width")).to_be_focused()
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    page.close()


def test_the_page_refuses_framing_and_works_within_its_content_security_policy(
    browser: Browser, gated: tuple[str, GatedBackend]
) -> None:
    base_url, backend = gated
    headers = httpx.get(base_url + "/").headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    page = _open(browser, base_url)

    # A live preview (a data: URL), the result image, and the result fetched back as the next input.
    _generate_with_progress(page, backend, seed=11)
    _wait_for_result_image(page)
    page.get_by_role("button", name="Use as input").click()
    expect(page.get_by_label("Edit (image to image)")).to_be_checked()
    expect(page.locator("#input-image")).to_have_attribute("src", re.compile(r"^data:image/png"))

    assert page.evaluate("window.cspViolations") == []
    page.close()


def test_use_as_input_edits_the_previous_result(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    _generate(page, seed=3)
    expect(page.locator("#result-meta")).to_contain_text("seed 3")

    page.get_by_role("button", name="Use as input").click()
    expect(page.get_by_label("Edit (image to image)")).to_be_checked()
    _generate(page, prompt="the same fox at night", seed=4)

    expect(page.locator("#result-meta")).to_contain_text("seed 4")
    assert _latest_job(served)["task"] == "img2img"
    page.close()


def test_painted_mask_is_sent_white_where_painted_for_inpainting(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    _generate(page, seed=5)
    expect(page.locator("#result-meta")).to_contain_text("seed 5")
    page.get_by_role("button", name="Use as input").click()
    page.get_by_label("Inpaint").check()

    canvas = page.get_by_label("Mask: paint the area to repaint")
    expect(canvas).to_be_visible()
    # The mouse moves in the viewport: the canvas must be in it, wherever the last click scrolled the page.
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
    page.mouse.up()
    with page.expect_request(lambda r: r.url.endswith("/jobs") and r.method == "POST") as submitted:
        _generate(page, prompt="a snowy owl", seed=6)

    body = submitted.value.post_data_json
    assert body is not None
    assert body["task"] == "inpaint"
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask_image"].split(",", 1)[1]))).convert("L")
    init = Image.open(io.BytesIO(base64.b64decode(body["init_image"].split(",", 1)[1])))
    assert mask.size == init.size
    assert mask.getpixel((mask.width // 2, mask.height // 2)) == 255
    assert mask.getpixel((0, 0)) == 0
    expect(page.locator("#result-meta")).to_contain_text("seed 6")
    assert _latest_job(served)["task"] == "inpaint"
    page.close()


def test_narrow_screen_stacks_the_panels(browser: Browser, served: str) -> None:
    page = browser.new_page(viewport={"width": 400, "height": 800})
    page.goto(served + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")

    form = page.get_by_role("form", name="Generation parameters").bounding_box()
    result = page.get_by_role("region", name="Result").bounding_box()
    assert form is not None
    assert result is not None
    assert result["y"] >= form["y"] + form["height"]
    page.close()


def test_history_item_restores_its_parameters_and_image(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    _generate(page, prompt="a first fox", seed=11)
    expect(page.locator("#result-meta")).to_contain_text("seed 11")
    _generate(page, prompt="a second fox", seed=12)
    expect(page.locator("#result-meta")).to_contain_text("seed 12")
    expect(page.locator("#history img")).to_have_count(2)

    # Newest first: the second item is the first generation.
    page.get_by_role("button", name="Restore: a first fox").click()

    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a first fox")
    expect(page.get_by_label("Seed")).to_have_value("11")
    expect(page.locator("#result-meta")).to_contain_text("seed 11")
    page.close()


def test_ctrl_enter_in_the_prompt_submits(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    page.get_by_label("Seed").fill("21")
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a fox by keyboard")

    prompt.press("Control+Enter")

    expect(page.locator("#result-meta")).to_contain_text("seed 21")
    page.close()


def _fail_step(progress: Progress) -> None:
    raise RuntimeError("the device fell over")


def test_failed_job_shows_its_error_in_place_and_frees_the_form(browser: Browser, settings: Settings) -> None:
    backend = StepHookBackend(DiffusersBackend(device="cpu", models_path=settings.models_path), _fail_step)
    with serving_app(create_app(build_service(settings, backend=backend))) as base_url:
        page = _open(browser, base_url)

        _generate(page)

        alert = page.get_by_role("alert")
        expect(alert).to_contain_text("RuntimeError: the device fell over")
        expect(alert).to_contain_text("the server keeps running")
        expect(page.locator("#progress-box")).to_be_hidden()
        expect(page.get_by_role("button", name="Generate")).to_be_enabled()
        expect(page.locator("#result")).to_be_hidden()
        page.close()


KEY = "alice-key-0123456789"


@pytest.fixture
def keyed_gated(settings: Settings) -> Iterator[tuple[str, GatedBackend]]:
    with _gated_server(settings, ApiKeys([("alice", KEY)])) as served:
        yield served


def _log_in(page: Page, key: str) -> None:
    page.get_by_label("API key", exact=True).fill(key)
    page.get_by_role("button", name="Use key").click()


def test_with_keys_the_page_asks_for_one_and_generates_with_progress_once_given(
    browser: Browser, keyed_gated: tuple[str, GatedBackend]
) -> None:
    base_url, backend = keyed_gated
    page = browser.new_page()
    page.goto(base_url + "/")
    key_field = page.get_by_label("API key", exact=True)
    expect(key_field).to_be_visible()
    expect(page.locator("body")).not_to_have_attribute("data-ready", "true")

    _log_in(page, "wrong-key-0000000000")
    expect(page.locator("#login-error")).to_have_text("The API key is not valid here.")

    _log_in(page, KEY)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    expect(key_field).to_be_hidden()
    expect(page.get_by_label("Model")).to_have_value("tiny")

    _generate_with_progress(page, backend, seed=11)
    expect(page.get_by_role("link", name="Download")).to_have_attribute("href", re.compile(r"/images/.+\.png\?exp="))
    expect(page.locator("#history img")).to_have_count(1)
    _wait_for_result_image(page)

    page.reload()  # the key is kept in the browser
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.get_by_role("button", name="Forget key").click()
    expect(key_field).to_be_visible()
    page.close()


def test_with_keys_cancel_still_stops_a_running_job(browser: Browser, keyed_gated: tuple[str, GatedBackend]) -> None:
    base_url, backend = keyed_gated
    page = browser.new_page()
    page.goto(base_url + "/")
    _log_in(page, KEY)
    expect(page.locator("body")).to_have_attribute("data-ready", "true")

    _generate(page)
    backend.wait_for_step()
    page.get_by_role("button", name="Cancel").click()
    backend.release(1000)

    expect(page.locator("#progress-box")).to_be_hidden()
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    expect(page.locator("#result")).to_be_hidden()
    page.close()


def test_several_images_show_as_a_strip_and_picking_one_shows_and_reuses_its_seed(
    browser: Browser, served: str
) -> None:
    page = _open(browser, served)
    page.get_by_label("Images").fill("3")
    _generate(page, seed=21)

    expect(page.get_by_role("img", name=re.compile(r"^Image \d, seed \d+$"))).to_have_count(3)
    expect(page.locator("#result-meta")).to_contain_text("seed 21")
    page.get_by_role("img", name="Image 3, seed 23").click()

    expect(page.locator("#result-meta")).to_contain_text("seed 23")
    result = _latest_job(served)["result"]
    assert isinstance(result, dict)
    third = result["images"][2]["url"]
    expect(page.get_by_role("link", name="Download")).to_have_attribute("href", third)
    page.get_by_role("button", name="Reuse last").click()
    expect(page.get_by_label("Seed")).to_have_value("23")
    page.close()


def _see_progress_then_the_result(page: Page, backend: GatedBackend, seed: int) -> None:
    backend.wait_for_step()
    expect(page.locator("#progress-box")).to_be_in_viewport()
    backend.release(1000)
    expect(page.locator("#result-meta")).to_contain_text(f"seed {seed}")
    _wait_for_result_image(page)
    expect(page.get_by_role("img", name=re.compile("^Generated"))).to_be_in_viewport(ratio=0.9)


def test_progress_and_result_stay_in_view_when_generating_from_the_bottom_of_a_long_form(
    browser: Browser, gated: tuple[str, GatedBackend]
) -> None:
    base_url, backend = gated
    page = _open(browser, base_url)
    page.get_by_label("Prompt", exact=True).fill("a fox seen from afar")
    page.get_by_label("Seed").fill("8")
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")

    page.get_by_role("button", name="Generate").click()

    _see_progress_then_the_result(page, backend, seed=8)
    page.close()


def test_on_a_phone_generating_from_the_prompt_scrolls_progress_and_result_into_view(
    browser: Browser, gated: tuple[str, GatedBackend]
) -> None:
    base_url, backend = gated
    page = _open(browser, base_url, viewport={"width": 400, "height": 800})
    page.get_by_label("Seed").fill("9")
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a fox on a phone")

    prompt.press("Control+Enter")

    _see_progress_then_the_result(page, backend, seed=9)
    page.close()


def test_generating_without_a_prompt_says_what_to_write_beside_the_prompt_and_sends_nothing(
    browser: Browser, served: str
) -> None:
    page = _open(browser, served)
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)

    page.get_by_role("button", name="Generate").click()

    expect(page.get_by_role("alert")).to_have_text("Write a prompt first: describe what to draw.")
    expect(page.get_by_label("Prompt", exact=True)).to_be_focused()
    assert posted == []
    page.get_by_label("Prompt", exact=True).fill("a fox")
    expect(page.get_by_role("alert")).to_have_count(0)
    page.close()


def test_a_model_without_weights_says_in_one_sentence_what_to_do(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    # No weights are on this machine and the Hub is unreachable (HF_HUB_OFFLINE): the job fails at load.
    page.get_by_label("Model").select_option("sd-turbo")
    _generate(page)

    alert = page.get_by_role("alert")
    expect(alert.locator("strong")).to_have_text(
        "This model's weights are not on this machine: choose another model, or pull its weights first (see Details)."
    )
    expect(alert.get_by_text("imageforge models pull sd-turbo")).to_be_hidden()
    page.close()


def test_a_server_that_stopped_is_reported_as_such_not_as_failed_to_fetch(
    browser: Browser, service: ImageService
) -> None:
    with serving_app(create_app(service)) as base_url:
        page = _open(browser, base_url)

    _generate(page)

    expect(page.get_by_role("alert")).to_have_text(
        "The server does not answer: check that `imageforge serve` is still running, then try again."
    )
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    page.close()


def test_restoring_an_edit_from_history_restores_its_mode_input_image_and_strength(
    browser: Browser, served: str
) -> None:
    page = _open(browser, served)
    _generate(page, prompt="a fox to edit", seed=3)
    expect(page.locator("#result-meta")).to_contain_text("seed 3")
    _wait_for_result_image(page)
    page.get_by_role("button", name="Use as input").click()
    expect(page.locator("#input-image")).to_have_attribute("src", re.compile(r"^data:image/png"))
    sent = page.locator("#input-image").get_attribute("src")
    page.get_by_label(re.compile("^Strength")).fill("0.3")
    _generate(page, prompt="the fox at night", seed=4)
    expect(page.locator("#result-meta")).to_contain_text("seed 4")
    page.get_by_label("Text to image").check()

    page.get_by_role("button", name="Restore: the fox at night").click()

    expect(page.get_by_label("Edit (image to image)")).to_be_checked()
    expect(page.get_by_label(re.compile("^Strength"))).to_have_value("0.3")
    expect(page.locator("#input-image")).to_have_attribute("src", sent or "")
    expect(page.locator("#input-image")).to_be_visible()
    page.close()


def test_choosing_a_second_style_replaces_the_first_around_the_same_subject(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a paper plane")

    page.get_by_label("Style").select_option("photo")
    page.get_by_label("Style").select_option("sketch")

    expect(prompt).to_have_value(re.compile(r"^a graphite pencil sketch of a paper plane, "))
    assert "photograph" not in prompt.input_value()
    assert "50mm" not in prompt.input_value()
    expect(page.get_by_label("Negative prompt")).to_have_value(re.compile(r"^colour, paint"))
    page.get_by_label("Style").select_option("")
    expect(prompt).to_have_value("a paper plane")
    expect(page.get_by_label("Negative prompt")).to_have_value("")
    page.close()


def test_replacing_a_styled_prompt_drops_the_style_and_its_negative_prompt(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a paper plane")
    page.get_by_label("Style").select_option("photo")
    expect(page.get_by_label("Negative prompt")).not_to_have_value("")

    prompt.fill("a lighthouse at dusk")

    expect(page.get_by_label("Negative prompt")).to_have_value("")
    expect(page.get_by_label("Style")).to_have_value("")
    page.close()


def test_a_style_on_an_empty_prompt_waits_for_the_subject_at_the_cursor(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    prompt = page.get_by_label("Prompt", exact=True)

    page.get_by_label("Style").select_option("photo")

    assert "your subject" not in prompt.input_value()
    expect(prompt).to_be_focused()
    page.keyboard.type("a red bicycle")
    expect(prompt).to_have_value(re.compile(r"^a photograph of a red bicycle, natural light"))
    page.close()


def _posted_jobs(page: Page) -> list[str]:
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    return posted


def test_a_seed_that_is_not_a_number_is_refused_beside_the_field_with_the_declared_range(
    browser: Browser, served: str
) -> None:
    page = _open(browser, served)
    posted = _posted_jobs(page)
    seed = httpx.get(served + "/openapi.json").json()["components"]["schemas"]["JobBody"]["properties"]["seed"]
    maximum = int(next(kind["maximum"] for kind in seed["anyOf"] if kind.get("type") == "integer"))

    _generate(page, seed="abc")

    expect(page.get_by_role("alert")).to_have_text(
        f"Seed must be a whole number from 0 to {maximum}, or empty for a random one."
    )
    expect(page.get_by_label("Seed")).to_be_focused()
    _generate(page, seed=maximum + 1)
    expect(page.get_by_role("alert")).to_contain_text("Seed must be a whole number")
    assert posted == []
    page.close()


def test_a_file_that_is_not_an_image_is_refused_when_chosen(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    page.get_by_label("Edit (image to image)").check()

    page.get_by_label("Input image").set_input_files(
        files=[FilePayload(name="notes.png", mimeType="image/png", buffer=b"these are words, not pixels")]
    )

    expect(page.get_by_role("alert")).to_have_text("That file is not an image: choose a PNG, JPEG or WebP file.")
    assert page.locator("#input-image").get_attribute("src") is None
    page.close()


def test_inpainting_with_an_empty_mask_asks_to_paint_first(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    _inpaint_a_result(page)
    posted = _posted_jobs(page)

    _generate(page, prompt="a snowy owl", seed=6)

    expect(page.get_by_role("alert")).to_have_text("Paint the area to repaint on the image first.")
    assert posted == []
    page.close()


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_choosing_an_input_image_clears_the_request_to_choose_one(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    page.get_by_label("Edit (image to image)").check()
    _generate(page)
    expect(page.get_by_role("alert")).to_have_text("Choose an input image first, or use a result as input.")

    page.get_by_label("Input image").set_input_files(
        files=[FilePayload(name="orange.png", mimeType="image/png", buffer=_png(64, 64))]
    )

    expect(page.locator("#input-image")).to_have_attribute("src", re.compile(r"^data:image/png"))
    expect(page.get_by_role("alert")).to_have_count(0)
    page.close()


def test_a_failed_generation_hides_the_previous_result(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    _generate(page, seed=3)
    expect(page.locator("#result-meta")).to_contain_text("seed 3")
    page.get_by_label("Model").select_option("sd-turbo")

    _generate(page, seed=4)

    expect(page.get_by_role("alert")).to_contain_text("weights are not on this machine")
    expect(page.locator("#result")).to_be_hidden()
    page.close()


def test_on_a_phone_use_as_input_names_the_result_in_the_file_field(browser: Browser, served: str) -> None:
    page = _open(browser, served, viewport={"width": 400, "height": 800})
    _generate(page, seed=3)
    expect(page.locator("#result-meta")).to_contain_text("seed 3")
    _wait_for_result_image(page)

    page.get_by_role("button", name="Use as input").click()

    expect(page.locator("#input-image")).to_have_attribute("src", re.compile(r"^data:image/png"))
    files = page.get_by_label("Input image").evaluate("input => [...input.files].map(file => file.name)")
    assert files == ["result-seed-3.png"]
    page.close()


def test_an_edit_shows_and_makes_the_real_output_size_of_its_input(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    page.get_by_label("Edit (image to image)").check()
    page.get_by_label("Input image").set_input_files(
        files=[FilePayload(name="wide.png", mimeType="image/png", buffer=_png(300, 200))]
    )

    size = page.get_by_label("Size", exact=True)
    expect(size.locator("option:checked")).to_have_text("296\N{MULTIPLICATION SIGN}200 (the input's size)")
    expect(size).not_to_contain_text("model default")
    _generate(page, prompt="the same, in blue", seed=2)

    expect(page.locator("#result-meta")).to_contain_text("296\N{MULTIPLICATION SIGN}200")
    page.get_by_label("Text to image").check()
    expect(size.locator("option:checked")).to_contain_text("(model default)")
    page.close()


def test_a_reload_picks_up_the_running_job_with_its_progress(browser: Browser, gated: tuple[str, GatedBackend]) -> None:
    base_url, backend = gated
    page = _open(browser, base_url)
    _generate(page, seed=13)
    backend.wait_for_step()

    page.reload()

    expect(page.locator("#progress-text")).to_have_text(re.compile(r"step 1 of \d+"))
    expect(page.get_by_role("button", name="Generate")).to_be_disabled()
    backend.release(1000)
    expect(page.locator("#result-meta")).to_contain_text("seed 13")
    expect(page.get_by_role("button", name="Generate")).to_be_enabled()
    page.close()


def test_a_tab_behind_a_running_job_shows_its_place_in_line_also_after_a_reload(
    browser: Browser, gated: tuple[str, GatedBackend]
) -> None:
    base_url, backend = gated
    first = _open(browser, base_url)
    _generate(first, prompt="the first job", seed=14)
    backend.wait_for_step()
    second = _open(browser, base_url)

    _generate(second, prompt="the second job", seed=15)
    expect(second.locator("#progress-text")).to_have_text("queued (position 1)")
    second.reload()

    expect(second.locator("#progress-text")).to_have_text("queued (position 1)")
    expect(second.get_by_role("button", name="Generate")).to_be_disabled()
    backend.release(1000)
    expect(second.locator("#result-meta")).to_contain_text("seed 15")
    expect(first.locator("#result-meta")).to_contain_text("seed 14")
    first.close()
    second.close()


def test_models_say_why_they_are_off_whether_their_weights_are_here_and_their_notice(
    browser: Browser, served: str
) -> None:
    page = _open(browser, served)
    catalog = {model["key"]: model for model in httpx.get(served + "/models").json()["models"]}
    model = page.get_by_label("Model")

    expect(model.locator("option[value=flux-q4]")).to_have_text("flux-q4 — off on this server")
    expect(page.locator("#model-off")).to_contain_text(catalog["flux-q4"]["guard"]["reason"])
    expect(page.locator("#model-off")).to_contain_text("Set ALLOW_FLUX=1")
    expect(model.locator("option[value=sd-turbo]")).to_contain_text("(not downloaded)")
    expect(model.locator("option[value=tiny]")).not_to_contain_text("not downloaded")
    model.select_option("sd-turbo")
    expect(page.locator("#model-info")).to_contain_text(", 1 step,")
    expect(page.locator("#model-info")).to_contain_text("imageforge models pull sd-turbo")
    model.select_option("sdxl-portrait")
    expect(page.locator("#model-info")).to_contain_text(catalog["sdxl-portrait"]["notice"])
    page.close()


def test_a_cached_repeat_says_it_came_from_the_cache_and_is_listed_once_in_history(
    browser: Browser, served: str
) -> None:
    page = _open(browser, served)
    _generate(page, prompt="a fox, twice", seed=31)
    expect(page.locator("#result-meta")).to_contain_text("seed 31")
    expect(page.locator("#history img")).to_have_count(1)
    first_job = _latest_job(served)["job_id"]

    _generate(page, prompt="a fox, twice", seed=31)

    expect(page.locator("#result-meta")).to_contain_text("from the cache")
    assert _latest_job(served)["job_id"] != first_job
    page.reload()  # the history as a fresh visit lists it
    expect(page.locator("#history img")).to_have_count(1)
    page.close()


def test_pressing_enter_on_generate_keeps_the_keyboard_focus_on_cancel_then_generate(
    browser: Browser, gated: tuple[str, GatedBackend]
) -> None:
    base_url, backend = gated
    page = _open(browser, base_url)
    page.get_by_label("Prompt", exact=True).fill("a fox by keyboard")
    page.get_by_label("Seed").fill("17")

    page.get_by_role("button", name="Generate").press("Enter")

    backend.wait_for_step()
    expect(page.get_by_role("button", name="Cancel")).to_be_focused()
    backend.release(1000)
    expect(page.locator("#result-meta")).to_contain_text("seed 17")
    expect(page.get_by_role("button", name="Generate")).to_be_focused()
    page.close()


def test_the_mask_can_be_painted_by_keyboard(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    _inpaint_a_result(page)
    page.get_by_label("Brush size").focus()

    page.keyboard.press("Shift+Tab")
    canvas = page.get_by_label("Mask: paint the area to repaint")
    expect(canvas).to_be_focused()
    page.keyboard.press("Space")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Space")
    with page.expect_request(lambda r: r.url.endswith("/jobs") and r.method == "POST") as submitted:
        _generate(page, prompt="a snowy owl", seed=6)

    body = submitted.value.post_data_json
    assert body is not None
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask_image"].split(",", 1)[1]))).convert("L")
    assert mask.getpixel((mask.width // 2, mask.height // 2)) == 255
    assert mask.getpixel((0, 0)) == 0
    page.close()


def test_the_policy_box_shows_all_of_what_is_excluded_apart_from_what_is_added(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    policy = httpx.get(served + "/policy").json()

    excluded = page.locator("#policy-excluded")
    added = page.locator("#policy-added")
    expect(excluded).to_have_text(policy["negative_prompt"])
    expect(excluded).not_to_contain_text(policy["no_text_directive"])
    expect(added).to_contain_text(policy["no_text_directive"])
    # Nothing is cut off: the box is as tall as its text.
    assert page.locator("#policy").evaluate("box => box.scrollHeight <= box.clientHeight")
    page.close()


def test_random_draws_a_seed_within_the_declared_range_and_shows_it(browser: Browser, served: str) -> None:
    page = _open(browser, served)

    page.get_by_role("button", name="Random").click()
    first = page.get_by_label("Seed").input_value()
    page.get_by_role("button", name="Random").click()

    assert re.fullmatch(r"\d+", first)
    assert 0 <= int(first) <= 4294967295
    assert page.get_by_label("Seed").input_value() != first
    page.close()


def test_the_page_loads_without_a_missing_file_not_even_a_favicon(browser: Browser, served: str) -> None:
    page = browser.new_page()
    missing: list[str] = []
    page.on("response", lambda r: missing.append(r.url) if r.status >= 400 else None)
    page.goto(served + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    icon = page.locator("link[rel=icon]").get_attribute("href")

    assert icon is not None
    assert httpx.get(served + icon).status_code == 200
    assert missing == []
    page.close()


def test_after_a_reload_restoring_an_inpaint_brings_back_its_input_image_and_mask(
    browser: Browser, served: str
) -> None:
    page = _open(browser, served)
    page.get_by_label("Inpaint").check()
    page.get_by_label("Input image").set_input_files(
        files=[FilePayload(name="orange.png", mimeType="image/png", buffer=_png(64, 64))]
    )
    expect(page.locator("#input-image")).to_have_attribute("src", re.compile(r"^data:image/png"))
    page.get_by_label("Mask: paint the area to repaint").focus()
    page.keyboard.press("Space")
    _generate(page, prompt="an inpainted fox", seed=41)
    expect(page.locator("#result-meta")).to_contain_text("seed 41")

    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.get_by_role("button", name="Restore: an inpainted fox").click()

    expect(page.get_by_label("Inpaint")).to_be_checked()
    page.wait_for_function("() => document.querySelector('#input-image').naturalWidth === 64")
    painted = "c => { const d = c.getContext('2d').getImageData(32, 32, 1, 1).data; return d[3] > 0 && d[0] === 255 }"
    page.wait_for_function(f"() => ({painted})(document.querySelector('#mask'))")
    corner = "c => c.getContext('2d').getImageData(0, 0, 1, 1).data[3]"
    assert page.get_by_label("Mask: paint the area to repaint").evaluate(corner) == 0
    page.close()


def test_the_advanced_sampler_and_schedule_offer_the_servers_choices_and_go_with_the_request(
    browser: Browser, served: str, service: ImageService
) -> None:
    page = _open(browser, served)
    page.get_by_text("Advanced").click()

    expect(page.get_by_label("Sampler").locator("option")).to_have_count(len(Sampler) + 1)
    page.get_by_label("Sampler").select_option("dpmpp_2m")
    page.get_by_label("Noise schedule").select_option("karras")
    _generate(page, seed=5)
    _wait_for_result_image(page)

    [job] = service.list_jobs()
    assert (job.payload["sampler"], job.payload["schedule"]) == ("dpmpp_2m", "karras")
    page.close()


def test_the_advanced_loras_list_the_servers_folder_go_with_the_request_and_come_back_with_a_restore(
    browser: Browser, loras: Path, served: str, service: ImageService
) -> None:
    page = _open(browser, served)
    page.get_by_text("Advanced").click()

    # The folder's safetensors files, not its pickle.
    expect(page.locator("#loras .lora")).to_have_count(2)
    expect(page.locator("#loras-none")).to_be_hidden()
    page.get_by_label("one (", exact=False).check()
    page.get_by_label("Weight of one").fill("3")
    _generate(page, seed=5)
    expect(page.get_by_role("alert")).to_have_text("The weight of one must be a number from -2 to 2.")
    expect(page.get_by_label("Weight of one")).to_be_focused()

    page.get_by_label("Weight of one").fill("0.5")
    _generate(page, prompt="a fox with a LoRA", seed=5)
    _wait_for_result_image(page)
    [job] = service.list_jobs()
    assert job.payload["loras"] == [{"name": "one", "weight": 0.5}]

    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.get_by_text("Advanced").click()
    expect(page.get_by_label("one (", exact=False)).not_to_be_checked()
    page.get_by_role("button", name="Restore: a fox with a LoRA").click()
    expect(page.get_by_label("one (", exact=False)).to_be_checked()
    expect(page.get_by_label("Weight of one")).to_have_value("0.5")
    expect(page.get_by_label("two (", exact=False)).not_to_be_checked()
    page.close()


def test_without_loras_the_advanced_section_says_where_they_come_from(browser: Browser, served: str) -> None:
    page = _open(browser, served)
    page.get_by_text("Advanced").click()

    expect(page.locator("#loras .lora")).to_have_count(0)
    expect(page.locator("#loras-none")).to_contain_text("IMAGEFORGE_LORA_DIR")
    page.close()
