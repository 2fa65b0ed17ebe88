"""PromptAssistant: expands a short prompt through Ollama's HTTP API, or passes it through unchanged.

Assist never blocks a generation: when Ollama is down, slow, missing the model or answers garbage, the
original prompt is used and the result says why (`source="passthrough"`, `reason`). The parts of Ollama's API
used are `POST /api/generate` (with `"stream": false` and `"format": "json"`, answering
`{"response": "<the model's JSON as a string>", ...}`, or 404 `{"error": "model '…' not found"}`) and
`GET /api/tags` (`{"models": [{"name": "gemma4:latest", ...}]}`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from typing import Any

import httpx

from imageforge.domain import ASSIST_SOURCE_OLLAMA, ASSIST_SOURCE_PASSTHROUGH, AssistResult
from imageforge.metrics import Metrics

log = logging.getLogger(__name__)

#: How long to wait for Ollama to accept the connection: a local server accepts at once or not at all.
CONNECT_TIMEOUT_S = 2.0
#: How many expansions are kept; each is a few hundred bytes.
CACHE_SIZE = 256
#: Longer answers are runaway generations, not prompts (the service refuses prompts over this length too).
MAX_EXPANSION_CHARS = 4000
#: A model asked for "tags" sometimes returns dozens; more than this says nothing more.
MAX_TAGS = 20

_INSTRUCTION = (
    "Rewrite the user's image request as one detailed prompt for a diffusion image model: subject, setting, "
    "style, lighting, composition. Keep every element the user asked for. Answer with JSON only: "
    '{{"prompt": "...", "tags": ["...", "..."]}}.\nRequest: {prompt}'
)
_STYLE = "\nRender it in this style: {style}"

#: A cache key: the prompt, the style (None for none) and the Ollama model that expanded it.
_Key = tuple[str, str | None, str]


class PromptAssistant:
    """A client for one Ollama server and model, with a bounded cache of the expansions it got.

    Only expansions are cached: a passthrough is not, so that the next request notices Ollama coming back. Each
    call is counted in `metrics` by outcome (`assisted`, `passed_through`).
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        timeout_s: float = 20.0,
        probe_timeout_s: float = 1.0,
        cache_size: int = CACHE_SIZE,
        metrics: Metrics | None = None,
    ) -> None:
        # Ollama's own OLLAMA_HOST takes `host:port` alone; so does this.
        self.url = (url if "://" in url else f"http://{url}").rstrip("/")
        self.model = model
        self._timeout = httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s))
        self._timeout_s = timeout_s
        self._probe_timeout_s = probe_timeout_s
        self._cache: OrderedDict[_Key, AssistResult] = OrderedDict()
        self._cache_size = cache_size
        self._metrics = metrics or Metrics()
        # Jobs run in the queue's worker while requests call `expand` from the server's threads.
        self._lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        """Reachability of the server and whether the model is pulled; unreachable is a state, not an error."""
        report: dict[str, Any] = {"reachable": False, "url": self.url, "model": self.model, "model_available": False}
        try:
            response = httpx.get(f"{self.url}/api/tags", timeout=self._probe_timeout_s)
            response.raise_for_status()
            models = response.json()["models"]
            names = {entry.get("name") for entry in models} | {entry.get("model") for entry in models}
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, KeyError, TypeError, AttributeError):
            return report
        report["reachable"] = True
        report["model_available"] = _tagged(self.model) in {_tagged(name) for name in names if isinstance(name, str)}
        return report

    def expand(self, prompt: str, style: str | None = None) -> AssistResult:
        """The expanded prompt (in `style` when given), or the original with the reason assist was not used."""
        key: _Key = (prompt, style, self.model)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self._metrics.assist_calls.labels("assisted").inc()
                return cached
        result = self._ask(prompt, style)
        self._metrics.assist_calls.labels("assisted" if result.assisted else "passed_through").inc()
        if result.assisted:
            with self._lock:
                self._cache[key] = result
                self._cache.move_to_end(key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        else:
            log.info("prompt assist passed the prompt through: %s", result.reason)
        return result

    def _ask(self, prompt: str, style: str | None) -> AssistResult:
        """One request to Ollama, its answer read as an expansion or turned into a passthrough."""
        instruction = _INSTRUCTION.format(prompt=prompt) + (_STYLE.format(style=style) if style else "")
        try:
            response = httpx.post(
                f"{self.url}/api/generate",
                json={"model": self.model, "prompt": instruction, "stream": False, "format": "json"},
                timeout=self._timeout,
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return _passthrough(prompt, f"Ollama unreachable at {self.url}: {exc}")
        except httpx.TimeoutException:
            return _passthrough(prompt, f"Ollama did not answer within {self._timeout_s:g}s")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return _passthrough(prompt, f"the request to Ollama at {self.url} failed: {type(exc).__name__}: {exc}")
        if response.status_code == 404:
            said = _error_text(response)
            if not said:  # Ollama says why in JSON; a bare 404 is some other server at OLLAMA_URL
                return _passthrough(prompt, f"{self.url} has no /api/generate: is OLLAMA_URL an Ollama server?")
            return _passthrough(prompt, f"Ollama has no model '{self.model}' (run `ollama pull {self.model}`){said}")
        if response.status_code != 200:
            return _passthrough(prompt, f"Ollama answered HTTP {response.status_code}{_error_text(response)}")
        try:
            expanded, tags = _read_answer(response.json()["response"])
        except (ValueError, KeyError, TypeError) as exc:
            return _passthrough(prompt, f"Ollama's answer was not the expected JSON ({exc})")
        return AssistResult(prompt=expanded, original_prompt=prompt, source=ASSIST_SOURCE_OLLAMA, tags=tags)


def _read_answer(text: object) -> tuple[str, list[str]]:
    """The prompt and tags in the model's answer; ValueError, KeyError or TypeError when it is not one."""
    if not isinstance(text, str):
        raise TypeError("'response' is not a string")
    answer = json.loads(text)
    if not isinstance(answer, dict):
        raise TypeError("the answer is not a JSON object")
    expanded = answer["prompt"]
    if not isinstance(expanded, str) or not expanded.strip():
        raise ValueError("'prompt' is empty or not a string")
    if len(expanded) > MAX_EXPANSION_CHARS:
        raise ValueError(f"'prompt' is longer than {MAX_EXPANSION_CHARS} characters")
    tags = answer.get("tags") or []
    # Small models sometimes write the tags as one comma-separated string.
    if isinstance(tags, str):
        tags = tags.split(",")
    if not isinstance(tags, list):
        raise TypeError("'tags' is not a list")
    cleaned = [str(tag).strip() for tag in tags if isinstance(tag, str | int | float) and str(tag).strip()]
    return expanded.strip(), cleaned[:MAX_TAGS]


def _error_text(response: httpx.Response) -> str:
    """`: <Ollama's error message>` from an error answer's `{"error": ...}`, or nothing."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        return ""
    return f": {error}" if isinstance(error, str) and error else ""


def _tagged(name: str) -> str:
    """A model name with its tag; Ollama reads a name without one as `:latest`."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _passthrough(prompt: str, reason: str) -> AssistResult:
    return AssistResult(prompt=prompt, original_prompt=prompt, source=ASSIST_SOURCE_PASSTHROUGH, reason=reason)
