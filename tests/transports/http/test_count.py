"""`n` on the HTTP API: several images with consecutive seeds in one job, each with its path, bytes and link;
their files readable by whoever may read the job, and gone with it when it expires."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.domain import MAX_SEED
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.events import wait_for_end
from tests.loopback import LOCAL_URL

SMALL = {"width": 64, "height": 64, "steps": 2}
ALICE = "alice-key-0123456789"
BOB = "bob-key-9876543210ab"


def test_generate_with_n_answers_every_image_with_consecutive_seeds_paths_bytes_and_links(
    client: TestClient,
) -> None:
    response = client.post("/generate", json={"prompt": "a fox", "seed": 5, "n": 3, **SMALL})

    assert response.status_code == 200
    body = response.json()
    images = body["images"]
    assert [image["seed"] for image in images] == [5, 6, 7]
    for image in images:
        png = Path(image["output_path"]).read_bytes()
        assert base64.b64decode(image["image_base64"]) == png
        assert client.get(image["url"]).content == png
    assert len({image["output_path"] for image in images}) == 3
    first = images[0]
    assert (body["seed"], body["output_path"], body["image_base64"]) == (5, first["output_path"], first["image_base64"])


def test_return_mode_path_leaves_the_bytes_out_of_every_image(client: TestClient) -> None:
    body = client.post("/generate", json={"prompt": "a fox", "n": 2, "return_mode": "path", **SMALL}).json()

    assert [image["image_base64"] for image in body["images"]] == [None, None]
    assert all(Path(image["output_path"]).is_file() for image in body["images"])
    assert body["images"][1]["seed"] == body["images"][0]["seed"] + 1, "a drawn seed, then the next"


def test_a_job_with_n_counts_its_progress_over_all_images_and_lists_them_in_its_result(client: TestClient) -> None:
    job = client.post("/jobs", json={"prompt": "a fox", "seed": 11, "n": 2, **SMALL}).json()
    assert wait_for_end(client, job) == "succeeded"

    done = client.get(job["links"]["self"]).json()

    assert done["progress"] == {"step": 4, "total": 4}
    images = done["result"]["images"]
    assert [image["seed"] for image in images] == [11, 12]
    assert done["links"]["image"] == images[0]["url"]
    assert [image["image_base64"] for image in images] == [None, None]
    assert [client.get(image["url"]).status_code for image in images] == [200, 200]


@pytest.mark.parametrize("route", ["/generate", "/jobs"])
def test_n_outside_1_to_4_is_refused_with_invalid_request_naming_the_field(client: TestClient, route: str) -> None:
    too_many = client.post(route, json={"prompt": "a fox", "n": 5})
    none = client.post(route, json={"prompt": "a fox", "n": 0})

    for response in (too_many, none):
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert error["message"].startswith("n:")
        assert error["hint"].startswith("n: at least 1 and at most 4.")
    assert client.get("/jobs").json()["jobs"] == [], "nothing was queued"


def test_count_the_mcp_name_is_refused_on_http_with_a_hint_to_send_n(client: TestClient) -> None:
    response = client.post("/generate", json={"prompt": "a fox", "count": 2})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("invalid_request", "count: Extra inputs are not permitted")
    assert error["hint"].startswith("Send count as n. n: at least 1 and at most 4.")


def test_a_seed_whose_images_would_run_past_the_largest_seed_is_refused(client: TestClient) -> None:
    response = client.post("/generate", json={"prompt": "a fox", "seed": MAX_SEED, "n": 2})
    alone = client.post("/generate", json={"prompt": "a fox", "seed": MAX_SEED, **SMALL})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request"
    assert "seed" in response.json()["error"]["message"]
    assert str(MAX_SEED - 1) in response.json()["error"]["hint"]
    assert alone.status_code == 200, "one image may take the largest seed"


class Clock:
    """A wall clock that only moves when the test moves it."""

    def __init__(self) -> None:
        self.now = 1_750_000_000.0

    def __call__(self) -> float:
        return self.now


def test_every_image_of_an_expired_job_leaves_the_output_folder(settings: Settings) -> None:
    clock = Clock()
    service = build_service(settings.model_copy(update={"result_ttl_s": 60}), clock=clock)
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        job = client.post("/jobs", json={"prompt": "a fox", "n": 2, **SMALL}).json()
        assert wait_for_end(client, job) == "succeeded"
        images = client.get(job["links"]["self"]).json()["result"]["images"]
        paths = [Path(image["output_path"]) for image in images]
        assert all(path.is_file() for path in paths)

        clock.now += 61
        service.sweep_expired()

        assert [path.exists() for path in paths] == [False, False]
        assert [client.get(image["url"]).status_code for image in images] == [404, 404]


@pytest.fixture
def keyed(service: ImageService) -> Iterator[TestClient]:
    keys = ApiKeys((("alice", ALICE), ("bob", BOB)))
    with TestClient(create_app(service, api_keys=keys), base_url=LOCAL_URL) as client:
        yield client


def test_every_image_by_name_opens_for_the_key_that_made_it_only(keyed: TestClient, service: ImageService) -> None:
    alice = {"Authorization": f"Bearer {ALICE}"}
    submitted = keyed.post("/jobs", json={"prompt": "a fox", "n": 2, **SMALL}, headers=alice).json()
    service.wait_job(submitted["job_id"], timeout=60)
    images = keyed.get(submitted["links"]["self"], headers=alice).json()["result"]["images"]
    names = [Path(image["output_path"]).name for image in images]

    for name in names:
        assert keyed.get(f"/images/{name}", headers=alice).status_code == 200
        refused = keyed.get(f"/images/{name}", headers={"Authorization": f"Bearer {BOB}"})
        assert refused.status_code == 404
    assert [keyed.get(image["url"]).status_code for image in images] == [200, 200], "each link is signed"
