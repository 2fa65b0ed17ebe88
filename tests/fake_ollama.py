"""FakeOllama: a real HTTP server on loopback that speaks the part of Ollama's API imageforge uses, with its
failure modes, so that prompt assist is tested on its production code path (OLLAMA_URL pointing here).

What it answers follows Ollama's API documentation (docs/api.md in ollama/ollama):

- `POST /api/generate` with `"stream": false` → 200 `{"model", "created_at", "response", "done": true, ...}`,
  where `response` is the model's text (with `"format": "json"`, a JSON object as a string); without
  `"stream": false` the answer is streamed as NDJSON chunks, as Ollama does.
- a model that is not pulled → 404 `{"error": "model '<name>' not found, try pulling it first"}`.
- `GET /api/tags` → `{"models": [{"name": "gemma4:latest", "model": "gemma4:latest", ...}]}`.
- any other path → 404 `404 page not found` as text, Go's default.

A name without a tag means `:latest`, as in Ollama. Ollama itself cannot run here.
"""

from __future__ import annotations

import enum
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: What the fake adds to a request to make its expansion: deterministic, so that tests can name the result.
DETAIL = "highly detailed, soft natural light, shallow depth of field"
#: The tags the fake answers with.
TAGS = ["detailed", "soft light"]
#: The longest a held answer waits for its release: a bound on a forgotten release, never reached in a test.
HOLD_LIMIT_S = 60.0
STOP_TIMEOUT_S = 10.0


class Mode(enum.Enum):
    """How the fake answers `POST /api/generate` for a model it has."""

    #: like a pulled model: an expansion of the request (`expansion_of`) and `TAGS`
    ANSWER = "answer"
    #: holds each answer until `release` is set: slower than any client timeout a test sets
    SLOW = "slow"
    #: a 200 whose body is not JSON at all
    MALFORMED = "malformed"
    #: valid Ollama JSON whose `response` is prose, not the JSON object that was asked for
    PROSE = "prose"


def expansion_of(request: str) -> str:
    """The prompt the fake writes for a user's request (in ANSWER mode)."""
    return f"{request}, {DETAIL}"


def tagged(name: str) -> str:
    """A model name with its tag, `:latest` when it has none, as Ollama reads it."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class FakeOllama:
    """The fake's state: the models it has, how it answers, and the generate requests it got."""

    def __init__(self, models: tuple[str, ...], mode: Mode) -> None:
        #: the base URL, to use as OLLAMA_URL (set once the server has its port)
        self.url = ""
        self.models = models
        #: how the next answers are given; a test may change it between requests
        self.mode = mode
        #: the JSON bodies of the `POST /api/generate` requests, in the order they came
        self.requests: list[dict[str, Any]] = []
        #: set when a `POST /api/generate` request has arrived
        self.received = threading.Event()
        #: set to let SLOW answers go (the fixture sets it at the end of the test)
        self.release = threading.Event()
        self._lock = threading.Lock()

    @property
    def prompts(self) -> list[str]:
        """The `prompt` of each generate request, in order."""
        with self._lock:
            return [str(request.get("prompt", "")) for request in self.requests]

    def record(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)
        self.received.set()

    def has(self, model: str) -> bool:
        return tagged(model) in {tagged(name) for name in self.models}


def _handler(fake: FakeOllama) -> type[BaseHTTPRequestHandler]:
    class OllamaHandler(BaseHTTPRequestHandler):
        # Ollama is a Go server: HTTP/1.1 with keep-alive and Content-Length on every answer.
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return None  # the test's output stays the test's

        def do_GET(self) -> None:
            if self.path != "/api/tags":
                self._send(404, b"404 page not found", "text/plain")
                return
            models = [
                {
                    "name": tagged(name),
                    "model": tagged(name),
                    "modified_at": "2025-01-01T00:00:00Z",
                    "size": 3_338_801_804,
                    "digest": "0" * 64,
                    "details": {"format": "gguf", "family": "gemma", "parameter_size": "4B"},
                }
                for name in fake.models
            ]
            self._json(200, {"models": models})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path != "/api/generate":
                self._send(404, b"404 page not found", "text/plain")
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._json(400, {"error": "invalid JSON"})
                return
            fake.record(body)
            model = str(body.get("model") or "")
            if not model:
                self._json(400, {"error": "model is required"})
                return
            if not fake.has(model):
                self._json(404, {"error": f"model '{model}' not found, try pulling it first"})
                return
            self._generate(model, str(body.get("prompt", "")), stream=body.get("stream", True) is not False)

        def _generate(self, model: str, prompt: str, *, stream: bool) -> None:
            mode = fake.mode
            if mode is Mode.SLOW:
                fake.release.wait(HOLD_LIMIT_S)
            if mode is Mode.MALFORMED:
                self._send(200, b'{"model": "' + model.encode() + b'", "response": ', "application/json")
                return
            if mode is Mode.PROSE:
                text = "Sure! Here is a more detailed prompt: a fox, in the snow, very detailed."
            else:
                text = json.dumps({"prompt": expansion_of(_request_of(prompt)), "tags": TAGS})
            final = {
                "model": model,
                "created_at": datetime.now(UTC).isoformat(),
                "response": text,
                "done": True,
                "done_reason": "stop",
                "total_duration": 1_000_000,
                "eval_count": len(text.split()),
            }
            if not stream:
                self._json(200, final)
                return
            chunks = [{"model": model, "response": word, "done": False} for word in text.split(" ")]
            lines = [*chunks, {**final, "response": ""}]
            self._send(200, b"".join(json.dumps(line).encode() + b"\n" for line in lines), "application/x-ndjson")

        def _json(self, status: int, body: dict[str, Any]) -> None:
            self._send(status, json.dumps(body).encode(), "application/json; charset=utf-8")

        def _send(self, status: int, payload: bytes, content_type: str) -> None:
            # A client that timed out has closed the connection by the time a held answer goes.
            with suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

    return OllamaHandler


def _request_of(instruction: str) -> str:
    """The user's request inside imageforge's instruction (after `Request: `), else the whole instruction."""
    for line in instruction.splitlines():
        if line.startswith("Request: "):
            return line.removeprefix("Request: ")
    return instruction


@contextmanager
def serving_fake_ollama(models: tuple[str, ...] = ("gemma4:latest",), mode: Mode = Mode.ANSWER) -> Iterator[FakeOllama]:
    """A fake Ollama on a free loopback port that has `models` pulled, until the block ends."""
    fake = FakeOllama(models, mode)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    # serve_forever notices shutdown() between selector waits; short waits keep each test's teardown short.
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-ollama", daemon=True
    )
    thread.start()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=STOP_TIMEOUT_S)
        assert not thread.is_alive(), "the fake Ollama did not stop"


@contextmanager
def refusing_url() -> Iterator[str]:
    """A loopback URL whose port refuses connections (Ollama not running), held so nothing else takes it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        # Bound but never listening: the kernel refuses every connection to it at once.
        bound.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{bound.getsockname()[1]}"
