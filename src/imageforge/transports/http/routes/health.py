"""GET /health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from imageforge.transports.http.deps import Service

router = APIRouter(tags=["service"])


@router.get("/health", summary="Service status, device, resident models and Ollama reachability")
async def health(service: Service, request: Request) -> dict[str, Any]:
    keys = request.app.state.api_keys
    if keys and "api_key_name" not in request.scope.get("state", {}):
        # Liveness only: the device, models, versions and the reason of a degraded state are for callers holding a key.
        fault = await run_in_threadpool(service.storage_fault)
        return {"ok": True, "status": "ok" if fault is None else "degraded", "auth": "required"}
    auth = "api_key" if keys else request.app.state.auth_off
    return {
        **await run_in_threadpool(service.health),
        "auth": auth,
        "tls": request.url.scheme == "https",
        "allowed_hosts": request.app.state.allowed_hosts,
    }
