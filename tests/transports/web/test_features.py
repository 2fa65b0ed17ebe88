"""The web UI's features beyond the basics (zoom, batch grid, queue, drop and paste, dark mode, kept settings), in
a real headless Chromium against a real server on loopback, on the offline `tiny` model."""

from __future__ import annotations

import io
import re
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, FloatRect, Page, ViewportSize, expect

from tests.gated import GatedBackend
from tests.transports.web.test_page import (
    _generate,
    _open,
    _wait_for_result_image,
    browser,
    gated,
    served,
)

# The fixtures are shared with the base page's tests; naming them here is what makes pytest find them.
__all__ = ["browser", "gated", "served"]
pytestmark = pytest.mark.slow
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
PHONE: ViewportSize = {"width": 390, "height": 844}


def _open_at(browser: Browser, base_url: str, viewport: ViewportSize) -> Page:
    page = _open(browser, base_url)
    page.set_viewport_size(viewport)
    return page


# A 96x64 PNG made in the page itself, as a File: what a drop or a paste hands the page.
MAKE_FILE = """async () => {
  const canvas = document.createElement('canvas');
  canvas.width = 96; canvas.height = 64;
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#c33'; ctx.fillRect(0, 0, 96, 64);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
  const transfer = new DataTransfer();
  transfer.items.add(new File([blob], 'fox.png', { type: 'image/png' }));
  return transfer;
}"""


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_clicking_the_result_opens_it_at_full_size_and_escape_closes_it(
    browser: Browser, served: str, viewport: ViewportSize
) -> None:
    page = _open_at(browser, served, viewport)
    page.get_by_label("Size", exact=True).select_option("768x768")
    _generate(page, seed=8)
    expect(page.locator("#result-meta")).to_contain_text("seed 8")
    _wait_for_result_image(page)
    shown = page.locator("#result-image").bounding_box()
    assert shown is not None
    assert shown["width"] < 768  # the page fits it to its column

    page.locator("#result-image").click()

    dialog = page.get_by_role("dialog", name="Full-size image")
    expect(dialog).to_be_visible()
    full = dialog.get_by_role("img")
    page.wait_for_function("() => document.querySelector('#zoom img').naturalWidth > 0")
    box = full.bounding_box()
    assert box is not None
    assert round(box["width"]) == 768
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    page.close()


def test_a_batch_shows_its_images_as_a_grid_of_large_thumbnails(browser: Browser, served: str) -> None:
    page = _open_at(browser, served, DESKTOP)
    page.get_by_label("Images").fill("4")
    _generate(page, seed=31)

    thumbs = page.get_by_role("img", name=re.compile(r"^Image \d, seed \d+$"))
    expect(thumbs).to_have_count(4)
    boxes = [thumbs.nth(i).bounding_box() for i in range(4)]
    assert all(box is not None and box["width"] >= 140 for box in boxes)
    rows = {round(box["y"]) for box in boxes if box is not None}
    assert len(rows) < 4  # side by side, wrapping into rows where the column is narrow
    page.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_prompts_added_while_one_runs_are_queued_with_positions_and_cancel_from_the_panel(
    browser: Browser, gated: tuple[str, GatedBackend], viewport: ViewportSize
) -> None:
    base_url, backend = gated
    page = _open_at(browser, base_url, viewport)
    _generate(page, prompt="a running fox", seed=1)
    backend.wait_for_step()

    page.get_by_label("Prompt", exact=True).fill("a queued owl" + ", in a snowy forest at dawn" * 6)
    page.get_by_role("button", name="Add to queue").click()
    page.get_by_label("Prompt", exact=True).fill("a queued cat")
    page.get_by_role("button", name="Add to queue").click()

    queue = page.get_by_role("region", name="Queue")
    # The running job is the one the form follows, with its own progress and Cancel above.
    expect(queue.get_by_role("listitem")).to_have_count(2)
    expect(queue.get_by_role("listitem").filter(has_text="a queued owl")).to_contain_text("queued, position 1")
    expect(queue.get_by_role("listitem").filter(has_text="a queued cat")).to_contain_text("queued, position 2")

    cancel = queue.get_by_role("button", name="Cancel a queued owl")
    cancel.scroll_into_view_if_needed()
    right = cancel.bounding_box()
    assert right is not None
    assert right["x"] + right["width"] <= viewport["width"]  # a long prompt never pushes Cancel off the screen
    cancel.click()
    expect(queue.get_by_role("listitem").filter(has_text="a queued owl")).to_have_count(0)
    expect(queue.get_by_role("listitem").filter(has_text="a queued cat")).to_contain_text("queued, position 1")

    backend.release(1000)
    expect(page.get_by_role("button", name="Restore: a queued cat")).to_be_visible()
    expect(page.get_by_role("img", name="Generated: a queued cat")).to_be_visible()
    expect(queue).to_be_hidden()
    page.close()


def test_an_image_dropped_on_the_page_becomes_the_input_of_an_edit(browser: Browser, served: str) -> None:
    page = _open_at(browser, served, DESKTOP)

    transfer = page.evaluate_handle(MAKE_FILE)
    page.dispatch_event("main", "drop", {"dataTransfer": transfer})

    expect(page.get_by_label("Edit (image to image)")).to_be_checked()
    expect(page.get_by_role("img", name="Input image")).to_be_visible()
    page.wait_for_function("() => document.querySelector('#input-image').naturalWidth === 96")
    page.close()


def test_an_image_pasted_into_the_page_becomes_the_input_and_pasted_text_stays_text(
    browser: Browser, served: str
) -> None:
    page = _open_at(browser, served, DESKTOP)
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a fox")

    paste = (
        "(el, transfer) => el.dispatchEvent("
        "new ClipboardEvent('paste', {clipboardData: transfer, bubbles: true, cancelable: true}))"
    )
    # Text copied from an office program comes with a picture of itself: in the prompt, that pastes as text
    # (dispatchEvent answers false once the page has taken a paste over with preventDefault).
    with_text = page.evaluate_handle(
        f"async () => {{ const t = await ({MAKE_FILE})(); t.setData('text/plain', 'x'); return t }}"
    )
    assert prompt.evaluate(paste, with_text) is True

    transfer = page.evaluate_handle(MAKE_FILE)
    assert prompt.evaluate(paste, transfer) is False

    expect(page.get_by_label("Edit (image to image)")).to_be_checked()
    page.wait_for_function("() => document.querySelector('#input-image').naturalWidth === 96")
    expect(prompt).to_have_value("a fox")
    page.close()


def _contrast(page: Page, selector: str) -> float:
    """The WCAG contrast ratio of an element's text colour on the background of its nearest painted ancestor."""
    return float(
        page.evaluate(
            """(selector) => {
              const rgb = (s) => s.match(/[\\d.]+/g).slice(0, 4).map(Number);
              const lum = ([r, g, b]) => {
                const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
                return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
              };
              const el = document.querySelector(selector);
              let bg = el;
              while (bg && (getComputedStyle(bg).backgroundColor === 'rgba(0, 0, 0, 0)')) bg = bg.parentElement;
              const a = lum(rgb(getComputedStyle(el).color));
              const b = lum(rgb(getComputedStyle(bg || document.body).backgroundColor));
              return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
            }""",
            selector,
        )
    )


def _luminance_of_background(page: Page, selector: str) -> float:
    return float(
        page.evaluate(
            "(s) => getComputedStyle(document.querySelector(s)).backgroundColor.match(/\\d+/g).slice(0, 3)"
            ".map(Number).reduce((a, b) => a + b, 0) / 765",
            selector,
        )
    )


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_page_follows_the_browsers_colour_scheme_and_keeps_text_readable(
    browser: Browser, served: str, scheme: str
) -> None:
    page = _open_at(browser, served, DESKTOP)
    page.emulate_media(color_scheme=scheme)  # type: ignore[arg-type]

    panel = _luminance_of_background(page, "#form")
    assert (panel < 0.3) if scheme == "dark" else (panel > 0.8)
    for selector in ["label[for=prompt]", "#prompt", "#model-info", "#policy", "#generate", "#result-panel h2"]:
        assert _contrast(page, selector) >= 4.5, selector
    page.close()


def test_the_forms_settings_are_kept_across_a_reload(browser: Browser, served: str) -> None:
    page = _open_at(browser, served, DESKTOP)
    page.get_by_label("Prompt", exact=True).fill("a kept fox")
    page.get_by_label("Negative prompt").fill("blurry")
    page.get_by_label("Size", exact=True).select_option("768x512")
    page.get_by_label("Images").fill("2")

    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")

    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a kept fox")
    expect(page.get_by_label("Negative prompt")).to_have_value("blurry")
    expect(page.get_by_label("Size", exact=True)).to_have_value("768x512")
    expect(page.get_by_label("Images")).to_have_value("2")
    page.close()


def test_prompts_that_were_generated_are_offered_again_after_a_reload(browser: Browser, served: str) -> None:
    page = _open_at(browser, served, DESKTOP)
    _generate(page, prompt="a first fox", seed=1)
    expect(page.locator("#result-meta")).to_contain_text("seed 1")
    _generate(page, prompt="a second fox", seed=2)
    expect(page.locator("#result-meta")).to_contain_text("seed 2")

    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    recent = page.get_by_label("Recent prompts")
    expect(recent.locator("option")).to_have_text(["Recent prompts…", "a second fox", "a first fox"])
    recent.select_option("a first fox")

    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a first fox")
    page.close()


def test_copy_buttons_put_the_shown_images_seed_and_prompt_on_the_clipboard(browser: Browser, served: str) -> None:
    context = browser.new_context(viewport=DESKTOP, permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(served + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    page.get_by_label("Images").fill("2")
    _generate(page, prompt="a copied fox", seed=40)
    expect(page.locator("#result-meta")).to_contain_text("seed 40")
    page.get_by_role("img", name="Image 2, seed 41").click()

    page.get_by_role("button", name="Copy seed").click()
    expect(page.get_by_role("button", name="Seed copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == "41"
    page.get_by_role("button", name="Copy prompt").click()
    assert page.evaluate("navigator.clipboard.readText()") == "a copied fox"
    context.close()


def test_history_thumbnails_show_their_prompt_underneath(browser: Browser, served: str) -> None:
    page = _open_at(browser, served, PHONE)
    _generate(page, prompt="a captioned fox", seed=9)

    item = page.get_by_role("button", name="Restore: a captioned fox")
    expect(item).to_contain_text("a captioned fox")
    image = item.get_by_role("img").bounding_box()
    text = item.locator(".history-caption").bounding_box()
    assert image is not None
    assert text is not None
    assert text["y"] >= image["y"] + image["height"] - 1
    page.close()


def _inpaint_a_dropped_image(page: Page, colour: str = "#c33") -> None:
    """Drop a 384x256 image of one colour and switch to Inpaint."""
    transfer = page.evaluate_handle(MAKE_FILE.replace("96", "384").replace("64", "256").replace("#c33", colour))
    page.dispatch_event("main", "drop", {"dataTransfer": transfer})
    page.wait_for_function("() => document.querySelector('#mask').width === 384")
    page.get_by_label("Inpaint").check()


def _mask_box(page: Page) -> FloatRect:
    """The mask canvas's box on screen, scrolled into view: the mouse moves in the viewport."""
    canvas = page.get_by_label("Mask: paint the area to repaint")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    assert box is not None
    return box


def _stroke(page: Page, y: float = 0.5) -> None:
    box = _mask_box(page)
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * y, steps=5)
    page.mouse.up()


def _painted(page: Page, x: float, y: float) -> bool:
    """Whether the mask is painted at (x, y), as fractions of its size."""
    return bool(
        page.evaluate(
            "([x, y]) => { const c = document.querySelector('#mask');"
            " return c.getContext('2d').getImageData(c.width * x, c.height * y, 1, 1).data[3] > 0 }",
            [x, y],
        )
    )


def test_the_mask_shows_in_a_visible_colour_and_the_eraser_takes_paint_away(browser: Browser, served: str) -> None:
    page = _open_at(browser, served, DESKTOP)
    # A light input: a mask shown in white at half opacity would hardly show on it.
    _inpaint_a_dropped_image(page, colour="#f4f4f4")

    _stroke(page)
    assert _painted(page, 0.5, 0.5)
    page.mouse.move(0, 0)
    shot = Image.open(io.BytesIO(page.get_by_label("Mask: paint the area to repaint").screenshot())).convert("RGB")
    painted = shot.getpixel((shot.width // 2, shot.height // 2))
    unpainted = shot.getpixel((shot.width // 2, shot.height * 9 // 10))
    assert isinstance(painted, tuple)
    assert isinstance(unpainted, tuple)
    assert sum(abs(a - b) for a, b in zip(painted, unpainted, strict=True)) > 90

    page.get_by_role("button", name="Eraser").click()
    expect(page.get_by_role("button", name="Eraser")).to_have_attribute("aria-pressed", "true")
    _stroke(page)
    assert not _painted(page, 0.5, 0.5)
    page.close()


def test_mask_undo_and_redo_take_back_strokes_and_leave_the_prompts_text_alone(browser: Browser, served: str) -> None:
    page = _open_at(browser, served, DESKTOP)
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a snowy owl")
    _inpaint_a_dropped_image(page)
    _stroke(page, y=0.3)
    _stroke(page, y=0.7)

    page.keyboard.press("Control+z")
    assert _painted(page, 0.5, 0.3)
    assert not _painted(page, 0.5, 0.7)
    page.get_by_role("button", name="Undo").click()
    assert not _painted(page, 0.5, 0.3)
    expect(page.get_by_role("button", name="Undo")).to_be_disabled()
    page.get_by_role("button", name="Redo").click()
    page.get_by_label("Mask: paint the area to repaint").focus()
    page.keyboard.press("Control+Shift+z")
    assert _painted(page, 0.5, 0.3)
    assert _painted(page, 0.5, 0.7)

    expect(prompt).to_have_value("a snowy owl")
    page.close()


def test_mask_invert_and_the_brush_size_as_a_number_with_an_outline_cursor_of_that_size(
    browser: Browser, served: str
) -> None:
    page = _open_at(browser, served, DESKTOP)
    _inpaint_a_dropped_image(page)
    page.get_by_label("Brush diameter (px)").fill("40")
    expect(page.get_by_label("Brush size", exact=True)).to_have_value("40")

    box = _mask_box(page)
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    outline = page.locator("#brush-cursor")
    expect(outline).to_be_visible()
    ring = outline.bounding_box()
    assert ring is not None
    assert round(ring["width"]) == 40
    assert abs(ring["x"] + 20 - (box["x"] + box["width"] / 2)) <= 1

    _stroke(page)
    page.get_by_role("button", name="Invert").click()
    assert not _painted(page, 0.5, 0.5)
    assert _painted(page, 0.05, 0.05)
    # The cut and the cursor are styled from the script, which the page's CSP (no inline styles) allows.
    assert page.evaluate("window.cspViolations") == []
    page.close()


def test_an_edits_result_can_be_wiped_against_its_input_with_a_before_after_slider(
    browser: Browser, served: str
) -> None:
    page = _open_at(browser, served, DESKTOP)
    _generate(page, seed=3)
    expect(page.locator("#result-meta")).to_contain_text("seed 3")
    expect(page.get_by_label("Before / after")).to_be_hidden()  # nothing to compare a text-to-image result with

    transfer = page.evaluate_handle(MAKE_FILE.replace("96", "256").replace("64", "256"))
    page.dispatch_event("main", "drop", {"dataTransfer": transfer})
    expect(page.get_by_label("Edit (image to image)")).to_be_checked()
    _generate(page, prompt="the fox at night", seed=4)
    expect(page.locator("#result-meta")).to_contain_text("seed 4")
    _wait_for_result_image(page)

    slider = page.get_by_label("Before / after")
    expect(slider).to_be_visible()
    frame = page.locator("#compare-frame")

    def centre() -> tuple[int, ...]:
        page.mouse.move(0, 0)
        shot = Image.open(io.BytesIO(frame.screenshot())).convert("RGB")
        pixel = shot.getpixel((shot.width // 2, shot.height // 2))
        assert isinstance(pixel, tuple)
        return pixel

    slider.fill("100")
    assert centre() == (204, 51, 51)  # the red input
    slider.fill("0")
    assert centre() != (204, 51, 51)  # the result
    # The cut and the cursor are styled from the script, which the page's CSP (no inline styles) allows.
    assert page.evaluate("window.cspViolations") == []
    page.close()


def test_a_result_smaller_than_the_window_is_enlarged_to_fill_it_when_zoomed(browser: Browser, served: str) -> None:
    page = _open_at(browser, served, DESKTOP)
    page.get_by_label("Size", exact=True).select_option("256x256")
    _generate(page, seed=12)
    expect(page.locator("#result-meta")).to_contain_text("seed 12")
    _wait_for_result_image(page)

    page.locator("#result-image").click()

    full = page.get_by_role("dialog", name="Full-size image").get_by_role("img")
    expect(full).to_be_visible()
    page.wait_for_function("() => parseFloat(document.querySelector('#zoom img').style.width) > 0")
    box = full.bounding_box()
    assert box is not None
    assert box["height"] > 0.8 * 800
    page.close()


def test_all_results_past_historys_twenty_open_as_a_gallery_and_one_restores_from_it(
    browser: Browser, served: str
) -> None:
    for i in range(22):
        reply = httpx.post(f"{served}/generate", json={"prompt": f"fox number {i}", "seed": i}, timeout=120)
        assert reply.status_code == 200
    page = _open_at(browser, served, DESKTOP)
    expect(page.locator("#history img")).to_have_count(20)

    page.get_by_role("button", name="All results").click()

    gallery = page.get_by_role("dialog", name="All results")
    expect(gallery).to_contain_text("All results (22)")
    expect(gallery.get_by_role("img")).to_have_count(22)
    gallery.get_by_role("button", name="Restore: fox number 0", exact=True).click()
    expect(gallery).to_be_hidden()
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("fox number 0")
    expect(page.get_by_label("Seed")).to_have_value("0")
    page.close()


def test_a_result_deleted_from_the_gallery_after_confirming_leaves_it_history_and_the_disk(
    browser: Browser, served: str
) -> None:
    for prompt in ("a fox to keep", "a fox to delete"):
        reply = httpx.post(f"{served}/generate", json={"prompt": prompt, "seed": 1}, timeout=120)
        assert reply.status_code == 200
    jobs = {job["result"]["prompt"]: job for job in httpx.get(f"{served}/jobs").json()["jobs"]}
    doomed = jobs["a fox to delete"]
    page = _open_at(browser, served, DESKTOP)
    expect(page.locator("#history img")).to_have_count(2)
    page.get_by_role("button", name="All results").click()
    gallery = page.get_by_role("dialog", name="All results")

    gallery.get_by_role("button", name="Delete: a fox to keep", exact=True).click()
    gallery.get_by_role("button", name="Keep", exact=True).click()
    gallery.get_by_role("button", name="Delete: a fox to delete", exact=True).click()
    gallery.get_by_role("button", name="Yes, delete: a fox to delete", exact=True).click()

    expect(gallery).to_contain_text("All results (1)")
    expect(gallery.get_by_role("button", name="Restore: a fox to delete")).to_have_count(0)
    expect(gallery.get_by_role("button", name="Restore: a fox to keep")).to_have_count(1)
    expect(page.locator("#history img")).to_have_count(1)
    assert httpx.get(doomed["links"]["self"]).status_code == 404
    assert httpx.get(doomed["links"]["image"]).status_code == 404
    assert not Path(doomed["result"]["output_path"]).exists()
    assert Path(jobs["a fox to keep"]["result"]["output_path"]).exists(), "Keep kept it"
    page.close()
