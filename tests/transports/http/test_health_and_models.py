"""GET /health, GET /models, the user's models file, and the OpenAPI documentation."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from imageforge import __version__
from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.speed import native_bf16
from imageforge.transports.http.app import create_app
from tests.loopback import LOCAL_URL
from tests.unit.engine.test_catalog import BUILTIN_KEYS


@contextmanager
def serving(settings: Settings) -> Iterator[TestClient]:
    """A client on a service built from `settings`, for tests that need other settings than the fixture's."""
    with TestClient(create_app(build_service(settings)), base_url=LOCAL_URL) as client:
        yield client


def models_of(client: TestClient) -> dict[str, dict[str, Any]]:
    response = client.get("/models")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["ok"] is True
    return {entry["key"]: entry for entry in body["models"]}


# -- /health ----------------------------------------------------------------------------------------------


def test_health_reports_ok_on_cpu_with_version_and_default_model(settings: Settings) -> None:
    import torch

    with serving(settings.model_copy(update={"device": "cpu"})) as client:
        response = client.get("/health")

    assert response.status_code == 200
    health = response.json()
    assert (health["ok"], health["status"]) == (True, "ok")
    # bf16 where the CPU computes it natively (ADR 0012), fp32 elsewhere
    assert (health["device"], health["dtype"]) == ("cpu", "bfloat16" if native_bf16() else "float32")
    assert health["cuda"] is torch.cuda.is_available()
    assert health["mps"] is torch.backends.mps.is_available()
    assert health["version"] == __version__
    assert health["default_model"] == "tiny"
    assert set(health["versions"]) == {"torch", "diffusers", "transformers"}


def test_health_lists_no_resident_model_before_a_generation_and_tiny_after(client: TestClient) -> None:
    assert client.get("/health").json()["resident_models"] == []

    generated = client.post("/generate", json={"prompt": "x", "width": 64, "height": 64, "seed": 1})
    assert generated.status_code == 200, generated.text

    assert client.get("/health").json()["resident_models"] == ["tiny"]
    assert models_of(client)["tiny"]["resident"] is True


def test_health_reports_an_unreachable_ollama_as_a_state_not_an_error(client: TestClient, settings: Settings) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json()["ollama"] == {
        "reachable": False,
        "url": settings.ollama_url,
        "model": settings.ollama_model,
        "model_available": False,
    }


# -- /models ----------------------------------------------------------------------------------------------


def test_models_lists_every_builtin_key_in_catalog_order(client: TestClient) -> None:
    response = client.get("/models")

    assert [entry["key"] for entry in response.json()["models"]] == BUILTIN_KEYS
    for entry in response.json()["models"]:
        assert entry["tasks"], entry["key"]
        assert entry["defaults"]["steps"] >= 1
        assert entry["size_multiple"] in (8, 16)


def test_default_model_is_sd_turbo_unless_overridden(settings: Settings) -> None:
    with serving(settings.model_copy(update={"default_model": "sd-turbo"})) as client:
        body = client.get("/models").json()
    assert body["default"] == "sd-turbo"
    assert [entry["key"] for entry in body["models"] if entry["default"]] == ["sd-turbo"]
    assert Settings(_env_file=None).default_model == "sd-turbo"


def test_models_shows_the_configured_default(client: TestClient) -> None:
    body = client.get("/models").json()

    assert body["default"] == "tiny"
    assert [entry["key"] for entry in body["models"] if entry["default"]] == ["tiny"]


def test_tiny_is_labelled_smoke_test_with_weights_present(client: TestClient) -> None:
    models = models_of(client)

    assert models["tiny"]["smoke_test"] is True
    assert models["tiny"]["weights_present"] is True
    assert models["tiny"]["available"] is True
    assert [key for key, entry in models.items() if entry["smoke_test"]] == ["tiny"]


def test_flux_guard_is_shown_not_allowed_with_a_reason(client: TestClient) -> None:
    flux = models_of(client)["flux-q4"]

    assert flux["guard"]["setting"] == "ALLOW_FLUX"
    assert flux["guard"]["allowed"] is False
    assert "16 GB" in flux["guard"]["reason"]
    assert flux["available"] is False


def test_flux_guard_is_shown_allowed_when_allow_flux_is_set(settings: Settings) -> None:
    with serving(settings.model_copy(update={"allow_flux": True})) as client:
        models = models_of(client)

    assert models["flux-q4"]["guard"]["allowed"] is True
    assert models["flux-q4"]["available"] is True
    assert models["flux2-klein"]["guard"]["allowed"] is False  # each guard opens on its own


def test_unguarded_models_show_no_guard(client: TestClient) -> None:
    models = models_of(client)

    assert [key for key, entry in models.items() if entry["guard"] is not None] == [
        "flux-q4",
        "flux2-klein",
        "qwen-image",
        "qwen-image-edit",
    ]


def test_sdxl_portrait_carries_a_notice_when_no_lora_is_set(client: TestClient) -> None:
    portrait = models_of(client)["sdxl-portrait"]

    assert "IMAGEFORGE_LORA_PORTRAIT is not set" in portrait["notice"]
    assert "plain sdxl" in portrait["notice"]


def test_sdxl_portrait_has_no_notice_once_a_lora_is_set(settings: Settings) -> None:
    with serving(settings.model_copy(update={"lora_portrait": "someone/portrait-lora"})) as client:
        portrait = models_of(client)["sdxl-portrait"]

    assert portrait["notice"] is None


def test_user_model_from_the_models_file_is_listed(settings: Settings) -> None:
    folder = settings.root_dir / "my-model"
    folder.mkdir()
    (settings.root_dir / "models.toml").write_text(
        '[models.my-model]\nsource = "my-model"\nfamily = "sdxl"\nsteps = 12\nguidance = 3.5\n'
        'tasks = ["text2img", "img2img"]\ndescription = "My own SDXL"\n'
    )

    with serving(settings) as client:
        models = models_of(client)

    mine = models["my-model"]
    assert mine["source"] == str(folder)  # relative to the models file
    assert (mine["family"], mine["description"]) == ("sdxl", "My own SDXL")
    assert mine["tasks"] == ["text2img", "img2img"]
    assert mine["defaults"] == {"steps": 12, "guidance": 3.5, "width": 1024, "height": 1024}
    assert (mine["smoke_test"], mine["weights_present"], mine["guard"]) == (False, True, None)
    assert list(models)[: len(BUILTIN_KEYS)] == BUILTIN_KEYS


def test_pickle_source_in_the_models_file_is_skipped_and_the_server_still_starts(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    (settings.root_dir / "evil.ckpt").write_bytes(b"not loaded: a pickle would run code here")
    (settings.root_dir / "models.toml").write_text(
        '[models.evil]\nsource = "evil.ckpt"\n\n[models.fine]\nsource = "some-org/fine-model"\n'
    )

    with caplog.at_level(logging.WARNING), serving(settings) as client:
        models = models_of(client)
        refused = client.post("/generate", json={"prompt": "x", "model": "evil"})
        health = client.get("/health")

    assert "evil" not in models
    assert models["fine"]["source"] == "some-org/fine-model"
    assert refused.status_code == 404
    assert refused.json()["error"]["code"] == "model_not_found"
    assert health.status_code == 200
    assert any("[models.evil]" in record.getMessage() and "pickle" in record.getMessage() for record in caplog.records)


# -- documentation ----------------------------------------------------------------------------------------


def test_docs_serve_the_openapi_ui(client: TestClient) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text
    assert "/openapi.json" in response.text


def test_openapi_lists_the_image_routes_with_their_error_shape(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()

    for path in ("/generate", "/edit", "/inpaint"):
        assert "post" in schema["paths"][path], path
        assert schema["paths"][path]["post"]["responses"]["400"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorResponse"
        }
    assert {"/health", "/models"} <= set(schema["paths"])
    assert schema["info"]["version"] == __version__


def test_models_reports_the_largest_size_the_server_accepts(client: TestClient, settings: Settings) -> None:
    assert client.get("/models").json()["max_res"] == settings.max_res
