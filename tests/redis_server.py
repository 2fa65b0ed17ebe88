"""A real `redis-server` (Debian's package) on a free loopback port, for the distributed queue's tests.

Each server keeps its data (append-only file) in its own folder, so a test can stop, kill or restart it and see
what survives, as Redis with persistence on would in production.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
READY_S = 30.0
STOP_S = 30.0
_READY = b"Ready to accept connections"


class RedisServer:
    """One redis-server process at a time on one port and data folder; `url` stays valid across restarts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        """Start the server and return once it accepts connections."""
        assert self._process is None, "already running"
        self.folder.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        ready = threading.Event()
        log: list[bytes] = []

        def read() -> None:
            assert process.stdout is not None
            with process.stdout:
                for line in process.stdout:
                    log.append(line)
                    if _READY in line:
                        ready.set()
            ready.set()  # the process ended: start() reports it

        reader = threading.Thread(target=read, name="redis-log", daemon=True)
        reader.start()
        if not ready.wait(READY_S) or process.poll() is not None:
            process.kill()
            process.wait(STOP_S)
            reader.join(STOP_S)
            raise RuntimeError("redis-server did not start:\n" + b"".join(log).decode(errors="replace"))
        self._process, self._reader = process, reader

    def stop(self) -> None:
        """Stop the server the way a service manager does (SIGTERM: it finishes its writes)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash or power loss would."""
        self._end(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _end(self, how: signal.Signals) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.send_signal(how)
        process.wait(STOP_S)
        if self._reader is not None:
            self._reader.join(STOP_S)  # it closes the server's output at its end


@contextmanager
def running_redis(folder: Path) -> Iterator[RedisServer]:
    """A started `RedisServer` in `folder`, stopped when the block ends; skips the test without redis-server."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed (./start.sh test installs it with apt-get)")
    server = RedisServer(folder)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _free_port() -> int:
    # Another process may take the port between here and redis-server's bind; on a test machine that is rare,
    # and start() then fails loudly rather than talking to someone else's server.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
