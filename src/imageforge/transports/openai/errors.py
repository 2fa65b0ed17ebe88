"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with imageforge's stable code as
`code` and its hint beside. The SDK picks its exception class from the HTTP status alone (400 BadRequestError,
401 AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 409 ConflictError, 429 RateLimitError,
5xx InternalServerError), so the status stays the one the native API answers."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from imageforge.domain import REQUEST_FIELDS
from imageforge.transports.openai.schemas import ImageEditFields, ImageGenerationBody

#: OpenAI's error `type` by status; any other 4xx is an `invalid_request_error`.
_TYPE_BY_STATUS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
#: The OpenAI field that carries each request field this API names otherwise.
OPENAI_NAME: Mapping[str, str] = {"count": "n", "width": "size", "height": "size"}
#: The names an error message may start with: the request fields, OpenAI's own fields and its files.
_FIELD_NAMES = (
    frozenset(REQUEST_FIELDS)
    | frozenset(ImageGenerationBody.model_fields)
    | frozenset(ImageEditFields.model_fields)
    | {"image", "mask"}
)
_LEADING_NAME = re.compile(r"^([a-z_]+)(:?)[\s.]")


class OpenAIErrorDetail(BaseModel):
    """One error as OpenAI's clients read it, with imageforge's hint beside."""

    message: str
    type: str = Field(description="invalid_request_error, authentication_error, permission_error, … server_error.")
    param: str | None = Field(description="The request field at fault, when one is.")
    code: str = Field(description="imageforge's stable error code, e.g. invalid_request.")
    hint: str = Field("", description="What to change.")


class OpenAIErrorResponse(BaseModel):
    """Every error answer under /v1."""

    error: OpenAIErrorDetail


def error_body(status: int, native: Mapping[str, str]) -> dict[str, Any]:
    """The OpenAI form of a native error (`{"code", "message", "hint"}`) answered with `status`."""
    message = native.get("message", "")
    kind = "server_error" if status >= 500 else _TYPE_BY_STATUS.get(status, "invalid_request_error")
    detail = OpenAIErrorDetail(
        message=message, type=kind, param=_param(message), code=native.get("code", ""), hint=native.get("hint", "")
    )
    return OpenAIErrorResponse(error=detail).model_dump()


def _param(message: str) -> str | None:
    """The field a message names first, as OpenAI names it: any `name:` (`n: Input should be…`, an unknown field
    refused by name), or a known field's name (`width 4096 is outside…`)."""
    found = _LEADING_NAME.match(message)
    if found is None or not (found.group(2) or found.group(1) in _FIELD_NAMES):
        return None
    return OPENAI_NAME.get(found.group(1), found.group(1))
