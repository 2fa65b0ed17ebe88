"""`imageforge assist` as a user runs it: in this process with OLLAMA_URL pointing at a fake Ollama on loopback, and
with --server through the Python client against a real imageforge server on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner, Result

from imageforge.bootstrap import build_service
from imageforge.cli.main import app
from imageforge.config import Settings
from imageforge.transports.http.app import create_app
from tests.fake_ollama import TAGS, FakeOllama, expansion_of, serving_fake_ollama
from tests.loopback import serving_app

MODEL = "gemma4:latest"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def ollama(user_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOllama]:
    """A fake Ollama that OLLAMA_URL and OLLAMA_MODEL point at."""
    with serving_fake_ollama(models=(MODEL,)) as fake:
        monkeypatch.setenv("OLLAMA_URL", fake.url)
        monkeypatch.setenv("OLLAMA_MODEL", MODEL)
        yield fake


@pytest.fixture
def server_url(settings: Settings, ollama: FakeOllama) -> Iterator[str]:
    """A real imageforge server on loopback whose Ollama is the fake."""
    service = build_service(settings.model_copy(update={"ollama_url": ollama.url, "ollama_model": MODEL}))
    with serving_app(create_app(service)) as url:
        yield url


def test_help_lists_the_assist_command(user_env: dict[str, str]) -> None:
    result = invoke("--help")

    assert result.exit_code == 0
    assert any(line.strip("│ ").startswith("assist ") for line in result.stdout.splitlines()), result.stdout


def test_assist_prints_the_expanded_prompt_on_stdout_and_the_source_and_tags_on_stderr(ollama: FakeOllama) -> None:
    result = invoke("assist", "a red fox")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{expansion_of('a red fox')}\n"
    assert result.stderr == f"source: ollama\ntags: {', '.join(TAGS)}\n"
    assert len(ollama.requests) == 1


def test_assist_with_a_style_sends_it_to_ollama(ollama: FakeOllama) -> None:
    result = invoke("assist", "a red fox", "--style", "pencil sketch")

    assert result.exit_code == 0, result.output
    [prompt] = ollama.prompts
    assert "pencil sketch" in prompt


def test_assist_json_prints_every_field_as_one_object(ollama: FakeOllama) -> None:
    result = invoke("assist", "a red fox", "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "prompt": expansion_of("a red fox"),
        "original_prompt": "a red fox",
        "source": "ollama",
        "tags": TAGS,
        "reason": "",
        "assisted": True,
    }


def test_assist_without_ollama_prints_the_prompt_unchanged_and_why_and_succeeds(user_env: dict[str, str]) -> None:
    result = invoke("assist", "a red fox")

    assert result.exit_code == 0, result.output
    assert result.stdout == "a red fox\n"
    assert result.stderr.startswith("source: passthrough (Ollama unreachable at http://127.0.0.1:9")


def test_assist_refuses_an_empty_prompt(user_env: dict[str, str]) -> None:
    result = invoke("assist", "  ")

    assert result.exit_code == 1, result.output
    assert "error [invalid_request]: prompt is empty." in result.stderr
    assert result.stdout == ""


def test_generate_with_assist_says_on_stderr_which_prompt_was_drawn(ollama: FakeOllama) -> None:
    result = invoke("generate", "a red fox", "--assist", "--local", "--width", "64", "--height", "64")

    assert result.exit_code == 0, result.output
    assert f"prompt (assisted by ollama): {expansion_of('a red fox')}\n" in result.stderr
    assert result.stdout.endswith(".png\n")


def test_generate_with_assist_without_ollama_draws_the_prompt_and_says_why(user_env: dict[str, str]) -> None:
    result = invoke("generate", "a red fox", "--assist", "--local", "--width", "64", "--height", "64")

    assert result.exit_code == 0, result.output
    assert "prompt (passthrough: Ollama unreachable at http://127.0.0.1:9" in result.stderr
    assert result.stderr.endswith("): a red fox\n")


def test_assist_with_server_asks_that_server_and_its_ollama(
    server_url: str, ollama: FakeOllama, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This process's own Ollama is down: only the server's can answer.
    monkeypatch.setenv("OLLAMA_URL", "http://127.0.0.1:9")

    result = invoke("assist", "a red fox", "--style", "pencil sketch", "--server", server_url)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"{expansion_of('a red fox')}\n"
    assert "source: ollama" in result.stderr
    [prompt] = ollama.prompts
    assert "pencil sketch" in prompt


def test_assist_with_a_server_that_is_not_running_fails_with_server_unavailable(user_env: dict[str, str]) -> None:
    result = invoke("assist", "a red fox", "--server", "http://127.0.0.1:9")

    assert result.exit_code == 1, result.output
    assert "error [server_unavailable]: " in result.stderr
