"""GET /models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imageforge.transports.http.deps import Service

router = APIRouter(tags=["models"])


@router.get("/models", summary="The model catalog with capabilities, defaults, guards and local availability")
def list_models(service: Service) -> dict[str, Any]:
    return {"ok": True, "default": service.default_model, "models": service.list_models()}
