"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from imageforge.service import ImageService
from imageforge.transports.clients import client_of


def _service(request: Request) -> ImageService:
    service: ImageService = request.app.state.service
    return service


Service = Annotated[ImageService, Depends(_service)]


def _client(request: Request) -> str:
    return client_of(request.scope)


#: Who is asking (API key name or peer address): what per-client limits count by.
ClientName = Annotated[str, Depends(_client)]
