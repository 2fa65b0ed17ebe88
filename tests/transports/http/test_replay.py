"""Manifests and replays over HTTP on the real tiny model: every result says how to make it again, and POST
/replay makes it again and says whether the pixels match."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imageforge.service.replay import BIT_EXACT, pixels_digest
from tests.helpers import png_base64

SMALL = {"width": 64, "height": 64, "steps": 2}


def _finished(client: TestClient, job: dict[str, Any]) -> dict[str, Any]:
    """The job once it has ended: its event stream is read to its end first."""
    with client.stream("GET", job["links"]["events"]) as stream:
        for _ in stream.iter_lines():
            pass
    done: dict[str, Any] = client.get(job["links"]["self"]).json()
    return done


def _made(client: TestClient, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """A finished job's result and its PNG."""
    job = _finished(client, client.post("/jobs", json={"task": "text2img", **body}).json())
    assert job["status"] == "succeeded", job
    return job["result"], client.get(job["links"]["image"]).content


def _replayed(client: TestClient, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    answer = client.post("/replay", json=body)
    assert answer.status_code == 202, answer.json()
    job = _finished(client, answer.json())
    assert job["status"] == "succeeded", job
    return job["result"], client.get(job["links"]["image"]).content


def _pixels(png: bytes) -> bytes:
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB").tobytes()


def test_a_result_carries_a_manifest_that_says_how_to_make_it_again(client: TestClient) -> None:
    result, png = _made(client, {"prompt": "a lighthouse at dusk", "seed": 7, **SMALL})

    manifest = result["manifest"]
    assert manifest["version"] == 1
    assert manifest["model"]["key"] == "tiny"
    assert manifest["model"]["weights"].startswith("sha256:")
    assert manifest["seed"] == 7
    assert manifest["rng"]["generator"] == "cpu"
    assert (manifest["steps"], manifest["width"], manifest["height"]) == (2, 64, 64)
    assert manifest["scheduler"]["class"]
    assert manifest["scheduler"]["config"]
    # The prompts exactly as the model received them, after the policy's additions.
    assert manifest["prompt"] == result["policy_applied"]["model_prompt"]
    assert manifest["negative_prompt"] == result["policy_applied"]["model_negative_prompt"]
    assert manifest["policy_version"] == result["policy_applied"]["version"]
    assert set(manifest["libraries"]) >= {"torch", "diffusers"}
    assert manifest["device"] == "cpu"
    assert manifest["determinism"]["class"] == BIT_EXACT
    with Image.open(io.BytesIO(png)) as image:
        assert manifest["pixels"] == pixels_digest(image)


def test_a_replay_of_a_manifest_makes_the_same_pixels_bit_for_bit(client: TestClient) -> None:
    original, png = _made(client, {"prompt": "a lighthouse at dusk", "seed": 7, **SMALL})

    replayed, again = _replayed(client, {"manifest": original["manifest"]})

    assert replayed["replay"]["matches"] is True
    assert replayed["replay"]["same_weights"] is True
    assert replayed["replay"]["determinism"] == BIT_EXACT
    assert replayed["cached"] is False, "a replay runs the model again"
    assert replayed["output_path"] != original["output_path"]
    assert _pixels(again) == _pixels(png)


def test_a_replay_of_the_image_itself_reads_the_manifest_it_carries(client: TestClient) -> None:
    _, png = _made(client, {"prompt": "a harbour at noon", "seed": 11, "negative_prompt": "fog", **SMALL})

    replayed, again = _replayed(client, {"image": base64.b64encode(png).decode()})

    assert replayed["replay"]["matches"] is True
    assert _pixels(again) == _pixels(png)


def test_a_manifest_changed_by_hand_runs_but_says_its_pixels_do_not_match(client: TestClient) -> None:
    original, png = _made(client, {"prompt": "a lighthouse at dusk", "seed": 7, **SMALL})

    replayed, again = _replayed(client, {"manifest": {**original["manifest"], "seed": 8}})

    assert replayed["replay"]["matches"] is False
    assert replayed["replay"]["expected_pixels"] == original["manifest"]["pixels"]
    assert _pixels(again) != _pixels(png)


def test_a_replay_of_an_img2img_result_uses_its_stored_input_image(client: TestClient) -> None:
    job = client.post(
        "/jobs", json={"task": "img2img", "prompt": "a fox", "seed": 3, "init_image": png_base64(), **SMALL}
    ).json()
    original = _finished(client, job)["result"]

    replayed, _ = _replayed(client, {"manifest": original["manifest"]})

    assert original["manifest"]["inputs"]["init_image"]
    assert replayed["task"] == "img2img"
    assert replayed["replay"]["matches"] is True


def test_an_image_without_a_manifest_is_refused_with_invalid_request(client: TestClient) -> None:
    answer = client.post("/replay", json={"image": png_base64()})

    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "invalid_request"
    assert "manifest" in error["message"]


def test_a_replay_needs_exactly_one_of_manifest_or_image(client: TestClient) -> None:
    neither = client.post("/replay", json={})
    unknown_version = client.post("/replay", json={"manifest": {"version": 99}})

    assert neither.status_code == 400
    assert neither.json()["error"]["code"] == "invalid_request"
    assert unknown_version.status_code == 400
    assert "version" in unknown_version.json()["error"]["message"]


def test_a_replay_applies_the_manifests_loras_and_says_when_a_lora_file_changed(
    client: TestClient, loras: Path
) -> None:
    applied = [{"name": "one", "weight": 0.8}]
    original, png = _made(client, {"prompt": "a lighthouse at dusk", "seed": 7, "loras": applied, **SMALL})

    replayed, again = _replayed(client, {"manifest": original["manifest"]})
    (loras / "one.safetensors").write_bytes((loras / "two.safetensors").read_bytes())
    after_change, _ = _replayed(client, {"manifest": original["manifest"]})

    assert original["manifest"]["loras"][0]["sha256"]
    assert replayed["replay"]["matches"] is True
    assert replayed["replay"]["same_weights"] is True
    assert _pixels(again) == _pixels(png)
    assert after_change["replay"]["same_weights"] is False
    assert after_change["replay"]["matches"] is False


def test_a_dpm_solver_result_replays_and_its_job_can_be_deleted(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    # DPM-Solver's config holds -inf, which strict JSON (the job store's SQLite) cannot read.
    original, png = _made(client, {"prompt": "a fox", "seed": 5, "sampler": "dpmpp_2m", **SMALL})
    job = client.post("/jobs", json={"task": "text2img", "prompt": "a fox", "seed": 6, "sampler": "dpmpp_2m", **SMALL})
    ended = _finished(client, job.json())

    replayed, again = _replayed(client, {"manifest": original["manifest"]})
    deleted = client.delete(f"{ended['links']['self']}/result")

    assert original["manifest"]["scheduler"]["config"]["lambda_min_clipped"] == "-Infinity"
    assert replayed["replay"]["matches"] is True
    assert _pixels(again) == _pixels(png)
    assert deleted.status_code == 204
    assert client.get(ended["links"]["self"]).status_code == 404
    assert not [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
