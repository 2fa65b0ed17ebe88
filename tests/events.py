"""Reading a job's Server-Sent Events in tests, through a client on a real server or a `TestClient`."""

from __future__ import annotations

import json
from collections.abc import Generator
from contextlib import closing
from typing import Any

import httpx
from fastapi.testclient import TestClient

#: A client on a real server, or on the app in memory (starlette types its test client on another httpx).
Client = httpx.Client | TestClient
#: Generous for a cold model load on a slow machine; a stream that stays silent longer fails the test.
READ_TIMEOUT_S = 60.0


def job_events(client: Client, url: str) -> Generator[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of the stream at `url`, as they arrive, until the server ends it."""
    with client.stream("GET", url, timeout=READ_TIMEOUT_S) as response:
        assert response.status_code == 200, response.read()
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield kind, json.loads(line.removeprefix("data: "))


def wait_for_end(client: Client, job: dict[str, Any]) -> str:
    """Follow the job's events until its terminal state; returns that status."""
    status = ""
    for kind, data in job_events(client, job["links"]["events"]):
        if kind == "state":
            status = data["status"]
    assert status in ("succeeded", "failed", "cancelled"), f"the stream ended at {status!r}"
    return status


def wait_for_step(client: Client, job: dict[str, Any]) -> int:
    """Follow the job's events until it reports a finished step; returns the step."""
    # Closing the generator closes the stream at once, leaving the job running.
    with closing(job_events(client, job["links"]["events"])) as events:
        for kind, data in events:
            if kind == "progress":
                step: int = data["step"]
                return step
            assert kind != "state" or data["status"] in ("queued", "running"), f"the job ended first: {data}"
    raise AssertionError("the stream ended before any step")
