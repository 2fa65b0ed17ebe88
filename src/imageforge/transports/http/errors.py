"""The one map from errors to HTTP responses: `{"ok": false, "error": {"code", "message", "hint"}}`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from imageforge import errors
from imageforge.domain import HTTP_NAMES, accepted_fields

log = logging.getLogger(__name__)

STATUS_BY_CODE: dict[str, int] = {
    errors.InvalidRequest.code: 400,
    errors.InvalidImage.code: 400,
    errors.UnsupportedOperation.code: 400,
    errors.PayloadTooLarge.code: 413,
    errors.PathForbidden.code: 403,
    errors.ModelGuarded.code: 403,
    errors.ModelNotFound.code: 404,
    errors.LoraNotFound.code: 404,
    errors.UnsafeWeights.code: 403,
    errors.TemplateNotFound.code: 404,
    errors.Cancelled.code: 409,
    errors.GenerationFailed.code: 500,
    errors.EngineCrashed.code: 503,
    errors.ModelUnsupported.code: 501,
    errors.WeightsUnavailable.code: 503,
    errors.OutOfMemory.code: 503,
    # Well-formed and valid, but not at this size on this machine now: the remedy is another request (a smaller
    # size), not a retry of this one, which 503 would invite; 413 is about the body's bytes.
    errors.InsufficientMemory.code: 422,
    errors.Interrupted.code: 503,
    errors.StorageUnavailable.code: 503,
    errors.StorageFull.code: 503,
    errors.QueueUnavailable.code: 503,
    errors.FolderUnwritable.code: 503,
    errors.InputMissing.code: 410,
    errors.Timeout.code: 504,
    errors.QueueFull.code: 429,
    errors.QueueShareExceeded.code: 429,
    errors.RateLimited.code: 429,
    errors.AssistBusy.code: 429,
    errors.JobNotFound.code: 404,
    errors.ImageNotFound.code: 404,
    errors.JobExpired.code: 410,
    errors.JobFinished.code: 409,
    errors.JobNotReady.code: 409,
    errors.DataFolderInUse.code: 409,
    errors.ModelBusy.code: 409,
    errors.IdempotencyConflict.code: 409,
    errors.Unauthorized.code: 401,
    errors.HostNotAllowed.code: 400,
    errors.OriginNotAllowed.code: 403,
    errors.BadSignature.code: 403,
    errors.UrlExpired.code: 403,
    errors.WebhookNotAllowed.code: 403,
    errors.WebhooksUnavailable.code: 501,
    errors.NoApiKeys.code: 503,
    errors.McpSessionNotFound.code: 404,
    errors.McpSessionLimit.code: 429,
}

#: The code of a framework error whose status has no code of its own.
HTTP_ERROR = "http_error"
#: Codes for the errors the framework raises itself (routing, body parsing, the body-size limit).
CODE_BY_HTTP_STATUS: dict[int, str] = {
    400: errors.InvalidRequest.code,
    404: errors.RouteNotFound.code,
    405: errors.MethodNotAllowed.code,
    413: errors.PayloadTooLarge.code,
}

#: The status logged for a request whose client hung up before its answer (nginx's name and number for it).
CLIENT_CLOSED_REQUEST = 499

BODY_TOO_LARGE_HINT = "Send a smaller image, or raise IMAGEFORGE_MAX_BODY_MB on the server."
SCHEMA_HINT = "Send a JSON body matching the schema at /docs."
#: The declared name of each request field the HTTP bodies name otherwise.
_DECLARED_NAMES = {wire: name for name, wire in HTTP_NAMES.items()}


def error_response(
    status: int, code: str, message: str, hint: str = "", headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"ok": False, "error": {"code": code, "message": message, "hint": hint}},
        headers=headers,
    )


def _field(location: tuple[object, ...]) -> str:
    parts = [str(part) for part in location if part != "body"]
    return ".".join(parts) or "body"


def _problem(item: Mapping[str, Any]) -> str:
    if item.get("type") == "json_invalid":
        # The location of a JSON syntax error is a character offset, not a field.
        location = tuple(item.get("loc", ()))
        offset = location[-1] if len(location) > 1 else 0
        reason = item.get("ctx", {}).get("error", "malformed JSON")
        return f"The request body is not valid JSON: {reason} at character {offset}"
    return f"{_field(tuple(item.get('loc', ())))}: {item.get('msg', 'invalid')}"


def _hint(items: Sequence[Mapping[str, Any]]) -> str:
    """What the declaration accepts for the refused request fields (`steps: at least 1. ...`), else where the
    schema is."""
    fields = [_field(tuple(item.get("loc", ()))) for item in items]
    # A declared name that HTTP spells otherwise (`count`, sent as `n`) is refused as unknown: say what to send.
    spelled = [f"Send {name} as {HTTP_NAMES[name]}." for name in dict.fromkeys(fields) if name in HTTP_NAMES]
    declared = accepted_fields((HTTP_NAMES.get(name, name) for name in fields), _DECLARED_NAMES)
    return " ".join([*spelled, declared]).strip() or SCHEMA_HINT


def _http_error_text(request: Request, exc: HTTPException) -> tuple[str, str]:
    """The message and hint for a framework error; its default detail ("Not Found") names nothing useful."""
    try:
        default = exc.detail == HTTPStatus(exc.status_code).phrase
    except ValueError:  # a status code outside the standard list
        default = False
    if exc.status_code == 404 and default:
        return f"There is no route {request.method} {request.url.path}.", "See /docs for the routes of this API."
    if exc.status_code == 405 and default:
        allowed = (exc.headers or {}).get("Allow", "")
        return (
            f"{request.url.path} does not accept {request.method}.",
            f"Use {allowed}." if allowed else "See /docs for the methods of each route.",
        )
    if exc.status_code == 413:
        return str(exc.detail), BODY_TOO_LARGE_HINT
    if exc.status_code == 400:
        return str(exc.detail), SCHEMA_HINT
    return str(exc.detail), ""


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception a route can raise; nothing reaches the client as a bare 500 page."""

    @app.exception_handler(errors.ImageforgeError)
    async def on_imageforge_error(request: Request, exc: errors.ImageforgeError) -> JSONResponse:
        response = error_response(STATUS_BY_CODE.get(exc.code, 500), exc.code, exc.message, exc.hint)
        if isinstance(exc, errors.QueueFull):
            response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_problem(item) for item in exc.errors()]
        return error_response(
            400, errors.InvalidRequest.code, "; ".join(problems) or "The request body is invalid.", _hint(exc.errors())
        )

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message, hint = _http_error_text(request, exc)
        code = CODE_BY_HTTP_STATUS.get(exc.status_code, HTTP_ERROR)
        # Keep the framework's headers: a 405 must say which methods are allowed.
        return error_response(exc.status_code, code, message, hint, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # Nobody reads this answer; the status (nginx's "client closed request") is for the logs.
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, errors.ImageforgeError.code, f"Unexpected server error: {type(exc).__name__}.")
