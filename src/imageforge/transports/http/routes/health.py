"""GET /health, the orchestrators' /health/live and /health/ready, and /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from imageforge.transports.http.auth import AccessRule
from imageforge.transports.http.deps import Service
from imageforge.transports.http.schemas import (
    AliveResponse,
    HealthResponse,
    LivenessResponse,
    LockedResponse,
    ReadinessCheckSchema,
    ReadinessResponse,
)

router = APIRouter(tags=["service"])


def _sees_details(request: Request) -> bool:
    """Whether the caller may read the service's state in full: a key holder, or anyone on a server without keys
    that answers everyone. The device, models, versions and the reasons of a fault are for them only."""
    mode = request.app.state.access.mode()
    return mode == "open" or (mode == "api_key" and "api_key_name" in request.scope.get("state", {}))


@router.get("/health", summary="Service status, device, resident models and Ollama reachability")
async def health(service: Service, request: Request) -> HealthResponse | LockedResponse | LivenessResponse:
    access: AccessRule = request.app.state.access
    mode = access.mode()
    if not _sees_details(request):
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


@router.get("/health/live", summary="Liveness for orchestrators: the process answers (no key needed)")
async def live() -> AliveResponse:
    return AliveResponse()


@router.get(
    "/health/ready",
    summary="Readiness for orchestrators: storage writable, queue running, default model servable (no key needed)",
    response_model=ReadinessResponse,
    responses={503: {"model": ReadinessResponse, "description": "Not ready: the failing checks."}},
)
async def ready(service: Service, request: Request) -> JSONResponse:
    readiness = await run_in_threadpool(service.readiness)
    detailed = _sees_details(request)
    checks = {
        name: ReadinessCheckSchema(ok=True)
        if failure is None
        else ReadinessCheckSchema(
            ok=False,
            code=failure.code,
            message=failure.message if detailed else None,
            hint=failure.hint if detailed else None,
        )
        for name, failure in readiness.checks.items()
    }
    body = ReadinessResponse(ok=readiness.ready, status="ready" if readiness.ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if readiness.ready else 503)


@router.get(
    "/metrics",
    summary="Prometheus metrics of this server (text exposition format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus's text format."}},
)
async def metrics(service: Service) -> Response:
    # In a thread: the distributed queue's depth is read from Redis at each scrape.
    body = await run_in_threadpool(service.metrics.exposition)
    return Response(body, media_type=service.metrics.CONTENT_TYPE)
