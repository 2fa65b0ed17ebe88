"""Errors in the shape AUTOMATIC1111's API answers them, so that its clients show our message.

A1111's `handle_exception` answers `{"error": <exception name>, "detail": ..., "body": ..., "errors": ...}`; its
clients show `detail` (or the whole text). Ours puts the stable code where A1111 names the exception, and also
under `code`, with the hint beside the message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imageforge.transports.a1111.schemas import A1111Error


def error_body(status: int, error: Mapping[str, str]) -> dict[str, Any]:
    """A native error (`{"code", "message", "hint"}`) as A1111's API words an error."""
    message, hint = error.get("message", ""), error.get("hint", "")
    code = error["code"]
    shaped = A1111Error(
        error=code, detail=f"{message} {hint}".strip(), errors=message, code=code, message=message, hint=hint
    )
    return shaped.model_dump()
