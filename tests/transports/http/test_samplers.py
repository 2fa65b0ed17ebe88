"""The request's `sampler` and `schedule` over HTTP on the tiny model: each draws its own image, a job without them
runs the model's own scheduler again, combinations a sampler does not run are refused, and the cache keeps
samplers apart."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from imageforge.infotext import parse_infotext, request_fields
from tests.helpers import decode_png

SMALL = {"prompt": "a fox", "seed": 11, "width": 64, "height": 64, "steps": 3}


def _pixels(result: dict[str, Any]) -> bytes:
    return decode_png(str(result["image_base64"])).tobytes()


def _generate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/generate", json={**SMALL, **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_dpmpp_2m_draws_another_image_than_euler_at_the_same_seed(client: TestClient) -> None:
    euler = _generate(client, sampler="euler")
    dpmpp = _generate(client, sampler="dpmpp_2m", schedule="karras")

    assert _pixels(euler) != _pixels(dpmpp)
    assert (euler["sampler"], euler["schedule"]) == ("euler", "default")
    assert (dpmpp["sampler"], dpmpp["schedule"]) == ("dpmpp_2m", "karras")


def test_a_job_without_a_sampler_after_one_with_runs_the_models_own_again(client: TestClient) -> None:
    before = _generate(client, use_cache=False)
    _generate(client, sampler="dpm2_a", schedule="exponential", use_cache=False)
    after = _generate(client, use_cache=False)

    assert _pixels(after) == _pixels(before)
    # The tiny model's own scheduler is Euler: the result names it though the request did not.
    assert (after["sampler"], after["schedule"]) == ("euler", "default")


def test_a_schedule_the_sampler_does_not_run_is_refused_with_the_samplers_that_do(client: TestClient) -> None:
    response = client.post("/generate", json={**SMALL, "sampler": "ddim", "schedule": "karras"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "ddim" in error["message"]
    assert "dpmpp_2m" in error["hint"]


def test_a_schedule_without_a_sampler_is_refused(client: TestClient) -> None:
    response = client.post("/jobs", json={**SMALL, "schedule": "exponential"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert "sampler" in response.json()["error"]["hint"]


def test_an_unknown_sampler_is_a_400_naming_the_choices(client: TestClient) -> None:
    response = client.post("/generate", json={**SMALL, "sampler": "dpm_fast"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "euler_a" in error["hint"]


def test_the_cache_keeps_each_samplers_image_apart(client: TestClient) -> None:
    euler = _generate(client, sampler="euler")
    heun = _generate(client, sampler="heun")
    again = _generate(client, sampler="euler")

    assert (euler["cached"], heun["cached"], again["cached"]) == (False, False, True)
    assert _pixels(heun) != _pixels(euler)
    assert again["image_base64"] == euler["image_base64"]
    assert (again["sampler"], heun["sampler"]) == ("euler", "heun")


def test_a_results_png_reads_back_as_automatic1111_parameters_naming_the_same_fields(client: TestClient) -> None:
    prompt = 'a sign reading "OPEN, 24/7: come in"\nat night'
    result = _generate(client, prompt=prompt, negative_prompt="blur, text", sampler="dpmpp_2m_sde", guidance=2.5)

    text = decode_png(str(result["image_base64"])).info["parameters"]
    fields = request_fields(parse_infotext(text))

    named = ("negative_prompt", "steps", "sampler", "schedule", "guidance", "seed", "width", "height", "model")
    assert fields == {"prompt": result["prompt"], **{name: result[name] for name in named}}
    assert result["prompt"].startswith(prompt)
