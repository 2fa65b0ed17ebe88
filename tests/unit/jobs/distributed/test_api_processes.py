"""Two `imageforge serve --queue` processes on one data folder (which the embedded queue's lock would refuse) and a
worker: a job accepted by one API node is followed, read and its image served by the other."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from imageforge.config import Settings
from tests.contract.conftest import private_data, serving
from tests.redis_server import RedisServer
from tests.unit.jobs.distributed.conftest import WAIT_S
from tests.unit.jobs.distributed.test_images_across_nodes import worker_node

pytestmark = pytest.mark.slow


def test_a_job_accepted_by_one_api_process_is_followed_and_served_by_another(
    tmp_path: Path, data_dir: Path, redis_server: RedisServer
) -> None:
    shared = private_data(tmp_path, data_dir)
    for node in ("a", "b"):
        (tmp_path / node).mkdir()
    folders = {
        "OUTPUT_DIR": str(tmp_path / "outputs"),
        "CACHE_DIR": str(tmp_path / "cache"),
    }
    worker_settings = Settings(
        _env_file=None,
        default_model="tiny",
        root_dir=tmp_path,
        data_dir=shared,
        output_dir=tmp_path / "outputs",
        cache_dir=tmp_path / "cache",
        queue_url=redis_server.url,
        ollama_url="http://127.0.0.1:9",
    )
    with (
        serving(tmp_path / "a", shared, "--queue", redis_server.url, settings=folders) as first,
        serving(tmp_path / "b", shared, settings={**folders, "IMAGEFORGE_QUEUE_URL": redis_server.url}) as second,
        worker_node(worker_settings),
    ):
        accepted = httpx.post(
            f"{first.url}/jobs", json={"prompt": "a boat", "width": 64, "height": 64, "steps": 2}, timeout=WAIT_S
        )
        job_id = accepted.json()["job_id"]
        with httpx.stream("GET", f"{second.url}/jobs/{job_id}/events", timeout=WAIT_S) as events:
            kinds = [line.removeprefix("event: ") for line in events.iter_lines() if line.startswith("event: ")]
        job = httpx.get(f"{second.url}/jobs/{job_id}", timeout=WAIT_S).json()
        image = httpx.get(job["links"]["image"], timeout=WAIT_S)
        health = httpx.get(f"{first.url}/health", timeout=WAIT_S).json()

    assert accepted.status_code == 202, accepted.text
    assert kinds[-1] == "state"
    assert job["status"] == "succeeded", job
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert health["queue"]["kind"] == "redis"
