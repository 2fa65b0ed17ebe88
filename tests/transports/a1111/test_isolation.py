"""With API keys, each A1111 client sees and stops only its own jobs, and its model choice is its own and
bounded in memory."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import JobStatus
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.service import ImageService
from imageforge.transports.a1111 import CheckpointChoices
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.gated import WAIT_S, GatedBackend
from tests.loopback import serving_app

ALICE = {"Authorization": "Bearer alice-key-0123456789"}
BOB = {"Authorization": "Bearer bob-key-0123456789ab"}


@pytest.fixture
def two_clients(settings: Settings) -> Iterator[tuple[str, GatedBackend, ImageService]]:
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings, backend=backend)
    keys = ApiKeys([("alice", ALICE["Authorization"][7:]), ("bob", BOB["Authorization"][7:])])
    with serving_app(create_app(service, api_keys=keys)) as url:
        try:
            yield url, backend, service
        finally:
            backend.release(1000)


def test_a_client_sees_no_progress_of_and_cannot_interrupt_another_clients_job(
    two_clients: tuple[str, GatedBackend, ImageService],
) -> None:
    url, backend, service = two_clients
    body = {"prompt": "alice's heron", "width": 64, "height": 64, "steps": 3}
    with httpx.Client(base_url=f"{url}/sdapi/v1", timeout=WAIT_S) as http:
        job = httpx.post(f"{url}/jobs", json=body, headers=ALICE).json()  # alice's job, as any surface queues it
        backend.wait_for_step()

        bobs_view = http.get("/progress", headers=BOB).json()
        stopped = http.post("/interrupt", headers=BOB)
        alices_view = http.get("/progress", headers=ALICE).json()
        backend.release(1000)

    assert (bobs_view["state"]["job_count"], bobs_view["current_image"]) == (0, None)
    assert stopped.status_code == 200
    assert alices_view["state"]["job_count"] == 1
    assert service.wait_job(job["job_id"], timeout=WAIT_S).status is JobStatus.SUCCEEDED


def test_the_model_choices_forget_the_oldest_client_past_their_bound() -> None:
    choices = CheckpointChoices(max_clients=2)
    for client in ("a", "b", "c"):
        choices.choose(client, f"model-of-{client}")

    assert [choices.get(client, "default") for client in ("a", "b", "c")] == ["default", "model-of-b", "model-of-c"]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_info_of_a_png_declaring_a_huge_size_is_a_400_and_decodes_nothing(client: TestClient) -> None:
    header = struct.pack(">IIBBBBB", 200_000, 200_000, 8, 2, 0, 0, 0)  # 40 gigapixels, with no pixel data
    bomb = (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"tEXt", b"parameters\x00a fox") + _chunk(b"IEND", b"")
    )

    answer = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(bomb).decode()})

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_image"
    assert "too many pixels" in answer.json()["detail"]


def test_png_info_reads_the_text_of_a_large_png_without_decoding_its_pixels(client: TestClient) -> None:
    header = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 2, 0, 0, 0)  # over Pillow's warning size, no pixel data
    text = _chunk(b"tEXt", b"parameters\x00a fox\nSteps: 2, CFG scale: 0, Seed: 5")
    large = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + text + _chunk(b"IEND", b"")

    answer = client.post("/sdapi/v1/png-info", json={"image": base64.b64encode(large).decode()})

    assert answer.status_code == 200
    assert answer.json()["parameters"] == {
        "Prompt": "a fox",
        "Negative prompt": "",
        "Steps": "2",
        "CFG scale": "0",
        "Seed": "5",
    }
