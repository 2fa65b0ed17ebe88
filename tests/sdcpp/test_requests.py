"""What the sd.cpp engine sends its child, for models whose weights cannot be had here (Qwen-Image-Edit): its files
and switches on the command line, an edit's image as a reference image, the sampling of the entry and of the
request. A stand-in speaking sd-server's job API (fake_sd_server.py) records both."""

from __future__ import annotations

import base64
import io
import json
import stat
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.sdcpp import SdcppBackend
from imageforge.transports.http.app import create_app
from tests.events import wait_for_end
from tests.helpers import png_base64
from tests.loopback import LOCAL_URL

FAKE = Path(__file__).with_name("fake_sd_server.py")
QWEN_EDIT_ENTRY = """
[models.my-qwen-edit]
backend = "sdcpp"
family = "qwen-image"
diffusion_model = "w/qwen-image-edit-2511-Q4_K_M.gguf"
vae = "w/qwen_image_vae.safetensors"
llm = "w/Qwen2.5-VL-7B-Instruct.Q8_0.gguf"
llm_vision = "w/Qwen2.5-VL-7B-Instruct.mmproj-Q8_0.gguf"
sample_method = "euler"
flow_shift = 3.0
options = ["--diffusion-fa", "--qwen-image-zero-cond-t"]
edit_with_reference = true
steps = 2
guidance = 2.5
size = 64

[models.my-sd]
backend = "sdcpp"
family = "sd"
model = "w/sd.safetensors"
sample_method = "euler_a"
size = 64
"""


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _settings(settings: Settings, tmp_path: Path, *, slow_s: float = 0.0) -> tuple[Settings, Path]:
    (tmp_path / "w").mkdir()
    for name in ("qwen-image-edit-2511-Q4_K_M.gguf", "qwen_image_vae.safetensors", "sd.safetensors"):
        (tmp_path / "w" / name).write_bytes(b"x")
    for name in ("Qwen2.5-VL-7B-Instruct.Q8_0.gguf", "Qwen2.5-VL-7B-Instruct.mmproj-Q8_0.gguf"):
        (tmp_path / "w" / name).write_bytes(b"x")
    (tmp_path / "models.toml").write_text(QWEN_EDIT_ENTRY)
    record = tmp_path / "record.jsonl"
    server = tmp_path / "sd-server"
    server.write_text(f'#!/bin/sh\nFAKE_SD_SERVER_SLOW_S={slow_s} exec "{sys.executable}" "{FAKE}" "{record}" "$@"\n')
    server.chmod(server.stat().st_mode | stat.S_IXUSR)
    update = {"models_file": tmp_path / "models.toml", "sdcpp_server": server}
    return settings.model_copy(update=update), record


def test_an_edit_model_gets_its_files_and_switches_and_the_image_as_a_reference(
    settings: Settings, tmp_path: Path
) -> None:
    configured, record = _settings(settings, tmp_path)
    with TestClient(create_app(build_service(configured)), base_url=LOCAL_URL) as client:
        body = {"model": "my-qwen-edit", "task": "img2img", "prompt": "make the sky orange", "seed": 9}
        job = client.post("/jobs", json={**body, "init_image": png_base64(color=(10, 20, 30))}).json()
        assert wait_for_end(client, job) == "succeeded"

    argv, sent = (entry for entry in _records(record))
    switches = argv["argv"]
    assert switches[switches.index("--diffusion-model") + 1] == str(tmp_path / "w" / "qwen-image-edit-2511-Q4_K_M.gguf")
    assert switches[switches.index("--llm_vision") + 1].endswith("mmproj-Q8_0.gguf")
    assert {"--vae", "--llm", "--diffusion-fa", "--qwen-image-zero-cond-t"} <= set(switches)
    request = sent["body"]
    assert "init_image" not in request
    [reference] = request["ref_images"]
    assert Image.open(io.BytesIO(base64.b64decode(reference))).getpixel((0, 0)) == (10, 20, 30)
    assert request["prompt"].startswith("make the sky orange")  # the prompt policy may add to it
    assert (request["seed"], request["width"]) == (9, 64)
    assert request["sample_params"] == {
        "sample_steps": 2,
        "guidance": {"txt_cfg": 2.5},
        "sample_method": "euler",
        "flow_shift": 3.0,
    }


def test_a_request_s_loras_reach_the_child_by_file_name_in_the_lora_folder_it_was_started_with(
    settings: Settings, tmp_path: Path
) -> None:
    configured, record = _settings(settings, tmp_path)
    configured.lora_path.mkdir(parents=True)
    (configured.lora_path / "ink.safetensors").write_bytes(b"x")
    with TestClient(create_app(build_service(configured)), base_url=LOCAL_URL) as client:
        body = {"model": "my-sd", "prompt": "a boat", "loras": [{"name": "ink", "weight": 0.7}]}
        job = client.post("/jobs", json=body).json()
        assert wait_for_end(client, job) == "succeeded"
        result = client.get(job["links"]["self"]).json()["result"]

    argv, sent = (entry for entry in _records(record))
    switches = argv["argv"]
    assert switches[switches.index("--lora-model-dir") + 1] == str(configured.lora_path)
    assert switches[switches.index("--lora-apply-mode") + 1] == "at_runtime"
    assert sent["body"]["lora"] == [{"path": "ink.safetensors", "multiplier": 0.7}]
    # The stand-in prints no report of what it applied; the real child's is tested in test_engine.py.
    assert result["runtime"]["lora_tensors_applied"] == {"ink": "not reported"}


def test_a_request_sampler_and_schedule_replace_the_entry_s_in_sd_cpp_names(settings: Settings, tmp_path: Path) -> None:
    configured, record = _settings(settings, tmp_path)
    with TestClient(create_app(build_service(configured)), base_url=LOCAL_URL) as client:
        body = {"model": "my-sd", "prompt": "p", "sampler": "dpmpp_2m", "schedule": "karras"}
        job = client.post("/jobs", json=body).json()
        assert wait_for_end(client, job) == "succeeded"

    request = _records(record)[1]["body"]
    assert (request["sample_params"]["sample_method"], request["sample_params"]["scheduler"]) == ("dpm++2m", "karras")
    assert "ref_images" not in request


def test_a_child_slow_to_answer_is_waited_for_not_taken_for_crashed(settings: Settings, tmp_path: Path) -> None:
    configured, _record = _settings(settings, tmp_path, slow_s=2.0)
    # Requests to the child time out after half a second; its first answer about the job takes two.
    engine = SdcppBackend(server=configured.sdcpp_server, request_timeout_s=0.5)
    with TestClient(create_app(build_service(configured, sdcpp=engine)), base_url=LOCAL_URL) as client:
        job = client.post("/jobs", json={"model": "my-sd", "prompt": "p"}).json()

        assert wait_for_end(client, job) == "succeeded", client.get(job["links"]["self"]).json()["error"]
