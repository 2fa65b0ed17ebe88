"""Wire schemas of the HTTP API ("schema" = wire type; "model" = ML model)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imageforge.domain import (
    DEFAULT_STRENGTH,
    HTTP_NAMES,
    AssistResult,
    Count,
    GenerationParams,
    Health,
    ImageDescription,
    ImageSource,
    JobWebhook,
    LoraCatalog,
    ModelCatalog,
    Policy,
    RenderedTemplate,
    ResultImage,
    ReturnModeChoice,
    Strength,
    StyleTemplate,
    Task,
    TaskChoice,
    TextToImageFields,
    WebhookEvents,
    WebhookUrl,
)
from imageforge.errors import InvalidRequest


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class GenerateBody(TextToImageFields):
    """POST /generate: text to image. Its fields are the domain's declaration (`TextToImageFields`)."""

    return_mode: ReturnModeChoice
    count: Count = Field(alias=HTTP_NAMES["count"])


class EditBody(GenerateBody):
    """POST /edit: image to image."""

    init_image: str | None = Field(None, description="The input image, base64 (a data: URL prefix is fine).")
    init_image_path: str | None = Field(None, description="Or a path under an allowed folder.")
    strength: Strength = DEFAULT_STRENGTH[Task.IMG2IMG]

    def _init(self) -> ImageSource:
        return ImageSource(base64=self.init_image, path=self.init_image_path)

    def to_edit_params(self) -> GenerationParams:
        return self.to_params(Task.IMG2IMG, init_image=self._init(), strength=self.strength)


class InpaintBody(EditBody):
    """POST /inpaint: repaint the white part of a mask."""

    mask_image: str | None = Field(None, description="Mask, base64: white = repaint, black = keep.")
    mask_image_path: str | None = Field(None, description="Or a path under an allowed folder.")
    strength: Strength = DEFAULT_STRENGTH[Task.INPAINT]

    def to_inpaint_params(self) -> GenerationParams:
        mask = ImageSource(base64=self.mask_image, path=self.mask_image_path)
        return self.to_params(Task.INPAINT, init_image=self._init(), mask_image=mask, strength=self.strength)


class JobBody(InpaintBody):
    """POST /jobs: the body of /generate, /edit or /inpaint plus the `task` that says which."""

    task: TaskChoice
    strength: Strength
    webhook: WebhookUrl
    webhook_events: WebhookEvents

    def to_job_params(self) -> GenerationParams:
        """The request this body makes, with its webhook."""
        return replace(self._task_params(), webhook=self.webhook, webhook_events=self.webhook_events)

    def _task_params(self) -> GenerationParams:
        if self.task is Task.TEXT2IMG:
            if any((self.init_image, self.init_image_path, self.mask_image, self.mask_image_path)):
                raise InvalidRequest(
                    "text2img takes no input image.", hint='Set "task" to "img2img" or "inpaint" to use one.'
                )
            return self.to_params()
        strength = self.strength if self.strength is not None else DEFAULT_STRENGTH[self.task]
        mask = ImageSource(self.mask_image, self.mask_image_path) if self.task is Task.INPAINT else None
        return self.to_params(self.task, init_image=self._init(), mask_image=mask, strength=strength)


class ReplayBody(_Body):
    """POST /replay: a result's manifest, or an image that carries one."""

    manifest: dict[str, Any] | None = Field(None, description="A result's `manifest`, unchanged.")
    image: str | None = Field(
        None, description="Instead of manifest: a PNG imageforge made, as saved, base64-encoded (data: URL or bare)."
    )
    image_path: str | None = Field(None, description="Or that PNG's path under an allowed folder.")

    def image_source(self) -> ImageSource | None:
        """The image sent, if any."""
        if self.image is None and self.image_path is None:
            return None
        return ImageSource(base64=self.image, path=self.image_path)


class ImageItem(ResultImage):
    """One image of a result: its seed, where it is, and (synchronous answers) the image as `return_mode` asks."""

    output_path: str | None = Field(description="The PNG on the server (return_mode path or both).")  # type: ignore[assignment]
    image_base64: str | None = Field(
        None, description="The PNG, base64 (return_mode base64 or both); null in a job's result."
    )
    url: str = Field(description="The full image (GET /images/{name}), a signed link when API keys are on.")


class ImageResponse(ImageDescription):
    """The result of /generate, /edit and /inpaint: the first image's description, and the image or its path;
    `images` has every image of the request (`n` of them), the first included."""

    ok: Literal[True] = True
    output_path: str | None = Field(description="The PNG on the server (return_mode path or both).")
    image_base64: str | None = Field(description="The PNG, base64 (return_mode base64 or both).")
    mime: str
    images: list[ImageItem] = Field(description="Every image, with consecutive seeds; the first is the one above.")


class AssistBody(_Body):
    """POST /assist: expand a prompt through the local LLM."""

    prompt: str = Field(..., min_length=1, description="The image request to expand.", examples=["a red fox"])
    style: str | None = Field(None, description="A style to write it in.", examples=["pencil sketch"])


class AssistResponse(AssistResult):
    """The result of POST /assist: the service's `AssistResult`, as the MCP tool `assist_prompt` answers it too."""

    ok: Literal[True] = True


class ErrorDetail(BaseModel):
    code: str = Field(..., description="Stable machine-readable code, e.g. invalid_request.")
    message: str
    hint: str = ""


class ErrorResponse(BaseModel):
    ok: Literal[False] = False
    error: ErrorDetail


class JobLinks(BaseModel):
    self: str
    events: str
    cancel: str
    image: str | None = Field(None, description="The full image, once the job succeeded.")
    init_image: str | None = Field(None, description="The input image of an img2img or inpaint job, as a PNG.")
    mask_image: str | None = Field(None, description="The mask of an inpaint job, as a PNG.")


class JobProgress(BaseModel):
    step: int
    total: int


class JobResponse(BaseModel):
    """A job as GET /jobs/{id} shows it."""

    ok: Literal[True] = True
    job_id: str
    status: str = Field(..., description="queued, running, succeeded, failed or cancelled.")
    task: str | None
    model: str | None
    queue_position: int | None = Field(None, description="1 = next to run; 0 = running; null once ended.")
    progress: JobProgress
    created_at: str
    started_at: str | None
    finished_at: str | None
    expires_at: str | None = Field(None, description="After this the result answers 410 expired (ISO 8601, UTC).")
    eta_s: float | None = Field(
        None,
        description="About how many seconds until the job ends, from recent step and run times; null once ended "
        "or when nothing has run yet to go by.",
    )
    timings: dict[str, float] = Field(..., description="queue_ms, load_ms, run_ms.")
    result: ImageResponse | None = None
    error: ErrorDetail | None = None
    webhook: JobWebhook | None = Field(
        None, description="Where the job's events are posted, and each delivery: attempts, last status, outcome."
    )
    links: JobLinks


class JobListResponse(BaseModel):
    ok: Literal[True] = True
    jobs: list[JobResponse]


class HealthResponse(Health):
    """GET /health with a key (or on a server without keys): the service's health and how it is reached."""

    auth: str = Field(description='"api_key", "off (loopback only)", "OFF: …" (insecure on purpose).')
    tls: bool
    allowed_hosts: list[str] | str = Field(description='The Host names answered, or "*" for any.')


class LivenessResponse(BaseModel):
    """GET /health without a key on a server that needs one: alive, and whether it takes jobs, nothing more."""

    ok: Literal[True] = True
    status: str = Field(description='"ok", or "degraded" while jobs cannot be stored.')
    auth: Literal["required"] = "required"


class LockedResponse(BaseModel):
    """GET /health on a network server with no API key left: it answers nobody else until a key is added."""

    ok: Literal[True] = True
    status: str = Field(description='"ok", or "degraded" while jobs cannot be stored.')
    auth: Literal["no_api_keys"] = "no_api_keys"
    hint: str = Field(description="What to do.")


class AliveResponse(BaseModel):
    """GET /health/live: the process answers. Open to every caller, and says nothing else."""

    ok: Literal[True] = True
    status: Literal["alive"] = "alive"


class ReadinessCheckSchema(BaseModel):
    """One readiness check: whether it passes, and when not, its error code (and, for a caller who may read
    /health in full, the message and hint)."""

    ok: bool
    code: str | None = Field(None, description="The error code of a failing check.")
    message: str | None = Field(None, description="Why it fails; only for a caller who may read /health in full.")
    hint: str | None = Field(None, description="What to change; only where the message is.")


class ReadinessResponse(BaseModel):
    """GET /health/ready: whether the server takes and runs jobs now (200), or which checks fail (503)."""

    ok: bool
    status: Literal["ready", "not_ready"]
    checks: dict[str, ReadinessCheckSchema] = Field(description="storage, queue and model.")


class PolicyResponse(Policy):
    """GET /policy: the policy in force, with its version and source."""

    ok: Literal[True] = True


class TemplateListResponse(BaseModel):
    """GET /templates: every style template, built-in or from the templates file."""

    ok: Literal[True] = True
    templates: list[StyleTemplate]


class RenderedTemplateResponse(RenderedTemplate):
    """GET /templates/{key}: a template filled with the subject, the starting point of a request."""

    ok: Literal[True] = True


class ModelListResponse(ModelCatalog):
    """GET /models: the catalog as the service describes it."""

    ok: Literal[True] = True


class LoraListResponse(LoraCatalog):
    """GET /loras: the LoRAs a request's `loras` may name."""

    ok: Literal[True] = True


class ModelStateResponse(BaseModel):
    """The answer to POST /models/{key}/load and /unload."""

    ok: Literal[True] = True
    key: str
    resident: bool = Field(..., description="Whether the model is resident now.")
    changed: bool = Field(..., description="False when it already was (or was not) resident.")
    load_s: float | None = Field(None, description="Seconds spent loading, for /load.")
    resident_models: list[str] = Field(..., description="Every resident model, least recently used first.")
