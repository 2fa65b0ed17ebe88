"""The stable-diffusion.cpp engine through the HTTP API: a real `sd-server` child runs the random-weight sd-turbo
(64x64, one step), started on first use, stopped when idle or cancelled, replaced after it dies."""

from __future__ import annotations

import base64
import io
import os
import signal
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save_file

from imageforge.config import Settings
from tests.events import job_events, wait_for_end
from tests.gated import GatedBackend
from tests.helpers import png_base64
from tests.sdcpp.conftest import MODEL, SMALL, sd_server_children, wait_for
from tests.sdcpp.model import build_sd_turbo_lora

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _submit(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/jobs", json={"prompt": "a lighthouse", **SMALL, **body})
    assert response.status_code == 202, response.json()
    job: dict[str, Any] = response.json()
    return job


def _finished(client: TestClient, job: dict[str, Any]) -> dict[str, Any]:
    wait_for_end(client, job)
    answer: dict[str, Any] = client.get(f"/jobs/{job['job_id']}").json()
    return answer


def test_text2img_and_img2img_run_in_the_sd_server_child_with_its_steps_reported(sdcpp_client: TestClient) -> None:
    job = _submit(sdcpp_client, seed=7)
    events = list(job_events(sdcpp_client, job["links"]["events"]))

    assert [data["step"] for kind, data in events if kind == "progress"] == [1]
    done = sdcpp_client.get(f"/jobs/{job['job_id']}").json()
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"step": 1, "total": 1}
    assert done["result"]["runtime"]["engine"] == "sdcpp"
    image = Image.open(io.BytesIO(sdcpp_client.get(done["links"]["image"]).content))
    assert image.size == (64, 64)
    assert len(sd_server_children()) == 1

    edit = _finished(sdcpp_client, _submit(sdcpp_client, task="img2img", init_image=png_base64(), strength=1.0))

    assert edit["status"] == "succeeded", edit
    assert edit["result"]["task"] == "img2img"
    assert len(sd_server_children()) == 1, "the resident child ran the second job too"


def _half_mask(left: bool) -> str:
    """A 64x64 mask whose left (or right) half is white: the part to paint again."""
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64) if left else (32, 0, 64, 64))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_inpaint_hands_the_image_and_its_mask_to_the_child(sdcpp_client: TestClient) -> None:
    def inpaint(left: bool) -> bytes:
        body = {"task": "inpaint", "init_image": png_base64(), "mask_image": _half_mask(left), "strength": 1.0}
        job = _finished(sdcpp_client, _submit(sdcpp_client, seed=3, use_cache=False, **body))
        assert job["status"] == "succeeded", job
        assert job["result"]["task"] == "inpaint"
        with Image.open(io.BytesIO(sdcpp_client.get(job["links"]["image"]).content)) as image:
            assert image.size == (64, 64)
            return image.tobytes()

    assert inpaint(left=True) != inpaint(left=False), "the mask reached stable-diffusion.cpp"


def test_a_requests_loras_change_its_image_for_that_job_only_in_the_same_child(
    sdcpp_client: TestClient, sdcpp_settings: Settings
) -> None:
    for seed, name in enumerate(("style", "ink"), start=1):
        build_sd_turbo_lora(sdcpp_settings.lora_path / f"{name}.safetensors", seed=seed)
    # Layers a FLUX transformer has and this UNet does not.
    foreign = {
        "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 3072, dtype=torch.float16),
        "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(3072, 4, dtype=torch.float16),
    }
    save_file(foreign, str(sdcpp_settings.lora_path / "foreign.safetensors"))

    def draw(**body: Any) -> tuple[bytes, dict[str, Any]]:
        job = _finished(sdcpp_client, _submit(sdcpp_client, seed=7, use_cache=False, **body))
        assert job["status"] == "succeeded", job
        with Image.open(io.BytesIO(sdcpp_client.get(job["links"]["image"]).content)) as image:
            return image.tobytes(), job["result"]

    base, _ = draw()
    [child] = sd_server_children()
    styled, result = draw(loras=[{"name": "style", "weight": 1.0}])
    assert result["runtime"]["lora_tensors_applied"] == {"style": "256/256"}
    assert result["loras"] == [{"name": "style", "weight": 1.0}]
    half, _ = draw(loras=[{"name": "style", "weight": 0.5}])
    both, result = draw(loras=[{"name": "style", "weight": 0.5}, {"name": "ink", "weight": 1.0}])
    assert result["runtime"]["lora_tensors_applied"] == {"style": "256/256", "ink": "256/256"}

    assert len({base, styled, half, both}) == 4, "each LoRA and weight draws another image"
    assert draw()[0] == base, "the LoRAs were taken off after their jobs"
    # A LoRA for another architecture loads without an error; what was applied says it matched nothing.
    _, result = draw(loras=[{"name": "foreign", "weight": 1.0}])
    assert result["runtime"]["lora_tensors_applied"] == {"foreign": "0/2"}
    assert sd_server_children() == [child], "the model was not loaded again for the LoRAs"

    missing = sdcpp_client.post("/jobs", json={"prompt": "a lighthouse", **SMALL, "loras": [{"name": "nope"}]})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "lora_not_found"


def test_cancelling_a_running_job_stops_the_child_and_the_next_job_gets_a_fresh_one(
    sdcpp_gated: tuple[TestClient, GatedBackend],
) -> None:
    client, backend = sdcpp_gated
    job = _submit(client)
    backend.wait_for_step()
    [first_child] = sd_server_children()

    assert client.delete(f"/jobs/{job['job_id']}").status_code == 202
    backend.release()

    assert _finished(client, job)["status"] == "cancelled"
    # sd-server cannot stop a job it is generating: the child is stopped instead.
    wait_for(lambda: first_child not in sd_server_children(), "the cancelled job's child to stop")
    backend.release(100)
    assert _finished(client, _submit(client))["status"] == "succeeded"
    assert len(sd_server_children()) == 1


def test_a_child_killed_mid_job_fails_that_job_with_engine_crashed_and_the_next_job_succeeds(
    sdcpp_gated: tuple[TestClient, GatedBackend],
) -> None:
    client, backend = sdcpp_gated
    job = _submit(client)
    backend.wait_for_step()
    [child] = sd_server_children()

    os.kill(child, signal.SIGKILL)
    backend.release()

    failed = _finished(client, job)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "engine_crashed"
    assert "next job starts a fresh one" in failed["error"]["hint"]
    backend.release(100)
    assert _finished(client, _submit(client))["status"] == "succeeded"
    [fresh] = sd_server_children()
    assert fresh != child


def test_an_idle_model_stops_its_child_and_the_next_job_starts_another(sdcpp_settings: Settings) -> None:
    from imageforge.bootstrap import build_service
    from imageforge.transports.http.app import create_app
    from tests.loopback import LOCAL_URL

    service = build_service(sdcpp_settings.model_copy(update={"idle_unload_s": 5.0}))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        assert _finished(client, _submit(client))["status"] == "succeeded"
        [child] = sd_server_children()

        wait_for(lambda: sd_server_children() == [], "the idle child to stop")
        assert MODEL not in client.get("/health").json()["resident_models"]

        assert _finished(client, _submit(client))["status"] == "succeeded"
        [again] = sd_server_children()
        assert again != child
