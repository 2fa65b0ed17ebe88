"""SIGTERM stops `imageforge serve` within IMAGEFORGE_SHUTDOWN_TIMEOUT_S: open requests get that long, then the
running job stops at its next step and ends `interrupted`; a queued job stays queued and runs after a restart.

The running job is the `tiny` model at its largest size and most steps: slow enough on a CPU to still be
running when the signal comes. A synchronous /generate call waits on the queued job meanwhile.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.contract.conftest import private_data, serving
from tests.events import job_events, wait_for_end, wait_for_step
from tests.faults.test_kill9 import at, submitted

pytestmark = pytest.mark.slow

SHUTDOWN_TIMEOUT_S = 2
#: Far past the bound plus a busy machine's slack; a server that waits for its jobs to finish takes longer.
EXIT_WITHIN_S = 60.0
SETTINGS = {"IMAGEFORGE_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S)}
SLOW = {"prompt": "a long job", "steps": 100, "width": 1024, "height": 1024}
QUICK = {"prompt": "a job that waits", "seed": 5, "steps": 1, "width": 64, "height": 64}


def _queued(client: httpx.Client) -> list[dict[str, object]]:
    """The queued jobs, once there is one (polled: nothing else tells when a sync call's job is in)."""
    deadline = time.monotonic() + EXIT_WITHIN_S
    while time.monotonic() < deadline:
        jobs: list[dict[str, object]] = client.get("/jobs", params={"status": "queued"}).json()["jobs"]
        if jobs:
            return jobs
        threading.Event().wait(0.1)  # the poll interval
    raise AssertionError("the synchronous call's job was never queued")


def test_sigterm_interrupts_the_running_job_keeps_the_queued_one_and_exits_within_the_bound(
    tmp_path: Path, data_dir: Path
) -> None:
    data = private_data(tmp_path, data_dir)
    (tmp_path / "first").mkdir()
    with serving(tmp_path / "first", data, settings=SETTINGS) as server:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            running = submitted(client, SLOW)
            assert wait_for_step(client, running) >= 1

            def wait_synchronously() -> None:
                # The server stops before the job runs: the call ends unanswered.
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(f"{server.url}/generate", json=QUICK, timeout=EXIT_WITHIN_S)

            waiter = threading.Thread(target=wait_synchronously, name="sync-generate", daemon=True)
            waiter.start()
            [queued] = _queued(client)

        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"imageforge serve did not stop within {EXIT_WITHIN_S:.0f}s of SIGTERM")
        stopped_at = datetime.now(UTC)
        waiter.join(timeout=EXIT_WITHIN_S)

    (tmp_path / "second").mkdir()
    with (
        serving(tmp_path / "second", data, settings=SETTINGS) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as client,
    ):
        interrupted = client.get(f"/jobs/{running['job_id']}").json()
        assert wait_for_end(client, client.get(f"/jobs/{queued['job_id']}").json()) == "succeeded"
        kept = client.get(f"/jobs/{queued['job_id']}").json()

    assert interrupted["status"] == "failed", interrupted
    assert interrupted["error"]["code"] == "interrupted"
    assert at(kept["started_at"]) > stopped_at, "the queued job stayed queued and ran after the restart"


def test_ctrl_c_ends_an_open_event_stream_at_once_instead_of_waiting_on_it(tmp_path: Path, data_dir: Path) -> None:
    """A page following the running job holds its event stream open; Ctrl+C ends that stream first, so the server
    stops without waiting out its shutdown timeout (here far longer than the test waits) and the job ends."""
    data = private_data(tmp_path, data_dir)
    (tmp_path / "first").mkdir()
    patient = {"IMAGEFORGE_SHUTDOWN_TIMEOUT_S": "3600"}
    with serving(tmp_path / "first", data, settings=patient) as server:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            running = submitted(client, SLOW)
        stepped, ended = threading.Event(), threading.Event()

        def follow() -> None:
            with httpx.Client(timeout=30.0) as follower, contextlib.suppress(httpx.HTTPError):
                for kind, _ in job_events(follower, running["links"]["events"]):
                    if kind == "progress":
                        stepped.set()
            ended.set()

        threading.Thread(target=follow, name="page-follower", daemon=True).start()
        assert stepped.wait(EXIT_WITHIN_S), "the job never reported a step"

        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"imageforge serve still waited on the event stream {EXIT_WITHIN_S:.0f}s after Ctrl+C")
        assert ended.wait(EXIT_WITHIN_S), "the event stream stayed open"

    (tmp_path / "second").mkdir()
    with (
        serving(tmp_path / "second", data, settings=SETTINGS) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as client,
    ):
        interrupted = client.get(f"/jobs/{running['job_id']}").json()
    assert interrupted["status"] == "failed", interrupted
    assert interrupted["error"]["code"] == "interrupted"
