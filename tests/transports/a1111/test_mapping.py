"""How A1111 fields land on our request, read from what the answer and the job say."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imageforge.domain import (
    A1111_SAMPLER_NAMES,
    A1111_SCHEDULE_NAMES,
    DEFAULT_STRENGTH,
    Sampler,
    Schedule,
    Task,
)
from imageforge.service import ImageService

SMALL = {"prompt": "a fox", "width": 64, "height": 64, "steps": 2}


def _png(color: str) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _info(answer: Any) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    info: dict[str, Any] = json.loads(answer.json()["info"])
    return info


def test_img2img_without_a_mask_runs_img2img_at_our_default_strength_from_a_data_url(
    client: TestClient, service: ImageService
) -> None:
    info = _info(client.post("/sdapi/v1/img2img", json={**SMALL, "init_images": [_png("teal")]}))

    [job] = service.list_jobs()
    assert job.payload["task"] == Task.IMG2IMG.value
    assert info["denoising_strength"] == DEFAULT_STRENGTH[Task.IMG2IMG]


def test_a_style_name_frames_the_prompt_with_that_style_template(client: TestClient, service: ImageService) -> None:
    template = service.list_templates()[0]

    info = _info(client.post("/sdapi/v1/txt2img", json={**SMALL, "styles": [template.key]}))

    assert info["styles"] == [template.key]
    assert info["prompt"].startswith(template.render("a fox")[:20])


def test_send_images_false_answers_no_images_but_the_info(client: TestClient) -> None:
    answer = client.post("/sdapi/v1/txt2img", json={**SMALL, "send_images": False})

    assert answer.json()["images"] == []
    assert _info(answer)["seed"] >= 0


def test_absent_numbers_take_the_models_defaults_and_the_answer_echoes_the_request(
    client: TestClient, service: ImageService
) -> None:
    tiny = next(model for model in service.list_models().models if model.key == "tiny")

    answer = client.post("/sdapi/v1/txt2img", json={"prompt": "a fox", "restore_faces": False, "eta": 1.0})

    info = _info(answer)
    assert (info["steps"], info["cfg_scale"]) == (tiny.defaults.steps, tiny.defaults.guidance)
    assert (info["width"], info["height"]) == (tiny.defaults.width, tiny.defaults.height)
    assert answer.json()["parameters"]["eta"] == 1.0, "fields we ignore are echoed as sent, as A1111 does"


def test_samplers_and_schedulers_list_exactly_the_a1111_names_we_map(client: TestClient) -> None:
    samplers = client.get("/sdapi/v1/samplers").json()
    schedulers = client.get("/sdapi/v1/schedulers").json()

    assert [entry["name"] for entry in samplers] == [A1111_SAMPLER_NAMES[sampler] for sampler in Sampler]
    assert [entry["label"] for entry in schedulers] == [A1111_SCHEDULE_NAMES[schedule] for schedule in Schedule]
    assert [entry["name"] for entry in schedulers] == ["automatic", "karras", "exponential"]


@pytest.mark.parametrize(
    ("sent", "sampler", "schedule"),
    [
        ({"sampler_name": "DPM++ 2M", "scheduler": "karras"}, Sampler.DPMPP_2M, Schedule.KARRAS),
        ({"sampler_name": "DPM++ 2M", "scheduler": "Exponential"}, Sampler.DPMPP_2M, Schedule.EXPONENTIAL),
        ({"sampler_name": "DPM++ 2M Karras"}, Sampler.DPMPP_2M, Schedule.KARRAS),
        ({"sampler_index": "Euler a", "scheduler": "automatic"}, Sampler.EULER_A, Schedule.DEFAULT),
        ({"sampler_name": "PLMS"}, Sampler.PNDM, Schedule.DEFAULT),
        ({"sampler_name": "unipc"}, Sampler.UNIPC, Schedule.DEFAULT),
        ({}, None, Schedule.DEFAULT),
    ],
)
def test_a1111_sampler_and_scheduler_names_run_that_sampler_and_schedule(
    client: TestClient, service: ImageService, sent: dict[str, str], sampler: Sampler | None, schedule: Schedule
) -> None:
    info = _info(client.post("/sdapi/v1/txt2img", json={**SMALL, **sent}))

    [job] = service.list_jobs()
    assert (job.payload["sampler"], job.payload["schedule"]) == (sampler and sampler.value, schedule.value)
    # Without a choice the model runs its own sampler, which the answer names too.
    ran = A1111_SAMPLER_NAMES[sampler] if sampler else info["sampler_name"]
    assert info["sampler_name"] == ran
    assert ran in A1111_SAMPLER_NAMES.values()
    assert f"Sampler: {ran}" in info["infotexts"][0]
    spaced = {"Schedule type": A1111_SCHEDULE_NAMES[schedule]} if schedule is not Schedule.DEFAULT else {}
    assert info["extra_generation_params"] == spaced
