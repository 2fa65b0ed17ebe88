"""Style templates: the built-ins, the user's templates file, and filling in a subject."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from imageforge.domain import StyleTemplate
from imageforge.errors import InvalidRequest, TemplateNotFound
from imageforge.prompting.templates import BUILTIN_TEMPLATES, load_templates

BUILTIN_KEYS = ["whiteboard", "icon", "illustration", "photo", "sketch", "poster"]


def _templates_file(folder: Path, text: str) -> Path:
    path = folder / "templates.toml"
    path.write_text(text)
    return path


def test_the_six_builtin_styles_are_listed_in_order() -> None:
    assert [template.key for template in load_templates(None)] == BUILTIN_KEYS


@pytest.mark.parametrize("template", BUILTIN_TEMPLATES, ids=[t.key for t in BUILTIN_TEMPLATES])
def test_every_builtin_has_a_subject_placeholder_a_title_and_a_size_in_multiples_of_64(
    template: StyleTemplate,
) -> None:
    assert template.body.count("{subject}") == 1
    assert template.title
    assert template.description
    assert template.width % 64 == 0
    assert template.height % 64 == 0
    assert max(template.width, template.height) <= 1024


def test_builtin_sizes_suit_their_shapes() -> None:
    catalog = load_templates(None)

    assert (catalog.get("icon").width, catalog.get("icon").height) == (512, 512)
    assert catalog.get("poster").height > catalog.get("poster").width, "a poster is portrait"
    assert catalog.get("whiteboard").width > catalog.get("whiteboard").height, "a board is landscape"


def test_render_puts_the_stripped_subject_in_place_of_the_placeholder() -> None:
    template = StyleTemplate(key="t", title="T", description="", body="a {subject}, in {braces}", width=64, height=64)

    assert template.render("  red fox ") == "a red fox, in {braces}"


def test_render_refuses_an_empty_subject_with_a_hint() -> None:
    with pytest.raises(InvalidRequest, match="subject is empty") as caught:
        load_templates(None).get("photo").render("   ")

    assert "photo" in caught.value.hint


def test_start_gives_the_prompt_size_and_suggested_negative() -> None:
    start = load_templates(None).get("icon").start("a fox")

    assert start.prompt.startswith("a flat vector clipart icon of a fox, ")
    assert (start.key, start.subject, start.width, start.height) == ("icon", "a fox", 512, 512)
    assert start.negative_prompt == load_templates(None).get("icon").negative_prompt


def test_start_scales_a_size_over_the_servers_limit_down_keeping_its_shape() -> None:
    start = load_templates(None).get("whiteboard").start("a plan", max_side=512)

    assert (start.width, start.height) == (512, 384)


def test_an_unknown_key_names_the_keys_that_exist() -> None:
    with pytest.raises(TemplateNotFound) as caught:
        load_templates(None).get("watercolour")

    assert caught.value.code == "template_not_found"
    assert "whiteboard, icon, illustration, photo, sketch, poster" in caught.value.hint


def test_a_user_file_adds_templates_and_replaces_builtins_by_key(tmp_path: Path) -> None:
    path = _templates_file(
        tmp_path,
        '[templates.blueprint]\ntitle = "Blueprint"\nbody = "a blueprint of {subject}"\nwidth = 1024\nheight = 768\n'
        'negative_prompt = "colour"\n'
        '[templates.photo]\nbody = "a polaroid of {subject}"\n',
    )

    catalog = load_templates(path)

    assert [template.key for template in catalog] == [*BUILTIN_KEYS, "blueprint"]
    blueprint = catalog.get("blueprint")
    assert (blueprint.title, blueprint.width, blueprint.height, blueprint.negative_prompt) == (
        "Blueprint",
        1024,
        768,
        "colour",
    )
    photo = catalog.get("photo")
    assert photo.render("a fox") == "a polaroid of a fox"
    assert (photo.title, photo.description, photo.width, photo.height, photo.negative_prompt) == (
        "photo",
        "",
        512,
        512,
        "",
    ), "a replacement takes the defaults, nothing of the built-in"


INVALID_ENTRIES = {
    "no-body": 'title = "x"',
    "no-placeholder": 'body = "a fox"',
    "odd-width": 'body = "{subject}"\nwidth = 500',
    "too-tall": 'body = "{subject}"\nheight = 2048',
    "text-size": 'body = "{subject}"\nwidth = "512"',
    "bool-size": 'body = "{subject}"\nheight = true',
    "number-title": 'body = "{subject}"\ntitle = 3',
    "Upper": 'body = "{subject}"',
}


def test_invalid_entries_are_skipped_with_a_warning_and_the_rest_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "\n".join(f'[templates."{key}"]\n{body}\n' for key, body in INVALID_ENTRIES.items())
    path = _templates_file(tmp_path, f'{text}\n[templates.good]\nbody = "{{subject}}"\n')

    with caplog.at_level(logging.WARNING, logger="imageforge.prompting.templates"):
        catalog = load_templates(path)

    assert [template.key for template in catalog] == [*BUILTIN_KEYS, "good"]
    for key in INVALID_ENTRIES:
        assert any(f"[templates.{key}]" in record.getMessage() for record in caplog.records), key


def test_an_entry_with_unknown_fields_loads_and_the_fields_are_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _templates_file(tmp_path, '[templates.mine]\nbody = "{subject}"\nwidht = 768\n')

    with caplog.at_level(logging.WARNING, logger="imageforge.prompting.templates"):
        catalog = load_templates(path)

    assert "mine" in catalog
    assert any("widht" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("text", ["[templates.broken\nbody = 1", "templates = 3"])
def test_an_unusable_file_is_logged_and_leaves_the_builtins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    path = _templates_file(tmp_path, text)

    with caplog.at_level(logging.ERROR, logger="imageforge.prompting.templates"):
        catalog = load_templates(path)

    assert [template.key for template in catalog] == BUILTIN_KEYS
    assert any(str(path) in record.getMessage() for record in caplog.records)


def test_a_missing_file_leaves_the_builtins(tmp_path: Path) -> None:
    assert [template.key for template in load_templates(tmp_path / "absent.toml")] == BUILTIN_KEYS
