"""A full disk under the job database, the output folder or the cache: the job in hand fails with `storage_full`,
nothing it wrote stays behind, the worker goes on, /health says `degraded` and new jobs are refused with 503 until
there is room again.

The injected faults raise what the OS and SQLite raise (ENOSPC, "database or disk is full") at the lowest write of
each store; the last tests fill a real small filesystem (root only), under an in-memory client and under a real
`imageforge serve`."""

from __future__ import annotations

import errno
import json
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from mcp.client.client import Client
from mcp_types import TextContent

from imageforge.config import Settings
from imageforge.jobs.embedded import EmbeddedJobQueue
from imageforge.jobs.store import JobStore
from imageforge.service import ImageService
from imageforge.storage import files
from imageforge.transports.mcp.server import McpOptions, build_mcp_server
from tests.contract.conftest import serving as serving_subprocess
from tests.events import wait_for_end
from tests.faults.conftest import SMALL, WAIT_S, fill, mounted, serving
from tests.helpers import png_base64


class FullDatabase:
    """The job database's SQLite connection, whose writes fail as on a full disk while `full` is set."""

    def __init__(self, inner: sqlite3.Connection) -> None:
        self.inner = inner
        self.full = False

    def execute(self, statement: str, parameters: Any = ()) -> sqlite3.Cursor:
        if self.full and not statement.lstrip().upper().startswith("SELECT"):
            raise sqlite3.OperationalError("database or disk is full")
        return self.inner.execute(statement, parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def full_database(service: ImageService, monkeypatch: pytest.MonkeyPatch) -> FullDatabase:
    queue = service._queue
    assert isinstance(queue, EmbeddedJobQueue)
    database = FullDatabase(queue._store._db)
    monkeypatch.setattr(queue._store, "_db", database)
    return database


class FullFolder:
    """Every write of the output store and the cache under `folder` fails with ENOSPC while `full` is set."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        self.full = True
        self._write = files.write_temporary
        monkeypatch.setattr(files, "write_temporary", self)

    def __call__(self, folder: Path, data: bytes, prefix: str) -> Path:
        if self.full and folder.is_relative_to(self.folder):
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._write(folder, data, prefix)


def submitted(client: TestClient, body: dict[str, Any]) -> str:
    response = client.post("/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def ended(service: ImageService, job_id: str) -> dict[str, Any]:
    job = service.wait_job(job_id, timeout=WAIT_S)
    assert job.status.is_terminal, f"job {job_id} is still {job.status.value}: the worker is stuck or gone"
    return job.as_dict()


def assert_refused(client: TestClient, code: str, settings: Settings) -> dict[str, Any]:
    """New jobs answer 503 with `code`; the answer and /health's reason name no path of the server's."""
    refused = client.post("/jobs", json={"prompt": "refused", **SMALL})
    assert refused.status_code == 503, refused.text
    error: dict[str, Any] = refused.json()["error"]
    assert error["code"] == code
    health = client.get("/health").json()
    assert health["status"] == "degraded"
    assert health["reason"]["code"] == code
    assert health["reason"]["hint"]
    for text in (refused.text, json.dumps(health["reason"])):
        assert str(settings.root_dir) not in text
    return error


def files_in(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


def test_a_full_job_database_fails_the_job_in_hand_and_the_worker_runs_the_next_once_there_is_room(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(settings, gated=True) as (client, service, backend):
        database = full_database(service, monkeypatch)
        held = submitted(client, {"prompt": "held while the disk fills", **SMALL})
        backend.wait_for_step()
        database.full = True
        backend.release(1)

        job = ended(service, held)
        assert job["status"] == "failed"
        assert job["error"]["code"] == "storage_full"
        assert "IMAGEFORGE_DATA_DIR" in job["error"]["hint"]
        assert files_in(settings.output_path) == [], "the failed job's image was removed"
        error = assert_refused(client, "storage_full", settings)
        assert "IMAGEFORGE_DATA_DIR" in error["hint"]
        sync = client.post("/generate", json={"prompt": "sync while full", **SMALL})
        assert sync.status_code == 503, sync.text

        database.full = False
        assert client.get("/health").json()["status"] == "ok"
        backend.release(1)
        after = ended(service, submitted(client, {"prompt": "after the space came back", **SMALL}))
        assert after["status"] == "succeeded", after

    # The failure kept in memory reached the database once it took writes again.
    stored = JobStore(settings.jobs_path).get(held)
    assert stored is not None
    assert stored.status.value == "failed"
    assert stored.error is not None
    assert stored.error["code"] == "storage_full"


def test_a_job_whose_start_cannot_be_recorded_fails_and_the_next_job_runs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(settings, gated=True) as (client, service, backend):
        database = full_database(service, monkeypatch)
        running = submitted(client, {"prompt": "running", **SMALL})
        backend.wait_for_step()
        queued = submitted(client, {"prompt": "queued while the disk fills", **SMALL})
        database.full = True
        backend.release(1)

        assert ended(service, queued)["error"]["code"] == "storage_full"
        assert ended(service, running)["error"]["code"] == "storage_full"
        database.full = False
        backend.release(1)
        assert ended(service, submitted(client, {"prompt": "next", **SMALL}))["status"] == "succeeded"


def test_a_full_output_disk_fails_the_job_with_storage_full_and_no_path_until_there_is_room(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(settings) as (client, _, _):
        disk = FullFolder(settings.output_path, monkeypatch)
        response = client.post("/generate", json={"prompt": "no room for me", **SMALL})
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "storage_full"
        assert "OUTPUT_DIR" in error["message"]
        assert files_in(settings.output_path) == []
        assert_refused(client, "storage_full", settings)

        disk.full = False
        assert client.get("/health").json()["status"] == "ok"
        again = client.post("/generate", json={"prompt": "room again", **SMALL})
        assert again.status_code == 200, again.text


def test_a_full_input_store_refuses_an_edit_at_submit_with_storage_full_and_nothing_queued(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    edit = {"task": "img2img", "prompt": "no room for my photo", "init_image": png_base64(), **SMALL, "steps": 2}
    with serving(settings) as (client, service, _):
        disk = FullFolder(settings.data_path / "inputs", monkeypatch)
        response = client.post("/jobs", json=edit)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "storage_full"
        assert "IMAGEFORGE_DATA_DIR" in error["message"]
        assert service.list_jobs() == [], "a job whose images could not be stored is not queued"
        assert_refused(client, "storage_full", settings)

        disk.full = False
        assert client.get("/health").json()["status"] == "ok"
        again = client.post("/jobs", json=edit)
        assert again.status_code == 202, again.text
        assert ended(service, again.json()["job_id"])["status"] == "succeeded"


@pytest.mark.anyio
async def test_mcp_tools_answer_a_full_disk_with_the_same_code_as_http(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(settings) as (_, service, _):
        FullFolder(settings.output_path, monkeypatch)
        async with Client(build_mcp_server(service, McpOptions(preview_px=512))) as mcp:
            failed = await mcp.call_tool("generate_image", {"prompt": "no room", **SMALL})
            refused = await mcp.call_tool("submit_async_job", {"prompt": "refused", **SMALL})
    for result in (failed, refused):
        assert result.is_error
        block = result.content[0]
        assert isinstance(block, TextContent)
        assert json.loads(block.text)["error"]["code"] == "storage_full"


def test_a_job_that_fails_on_the_cache_write_leaves_no_image_and_no_cache_entry(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(settings) as (client, _, _):
        FullFolder(settings.cache_path, monkeypatch)
        response = client.post("/generate", json={"prompt": "seeded, so cached", "seed": 7, **SMALL})
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "storage_full"
        assert "CACHE_DIR" in response.json()["error"]["message"]
        assert files_in(settings.output_path) == [], "the image and sidecar the job wrote were removed"
        assert files_in(settings.cache_path) == []


def test_on_a_real_full_filesystem_jobs_fail_with_storage_full_and_run_again_once_space_is_freed(
    tmp_path: Path, settings: Settings
) -> None:
    with mounted(tmp_path / "disk", "size=4m") as disk:
        small = settings.model_copy(
            update={"data_dir": disk / "data", "output_dir": disk / "outputs", "cache_dir": disk / "cache"}
        )
        (disk / "data").mkdir()
        (disk / "data" / "models").symlink_to(settings.models_path, target_is_directory=True)
        with serving(small, gated=True) as (client, service, backend):
            first = submitted(client, {"prompt": "before the disk fills", **SMALL})
            backend.release(1)
            assert ended(service, first)["status"] == "succeeded"

            held = submitted(client, {"prompt": "held while the disk fills", **SMALL})
            backend.wait_for_step()
            filler = fill(disk)
            backend.release(1)
            job = ended(service, held)
            assert job["status"] == "failed"
            assert job["error"]["code"] == "storage_full"
            assert len(files_in(small.output_path)) == 2, "only the first job's image and sidecar"
            assert_refused(client, "storage_full", small)

            filler.unlink()
            assert client.get("/health").json()["status"] == "ok"
            after = submitted(client, {"prompt": "after the space came back", **SMALL})
            backend.release(1)
            assert ended(service, after)["status"] == "succeeded"


@pytest.mark.slow
def test_a_real_server_on_a_full_disk_refuses_jobs_says_degraded_and_runs_jobs_again_once_space_is_freed(
    tmp_path: Path, data_dir: Path
) -> None:
    with mounted(tmp_path / "disk", "size=4m") as disk:
        data = disk / "data"
        data.mkdir()
        (data_dir / "models").mkdir(exist_ok=True)
        (data / "models").symlink_to(data_dir / "models", target_is_directory=True)
        folders = {"OUTPUT_DIR": str(disk / "outputs"), "CACHE_DIR": str(disk / "cache")}
        with (
            serving_subprocess(tmp_path, data, settings=folders) as server,
            httpx.Client(base_url=server.url, timeout=60.0) as client,
        ):
            first = client.post("/jobs", json={"prompt": "before the disk fills", **SMALL}).json()
            assert wait_for_end(client, first) == "succeeded"

            filler = fill(disk)
            # The database may still take a small row in space it holds: then the job fails on its image.
            response = client.post("/jobs", json={"prompt": "the disk is full", **SMALL})
            if response.status_code == 202:
                job = response.json()
                assert wait_for_end(client, job) == "failed"
                error = client.get(job["links"]["self"]).json()["error"]
            else:
                assert response.status_code == 503, response.text
                error = response.json()["error"]
            assert error["code"] == "storage_full"
            health = client.get("/health").json()
            assert health["status"] == "degraded"
            assert health["reason"]["code"] == "storage_full"
            sync = client.post("/generate", json={"prompt": "sync on a full disk", **SMALL})
            assert sync.status_code == 503, sync.text
            assert sync.json()["error"]["code"] == "storage_full"

            filler.unlink()
            assert client.get("/health").json()["status"] == "ok"
            after = client.post("/jobs", json={"prompt": "after the space came back", **SMALL})
            assert after.status_code == 202, after.text
            assert wait_for_end(client, after.json()) == "succeeded"
        _, log = server.logs()
    assert "Traceback" not in log, log
