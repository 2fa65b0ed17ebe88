"""The error tree. Every error carries a stable `code`; each transport maps codes in exactly one place.

ImageforgeError
├── InvalidRequest          invalid_request    the request itself is malformed or out of range
│   ├── InvalidImage        invalid_image      an input image that cannot be decoded or used
│   └── PayloadTooLarge     payload_too_large  a body or image over the configured size
├── UnsupportedOperation    unsupported_operation  the model cannot do this task
├── ModelNotFound           model_not_found
├── LoraNotFound            lora_not_found     no .safetensors file of that name in the LoRA folder
├── UnsafeWeights           unsafe_weights     weights in a pickle format (.ckpt, .pt, …), which are never loaded
├── ModelGuarded            model_guarded      the model needs an explicit opt-in
├── WeightsUnavailable      weights_unavailable  not on disk and cannot be downloaded
├── ModelUnsupported        model_unsupported  this installation cannot run the model (library too old)
├── ModelBusy               model_busy         the model is in use and cannot be unloaded now
├── PathForbidden           path_forbidden     a path outside the allowed roots
├── TemplateNotFound        template_not_found  no style template has that key
├── WebhookNotAllowed       webhook_not_allowed  a webhook URL whose host the operator does not allow (no SSRF)
├── WebhooksUnavailable     webhooks_unavailable  this queue cannot send webhooks (the distributed queue)
├── GenerationFailed        generation_failed  the backend failed on a valid request
│   └── EngineCrashed       engine_crashed     the engine's child process died during the job
├── Cancelled               cancelled          the generation was stopped on request
├── InsufficientMemory  insufficient_memory  (at submit) the job would not fit the memory free on this machine
├── QueueFull               queue_full         no room in the queue now (each carries `retry_after_s`)
│   ├── QueueShareExceeded  queue_share_exceeded  this client holds its share of the queue
│   ├── RateLimited         rate_limited       this client submitted its jobs-per-minute
│   └── AssistBusy          assist_busy        as many prompt expansions as the server runs at once are running
├── StorageUnavailable      storage_unavailable  a data folder or the job database cannot be written now
│   └── StorageFull         storage_full       the disk under it is full
├── InputMissing            input_missing      a queued job's input image is gone from the input store
├── FolderUnwritable        folder_unwritable  (at start) a folder the service writes is not a writable folder
├── McpSessionNotFound      session_not_found  an MCP session that does not exist, ended, or is another client's
├── McpSessionLimit         too_many_sessions  the client holds IMAGEFORGE_MCP_SESSIONS_PER_CLIENT MCP sessions
├── NoApiKeys               no_api_keys        a network server without any API key left answers nobody
├── Unauthorized            unauthorized       no API key, or one the server does not know
├── InsecureBind            insecure_bind      (imageforge serve) a network address without any API key
├── TlsExists               tls_exists         (imageforge tls selfsigned) a pair is there already
├── HostNotAllowed          host_not_allowed   a Host header the server does not answer to (DNS rebinding)
├── OriginNotAllowed        origin_not_allowed  a state-changing request from another site's page
├── BadSignature            bad_signature      a signed image link that was changed
├── UrlExpired              url_expired        a signed image link past its expiry
├── RouteNotFound           not_found          no route at that path
├── MethodNotAllowed        method_not_allowed  the route does not take that method
└── ServerUnavailable       server_unavailable  (Python client) no server answered at the URL in time
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class ImageforgeError(Exception):
    """Base of every error the service reports to a client."""

    code = "internal_error"

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class InvalidRequest(ImageforgeError):
    code = "invalid_request"


class InvalidImage(InvalidRequest):
    code = "invalid_image"


class PayloadTooLarge(InvalidRequest):
    code = "payload_too_large"


class UnsupportedOperation(ImageforgeError):
    code = "unsupported_operation"


class ModelNotFound(ImageforgeError):
    code = "model_not_found"


class LoraNotFound(ImageforgeError):
    code = "lora_not_found"


class UnsafeWeights(ImageforgeError):
    code = "unsafe_weights"


class ModelGuarded(ImageforgeError):
    code = "model_guarded"


class WeightsUnavailable(ImageforgeError):
    code = "weights_unavailable"


class ModelUnsupported(ImageforgeError):
    code = "model_unsupported"


class PathForbidden(ImageforgeError):
    code = "path_forbidden"


class GenerationFailed(ImageforgeError):
    code = "generation_failed"


class EngineCrashed(GenerationFailed):
    """The engine's child process (stable-diffusion.cpp's sd-server) died during the job; the next job starts a
    fresh one."""

    code = "engine_crashed"


class Cancelled(ImageforgeError):
    code = "cancelled"


class OutOfMemory(ImageforgeError):
    code = "out_of_memory"

    def __init__(self, message: str, *, hint: str = "", savers: frozenset[str] = frozenset()) -> None:
        super().__init__(message, hint=hint)
        #: the memory savers (`Fallback` values) that were on when the engine ran out, so a retry adds the others
        self.savers = savers


class InsufficientMemory(ImageforgeError):
    """At submit: the job's estimated peak memory is more than this machine has free, so it is refused before it
    runs into an out-of-memory failure."""

    code = "insufficient_memory"


class QueueFull(ImageforgeError):
    code = "queue_full"

    def __init__(self, message: str, *, hint: str = "", retry_after_s: int = 5) -> None:
        super().__init__(message, hint=hint)
        self.retry_after_s = retry_after_s


class QueueShareExceeded(QueueFull):
    """One client holds as many waiting and running jobs as it may; other clients' jobs still get in."""

    code = "queue_share_exceeded"


class RateLimited(QueueFull):
    """One client submitted as many jobs as it may in a minute."""

    code = "rate_limited"


class AssistBusy(QueueFull):
    """As many prompt expansions as the server allows at once are waiting on the local LLM."""

    code = "assist_busy"


class JobNotFound(ImageforgeError):
    code = "job_not_found"


class JobExpired(ImageforgeError):
    code = "expired"


class JobFinished(ImageforgeError):
    code = "job_finished"


class DataFolderInUse(ImageforgeError):
    """Another process runs the jobs of this data folder."""

    code = "data_dir_in_use"


class JobNotReady(ImageforgeError):
    """A job's result was asked for, or deleted, before the job ended."""

    code = "job_not_ready"


class ImageNotFound(ImageforgeError):
    code = "image_not_found"


class IdempotencyConflict(ImageforgeError):
    code = "idempotency_conflict"


class Timeout(ImageforgeError):
    code = "timeout"


class Interrupted(ImageforgeError):
    code = "interrupted"


class ModelBusy(ImageforgeError):
    """A model cannot be unloaded while a job is using it."""

    code = "model_busy"


class TemplateNotFound(ImageforgeError):
    """No style template has the requested key."""

    code = "template_not_found"


class WebhookNotAllowed(ImageforgeError):
    """A job's webhook URL that is not http(s), or whose host (or the addresses it resolves to) the operator's
    IMAGEFORGE_WEBHOOK_ALLOW does not list: the server never posts to a place it was not told it may."""

    code = "webhook_not_allowed"


class WebhooksUnavailable(ImageforgeError):
    """A job with a webhook on a queue that cannot send them (the distributed queue, for now)."""

    code = "webhooks_unavailable"


class ServerUnavailable(ImageforgeError):
    """The client reached no imageforge server: the connection was refused or failed, or no answer came in time."""

    code = "server_unavailable"


class StorageUnavailable(ImageforgeError):
    """A folder the service writes, or the job database, refused a write: read-only, gone, or an I/O error."""

    code = "storage_unavailable"


class StorageFull(StorageUnavailable):
    """The disk holding a folder the service writes, or the job database, is full."""

    code = "storage_full"


class QueueUnavailable(StorageUnavailable):
    """The distributed queue's Redis (IMAGEFORGE_QUEUE_URL), where its jobs are stored, did not answer."""

    code = "queue_unavailable"


class InputMissing(ImageforgeError):
    """A job's input image is not in the input store (removed with the jobs that used it, or damaged)."""

    code = "input_missing"


class FolderUnwritable(ImageforgeError):
    """At start: a folder the service writes is missing and cannot be made, is not a folder, or is read-only."""

    code = "folder_unwritable"


#: SQLite's primary result code for "database or disk is full".
_SQLITE_FULL = 13
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (an OSError, or an error of the sqlite3 module) says the disk is full."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    code = getattr(exc, "sqlite_errorcode", None)
    return (isinstance(code, int) and code & 0xFF == _SQLITE_FULL) or "disk is full" in str(exc)


def write_problem(exc: BaseException) -> str:
    """What is wrong with a place a write failed in, in words that name no path (the OS's messages do)."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOTDIR, errno.EEXIST):
            return "is not a folder (a file is in the way)"
        if exc.errno == errno.EROFS:
            return "is on a read-only file system"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "is not writable by this user"
        if exc.errno == errno.ENOENT:
            return "does not exist"
        return f"failed: {os.strerror(exc.errno)}" if exc.errno else f"failed: {type(exc).__name__}"
    return f"failed: {exc}"  # sqlite3's messages name no path ("attempt to write a readonly database")


def storage_error(exc: BaseException, place: str, setting: str) -> StorageUnavailable:
    """The client-facing error for a failed write to `place` ("The output folder"), which lives under `setting`
    (OUTPUT_DIR): `StorageFull` or `StorageUnavailable`, naming the setting and never the server's path."""
    if is_disk_full(exc):
        return StorageFull(
            f"{place} is full: the disk holding {setting} has no space left.",
            hint=f"Free space on the disk holding {setting} (old outputs, the cache), then retry; the server takes "
            "jobs again once it can write there.",
        )
    return StorageUnavailable(
        f"{place} cannot be written: {setting} {write_problem(exc)}.",
        hint=f"Make {setting} a folder the server can write, then retry; the server takes jobs again once it can "
        "write there.",
    )


def folder_unwritable(exc: OSError, setting: str, folder: Path) -> FolderUnwritable:
    """The start-up refusal for `folder` (the value of `setting`), after `exc` when making or writing in it."""
    return FolderUnwritable(
        f"{setting} ({folder}) {write_problem(exc)}.",
        hint=f"Set {setting} to a folder this user can write, or fix that one; the server writes there.",
    )


class McpSessionNotFound(ImageforgeError):
    """An MCP session id that does not exist, has ended, or is another client's."""

    code = "session_not_found"


class McpSessionLimit(ImageforgeError):
    """A client holds as many MCP sessions as it may (IMAGEFORGE_MCP_SESSIONS_PER_CLIENT)."""

    code = "too_many_sessions"


class NoApiKeys(ImageforgeError):
    """A server on a network address with no API key left: it answers nobody until a key is added."""

    code = "no_api_keys"


def from_code(code: str, message: str, hint: str = "") -> ImageforgeError:
    """The error of class `code` (as a finished job stores it), or a base error that carries the code."""
    pending: list[type[ImageforgeError]] = [ImageforgeError]
    while pending:
        cls = pending.pop()
        if cls.code == code:
            return cls(message, hint=hint)
        pending.extend(cls.__subclasses__())
    error = ImageforgeError(message, hint=hint)
    error.code = code
    return error


# -- refused at the door: the HTTP transport's checks answer these codes before any route runs ---------------


class Unauthorized(ImageforgeError):
    """No API key, or one the server does not know."""

    code = "unauthorized"


class HostNotAllowed(ImageforgeError):
    """A Host header the server does not answer to: a page whose name was rebound to this machine."""

    code = "host_not_allowed"


class OriginNotAllowed(ImageforgeError):
    """A state-changing request (or a websocket) from a web page elsewhere."""

    code = "origin_not_allowed"


class BadSignature(ImageforgeError):
    """A signed image link whose name or expiry was changed, or whose signature is another image's."""

    code = "bad_signature"


class UrlExpired(ImageforgeError):
    """A signed image link past its expiry."""

    code = "url_expired"


class RouteNotFound(ImageforgeError):
    """No route at that path."""

    code = "not_found"


class MethodNotAllowed(ImageforgeError):
    """The route does not take that method."""

    code = "method_not_allowed"


# -- the command line's own refusals ---------------------------------------------------------------------------


class InsecureBind(ImageforgeError):
    """`imageforge serve` on an address other machines reach, with no API key and no explicit insecure setting."""

    code = "insecure_bind"


class TlsExists(ImageforgeError):
    """`imageforge tls selfsigned` would overwrite a certificate pair without `--force`."""

    code = "tls_exists"


class ServerSideMissing(ImageforgeError):
    """A command that runs the engine in its own process, on the client-only install (no `imageforge[server]`)."""

    code = "server_side_missing"
