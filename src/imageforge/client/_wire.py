"""The HTTP API as both clients speak it, with no I/O of its own: each API call as a `Call` (the request to send and
how to read its answer), the imageforge error an answer carries, network failures as `ServerUnavailable`, and a
job's server-sent events. `Client` and `AsyncClient` only send the calls and read the bytes."""

from __future__ import annotations

import base64
import json
import os
import ssl
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

from imageforge.client._types import GenerationOptions, ImageInput, Job, JobEvent
from imageforge.domain import HTTP_NAMES, AssistResult, ImageResult, Progress, Task
from imageforge.errors import ImageforgeError, QueueFull, ServerUnavailable, from_code

DEFAULT_URL = "http://127.0.0.1:8765"
#: Generous reads: a synchronous request waits for its generation, and a model's first load may take minutes.
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)

T = TypeVar("T")


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request of the HTTP API and how to read its successful answer."""

    method: str
    url: str
    read: Callable[[httpx.Response], T]
    params: httpx.QueryParams | None = None
    json: dict[str, Any] | None = None
    headers: dict[str, str] | None = None

    def request(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """The request, with the base URL, headers and timeout of the client that sends it."""
        return http.build_request(self.method, self.url, params=self.params, json=self.json, headers=self.headers)

    def answer(self, response: httpx.Response) -> T:
        """What a response whose body has been read answers, or the imageforge error it carries."""
        if response.is_error:
            raise error(response)
        return self.read(response)


@dataclass(frozen=True)
class Connection:
    """What both clients give their httpx client: the base URL, the key's header and how to check certificates."""

    base_url: str
    headers: dict[str, str] | None
    verify: bool | ssl.SSLContext

    @classmethod
    def to(cls, base_url: str, api_key: str | None, verify: bool | str | Path | ssl.SSLContext) -> Connection:
        """`base_url` (`host:port` alone means http), `api_key` (default: IMAGEFORGE_API_KEY) as a bearer token,
        and `verify` with a PEM file's path read as a context that trusts it."""
        if isinstance(verify, str | Path):
            verify = ssl.create_default_context(cafile=str(verify))
        api_key = api_key or os.environ.get("IMAGEFORGE_API_KEY")
        return cls(
            base_url=(base_url if "://" in base_url else f"http://{base_url}").rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            verify=verify,
        )


# -- the calls ---------------------------------------------------------------------------------------


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/health", _answer)


def models() -> Call[dict[str, Any]]:
    return Call("GET", "/models", _answer)


def loras() -> Call[dict[str, Any]]:
    return Call("GET", "/loras", _answer)


def load_model(key: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/models/{quote(key, safe='')}/load", _answer)


def unload_model(key: str) -> Call[dict[str, Any]]:
    return Call("POST", f"/models/{quote(key, safe='')}/unload", _answer)


def templates() -> Call[list[dict[str, Any]]]:
    def read(response: httpx.Response) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = _answer(response)["templates"]
        return found

    return Call("GET", "/templates", read)


def template(key: str, subject: str) -> Call[dict[str, Any]]:
    return Call("GET", f"/templates/{quote(key, safe='')}", _answer, params=httpx.QueryParams(subject=subject))


def assist(prompt: str, style: str | None) -> Call[AssistResult]:
    body = {"prompt": prompt} if style is None else {"prompt": prompt, "style": style}
    return Call("POST", "/assist", lambda response: AssistResult.from_record(_answer(response)), json=body)


@dataclass(frozen=True)
class Images:
    """The input images of a request: each as bytes or a local file (sent as base64), or as a path on the server."""

    init_image: ImageInput | None = None
    init_image_path: str | None = None
    mask_image: ImageInput | None = None
    mask_image_path: str | None = None

    def fields(self) -> dict[str, str]:
        """The image fields of a request body, the absent ones left out."""
        fields = {
            "init_image": _base64(self.init_image),
            "init_image_path": self.init_image_path,
            "mask_image": _base64(self.mask_image),
            "mask_image_path": self.mask_image_path,
        }
        return {name: value for name, value in fields.items() if value is not None}


NO_IMAGES = Images()


def generation(
    route: Literal["/generate", "/edit", "/inpaint"],
    prompt: str,
    options: GenerationOptions,
    images: Images = NO_IMAGES,
    strength: float | None = None,
) -> Call[ImageResult]:
    """A synchronous generation: the server answers once the images are made, with every one of them."""

    def read(response: httpx.Response) -> ImageResult:
        answer = _answer(response)
        # A server from before `count` answers one image, with no `images`.
        pngs = [base64.b64decode(one["image_base64"]) for one in answer.get("images") or [answer]]
        return ImageResult.from_images(answer, pngs)

    body = _with_strength({"prompt": prompt, **options, **images.fields()}, strength)
    return Call("POST", route, read, json={**_on_the_wire(body), "return_mode": "both"})


def submit(
    prompt: str,
    task: Task | str,
    images: Images,
    strength: float | None,
    idempotency_key: str | None,
    options: GenerationOptions,
    webhook: Mapping[str, Any] | None = None,
) -> Call[Job]:
    body = _with_strength(
        {"task": str(task), "prompt": prompt, **options, **images.fields(), **(webhook or {})}, strength
    )
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key is not None else None
    return Call("POST", "/jobs", _job_answer, json=_on_the_wire(body), headers=headers)


def webhook_fields(webhook: str | None, events: Sequence[str] | None) -> dict[str, Any]:
    """The fields of `POST /jobs` that give the job a webhook (none when `webhook` is None)."""
    fields: dict[str, Any] = {"webhook": webhook} if webhook is not None else {}
    if events is not None:
        fields["webhook_events"] = list(events)
    return fields


def job(job_id: str) -> Call[Job]:
    return Call("GET", _job_path(job_id), _job_answer)


def jobs(status: str | Iterable[str] | None, limit: int) -> Call[list[Job]]:
    statuses = [status] if isinstance(status, str) else list(status or ())
    params = httpx.QueryParams([("limit", limit), *(("status", one) for one in statuses)])
    return Call("GET", "/jobs", lambda response: [_job(one) for one in _answer(response)["jobs"]], params=params)


def cancel(job_id: str) -> Call[Job]:
    return Call("DELETE", _job_path(job_id), _job_answer)


def events(job_id: str, preview: bool) -> Call[EventStream]:
    """The job's event stream; its answer is the parser to feed the lines of the body with."""
    params = httpx.QueryParams(preview="true") if preview else None
    return Call("GET", f"{_job_path(job_id)}/events", lambda _: EventStream(), params=params)


def image(name_or_url: str) -> Call[bytes]:
    if "://" in name_or_url:
        return Call("GET", name_or_url, _content)
    name = name_or_url.replace("\\", "/").rsplit("/", 1)[-1]
    return Call("GET", f"/images/{quote(name, safe='')}", _content)


# -- following a job ---------------------------------------------------------------------------------


class EventStream:
    """A `text/event-stream`, fed one line at a time; comments (the server's keep-alives) are skipped."""

    def __init__(self) -> None:
        self._kind, self._index, self._data = "message", 0, list[str]()

    def feed(self, line: str) -> JobEvent | None:
        """The event that `line` completes, if it does."""
        if not line:
            event = JobEvent(self._kind, self._index, json.loads("\n".join(self._data))) if self._data else None
            self._kind, self._data = "message", []
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._kind = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and value.isdigit():
            self._index = int(value)
        return None


def progress(event: JobEvent) -> Progress | None:
    """The step an event reports: a `progress` event's, or the step a running job had reached when the stream
    began (its first, `state`, event), so that a caller who starts following mid-job sees where it is."""
    if event.type == "progress":
        return Progress(step=int(event.data["step"]), total=int(event.data["total"]))
    if event.type == "state" and event.data.get("status") == "running" and int(event.data.get("step") or 0) > 0:
        return Progress(step=int(event.data["step"]), total=int(event.data["total"]))
    return None


def succeeded(job: Job) -> tuple[dict[str, Any], list[str]]:
    """A job that ended, as its result record and where its images are; raises the job's own error when it failed
    or was cancelled."""
    if job.error is not None:
        raise from_code(job.error["code"], job.error["message"], job.error.get("hint", ""))
    if job.result is None or job.image_url is None:
        raise ServerUnavailable(
            f"The event stream of job '{job.job_id}' ended while the job was still {job.status}.",
            hint="The server may be shutting down; call wait() again to go on following it.",
        )
    # A server from before `count` lists no `images`: its one image is at the job's link.
    return job.result, [one["url"] for one in job.result.get("images") or [{"url": job.image_url}]]


# -- failures ----------------------------------------------------------------------------------------


@contextmanager
def translated(base_url: str) -> Iterator[None]:
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


def error(response: httpx.Response) -> ImageforgeError:
    """The imageforge error a non-2xx answer carries, `QueueFull` with the server's Retry-After."""
    try:
        detail = response.json()["error"]
        code, message, hint = str(detail["code"]), str(detail["message"]), str(detail.get("hint") or "")
    except (ValueError, KeyError, TypeError):
        return _not_imageforge(response)
    found = from_code(code, message, hint)
    retry_after = response.headers.get("Retry-After", "")
    if isinstance(found, QueueFull) and retry_after.isdigit():
        found.retry_after_s = int(retry_after)
    return found


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


# -- bodies and answers ------------------------------------------------------------------------------


def _content(response: httpx.Response) -> bytes:
    return response.content


def _job_path(job_id: str) -> str:
    return f"/jobs/{quote(job_id, safe='')}"


def _job_answer(response: httpx.Response) -> Job:
    return _job(_answer(response))


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
        webhook=data.get("webhook"),
    )


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
