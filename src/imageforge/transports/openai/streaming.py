"""Streamed image answers (`stream: true`): Server-Sent Events in the form the OpenAI SDK parses.

Up to `partial_images` partial images come from the job's live previews, spread over its steps, then one
`completed` event per image. An error after the stream started (the job failed, the server is stopping) is an
event carrying `{"error": …}` in OpenAI's shape, which the SDK raises as an `APIError`.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from imageforge.domain import Caller, GenerationParams, JobEvent
from imageforge.errors import ImageforgeError
from imageforge.service import ImageService
from imageforge.transports.http.audit import note_audit
from imageforge.transports.http.errors import STATUS_BY_CODE
from imageforge.transports.http.routes.jobs import KEEPALIVE_S, with_keepalives
from imageforge.transports.openai.errors import error_body
from imageforge.transports.openai.mapping import answer_quality, encoded
from imageforge.transports.openai.schemas import PromptFields

#: The event names' prefix: generations stream `image_generation.*`, edits `image_edit.*`.
StreamKind = Literal["image_generation", "image_edit"]
#: The usage OpenAI's completed events carry; no tokens are counted here.
_NO_USAGE = {
    "input_tokens": 0,
    "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
    "output_tokens": 0,
    "total_tokens": 0,
}


async def stream_images(
    params: GenerationParams,
    wire: PromptFields,
    kind: StreamKind,
    *,
    service: ImageService,
    caller: Caller,
    request: Request,
) -> StreamingResponse:
    """Submit the job and answer with its event stream; a request refused (or a follow past the caller's share)
    is an error answer before any event."""
    note_audit(request, prompt=params.prompt)
    job = await run_in_threadpool(service.submit, params, caller=caller)
    note_audit(request, job_id=job.id)
    partials = wire.partial_images or 0
    events = service.follow(job.id, previews=partials > 0, caller=caller)
    await anext(events)  # the job's state now: what the follow refuses is raised here, before the answer starts
    return StreamingResponse(
        _events(events, partials, wire, kind, service=service, caller=caller, job_id=job.id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def _events(
    events: AsyncGenerator[JobEvent, None],
    partials: int,
    wire: PromptFields,
    kind: StreamKind,
    *,
    service: ImageService,
    caller: Caller,
    job_id: str,
) -> AsyncIterator[str]:
    common = {
        "background": "opaque",
        "output_format": wire.output_format,
        "quality": answer_quality(wire) or "auto",
        "size": wire.size or "auto",
    }
    sent = 0
    keepalive = with_keepalives(events, KEEPALIVE_S)
    try:
        async for event in keepalive:
            if event is None:
                yield ": keep-alive\n\n"  # a comment, which the SDK skips; it keeps proxies from closing a quiet stream
                continue
            if event.type != "preview" or sent >= partials:
                continue
            # The partials are spread evenly over the job's steps: with 2 of them, at a third and two thirds.
            if event.data["step"] < math.ceil((sent + 1) * event.data["total"] / (partials + 1)):
                continue
            preview = base64.b64decode(event.data["image"].split(",", 1)[1])
            yield _sse(
                f"{kind}.partial_image",
                {**common, **_image(preview, wire), "partial_image_index": sent, "created_at": int(time.time())},
            )
            sent += 1
        job = await run_in_threadpool(service.get_job, job_id, caller=caller)
        result = await run_in_threadpool(service.image_result, job)
        for image in result.images:
            size = {"size": f"{image.width}x{image.height}"}
            encoded_image = await run_in_threadpool(_image, image.png, wire)
            data = {**common, **size, **encoded_image, "created_at": int(time.time()), "usage": _NO_USAGE}
            yield _sse(f"{kind}.completed", data)
    except ImageforgeError as exc:
        native = {"code": exc.code, "message": exc.message, "hint": exc.hint}
        yield _sse("error", error_body(STATUS_BY_CODE.get(exc.code, 500), native))
    finally:
        await keepalive.aclose()  # closes the job's follow, which frees the caller's place in the queue


def _image(png: bytes, wire: PromptFields) -> dict[str, str]:
    return {"b64_json": base64.b64encode(encoded(png, wire.output_format, wire.output_compression)).decode()}


def _sse(event: str, data: dict[str, Any]) -> str:
    body = {"type": event, **data} if event != "error" else data
    return f"event: {event}\ndata: {json.dumps(body)}\n\n"
