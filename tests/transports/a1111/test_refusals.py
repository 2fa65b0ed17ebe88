"""Bad input under /sdapi/v1 is answered in A1111's error shape with our stable code, and reaches no job:
nothing the native API would refuse, and nothing we cannot honour, is queued."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageforge.domain import MAX_COUNT
from imageforge.service import ImageService

SMALL = {"prompt": "a fox", "width": 64, "height": 64, "steps": 1}
A_PNG_OF_NOTHING = "iVBORw0KGgo="  # a PNG signature, then nothing


def assert_a1111_error(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert set(body) >= {"error", "detail", "body", "errors"}, "the keys A1111's handle_exception answers"
    assert (body["error"], body["code"]) == (code, code)
    assert body["detail"]
    assert body["hint"]
    return body


@pytest.mark.parametrize(
    ("path", "extra", "named"),
    [
        ("txt2img", {"width": 4096}, "width"),
        ("txt2img", {"enable_hr": True}, "enable_hr"),
        ("txt2img", {"restore_faces": True}, "restore_faces"),
        ("txt2img", {"tiling": True}, "tiling"),
        ("txt2img", {"subseed_strength": 0.5}, "subseed_strength"),
        ("txt2img", {"alwayson_scripts": {"ControlNet": {"args": [{"enabled": True}]}}}, "alwayson_scripts"),
        ("txt2img", {"script_name": "x/y/z plot"}, "script_name"),
        ("txt2img", {"sampler_name": "Euler z"}, "sampler_name"),
        ("txt2img", {"sampler_index": "DPM++ 9M"}, "sampler_name"),
        ("txt2img", {"scheduler": "beta"}, "scheduler"),
        ("txt2img", {"scheduler": "karras"}, "needs a sampler"),
        ("txt2img", {"sampler_name": "Euler a", "scheduler": "Karras"}, "does not run the karras schedule"),
        ("txt2img", {"batch_size": MAX_COUNT, "n_iter": 2}, "n_iter"),
        ("txt2img", {"cfg_scale": 99}, "cfg_scale"),
        ("txt2img", {"seed": -7}, "seed"),
        ("txt2img", {"steps": 0}, "steps"),
        ("txt2img", {"prompt": ""}, "prompt"),
        ("txt2img", {"styles": ["not-a-style"]}, "styles"),
        ("txt2img", {"override_settings": {"CLIP_stop_at_last_layers": 2}}, "CLIP_stop_at_last_layers"),
        ("img2img", {}, "init_images"),
        ("img2img", {"init_images": ["bm90IGFuIGltYWdl"]}, "init_image"),
        ("img2img", {"init_images": [A_PNG_OF_NOTHING], "resize_mode": 1}, "resize_mode"),
        ("img2img", {"init_images": [A_PNG_OF_NOTHING], "inpainting_mask_invert": 1}, "inpainting_mask_invert"),
        ("img2img", {"init_images": [A_PNG_OF_NOTHING], "denoising_strength": 0}, "denoising_strength"),
    ],
)
def test_a_request_we_cannot_honour_is_refused_in_a1111s_shape_and_queues_nothing(
    client: TestClient, service: ImageService, path: str, extra: dict[str, Any], named: str
) -> None:
    answer = client.post(f"/sdapi/v1/{path}", json={**SMALL, **extra})

    body = assert_a1111_error(answer, 400, body_code(answer))
    assert named in body["detail"]
    assert service.list_jobs() == []


def body_code(answer: Any) -> str:
    """invalid_request, or its kind for a bad image (invalid_image)."""
    code: str = answer.json()["code"]
    assert code in ("invalid_request", "invalid_image")
    return code


def test_a_count_over_the_limit_says_the_limit(client: TestClient) -> None:
    answer = client.post("/sdapi/v1/txt2img", json={**SMALL, "batch_size": 2, "n_iter": MAX_COUNT})

    body = assert_a1111_error(answer, 400, "invalid_request")
    assert f"at most {MAX_COUNT}" in body["detail"]


def test_an_unknown_model_in_override_settings_is_a_404_and_queues_nothing(
    client: TestClient, service: ImageService
) -> None:
    answer = client.post("/sdapi/v1/txt2img", json={**SMALL, "override_settings": {"sd_model_checkpoint": "nope"}})

    assert_a1111_error(answer, 404, "model_not_found")
    assert service.list_jobs() == []


def test_switching_to_an_unknown_model_is_refused_and_keeps_the_current_one(client: TestClient) -> None:
    answer = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "nope"})

    assert_a1111_error(answer, 404, "model_not_found")
    assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == "tiny"


def test_other_options_are_accepted_and_change_nothing(client: TestClient) -> None:
    before = client.get("/sdapi/v1/options").json()

    answer = client.post("/sdapi/v1/options", json={**before, "CLIP_stop_at_last_layers": 2, "sd_vae": "x.pt"})

    assert answer.status_code == 200
    assert client.get("/sdapi/v1/options").json() == before


def test_png_info_of_something_that_is_not_an_image_is_a_400(client: TestClient) -> None:
    assert_a1111_error(client.post("/sdapi/v1/png-info", json={"image": "bm90IGFuIGltYWdl"}), 400, "invalid_image")


def test_a_body_of_the_wrong_type_and_an_unknown_route_answer_in_a1111s_shape(client: TestClient) -> None:
    assert_a1111_error(client.post("/sdapi/v1/txt2img", json={**SMALL, "batch_size": "many"}), 400, "invalid_request")
    assert_a1111_error(client.get("/sdapi/v1/nowhere"), 404, "not_found")
