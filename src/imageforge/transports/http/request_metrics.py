"""Counting HTTP requests by route template, method and status, for /metrics."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, TypeGuard

from starlette.routing import BaseRoute, Mount, Route, Router, compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imageforge.service import ImageService

#: The route label of a request that matches no route: a raw path would let any client add label values.
UNMATCHED = "unmatched"


class RequestMetrics:
    """ASGI middleware counting each HTTP request, once answered, in the service's metrics under the template of
    the route it matched (`/jobs/{job_id}`), never its raw path; a request refused before routing (401, 413) is
    counted under the route it would have matched, found among the app's own routes and its OpenAPI paths
    (`openapi`: the routers it includes are matched lazily, so their routes cannot be asked)."""

    def __init__(
        self, app: ASGIApp, *, service: ImageService, router: Router, openapi: Callable[[], dict[str, Any]]
    ) -> None:
        self.app = app
        self.service = service
        self.router = router
        self.openapi = openapi
        self._templates: list[tuple[re.Pattern[str], str]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers for an exception that escapes before a response starts

        async def observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            route = scope.get("route")
            template = _route_template(route) if route is not None else self._unrouted(scope["path"])
            self.service.metrics.observe_request(template, scope["method"], status, time.perf_counter() - started)

    def _unrouted(self, path: str) -> str:
        """The template of the route `path` would have reached, or `UNMATCHED`."""
        if self._templates is None:
            own = [(route.path_regex, _route_template(route)) for route in self.router.routes if _has_regex(route)]
            documented = [(compile_path(template)[0], template) for template in self.openapi().get("paths", {})]
            self._templates = own + documented
        return next((template for regex, template in self._templates if regex.match(path)), UNMATCHED)


def _has_regex(route: BaseRoute) -> TypeGuard[Route | Mount]:
    return isinstance(route, (Route, Mount))


def _route_template(route: BaseRoute) -> str:
    if isinstance(route, Mount):
        return f"{route.path}/{{path}}"
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED
