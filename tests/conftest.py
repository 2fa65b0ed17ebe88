"""Shared fixtures: real components on small data, isolated from the developer's environment."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from tests.loopback import LOCAL_URL

_BARE_NAMES = {
    "DEVICE", "HOST", "PORT", "OLLAMA_URL", "OLLAMA_MODEL", "OUTPUT_DIR", "CACHE_DIR", "MAX_RES",
    "ALLOW_FLUX", "ALLOW_KLEIN", "ALLOW_QWEN_IMAGE", "WARMUP",
}  # fmt: skip


#: The test report property holding one line about the fuzz run (transports/http/test_fuzz.py), printed in the
#: terminal summary so that CI's log shows how much was fuzzed. A report property, not the config's stash: with
#: pytest-xdist the test runs in a worker process, and only its reports reach the terminal.
FUZZ_SUMMARY = "fuzz_summary"


def pytest_configure(config: pytest.Config) -> None:
    # One torch thread per process, this one's and every server's it starts (they inherit the environment): the
    # tests' models are small, and the test processes already share the cores, so more threads only contend for
    # them (OpenMP's spinning threads took 2-4x the CPU time on a busy 2-core machine). Before any torch import:
    # torch reads it once. A developer's own OMP_NUM_THREADS is kept.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for name, value in getattr(report, "user_properties", ()):
                if name == FUZZ_SUMMARY:
                    terminalreporter.write_line(str(value))


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the machine running the tests leaks into them."""
    for name in list(os.environ):
        if name.startswith("IMAGEFORGE_") or name in _BARE_NAMES:
            monkeypatch.delenv(name)
    # Nothing in the tests may reach the Hub; the loading code still runs its real offline path.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Admission by memory compares with this machine's free RAM, which other processes of a busy CI machine take:
    # off, for servers started here too, except where a test sets what is free (tests/fixed_memory.py).
    monkeypatch.setenv("IMAGEFORGE_MEMORY_ADMISSION", "0")


@pytest.fixture(autouse=True)
def _long_lived_objects_frozen() -> None:
    """Whatever is alive when a test starts (imported modules, session and module fixtures) is left out of the
    garbage collector's full collections: unloading a model calls gc.collect(), which would otherwise walk the
    whole heap of torch, diffusers and the test tools after every test that generated (a quarter of a second).
    Refcounting still frees those objects; only cycles among them are never collected, which a test run can
    spare."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder per test session, so the `tiny` model is built once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def settings(tmp_path: Path, data_dir: Path) -> Settings:
    """Settings for one test: its own folders and job database, sharing the session's built models."""
    own_data = tmp_path / "data"
    own_data.mkdir()
    (data_dir / "models").mkdir(exist_ok=True)
    (own_data / "models").symlink_to(data_dir / "models", target_is_directory=True)
    return Settings(
        _env_file=None,
        default_model="tiny",
        root_dir=tmp_path,
        data_dir=own_data,
        ollama_url="http://127.0.0.1:9",  # nothing listens on the discard port
    )


@pytest.fixture
def service(settings: Settings) -> Iterator[ImageService]:
    service = build_service(settings)
    service.start()
    yield service
    service.close()


@pytest.fixture
def client(service: ImageService, settings: Settings) -> Iterator[TestClient]:
    app = create_app(service, max_body_bytes=int(settings.max_body_mb * 1024 * 1024))
    with TestClient(app, base_url=LOCAL_URL) as client:
        yield client


#: The LoRAs `loras` puts in a test's LoRA folder: two random ones for the `tiny` model, and a pickled file.
LORAS = ("one", "two")
PICKLED_LORA = "pickled"


@pytest.fixture(scope="session")
def tiny_loras(data_dir: Path) -> Path:
    """Two random LoRAs for the `tiny` model (`one.safetensors`, `two.safetensors`), built once per session."""
    from imageforge.engine.backends import tiny

    folder = data_dir / "lora-builds"
    if not folder.is_dir():
        base = tiny.build_tiny_sd(data_dir / "models" / "tiny")
        building = data_dir / "lora-builds.partial"
        building.mkdir()
        for seed, name in enumerate(LORAS, start=1):
            tiny.build_tiny_sd_lora(base, building / f"{name}.safetensors", seed=seed)
        building.rename(folder)
    return folder


@pytest.fixture
def loras(settings: Settings, tiny_loras: Path) -> Path:
    """The test's LoRA folder (IMAGEFORGE_LORA_DIR's default) with `one`, `two` and `pickled.ckpt` in it."""
    folder = settings.lora_path
    folder.mkdir(parents=True)
    for name in LORAS:
        (folder / f"{name}.safetensors").write_bytes((tiny_loras / f"{name}.safetensors").read_bytes())
    (folder / f"{PICKLED_LORA}.ckpt").write_bytes(b"\x80\x04not really a pickle")
    return folder
