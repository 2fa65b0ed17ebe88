"""Python clients of the imageforge HTTP API: `Client` (blocking) and `AsyncClient` (asyncio), with the same
methods and the same results.

    with Client("http://127.0.0.1:8765") as client:
        image = client.generate("a red fox in the snow", seed=42)
        Path("fox.png").write_bytes(image.png)

    async with AsyncClient("http://127.0.0.1:8765") as client:
        foxes = await asyncio.gather(*(client.generate("a red fox", seed=seed) for seed in range(3)))

Every error the server answers is raised as the imageforge error of the same `code` (`errors.from_code`), with
its message and hint, so a caller handles a remote failure exactly as an in-process one:

ImageforgeError
├── InvalidRequest, ModelNotFound, QueueFull (with `retry_after_s`), JobNotFound, Cancelled, …
│                          the server's answer, by its `code`
├── ImageforgeError        code `http_error`: an answer that is not an imageforge error (a proxy's page)
└── ServerUnavailable      no server at the URL, a broken connection, or no answer within the timeout

Both clients are thin: `_wire` builds each request, reads each answer, translates errors and parses server-sent
events; `_sync` and `_async` only do the I/O. This package imports httpx and imageforge's own plain types only:
never the service, the engine or a web framework, so that it is cheap to import anywhere.
"""

from imageforge.client._async import AsyncClient, AsyncProgressCallback
from imageforge.client._sync import Client
from imageforge.client._types import TERMINAL_STATUSES, GenerationOptions, ImageInput, Job, JobEvent
from imageforge.client._wire import DEFAULT_TIMEOUT, DEFAULT_URL
from imageforge.domain import AssistResult, ImageResult, Progress, ProgressCallback, Task
from imageforge.errors import ImageforgeError, QueueFull, ServerUnavailable

__all__ = [
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "TERMINAL_STATUSES",
    "AssistResult",
    "AsyncClient",
    "AsyncProgressCallback",
    "Client",
    "GenerationOptions",
    "ImageInput",
    "ImageResult",
    "ImageforgeError",
    "Job",
    "JobEvent",
    "Progress",
    "ProgressCallback",
    "QueueFull",
    "ServerUnavailable",
    "Task",
]
