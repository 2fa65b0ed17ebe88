"""GET /policy: what the server adds to every prompt, so people and agents can see what is filtered."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from imageforge.transports.http.deps import Service

router = APIRouter(tags=["prompting"])


@router.get("/policy", summary="The active policy: baseline negative prompt, directive, restricted-use text")
def policy(service: Service) -> dict[str, Any]:
    return {"ok": True, **service.policy.describe()}
