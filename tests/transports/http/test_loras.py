"""A request's `loras` over HTTP on the tiny model: GET /loras lists the folder's LoRAs, a request applies them
and its result names them, POST /jobs takes them too, and what the folder does not offer is refused with a code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageforge.service import ImageService
from tests.helpers import decode_png

SMALL = {"prompt": "a fox", "seed": 11, "width": 64, "height": 64, "steps": 2}


def _generate(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/generate", json={**SMALL, **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_get_loras_lists_the_safetensors_files_of_the_lora_folder(client: TestClient, loras: Path) -> None:
    response = client.get("/loras")

    assert response.status_code == 200
    body = response.json()
    assert [lora["name"] for lora in body["loras"]] == ["one", "two"]
    assert (body["max_per_request"], body["max_weight"]) == (4, 2.0)


def test_a_request_with_loras_draws_another_image_and_its_result_names_them(client: TestClient, loras: Path) -> None:
    plain = _generate(client)
    applied = [{"name": "one", "weight": 0.8}, {"name": "two", "weight": -0.5}]
    with_loras = _generate(client, loras=applied)

    assert decode_png(with_loras["image_base64"]).tobytes() != decode_png(plain["image_base64"]).tobytes()
    assert with_loras["loras"] == applied
    assert plain["loras"] == []


def test_a_job_takes_loras_and_its_weight_defaults_to_one(
    client: TestClient, service: ImageService, loras: Path
) -> None:
    response = client.post("/jobs", json={**SMALL, "loras": [{"name": "two"}]})

    assert response.status_code == 202, response.text
    service.wait_job(response.json()["job_id"], timeout=60)
    job = client.get(f"/jobs/{response.json()['job_id']}").json()
    assert job["status"] == "succeeded", job
    assert job["result"]["loras"] == [{"name": "two", "weight": 1.0}]


@pytest.mark.parametrize(
    ("lora", "status", "code"),
    [
        ({"name": "watercolour"}, 404, "lora_not_found"),
        ({"name": "pickled"}, 403, "unsafe_weights"),
        ({"name": "../../outputs/x"}, 403, "path_forbidden"),
        ({"name": "one", "weight": 2.5}, 400, "invalid_request"),
        ({"name": "one", "strength": 1}, 400, "invalid_request"),
    ],
)
def test_a_lora_the_server_does_not_offer_is_refused_with_a_code_and_hint(
    client: TestClient, loras: Path, lora: dict[str, Any], status: int, code: str
) -> None:
    response = client.post("/generate", json={**SMALL, "loras": [lora]})

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["hint"]


def test_more_loras_than_a_request_may_apply_are_refused(client: TestClient, loras: Path) -> None:
    response = client.post("/generate", json={**SMALL, "loras": [{"name": f"l{index}"} for index in range(5)]})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert "4" in response.json()["error"]["hint"]


def test_a_lora_named_twice_is_refused(client: TestClient, loras: Path) -> None:
    response = client.post("/generate", json={**SMALL, "loras": [{"name": "one"}, {"name": "one.safetensors"}]})

    assert response.status_code == 400
    assert "more than once" in response.json()["error"]["message"]
