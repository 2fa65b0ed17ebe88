"""Per-client limits over HTTP and MCP: one API key cannot fill the whole queue or submit without end, while
another key's jobs still get in."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.gated import GatedBackend
from tests.loopback import serving_app

ALICE = "alice-key-0123456789"
BOB = "bob-key-9876543210ab"
KEYS = ApiKeys((("alice", ALICE), ("bob", BOB)))
SMALL = {"width": 64, "height": 64, "steps": 1}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def shared(settings: Settings) -> Iterator[tuple[str, GatedBackend]]:
    """A server whose generations hold at each step, where each key may hold two jobs."""
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings.model_copy(update={"queue_share": 2}), backend=backend)
    with serving_app(create_app(service, api_keys=KEYS)) as url:
        try:
            yield url, backend
        finally:
            backend.release(1000)


def _fill_alices_share(url: str, backend: GatedBackend) -> None:
    assert httpx.post(f"{url}/jobs", json={"prompt": "running", **SMALL}, headers=_bearer(ALICE)).status_code == 202
    backend.wait_for_step()
    assert httpx.post(f"{url}/jobs", json={"prompt": "waiting", **SMALL}, headers=_bearer(ALICE)).status_code == 202


@pytest.mark.parametrize("path", ["/jobs", "/generate"])
def test_a_key_over_its_queue_share_is_refused_while_another_key_still_submits(
    shared: tuple[str, GatedBackend], path: str
) -> None:
    url, backend = shared
    _fill_alices_share(url, backend)

    refused = httpx.post(f"{url}{path}", json={"prompt": "one more", **SMALL}, headers=_bearer(ALICE))
    other = httpx.post(f"{url}/jobs", json={"prompt": "bob's", **SMALL}, headers=_bearer(BOB))

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "queue_share_exceeded"
    assert "2 jobs" in error["message"]
    assert "IMAGEFORGE_QUEUE_SHARE" in error["hint"]
    assert int(refused.headers["retry-after"]) >= 1
    assert other.status_code == 202


def test_a_finished_job_frees_its_place_in_the_share(shared: tuple[str, GatedBackend]) -> None:
    url, backend = shared
    _fill_alices_share(url, backend)
    waiting = httpx.get(f"{url}/jobs", params={"status": "queued"}, headers=_bearer(ALICE)).json()["jobs"][0]

    assert httpx.delete(waiting["links"]["cancel"], headers=_bearer(ALICE)).status_code == 200
    again = httpx.post(f"{url}/jobs", json={"prompt": "in its place", **SMALL}, headers=_bearer(ALICE))

    assert again.status_code == 202


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tool", "arguments"),
    [("submit_async_job", {"prompt": "one more", **SMALL}), ("generate_image", {"prompt": "one more", **SMALL})],
)
async def test_mcp_over_http_refuses_a_key_over_its_share_with_the_same_code(
    shared: tuple[str, GatedBackend], tool: str, arguments: dict[str, object]
) -> None:
    url, backend = shared
    _fill_alices_share(url, backend)

    async with (
        httpx2.AsyncClient(headers=_bearer(ALICE)) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp,
    ):
        result = await mcp.call_tool(tool, arguments)

    assert result.is_error
    [text] = [block for block in result.content if isinstance(block, TextContent)]
    assert json.loads(text.text)["error"]["code"] == "queue_share_exceeded"


def test_a_key_over_the_rate_limit_gets_429_with_retry_after_and_another_key_does_not(settings: Settings) -> None:
    service = build_service(settings.model_copy(update={"rate_limit": 2}))
    with serving_app(create_app(service, api_keys=KEYS)) as url:
        for n in range(2):
            accepted = httpx.post(f"{url}/jobs", json={"prompt": f"fox {n}", **SMALL}, headers=_bearer(ALICE))
            assert accepted.status_code == 202
        refused = httpx.post(f"{url}/generate", json={"prompt": "fox 3", **SMALL}, headers=_bearer(ALICE))
        other = httpx.post(f"{url}/jobs", json={"prompt": "bob's", **SMALL}, headers=_bearer(BOB))

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert "IMAGEFORGE_RATE_LIMIT" in error["hint"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert other.status_code == 202
