"""A webhook receiver on loopback: a small threaded HTTP server in the test process that records each request
and answers with the statuses the test scripts (200 once they run out)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: Where a scripted redirect points: a receiver that follows it would record a request there.
REDIRECT_PATH = "/elsewhere"
WAIT_S = 60.0


@dataclass(frozen=True)
class Received:
    """One request as the receiver read it."""

    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """Records requests; answers each with the next scripted status (a 3xx with a Location to `REDIRECT_PATH`)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.received: list[Received] = []
        self.port = 0
        #: cleared, the receiver holds each answer until it is set again (a receiver that hangs)
        self.gate = threading.Event()
        self.gate.set()
        self._changed = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def record(self, request: Received) -> int:
        with self._changed:
            self.received.append(request)
            self._changed.notify_all()
            return self.statuses.pop(0) if self.statuses else 200

    def wait_for(self, count: int) -> list[Received]:
        """The first `count` requests, once they have come."""
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.received) >= count, WAIT_S), self.received
            return self.received[:count]


@contextmanager
def receiving(statuses: list[int] | None = None) -> Iterator[Receiver]:
    """A `Receiver` listening on a free loopback port until the block ends."""
    receiver = Receiver(list(statuses or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            status = receiver.record(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            receiver.gate.wait(WAIT_S)
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("location", f"http://127.0.0.1:{receiver.port}{REDIRECT_PATH}")
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # where a followed 302 would go
            self.do_POST()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.gate.set()
        server.shutdown()
        server.server_close()
        thread.join()
