"""A flood from one client: dozens of waits on one held job leave other clients served.

One API key holds a running job and opens 45 waits on it at once (sync /generate calls that duplicate merging
attaches to that job, or event streams). Waiting holds no server thread, and each wait beyond the first on a
job counts against the key's queue share, so the waits past the share are refused with 429 at once; another
key's /health, /models, /jobs, MCP call and new generation are answered meanwhile. A real server on loopback.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import closing

import anyio
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
from tests.loopback import post_unanswered, serving_app

ALICE = "alice-key-0123456789"
BOB = "bob-key-9876543210ab"
KEYS = ApiKeys((("alice", ALICE), ("bob", BOB)))
#: What each key may hold: its jobs, and its waits beyond the first on each job.
SHARE = 4
FLOOD = 45
#: Generous: on a server whose threads the flood holds, nothing answers at all.
ANSWER_S = 30.0
SEEDED = {"prompt": "a lighthouse at dusk", "seed": 7, "steps": 2, "width": 64, "height": 64}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def server(settings: Settings) -> Iterator[tuple[str, GatedBackend]]:
    """A server whose generations hold at each step, with two keys that may each hold SHARE places."""
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings.model_copy(update={"queue_share": SHARE}), backend=backend)
    with serving_app(create_app(service, api_keys=KEYS)) as url:
        try:
            yield url, backend
        finally:
            backend.release(1000)


def _generate_as_alice(url: str) -> Callable[[], int]:
    def send() -> int:
        return httpx.post(f"{url}/generate", json=SEEDED, headers=_bearer(ALICE), timeout=ANSWER_S).status_code

    return send


def _follow_as_alice(events: str) -> Callable[[], int]:
    def send() -> int:
        with httpx.stream("GET", events, headers=_bearer(ALICE), timeout=ANSWER_S) as response:
            response.read()  # an accepted stream ends with the job
            return response.status_code

    return send


def _refusals_come_back(flood: list[Future[int]]) -> int:
    """Wait for the refused waits (at once) and return how many there are; the accepted ones hold."""
    refused = 0
    for done in as_completed(flood, timeout=2 * ANSWER_S):
        assert done.result() == 429, "an accepted wait ended before its job"
        refused += 1
        if refused == FLOOD - SHARE:
            break
    return refused


async def _mcp_list_models(url: str) -> bool:
    async with (
        httpx2.AsyncClient(headers=_bearer(BOB), timeout=ANSWER_S) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp,
    ):
        result = await mcp.call_tool("list_models", {})
    [text] = [block for block in result.content if isinstance(block, TextContent)]
    return not result.is_error and "tiny" in text.text


@pytest.mark.parametrize("wait", ["sync generate", "event stream"])
def test_a_flood_of_waits_from_one_key_is_refused_past_its_share_and_another_key_is_served(
    server: tuple[str, GatedBackend], wait: str
) -> None:
    url, backend = server
    submitted = httpx.post(f"{url}/jobs", json=SEEDED, headers=_bearer(ALICE))
    assert submitted.status_code == 202
    backend.wait_for_step()
    events = submitted.json()["links"]["events"]
    send = _generate_as_alice(url) if wait == "sync generate" else _follow_as_alice(events)

    with ThreadPoolExecutor(max_workers=FLOOD + 1) as pool:
        flood = [pool.submit(send) for _ in range(FLOOD)]
        refused = _refusals_come_back(flood)
        one_more = httpx.post(f"{url}/generate", json=SEEDED, headers=_bearer(ALICE), timeout=ANSWER_S)

        with httpx.Client(base_url=url, headers=_bearer(BOB), timeout=ANSWER_S) as bob:
            assert bob.get("/health").status_code == 200
            assert bob.get("/models").status_code == 200
            assert bob.get("/jobs").status_code == 200
            assert anyio.run(_mcp_list_models, url)
            bobs = pool.submit(bob.post, "/generate", json={"prompt": "bob's own", **SEEDED, "seed": 8})
            backend.release(1000)
            answer = bobs.result(timeout=2 * ANSWER_S)
        statuses = [future.result(timeout=2 * ANSWER_S) for future in flood]

    assert refused == FLOOD - SHARE
    assert one_more.status_code == 429
    assert one_more.json()["error"]["code"] == "queue_share_exceeded"
    assert int(one_more.headers["retry-after"]) >= 1
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.text)["seed"] == 8
    assert statuses.count(200) == SHARE, "the waits within the share get the image"


def _send_then_hang_up_later(url: str, path: str, body: dict[str, object]) -> socket.socket:
    """A request as Alice on a raw socket, left open: closing the socket hangs up before the answer."""
    return post_unanswered(url, path, body, headers=_bearer(ALICE), timeout=ANSWER_S)


def _stream_status_until(events: str, wanted: int) -> None:
    """Open (and at once close) event streams as Alice until one answers `wanted`: a stream's status says
    whether she has room in her share. Polled: nothing else tells when the server has seen a hang-up."""
    deadline = time.monotonic() + ANSWER_S
    while time.monotonic() < deadline:
        with httpx.stream("GET", events, headers=_bearer(ALICE), timeout=ANSWER_S) as response:
            if response.status_code == wanted:
                return
        threading.Event().wait(0.05)  # the poll interval
    raise AssertionError(f"no stream answered {wanted} within {ANSWER_S:.0f}s")


def test_a_sync_call_whose_client_hung_up_frees_its_place_in_the_share_at_once(
    settings: Settings,
) -> None:
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings.model_copy(update={"queue_share": 2}), backend=backend)
    with serving_app(create_app(service, api_keys=KEYS)) as url:
        try:
            submitted = httpx.post(f"{url}/jobs", json=SEEDED, headers=_bearer(ALICE))
            backend.wait_for_step()
            events = submitted.json()["links"]["events"]
            with (
                # Her own job: the first wait on it costs nothing more; the second takes her second place.
                closing(_send_then_hang_up_later(url, "/generate", SEEDED)),
                closing(_send_then_hang_up_later(url, "/generate", SEEDED)) as second,
            ):
                _stream_status_until(events, 429)

                second.close()
                _stream_status_until(events, 200)
        finally:
            backend.release(1000)
