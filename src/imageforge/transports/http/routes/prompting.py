"""GET /policy: what the server adds to every prompt, so people and agents can see what is filtered.

POST /assist: a prompt expanded through the local LLM (Ollama), or passed through with the reason.

GET /templates and GET /templates/{key}?subject=: style templates, starting points a caller edits and sends.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from imageforge.transports.http.deps import Service
from imageforge.transports.http.schemas import (
    AssistBody,
    AssistResponse,
    ErrorResponse,
    PolicyResponse,
    RenderedTemplateResponse,
    TemplateListResponse,
)

router = APIRouter(tags=["prompting"])


@router.get("/policy", summary="The active policy: baseline negative prompt, directive, restricted-use text")
def policy(service: Service) -> PolicyResponse:
    return PolicyResponse.model_validate(service.policy.model_dump())


_TEMPLATE_ERRORS: dict[int | str, dict[str, object]] = {status: {"model": ErrorResponse} for status in (400, 404)}


@router.get("/templates", summary="The style templates: a prompt body to start from and a recommended size")
def list_templates(service: Service) -> TemplateListResponse:
    return TemplateListResponse(templates=service.list_templates())


@router.get(
    "/templates/{key}",
    summary="A style template filled with a subject: the prompt and size to start a request from",
    responses=_TEMPLATE_ERRORS,
)
def render_template(
    key: str,
    service: Service,
    subject: Annotated[str, Query(description="What to draw; it replaces {subject} in the template's body.")] = "",
) -> RenderedTemplateResponse:
    # An absent subject reaches the service, which refuses it with the same error every transport gives.
    return RenderedTemplateResponse.model_validate(service.render_template(key, subject).model_dump())


@router.post(
    "/assist",
    summary="Expand a prompt through the local LLM (Ollama); passed through unchanged, with the reason, without it",
    responses={400: {"model": ErrorResponse}},
)
def assist(body: AssistBody, service: Service) -> AssistResponse:
    return AssistResponse.model_validate(service.assist(body.prompt, body.style).model_dump())
