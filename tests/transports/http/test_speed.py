"""The engine's speed choices over HTTP with the `tiny` model: reported in /health and in each result,
overridable in settings, and the per-request `decoder`."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.transports.http.app import create_app
from tests.helpers import decode_png
from tests.loopback import LOCAL_URL

RUNTIME_KEYS = {"dtype", "channels_last", "attention", "threads", "memory_savers", "compile", "runtime", "precision"}


@pytest.fixture
def float32_client(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """A server whose settings come from the environment, with IMAGEFORGE_DTYPE=float32 and savers on."""
    monkeypatch.setenv("IMAGEFORGE_DTYPE", "float32")
    monkeypatch.setenv("IMAGEFORGE_MEMORY_SAVERS", "on")
    from_env = Settings(_env_file=None, default_model="tiny", root_dir=settings.root_dir, data_dir=settings.data_dir)
    service = build_service(from_env)
    service.start()
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        yield client
    service.close()


def _generate(client: TestClient, **body: object) -> dict[str, object]:
    response = client.post("/generate", json={"prompt": "a fox", "seed": 3, "width": 64, "height": 72, **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_health_and_each_result_report_the_engines_choices(client: TestClient) -> None:
    health = client.get("/health").json()
    runtime = health["runtime"]

    assert set(runtime) - {"openvino_converts"} == RUNTIME_KEYS
    assert runtime["dtype"] == health["dtype"]
    assert runtime["attention"] == "sdpa"
    assert runtime["threads"] >= 1
    assert (runtime["memory_savers"], runtime["compile"]) == ("auto", False)
    if importlib.util.find_spec("openvino") is None:
        assert (runtime["runtime"], runtime["precision"]) == ("torch", runtime["dtype"])
        on_torch = runtime
    else:  # `auto` runs on OpenVINO what an earlier run converted, and converts nothing itself
        assert (runtime["runtime"], runtime["openvino_converts"]) == ("openvino", False)
        on_torch = {key: value for key, value in runtime.items() if key != "openvino_converts"} | {"runtime": "torch"}
    result = _generate(client)
    # Nothing of the tiny model was converted here, so torch ran it; at 64x72 nothing needs the memory savers.
    assert result["runtime"] == {**on_torch, "decoder": "full", "memory_savers": False, "savers": []}
    assert result["decoder"] == "full"


def test_settings_override_the_engines_choices(float32_client: TestClient) -> None:
    runtime = float32_client.get("/health").json()["runtime"]

    assert (runtime["dtype"], runtime["memory_savers"]) == ("float32", "on")
    result = _generate(float32_client)
    assert (result["runtime"]["dtype"], result["runtime"]["memory_savers"]) == ("float32", True)  # type: ignore[index]


def test_fast_decoder_returns_the_requested_size_and_is_cached_apart_from_full(client: TestClient) -> None:
    full = _generate(client)
    fast = _generate(client, decoder="fast")

    assert (fast["decoder"], fast["cached"]) == ("fast", False)  # not the full decoder's cached image
    image = decode_png(str(fast["image_base64"]))
    assert image.size == (64, 72)
    assert image.tobytes() != decode_png(str(full["image_base64"])).tobytes()
    again = _generate(client, decoder="fast")
    assert (again["cached"], again["image_base64"]) == (True, fast["image_base64"])
    assert _generate(client)["image_base64"] == full["image_base64"]


def test_a_bad_decoder_is_a_400_naming_the_choices(client: TestClient) -> None:
    response = client.post("/generate", json={"prompt": "a fox", "decoder": "turbo"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert "decoder" in error["message"]
    assert "'full'" in error["message"]
    assert "'fast'" in error["message"]


def test_fast_on_a_model_without_a_fast_decoder_is_refused_before_queueing(settings: Settings) -> None:
    models_file = Path(settings.root_dir) / "models.toml"
    models_file.write_text('[models.my-flux]\nsource = "someone/flux"\nfamily = "flux"\n')
    with TestClient(create_app(build_service(settings)), base_url=LOCAL_URL) as client:
        response = client.post("/jobs", json={"prompt": "a fox", "model": "my-flux", "decoder": "fast"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unsupported_operation"
    assert "fast decoder" in error["message"]
    assert 'decoder "full"' in error["hint"]
