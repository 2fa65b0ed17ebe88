"""`AsyncClient`: the HTTP API's calls (`_wire`) sent with an asynchronous httpx client, for asyncio."""

from __future__ import annotations

import inspect
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

import httpx

from imageforge.client import _wire as wire
from imageforge.client._types import GenerationOptions, ImageInput, Job, JobEvent
from imageforge.domain import AssistResult, ImageResult, Progress, Task

T = TypeVar("T")

#: Called once per denoising step by `AsyncClient.wait`: a plain function, or a coroutine function it awaits.
AsyncProgressCallback = Callable[[Progress], Awaitable[None] | None]


class AsyncClient:
    """`Client` for asyncio: the same methods, each a coroutine, and `events` an async iterator. Use it as
    an async context manager, or call `aclose()`. One client may run many calls at once (`asyncio.gather`).

    `base_url`, `api_key`, `verify` and `timeout` are `Client`'s; `transport` replaces httpx's asynchronous
    network transport (an `httpx.MockTransport` in tests, for instance).
    """

    def __init__(
        self,
        base_url: str = wire.DEFAULT_URL,
        *,
        api_key: str | None = None,
        verify: bool | str | Path | ssl.SSLContext = True,
        timeout: float | httpx.Timeout | None = wire.DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        connection = wire.Connection.to(base_url, api_key, verify)
        self.base_url = connection.base_url
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=connection.headers,
            verify=connection.verify,
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections this client holds."""
        await self._http.aclose()

    # -- service ------------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        """`GET /health`: status, version, device, resident models, default model, Ollama reachability."""
        return await self._send(wire.health())

    async def models(self) -> dict[str, Any]:
        """`GET /models`: `{"default": key, "models": [...]}`, each model with its tasks, defaults and weights."""
        return await self._send(wire.models())

    async def loras(self) -> dict[str, Any]:
        """`GET /loras`: `{"loras": [...]}`, the LoRAs a request's `loras` may name, each with its name and size."""
        return await self._send(wire.loras())

    async def load_model(self, key: str) -> dict[str, Any]:
        """`POST /models/{key}/load`: make a model resident now; `{"resident", "changed", "load_s", ...}`."""
        return await self._send(wire.load_model(key))

    async def unload_model(self, key: str) -> dict[str, Any]:
        """`POST /models/{key}/unload`: free a model's memory; `ModelBusy` while a job uses it."""
        return await self._send(wire.unload_model(key))

    async def templates(self) -> list[dict[str, Any]]:
        """`GET /templates`: the style templates, each with its key, title, description, body and size."""
        return await self._send(wire.templates())

    async def template(self, key: str, subject: str) -> dict[str, Any]:
        """`GET /templates/{key}?subject=`: the template filled with `subject`: `prompt`, `negative_prompt`,
        `width` and `height` to start a request from. `TemplateNotFound` for an unknown key."""
        return await self._send(wire.template(key, subject))

    async def assist(self, prompt: str, style: str | None = None) -> AssistResult:
        """`POST /assist`: the prompt expanded by the server's local LLM, optionally in `style`; when that is
        unavailable, the prompt unchanged with `source` "passthrough" and the `reason`."""
        return await self._send(wire.assist(prompt, style))

    # -- synchronous generation ---------------------------------------------------------------------

    async def generate(self, prompt: str, **options: Unpack[GenerationOptions]) -> ImageResult:
        """`POST /generate`: text to image; waits for the image and returns it with its parameters."""
        return await self._send(wire.generation("/generate", prompt, options))

    async def edit(
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
        return await self._send(wire.generation("/edit", prompt, options, images, strength))

    async def inpaint(
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
        return await self._send(wire.generation("/inpaint", prompt, options, images, strength))

    # -- jobs ---------------------------------------------------------------------------------------

    async def submit(
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
        return await self._send(
            wire.submit(
                prompt, task, images, strength, idempotency_key, options, wire.webhook_fields(webhook, webhook_events)
            )
        )

    async def job(self, job_id: str) -> Job:
        """`GET /jobs/{id}`: the job now."""
        return await self._send(wire.job(job_id))

    async def jobs(self, status: str | Iterable[str] | None = None, *, limit: int = 50) -> list[Job]:
        """`GET /jobs`: recent jobs, newest first, only those in `status` (one or several) when given."""
        return await self._send(wire.jobs(status, limit))

    async def cancel(self, job_id: str) -> Job:
        """`DELETE /jobs/{id}`: a queued job ends at once, a running one at its next step.

        Raises `JobFinished` for a job that had already ended.
        """
        return await self._send(wire.cancel(job_id))

    async def events(self, job_id: str, *, preview: bool = False) -> AsyncGenerator[JobEvent, None]:
        """`GET /jobs/{id}/events`: the job's current state, then each change and step, up to its final state.

        The stream ends after the event that reports a terminal status (at once for a job that had ended). To leave
        it earlier, iterate inside `contextlib.aclosing(client.events(id))` so that the connection closes at once.
        """
        call = wire.events(job_id, preview)
        with wire.translated(self.base_url):
            response = await self._http.send(call.request(self._http), stream=True)
            try:
                if response.is_error:
                    await response.aread()
                stream = call.answer(response)
                async for line in response.aiter_lines():
                    event = stream.feed(line)
                    if event is not None:
                        yield event
                        if event.is_terminal:
                            return
            finally:
                await response.aclose()

    async def wait(self, job_id: str, on_progress: AsyncProgressCallback | None = None) -> ImageResult:
        """Follow a job to its end and return its image; raises the job's own error when it failed or was
        cancelled. `on_progress` is called once per denoising step, and awaited when it is a coroutine function."""
        async with aclosing(self.events(job_id)) as events:
            async for event in events:
                progress = wire.progress(event)
                if progress is not None and on_progress is not None:
                    reported = on_progress(progress)
                    if inspect.isawaitable(reported):
                        await reported
        record, urls = wire.succeeded(await self.job(job_id))
        return ImageResult.from_images(record, [await self.image(url) for url in urls])

    async def image(self, name_or_url: str) -> bytes:
        """`GET /images/{name}`: a result's PNG, by file name, by its server `output_path`, or by a job's image URL."""
        return await self._send(wire.image(name_or_url))

    async def _send(self, call: wire.Call[T]) -> T:
        with wire.translated(self.base_url):
            response = await self._http.send(call.request(self._http))
        return call.answer(response)
