"""`SdServer`: one `sd-server` child process on a private loopback port, and what it prints.

sd-server loads its model before it listens, so "answers HTTP" means "loaded". Its job API reports a job's state
(queued, generating, completed, failed, cancelled) but no step; the library prints each sampling step to stdout
instead (`|=====>    | 3/20 - 1.25s/it`), which the reader thread turns into step events (ADR 0027).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import threading
from collections import deque
from pathlib import Path

import httpx

log = logging.getLogger(__name__)

#: A sampling step as the library prints it: "<bar> 3/20 - 1.25s/it" (or "it/s"); loading prints "MB/s" instead.
_STEP = re.compile(r"(\d+)/(\d+) - [\d.]+(?:s/it|it/s)")
#: What the library prints once it has applied a LoRA: "(256 / 256) LoRA tensors have been applied, lora_file_path = …".
_LORA_APPLIED = re.compile(r"\((\d+) / (\d+)\) LoRA tensors have been applied, lora_file_path = (.+)$")
#: How much of the child's output an error message quotes.
_TAIL_LINES = 30
#: How often a start checks whether the child answers yet.
_READY_POLL_S = 0.1


class ChildFailed(RuntimeError):
    """The child exited or could not start; the message carries its last output."""


class SdServer:
    """An `sd-server` process for one model, on 127.0.0.1 at a free port, with a client to it.

    While it runs, a file in `records` names it (`<child pid>.json`: this process's pid and the binary), so that a
    later imageforge can stop a child left behind when this one was killed (`stop_orphans`).
    """

    def __init__(
        self,
        binary: Path,
        arguments: list[str],
        *,
        name: str,
        records: Path | None = None,
        request_timeout_s: float = 30.0,
    ) -> None:
        self._binary = binary
        self._request_timeout_s = request_timeout_s
        self._arguments = arguments
        self._name = name
        self._records = records
        self._record: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)
        #: (step, total) as the child prints them, for the job in hand to drain
        self.steps: queue.Queue[tuple[int, int]] = queue.Queue()
        #: "applied/total" LoRA tensors by LoRA file name, as printed since `clear_lora_reports`
        self._lora_reports: dict[str, str] = {}
        self._reports_changed = threading.Condition()
        self.client: httpx.Client | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return None if self._process is None else self._process.pid

    def start(self, timeout_s: float) -> None:
        """Start the child and wait until it answers (its model loaded); `ChildFailed` when it exits first or
        does not answer within `timeout_s`."""
        port = _free_port()
        command = [str(self._binary), *self._arguments, "--listen-ip", "127.0.0.1", "--listen-port", str(port)]
        log.info("starting %s for %s on port %d", self._binary.name, self._name, port)
        log.debug("command: %s", command)
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # its own process group: a terminal's Ctrl-C reaches imageforge, which stops the child itself
            start_new_session=True,
        )
        threading.Thread(target=self._read, name=f"sdcpp-{self._name}-output", daemon=True).start()
        if self._records is not None:
            self._records.mkdir(parents=True, exist_ok=True)
            self._record = self._records / f"{self._process.pid}.json"
            self._record.write_text(json.dumps({"parent": os.getpid(), "binary": str(self._binary)}))
        # Local and private: no proxy from the environment may stand between us and the child.
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}", timeout=self._request_timeout_s, trust_env=False
        )
        waited = 0.0
        while True:
            try:
                if self.client.get("/sdcpp/v1/capabilities").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            try:
                code = self._process.wait(timeout=_READY_POLL_S)
            except subprocess.TimeoutExpired:
                waited += _READY_POLL_S
                if waited >= timeout_s:
                    self.stop()
                    raise ChildFailed(f"sd-server did not answer within {timeout_s:g}s. {self.output_tail()}") from None
                continue
            self.stop()
            raise ChildFailed(f"sd-server exited with code {code} while loading. {self.output_tail()}")

    def alive(self) -> bool:
        """Whether the child is running."""
        return self._process is not None and self._process.poll() is None

    def wait(self, timeout_s: float) -> int | None:
        """The child's exit code once it has ended, waiting up to `timeout_s` for that (negative: the signal that
        ended it); None while it still runs."""
        if self._process is None:
            return None
        try:
            return self._process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def clear_lora_reports(self) -> None:
        """Forget the LoRA reports printed so far (before a job starts)."""
        with self._reports_changed:
            self._lora_reports.clear()

    def lora_reports(self, files: set[str], wait_s: float = 2.0) -> dict[str, str]:
        """How many tensors of each LoRA file the child applied since `clear_lora_reports` ("256/256" by file
        name), waiting up to `wait_s` for the reader to reach the report of each of `files` (printed before the
        job's first step, so normally read long before the job ends)."""
        with self._reports_changed:
            self._reports_changed.wait_for(lambda: files <= self._lora_reports.keys(), timeout=wait_s)
            return dict(self._lora_reports)

    def output_tail(self) -> str:
        """The child's last lines of output, for error messages."""
        lines = [line for line in self._tail if line.strip()]
        return "Its last output: " + " | ".join(lines[-8:]) if lines else "It printed nothing."

    def stop(self, grace_s: float = 5.0) -> None:
        """End the child: SIGTERM, then SIGKILL after `grace_s`; the weights' memory goes with it."""
        process, self._process = self._process, None
        if self.client is not None:
            self.client.close()
            self.client = None
        if self._record is not None:
            self._record.unlink(missing_ok=True)
            self._record = None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass
        log.info("stopped sd-server for %s", self._name)

    def _read(self) -> None:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        pending = b""
        # Progress lines end in "\r", log lines in "\n": split on both, as they come.
        for chunk in iter(lambda: os.read(process.stdout.fileno(), 4096), b""):  # type: ignore[union-attr]
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]", pending)
            for raw in lines:
                self._line(raw.decode(errors="replace"))
        if pending:
            self._line(pending.decode(errors="replace"))
        process.stdout.close()

    def _line(self, line: str) -> None:
        match = _STEP.search(line)
        if match:
            self.steps.put((int(match.group(1)), int(match.group(2))))
            return
        applied = _LORA_APPLIED.search(line.strip())
        if applied:
            with self._reports_changed:
                self._lora_reports[Path(applied.group(3)).name] = f"{applied.group(1)}/{applied.group(2)}"
                self._reports_changed.notify_all()
        if line.strip():
            self._tail.append(line.strip())
            log.debug("sd-server[%s]: %s", self._name, line.rstrip())


def stop_orphans(records: Path) -> list[int]:
    """Stop the children that an imageforge no longer running left behind (killed with SIGKILL, it could not stop
    them): each record whose parent process is gone names a child that would otherwise hold its model's memory
    for good. Returns the pids stopped. A record whose pid now belongs to another program is only removed."""
    stopped = []
    for record in records.glob("*.json") if records.is_dir() else ():
        try:
            child, entry = int(record.stem), json.loads(record.read_text())
            parent, binary = int(entry["parent"]), str(entry["binary"])
        except (OSError, ValueError, KeyError, TypeError):
            record.unlink(missing_ok=True)
            continue
        if _running(parent):
            continue
        if _command(child)[:1] == [binary]:
            try:
                os.kill(child, signal.SIGKILL)
                stopped.append(child)
                log.warning("stopped sd-server %d, left behind by imageforge process %d", child, parent)
            except ProcessLookupError:
                pass
        record.unlink(missing_ok=True)
    return stopped


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _free_port() -> int:
    """A loopback port free now; the child binds it a moment later (a race lost is a start that fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
