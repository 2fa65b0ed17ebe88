"""`imageforge loras` and `imageforge generate --lora NAME[:WEIGHT]`, in this process and on a server."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from imageforge.cli.main import app
from imageforge.service import ImageService
from imageforge.storage.outputs import read_record
from imageforge.transports.http.app import create_app
from tests.loopback import serving_app

SMALL = ("--width", "64", "--height", "64", "--seed", "4", "--steps", "2")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def lora_dir(user_env: dict[str, str], tmp_path: Path, tiny_loras: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "my-loras"
    shutil.copytree(tiny_loras, folder)
    monkeypatch.setenv("IMAGEFORGE_LORA_DIR", str(folder))
    return folder


def test_loras_lists_the_lora_folder_here(lora_dir: Path) -> None:
    result = invoke("loras")

    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == ["one", "two"]


def test_generate_applies_each_lora_option_and_writes_them_in_the_png(lora_dir: Path, tmp_path: Path) -> None:
    result = invoke("generate", "a fox", "--lora", "one:0.5", "--lora", "two", "--local", "-o", "out.png", *SMALL)

    assert result.exit_code == 0, result.output
    record = read_record((tmp_path / "out.png").read_bytes())
    assert record["loras"] == [{"name": "one", "weight": 0.5}, {"name": "two", "weight": 1.0}]


@pytest.mark.parametrize("option", ["one:3", "one:heavy", ":1"])
def test_a_lora_option_outside_the_declaration_is_a_usage_error_naming_the_option(lora_dir: Path, option: str) -> None:
    result = invoke("generate", "a fox", "--lora", option, "--local")

    assert result.exit_code == 2
    assert "--lora" in result.stderr


def test_an_unknown_lora_fails_with_its_code(lora_dir: Path) -> None:
    result = invoke("generate", "a fox", "--lora", "watercolour", "--local", *SMALL)

    assert result.exit_code != 0
    assert "lora_not_found" in result.output


@pytest.fixture
def server_url(service: ImageService) -> Iterator[str]:
    with serving_app(create_app(service)) as url:
        yield url


def test_loras_and_generate_read_and_use_a_servers_lora_folder(
    user_env: dict[str, str], server_url: str, service: ImageService, loras: Path
) -> None:
    listed = invoke("loras", "--server", server_url)
    result = invoke("generate", "a fox", "--server", server_url, "--lora", "two:-1", *SMALL)

    assert listed.exit_code == 0, listed.output
    assert "two" in listed.stdout
    assert result.exit_code == 0, result.output
    [job] = service.list_jobs()
    assert job.payload["loras"] == [{"name": "two", "weight": -1.0}]
