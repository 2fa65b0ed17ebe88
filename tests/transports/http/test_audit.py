"""The audit log: one JSON line per request of interest (who, what, when, outcome), read back from the file
after real requests to a real server; prompts only when asked for."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.storage.audit import AuditLog
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.loopback import serving_app

ALICE = "alice-key-0123456789"
AUTH = {"Authorization": f"Bearer {ALICE}"}
SMALL = {"width": 64, "height": 64, "steps": 1}


def _entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _serve(settings: Settings, log: AuditLog) -> Any:
    """A served app whose service keeps `log`; the app's lifespan starts and closes the service."""
    return serving_app(create_app(build_service(settings, audit=log), api_keys=ApiKeys((("alice", ALICE),))))


@pytest.fixture
def audited(settings: Settings, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    path = tmp_path / "audit" / "audit.jsonl"
    with _serve(settings, AuditLog(path)) as url:
        yield url, path


def test_a_job_submission_is_recorded_with_key_name_job_id_and_outcome_but_no_prompt(
    audited: tuple[str, Path],
) -> None:
    url, path = audited
    submitted = httpx.post(f"{url}/jobs", json={"prompt": "a secret fox", **SMALL}, headers=AUTH).json()
    generated = httpx.post(f"{url}/generate", json={"prompt": "a secret owl", **SMALL}, headers=AUTH, timeout=120)

    [job, sync] = _entries(path)
    assert job["client"] == "alice"
    assert (job["action"], job["outcome"], job["status"]) == ("POST /jobs", "ok", 202)
    assert job["job_id"] == submitted["job_id"]
    assert datetime.fromisoformat(job["ts"]).tzinfo is not None
    assert (sync["action"], sync["outcome"], sync["status"]) == ("POST /generate", "ok", 200)
    assert generated.status_code == 200
    assert "secret" not in path.read_text(), "prompts stay out of the audit log by default"


def test_prompts_are_recorded_when_audit_prompts_is_on(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with _serve(settings, AuditLog(path, prompts=True)) as url:
        httpx.post(f"{url}/jobs", json={"prompt": "a red fox", **SMALL}, headers=AUTH)

    [entry] = _entries(path)
    assert entry["prompt"] == "a red fox"


def test_refused_requests_are_recorded_with_their_code_and_the_callers_address(audited: tuple[str, Path]) -> None:
    url, path = audited
    httpx.post(f"{url}/jobs", json={"prompt": "a fox", **SMALL})
    httpx.get(f"{url}/models", headers={"Authorization": "Bearer not-a-key-at-all-000"})
    httpx.get(f"{url}/models", headers={"Host": "evil.example", **AUTH})
    httpx.post(f"{url}/jobs", json={"prompt": "a fox", **SMALL}, headers={"Origin": "https://evil.example", **AUTH})
    httpx.post(f"{url}/generate", json={"prompt": "a fox", "width": 65}, headers=AUTH)

    entries = _entries(path)
    assert [(entry["action"], entry["outcome"], entry["status"]) for entry in entries] == [
        ("POST /jobs", "unauthorized", 401),
        ("GET /models", "unauthorized", 401),
        ("GET /models", "host_not_allowed", 400),
        ("POST /jobs", "origin_not_allowed", 403),
        ("POST /generate", "invalid_request", 400),
    ]
    # No key was accepted before the first four were refused: the caller is known by its address only.
    assert [entry["client"] for entry in entries] == ["127.0.0.1"] * 4 + ["alice"]


def test_reads_are_not_recorded_but_cancels_and_model_loads_are(audited: tuple[str, Path]) -> None:
    url, path = audited
    job = httpx.post(f"{url}/jobs", json={"prompt": "a fox", **SMALL}, headers=AUTH).json()
    httpx.get(f"{url}/models", headers=AUTH)
    httpx.get(job["links"]["self"], headers=AUTH)
    httpx.delete(job["links"]["cancel"], headers=AUTH)
    httpx.post(f"{url}/models/tiny/load", headers=AUTH)

    actions = [(entry["action"], entry.get("job_id")) for entry in _entries(path)]
    assert actions == [
        ("POST /jobs", job["job_id"]),
        (f"DELETE /jobs/{job['job_id']}", None),
        ("POST /models/tiny/load", None),
    ]


def test_deleting_a_job_is_recorded_with_its_job_id_and_outcome(audited: tuple[str, Path]) -> None:
    url, path = audited
    job = httpx.post(f"{url}/jobs", json={"prompt": "a fox", **SMALL}, headers=AUTH).json()
    with httpx.stream("GET", job["links"]["events"], headers=AUTH) as events:
        for _ in events.iter_lines():
            pass
    deleted = httpx.delete(f"{job['links']['self']}/result", headers=AUTH)
    again = httpx.delete(f"{job['links']['self']}/result", headers=AUTH)

    assert (deleted.status_code, again.status_code) == (204, 404)
    records = [(entry["action"], entry["outcome"], entry["status"], entry.get("job_id")) for entry in _entries(path)]
    action = f"DELETE /jobs/{job['job_id']}/result"
    assert records[1:] == [(action, "ok", 204, job["job_id"]), (action, "job_not_found", 404, job["job_id"])]


@pytest.mark.anyio
async def test_mcp_tool_calls_are_recorded_per_tool_with_the_key_name(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with _serve(settings, AuditLog(path, prompts=True)) as url:
        async with (
            httpx2.AsyncClient(headers=AUTH, timeout=120) as http,
            Client(streamable_http_client(f"{url}/mcp", http_client=http)) as mcp,
        ):
            await mcp.list_tools()
            drawn = await mcp.call_tool("generate_image", {"prompt": "a fox", **SMALL})
            refused = await mcp.call_tool("submit_async_job", {"prompt": "an owl", "width": 65})

    assert drawn.structured_content is not None
    assert refused.is_error
    entries = _entries(path)
    assert [(entry["client"], entry["action"], entry["outcome"]) for entry in entries] == [
        ("alice", "mcp generate_image", "ok"),
        ("alice", "mcp submit_async_job", "invalid_request"),
    ]
    assert entries[0]["job_id"] == drawn.structured_content["job_id"]
    assert [entry["prompt"] for entry in entries] == ["a fox", "an owl"]


def test_an_audit_log_without_a_path_writes_nothing(settings: Settings, tmp_path: Path) -> None:
    with serving_app(create_app(build_service(settings, audit=AuditLog(None)))) as url:
        assert httpx.post(f"{url}/jobs", json={"prompt": "a fox", **SMALL}).status_code == 202

    assert list(tmp_path.rglob("*.jsonl")) == []
