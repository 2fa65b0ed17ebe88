"""An image that runs out of memory is retried once along the operator's fallback policy (IMAGEFORGE_OOM_FALLBACK)
and its result says what the retry changed; a retry that cannot help, or runs out too, fails the job with
`out_of_memory`, and the server goes on serving.

The failures are real: inside the first step of a chosen generation, the test asks torch's CPU allocator for a
pebibyte, which it refuses as it would refuse a step too large for the machine (as
test_model_lifecycle.py does).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from mcp.client.client import Client
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import Fallback, Progress
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.storage.outputs import read_record
from imageforge.transports.http.app import create_app
from imageforge.transports.mcp.server import McpOptions, build_mcp_server
from tests.fixed_memory import FixedMemory
from tests.gated import StepHookBackend
from tests.helpers import png_base64
from tests.loopback import LOCAL_URL
from tests.transports.mcp.answers import structured_of

SMALL = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2}


class RunsOutOfMemory:
    """Fails the first step of the generations numbered in `failing` (1: the server's first) in the real allocator."""

    def __init__(self, *failing: int) -> None:
        self.failing = set(failing)
        self.generations = 0

    def __call__(self, progress: Progress) -> None:
        if progress.step == 1:
            self.generations += 1
            if self.generations in self.failing:
                torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: the CPU allocator refuses


def _serving(settings: Settings, failures: RunsOutOfMemory, fallback: list[Fallback] | None) -> Iterator[TestClient]:
    backend = StepHookBackend(DiffusersBackend(device="cpu", models_path=settings.models_path), failures)
    update: dict[str, Any] = {} if fallback is None else {"oom_fallback": fallback}
    # Plenty free, so that a smaller size is the policy's own shrink and not what this machine's RAM allows.
    service = build_service(settings.model_copy(update=update), backend=backend, memory_probe=FixedMemory(64.0))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        yield client


@pytest.fixture
def first_runs_out(settings: Settings) -> Iterator[TestClient]:
    """The default policy; the server's first generation runs out of memory."""
    yield from _serving(settings, RunsOutOfMemory(1), None)


def _size(response: dict[str, Any]) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(response["image_base64"]))).size


def test_an_image_that_runs_out_of_memory_is_retried_with_memory_savers_and_says_so(first_runs_out: TestClient) -> None:
    client = first_runs_out

    downgraded = client.post("/generate", json=SMALL)
    job = client.get("/jobs").json()["jobs"][0]
    after = client.post("/generate", json=SMALL)

    assert downgraded.status_code == 200
    answer = downgraded.json()
    # On the CPU: no offload to make, and the size stays, as the request did not allow a smaller one.
    assert answer["downgraded"]["from"] == {"width": 64, "height": 64}
    assert answer["downgraded"]["applied"] == ["tiled_vae", "attention_slicing"]
    assert answer["downgraded"]["reason"].startswith("out of memory at 64x64: ")
    assert "can't allocate memory" in answer["downgraded"]["reason"]
    assert answer["runtime"]["savers"] == ["attention_slicing", "tiled_vae"]
    assert _size(answer) == (64, 64)
    assert job["result"]["downgraded"] == answer["downgraded"]
    assert read_record(base64.b64decode(answer["image_base64"]))["downgraded"] == answer["downgraded"]
    # The next job runs as asked: the savers are off again.
    assert after.status_code == 200
    assert after.json()["downgraded"] is None
    assert after.json()["runtime"]["savers"] == []


def test_a_downgraded_image_is_not_the_cached_answer_to_its_request(first_runs_out: TestClient) -> None:
    client = first_runs_out
    seeded = {**SMALL, "seed": 7}

    downgraded = client.post("/generate", json=seeded).json()
    again = client.post("/generate", json=seeded).json()
    cached = client.post("/generate", json=seeded).json()

    assert downgraded["downgraded"] is not None
    assert (again["cached"], again["downgraded"]) == (False, None)
    assert (cached["cached"], cached["downgraded"]) == (True, None)


def test_a_request_that_allows_it_is_retried_at_a_smaller_size_of_the_same_shape(settings: Settings) -> None:
    for client in _serving(settings, RunsOutOfMemory(1), [Fallback.SMALLER_SIZE]):
        response = client.post("/generate", json={**SMALL, "width": 128, "height": 96, "allow_downsize": True})

        assert response.status_code == 200
        answer = response.json()
        assert (answer["width"], answer["height"]) == _size(answer) == (96, 72)
        assert answer["downgraded"]["from"] == {"width": 128, "height": 96}
        assert answer["downgraded"]["applied"] == ["smaller_size"]
        assert answer["downgraded"]["reason"].startswith("out of memory at 128x96: ")


def test_an_edit_retried_smaller_draws_on_its_input_image_scaled_to_the_smaller_size(settings: Settings) -> None:
    for client in _serving(settings, RunsOutOfMemory(1), [Fallback.SMALLER_SIZE]):
        body = {**SMALL, "init_image": png_base64((128, 96)), "allow_downsize": True}
        body.pop("width"), body.pop("height")

        response = client.post("/edit", json=body)

        assert response.status_code == 200
        answer = response.json()
        assert (answer["width"], answer["height"]) == _size(answer) == (96, 72)
        assert answer["downgraded"]["from"] == {"width": 128, "height": 96}


def test_without_allow_downsize_a_smaller_size_policy_fails_the_job_and_says_how_to_allow_it(
    settings: Settings,
) -> None:
    for client in _serving(settings, RunsOutOfMemory(1), [Fallback.SMALLER_SIZE]):
        failed = client.post("/generate", json={**SMALL, "width": 128, "height": 128})
        succeeded = client.post("/generate", json=SMALL)

        assert failed.status_code == 503
        error = failed.json()["error"]
        assert error["code"] == "out_of_memory"
        assert "allow_downsize" in error["hint"]
        assert succeeded.status_code == 200


def test_a_retry_that_runs_out_too_fails_the_job_naming_what_was_tried_and_the_server_keeps_serving(
    settings: Settings,
) -> None:
    for client in _serving(settings, RunsOutOfMemory(1, 2), None):
        failed = client.post("/generate", json=SMALL)
        job = client.get("/jobs?status=failed").json()["jobs"][0]
        succeeded = client.post("/generate", json=SMALL)

        assert failed.status_code == 503
        error = failed.json()["error"]
        assert error["code"] == job["error"]["code"] == "out_of_memory"
        assert error["message"].endswith("(a retry with tiled_vae, attention_slicing ran out too)")
        assert succeeded.status_code == 200
        assert succeeded.json()["downgraded"] is None
        assert client.get("/health").json()["resident_models"] == ["tiny"]


def test_the_later_images_of_a_job_start_with_what_its_retry_changed(settings: Settings) -> None:
    failures = RunsOutOfMemory(1)
    for client in _serving(settings, failures, None):
        response = client.post("/generate", json={**SMALL, "n": 2, "return_mode": "path"})
        job = client.get("/jobs").json()["jobs"][0]

        assert response.status_code == 200
        assert job["status"] == "succeeded"
        assert len(job["result"]["images"]) == 2
        # The first image ran out and was retried; the second ran once, with the savers on from the start.
        assert failures.generations == 3
        assert job["result"]["downgraded"]["applied"] == ["tiled_vae", "attention_slicing"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_mcp_drawing_tool_says_what_its_retry_changed(settings: Settings) -> None:
    backend = StepHookBackend(DiffusersBackend(device="cpu", models_path=settings.models_path), RunsOutOfMemory(1))
    service = build_service(settings, backend=backend, memory_probe=FixedMemory(64.0))
    service.start()
    try:
        async with Client(build_mcp_server(service, McpOptions(preview_px=64))) as mcp:
            result = await mcp.call_tool("generate_image", SMALL)
    finally:
        service.close()

    assert structured_of(result)["downgraded"]["applied"] == ["tiled_vae", "attention_slicing"]
