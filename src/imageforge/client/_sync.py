"""`Client`: the HTTP API's calls (`_wire`) sent with a blocking httpx client."""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import httpx

from imageforge.client import _wire as wire
from imageforge.client._types import GenerationOptions, ImageInput, Job, JobEvent
from imageforge.domain import AssistResult, ImageResult, ProgressCallback, Task

T = TypeVar("T")


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
        base_url: str = wire.DEFAULT_URL,
        *,
        api_key: str | None = None,
        verify: bool | str | Path | ssl.SSLContext = True,
        timeout: float | httpx.Timeout | None = wire.DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        connection = wire.Connection.to(base_url, api_key, verify)
        self.base_url = connection.base_url
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=connection.headers,
            verify=connection.verify,
            timeout=timeout,
            transport=transport,
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
        return self._send(wire.health())

    def models(self) -> dict[str, Any]:
        """`GET /models`: `{"default": key, "models": [...]}`, each model with its tasks, defaults and weights."""
        return self._send(wire.models())

    def loras(self) -> dict[str, Any]:
        """`GET /loras`: `{"loras": [...]}`, the LoRAs a request's `loras` may name, each with its name and size."""
        return self._send(wire.loras())

    def load_model(self, key: str) -> dict[str, Any]:
        """`POST /models/{key}/load`: make a model resident now; `{"resident", "changed", "load_s", ...}`."""
        return self._send(wire.load_model(key))

    def unload_model(self, key: str) -> dict[str, Any]:
        """`POST /models/{key}/unload`: free a model's memory; `ModelBusy` while a job uses it."""
        return self._send(wire.unload_model(key))

    def templates(self) -> list[dict[str, Any]]:
        """`GET /templates`: the style templates, each with its key, title, description, body and size."""
        return self._send(wire.templates())

    def template(self, key: str, subject: str) -> dict[str, Any]:
        """`GET /templates/{key}?subject=`: the template filled with `subject`: `prompt`, `negative_prompt`,
        `width` and `height` to start a request from. `TemplateNotFound` for an unknown key."""
        return self._send(wire.template(key, subject))

    def assist(self, prompt: str, style: str | None = None) -> AssistResult:
        """`POST /assist`: the prompt expanded by the server's local LLM, optionally in `style`; when that is
        unavailable, the prompt unchanged with `source` "passthrough" and the `reason`."""
        return self._send(wire.assist(prompt, style))

    # -- synchronous generation ---------------------------------------------------------------------

    def generate(self, prompt: str, **options: Unpack[GenerationOptions]) -> ImageResult:
        """`POST /generate`: text to image; waits for the image and returns it with its parameters."""
        return self._send(wire.generation("/generate", prompt, options))

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
        images = wire.Images(init_image, init_image_path)
        return self._send(wire.generation("/edit", prompt, options, images, strength))

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
        images = wire.Images(init_image, init_image_path, mask_image, mask_image_path)
        return self._send(wire.generation("/inpaint", prompt, options, images, strength))

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
        webhook: str | None = None,
        webhook_events: Sequence[str] | None = None,
        **options: Unpack[GenerationOptions],
    ) -> Job:
        """`POST /jobs`: queue a generation and return the job at once; `wait` follows it to its image.

        Resending the same `idempotency_key` returns the same job. A `webhook` (a URL the server allows) gets the
        job's `webhook_events` (started, progress, completed; completed by default), signed (docs/webhooks.md).
        """
        images = wire.Images(init_image, init_image_path, mask_image, mask_image_path)
        return self._send(
            wire.submit(
                prompt, task, images, strength, idempotency_key, options, wire.webhook_fields(webhook, webhook_events)
            )
        )

    def job(self, job_id: str) -> Job:
        """`GET /jobs/{id}`: the job now."""
        return self._send(wire.job(job_id))

    def jobs(self, status: str | Iterable[str] | None = None, *, limit: int = 50) -> list[Job]:
        """`GET /jobs`: recent jobs, newest first, only those in `status` (one or several) when given."""
        return self._send(wire.jobs(status, limit))

    def cancel(self, job_id: str) -> Job:
        """`DELETE /jobs/{id}`: a queued job ends at once, a running one at its next step.

        Raises `JobFinished` for a job that had already ended.
        """
        return self._send(wire.cancel(job_id))

    def events(self, job_id: str, *, preview: bool = False) -> Iterator[JobEvent]:
        """`GET /jobs/{id}/events`: the job's current state, then each change and step, up to its final state.

        The stream ends after the event that reports a terminal status (at once for a job that had ended).
        """
        call = wire.events(job_id, preview)
        with wire.translated(self.base_url):
            response = self._http.send(call.request(self._http), stream=True)
            try:
                if response.is_error:
                    response.read()
                stream = call.answer(response)
                for line in response.iter_lines():
                    event = stream.feed(line)
                    if event is not None:
                        yield event
                        if event.is_terminal:
                            return
            finally:
                response.close()

    def wait(self, job_id: str, on_progress: ProgressCallback | None = None) -> ImageResult:
        """Follow a job to its end and return its image; raises the job's own error when it failed or was
        cancelled. `on_progress` is called once per denoising step."""
        for event in self.events(job_id):
            progress = wire.progress(event)
            if progress is not None and on_progress is not None:
                on_progress(progress)
        record, urls = wire.succeeded(self.job(job_id))
        return ImageResult.from_images(record, [self.image(url) for url in urls])

    def image(self, name_or_url: str) -> bytes:
        """`GET /images/{name}`: a result's PNG, by file name, by its server `output_path`, or by a job's image URL."""
        return self._send(wire.image(name_or_url))

    def _send(self, call: wire.Call[T]) -> T:
        with wire.translated(self.base_url):
            response = self._http.send(call.request(self._http))
        return call.answer(response)
