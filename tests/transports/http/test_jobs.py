"""The job API over HTTP on the real tiny model: submit, events, result, cancel, limits, idempotency."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.transports.http.app import create_app
from tests.gated import GatedBackend
from tests.helpers import decode_png, png_base64
from tests.loopback import LOCAL_URL

SMALL = {"width": 64, "height": 64}


def _events(client: TestClient, url: str) -> list[tuple[str, dict[str, Any]]]:
    """Read an SSE stream to its end: (event, data) pairs."""
    events = []
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


@pytest.fixture
def gated(settings: Settings) -> Iterator[tuple[TestClient, GatedBackend]]:
    """A client whose generations hold at every step until the test releases them."""
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    service = build_service(settings.model_copy(update={"max_queue": 2, "queue_share": 3}), backend=backend)
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        try:
            yield client, backend
        finally:
            backend.release(1000)


def test_identical_seeded_img2img_requests_in_flight_together_are_one_job(
    gated: tuple[TestClient, GatedBackend],
) -> None:
    client, _ = gated
    body = {"task": "img2img", "prompt": "p", "seed": 5, "steps": 2, "init_image": png_base64(), **SMALL}

    first = client.post("/jobs", json=body).json()
    again = client.post("/jobs", json=body).json()

    assert again["job_id"] == first["job_id"]


def test_submit_answers_202_with_id_position_and_links(client: TestClient) -> None:
    response = client.post("/jobs", json={"prompt": "a fox", "seed": 1, **SMALL})

    assert response.status_code == 202
    job = response.json()
    assert job["status"] in ("queued", "running", "succeeded")
    assert (job["task"], job["model"]) == ("text2img", "tiny")
    links = job["links"]
    assert links["self"].endswith(f"/jobs/{job['job_id']}")
    assert links["events"].endswith(f"/jobs/{job['job_id']}/events")
    assert links["cancel"] == links["self"]
    assert response.headers["location"] == links["self"]


def test_events_stream_state_then_each_step_then_the_result(client: TestClient) -> None:
    job = client.post("/jobs", json={"prompt": "a fox", "seed": 2, "steps": 3, **SMALL}).json()

    events = _events(client, job["links"]["events"])

    kinds = [kind for kind, _ in events]
    assert kinds[0] == "state"
    progress = [data["step"] for kind, data in events if kind == "progress"]
    assert progress == sorted(progress)
    assert progress[-1] == 3
    assert events[-1][0] == "state"
    assert events[-1][1]["status"] == "succeeded"

    done = client.get(job["links"]["self"]).json()
    assert done["status"] == "succeeded"
    assert done["queue_position"] is None
    assert done["progress"] == {"step": 3, "total": 3}
    assert set(done["timings"]) >= {"queue_ms", "load_ms", "run_ms"}
    assert done["expires_at"] is not None
    result = done["result"]
    assert (result["seed"], result["width"], result["steps"]) == (2, 64, 3)
    image = client.get(done["links"]["image"])
    assert image.status_code == 200
    assert image.headers["content-type"] == "image/png"
    assert image.content == Path(result["output_path"]).read_bytes()
    assert client.get(done["links"]["self"]).json()["result"] == result, "a result can be read again"


def test_jobs_accept_edit_and_inpaint_by_task(client: TestClient) -> None:
    init = png_base64((64, 64))
    mask = png_base64((64, 64), 255, mode="L")
    edit = client.post("/jobs", json={"task": "img2img", "prompt": "p", "init_image": init}).json()
    inpaint = client.post(
        "/jobs", json={"task": "inpaint", "prompt": "p", "init_image": init, "mask_image": mask}
    ).json()

    for job, strength in ((edit, 0.6), (inpaint, 1.0)):
        _events(client, job["links"]["events"])
        done = client.get(job["links"]["self"]).json()
        assert done["status"] == "succeeded", done
        assert done["result"]["strength"] == strength


def test_bad_job_is_refused_at_submit_not_queued(client: TestClient) -> None:
    response = client.post("/jobs", json={"prompt": "p", "width": 100})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"

    text_with_image = client.post("/jobs", json={"prompt": "p", "init_image": png_base64()})
    assert text_with_image.status_code == 400
    assert "img2img" in text_with_image.json()["error"]["hint"]
    assert client.get("/jobs").json()["jobs"] == []


def test_unknown_job_and_image_answer_404_with_codes(client: TestClient) -> None:
    assert client.get("/jobs/nope").json()["error"]["code"] == "job_not_found"
    assert client.get("/jobs/nope/events").status_code == 404
    assert client.delete("/jobs/nope").status_code == 404
    for name in ("nope.png", "..%2F..%2Fetc%2Fpasswd", "20260101_000000_abcdef.png"):
        response = client.get(f"/images/{name}")
        assert response.status_code == 404, name
        assert response.json()["error"]["code"] in ("image_not_found", "not_found")


def test_cancel_finished_job_answers_409(client: TestClient) -> None:
    job = client.post("/jobs", json={"prompt": "p", **SMALL}).json()
    _events(client, job["links"]["events"])

    response = client.delete(job["links"]["cancel"])

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "job_finished"


def test_deleting_an_ended_job_removes_its_image_and_inputs_and_then_it_answers_404(
    client: TestClient, settings: Settings
) -> None:
    body = {"task": "img2img", "prompt": "p", "steps": 2, "init_image": png_base64()}
    job = client.post("/jobs", json=body).json()
    _events(client, job["links"]["events"])
    done = client.get(job["links"]["self"]).json()
    output = Path(done["result"]["output_path"])
    inputs = settings.data_path / "inputs"
    assert output.exists()
    assert [path for path in inputs.rglob("*") if path.is_file()], "the input image is stored"

    response = client.delete(f"{job['links']['self']}/result")

    assert response.status_code == 204
    assert not output.exists()
    assert [path for path in inputs.rglob("*") if path.is_file()] == [], "its input image went with it"
    assert client.get(job["links"]["self"]).json()["error"]["code"] == "job_not_found"
    assert client.get(job["links"]["self"]).status_code == 404
    assert client.get(done["links"]["image"]).status_code == 404
    assert job["job_id"] not in [listed["job_id"] for listed in client.get("/jobs").json()["jobs"]]
    assert client.delete(f"{job['links']['self']}/result").status_code == 404


def test_deleting_a_queued_or_running_job_answers_409_job_not_ready(gated: tuple[TestClient, GatedBackend]) -> None:
    client, backend = gated
    running = client.post("/jobs", json={"prompt": "long", "steps": 2, **SMALL}).json()
    backend.wait_for_step()
    queued = client.post("/jobs", json={"prompt": "queued", "steps": 1, **SMALL}).json()

    answers = [client.delete(f"{job['links']['self']}/result") for job in (running, queued)]

    for answer in answers:
        assert answer.status_code == 409
        assert answer.json()["error"]["code"] == "job_not_ready"
        assert "Cancel it first" in answer.json()["error"]["hint"]
    backend.release(10)
    _events(client, queued["links"]["events"])
    assert client.get(running["links"]["self"]).json()["status"] == "succeeded", "the refused delete left it alone"
    assert client.get(queued["links"]["self"]).json()["status"] == "succeeded"


def test_cancel_queued_at_once_and_running_at_next_step(gated: tuple[TestClient, GatedBackend]) -> None:
    client, backend = gated
    running = client.post("/jobs", json={"prompt": "long", "steps": 20, **SMALL}).json()
    backend.wait_for_step()
    queued = client.post("/jobs", json={"prompt": "queued", **SMALL}).json()
    assert client.get(queued["links"]["self"]).json()["queue_position"] == 1
    assert client.get(running["links"]["self"]).json()["queue_position"] == 0

    cancel_queued = client.delete(queued["links"]["cancel"])
    assert cancel_queued.status_code == 200
    assert cancel_queued.json()["status"] == "cancelled"
    cancel_running = client.delete(running["links"]["cancel"])
    assert cancel_running.status_code == 202
    backend.release()

    events = _events(client, running["links"]["events"])
    assert events[-1][1]["status"] == "cancelled"
    ended = client.get(running["links"]["self"]).json()
    assert ended["status"] == "cancelled"
    assert ended["error"]["code"] == "cancelled"
    assert ended["progress"]["step"] < 20, "the running job stopped computing"
    backend.release(10)
    after = client.post("/jobs", json={"prompt": "after", "steps": 1, **SMALL}).json()
    _events(client, after["links"]["events"])
    assert client.get(after["links"]["self"]).json()["status"] == "succeeded"


def test_full_queue_answers_429_with_retry_after(gated: tuple[TestClient, GatedBackend]) -> None:
    client, backend = gated
    client.post("/jobs", json={"prompt": "running", **SMALL})
    backend.wait_for_step()
    for n in range(2):
        assert client.post("/jobs", json={"prompt": f"waiting {n}", **SMALL}).status_code == 202

    refused = client.post("/jobs", json={"prompt": "one too many", **SMALL})

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "queue_full"
    assert int(refused.headers["retry-after"]) >= 1


def test_idempotency_key_returns_the_same_job_and_409_for_another_body(client: TestClient) -> None:
    body = {"prompt": "p", **SMALL}
    first = client.post("/jobs", json=body, headers={"Idempotency-Key": "abc"}).json()
    again = client.post("/jobs", json=body, headers={"Idempotency-Key": "abc"})
    other = client.post("/jobs", json={**body, "prompt": "q"}, headers={"Idempotency-Key": "abc"})

    assert again.json()["job_id"] == first["job_id"]
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"


def test_identical_seeded_requests_in_flight_share_one_job(gated: tuple[TestClient, GatedBackend]) -> None:
    client, backend = gated
    client.post("/jobs", json={"prompt": "ahead", **SMALL})
    backend.wait_for_step()
    body = {"prompt": "same", "seed": 5, **SMALL}

    first = client.post("/jobs", json=body).json()
    second = client.post("/jobs", json=body).json()
    unseeded = [client.post("/jobs", json={"prompt": "same", **SMALL}) for _ in range(2)]

    assert second["job_id"] == first["job_id"]
    assert unseeded[0].status_code == 429 or unseeded[0].json()["job_id"] != first["job_id"]


def test_list_jobs_filters_by_status(client: TestClient) -> None:
    job = client.post("/jobs", json={"prompt": "p", **SMALL}).json()
    _events(client, job["links"]["events"])

    assert [j["job_id"] for j in client.get("/jobs").json()["jobs"]] == [job["job_id"]]
    assert [j["job_id"] for j in client.get("/jobs?status=succeeded").json()["jobs"]] == [job["job_id"]]
    assert client.get("/jobs?status=queued&status=running").json()["jobs"] == []
    assert client.get("/jobs?status=bogus").status_code == 400


def test_expired_result_answers_410(settings: Settings) -> None:
    service = build_service(settings.model_copy(update={"result_ttl_s": 0.001}))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        job = client.post("/jobs", json={"prompt": "p", **SMALL}).json()
        _events(client, job["links"]["events"])

        response = client.get(job["links"]["self"])

    assert response.status_code == 410
    assert response.json()["error"]["code"] == "expired"


def test_events_with_preview_carry_an_image_per_step(gated: tuple[TestClient, GatedBackend]) -> None:
    client, backend = gated
    job = client.post("/jobs", json={"prompt": "a fox", "steps": 3, **SMALL}).json()
    backend.wait_for_step()

    previews = []
    with client.stream("GET", job["links"]["events"] + "?preview=1") as response:
        backend.release(3)  # the stream is open: the job knows a viewer wants previews from step 2 on
        kind = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "preview":
                previews.append(json.loads(line.removeprefix("data: ")))

    assert [preview["step"] for preview in previews] == [2, 3]
    header, encoded = previews[-1]["image"].split(",", 1)
    assert header == "data:image/png;base64"
    image = decode_png(encoded)
    # tiny's tiny autoencoder decodes the latents at the image's size (ADR 0012)
    assert image.size == (64, 64) == (previews[-1]["width"], previews[-1]["height"])


def test_a_job_links_its_input_image_and_mask_which_come_back_as_sent(client: TestClient) -> None:
    init = png_base64((64, 72))
    mask = png_base64((64, 72), 255, mode="L")
    inpaint = client.post(
        "/jobs", json={"task": "inpaint", "prompt": "p", "init_image": init, "mask_image": mask}
    ).json()
    text = client.post("/jobs", json={"prompt": "p", **SMALL}).json()

    sent_init = decode_png(init)
    back_init = client.get(inpaint["links"]["init_image"])
    back_mask = client.get(inpaint["links"]["mask_image"])

    assert back_init.headers["content-type"] == "image/png"
    back = Image.open(io.BytesIO(back_init.content))
    assert (back.size, back.mode) == (sent_init.size, sent_init.mode)
    assert back.tobytes() == sent_init.tobytes()
    assert Image.open(io.BytesIO(back_mask.content)).size == (64, 72)
    assert text["links"]["init_image"] is None
    missing = client.get(f"/jobs/{text['job_id']}/init_image")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "image_not_found"
