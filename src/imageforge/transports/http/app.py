"""create_app(service): the FastAPI application, its routers, error map and lifespan."""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import threading
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from types import FrameType
from typing import Any

from fastapi import FastAPI
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route

from imageforge import __version__
from imageforge.domain import is_loopback
from imageforge.service import ImageService
from imageforge.transports import a1111, openai
from imageforge.transports.http import browser
from imageforge.transports.http.audit import AuditTrail
from imageforge.transports.http.auth import AccessRule, ApiKeys, RequireApiKey
from imageforge.transports.http.error_shapes import ErrorBody, SurfaceErrors
from imageforge.transports.http.errors import install_error_handlers
from imageforge.transports.http.head import HeadAsGet
from imageforge.transports.http.limits import BodySizeLimit
from imageforge.transports.http.mcp_sessions import McpSessions
from imageforge.transports.http.request_context import RequestContext
from imageforge.transports.http.request_metrics import RequestMetrics
from imageforge.transports.http.routes import health, images, jobs, models, prompting
from imageforge.transports.http.signed_urls import SECRET_BYTES, ImageUrlSigner
from imageforge.transports.mcp.server import McpOptions, build_mcp_server
from imageforge.transports.web import mount_web_ui

log = logging.getLogger(__name__)

#: How long a signed image link opens its image when the caller gives no lifetime (the result TTL's default).
DEFAULT_LINK_LIFETIME_S = 3600.0
MCP_PATH = "/mcp"
#: The error shape of each compatible API, by the prefix of its paths.
ERROR_SHAPES: dict[str, ErrorBody] = {openai.PREFIX: openai.error_body, "/sdapi/": a1111.error_body}


def create_app(
    service: ImageService,
    *,
    max_body_bytes: int = 32 * 1024 * 1024,
    warmup: bool = False,
    mcp_options: McpOptions | None = None,
    host: str = "127.0.0.1",
    api_keys: ApiKeys | None = None,
    image_urls: ImageUrlSigner | None = None,
    allowed_hosts: Collection[str] = (),
    cors_origins: Collection[str] = (),
    insecure_no_auth: bool = False,
    mcp_sessions_per_client: int = 16,
    openai_model_aliases: Mapping[str, str | None] | None = None,
) -> FastAPI:
    """The HTTP API on `service`, with MCP over Streamable HTTP at `/mcp` in the same process.

    `warmup` loads the default model at startup instead of on first use; `host` is the address served, which
    with `allowed_hosts` decides the Host names answered (`*`: any); `cors_origins` are the other web pages that
    may call the API; the service's audit log records who did what. While `api_keys` has any key, image links in
    results are signed by `image_urls` (by default with a secret of this process's own). Without any key, the
    server answers everyone on a loopback `host` or with `insecure_no_auth`, and nobody elsewhere (`AccessRule`).
    Each client may hold `mcp_sessions_per_client` MCP sessions. `openai_model_aliases` are the OpenAI model names
    the /v1 API takes for a catalog key (None: the default model); by default OpenAI's image model names.
    """
    # Not `api_keys or`: an ApiKeys whose file holds no key yet is false, and must stay to see keys added later.
    keys = api_keys if api_keys is not None else ApiKeys()
    signer = image_urls or ImageUrlSigner(secrets.token_bytes(SECRET_BYTES), DEFAULT_LINK_LIFETIME_S)

    def image_query(name: str) -> str:
        return f"?{signer.query(name)}" if keys else ""

    mcp = build_mcp_server(service, replace(mcp_options or McpOptions(), image_query=image_query))
    # The app-wide Host and Origin checks below cover /mcp; the SDK's own copy of them stays off. Building the app
    # creates the session manager; the endpoint itself is served below, wrapped.
    mcp.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    mcp_endpoint = McpSessions(
        StreamableHTTPASGIApp(mcp.session_manager), manager=mcp.session_manager, per_client=mcp_sessions_per_client
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        # Detecting the device imports torch (seconds); do it beside startup so /health answers at once later.
        threading.Thread(target=_prepare, args=(service, warmup), name="imageforge-warmup", daemon=True).start()
        with _ending_follows_on_stop_signals(service):
            async with mcp.session_manager.run():
                yield
        service.close()

    app = FastAPI(
        title="imageforge",
        version=__version__,
        summary="Local-first image generation: one engine for HTTP, MCP, web and CLI clients.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.openai_model_aliases = (
        openai.DEFAULT_MODEL_ALIASES if openai_model_aliases is None else dict(openai_model_aliases)
    )
    app.state.sd_checkpoints = a1111.CheckpointChoices()
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    app.add_middleware(RequestContext)
    # Added last, so it runs first: an unauthenticated request is refused before its body is read.
    app.state.image_query = image_query
    app.state.access = AccessRule(keys, loopback=is_loopback(host), insecure_no_auth=insecure_no_auth)
    app.add_middleware(RequireApiKey, rule=app.state.access, signer=signer, basic_prefixes=[a1111.PREFIX])
    # Outside the key check: a browser's CORS preflight carries no key, and a refusal must be recorded.
    app.add_middleware(browser.SameOriginWrites, origins=cors_origins)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Location", "Retry-After"],
        )
    hosts = browser.allowed_hosts(host, allowed_hosts)
    app.state.allowed_hosts = "*" if hosts is None else sorted(hosts)
    app.add_middleware(browser.AllowedHosts, hosts=hosts)
    app.add_middleware(AuditTrail, service=service, tool_paths=[MCP_PATH])
    # Outside every check that answers an error, so that each answer under a compatible API takes its shape.
    app.add_middleware(SurfaceErrors, shapes=ERROR_SHAPES)
    # Outside every check, so that refusals count too.
    app.add_middleware(RequestMetrics, service=service, router=app.router, openapi=app.openapi)
    # Outermost: every check below sees a HEAD as the GET it stands for.
    app.add_middleware(HeadAsGet)
    for router in (
        health.router,
        models.router,
        images.router,
        jobs.router,
        prompting.router,
        openai.router,
        a1111.router,
    ):
        app.include_router(router)
    mount_web_ui(app)
    # The MCP endpoint joins the app's own routes (a mount would answer /mcp with a redirect to /mcp/).
    app.router.routes.append(Route(MCP_PATH, endpoint=mcp_endpoint))
    return app


_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None
#: The signals a server stops on (Ctrl+C, and a service manager's stop).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _ending_follows_on_stop_signals(service: ImageService) -> Iterator[None]:
    """While open, a stop signal first ends every open event stream, then goes to the server's own handler.

    The server waits for open requests before it stops the service, and a job's event stream stays open as long
    as the job runs: without this, one open page would hold Ctrl+C up for the whole shutdown timeout while its
    job ran on. Signals reach only the main thread; a server in another thread (tests) is left as it is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, _SignalHandler] = {}

    def on_stop(number: int, frame: FrameType | None) -> None:
        # A signal handler may interrupt code holding the queue's lock: end the follows from the loop instead.
        loop.call_soon_threadsafe(service.end_follows)
        handler = previous.get(number)
        if callable(handler):
            handler(number, frame)

    for stop_signal in STOP_SIGNALS:
        previous[stop_signal] = signal.signal(stop_signal, on_stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _prepare(service: ImageService, warmup: bool) -> None:
    try:
        service.health()
        if warmup:
            service.load_model(service.default_model)
    except Exception:
        log.exception("warmup failed; models will load on first use")
