"""A real `imageforge serve` subprocess on loopback, started and stopped the way a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydantic import AliasChoices

from imageforge.config import Settings

#: The console script installed beside the interpreter running the tests.
IMAGEFORGE = Path(sys.executable).parent / "imageforge"
#: Long enough for a cold start on a slow CI machine (the first /health imports torch).
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class Server:
    """One running `imageforge serve`: its process, address, working folder and log files."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    cwd: Path
    stdout: Path
    stderr: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def logs(self) -> tuple[str, str]:
        """What the server wrote so far: (stdout, stderr)."""
        return self.stdout.read_text(errors="replace"), self.stderr.read_text(errors="replace")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _settings_variables() -> set[str]:
    """Every environment name `Settings` may read (upper-cased: the lookup ignores case), so that none leaks
    in from the machine running the tests."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        if isinstance(field.validation_alias, AliasChoices):
            names.update(choice.upper() for choice in field.validation_alias.choices if isinstance(choice, str))
    return names


def user_environment(data_dir: Path) -> dict[str, str]:
    """A user's shell with imageforge's environment activated, the offline `tiny` model as the default,
    no Hub access and no Ollama (port 9 is the discard port)."""
    leaked = _settings_variables()
    env = {name: value for name, value in os.environ.items() if name.upper() not in leaked}
    env.update(
        IMAGEFORGE_MODEL="tiny",
        IMAGEFORGE_DATA_DIR=str(data_dir),
        HF_HUB_OFFLINE="1",
        OLLAMA_URL="http://127.0.0.1:9",
        # This busy machine's free RAM is not the tests' to depend on (tests/conftest.py).
        IMAGEFORGE_MEMORY_ADMISSION="0",
        PATH=os.pathsep.join([str(IMAGEFORGE.parent), env.get("PATH", "")]),
    )
    return env


def wait_until_healthy(server: Server, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll /health until it answers 200, the process dies, or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{server.url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        try:
            # Paces the polling and notices at once a server that exited (a taken port, a bad setting).
            server.process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
        pytest.fail(f"imageforge serve exited with {server.process.returncode}:\n{server.logs()[1]}")
    pytest.fail(f"imageforge serve was not healthy within {timeout_s:.0f}s:\n{server.logs()[1]}")


def stop(process: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGTERM) -> int:
    """Send `sig` and wait for the exit; kill the process if it does not stop in time."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            return process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    return process.returncode


def private_data(root: Path, shared: Path) -> Path:
    """A data folder of one server's own under `root` (one process owns a job database at a time), sharing
    the session's built models from `shared`."""
    own = root / "data"
    own.mkdir()
    (shared / "models").mkdir(exist_ok=True)
    (own / "models").symlink_to(shared / "models", target_is_directory=True)
    return own


@contextmanager
def serving(
    root: Path, data_dir: Path, *args: str, port: int | None = None, settings: Mapping[str, str] | None = None
) -> Iterator[Server]:
    """`imageforge serve --port <port> *args` in `root/cwd`, healthy on entry and always stopped on exit.

    `port` defaults to a free one; a test that restarts a server passes the first one's again. `settings` are
    environment variables added to the user's.
    """
    cwd = root / "cwd"
    cwd.mkdir()
    port = port or free_port()
    host = args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"
    env = {**user_environment(data_dir), **(settings or {})}
    stdout, stderr = root / "stdout.log", root / "stderr.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            [str(IMAGEFORGE), "serve", "--port", str(port), *args], cwd=cwd, env=env, stdout=out, stderr=err
        )
    server = Server(process=process, host=host, port=port, cwd=cwd, stdout=stdout, stderr=stderr, env=env)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        stop(process)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Server]:
    """One server with the default host, shared by a module's tests."""
    root = tmp_path_factory.mktemp("server")
    with serving(root, private_data(root, data_dir)) as running:
        yield running
