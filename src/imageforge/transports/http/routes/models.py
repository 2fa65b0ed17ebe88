"""GET /models and GET /loras; POST /models/{key}/load and /unload for explicit control of what is resident."""

from __future__ import annotations

from fastapi import APIRouter

from imageforge.transports.http.deps import Service
from imageforge.transports.http.schemas import ErrorResponse, LoraListResponse, ModelListResponse, ModelStateResponse

_ERRORS: dict[int | str, dict[str, object]] = {status: {"model": ErrorResponse} for status in (403, 404, 409, 501, 503)}
router = APIRouter(tags=["models"], responses=_ERRORS)


@router.get("/models", summary="The model catalog with capabilities, defaults, guards and local availability")
def list_models(service: Service) -> ModelListResponse:
    # max_res lets a client (the web UI) offer only sizes the server accepts.
    return ModelListResponse(**service.list_models().model_dump())


@router.get("/loras", summary="The LoRAs a request's `loras` may name: the .safetensors files of the LoRA folder")
def list_loras(service: Service) -> LoraListResponse:
    return LoraListResponse(**service.list_loras().model_dump())


@router.post("/models/{key}/load", summary="Load a model now, so that the next job does not wait for it")
def load_model(key: str, service: Service) -> ModelStateResponse:
    load_s = service.load_model(key)
    return ModelStateResponse(
        key=key,
        resident=True,
        changed=load_s > 0,
        load_s=round(load_s, 3),
        resident_models=service.resident_models(),
    )


@router.post("/models/{key}/unload", summary="Unload a resident model and free its memory (409 while in use)")
def unload_model(key: str, service: Service) -> ModelStateResponse:
    unloaded = service.unload_model(key)
    return ModelStateResponse(key=key, resident=False, changed=unloaded, resident_models=service.resident_models())
