"""What the fault tests share: a service on the `tiny` model behind an in-memory HTTP client, and a small real
filesystem (tmpfs) that a root test mounts and removes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imageforge.bootstrap import build_service
from imageforge.config import Settings
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.service import ImageService
from imageforge.storage.audit import AuditLog
from imageforge.transports.http.app import create_app
from tests.gated import GatedBackend
from tests.loopback import LOCAL_URL

SMALL = {"width": 64, "height": 64, "steps": 1}
#: How long a test waits for a job to end: a cold model load on a busy CI machine.
WAIT_S = 60.0


@contextmanager
def serving(settings: Settings, *, gated: bool = False) -> Iterator[tuple[TestClient, ImageService, GatedBackend]]:
    """A client on a service built from `settings`, with the audit log in its data folder as `imageforge serve`
    has it; with `gated`, each denoising step waits for the test."""
    backend = GatedBackend(DiffusersBackend(device="cpu", models_path=settings.models_path))
    if not gated:
        backend.release(1_000_000)
    service = build_service(settings, backend=backend, audit=AuditLog(settings.audit_path))
    with TestClient(create_app(service), base_url=LOCAL_URL) as client:
        yield client, service, backend


@contextmanager
def mounted(target: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted at `target` with `options` (`size=4m`, `ro`), unmounted on exit; the test is skipped
    where this process may not mount (not root, or a container without the capability)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs these as root)")
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"mount is not permitted here: {done.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], check=True)


def fill(disk: Path) -> Path:
    """Write a file on `disk` until the filesystem has no space left; returns the file, whose removal frees it."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with filler.open("wb", buffering=0) as out:
        while True:
            try:
                out.write(chunk)
            except OSError:
                if len(chunk) == 1:
                    return filler
                chunk = chunk[: len(chunk) // 2]


def remount(target: Path, options: str) -> None:
    """Change the options of the tmpfs `mounted` at `target` (`ro`, `rw`) while it is in use."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(target)], check=True)


@pytest.fixture
def anyio_backend() -> str:
    """The MCP tests run on asyncio, the event loop uvicorn and the MCP SDK use."""
    return "asyncio"
