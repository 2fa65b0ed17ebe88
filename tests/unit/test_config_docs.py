"""docs/configuration.md is generated from `Settings`, so the reference cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from imageforge.cli.main import app
from imageforge.config import Settings, settings_reference

CONFIGURATION_PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
REGENERATE = "imageforge config > docs/configuration.md"


def test_configuration_page_is_what_the_settings_generate() -> None:
    written = CONFIGURATION_PAGE.read_text(encoding="utf-8")

    assert written == settings_reference(), (
        f"docs/configuration.md is stale: the settings changed. Regenerate it with `{REGENERATE}` "
        "(from the repository root, with imageforge installed) and commit it."
    )


@pytest.mark.parametrize("field", list(Settings.model_fields))
def test_every_setting_declares_its_meaning(field: str) -> None:
    description = Settings.model_fields[field].description

    assert description, f"Settings.{field} has no description: add Field(..., description=...) in config.py"


@pytest.mark.parametrize(
    ("field", "row_start"),
    [
        ("port", "| `IMAGEFORGE_PORT` or `PORT` | `8765` | 1 to 65535 |"),
        ("default_model", "| `IMAGEFORGE_MODEL` | `sd-turbo` |  |"),
        ("allow_flux", "| `IMAGEFORGE_ALLOW_FLUX` or `ALLOW_FLUX` | `0` |  |"),
        ("result_ttl_s", "| `IMAGEFORGE_RESULT_TTL_S` | `3600` | more than 0 |"),
        ("job_timeout_s", "| `IMAGEFORGE_JOB_TIMEOUT_S` | — | more than 0 |"),
        ("max_res", "| `IMAGEFORGE_MAX_RES` or `MAX_RES` | `1024` | at least 64 |"),
        ("input_dirs", "| `IMAGEFORGE_INPUT_DIRS` | — |  |"),
    ],
)
def test_each_setting_is_listed_by_the_names_a_user_sets_with_default_and_range(field: str, row_start: str) -> None:
    rows = [line for line in settings_reference().splitlines() if line.startswith(row_start)]

    assert len(rows) == 1, f"no row for Settings.{field} starting {row_start!r}"
    assert rows[0].endswith(f"| {Settings.model_fields[field].description} |")


def test_the_config_command_prints_the_page() -> None:
    result = CliRunner().invoke(app, ["config"])

    assert result.exit_code == 0, result.output
    assert result.stdout == settings_reference()
