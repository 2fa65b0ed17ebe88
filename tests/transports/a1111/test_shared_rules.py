"""An A1111 generation is a job like any other: the same audit log, the same per-client share of the queue, the
same job list and cache as the native API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.service import ImageService
from imageforge.storage.audit import AuditLog
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.loopback import serving_app

ALICE = "alice-key-0123456789"
SMALL = {"prompt": "a fox", "width": 64, "height": 64, "steps": 1}


def test_an_a1111_generation_and_a_refused_one_are_in_the_audit_log_as_the_keys_client(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    app = create_app(build_service(settings, audit=AuditLog(path)), api_keys=ApiKeys([("alice", ALICE)]))
    auth = {"Authorization": f"Bearer {ALICE}"}
    with serving_app(app) as url:
        made = httpx.post(f"{url}/sdapi/v1/txt2img", json=SMALL, headers=auth, timeout=120)
        refused = httpx.post(f"{url}/sdapi/v1/txt2img", json={**SMALL, "enable_hr": True}, headers=auth)
        jobs = httpx.get(f"{url}/jobs", headers=auth).json()["jobs"]

    assert (made.status_code, refused.status_code) == (200, 400)
    [ok, bad] = [json.loads(line) for line in path.read_text().splitlines()]
    assert (ok["client"], ok["action"], ok["outcome"]) == ("alice", "POST /sdapi/v1/txt2img", "ok")
    assert ok["job_id"] == jobs[0]["job_id"], "the A1111 request is a job in the native job list"
    assert (bad["outcome"], bad["status"]) == ("invalid_request", 400)


def test_the_same_seeded_request_comes_from_the_cache_the_second_time(
    client: TestClient, service: ImageService
) -> None:
    first = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 77}).json()
    again = client.post("/sdapi/v1/txt2img", json={**SMALL, "seed": 77}).json()

    assert first["images"] == again["images"]
    assert [job.result["cached"] for job in service.list_jobs() if job.result] == [True, False]
