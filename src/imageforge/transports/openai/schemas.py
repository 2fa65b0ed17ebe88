"""The OpenAI Images API's wire schemas, as the official SDK sends and parses them ("schema" = wire type).

Where a field is also ours it takes our declaration (`Prompt`, `Count`, `ModelKey`): its bounds are the native
API's. The bodies allow extra keys: those are imageforge's own request fields (`extra_body` in the SDK), checked
against the declaration by `mapping.our_fields`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from imageforge.domain import Count, ModelKey, Prompt

#: What `quality` may say; each maps to a number of steps (`mapping.QUALITY_STEPS`).
Quality = Literal["low", "medium", "high", "xhigh", "max", "auto", "standard", "hd"]
#: What an answer says of the quality asked.
AnsweredQuality = Literal["low", "medium", "high", "xhigh", "max"]
#: The formats an image is answered in: the stored PNG, or re-encoded.
OutputFormat = Literal["png", "jpeg", "webp"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class AnswerFields(_Wire):
    """What every image endpoint takes: the model, how many images, their size and how the answer carries them."""

    model: ModelKey
    n: Count
    size: str | None = Field(
        None, description='"WIDTHxHEIGHT" within the server\'s bounds, or "auto" (the model\'s size).'
    )
    response_format: Literal["b64_json", "url"] = Field(
        "b64_json", description="b64_json: the image inline; url: a link to the stored PNG (signed when keys are on)."
    )
    user: str | None = Field(None, max_length=256, description="The end user, recorded in the audit log.")
    safety_identifier: str | None = Field(None, max_length=256, description="Recorded like `user`.")
    style: str | None = Field(
        None, description="OpenAI's vivid or natural (ignored), or else the key of an imageforge style template."
    )


class PromptFields(AnswerFields):
    """The fields of the endpoints that take a prompt (generations and edits)."""

    prompt: Prompt
    quality: Quality | None = Field(None, description="low, medium (auto, standard), high (hd), xhigh, max: steps.")
    output_format: OutputFormat = Field("png", description="png (the stored image), jpeg or webp (re-encoded).")
    output_compression: int | None = Field(None, ge=0, le=100, description="The jpeg or webp encoder's quality.")
    background: Literal["opaque", "auto", "transparent"] | None = Field(
        None, description="opaque and auto are accepted; the models draw no transparency, so transparent is refused."
    )
    stream: bool = Field(False, description="Answer with Server-Sent Events: partial images, then each image.")
    partial_images: int | None = Field(
        None, ge=0, le=3, description="How many partial images a stream sends, from the live previews."
    )


class ImageGenerationBody(PromptFields):
    """POST /v1/images/generations."""

    moderation: Literal["low", "auto"] | None = Field(
        None, description="Ignored: the server's own policy applies to every request."
    )


class ImageEditFields(PromptFields):
    """POST /v1/images/edits: the form's text fields (its files are `image` and `mask`)."""

    input_fidelity: Literal["high", "low"] | None = Field(
        None, description="Ignored: `strength` says how far the edit moves from the image."
    )


class ImageVariationFields(AnswerFields):
    """POST /v1/images/variations: the form's text fields. OpenAI's variation has no prompt; ours needs one, sent
    as an extra field (the SDK's `extra_body`)."""

    prompt: Prompt | None = None


class ImageData(BaseModel):
    """One image of an answer."""

    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = Field(None, description="The prompt drawn, when assist or a style changed it.")


class ImagesResponse(BaseModel):
    """The answer of every image endpoint."""

    created: int
    data: list[ImageData]
    output_format: OutputFormat
    size: str
    quality: AnsweredQuality | None = None
    background: Literal["opaque"] = "opaque"


class OpenAIModel(BaseModel):
    """One catalog entry as an OpenAI model object."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(0, description="0: a catalog entry has no creation date.")
    owned_by: str = "imageforge"


class OpenAIModelList(BaseModel):
    """GET /v1/models."""

    object: Literal["list"] = "list"
    data: list[OpenAIModel]
