"""A real uvicorn server on loopback, in a thread of the test process: the HTTP API as a remote client meets it,
with the service still at hand for the test (a gated backend, the job list)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import urlsplit

import uvicorn
from fastapi import FastAPI

STOP_TIMEOUT_S = 20.0


@contextmanager
def serving_app(app: FastAPI) -> Iterator[str]:
    """Serve `app` on a free loopback port until the block ends; yields the base URL.

    The socket listens before the server thread starts, so a request sent at once waits in the backlog
    instead of being refused: no polling for readiness.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port: int = listener.getsockname()[1]
    # log_config=None leaves the test process's logging as it is; ws="none" loads no websocket library.
    config = uvicorn.Config(app, log_config=None, log_level="warning", ws="none", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="loopback-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=STOP_TIMEOUT_S)
        listener.close()
        assert not thread.is_alive(), "the loopback server did not stop"


#: The base URL of in-process test clients (Starlette's TestClient): a host name a loopback server answers to.
#: Its default, http://testserver, is a foreign Host that the server refuses.
LOCAL_URL = "http://localhost"


def post_unanswered(
    url: str, path: str, body: dict[str, object], *, headers: Mapping[str, str] = {}, timeout: float
) -> socket.socket:
    """POST `body` as JSON on a raw socket and return the open connection without reading the answer: closing it
    is a client hanging up mid-request, which an HTTP client library does not let a test do at a chosen moment."""
    address = urlsplit(url)
    assert address.hostname is not None
    assert address.port is not None
    payload = json.dumps(body).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    connection = socket.create_connection((address.hostname, address.port), timeout=timeout)
    connection.sendall(head + payload)
    return connection
