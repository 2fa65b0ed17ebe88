"""With API keys on, a job belongs to the key that submitted it: another key neither sees, cancels, follows nor
finds it again by Idempotency-Key (404, exactly as an unknown job), over HTTP and MCP alike; an admin key sees and
cancels every job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from fastapi.testclient import TestClient
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import TextContent

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.gated import GatedBackend
from tests.loopback import LOCAL_URL, serving_app

ALICE = "alice-key-0123456789"
BOB = "bob-key-9876543210ab"
ROOT = "root-key-0123456789ab"
KEYS = ApiKeys((("alice", ALICE), ("bob", BOB), ("root", ROOT, True)))
SMALL = {"width": 64, "height": 64, "steps": 1}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def shared(settings: Settings) -> Iterator[tuple[str, GatedBackend]]:
    """A server with two user keys and an admin key, whose generations hold at each step."""
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings, backend=backend)
    with serving_app(create_app(service, api_keys=KEYS)) as url:
        try:
            yield url, backend
        finally:
            backend.release(1000)


def _alices_jobs(url: str, backend: GatedBackend) -> tuple[dict[str, Any], dict[str, Any]]:
    """Alice's running job and her queued one (sent with Idempotency-Key `mine`)."""
    running = httpx.post(f"{url}/jobs", json={"prompt": "running", **SMALL}, headers=_bearer(ALICE))
    backend.wait_for_step()
    queued = httpx.post(
        f"{url}/jobs", json={"prompt": "queued", **SMALL}, headers={**_bearer(ALICE), "Idempotency-Key": "mine"}
    )
    assert (running.status_code, queued.status_code) == (202, 202)
    return running.json(), queued.json()


def test_another_key_gets_404_for_a_job_it_did_not_submit(shared: tuple[str, GatedBackend]) -> None:
    url, backend = shared
    running, queued = _alices_jobs(url, backend)

    answers = []
    for job in (running, queued):
        answers += [
            httpx.get(job["links"]["self"], headers=_bearer(BOB)),
            httpx.delete(job["links"]["cancel"], headers=_bearer(BOB)),
            httpx.get(job["links"]["events"], headers=_bearer(BOB)),
            httpx.get(f"{job['links']['self']}/init_image", headers=_bearer(BOB)),
        ]
    unknown = httpx.get(f"{url}/jobs/0123456789abcdef", headers=_bearer(BOB))
    listed = httpx.get(f"{url}/jobs", headers=_bearer(BOB)).json()["jobs"]
    alices_view = {
        job["job_id"]: job["status"] for job in httpx.get(f"{url}/jobs", headers=_bearer(ALICE)).json()["jobs"]
    }

    for answer in answers:
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "job_not_found"
        assert answer.json()["error"]["hint"] == unknown.json()["error"]["hint"], "told apart from an unknown id"
    assert listed == []
    assert alices_view == {running["job_id"]: "running", queued["job_id"]: "queued"}, "nothing was cancelled"


def test_another_key_gets_404_deleting_a_job_it_did_not_submit_and_the_image_stays(
    shared: tuple[str, GatedBackend],
) -> None:
    url, backend = shared
    backend.release(10)
    submitted = httpx.post(f"{url}/jobs", json={"prompt": "alice's", **SMALL}, headers=_bearer(ALICE)).json()
    with httpx.stream("GET", submitted["links"]["events"], headers=_bearer(ALICE)) as events:
        for _ in events.iter_lines():
            pass
    job = httpx.get(submitted["links"]["self"], headers=_bearer(ALICE)).json()
    output = Path(job["result"]["output_path"])

    refused = httpx.delete(f"{job['links']['self']}/result", headers=_bearer(BOB))

    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "job_not_found"
    assert output.exists()
    assert httpx.get(job["links"]["self"], headers=_bearer(ALICE)).json()["status"] == "succeeded"
    assert httpx.delete(f"{job['links']['self']}/result", headers=_bearer(ALICE)).status_code == 204
    assert not output.exists()


def test_the_same_idempotency_key_from_another_key_makes_its_own_job(shared: tuple[str, GatedBackend]) -> None:
    url, backend = shared
    _, queued = _alices_jobs(url, backend)

    bobs = httpx.post(
        f"{url}/jobs", json={"prompt": "queued", **SMALL}, headers={**_bearer(BOB), "Idempotency-Key": "mine"}
    )
    other_body = httpx.post(
        f"{url}/jobs", json={"prompt": "bob's own", **SMALL}, headers={**_bearer(BOB), "Idempotency-Key": "mine"}
    )
    alices_again = httpx.post(
        f"{url}/jobs", json={"prompt": "queued", **SMALL}, headers={**_bearer(ALICE), "Idempotency-Key": "mine"}
    )

    assert bobs.status_code == 202
    assert bobs.json()["job_id"] != queued["job_id"]
    assert other_body.json()["error"]["code"] == "idempotency_conflict", "Bob's key is his own from then on"
    assert alices_again.json()["job_id"] == queued["job_id"]


def test_an_admin_key_sees_and_cancels_every_clients_jobs(shared: tuple[str, GatedBackend]) -> None:
    url, backend = shared
    running, queued = _alices_jobs(url, backend)
    bobs = httpx.post(f"{url}/jobs", json={"prompt": "bob's", **SMALL}, headers=_bearer(BOB)).json()

    listed = {job["job_id"] for job in httpx.get(f"{url}/jobs", headers=_bearer(ROOT)).json()["jobs"]}
    seen = httpx.get(queued["links"]["self"], headers=_bearer(ROOT))
    cancelled = httpx.delete(queued["links"]["cancel"], headers=_bearer(ROOT))
    stopping = httpx.delete(running["links"]["cancel"], headers=_bearer(ROOT))
    backend.release()

    assert listed == {running["job_id"], queued["job_id"], bobs["job_id"]}
    assert seen.status_code == 200
    assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
    assert stopping.status_code == 202


@pytest.mark.anyio
async def test_mcp_job_tools_answer_job_not_found_for_another_keys_job(shared: tuple[str, GatedBackend]) -> None:
    url, backend = shared
    running, queued = _alices_jobs(url, backend)

    async with (
        httpx2.AsyncClient(headers=_bearer(BOB)) as http,
        Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp,
    ):
        results = [
            await mcp.call_tool(tool, {"job_id": job["job_id"]})
            for tool in ("get_job_status", "get_job_result", "cancel_job")
            for job in (running, queued)
        ]
    still = httpx.get(queued["links"]["self"], headers=_bearer(ALICE)).json()

    for result in results:
        assert result.is_error
        [text] = [block for block in result.content if isinstance(block, TextContent)]
        assert json.loads(text.text)["error"]["code"] == "job_not_found"
    assert still["status"] == "queued"


def test_an_image_by_name_opens_for_its_owner_an_admin_and_a_signed_link_only(service: ImageService) -> None:
    with TestClient(create_app(service, api_keys=KEYS), base_url=LOCAL_URL) as client:
        submitted = client.post("/jobs", json={"prompt": "a fox", **SMALL}, headers=_bearer(ALICE)).json()
        service.wait_job(submitted["job_id"], timeout=60)
        job = client.get(submitted["links"]["self"], headers=_bearer(ALICE)).json()
        name = Path(job["result"]["output_path"]).name
        answers = {key: client.get(f"/images/{name}", headers=_bearer(key)) for key in (ALICE, BOB, ROOT)}
        signed = client.get(job["links"]["image"])

    assert job["status"] == "succeeded"
    assert (answers[ALICE].status_code, answers[ROOT].status_code, signed.status_code) == (200, 200, 200)
    assert answers[BOB].status_code == 404
    assert answers[BOB].json()["error"]["code"] == "image_not_found"
