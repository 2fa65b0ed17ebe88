"""The tools' arguments: the image tools take the declared request fields (`REQUEST_FIELDS`) under their declared
types, bounds, defaults and descriptions, plus the few arguments of their own declared here; arguments the input
schema refuses become `invalid_request`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, cast

from pydantic import Field, ValidationError

from imageforge.domain import REQUEST_FIELDS, GenerationParams, ImageSource, Task, TextToImageFields, accepted_fields
from imageforge.errors import InvalidRequest

ImagePath = Annotated[
    str, Field(description="The input image: an absolute path or one relative to the project, in an allowed folder.")
]
MaskPath = Annotated[str, Field(description="The mask, same size as the image: white = repaint, black = keep.")]
JobId = Annotated[str, Field(description="The job_id submit_async_job returned.")]

#: The declared request fields every image tool takes; the tools name `assist_prompt` `assist`.
IMAGE_FIELDS = ("prompt", "model", "style", "steps", "guidance", "seed", "negative_prompt", "assist_prompt", "decoder")
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


def request_params(
    task: Task = Task.TEXT2IMG,
    *,
    image_path: str | None = None,
    mask_path: str | None = None,
    strength: float | None = None,
    assist: bool = False,
    **fields: Any,
) -> GenerationParams:
    """The request an image tool's arguments make: the declared fields, under the tools' names (`assist`), with
    the input image and mask as paths."""
    return TextToImageFields(assist_prompt=assist, **fields).to_params(
        task,
        init_image=ImageSource(path=image_path) if image_path else None,
        mask_image=ImageSource(path=mask_path) if mask_path else None,
        strength=strength,
    )


def invalid_arguments(exc: ValidationError) -> InvalidRequest:
    """The error for tool arguments the input schema refuses: each field with what is wrong with it, and the
    declaration of the request fields among them as the hint."""
    problems = [f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in exc.errors()]
    declared = accepted_fields(str(item["loc"][0]) for item in exc.errors() if item["loc"])
    return InvalidRequest(
        "; ".join(problems),
        hint=declared or "The tool's input schema (tools/list) gives each argument's type and bounds.",
    )
