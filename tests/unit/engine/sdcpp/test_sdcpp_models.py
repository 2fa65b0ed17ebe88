"""Models that stable-diffusion.cpp runs, short of running one: their models-file entries, the Qwen entries' guard
and missing files, a missing engine, and the samplers sd.cpp lacks. No `sd-server` is started here."""

from __future__ import annotations

import stat
from dataclasses import replace
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_sdcpp_backend, build_service
from imageforge.config import Settings
from imageforge.domain import Backend, Family, Task
from imageforge.engine.catalog import load_models_file
from imageforge.errors import WeightsUnavailable
from imageforge.transports.http.app import create_app
from tests.events import wait_for_end
from tests.loopback import LOCAL_URL


def _client(settings: Settings) -> TestClient:
    return TestClient(create_app(build_service(settings)), base_url=LOCAL_URL)


def _fake_server(folder: Path) -> Path:
    """An executable that is no sd-server: enough for the engine to be "installed", never started here."""
    path = folder / "sd-server"
    path.write_text("#!/bin/sh\nexit 1\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _sdcpp_entry(tmp_path: Path) -> Path:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "unet.gguf").write_bytes(b"GGUF")
    models_file = tmp_path / "models.toml"
    models_file.write_text(
        '[models.local-flux]\nbackend = "sdcpp"\nfamily = "flux"\ndiffusion_model = "weights/unet.gguf"\n'
        'vae = "weights/ae.safetensors"\nt5xxl = "https://huggingface.co/o/r/blob/main/t5xxl_fp16.safetensors"\n'
        'sample_method = "euler"\nflow_shift = 3\noptions = ["--diffusion-fa"]\nsteps = 4\nguidance = 1.0\n'
        "size = 512\nmemory_gb = 12\n"
    )
    return models_file


def test_a_models_file_entry_with_backend_sdcpp_names_its_files_and_sampling(tmp_path: Path) -> None:
    [spec] = load_models_file(_sdcpp_entry(tmp_path))

    assert (spec.backend, spec.family) == (Backend.SDCPP, Family.FLUX)
    assert spec.sdcpp is not None
    assert spec.sdcpp.files() == {
        "diffusion_model": str(tmp_path / "weights" / "unet.gguf"),
        "vae": str(tmp_path / "weights" / "ae.safetensors"),
        "t5xxl": "https://huggingface.co/o/r/blob/main/t5xxl_fp16.safetensors",
    }
    assert (spec.sdcpp.sample_method, spec.sdcpp.flow_shift, spec.sdcpp.options) == ("euler", 3.0, ("--diffusion-fa",))
    assert spec.tasks == (Task.TEXT2IMG, Task.IMG2IMG)
    assert (spec.default_steps, spec.default_size, spec.est_memory_gb) == (4, 512, 12.0)


@pytest.mark.parametrize(
    "entry",
    [
        'model = "a.safetensors"\ndiffusion_model = "b.gguf"',
        'vae = "ae.safetensors"',
        'model = "sd15.ckpt"',
        'diffusion_model = "https://example.com/unet.gguf"',
    ],
    ids=["both-models", "no-model", "pickle", "not-the-hub"],
)
def test_an_sdcpp_entry_without_exactly_one_safe_model_file_is_skipped(tmp_path: Path, entry: str) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text(f'[models.bad]\nbackend = "sdcpp"\n{entry}\n')

    assert load_models_file(models_file) == []


def test_a_qwen_image_entry_for_diffusers_is_skipped(tmp_path: Path) -> None:
    models_file = tmp_path / "models.toml"
    models_file.write_text('[models.q]\nsource = "Qwen/Qwen-Image"\nfamily = "qwen-image"\n')

    assert load_models_file(models_file) == []


def test_the_qwen_models_are_refused_until_allow_qwen_image(settings: Settings) -> None:
    with _client(settings) as client:
        listed = {model["key"]: model for model in client.get("/models").json()["models"]}
        refused = client.post("/jobs", json={"model": "qwen-image-edit", "prompt": "make the sky orange"})

    assert listed["qwen-image"]["guard"]["setting"] == "ALLOW_QWEN_IMAGE"
    assert (listed["qwen-image"]["engine"], listed["sd-turbo"]["engine"]) == ("sdcpp", "diffusers")
    assert listed["qwen-image-edit"]["tasks"] == ["text2img", "img2img"]
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_guarded"
    assert "ALLOW_QWEN_IMAGE=1" in refused.json()["error"]["hint"]


def test_qwen_image_without_its_files_fails_with_weights_unavailable_naming_each_file_and_size(
    settings: Settings, tmp_path: Path
) -> None:
    allowed = settings.model_copy(update={"allow_qwen_image": True, "sdcpp_server": _fake_server(tmp_path)})
    with _client(allowed) as client:
        job = client.post("/jobs", json={"model": "qwen-image", "prompt": "a whiteboard flow chart"}).json()
        assert wait_for_end(client, job) == "failed"
        error = client.get(job["links"]["self"]).json()["error"]

    assert error["code"] == "weights_unavailable"
    for named in ("Qwen_Image-Q4_K_M.gguf (~13.1 GB)", "qwen_image_vae.safetensors", "Qwen2.5-VL-7B-Instruct.Q8_0"):
        assert named in error["hint"]
    assert "imageforge models pull qwen-image" in error["hint"]


def test_pulling_qwen_image_offline_fails_with_weights_unavailable(settings: Settings) -> None:
    service = build_service(settings)

    with pytest.raises(WeightsUnavailable) as raised:
        service.pull("qwen-image")

    assert "could not be downloaded" in raised.value.message
    assert "HF_HUB_OFFLINE" in raised.value.hint


def test_an_sdcpp_model_without_sd_server_fails_with_model_unsupported_saying_how_to_build_it(
    settings: Settings, tmp_path: Path
) -> None:
    configured = settings.model_copy(
        update={"models_file": _sdcpp_entry(tmp_path), "sdcpp_server": tmp_path / "no-such-sd-server"}
    )
    with _client(configured) as client:
        job = client.post("/jobs", json={"model": "local-flux", "prompt": "p", "width": 64, "height": 64}).json()
        assert wait_for_end(client, job) == "failed"
        error = client.get(job["links"]["self"]).json()["error"]

    assert error["code"] == "model_unsupported"
    assert "IMAGEFORGE_SDCPP_SERVER" in error["message"]
    assert "./start.sh sdcpp-build" in error["hint"]


def test_a_sampler_sd_cpp_lacks_is_refused_at_submit_for_its_models(settings: Settings, tmp_path: Path) -> None:
    with _client(settings.model_copy(update={"models_file": _sdcpp_entry(tmp_path)})) as client:
        refused = client.post("/jobs", json={"model": "local-flux", "prompt": "p", "sampler": "unipc"})

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_request"
    assert "stable-diffusion.cpp" in refused.json()["error"]["message"]


def test_an_sdcpp_model_s_cache_fingerprint_names_its_engine_and_changes_with_its_configuration(
    settings: Settings, tmp_path: Path
) -> None:
    [spec] = load_models_file(_sdcpp_entry(tmp_path))
    assert spec.sdcpp is not None
    engine = build_sdcpp_backend(settings.model_copy(update={"sdcpp_server": _fake_server(tmp_path)}))
    converted = replace(spec, sdcpp=replace(spec.sdcpp, weight_type="q8_0"))

    assert engine.fingerprint(spec).startswith("sdcpp=")
    assert engine.fingerprint(converted) != engine.fingerprint(spec)
