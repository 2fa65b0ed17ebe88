"""`imageforge generate --sampler/--schedule`: the declared choices, in this process and on a server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from imageforge.cli.main import app
from imageforge.service import ImageService
from imageforge.storage.outputs import read_record
from imageforge.transports.http.app import create_app
from tests.loopback import serving_app

SMALL = ("--width", "64", "--height", "64", "--seed", "4")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_generate_runs_the_sampler_and_schedule_named_and_writes_them_in_the_png(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    result = invoke("generate", "a fox", "--sampler", "dpmpp_2m", "--schedule", "karras", "-o", "out.png", *SMALL)

    assert result.exit_code == 0, result.output
    record = read_record((tmp_path / "out.png").read_bytes())
    assert (record["sampler"], record["schedule"]) == ("dpmpp_2m", "karras")
    with Image.open(tmp_path / "out.png") as image:
        assert "Sampler: DPM++ 2M, Schedule type: Karras" in image.info["parameters"]


@pytest.fixture
def server_url(service: ImageService) -> Iterator[str]:
    with serving_app(create_app(service)) as url:
        yield url


def test_generate_on_a_server_sends_the_sampler(
    user_env: dict[str, str], server_url: str, service: ImageService
) -> None:
    result = invoke("generate", "a fox", "--server", server_url, "--sampler", "euler_a", *SMALL)

    assert result.exit_code == 0, result.output
    [job] = service.list_jobs()
    assert (job.payload["sampler"], job.payload["schedule"]) == ("euler_a", "default")


def test_a_sampler_outside_the_choices_is_a_usage_error_naming_the_option(user_env: dict[str, str]) -> None:
    result = invoke("generate", "a fox", "--sampler", "dpm_fast")

    assert result.exit_code == 2
    assert "--sampler" in result.stderr
    assert "euler_a" in result.stderr
