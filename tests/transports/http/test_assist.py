"""Prompt assist over HTTP: POST /assist, POST /generate with assist_prompt, and /health, with OLLAMA_URL pointing at
a fake Ollama on loopback (or at a port nothing listens on), on the tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.transports.http.app import create_app
from tests.events import wait_for_end
from tests.fake_ollama import TAGS, FakeOllama, Mode, expansion_of, refusing_url, serving_fake_ollama
from tests.loopback import LOCAL_URL

SMALL = {"width": 64, "height": 64, "steps": 2}
MODEL = "gemma4:latest"
#: Far below the default, so that the slow case ends fast; far above what the fake needs to answer.
SHORT_TIMEOUT_S = 0.3


@contextmanager
def serving(settings: Settings, ollama_url: str) -> Iterator[TestClient]:
    """The HTTP API on a service whose OLLAMA_URL is `ollama_url`."""
    update = {"ollama_url": ollama_url, "ollama_model": MODEL, "assist_timeout_s": SHORT_TIMEOUT_S}
    with TestClient(create_app(build_service(settings.model_copy(update=update))), base_url=LOCAL_URL) as client:
        yield client


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with serving_fake_ollama(models=(MODEL,)) as fake:
        yield fake


@pytest.fixture
def assisted(settings: Settings, ollama: FakeOllama) -> Iterator[TestClient]:
    """A client of the API whose Ollama is the fake."""
    with serving(settings, ollama.url) as client:
        yield client


def generate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/generate", json={"prompt": "a red fox", "assist_prompt": True, **SMALL, **body})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


# -- POST /assist ---------------------------------------------------------------------------------------------


def test_assist_returns_the_expansion_with_the_original_prompt_and_source(assisted: TestClient) -> None:
    response = assisted.post("/assist", json={"prompt": "a red fox"})

    assert response.status_code == 200, response.text
    assert response.json() == {
        "ok": True,
        "prompt": expansion_of("a red fox"),
        "original_prompt": "a red fox",
        "tags": TAGS,
        "source": "ollama",
        "assisted": True,
        "reason": "",
    }


def test_assist_sends_the_style_to_ollama(assisted: TestClient, ollama: FakeOllama) -> None:
    response = assisted.post("/assist", json={"prompt": "a red fox", "style": "pencil sketch"})

    assert response.json()["assisted"] is True
    [prompt] = ollama.prompts
    assert "pencil sketch" in prompt


def test_assist_answers_a_repeated_request_from_its_cache(assisted: TestClient, ollama: FakeOllama) -> None:
    first = assisted.post("/assist", json={"prompt": "a red fox"}).json()
    second = assisted.post("/assist", json={"prompt": "a red fox"}).json()

    assert second == first
    assert len(ollama.requests) == 1


def test_assist_without_ollama_returns_the_prompt_unchanged_and_why(client: TestClient, settings: Settings) -> None:
    response = client.post("/assist", json={"prompt": "a red fox", "style": "pencil sketch"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["prompt"], body["original_prompt"], body["tags"]) == ("a red fox", "a red fox", [])
    assert (body["source"], body["assisted"]) == ("passthrough", False)
    assert body["reason"].startswith(f"Ollama unreachable at {settings.ollama_url}")


@pytest.mark.parametrize("prompt", ["   ", "x" * 4001])
def test_assist_refuses_an_empty_or_overlong_prompt(client: TestClient, prompt: str) -> None:
    response = client.post("/assist", json={"prompt": prompt})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"


# -- POST /generate with assist_prompt ------------------------------------------------------------------------


def test_generate_with_assist_draws_the_expanded_prompt_and_reports_both(
    assisted: TestClient, ollama: FakeOllama
) -> None:
    body = generate(assisted, seed=5)

    assert body["prompt"] == expansion_of("a red fox")
    assert body["original_prompt"] == "a red fox"
    assert body["assisted"] is True
    assert body["assist"] == {"source": "ollama", "reason": "", "tags": TAGS}
    assert len(ollama.requests) == 1


def test_generate_without_assist_never_asks_ollama(assisted: TestClient, ollama: FakeOllama) -> None:
    body = generate(assisted, assist_prompt=False)

    assert (body["prompt"], body["original_prompt"], body["assisted"]) == ("a red fox", "a red fox", False)
    assert body["assist"] is None
    assert ollama.requests == []


def test_a_repeated_seeded_assisted_generation_is_a_cache_hit_asking_ollama_once(
    assisted: TestClient, ollama: FakeOllama
) -> None:
    first = generate(assisted, seed=7)
    second = generate(assisted, seed=7)

    assert (first["cached"], second["cached"]) == (False, True)
    assert second["prompt"] == first["prompt"] == expansion_of("a red fox")
    assert second["image_base64"] == first["image_base64"]
    assert len(ollama.requests) == 1


def test_an_assisted_job_reports_the_expansion_in_its_result(assisted: TestClient) -> None:
    submitted = assisted.post("/jobs", json={"prompt": "a red fox", "assist_prompt": True, **SMALL})
    assert submitted.status_code == 202, submitted.text

    assert wait_for_end(assisted, submitted.json()) == "succeeded"
    job = assisted.get(submitted.json()["links"]["self"]).json()
    assert job["result"]["prompt"] == expansion_of("a red fox")
    assert job["result"]["original_prompt"] == "a red fox"
    assert job["result"]["assist"]["source"] == "ollama"


@pytest.mark.parametrize(
    ("mode", "model", "reason"),
    [
        (Mode.SLOW, MODEL, f"Ollama did not answer within {SHORT_TIMEOUT_S:g}s"),
        (Mode.ANSWER, "llama3.2", "Ollama has no model 'llama3.2' (run `ollama pull llama3.2`)"),
        (Mode.MALFORMED, MODEL, "Ollama's answer was not the expected JSON"),
        (Mode.PROSE, MODEL, "Ollama's answer was not the expected JSON"),
    ],
    ids=["slow", "model not pulled", "malformed JSON", "prose instead of JSON"],
)
def test_generate_with_assist_draws_the_original_prompt_when_ollama_fails(
    settings: Settings, mode: Mode, model: str, reason: str
) -> None:
    with serving_fake_ollama(models=(MODEL,), mode=mode) as ollama:
        update = {"ollama_url": ollama.url, "ollama_model": model, "assist_timeout_s": SHORT_TIMEOUT_S}
        with TestClient(create_app(build_service(settings.model_copy(update=update))), base_url=LOCAL_URL) as client:
            body = generate(client)

        assert len(ollama.requests) == 1, "Ollama was asked"
    assert (body["prompt"], body["original_prompt"], body["assisted"]) == ("a red fox", "a red fox", False)
    assert body["assist"]["source"] == "passthrough"
    assert body["assist"]["reason"].startswith(reason)
    assert body["image_base64"]


def test_generate_with_assist_draws_the_original_prompt_when_ollama_is_down(settings: Settings) -> None:
    with refusing_url() as url, serving(settings, url) as client:
        body = generate(client)

    assert (body["prompt"], body["assisted"]) == ("a red fox", False)
    assert body["assist"]["source"] == "passthrough"
    assert body["assist"]["reason"].startswith(f"Ollama unreachable at {url}")


# -- GET /health ----------------------------------------------------------------------------------------------


def test_health_reports_ollama_reachable_with_its_url_and_the_model_available(
    assisted: TestClient, ollama: FakeOllama
) -> None:
    assert assisted.get("/health").json()["ollama"] == {
        "reachable": True,
        "url": ollama.url,
        "model": MODEL,
        "model_available": True,
    }


def test_health_reports_a_reachable_ollama_without_the_model(settings: Settings) -> None:
    with serving_fake_ollama(models=("llama3.2:latest",)) as ollama, serving(settings, ollama.url) as client:
        status = client.get("/health").json()["ollama"]

    assert (status["reachable"], status["model_available"]) == (True, False)


def test_health_reports_ollama_down_as_unreachable(settings: Settings) -> None:
    with refusing_url() as url, serving(settings, url) as client:
        status = client.get("/health").json()["ollama"]

    assert status == {"reachable": False, "url": url, "model": MODEL, "model_available": False}
