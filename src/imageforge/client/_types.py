"""The client's own public types: the options of a generation, an input image, and a job and its events as the
HTTP API shows them. The image and prompt results are the domain's (`ImageResult`, `AssistResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from imageforge.domain import Progress

#: The statuses after which a job never changes again.
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})

#: An input image: its bytes, or a local file the client reads and sends as base64.
ImageInput = bytes | Path


class GenerationOptions(TypedDict, total=False):
    """The optional fields of a generation request; absent or None, each takes the server's (or the model's)
    default."""

    negative_prompt: str
    model: str | None
    #: a style template's key (`templates()`): it frames the prompt and fills in the size and negative prompt
    style: str | None
    steps: int | None
    guidance: float | None
    width: int | None
    height: int | None
    seed: int | None
    assist_prompt: bool
    use_cache: bool
    #: "full" (the model's VAE, the default) or "fast" (its tiny autoencoder)
    decoder: str
    #: how many images (1 to 4), with consecutive seeds; sent as `n`. The result is the first, with all as `images`
    count: int
    #: a sampler (euler, euler_a, dpmpp_2m, …), or None for the model's own
    sampler: str | None
    #: "default", "karras" or "exponential" (the last two with a sampler that runs them)
    schedule: str
    #: LoRAs for this request only, at most 4: `[{"name": ..., "weight": 1.0}]`, names from `loras()`
    loras: list[dict[str, Any]]
    #: an image that runs out of memory may be retried at a smaller size (the result's `downgraded` says so)
    allow_downsize: bool


@dataclass(frozen=True)
class Job:
    """A job as `GET /jobs/{id}` shows it: status, queue position, progress, and its result or error."""

    job_id: str
    #: queued, running, succeeded, failed or cancelled
    status: str
    task: str | None
    model: str | None
    #: 1 = next to run; 0 = running; None once ended
    queue_position: int | None
    progress: Progress
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str | None
    #: queue_ms, load_ms, run_ms
    timings: dict[str, float]
    #: the image's parameters (`ImageResponse` without the image) once succeeded
    result: dict[str, Any] | None
    #: {"code", "message", "hint"} once failed or cancelled
    error: dict[str, str] | None
    url: str
    events_url: str
    #: where the full image is, once succeeded
    image_url: str | None
    #: about how many seconds until it ends; None once ended, or with nothing to go by yet
    eta_s: float | None = None
    #: its webhook: {"url", "events", "deliveries": [{"id", "event", "status", "attempts", …}]}, or None
    webhook: dict[str, Any] | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True)
class JobEvent:
    """One Server-Sent Event of a job: `state` (a status change), `progress` (one step) or `preview`."""

    type: str
    #: the event's position in the job's log
    index: int
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def is_terminal(self) -> bool:
        return self.type == "state" and self.data.get("status") in TERMINAL_STATUSES
