"""kill -9 with jobs in each state: a server killed mid-job, and a real `imageforge serve` started on the same
data folder. Succeeded and cancelled jobs keep their result or error (and the image), the running job
ends `interrupted` and is not run again, and the queued ones run in their order.

The first server holds each denoising step until the test releases it (tests/contract/held_server.py), so the
test knows which job is running and which are queued when it sends SIGKILL; nothing is cleaned up on the way.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from tests.contract.conftest import (
    IMAGEFORGE,
    Server,
    free_port,
    private_data,
    stop,
    user_environment,
    wait_until_healthy,
)
from tests.events import wait_for_end, wait_for_step

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = {"width": 64, "height": 64}


@contextmanager
def started(command: list[str], cwd: Path, env: dict[str, str], name: str) -> Iterator[Server]:
    """Run `command PORT` in `cwd`, with a pipe to its stdin, healthy on entry and always stopped on exit."""
    port = free_port()
    stdout, stderr = cwd.parent / f"{name}.stdout.log", cwd.parent / f"{name}.stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [*command, str(port)], cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=out, stderr=err
        )
    server = Server(process=process, host="127.0.0.1", port=port, cwd=cwd, stdout=stdout, stderr=stderr, env=env)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        stop(process)
        if process.stdin is not None:
            process.stdin.close()


def release(stdin: IO[bytes] | None, steps: int) -> None:
    """Let the held server's generations go on by `steps` steps."""
    assert stdin is not None
    stdin.write(f"{steps}\n".encode())
    stdin.flush()


def submitted(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def at(timestamp: str | None) -> datetime:
    assert timestamp is not None
    return datetime.fromisoformat(timestamp)


@pytest.fixture
def data(tmp_path: Path, data_dir: Path) -> Path:
    """A data folder of this test's own (so its jobs.sqlite starts empty), sharing the session's built models."""
    return private_data(tmp_path, data_dir)


def test_after_kill_9_the_running_job_is_interrupted_the_queued_run_in_order_and_ended_jobs_are_kept(
    tmp_path: Path, data: Path
) -> None:
    cwd = tmp_path / "cwd"  # both servers' working folder, so both write and serve the same outputs/
    cwd.mkdir()
    env = user_environment(data)
    held_command = [sys.executable, "-m", "tests.contract.held_server"]
    with started(held_command, cwd, {**env, "PYTHONPATH": str(REPOSITORY)}, "held") as held:
        with httpx.Client(base_url=held.url, timeout=30.0) as client:
            before = submitted(client, {"prompt": "finished before the crash", "seed": 3, "steps": 1, **SMALL})
            release(held.process.stdin, 1)
            assert wait_for_end(client, before) == "succeeded"
            before = client.get(before["links"]["self"]).json()

            running = submitted(client, {"prompt": "running at the crash", "steps": 2, **SMALL})
            assert wait_for_step(client, running) == 1
            first = submitted(client, {"prompt": "queued first", "steps": 1, **SMALL})
            second = submitted(client, {"prompt": "queued second", "steps": 1, **SMALL})
            assert (first["queue_position"], second["queue_position"]) == (1, 2)
            cancelled = submitted(client, {"prompt": "cancelled before the crash", "steps": 1, **SMALL})
            assert client.delete(cancelled["links"]["cancel"]).status_code == 200

        assert stop(held.process, signal.SIGKILL) == -signal.SIGKILL

    with started([str(IMAGEFORGE), "serve", "--port"], cwd, env, "serve") as server:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            interrupted = client.get(f"/jobs/{running['job_id']}").json()
            assert interrupted["status"] == "failed", interrupted
            assert interrupted["error"]["code"] == "interrupted"
            assert interrupted["progress"]["step"] <= 1, "the interrupted job is not run again"

            # Links are absolute: follow the ones the new server gives.
            assert wait_for_end(client, client.get(f"/jobs/{second['job_id']}").json()) == "succeeded"
            ran_first = client.get(f"/jobs/{first['job_id']}").json()
            ran_second = client.get(f"/jobs/{second['job_id']}").json()
            assert ran_first["status"] == "succeeded", ran_first
            assert at(ran_first["finished_at"]) <= at(ran_second["started_at"]), "queued jobs run in their order"

            still_cancelled = client.get(f"/jobs/{cancelled['job_id']}").json()
            assert still_cancelled["status"] == "cancelled", still_cancelled
            assert still_cancelled["error"]["code"] == "cancelled"
            assert still_cancelled["started_at"] is None, "a cancelled job is not run after a restart"

            kept = client.get(f"/jobs/{before['job_id']}").json()
            assert kept["status"] == "succeeded"
            assert unsigned(kept["result"]) == unsigned(before["result"])
            image = client.get(kept["links"]["image"])
            assert image.status_code == 200
            assert image.headers["content-type"] == "image/png"
            assert image.content.startswith(PNG_SIGNATURE)
            assert image.content == Path(before["result"]["output_path"]).read_bytes()
            outputs = [Path(job["result"]["output_path"]) for job in (kept, ran_first, ran_second)]
            assert sorted((cwd / "outputs").glob("*.png")) == sorted(outputs), "no image of the interrupted job"
        _, log = server.logs()
    assert "Traceback" not in log, log


def unsigned(result: dict[str, Any]) -> dict[str, Any]:
    """A job's result without its images' links, whose signatures are made afresh for each answer."""
    return {**result, "images": [{**image, "url": None} for image in result["images"]]}
