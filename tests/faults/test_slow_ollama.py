"""A slow Ollama: prompt expansions that hang leave the server answering everything else.

The fake Ollama holds each expansion until the test lets it go. One API key sends 45 /assist calls at once:
IMAGEFORGE_ASSIST_CONCURRENCY of them wait on Ollama, the others are refused at once with 429 `assist_busy`
(MCP's assist_prompt too), and another key's /health, /models and a new generation are answered meanwhile. A
job that asks for assist is not refused: it expands its prompt in the worker. A real server on loopback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed

import anyio
import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.events import wait_for_end
from tests.fake_ollama import FakeOllama, Mode, expansion_of, serving_fake_ollama
from tests.loopback import serving_app

ALICE = "alice-key-0123456789"
BOB = "bob-key-9876543210ab"
KEYS = ApiKeys((("alice", ALICE), ("bob", BOB)))
CONCURRENCY = 2
FLOOD = 45
#: Generous: on a server whose threads the flood holds, nothing answers at all.
ANSWER_S = 30.0
SMALL = {"steps": 1, "width": 64, "height": 64}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def server(settings: Settings) -> Iterator[tuple[str, FakeOllama]]:
    """A server whose Ollama answers nothing until the test releases it."""
    with serving_fake_ollama(mode=Mode.SLOW) as ollama:
        # Longer than the test: the held expansions wait for the release, not for the timeout.
        changes = {"ollama_url": ollama.url, "assist_timeout_s": 4 * ANSWER_S, "assist_concurrency": CONCURRENCY}
        with serving_app(create_app(build_service(settings.model_copy(update=changes)), api_keys=KEYS)) as url:
            try:
                yield url, ollama
            finally:
                ollama.release.set()


async def _mcp_assist(url: str) -> dict[str, dict[str, str]]:
    async with (
        httpx2.AsyncClient(headers=_bearer(BOB), timeout=ANSWER_S) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp,
    ):
        result = await mcp.call_tool("assist_prompt", {"prompt": "a fox"})
    assert result.is_error
    [text] = [block for block in result.content if isinstance(block, TextContent)]
    error: dict[str, dict[str, str]] = json.loads(text.text)
    return error


def test_assist_calls_past_the_limit_are_refused_at_once_while_ollama_hangs_and_the_rest_is_served(
    server: tuple[str, FakeOllama],
) -> None:
    url, ollama = server

    def assist() -> httpx.Response:
        return httpx.post(f"{url}/assist", json={"prompt": "a fox"}, headers=_bearer(ALICE), timeout=ANSWER_S)

    with ThreadPoolExecutor(max_workers=FLOOD + 1) as pool:
        flood = [pool.submit(assist) for _ in range(FLOOD)]
        answered_at_once = []
        # Within the fake's hold: a call that waits on Ollama is not answered at once.
        for done in as_completed(flood, timeout=ANSWER_S):
            assert done.result().status_code == 429, "a call past the limit waited on Ollama"
            answered_at_once.append(done)
            if len(answered_at_once) == FLOOD - CONCURRENCY:
                break
        assert ollama.received.wait(ANSWER_S)

        with httpx.Client(base_url=url, headers=_bearer(BOB), timeout=ANSWER_S) as bob:
            assert bob.get("/health").status_code == 200
            assert bob.get("/models").status_code == 200
            generated = bob.post("/generate", json={"prompt": "bob's", **SMALL})
            queued = bob.post("/jobs", json={"prompt": "a heron", "assist_prompt": True, **SMALL})
            mcp_error = anyio.run(_mcp_assist, url)
            ollama.release.set()
            expanded = [future.result(timeout=2 * ANSWER_S) for future in flood if future not in answered_at_once]
            assert wait_for_end(bob, queued.json()) == "succeeded"
            assisted_job = bob.get(queued.json()["links"]["self"]).json()

    for refused in (future.result() for future in answered_at_once):
        assert refused.json()["error"]["code"] == "assist_busy"
        assert "IMAGEFORGE_ASSIST_CONCURRENCY" in refused.json()["error"]["hint"]
        assert int(refused.headers["retry-after"]) >= 1
    assert generated.status_code == 200, generated.text
    assert mcp_error["error"]["code"] == "assist_busy"
    assert [answer.status_code for answer in expanded] == [200] * CONCURRENCY
    assert {answer.json()["prompt"] for answer in expanded} == {expansion_of("a fox")}
    assert queued.status_code == 202, "a job's own assist is not limited"
    assert assisted_job["result"]["prompt"] == expansion_of("a heron")
