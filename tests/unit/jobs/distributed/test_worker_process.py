"""`imageforge worker` as its own process: it says when it takes jobs, runs an API node's job on the `tiny` model
into the shared folders, and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import GenerationParams, JobStatus, Task
from imageforge.jobs.distributed.worker import READY_LINE
from tests.redis_server import RedisServer
from tests.unit.jobs.distributed.conftest import WAIT_S

pytestmark = pytest.mark.slow


def test_imageforge_worker_says_it_is_ready_runs_a_job_of_an_api_node_and_stops_on_sigterm(
    settings: Settings, redis_server: RedisServer
) -> None:
    distributed = settings.model_copy(update={"queue_url": redis_server.url})
    env = {
        **os.environ,
        "IMAGEFORGE_QUEUE_URL": redis_server.url,
        "IMAGEFORGE_DATA_DIR": str(settings.data_path),
        "IMAGEFORGE_ROOT": str(settings.root_dir),
        "IMAGEFORGE_MODEL": "tiny",
        "OLLAMA_URL": "http://127.0.0.1:9",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "imageforge", "worker", "--models", "tiny", "--device", "cpu"],
        env=env,
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
        job = api.submit(GenerationParams(task=Task.TEXT2IMG, prompt="a lighthouse", width=64, height=64, steps=1))
        done = api.wait_job(job.id, timeout=WAIT_S)
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(WAIT_S)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(WAIT_S)
        reader.join(WAIT_S)
        api.close()

    assert done.status is JobStatus.SUCCEEDED, "".join(log)
    assert done.result is not None
    assert Path(done.result["output_path"]).is_file()
    assert Path(done.result["output_path"]).is_relative_to(settings.output_path)
    assert code == 0, "".join(log)
