"""POST /generate, /edit, /inpaint end to end on the real diffusers path with the `tiny` model."""

from __future__ import annotations

import base64
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image

from imageforge.config import Settings
from tests.helpers import decode_png, png_base64


def test_generate_returns_png_of_requested_size_with_seed(client: TestClient) -> None:
    response = client.post("/generate", json={"prompt": "a red fox", "seed": 42, "width": 128, "height": 96})

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert (body["task"], body["model"], body["seed"]) == ("text2img", "tiny", 42)
    assert (body["width"], body["height"], body["steps"]) == (128, 96, 2)
    assert body["mime"] == "image/png"
    assert body["cached"] is False
    image = decode_png(body["image_base64"])  # return_mode both by default: the PNG and where it was saved
    assert Path(body["output_path"]).read_bytes() == base64.b64decode(body["image_base64"])
    assert image.format == "PNG"
    assert image.size == (128, 96)


def test_generate_without_seed_picks_one_and_reports_it(client: TestClient) -> None:
    first = client.post("/generate", json={"prompt": "fox"}).json()
    second = client.post("/generate", json={"prompt": "fox"}).json()

    assert isinstance(first["seed"], int)
    assert first["seed"] != second["seed"]
    assert (first["width"], first["height"]) == (256, 256)  # the tiny model's default


def test_same_seed_reproduces_the_same_pixels(client: TestClient) -> None:
    body = {"prompt": "fox", "seed": 5, "width": 64, "height": 64, "use_cache": False}
    first = decode_png(client.post("/generate", json=body).json()["image_base64"])
    second = decode_png(client.post("/generate", json=body).json()["image_base64"])
    other = decode_png(client.post("/generate", json={**body, "seed": 6}).json()["image_base64"])

    assert first.tobytes() == second.tobytes()
    assert first.tobytes() != other.tobytes()


def test_return_mode_path_writes_png_with_metadata_and_sidecar(client: TestClient, settings: Settings) -> None:
    body = client.post(
        "/generate", json={"prompt": "a lighthouse", "seed": 9, "width": 64, "height": 64, "return_mode": "path"}
    ).json()

    assert body["image_base64"] is None
    path = Path(body["output_path"])
    assert path.parent == settings.output_path
    assert path.name[:8].isdigit()
    assert path.name[8] == "_"
    assert len(path.stem) == len("YYYYMMDD_HHMMSS_abcdef")
    with Image.open(path) as image:
        text = dict(image.info)
    assert text["parameters"].startswith("a lighthouse\n")
    assert "Seed: 9" in text["parameters"]
    assert "Model: tiny" in text["parameters"]
    embedded = json.loads(text["imageforge"])
    sidecar = json.loads(path.with_suffix(".json").read_text())
    for record in (embedded, sidecar):
        assert (record["seed"], record["model"], record["steps"], record["width"]) == (9, "tiny", 2, 64)
        assert record["prompt"] == "a lighthouse"
    assert sidecar["output_path"] == str(path)


def test_return_mode_both_gives_path_and_base64(client: TestClient) -> None:
    body = client.post("/generate", json={"prompt": "x", "width": 64, "height": 64, "return_mode": "both"}).json()

    assert Path(body["output_path"]).read_bytes() == base64.b64decode(body["image_base64"])


def test_second_identical_seeded_request_is_cached(client: TestClient) -> None:
    body = {"prompt": "a cached fox", "seed": 11, "width": 64, "height": 64, "return_mode": "both"}
    first = client.post("/generate", json=body).json()
    second = client.post("/generate", json=body).json()

    assert (first["cached"], second["cached"]) == (False, True)
    assert second["image_base64"] == first["image_base64"]
    assert second["output_path"] == first["output_path"]
    assert second["seed"] == 11


def test_cache_is_keyed_by_every_pixel_parameter(client: TestClient) -> None:
    base = {"prompt": "key test", "seed": 3, "width": 64, "height": 64}
    client.post("/generate", json=base)
    for change in ({"seed": 4}, {"prompt": "key test 2"}, {"steps": 3}, {"width": 72}, {"guidance": 1.5},
                   {"negative_prompt": "blur"}):  # fmt: skip
        assert client.post("/generate", json={**base, **change}).json()["cached"] is False, change


def test_unseeded_or_opted_out_requests_are_not_cached(client: TestClient) -> None:
    client.post("/generate", json={"prompt": "opt out", "seed": 1, "width": 64, "height": 64, "use_cache": False})
    again = client.post(
        "/generate", json={"prompt": "opt out", "seed": 1, "width": 64, "height": 64, "use_cache": False}
    )
    assert again.json()["cached"] is False


def test_edit_keeps_input_size_and_reports_strength(client: TestClient) -> None:
    response = client.post("/edit", json={"prompt": "make it blue", "init_image": png_base64((96, 64)), "seed": 2})

    body = response.json()
    assert response.status_code == 200, body
    assert (body["task"], body["strength"]) == ("img2img", 0.6)
    assert (body["width"], body["height"]) == (96, 64)
    assert body["steps"] == 2
    assert decode_png(body["image_base64"]).size == (96, 64)


def test_edit_from_a_previous_result_by_path(client: TestClient) -> None:
    first = client.post("/generate", json={"prompt": "x", "width": 64, "height": 64, "return_mode": "path"}).json()
    body = client.post("/edit", json={"prompt": "y", "init_image_path": first["output_path"], "strength": 0.5}).json()

    assert body["ok"] is True, body
    assert (body["width"], body["strength"]) == (64, 0.5)


def test_edit_accepts_relative_paths_and_data_urls(client: TestClient, settings: Settings) -> None:
    first = client.post("/generate", json={"prompt": "x", "width": 64, "height": 64, "return_mode": "path"}).json()
    relative = Path(first["output_path"]).relative_to(settings.root_dir)

    assert client.post("/edit", json={"prompt": "y", "init_image_path": str(relative)}).json()["ok"] is True
    data_url = "data:image/png;base64," + png_base64()
    assert client.post("/edit", json={"prompt": "y", "init_image": data_url}).json()["ok"] is True


def test_inpaint_repaints_only_inside_the_mask_size(client: TestClient) -> None:
    mask = png_base64((64, 64), 255, mode="L")
    response = client.post(
        "/inpaint", json={"prompt": "a window", "init_image": png_base64((64, 64)), "mask_image": mask, "seed": 1}
    )

    body = response.json()
    assert response.status_code == 200, body
    assert (body["task"], body["width"], body["height"]) == ("inpaint", 64, 64)
    assert decode_png(body["image_base64"]).size == (64, 64)


def test_edit_input_is_part_of_the_cache_key(client: TestClient) -> None:
    body = {"prompt": "p", "seed": 1, "init_image": png_base64(color=(1, 2, 3))}
    assert client.post("/edit", json=body).json()["cached"] is False
    assert client.post("/edit", json=body).json()["cached"] is True
    assert client.post("/edit", json={**body, "init_image": png_base64(color=(3, 2, 1))}).json()["cached"] is False


def test_assist_with_ollama_unreachable_falls_back_to_the_original_prompt(client: TestClient) -> None:
    body = client.post(
        "/generate", json={"prompt": "a red fox", "assist_prompt": True, "width": 64, "height": 64}
    ).json()

    assert body["ok"] is True, body
    assert body["assisted"] is False
    assert body["prompt"] == body["original_prompt"] == "a red fox"
    assert body["assist"]["source"] == "passthrough"
    assert "unreachable" in body["assist"]["reason"]


def test_concurrent_requests_all_finish_with_their_own_seeds(client: TestClient) -> None:
    def run(seed: int) -> dict[str, object]:
        response = client.post("/generate", json={"prompt": "p", "seed": seed, "width": 64, "height": 64})
        result: dict[str, object] = response.json()
        return result

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, range(100, 104)))

    assert [result["seed"] for result in results] == [100, 101, 102, 103]
    assert all(result["ok"] is True for result in results)


def test_a_link_placed_in_the_output_folder_is_not_served(client: TestClient, settings: Settings) -> None:
    secret = settings.root_dir / "secret.png"
    secret.write_bytes(b"\x89PNG not for clients")
    settings.output_path.mkdir(parents=True, exist_ok=True)
    (settings.output_path / "20260101_000000_abcdef.png").symlink_to(secret)

    response = client.get("/images/20260101_000000_abcdef.png")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "image_not_found"
    assert b"not for clients" not in response.content
