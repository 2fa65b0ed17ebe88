"""Portable jobs: a job's stored row holds its parameters and the digests of its input images, never the images
nor a path to read later; the images wait in the input store (`IMAGEFORGE_DATA_DIR/inputs`), so a job runs after
a restart with the images it was submitted with, and one whose image is gone fails with `input_missing`."""

from __future__ import annotations

import base64
import io
import json
import os
import sqlite3
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import GenerationParams, ImageSource, Job, JobStatus, Task
from imageforge.jobs.store import JobStore
from imageforge.storage.inputs import image_digest
from imageforge.transports.http.errors import STATUS_BY_CODE
from tests.events import wait_for_end
from tests.helpers import decode_png, png_base64

SMALL = {"width": 64, "height": 64, "steps": 2}
#: Long enough for the tiny model on a busy CI machine.
WAIT_S = 120.0
#: What "a few KB" means for a payload: parameters, prompts and two digests.
PAYLOAD_LIMIT = 4096
#: How every base64 PNG starts: its signature and the IHDR chunk's length.
PNG_BASE64 = "iVBORw0KGgo"


def _noise_base64(side: int, mode: str = "RGB") -> str:
    """A PNG of random pixels, which compresses as badly as a photo: about 3 MB at 1024 px."""
    channels = len(mode)
    image = Image.frombytes(mode, (side, side), os.urandom(side * side * channels))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return base64.b64encode(buffer.getvalue()).decode()


def _row(settings: Settings, job_id: str) -> str:
    """The job's record as the job database holds it, read with SQLite itself."""
    with sqlite3.connect(settings.jobs_path) as database:
        (body,) = database.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert isinstance(body, str)
    return body


def _stored_inputs(settings: Settings) -> list[str]:
    """The digests of the images in the input store."""
    return sorted(path.stem for path in (settings.data_path / "inputs").rglob("*.png"))


@pytest.mark.parametrize("side", [64, 1024])
@pytest.mark.parametrize("task", ["img2img", "inpaint"])
def test_a_jobs_stored_row_holds_no_image_bytes_and_a_payload_of_a_few_kb_whatever_the_image_size(
    client: TestClient, settings: Settings, task: str, side: int
) -> None:
    init = _noise_base64(side)
    body: dict[str, Any] = {"task": task, "prompt": "a fox in the snow", "init_image": init, **SMALL}
    if task == "inpaint":
        body["mask_image"] = _noise_base64(side, "L")
    job = client.post("/jobs", json=body).json()
    assert wait_for_end(client, job) == "succeeded"

    row = _row(settings, job["job_id"])
    assert PNG_BASE64 not in row, "no image bytes in the job database"
    assert init[1000:1100] not in row
    payload = json.loads(row)["payload"]
    assert len(json.dumps(payload)) < PAYLOAD_LIMIT
    names = ["init_image", "mask_image"] if task == "inpaint" else ["init_image"]
    assert sorted(payload[name] for name in names) == _stored_inputs(settings), "the images wait in the store"


def test_a_queued_job_runs_after_a_restart_with_the_image_it_was_submitted_with(settings: Settings) -> None:
    photo = settings.output_path / "photo.png"
    photo.parent.mkdir(parents=True, exist_ok=True)
    photo.write_bytes(base64.b64decode(png_base64((64, 64), (30, 90, 200))))
    params = GenerationParams(
        task=Task.IMG2IMG, prompt="a lake", steps=2, init_image=ImageSource(path=str(photo)), seed=4
    )
    before = build_service(settings)  # never started: the job stays queued, as at a stop
    job = before.submit(params)
    before.close()
    assert str(photo) not in _row(settings, job.id), "no path to read later"
    photo.unlink()  # the file changes after submit; the job keeps what was sent

    after = build_service(settings)
    after.start()
    try:
        ended = after.wait_job(job.id, timeout=WAIT_S)
    finally:
        after.close()

    assert ended.status is JobStatus.SUCCEEDED, ended.error
    assert ended.result is not None
    assert (ended.result["task"], ended.result["width"], ended.result["seed"]) == ("img2img", 64, 4)


def test_a_job_whose_input_image_is_gone_fails_with_input_missing(settings: Settings) -> None:
    service = build_service(settings)
    job = service.submit(
        GenerationParams(task=Task.IMG2IMG, prompt="a lake", steps=2, init_image=ImageSource(base64=png_base64()))
    )
    for path in (settings.data_path / "inputs").rglob("*.png"):
        path.unlink()

    service.start()
    try:
        ended = service.wait_job(job.id, timeout=WAIT_S)
    finally:
        service.close()

    assert ended.status is JobStatus.FAILED
    assert ended.error is not None
    assert ended.error["code"] == "input_missing"
    assert "Submit the request again" in ended.error["hint"]
    assert STATUS_BY_CODE["input_missing"] == 410


def test_a_submission_refused_after_storing_its_image_leaves_nothing_in_the_input_store(
    client: TestClient, settings: Settings
) -> None:
    kept, refused = png_base64(color=(1, 2, 3)), png_base64(color=(4, 5, 6))
    body = {"task": "img2img", "prompt": "p", **SMALL}
    key = {"Idempotency-Key": "nightly"}
    accepted = client.post("/jobs", json={**body, "init_image": kept}, headers=key)
    assert accepted.status_code == 202
    again = client.post("/jobs", json={**body, "init_image": kept}, headers=key)
    assert again.json()["job_id"] == accepted.json()["job_id"], "the same body is the same request"

    conflict = client.post("/jobs", json={**body, "init_image": refused}, headers=key)

    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert _stored_inputs(settings) == [image_digest(decode_png(kept).convert("RGB"))]


def test_a_job_queued_by_an_older_version_with_its_image_inside_fails_with_invalid_request(
    settings: Settings,
) -> None:
    older = {
        "task": "img2img", "prompt": "p", "negative_prompt": "", "model": "tiny", "steps": None, "guidance": None,
        "width": None, "height": None, "seed": None, "strength": None, "assist_prompt": False, "use_cache": True,
        "decoder": "full", "init_image": {"base64": png_base64(), "path": None}, "mask_image": None,
    }  # fmt: skip
    ended = _run_stored(settings, "older", older)

    assert ended.status is JobStatus.FAILED
    assert ended.error is not None
    assert ended.error["code"] == "invalid_request"
    assert "older version" in ended.error["message"]


def test_a_job_queued_before_requests_named_a_style_still_runs(settings: Settings) -> None:
    before_styles = {
        "task": "text2img", "prompt": "p", "negative_prompt": "", "model": "tiny", "steps": 1, "guidance": 0.0,
        "width": 64, "height": 64, "strength": 0.6, "decoder": "full", "seed": 3, "init_image": None,
        "mask_image": None, "assist_prompt": False, "use_cache": True,
    }  # fmt: skip
    ended = _run_stored(settings, "before-styles", before_styles)

    assert ended.status is JobStatus.SUCCEEDED, ended.error
    assert ended.result is not None
    assert (ended.result["seed"], ended.result["style"]) == (3, None)


def _run_stored(settings: Settings, job_id: str, payload: dict[str, Any]) -> Job:
    """Queue `payload` straight into the job database, as an earlier version left it, and run it to its end."""
    store = JobStore(settings.jobs_path)
    store.save(Job(id=job_id, kind="image", payload=payload, created_at=1.0))
    store.close()
    service = build_service(settings)
    service.start()
    try:
        return service.wait_job(job_id, timeout=WAIT_S)
    finally:
        service.close()
