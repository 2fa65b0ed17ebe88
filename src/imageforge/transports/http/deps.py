"""Dependencies shared by the routers."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from imageforge.service import ImageService


def _service(request: Request) -> ImageService:
    service: ImageService = request.app.state.service
    return service


Service = Annotated[ImageService, Depends(_service)]
