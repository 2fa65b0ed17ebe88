"""PromptAssistant: expands a short prompt through Ollama's HTTP API, or passes it through unchanged.

Assist never blocks a generation: when Ollama is down, slow, missing the model or answers garbage, the
original prompt is used and the result says why (`source="passthrough"`, `reason`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

_INSTRUCTION = (
    "Rewrite the user's image request as one detailed prompt for a diffusion image model: subject, setting, "
    "style, lighting, composition. Keep every element the user asked for. Answer with JSON only: "
    '{{"prompt": "...", "tags": ["...", "..."]}}.\nRequest: {prompt}'
)
_STYLE = "\nRender it in this style: {style}"


@dataclass(frozen=True)
class AssistResult:
    """The prompt to use and where it came from."""

    prompt: str
    original_prompt: str
    source: str  #: "ollama" or "passthrough"
    tags: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def assisted(self) -> bool:
        return self.source != "passthrough"


class PromptAssistant:
    """A client for one Ollama server and model."""

    def __init__(self, url: str, model: str, *, timeout_s: float = 20.0, probe_timeout_s: float = 1.0) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self._timeout_s = timeout_s
        self._probe_timeout_s = probe_timeout_s

    def status(self) -> dict[str, Any]:
        """Reachability of the server and whether the model is pulled; unreachable is a state, not an error."""
        report: dict[str, Any] = {"reachable": False, "url": self.url, "model": self.model, "model_available": False}
        try:
            response = httpx.get(f"{self.url}/api/tags", timeout=self._probe_timeout_s)
            response.raise_for_status()
            names = {entry.get("name") for entry in response.json().get("models", [])}
        except (httpx.HTTPError, ValueError, AttributeError):
            return report
        report["reachable"] = True
        report["model_available"] = self.model in names or f"{self.model}:latest" in names
        return report

    def expand(self, prompt: str, style: str | None = None) -> AssistResult:
        """The expanded prompt (in `style` when given), or the original with the reason assist was not used."""
        instruction = _INSTRUCTION.format(prompt=prompt) + (_STYLE.format(style=style) if style else "")
        try:
            response = httpx.post(
                f"{self.url}/api/generate",
                json={
                    "model": self.model,
                    "prompt": instruction,
                    "stream": False,
                    "format": "json",
                },
                timeout=self._timeout_s,
            )
        except httpx.TimeoutException:
            return self._passthrough(prompt, f"Ollama did not answer within {self._timeout_s:g}s")
        except httpx.HTTPError as exc:
            return self._passthrough(prompt, f"Ollama unreachable at {self.url}: {exc}")
        if response.status_code == 404:
            return self._passthrough(prompt, f"Ollama has no model '{self.model}' (ollama pull {self.model})")
        if response.status_code != 200:
            return self._passthrough(prompt, f"Ollama answered HTTP {response.status_code}")
        try:
            answer = json.loads(response.json()["response"])
            expanded = str(answer["prompt"]).strip()
            tags = [str(tag) for tag in answer.get("tags", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            return self._passthrough(prompt, "Ollama's answer was not the expected JSON")
        if not expanded:
            return self._passthrough(prompt, "Ollama returned an empty prompt")
        return AssistResult(prompt=expanded, original_prompt=prompt, source="ollama", tags=tags)

    @staticmethod
    def _passthrough(prompt: str, reason: str) -> AssistResult:
        return AssistResult(prompt=prompt, original_prompt=prompt, source="passthrough", reason=reason)
