"""Fixtures for the stable-diffusion.cpp engine's tests: a real `sd-server` (the cached build, built here when it is
missing and can be) on the random-weight sd-turbo model of `tests/sdcpp/model.py`, behind a real service."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_sdcpp_backend, build_service
from imageforge.config import Settings
from imageforge.engine.backends.sdcpp.binary import BuildFailed, build, find_server, missing_tools
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.gated import GatedBackend
from tests.loopback import LOCAL_URL
from tests.sdcpp.model import build_sd_turbo, cached_model_dir

MODEL = "sdcpp-turbo"
#: 64x64, one step: the smallest job sd.cpp runs, a few seconds on a CPU.
SMALL = {"model": MODEL, "width": 64, "height": 64, "steps": 1}
WAIT_S = 120.0


@pytest.fixture(scope="session")
def sd_server() -> Path:
    """The `sd-server` binary: on the PATH or cached, else built now (minutes; `./start.sh test` builds it first).
    The tests are skipped only when there is none and this machine cannot build one."""
    found = find_server()
    if found is not None:
        return found
    missing = missing_tools()
    if missing:
        pytest.skip(f"no sd-server, and it cannot be built here: missing {', '.join(missing)}")
    try:
        return build()
    except BuildFailed as exc:
        pytest.skip(f"no sd-server, and building it failed: {exc}")


@pytest.fixture(scope="session")
def sd_turbo() -> Path:
    """The random-weight sd-turbo diffusers folder sd.cpp loads, built once into the user's cache."""
    return build_sd_turbo(cached_model_dir())


@pytest.fixture
def sdcpp_settings(settings: Settings, sd_server: Path, sd_turbo: Path, tmp_path: Path) -> Settings:
    """The test's settings with a models-file entry that runs the random sd-turbo on stable-diffusion.cpp."""
    models_file = tmp_path / "models.toml"
    models_file.write_text(
        f'[models.{MODEL}]\nbackend = "sdcpp"\nfamily = "sd"\nmodel = "{sd_turbo}"\nsteps = 1\nguidance = 1.0\n'
        'size = 64\nmemory_gb = 3.0\ntasks = ["text2img", "img2img", "inpaint"]\n'
    )
    return settings.model_copy(update={"models_file": models_file, "sdcpp_server": sd_server})


@pytest.fixture
def sdcpp_client(sdcpp_settings: Settings) -> Iterator[TestClient]:
    """An HTTP client on a service whose sdcpp model runs in a real sd-server child."""
    service = build_service(sdcpp_settings)
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        yield client


@pytest.fixture
def sdcpp_gated(sdcpp_settings: Settings) -> Iterator[tuple[TestClient, GatedBackend]]:
    """An HTTP client whose sdcpp jobs hold at each step the child reports until the test releases them."""
    backend = GatedBackend(build_sdcpp_backend(sdcpp_settings))
    service = build_service(sdcpp_settings, sdcpp=backend)
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        try:
            yield client, backend
        finally:
            backend.release(1000)


@pytest.fixture
def sdcpp_service(sdcpp_settings: Settings) -> Iterator[ImageService]:
    service = build_service(sdcpp_settings)
    service.start()
    yield service
    service.close()


def sd_server_children() -> list[int]:
    """The process ids of the `sd-server` children of this test process (read from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, parent = stat[stat.rindex(")") + 2 :].split()[:2]
        if name == "sd-server" and int(parent) == os.getpid() and state != "Z":
            children.append(int(entry.name))
    return children


def wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds, failing after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
