"""MCP over Streamable HTTP: a session belongs to the key that opened it, and each client holds a few at most."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from mcp_types.version import LATEST_PROTOCOL_VERSION

from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.loopback import serving_app

ALICE = "alice-key-0123456789"
BOB = "bob-key-9876543210ab"
PER_CLIENT = 2
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}},
}
PING = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}


@pytest.fixture
def url(service: ImageService) -> Iterator[str]:
    app = create_app(service, api_keys=ApiKeys((("alice", ALICE), ("bob", BOB))), mcp_sessions_per_client=PER_CLIENT)
    with serving_app(app) as served:
        yield served


def _headers(key: str, session: str | None = None) -> dict[str, str]:
    headers = {**MCP_HEADERS, "Authorization": f"Bearer {key}"}
    if session is not None:
        headers["mcp-session-id"] = session
    return headers


def _open(url: str, key: str) -> httpx.Response:
    return httpx.post(f"{url}/mcp", json=INITIALIZE, headers=_headers(key), timeout=10.0)


def _session(url: str, key: str) -> str:
    opened = _open(url, key)
    assert opened.status_code == 200, opened.text
    return opened.headers["mcp-session-id"]


def test_another_key_can_neither_use_nor_end_a_session_it_did_not_open(url: str) -> None:
    alices = _session(url, ALICE)

    used = httpx.post(f"{url}/mcp", json=PING, headers=_headers(BOB, alices), timeout=10.0)
    ended = httpx.delete(f"{url}/mcp", headers=_headers(BOB, alices), timeout=10.0)
    still = httpx.post(f"{url}/mcp", json=PING, headers=_headers(ALICE, alices), timeout=10.0)

    for refused in (used, ended):
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "session_not_found"
    assert still.status_code == 200


def test_a_client_over_its_session_cap_is_refused_until_it_ends_one(url: str) -> None:
    sessions = [_session(url, ALICE) for _ in range(PER_CLIENT)]

    refused = _open(url, ALICE)
    bobs = _open(url, BOB)
    ended = httpx.delete(f"{url}/mcp", headers=_headers(ALICE, sessions[0]), timeout=10.0)
    again = _open(url, ALICE)

    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "too_many_sessions"
    assert "IMAGEFORGE_MCP_SESSIONS_PER_CLIENT" in error["hint"]
    assert bobs.status_code == 200, "another client's sessions count apart"
    assert ended.status_code == 200
    assert again.status_code == 200, "an ended session frees its place"


def test_a_client_at_its_session_cap_still_uses_the_sessionless_protocol(url: str) -> None:
    for _ in range(PER_CLIENT):
        _session(url, ALICE)
    discover = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "server/discover",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": LATEST_PROTOCOL_VERSION,
                "io.modelcontextprotocol/clientCapabilities": {},
            }
        },
    }
    headers = {
        **_headers(ALICE),
        "MCP-Protocol-Version": LATEST_PROTOCOL_VERSION,
        "Mcp-Method": "server/discover",
    }

    answer = httpx.post(f"{url}/mcp", json=discover, headers=headers, timeout=10.0)

    assert answer.status_code == 200, answer.text
    assert "tools" in answer.json()["result"]["capabilities"]
