"""A cluster of real processes on loopback for the distributed queue: Redis, `imageforge worker`s and
`imageforge serve --queue` API nodes sharing one data folder, as separate machines would share a network folder.

Each process is described by a `ProcessSpec` (its command line, and how it says it is ready: a line on its
stderr, or /health answering on its port); `Cluster` starts them, keeps each one's output in a log file, kills
them one by one (SIGKILL to the whole process group, as a machine dying would) and all of them at the end.
Nothing here depends on pytest, so the benchmarks drive the same processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.contract.conftest import IMAGEFORGE, free_port, user_environment
from tests.redis_server import RedisServer

#: What `imageforge worker` writes on its stderr once it consumes jobs.
WORKER_READY = "imageforge worker ready"
#: A cold start on a busy 2-core machine: importing torch and Celery, loading the model.
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0


class ClusterError(RuntimeError):
    """A process of the cluster did not start, or ended where it should have run; the message holds its log."""


@dataclass(frozen=True)
class ProcessSpec:
    """How to start one process and tell that it is ready: `ready_line` on its stderr, or /health on `port`."""

    name: str
    command: tuple[str, ...]
    ready_line: str | None = None
    port: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)


class Process:
    """One started process of the cluster, with its output kept in `log` (stdout and stderr, line by line)."""

    def __init__(self, spec: ProcessSpec, cwd: Path, env: Mapping[str, str]) -> None:
        self.spec = spec
        self.log = cwd.parent / f"{spec.name}.log"
        #: Set when the ready line appears, or when the output ends (the process is gone or going).
        self._ready_or_ended = threading.Event()
        self._said_ready = False
        self._group_killed = False
        # Its own process group, so that a kill reaches the children it forks (Celery's pool) too.
        self.popen = subprocess.Popen(
            list(spec.command),
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"{spec.name}-log", daemon=True)
        self._reader.start()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        """The HTTP address of a process started with a port (an API node)."""
        assert self.spec.port is not None, f"{self.name} serves no HTTP"
        return f"http://127.0.0.1:{self.spec.port}"

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Return once the process says it is ready; `ClusterError` with its log if it exits or takes too long."""
        if self.spec.ready_line is not None:
            self._ready_or_ended.wait(timeout_s)
            if self._said_ready and self.alive:
                return
            if self._ready_or_ended.is_set():
                with suppress(subprocess.TimeoutExpired):
                    self.popen.wait(STOP_TIMEOUT_S)  # for its exit code
                raise ClusterError(self.trouble("exited"))
        elif self.spec.port is not None:
            self._wait_healthy(timeout_s)
            return
        raise ClusterError(self.trouble(f"was not ready within {timeout_s:.0f}s"))

    def kill9(self) -> None:
        """SIGKILL the process and everything it started, at once, and reap it."""
        self._kill_group()
        self.popen.wait(STOP_TIMEOUT_S)
        self._reader.join(STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it; whatever is left after the grace time is killed."""
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_TIMEOUT_S)
        self._kill_group()  # children that outlived their parent
        self.popen.wait(STOP_TIMEOUT_S)
        self._reader.join(STOP_TIMEOUT_S)

    def _kill_group(self) -> None:
        # Once only: after that the group's id is free and may one day name someone else's processes.
        if self._group_killed:
            return
        self._group_killed = True
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def _read(self) -> None:
        assert self.popen.stdout is not None
        marker = self.spec.ready_line.encode() if self.spec.ready_line else None
        with self.popen.stdout, self.log.open("wb") as log:
            for line in self.popen.stdout:
                log.write(line)
                log.flush()
                if marker is not None and marker in line:
                    self._said_ready = True
                    self._ready_or_ended.set()
        self._ready_or_ended.set()

    def _wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:
                # Paces the polling and notices at once a process that exited (a taken port, a bad setting).
                self.popen.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            raise ClusterError(self.trouble("exited"))
        raise ClusterError(self.trouble(f"was not healthy within {timeout_s:.0f}s"))

    def trouble(self, what: str) -> str:
        """`what` happened to this process, with its exit code and log."""
        code = self.popen.poll()
        exit_note = f" (exit code {code})" if code is not None else ""
        return f"{self.name} {what}{exit_note}; its log:\n{self.logs()}"


class Cluster:
    """Redis, workers and API nodes on loopback, all with one shared folder (`shared`: data, outputs, cache)
    under `root`, and each with its own working folder."""

    def __init__(self, root: Path, models: Path, redis: RedisServer, settings: Mapping[str, str] | None = None):
        self.root = root
        self.redis = redis
        self.shared = root / "shared"
        self.data = self.shared / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        if not (self.data / "models").exists():
            # The session's built models, shared: the tiny model is built once, not per cluster.
            (self.data / "models").symlink_to(models, target_is_directory=True)
        self.settings = dict(settings or {})
        self.processes: list[Process] = []
        self._started: Counter[str] = Counter()

    @property
    def queue_url(self) -> str:
        return self.redis.url

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A user's environment with the shared folders, the cluster's settings and `extra`."""
        # Outputs and cache default to folders under each process's working folder: a deployment points every
        # node at the shared ones, as deploy/ does.
        shared = {
            "IMAGEFORGE_OUTPUT_DIR": str(self.shared / "outputs"),
            "IMAGEFORGE_CACHE_DIR": str(self.shared / "cache"),
        }
        return {**user_environment(self.data), **shared, **self.settings, **(extra or {})}

    def start(self, spec: ProcessSpec) -> Process:
        """Start `spec` in its own working folder and return once it is ready."""
        cwd = self.root / spec.name
        cwd.mkdir(parents=True)
        process = Process(spec, cwd, self.environment(spec.env))
        self.processes.append(process)
        process.wait_ready()
        return process

    def worker(self, *options: str, env: Mapping[str, str] | None = None) -> Process:
        """`imageforge worker --queue <redis> *options`, ready once it consumes jobs."""
        name = self._name("worker")
        command = (str(IMAGEFORGE), "worker", "--queue", self.queue_url, *options)
        return self.start(ProcessSpec(name, command, ready_line=WORKER_READY, env=env or {}))

    def api(self, *options: str, env: Mapping[str, str] | None = None) -> Process:
        """`imageforge serve --queue <redis>` on a free loopback port, ready once /health answers."""
        name = self._name("api")
        port = free_port()
        command = (str(IMAGEFORGE), "serve", "--queue", self.queue_url, "--port", str(port), *options)
        return self.start(ProcessSpec(name, command, port=port, env=env or {}))

    def worker_running(self, job_id: str, api: Process, timeout_s: float = READY_TIMEOUT_S) -> Process:
        """The worker process that runs `job_id`, as `api`'s /health reports it (workers report every few
        seconds), found by the name its log starts with (Celery's banner: `NAME@host`)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            queue = httpx.get(f"{api.url}/health", timeout=10.0).json()["queue"]
            names = [seen["name"] for seen in queue["workers"] if seen.get("job") == job_id]
            for process in self.processes:
                # A killed worker's last report outlives it by a few seconds: only a live one can run the job.
                alive = process.name.startswith("worker-") and process.alive
                if alive and any(f"{name}@" in process.logs() for name in names):
                    return process
            try:
                api.popen.wait(timeout=0.2)  # paces the polling; returns only if the API node died
            except subprocess.TimeoutExpired:
                continue
            raise ClusterError(api.trouble("exited"))
        raise ClusterError(f"no worker reported running {job_id} within {timeout_s:.0f}s:\n{self.logs()}")

    def kill9(self, process: Process) -> None:
        """Kill one process as a crash of its machine would: no clean-up, no goodbye to Redis."""
        process.kill9()

    def restart_redis(self) -> None:
        """Stop Redis as a service manager would and start it again on the same port and data (append-only)."""
        self.redis.restart()

    def close(self) -> None:
        """Stop every process, API nodes first so that none hands out work while the workers go."""
        for process in sorted(self.processes, key=lambda p: not p.name.startswith("api-")):
            process.stop()

    def _name(self, kind: str) -> str:
        self._started[kind] += 1
        return f"{kind}-{self._started[kind]}"

    def logs(self) -> str:
        """Each process's log under its name, for a failed test's report."""
        return "\n".join(f"----- {process.name} -----\n{process.logs()}" for process in self.processes)


@contextmanager
def running_cluster(
    root: Path, models: Path, redis: RedisServer, settings: Mapping[str, str] | None = None
) -> Iterator[Cluster]:
    """A `Cluster` whose processes are all stopped when the block ends, however it ends."""
    cluster = Cluster(root, models, redis, settings)
    try:
        yield cluster
    finally:
        cluster.close()
