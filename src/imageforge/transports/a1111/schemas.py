"""Wire schemas of the AUTOMATIC1111-compatible API: the fields its clients send and the answers they read.

Only the fields that map onto our request are declared; every other field A1111 accepts is kept as sent (so
that the answer echoes it, as A1111's does) and checked by `mapping.refuse_unhonoured`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Txt2ImgBody(BaseModel):
    """POST /sdapi/v1/txt2img. Absent numbers take the model's defaults, not A1111's (50 steps, CFG 7, 512 px):
    a turbo model is ruined by those."""

    # A1111 ignores fields it does not know; so do we, after `refuse_unhonoured` has seen them.
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int | None = Field(-1, description="-1 (or null): a random seed; the answer's info says which.")
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    batch_size: int = Field(1, ge=1)
    n_iter: int = Field(1, ge=1)
    sampler_name: str | None = None
    sampler_index: str | None = Field(None, description="A1111's older name for sampler_name.")
    scheduler: str | None = None
    override_settings: dict[str, Any] | None = None
    send_images: bool = True


class Img2ImgBody(Txt2ImgBody):
    """POST /sdapi/v1/img2img: the first of `init_images`, repainted where `mask` is white when it is sent."""

    init_images: list[str] | None = None
    mask: str | None = None
    denoising_strength: float | None = None


class ImagesAnswer(BaseModel):
    """What txt2img and img2img answer: base64 PNGs, the request as sent, and `info`, a JSON string."""

    images: list[str]
    parameters: dict[str, Any]
    info: str


class PngInfoBody(BaseModel):
    """POST /sdapi/v1/png-info: a PNG, base64 (a data URL is fine)."""

    image: str


class PngInfoAnswer(BaseModel):
    """A PNG's `parameters` text, its other text chunks, and the text parsed into A1111's keys."""

    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class ProgressState(BaseModel):
    """The `state` of GET /sdapi/v1/progress, for the caller's own jobs."""

    skipped: bool = False
    interrupted: bool = False
    stopping_generation: bool = False
    job: str = ""
    job_count: int = 0
    job_timestamp: str = "0"
    job_no: int = 0
    sampling_step: int = 0
    sampling_steps: int = 0


class ProgressAnswer(BaseModel):
    """GET /sdapi/v1/progress: how far the caller's running job is, and its live preview."""

    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None = None
    textinfo: str | None = None


class SdModel(BaseModel):
    """One entry of GET /sdapi/v1/sd-models: a catalog model as A1111 lists a checkpoint."""

    title: str
    model_name: str
    hash: str
    sha256: str
    filename: str
    config: str | None = None


class A1111Error(BaseModel):
    """An error as A1111's API answers one (its `handle_exception`), with our stable code, message and hint."""

    error: str = Field(description="The stable code, where A1111 names its exception.")
    detail: str = Field(description="The message and the hint: what A1111 clients show.")
    body: str = ""
    errors: str = Field(description="The message.")
    code: str = Field(description="The stable code (docs/http-api.md lists them).")
    message: str
    hint: str = Field(description="What to change.")
