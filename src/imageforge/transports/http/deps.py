"""Dependencies shared by the routers."""

from __future__ import annotations

from pathlib import Path
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


def image_url(request: Request, output_path: str) -> str:
    """The absolute link to a stored result image; signed when API keys are on, so that a browser's <img src>
    or curl opens it without a header."""
    name = Path(output_path).name
    query: str = request.app.state.image_query(name)
    return str(request.url_for("get_image", name=name)) + query
