"""GET /health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from imageforge.transports.http.deps import Service

router = APIRouter(tags=["service"])


@router.get("/health", summary="Service status, device, resident models and Ollama reachability")
async def health(service: Service) -> dict[str, Any]:
    return await run_in_threadpool(service.health)
