"""GET /health."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from imageforge.transports.http.auth import AccessRule
from imageforge.transports.http.deps import Service
from imageforge.transports.http.schemas import HealthResponse, LivenessResponse, LockedResponse

router = APIRouter(tags=["service"])


@router.get("/health", summary="Service status, device, resident models and Ollama reachability")
async def health(service: Service, request: Request) -> HealthResponse | LockedResponse | LivenessResponse:
    access: AccessRule = request.app.state.access
    mode = access.mode()
    if mode == "locked" or (mode == "api_key" and "api_key_name" not in request.scope.get("state", {})):
        # Liveness only: the device, models, versions and the reason of a degraded state are for callers holding a key.
        fault = await run_in_threadpool(service.storage_fault)
        status = "ok" if fault is None else "degraded"
        if mode == "locked":
            return LockedResponse(status=status, hint="Add a key: `imageforge keys add NAME`.")
        return LivenessResponse(status=status)
    return HealthResponse(
        **(await run_in_threadpool(service.health)).model_dump(),
        auth=access.describe(mode),
        tls=request.url.scheme == "https",
        allowed_hosts=request.app.state.allowed_hosts,
    )
