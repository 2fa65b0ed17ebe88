"""A synchronous Python client for the imageforge HTTP API.

    with Client("http://127.0.0.1:8765") as client:
        image = client.generate("a red fox in the snow", seed=42)
        Path("fox.png").write_bytes(image.png)

Every error the server answers is raised as the imageforge error of the same `code` (`errors.from_code`), with
its message and hint, so a caller handles a remote failure exactly as an in-process one:

ImageforgeError
├── InvalidRequest, ModelNotFound, QueueFull (with `retry_after_s`), JobNotFound, Cancelled, …
│                          the server's answer, by its `code`
├── ImageforgeError        code `http_error`: an answer that is not an imageforge error (a proxy's page)
└── ServerUnavailable      no server at the URL, a broken connection, or no answer within the timeout

This module imports httpx and imageforge's own plain types only: never the service, the engine or a web
framework, so that it is cheap to import anywhere.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypedDict, Unpack
from urllib.parse import quote

import httpx

from imageforge.domain import HTTP_NAMES, AssistResult, ImageResult, Progress, ProgressCallback, Task
from imageforge.errors import ImageforgeError, QueueFull, ServerUnavailable, from_code

DEFAULT_URL = "http://127.0.0.1:8765"
#: Generous reads: a synchronous request waits for its generation, and a model's first load may take minutes.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)
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


class Client:
    """The imageforge HTTP API at `base_url` (`host:port` alone means http). Use it as a context manager, or
    call `close()`.

    `api_key` (default: the `IMAGEFORGE_API_KEY` environment variable) goes out as `Authorization: Bearer KEY`
    on every request. `verify` checks an https server's
    certificate: True against the system's CAs, a path to trust the certificate in that PEM file (a self-signed
    server's `cert.pem`), an `ssl.SSLContext`, or False to accept any. `transport` replaces httpx's network
    transport (an `httpx.MockTransport` in tests, for instance).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        verify: bool | str | Path | ssl.SSLContext = True,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = (base_url if "://" in base_url else f"http://{base_url}").rstrip("/")
        if isinstance(verify, str | Path):
            verify = ssl.create_default_context(cafile=str(verify))
        api_key = api_key or os.environ.get("IMAGEFORGE_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, verify=verify, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections this client holds."""
        self._http.close()

    # -- service ------------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """`GET /health`: status, version, device, resident models, default model, Ollama reachability."""
        return _answer(self._request("GET", "/health"))

    def models(self) -> dict[str, Any]:
        """`GET /models`: `{"default": key, "models": [...]}`, each model with its tasks, defaults and weights."""
        return _answer(self._request("GET", "/models"))

    def load_model(self, key: str) -> dict[str, Any]:
        """`POST /models/{key}/load`: make a model resident now; `{"resident", "changed", "load_s", ...}`."""
        return _answer(self._request("POST", f"/models/{quote(key, safe='')}/load"))

    def unload_model(self, key: str) -> dict[str, Any]:
        """`POST /models/{key}/unload`: free a model's memory; `ModelBusy` while a job uses it."""
        return _answer(self._request("POST", f"/models/{quote(key, safe='')}/unload"))

    def templates(self) -> list[dict[str, Any]]:
        """`GET /templates`: the style templates, each with its key, title, description, body and size."""
        templates: list[dict[str, Any]] = _answer(self._request("GET", "/templates"))["templates"]
        return templates

    def template(self, key: str, subject: str) -> dict[str, Any]:
        """`GET /templates/{key}?subject=`: the template filled with `subject`: `prompt`, `negative_prompt`,
        `width` and `height` to start a request from. `TemplateNotFound` for an unknown key."""
        return _answer(self._request("GET", f"/templates/{quote(key, safe='')}", params={"subject": subject}))

    def assist(self, prompt: str, style: str | None = None) -> AssistResult:
        """`POST /assist`: the prompt expanded by the server's local LLM, optionally in `style`; when that is
        unavailable, the prompt unchanged with `source` "passthrough" and the `reason`."""
        body = {"prompt": prompt} if style is None else {"prompt": prompt, "style": style}
        return AssistResult.from_record(_answer(self._request("POST", "/assist", json=body)))

    # -- synchronous generation ---------------------------------------------------------------------

    def generate(self, prompt: str, **options: Unpack[GenerationOptions]) -> ImageResult:
        """`POST /generate`: text to image; waits for the image and returns it with its parameters."""
        return self._generate("/generate", {"prompt": prompt, **options})

    def edit(
        self,
        prompt: str,
        init_image: ImageInput | None = None,
        *,
        init_image_path: str | None = None,
        strength: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> ImageResult:
        """`POST /edit`: image to image, from image bytes, a local file, or a path on the server."""
        body = {"prompt": prompt, **options, **_images(init_image, init_image_path, None, None)}
        return self._generate("/edit", _with_strength(body, strength))

    def inpaint(
        self,
        prompt: str,
        init_image: ImageInput | None = None,
        mask_image: ImageInput | None = None,
        *,
        init_image_path: str | None = None,
        mask_image_path: str | None = None,
        strength: float | None = None,
        **options: Unpack[GenerationOptions],
    ) -> ImageResult:
        """`POST /inpaint`: repaint the white part of the mask; each image as bytes, a local file or a server path."""
        body = {"prompt": prompt, **options, **_images(init_image, init_image_path, mask_image, mask_image_path)}
        return self._generate("/inpaint", _with_strength(body, strength))

    # -- jobs ---------------------------------------------------------------------------------------

    def submit(
        self,
        prompt: str,
        *,
        task: Task | str = Task.TEXT2IMG,
        init_image: ImageInput | None = None,
        mask_image: ImageInput | None = None,
        init_image_path: str | None = None,
        mask_image_path: str | None = None,
        strength: float | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[GenerationOptions],
    ) -> Job:
        """`POST /jobs`: queue a generation and return the job at once; `wait` follows it to its image.

        Resending the same `idempotency_key` returns the same job.
        """
        body = {
            "task": str(task),
            "prompt": prompt,
            **options,
            **_images(init_image, init_image_path, mask_image, mask_image_path),
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
        body = _on_the_wire(_with_strength(body, strength))
        return _job(_answer(self._request("POST", "/jobs", json=body, headers=headers)))

    def job(self, job_id: str) -> Job:
        """`GET /jobs/{id}`: the job now."""
        return _job(_answer(self._request("GET", _job_path(job_id))))

    def jobs(self, status: str | Iterable[str] | None = None, *, limit: int = 50) -> list[Job]:
        """`GET /jobs`: recent jobs, newest first, only those in `status` (one or several) when given."""
        statuses = [status] if isinstance(status, str) else list(status or ())
        params: list[tuple[str, str | int]] = [("limit", limit), *(("status", one) for one in statuses)]
        answer = _answer(self._request("GET", "/jobs", params=params))
        return [_job(one) for one in answer["jobs"]]

    def cancel(self, job_id: str) -> Job:
        """`DELETE /jobs/{id}`: a queued job ends at once, a running one at its next step.

        Raises `JobFinished` for a job that had already ended.
        """
        return _job(_answer(self._request("DELETE", _job_path(job_id))))

    def events(self, job_id: str, *, preview: bool = False) -> Iterator[JobEvent]:
        """`GET /jobs/{id}/events`: the job's current state, then each change and step, up to its final state.

        The stream ends after the event that reports a terminal status (at once for a job that had ended).
        """
        with (
            _translated(self.base_url),
            self._http.stream(
                "GET", f"{_job_path(job_id)}/events", params={"preview": "true"} if preview else None
            ) as response,
        ):
            if response.is_error:
                response.read()
                raise _error(response)
            for event in _server_sent_events(response.iter_lines()):
                yield event
                if event.is_terminal:
                    return

    def wait(self, job_id: str, on_progress: ProgressCallback | None = None) -> ImageResult:
        """Follow a job to its end and return its image; raises the job's own error when it failed or was
        cancelled. `on_progress` is called once per denoising step."""
        for event in self.events(job_id):
            if event.type == "progress" and on_progress is not None:
                on_progress(Progress(step=int(event.data["step"]), total=int(event.data["total"])))
        job = self.job(job_id)
        if job.error is not None:
            raise from_code(job.error["code"], job.error["message"], job.error.get("hint", ""))
        if job.result is None or job.image_url is None:
            raise ServerUnavailable(
                f"The event stream of job '{job_id}' ended while the job was still {job.status}.",
                hint="The server may be shutting down; call wait() again to go on following it.",
            )
        # A server from before `count` lists no `images`: its one image is at the job's link.
        urls = [image["url"] for image in job.result.get("images") or [{"url": job.image_url}]]
        return ImageResult.from_images(job.result, [self.image(url) for url in urls])

    def image(self, name_or_url: str) -> bytes:
        """`GET /images/{name}`: a result's PNG, by file name, by its server `output_path`, or by a job's image URL."""
        if "://" in name_or_url:
            return self._request("GET", name_or_url).content
        name = name_or_url.replace("\\", "/").rsplit("/", 1)[-1]
        return self._request("GET", f"/images/{quote(name, safe='')}").content

    # -- plumbing -----------------------------------------------------------------------------------

    def _generate(self, route: str, body: dict[str, Any]) -> ImageResult:
        answer = _answer(self._request("POST", route, json={**_on_the_wire(body), "return_mode": "both"}))
        # A server from before `count` answers one image, with no `images`.
        images = answer.get("images") or [answer]
        return ImageResult.from_images(answer, [base64.b64decode(image["image_base64"]) for image in images])

    def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        with _translated(self.base_url):
            response = self._http.request(method, url, **kwargs)
        if response.is_error:
            raise _error(response)
        return response


@contextmanager
def _translated(base_url: str) -> Iterator[None]:
    """Raise httpx's network failures as `ServerUnavailable`, saying which server and what happened."""
    try:
        yield
    except httpx.ConnectError as exc:
        raise ServerUnavailable(
            f"No imageforge server answers at {base_url} ({exc}).",
            hint="Start one with `imageforge serve`, or check the URL.",
        ) from exc
    except httpx.TimeoutException as exc:
        raise ServerUnavailable(
            f"The server at {base_url} did not answer in time ({type(exc).__name__}).",
            hint="Pass a longer `timeout` to the client, or check that the server is not stuck.",
        ) from exc
    except httpx.TransportError as exc:
        raise ServerUnavailable(
            f"The connection to {base_url} failed: {type(exc).__name__}: {exc}",
            hint="Check that the server is running and reachable.",
        ) from exc


def _answer(response: httpx.Response) -> dict[str, Any]:
    """A successful answer's JSON object; anything else means the URL is not an imageforge server."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise _not_imageforge(response)
    return answer


def _not_imageforge(response: httpx.Response) -> ImageforgeError:
    request = response.request
    return from_code(
        "http_error",
        f"{request.method} {request.url} answered {response.status_code} {response.reason_phrase} "
        "with something other than imageforge's JSON.",
        hint="Check that the URL points at an imageforge server.",
    )


def _error(response: httpx.Response) -> ImageforgeError:
    """The imageforge error a non-2xx answer carries, `QueueFull` with the server's Retry-After."""
    try:
        detail = response.json()["error"]
        code, message, hint = str(detail["code"]), str(detail["message"]), str(detail.get("hint") or "")
    except (ValueError, KeyError, TypeError):
        return _not_imageforge(response)
    error = from_code(code, message, hint)
    retry_after = response.headers.get("Retry-After", "")
    if isinstance(error, QueueFull) and retry_after.isdigit():
        error.retry_after_s = int(retry_after)
    return error


def _server_sent_events(lines: Iterable[str]) -> Iterator[JobEvent]:
    """Parse a `text/event-stream` into events; comments (the server's keep-alives) are skipped."""
    kind, index, data = "message", 0, list[str]()
    for line in lines:
        if not line:
            if data:
                yield JobEvent(type=kind, index=index, data=json.loads("\n".join(data)))
            kind, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "data":
            data.append(value)
        elif name == "id" and value.isdigit():
            index = int(value)


def _job_path(job_id: str) -> str:
    return f"/jobs/{quote(job_id, safe='')}"


def _job(data: Mapping[str, Any]) -> Job:
    """A `JobResponse` as a `Job`."""
    links = data["links"]
    return Job(
        job_id=data["job_id"],
        status=data["status"],
        task=data.get("task"),
        model=data.get("model"),
        queue_position=data.get("queue_position"),
        progress=Progress(step=data["progress"]["step"], total=data["progress"]["total"]),
        created_at=data["created_at"],
        started_at=data.get("started_at"),
        finished_at=data.get("finished_at"),
        expires_at=data.get("expires_at"),
        timings=dict(data.get("timings") or {}),
        result=data.get("result"),
        error=data.get("error"),
        url=links["self"],
        events_url=links["events"],
        image_url=links.get("image"),
        eta_s=data.get("eta_s"),
    )


def _images(
    init_image: ImageInput | None,
    init_image_path: str | None,
    mask_image: ImageInput | None,
    mask_image_path: str | None,
) -> dict[str, str]:
    """The image fields of a request body: local images as base64, server paths as they are."""
    fields = {
        "init_image": _base64(init_image),
        "init_image_path": init_image_path,
        "mask_image": _base64(mask_image),
        "mask_image_path": mask_image_path,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _base64(image: ImageInput | None) -> str | None:
    if image is None:
        return None
    data = image.read_bytes() if isinstance(image, Path) else image
    return base64.b64encode(data).decode("ascii")


def _on_the_wire(body: dict[str, Any]) -> dict[str, Any]:
    """A request body with each field under its HTTP name (`count` is `n`)."""
    return {HTTP_NAMES.get(name, name): value for name, value in body.items()}


def _with_strength(body: dict[str, Any], strength: float | None) -> dict[str, Any]:
    # An absent strength lets the server pick the task's default (0.6 for img2img, 1.0 for inpaint).
    return body if strength is None else {**body, "strength": strength}


__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "AssistResult",
    "Client",
    "GenerationOptions",
    "ImageInput",
    "ImageResult",
    "Job",
    "JobEvent",
    "Progress",
]
