"""`imageforge webhooks secret` prints the secret receivers verify deliveries with; webhook settings that cannot
work are refused at start, the secret never printed."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.transports.cli.test_cli import assert_refused, invoke


@pytest.fixture
def own_data(user_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A data folder of this test's own: the secret made there must not reach other tests."""
    folder = tmp_path / "own-data"
    monkeypatch.setenv("IMAGEFORGE_DATA_DIR", str(folder))
    return folder


def test_the_secret_is_made_once_in_the_data_folder_and_printed_as_receivers_take_it(own_data: Path) -> None:
    first = invoke("webhooks", "secret")
    again = invoke("webhooks", "secret")

    assert first.exit_code == 0, first.output
    secret = first.stdout.strip()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert again.stdout.strip() == secret
    assert str(own_data / "webhook.secret") in first.stderr


def test_the_secret_setting_wins_over_the_kept_one(own_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = "whsec_" + base64.b64encode(b"s" * 24).decode()
    monkeypatch.setenv("IMAGEFORGE_WEBHOOK_SECRET", chosen)

    result = invoke("webhooks", "secret")

    assert result.stdout.strip() == chosen
    assert not (own_data / "webhook.secret").exists()


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("IMAGEFORGE_WEBHOOK_ALLOW", "hooks.example.net,http://x.example", "give *, a host"),
        ("IMAGEFORGE_WEBHOOK_ALLOW", "hooks.example.net:0", "port"),
        ("IMAGEFORGE_WEBHOOK_RETRY_S", "5,-1", "0 or more"),
        ("IMAGEFORGE_WEBHOOK_SECRET", "hunter2-not-base64", "whsec_"),
    ],
)
def test_webhook_settings_that_cannot_work_are_refused(
    own_data: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    monkeypatch.setenv(name, value)

    result = invoke("webhooks", "secret")

    assert_refused(result, "invalid_settings")
    assert problem in result.stderr
    assert "hunter2" not in result.stderr
