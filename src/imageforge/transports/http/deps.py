"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from imageforge.domain import Caller
from imageforge.service import ImageService
from imageforge.transports.clients import caller_of


def _service(request: Request) -> ImageService:
    service: ImageService = request.app.state.service
    return service


Service = Annotated[ImageService, Depends(_service)]


def _caller(request: Request) -> Caller:
    return caller_of(request.scope)


#: Who is asking, as the job queue sees it: whose jobs they may see and cancel, and what limits count by.
RequestCaller = Annotated[Caller, Depends(_caller)]
