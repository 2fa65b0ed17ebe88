"""Admission by memory: a job that would not fit the free memory is refused at submit with `insufficient_memory`,
its estimate, what is free and a size that fits; a loaded model's weights are not counted twice; `/models` shows
each model's estimate; estimates fitted from this machine's measured peaks stay close to them, across restarts.

The tiny model's catalog figure is 0.1 GB at 256x256, so until a run is measured a job needs 0.1 GB to load it
plus 0.025 GB per 256x256 of pixels to generate (`SEED_ACTIVATION_SHARE`).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from mcp.client.client import Client

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.service import ImageService
from imageforge.service.memory import fit
from imageforge.storage.peaks import PeakLog
from imageforge.transports.http.app import create_app
from imageforge.transports.mcp.server import McpOptions, build_mcp_server
from tests.fixed_memory import FixedMemory
from tests.loopback import LOCAL_URL
from tests.transports.mcp.answers import error_of

FAST = {"prompt": "a fox", "steps": 1}


def _serve(settings: Settings, memory: FixedMemory | None) -> Iterator[TestClient]:
    checked = settings.model_copy(update={"memory_admission": True, "memory_margin_gb": 0.0})
    service = build_service(checked, memory_probe=memory)
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        yield client


@pytest.fixture
def memory() -> FixedMemory:
    return FixedMemory(free=0.2)


@pytest.fixture
def short_of_memory(settings: Settings, memory: FixedMemory) -> Iterator[TestClient]:
    yield from _serve(settings, memory)


def test_a_job_too_big_for_the_free_memory_is_refused_with_its_estimate_and_a_size_that_fits(
    short_of_memory: TestClient,
) -> None:
    client = short_of_memory

    refused = client.post("/generate", json={**FAST, "width": 1024, "height": 1024})
    queued = client.post("/jobs", json={**FAST, "width": 1024, "height": 1024})
    fitting = client.post("/generate", json={**FAST, "width": 512, "height": 512, "return_mode": "path"})

    assert refused.status_code == queued.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "insufficient_memory"
    assert error["message"] == (
        "At 1024x1024 'tiny' needs about 512 MB (102 MB to load it, 410 MB to generate, from the catalog's figure); "
        "205 MB is free for it; 512x512 fits."
    )
    assert "Ask for 512x512 or smaller" in error["hint"]
    assert "IMAGEFORGE_MEMORY_ADMISSION=0" in error["hint"]
    assert "its estimate is the catalog's figure" in error["hint"]  # nothing of tiny has run here yet
    assert [job["result"]["width"] for job in client.get("/jobs").json()["jobs"]] == [512]  # nothing else queued
    assert fitting.status_code == 200
    assert (fitting.json()["width"], fitting.json()["height"]) == (512, 512)


def test_a_wide_job_is_offered_the_largest_size_of_its_shape_that_fits(short_of_memory: TestClient) -> None:
    refused = short_of_memory.post("/generate", json={**FAST, "width": 1024, "height": 512})

    assert refused.status_code == 422
    assert refused.json()["error"]["message"].endswith("; 728x360 fits.")


def test_nothing_fits_when_even_loading_the_model_does_not(short_of_memory: TestClient, memory: FixedMemory) -> None:
    memory.free = 0.05

    refused = short_of_memory.post("/generate", json={**FAST, "width": 256, "height": 256})

    assert refused.status_code == 422
    assert refused.json()["error"]["message"].endswith("; no size of that shape fits.")
    assert refused.json()["error"]["hint"].startswith("Free memory: unload other models")


def test_a_loaded_model_is_not_counted_twice(short_of_memory: TestClient, memory: FixedMemory) -> None:
    client = short_of_memory
    client.post("/models/tiny/load").raise_for_status()
    # Less than loading it takes (0.1 GB), more than generating at 256x256 (0.025 GB): its weights are in memory
    # already, so what is free is all a job of it needs.
    memory.free = 0.05

    loaded = client.post("/generate", json={**FAST, "width": 256, "height": 256, "return_mode": "path"})
    client.post("/models/tiny/unload").raise_for_status()
    unloaded = client.post("/generate", json={**FAST, "width": 256, "height": 256})

    assert loaded.status_code == 200
    assert unloaded.status_code == 422
    assert "102 MB to load it" in unloaded.json()["error"]["message"]


def test_an_idle_model_counts_as_memory_the_pool_gives_back(settings: Settings, memory: FixedMemory) -> None:
    folder = settings.models_path / "tiny"
    (settings.root_dir / "models.toml").write_text(
        f'[models.tiny-b]\nsource = "{folder}"\nsteps = 1\nguidance = 0.0\nsize = 256\nmemory_gb = 0.1\n'
    )
    for client in _serve(settings, memory):
        client.post("/models/tiny/load").raise_for_status()  # builds the tiny folder on first use
        memory.free = 0.05

        # tiny-b needs 0.125 GB: 0.05 free and tiny's 0.1 GB, which the pool unloads when memory runs short.
        other = client.post("/generate", json={**FAST, "model": "tiny-b", "width": 256, "height": 256})

        assert other.status_code == 200


def test_models_shows_each_models_estimate_at_its_default_size(
    short_of_memory: TestClient, memory: FixedMemory
) -> None:
    client = short_of_memory

    before = {model["key"]: model for model in client.get("/models").json()["models"]}["tiny"]["memory"]
    client.post("/models/tiny/load").raise_for_status()
    memory.free = 0.01
    after = {model["key"]: model for model in client.get("/models").json()["models"]}["tiny"]["memory"]

    assert before == {
        "width": 256,
        "height": 256,
        "need_gb": 0.125,
        "weights_gb": 0.1,
        "activations_gb": 0.025,
        "source": "catalog",
        "free_gb": 0.2,
        "fits": True,
    }
    assert (after["need_gb"], after["weights_gb"], after["free_gb"], after["fits"]) == (0.025, 0.0, 0.01, False)


def test_with_admission_off_the_job_runs_whatever_is_free(settings: Settings) -> None:
    service = build_service(settings.model_copy(update={"memory_admission": False}), memory_probe=FixedMemory(0.0))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        response = client.post("/generate", json={**FAST, "width": 256, "height": 256, "return_mode": "path"})

        assert response.status_code == 200


@pytest.fixture
async def mcp_short_of_memory(settings: Settings) -> AsyncIterator[ImageService]:
    checked = settings.model_copy(update={"memory_admission": True, "memory_margin_gb": 0.0})
    service = build_service(checked, memory_probe=FixedMemory(0.2))
    service.start()
    yield service
    service.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_mcp_tools_refuse_it_with_the_same_code(mcp_short_of_memory: ImageService) -> None:
    async with Client(build_mcp_server(mcp_short_of_memory, McpOptions(preview_px=64))) as mcp:
        drawn = await mcp.call_tool("generate_image", {**FAST, "width": 1024, "height": 1024})
        queued = await mcp.call_tool("submit_async_job", {**FAST, "width": 1024, "height": 1024})
        listed = await mcp.call_tool("list_models", {})

    for result in (drawn, queued):
        error = error_of(result)
        assert error["code"] == "insufficient_memory"
        assert "512x512 fits" in error["message"]
    assert listed.structured_content is not None
    tiny = next(model for model in listed.structured_content["models"] if model["key"] == "tiny")
    assert tiny["memory"]["need_gb"] == 0.125


# -- estimates from measured peaks ----------------------------------------------------------------------------

#: How far an estimate may be from the median peak measured at its size: the resident set moves by whole pages
#: and by what other threads of the process allocate meanwhile.
TOLERANCE = 0.3
TOLERANCE_GB = 1 / 1024
SIZES = (64, 128, 192)
RUNS = 3


def _measurable() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@pytest.mark.skipif(not (os.name == "posix" and _measurable()), reason="the CPU peak is read from Linux's /proc")
def test_estimates_fitted_from_measured_peaks_are_close_to_them_and_survive_a_restart(settings: Settings) -> None:
    # The real probe, this process's resident set; admission is off (conftest): this machine's RAM is not the test's.
    with TestClient(create_app(build_service(settings)), base_url=LOCAL_URL) as client:
        for side in SIZES * RUNS:
            body = {**FAST, "width": side, "height": side, "seed": side, "use_cache": False, "return_mode": "path"}
            client.post("/generate", json=body).raise_for_status()
        device = f"cpu/{client.get('/health').json()['dtype']}"
    with TestClient(create_app(build_service(settings)), base_url=LOCAL_URL) as client:
        restarted = {model["key"]: model for model in client.get("/models").json()["models"]}["tiny"]["memory"]

    peaks = PeakLog(settings.data_path / "memory.sqlite").peaks("tiny", "text2img", device)
    fitted = fit(peaks)

    assert sorted({(peak.width, peak.height, peak.count) for peak in peaks}) == [(side, side, 1) for side in SIZES]
    assert len(peaks) == len(SIZES) * RUNS
    assert fitted is not None
    for side in SIZES:
        median = statistics.median(peak.peak_gb for peak in peaks if peak.width == side)
        estimate = fitted(side * side)
        assert abs(estimate - median) <= TOLERANCE * median + TOLERANCE_GB, (side, estimate, median)
    assert restarted["source"] == "measured"
    assert restarted["activations_gb"] == pytest.approx(fitted(256 * 256), abs=1e-3)
