"""The tools' arguments: the image tools take the declared request fields (`REQUEST_FIELDS`) under their declared
types, bounds, defaults and descriptions, plus the few arguments of their own declared here; arguments the input
schema refuses become `invalid_request`."""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

from pydantic import Field, ValidationError

from imageforge.domain import (
    REQUEST_FIELDS,
    GenerationParams,
    ImageSource,
    Task,
    TextToImageFields,
    WebhookEvent,
    accepted_fields,
)
from imageforge.errors import InvalidRequest

#: How an agent names an earlier result as an input: the URI of the `imageforge://images/{name}` resource.
IMAGE_URI = "imageforge://images/"
#: How base64 of each accepted format begins (PNG, JPEG, WebP): what tells base64 from a path without a prefix.
_BASE64_STARTS = ("iVBORw0KGgo", "/9j/", "UklGR")
IMAGE_FORMS = (
    "a path on the server (absolute, ~/…, or relative to the project) in an allowed folder; an earlier result as "
    f"{IMAGE_URI}<name>; or the file's bytes as base64 or a data URL (data:image/png;base64,…)"
)
ImageInput = Annotated[str, Field(description=f"The input image: {IMAGE_FORMS}.")]
MaskInput = Annotated[
    str, Field(description="The mask, the image's size: white = repaint, black = keep. The same forms as image.")
]
JobId = Annotated[str, Field(description="The job_id submit_async_job returned.")]

#: The declared request fields every image tool takes; the tools name `assist_prompt` `assist`.
IMAGE_FIELDS = (
    "prompt",
    "model",
    "style",
    "steps",
    "guidance",
    "seed",
    "negative_prompt",
    "assist_prompt",
    "decoder",
    "count",
    "sampler",
    "schedule",
    "loras",
    "allow_downsize",
)
_TOOL_NAMES = {"assist_prompt": "assist"}
_Tool = TypeVar("_Tool", bound=Callable[..., Any])


def declared_arguments(*names: str) -> Callable[[_Tool], _Tool]:
    """Give a tool the declared request fields `names` as arguments (it takes them as `**fields`), each with the
    type, bounds, default and description `REQUEST_FIELDS` declares: `prompt` first, then the tool's own
    keyword arguments, then the others in the declaration's order."""

    def declare(tool: _Tool) -> _Tool:
        own = inspect.signature(tool, eval_str=True)
        declared = {name: _parameter(name) for name in sorted(names, key=list(REQUEST_FIELDS).index)}
        positional = [p for p in own.parameters.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        keyword = [p for p in own.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        first = [declared.pop("prompt")] if "prompt" in declared else []
        tool.__signature__ = own.replace(parameters=[*positional, *first, *keyword, *declared.values()])  # type: ignore[attr-defined]
        return tool

    return declare


def _parameter(name: str) -> inspect.Parameter:
    """The declared request field `name` as a tool's keyword argument."""
    field = REQUEST_FIELDS[name]
    return inspect.Parameter(
        _TOOL_NAMES.get(name, name),
        inspect.Parameter.KEYWORD_ONLY,
        default=inspect.Parameter.empty if field.is_required() else field.default,
        annotation=cast(Any, Annotated)[field.annotation, field],
    )


def image_source(value: str, *, result_path: Callable[[str], Path]) -> ImageSource:
    """The image an agent named in `value`: an earlier result by its URI (`result_path` finds its file, for this
    caller only), base64 or a data URL, or else a path."""
    if value.startswith(IMAGE_URI):
        return ImageSource(path=str(result_path(value.removeprefix(IMAGE_URI))))
    if value.startswith("data:") or value.startswith(_BASE64_STARTS):
        return ImageSource(base64=value)
    return ImageSource(path=value)


def request_params(
    task: Task = Task.TEXT2IMG,
    *,
    image: ImageSource | None = None,
    mask: ImageSource | None = None,
    strength: float | None = None,
    assist: bool = False,
    webhook: str | None = None,
    webhook_events: Sequence[WebhookEvent] = (WebhookEvent.COMPLETED,),
    **fields: Any,
) -> GenerationParams:
    """The request an image tool's arguments make: the declared fields, under the tools' names (`assist`), with
    the input image and mask, and the webhook of a queued job."""
    params = TextToImageFields(assist_prompt=assist, **fields).to_params(
        task, init_image=image, mask_image=mask, strength=strength
    )
    return replace(params, webhook=webhook, webhook_events=tuple(webhook_events))


def invalid_arguments(exc: ValidationError) -> InvalidRequest:
    """The error for tool arguments the input schema refuses: each field with what is wrong with it, and the
    declaration of the request fields among them as the hint."""
    problems = [f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in exc.errors()]
    declared = accepted_fields(str(item["loc"][0]) for item in exc.errors() if item["loc"])
    return InvalidRequest(
        "; ".join(problems),
        hint=declared or "The tool's input schema (tools/list) gives each argument's type and bounds.",
    )


def sealed_schema(schema: dict[str, Any], bounds: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A tool's input schema that refuses arguments it does not declare and carries this server's `bounds` (the
    largest size, the most steps, the models it can run) on the arguments they apply to."""
    sealed = copy.deepcopy(schema)
    sealed["additionalProperties"] = False
    properties = sealed.get("properties", {})
    for name, bound in bounds.items():
        if name not in properties:
            continue
        # An optional argument is `anyOf: [{type}, {type: null}]`: the bound belongs to the value's branch.
        branches = properties[name].get("anyOf", [properties[name]])
        for branch in branches:
            if branch.get("type") != "null":
                branch.update(bound)
    return sealed


def unknown_arguments(tool: str, unknown: Iterable[str], schema: Mapping[str, Any]) -> InvalidRequest:
    """The error for arguments a tool does not have: dropping them would draw something other than was asked."""
    takes = ", ".join(schema.get("properties", {}))
    return InvalidRequest(
        f"{tool} has no argument {', '.join(sorted(unknown))}.",
        hint=f"{tool} takes: {takes}. Its input schema (tools/list) describes each.",
    )
