"""`imageforge worker` as its own process: it says when it takes jobs, runs an API node's job on the `tiny` model
into the shared folders, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import Caller, GenerationParams, Job, JobStatus, Task
from imageforge.jobs.distributed.worker import READY_LINE
from tests.redis_server import RedisServer
from tests.unit.jobs.distributed.conftest import WAIT_S

pytestmark = pytest.mark.slow


@dataclass
class _WorkerRun:
    """What one `imageforge worker` did with one job: the job as it ended, its exit code and its stderr lines."""

    done: Job
    code: int
    log: list[str]


def _run_a_job_on_a_worker(settings: Settings, redis_server: RedisServer, **env: str) -> _WorkerRun:
    """Start `imageforge worker` with `env` added, submit a job from an API node's service, then SIGTERM it."""
    distributed = settings.model_copy(update={"queue_url": redis_server.url})
    environment = {
        **os.environ,
        "IMAGEFORGE_QUEUE_URL": redis_server.url,
        "IMAGEFORGE_DATA_DIR": str(settings.data_path),
        "IMAGEFORGE_ROOT": str(settings.root_dir),
        "IMAGEFORGE_MODEL": "tiny",
        "OLLAMA_URL": "http://127.0.0.1:9",
        **env,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "imageforge", "worker", "--models", "tiny", "--device", "cpu"],
        env=environment,
        cwd=settings.root_dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    ready = threading.Event()
    log: list[str] = []

    def read() -> None:
        assert worker.stderr is not None
        with worker.stderr:
            for line in worker.stderr:
                log.append(line)
                if READY_LINE in line:
                    ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    api = build_service(distributed)
    try:
        assert ready.wait(WAIT_S), "".join(log)
        job = api.submit(
            GenerationParams(task=Task.TEXT2IMG, prompt="a zanzibarquokka", width=64, height=64, steps=1),
            caller=Caller("alice", isolated=True),
        )
        done = api.wait_job(job.id, timeout=WAIT_S)
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(WAIT_S)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(WAIT_S)
        reader.join(WAIT_S)
        api.close()
    return _WorkerRun(done, code, log)


def test_imageforge_worker_says_it_is_ready_runs_a_job_of_an_api_node_and_stops_on_sigterm(
    settings: Settings, redis_server: RedisServer
) -> None:
    run = _run_a_job_on_a_worker(settings, redis_server)
    done, log = run.done, run.log

    assert done.status is JobStatus.SUCCEEDED, "".join(log)
    assert done.result is not None
    assert Path(done.result["output_path"]).is_file()
    assert Path(done.result["output_path"]).is_relative_to(settings.output_path)
    assert run.code == 0, "".join(log)


def test_a_worker_with_json_logs_names_the_job_and_its_client_on_its_lines_and_never_the_prompt(
    settings: Settings, redis_server: RedisServer
) -> None:
    run = _run_a_job_on_a_worker(settings, redis_server, IMAGEFORGE_LOG_FORMAT="json")

    assert run.done.status is JobStatus.SUCCEEDED, "".join(run.log)
    # The ready line is the supervisors' and tests' signal, written as it always is.
    lines = [
        json.loads(line) for line in run.log if READY_LINE not in line and not line.startswith("imageforge worker:")
    ]
    of_job = [line for line in lines if line.get("job_id") == run.done.id]
    assert of_job[0]["message"].startswith("job started")
    assert of_job[-1]["message"].startswith("job succeeded")
    assert {line["client"] for line in of_job} == {"alice"}
    assert "zanzibarquokka" not in "".join(run.log)
