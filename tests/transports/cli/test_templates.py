"""`imageforge generate --style KEY` and `imageforge templates`, in this process and against a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from imageforge.bootstrap import build_service
from imageforge.cli.main import app
from imageforge.config import Settings
from imageforge.prompting.templates import BUILTIN_TEMPLATES
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.loopback import serving_app

SMALL = ("--width", "64", "--height", "64")
BLUEPRINT = '[templates.blueprint]\ntitle = "Blueprint"\nbody = "a blueprint of {subject}"\nwidth = 128\nheight = 64\n'


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def _record(png: Path) -> dict[str, object]:
    """The parameters imageforge embeds in every PNG it writes."""
    with Image.open(png) as image:
        record: dict[str, object] = json.loads(image.info["imageforge"])
    return record


@pytest.fixture
def server_service(settings: Settings, tmp_path: Path) -> Iterator[ImageService]:
    """A service whose templates file (with `blueprint`) is not the one this process's settings would read."""
    folder = tmp_path / "server"
    folder.mkdir()
    (folder / "templates.toml").write_text(BLUEPRINT)
    service = build_service(settings.model_copy(update={"templates_file": folder / "templates.toml"}))
    service.start()
    yield service
    service.close()


@pytest.fixture
def server_url(server_service: ImageService) -> Iterator[str]:
    with serving_app(create_app(server_service)) as url:
        yield url


def test_generate_with_a_style_uses_the_templates_size_and_prints_the_prompt(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    result = invoke("generate", "a fox", "--style", "icon", "--steps", "1", "-o", "out.png")

    assert result.exit_code == 0, result.output
    assert result.stdout == "out.png\n"
    with Image.open(tmp_path / "out.png") as image:
        assert image.size == (512, 512)
    assert "style icon, 512x512: a flat vector clipart icon of a fox, " in result.stderr
    assert "negative prompt (the style's): photorealistic" in result.stderr
    record = _record(tmp_path / "out.png")
    assert str(record["prompt"]).startswith("a flat vector clipart icon of a fox, ")
    assert str(record["negative_prompt"]).startswith("photorealistic")


def test_generate_with_a_style_keeps_the_size_and_negative_given_on_the_command_line(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    result = invoke("generate", "a fox", "--style", "photo", *SMALL, "--negative", "cats", "-o", "out.png")

    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out.png") as image:
        assert image.size == (64, 64)
    assert "style photo, 64x64: a photograph of a fox, " in result.stderr
    assert "the style's" not in result.stderr
    assert _record(tmp_path / "out.png")["negative_prompt"] == "cats"


def test_generate_with_an_unknown_style_exits_1_with_template_not_found_and_the_keys(
    user_env: dict[str, str],
) -> None:
    result = invoke("generate", "a fox", "--style", "watercolour")

    assert result.exit_code == 1, result.output
    assert "error [template_not_found]: Unknown style template 'watercolour'." in result.stderr
    assert "hint: Use one of: whiteboard, icon, illustration, photo, sketch, poster" in result.stderr
    assert result.stdout == ""
    assert "generating" not in result.stderr


def test_templates_lists_every_template_with_its_size_and_body(user_env: dict[str, str]) -> None:
    result = invoke("templates")

    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if not line.startswith(" ")}
    assert list(rows) == [template.key for template in BUILTIN_TEMPLATES]
    assert rows["poster"].split()[1] == "768x1024"
    assert "    body: a graphite pencil sketch of {subject}, " in result.stdout


def test_templates_lists_the_users_own_from_the_templates_file(user_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "templates.toml").write_text(BLUEPRINT)

    result = invoke("templates")

    assert result.exit_code == 0, result.output
    assert "blueprint    128x64    Blueprint" in result.stdout


def test_generate_with_a_style_and_server_takes_the_template_from_the_server(
    user_env: dict[str, str], server_url: str, server_service: ImageService
) -> None:
    result = invoke("generate", "a bridge", "--style", "blueprint", "--server", server_url)

    assert result.exit_code == 0, result.output
    assert "style blueprint, 128x64: a blueprint of a bridge" in result.stderr
    [job] = server_service.list_jobs()
    assert (job.payload["prompt"], job.payload["width"], job.payload["height"]) == ("a blueprint of a bridge", 128, 64)


def test_generate_with_an_unknown_style_on_a_server_is_the_servers_template_not_found(
    user_env: dict[str, str], server_url: str, server_service: ImageService
) -> None:
    result = invoke("generate", "a fox", "--style", "watercolour", "--server", server_url)

    assert result.exit_code == 1, result.output
    assert "error [template_not_found]: " in result.stderr
    assert "blueprint" in result.stderr, "the hint names the server's keys"
    assert server_service.list_jobs() == []


def test_templates_with_server_lists_the_servers_templates(user_env: dict[str, str], server_url: str) -> None:
    result = invoke("templates", "--server", server_url)

    assert result.exit_code == 0, result.output
    assert "blueprint    128x64    Blueprint" in result.stdout
