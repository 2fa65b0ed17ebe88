"""The one map from errors to HTTP responses: `{"ok": false, "error": {"code", "message", "hint"}}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from imageforge import errors

log = logging.getLogger(__name__)

STATUS_BY_CODE: dict[str, int] = {
    errors.InvalidRequest.code: 400,
    errors.InvalidImage.code: 400,
    errors.UnsupportedOperation.code: 400,
    errors.PayloadTooLarge.code: 413,
    errors.PathForbidden.code: 403,
    errors.ModelGuarded.code: 403,
    errors.ModelNotFound.code: 404,
    errors.Cancelled.code: 409,
    errors.GenerationFailed.code: 500,
    errors.ModelUnsupported.code: 501,
    errors.WeightsUnavailable.code: 503,
    errors.OutOfMemory.code: 503,
    errors.Interrupted.code: 503,
    errors.Timeout.code: 504,
    errors.QueueFull.code: 429,
    errors.JobNotFound.code: 404,
    errors.ImageNotFound.code: 404,
    errors.JobExpired.code: 410,
    errors.JobFinished.code: 409,
    errors.IdempotencyConflict.code: 409,
}


def error_response(status: int, code: str, message: str, hint: str = "") -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"ok": False, "error": {"code": code, "message": message, "hint": hint}}
    )


def _field(location: tuple[object, ...]) -> str:
    parts = [str(part) for part in location if part != "body"]
    return ".".join(parts) or "body"


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
        problems = [f"{_field(tuple(item.get('loc', ())))}: {item.get('msg', 'invalid')}" for item in exc.errors()]
        return error_response(
            400,
            errors.InvalidRequest.code,
            "; ".join(problems) or "The request body is invalid.",
            "Send a JSON body matching the schema at /docs.",
        )

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", f"Unexpected server error: {type(exc).__name__}.")
