"""The A1111-compatible API on a real `imageforge serve`, driven by the clients that speak it: the `webuiapi`
package, and the request bodies Open WebUI's AUTOMATIC1111 engine sends (kept verbatim in openwebui/)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import webuiapi
from PIL import Image

from tests.contract.conftest import Server, private_data, serving

ALICE_KEY = "alice-key-0123456789"
BOB_KEY = "bob-key-0123456789ab"
#: A second model on the tiny model's weights, so that a switch shows in which model ran.
TWIN = "tiny-twin"
OPENWEBUI = Path(__file__).parent / "openwebui"
SILLYTAVERN = Path(__file__).parent / "sillytavern"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("a1111")
    data = private_data(root, data_dir)
    models_file = root / "models.toml"
    models_file.write_text(
        f'[models.{TWIN}]\nsource = "{data_dir / "models" / "tiny"}"\nfamily = "sd"\nsteps = 2\nguidance = 0.0\n'
        "size = 64\n"
    )
    settings = {"IMAGEFORGE_API_KEYS": f"alice:{ALICE_KEY},bob:{BOB_KEY}", "IMAGEFORGE_MODELS_FILE": str(models_file)}
    with serving(root, data, settings=settings) as running:
        yield running


def webui(server: Server, key: str) -> webuiapi.WebUIApi:
    """A `webuiapi` client as its users make one (its default sampler, "Euler a"), with the key as A1111's
    --api-auth password (HTTP Basic)."""
    return webuiapi.WebUIApi(host=server.host, port=server.port, username="any", password=key, steps=2)


def basic(key: str) -> dict[str, str]:
    """The header Open WebUI sends with AUTOMATIC1111_API_AUTH set to `user:key`."""
    return {"authorization": "Basic " + base64.b64encode(f"openwebui:{key}".encode()).decode()}


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_webuiapi_txt2img_with_batch_size_2_answers_two_images_and_the_seeds_used(server: Server) -> None:
    result = webui(server, ALICE_KEY).txt2img(prompt="a red fox", batch_size=2, width=64, height=64, seed=-1)

    assert len(result.images) == 2
    assert all(image.size == (64, 64) for image in result.images)
    seed = result.info["seed"]
    assert result.info["all_seeds"] == [seed, seed + 1]
    assert f"Seed: {seed}" in result.info["infotexts"][0]
    assert result.parameters["batch_size"] == 2, "the request is echoed as sent"
    assert result.info["sampler_name"] == "Euler a"


def test_webuiapi_img2img_with_a_mask_runs_an_inpaint_job_at_the_strength_sent(server: Server) -> None:
    init = Image.new("RGB", (64, 64), "navy")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # white: repaint the left half

    result = webui(server, ALICE_KEY).img2img(
        images=[init], mask_image=mask, prompt="a boat", width=64, height=64, denoising_strength=0.75
    )

    assert [image.size for image in result.images] == [(64, 64)]
    assert result.info["denoising_strength"] == 0.75
    native = {"Authorization": f"Bearer {ALICE_KEY}"}
    jobs = httpx.get(f"{server.url}/jobs", params={"limit": 1}, headers=native).json()["jobs"]
    assert jobs[0]["task"] == "inpaint"


def test_a_model_switch_through_options_changes_the_next_txt2img_of_that_client_and_no_other(
    server: Server,
) -> None:
    alice, bob = webui(server, ALICE_KEY), webui(server, BOB_KEY)
    assert bob.txt2img(prompt="a heron", width=64, height=64).info["sd_model_name"] == "tiny"

    alice.util_set_model(TWIN)  # what webuiapi's users call: sd-models, then POST options

    assert alice.util_get_current_model() == TWIN
    assert bob.get_options()["sd_model_checkpoint"] == "tiny"
    assert alice.txt2img(prompt="a heron", width=64, height=64).info["sd_model_name"] == TWIN
    assert bob.txt2img(prompt="a heron", width=64, height=64).info["sd_model_name"] == "tiny"
    one_off = alice.txt2img(prompt="a heron", width=64, height=64, override_settings={"sd_model_checkpoint": "tiny"})
    assert one_off.info["sd_model_name"] == "tiny", "override_settings picks the model of one request"


def test_png_info_reads_back_the_parameters_of_an_image_we_made(server: Server) -> None:
    api = webui(server, BOB_KEY)
    made = api.txt2img(prompt="a lantern", width=64, height=64, seed=1234)

    read = api.png_info(made.image)

    assert read.info == made.info["infotexts"][0], "info is the image's parameters text"
    assert read.parameters["Seed"] == "1234"
    assert read.parameters["Prompt"] == made.info["prompt"]
    assert (read.parameters["Size-1"], read.parameters["Size-2"]) == ("64", "64")


def _fixture(name: str, folder: Path = OPENWEBUI) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((folder / name).read_text())
    return body


@pytest.mark.parametrize("fixture", ["txt2img.json", "txt2img_with_steps.json"])
def test_open_webuis_automatic1111_flow_lists_switches_and_generates(server: Server, fixture: str) -> None:
    headers = basic(ALICE_KEY)
    api = f"{server.url}/sdapi/v1"
    options = httpx.get(f"{api}/options", headers=headers).json()  # verify_url, get_image_model
    titles = [model["title"] for model in httpx.get(f"{api}/sd-models", headers=headers).json()]
    assert {"tiny", TWIN} <= set(titles)

    options["sd_model_checkpoint"] = "tiny"  # set_image_model posts back the whole object it read
    assert httpx.post(f"{api}/options", json=options, headers=headers).status_code == 200
    body = _fixture(fixture)
    answer = httpx.post(f"{api}/txt2img", json=body, headers=headers, timeout=120).json()

    info = json.loads(answer["info"])
    assert len(answer["images"]) == body["batch_size"]
    first = Image.open(io.BytesIO(base64.b64decode(answer["images"][0])))
    assert first.size == (body["width"], body["height"])
    assert info["sd_model_name"] == "tiny"
    assert info["steps"] == body.get("steps", 2), "without steps, the model's own default"


def test_sillytaverns_startup_calls_and_its_txt2img_body_work(server: Server) -> None:
    headers = basic(BOB_KEY)
    api = f"{server.url}/sdapi/v1"
    for path in ("options", "samplers", "schedulers", "sd-models", "upscalers", "latent-upscale-modes", "sd-vae"):
        assert httpx.get(f"{api}/{path}", headers=headers).status_code == 200, path
    body = _fixture("txt2img.json", SILLYTAVERN)

    answer = httpx.post(f"{api}/txt2img", json=body, headers=headers, timeout=120)

    info = json.loads(answer.json()["info"])
    assert len(answer.json()["images"]) == 1
    assert (info["sampler_name"], info["extra_generation_params"]) == ("DPM++ 2M", {"Schedule type": "Karras"})
    assert info["negative_prompt"].endswith("lowres, bad anatomy")


def test_a_request_without_a_valid_key_is_refused_in_a1111s_error_shape(server: Server) -> None:
    answer = httpx.post(f"{server.url}/sdapi/v1/txt2img", json={"prompt": "x"}, headers=basic("wrong-key"))

    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"
    assert answer.json()["detail"]
