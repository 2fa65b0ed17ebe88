"""`imageforge generate --count N`: N images with consecutive seeds, in this process or on a server, each path
printed on its own line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from imageforge.cli.main import app
from imageforge.service import ImageService
from imageforge.storage.outputs import read_record
from imageforge.transports.http.app import create_app
from tests.loopback import serving_app

SMALL = ("--width", "64", "--height", "64")


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def test_count_writes_each_image_beside_the_output_name_and_prints_every_path(
    user_env: dict[str, str], tmp_path: Path
) -> None:
    result = invoke("generate", "a fox", "--count", "3", "--seed", "3", "-o", "out.png", *SMALL)

    assert result.exit_code == 0, result.output
    assert result.stdout == "out-1.png\nout-2.png\nout-3.png\n"
    seeds = [read_record((tmp_path / f"out-{number}.png").read_bytes())["seed"] for number in (1, 2, 3)]
    assert seeds == [3, 4, 5]
    assert "6/6" in result.stderr, "one progress bar over all the steps"
    assert all(f"tiny seed={seed} steps=2 64x64" in result.stderr for seed in seeds)


@pytest.fixture
def server_url(service: ImageService) -> Iterator[str]:
    with serving_app(create_app(service)) as url:
        yield url


def test_count_on_a_server_runs_one_job_and_prints_the_paths_it_saved(
    user_env: dict[str, str], server_url: str, service: ImageService
) -> None:
    result = invoke("generate", "a fox", "--server", server_url, "--count", "2", "--seed", "8", *SMALL)

    assert result.exit_code == 0, result.output
    [job] = service.list_jobs()
    assert job.result is not None
    assert job.payload["count"] == 2
    assert [image["seed"] for image in job.result["images"]] == [8, 9]
    assert result.stdout == "".join(f"{image['output_path']}\n" for image in job.result["images"])


def test_a_count_outside_1_to_4_is_a_usage_error_naming_the_option(user_env: dict[str, str]) -> None:
    result = invoke("generate", "a fox", "--count", "5")

    assert result.exit_code == 2
    assert "--count" in result.stderr
    assert "less than or equal to 4" in result.stderr
