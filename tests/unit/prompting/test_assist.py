"""PromptAssistant against a fake Ollama on loopback: expansions, the cache, each fallback, and the status probe.

The assistant is the production class, pointed at the fake's URL as OLLAMA_URL would point it at Ollama.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imageforge.prompting.assist import PromptAssistant
from tests.fake_ollama import DETAIL, TAGS, FakeOllama, Mode, expansion_of, refusing_url, serving_fake_ollama

MODEL = "gemma4:latest"
#: Far below the default, so that the slow case ends fast; far above what the fake needs to answer.
SHORT_TIMEOUT_S = 0.3


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with serving_fake_ollama(models=(MODEL,)) as fake:
        yield fake


@pytest.fixture
def assistant(ollama: FakeOllama) -> PromptAssistant:
    return PromptAssistant(ollama.url, MODEL)


# -- expansion ------------------------------------------------------------------------------------------------


def test_expand_returns_the_prompt_and_tags_the_model_wrote(assistant: PromptAssistant) -> None:
    result = assistant.expand("a red fox")

    assert result.prompt == expansion_of("a red fox") == f"a red fox, {DETAIL}"
    assert result.original_prompt == "a red fox"
    assert (result.source, result.assisted, result.reason) == ("ollama", True, "")
    assert result.tags == TAGS


def test_expand_asks_for_one_json_answer_from_the_configured_model(
    assistant: PromptAssistant, ollama: FakeOllama
) -> None:
    assistant.expand("a red fox")

    [request] = ollama.requests
    assert request["model"] == MODEL
    assert request["stream"] is False
    assert request["format"] == "json"
    assert "Request: a red fox" in request["prompt"]
    assert "in this style" not in request["prompt"]


def test_the_style_reaches_the_request_to_ollama(assistant: PromptAssistant, ollama: FakeOllama) -> None:
    result = assistant.expand("a red fox", style="pencil sketch")

    assert result.assisted
    [prompt] = ollama.prompts
    assert "Render it in this style: pencil sketch" in prompt


def test_a_model_named_without_its_tag_is_found_as_latest(ollama: FakeOllama) -> None:
    assistant = PromptAssistant(ollama.url, "gemma4")

    assert assistant.expand("a red fox").assisted
    assert assistant.status()["model_available"] is True


def test_a_url_without_a_scheme_is_read_as_http(ollama: FakeOllama) -> None:
    assistant = PromptAssistant(ollama.url.removeprefix("http://"), MODEL)

    assert assistant.url == ollama.url
    assert assistant.expand("a red fox").assisted


# -- the cache ------------------------------------------------------------------------------------------------


def test_a_second_identical_expand_makes_no_second_request(assistant: PromptAssistant, ollama: FakeOllama) -> None:
    first = assistant.expand("a red fox", style="pencil sketch")
    second = assistant.expand("a red fox", style="pencil sketch")

    assert second == first
    assert len(ollama.requests) == 1


def test_another_prompt_or_style_asks_again(assistant: PromptAssistant, ollama: FakeOllama) -> None:
    assistant.expand("a red fox")
    assistant.expand("a red fox", style="pencil sketch")
    assistant.expand("a grey wolf")

    assert len(ollama.requests) == 3


def test_another_model_on_the_same_server_asks_again(ollama: FakeOllama) -> None:
    ollama.models = (MODEL, "llama3.2:latest")
    PromptAssistant(ollama.url, MODEL).expand("a red fox")
    PromptAssistant(ollama.url, "llama3.2:latest").expand("a red fox")

    assert [request["model"] for request in ollama.requests] == [MODEL, "llama3.2:latest"]


def test_the_cache_forgets_the_least_recently_used_expansion_first(ollama: FakeOllama) -> None:
    assistant = PromptAssistant(ollama.url, MODEL, cache_size=2)
    assistant.expand("one")
    assistant.expand("two")
    assistant.expand("one")  # now "two" is the least recently used
    assistant.expand("three")

    assistant.expand("one")
    assistant.expand("two")

    assert [prompt.split("Request: ")[1] for prompt in ollama.prompts] == ["one", "two", "three", "two"]


def test_a_passthrough_is_not_cached_so_ollama_coming_back_is_noticed(
    assistant: PromptAssistant, ollama: FakeOllama
) -> None:
    ollama.mode = Mode.MALFORMED
    assert not assistant.expand("a red fox").assisted

    ollama.mode = Mode.ANSWER
    result = assistant.expand("a red fox")

    assert result.assisted
    assert result.prompt == expansion_of("a red fox")
    assert len(ollama.requests) == 2


# -- fallbacks ------------------------------------------------------------------------------------------------


def test_expand_passes_the_prompt_through_when_ollama_is_down() -> None:
    with refusing_url() as url:
        result = PromptAssistant(url, MODEL).expand("a red fox")

    assert (result.prompt, result.original_prompt, result.tags) == ("a red fox", "a red fox", [])
    assert (result.source, result.assisted) == ("passthrough", False)
    assert result.reason.startswith(f"Ollama unreachable at {url}")


def test_expand_passes_the_prompt_through_when_ollama_answers_after_the_timeout() -> None:
    with serving_fake_ollama(models=(MODEL,), mode=Mode.SLOW) as ollama:
        result = PromptAssistant(ollama.url, MODEL, timeout_s=SHORT_TIMEOUT_S).expand("a red fox")

        assert ollama.received.is_set(), "the request reached Ollama and was held there"
    assert (result.prompt, result.source) == ("a red fox", "passthrough")
    assert result.reason == f"Ollama did not answer within {SHORT_TIMEOUT_S:g}s"


def test_expand_passes_the_prompt_through_when_the_model_is_not_pulled(ollama: FakeOllama) -> None:
    result = PromptAssistant(ollama.url, "llama3.2").expand("a red fox")

    assert (result.prompt, result.source) == ("a red fox", "passthrough")
    assert "ollama pull llama3.2" in result.reason
    assert "model 'llama3.2' not found" in result.reason, "Ollama's own message is kept"


def test_expand_passes_the_prompt_through_when_the_answer_is_not_json(
    assistant: PromptAssistant, ollama: FakeOllama
) -> None:
    ollama.mode = Mode.MALFORMED

    result = assistant.expand("a red fox")

    assert (result.prompt, result.source) == ("a red fox", "passthrough")
    assert result.reason.startswith("Ollama's answer was not the expected JSON")


def test_expand_passes_the_prompt_through_when_the_model_answers_prose(
    assistant: PromptAssistant, ollama: FakeOllama
) -> None:
    ollama.mode = Mode.PROSE

    result = assistant.expand("a red fox")

    assert (result.prompt, result.source) == ("a red fox", "passthrough")
    assert result.reason.startswith("Ollama's answer was not the expected JSON")


def test_expand_passes_the_prompt_through_when_the_url_is_not_an_ollama_server(ollama: FakeOllama) -> None:
    result = PromptAssistant(f"{ollama.url}/v1", MODEL).expand("a red fox")

    assert (result.prompt, result.source) == ("a red fox", "passthrough")
    assert "is OLLAMA_URL an Ollama server?" in result.reason


# -- status ---------------------------------------------------------------------------------------------------


def test_status_reports_a_reachable_server_with_the_model_pulled(
    assistant: PromptAssistant, ollama: FakeOllama
) -> None:
    assert assistant.status() == {"reachable": True, "url": ollama.url, "model": MODEL, "model_available": True}


def test_status_reports_a_reachable_server_without_the_model(ollama: FakeOllama) -> None:
    status = PromptAssistant(ollama.url, "llama3.2").status()

    assert (status["reachable"], status["model_available"]) == (True, False)


def test_status_reports_a_server_that_is_down_as_unreachable() -> None:
    with refusing_url() as url:
        status = PromptAssistant(url, MODEL).status()

    assert status == {"reachable": False, "url": url, "model": MODEL, "model_available": False}
