"""Style templates: named starting points for a prompt (a body with a `{subject}` placeholder and a size).

A template is applied only when a caller names it: either as a request's `style` (the service frames the prompt
and fills in the size and negative prompt the request leaves out), or by asking for the filled-in prompt and size
to send (or edit) as an ordinary request. Users add their own, or replace a built-in, in a TOML file::

    [templates.blueprint]
    title = "Blueprint"
    description = "A technical blueprint drawing."
    body = "a blueprint technical drawing of {subject}, white lines on deep blue paper"
    width = 1024                     # a multiple of 64, at most 1024; default 512
    height = 768
    negative_prompt = "photo, color" # optional: a suggestion, sent only when the caller sends it

An entry that cannot be used is skipped with a logged reason, never fatal.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from imageforge.domain import StyleTemplate
from imageforge.errors import TemplateNotFound

log = logging.getLogger(__name__)

_FIELDS = frozenset({"title", "description", "body", "width", "height", "negative_prompt"})


BUILTIN_TEMPLATES: tuple[StyleTemplate, ...] = (
    StyleTemplate(
        key="whiteboard",
        title="Whiteboard diagram",
        description="A hand-drawn marker diagram on a whiteboard: boxes, arrows, a few labels. Local models "
        "draw lettering poorly, so expect to add or fix labels afterwards.",
        body="a hand-drawn whiteboard diagram of {subject}, black and blue marker lines on a clean white board, "
        "simple boxes and arrows, a few short labels, flat front view, even lighting",
        width=1024,
        height=768,
        negative_prompt="photo of people, clutter, perspective, glare, smudged ink",
    ),
    StyleTemplate(
        key="icon",
        title="Flat clipart icon",
        description="A single flat clipart icon, centred on plain white, in a few solid colours; suits app and "
        "slide icons. Small and square.",
        body="a flat vector clipart icon of {subject}, simple bold shapes, clean thick outlines, limited colour "
        "palette, centred on a plain white background, no text",
        width=512,
        height=512,
        negative_prompt="photorealistic, 3d render, texture, gradient, drop shadow, text, busy background",
    ),
    StyleTemplate(
        key="illustration",
        title="Stock illustration",
        description="A clean, modern editorial illustration with room for copy, as used on web pages and in articles.",
        body="a clean stock illustration of {subject}, modern flat style with soft gradients, harmonious colours, "
        "clear composition with empty space for copy, professional editorial look",
        width=1024,
        height=768,
        negative_prompt="photo, text, cluttered, low contrast",
    ),
    StyleTemplate(
        key="photo",
        title="Photo",
        description="A natural-light photograph in 3:2. Realistic-looking, not real: never present it as a "
        "photo of a real event or person.",
        body="a photograph of {subject}, natural light, realistic colours and textures, sharp focus on the "
        "subject, shallow depth of field, 50mm lens",
        width=768,
        height=512,
        negative_prompt="illustration, painting, drawing, cartoon, cgi, oversaturated",
    ),
    StyleTemplate(
        key="sketch",
        title="Pencil sketch",
        description="A monochrome graphite sketch on paper, with hatched shading.",
        body="a graphite pencil sketch of {subject}, loose confident strokes, cross-hatched shading, "
        "monochrome, on textured off-white paper",
        width=768,
        height=768,
        negative_prompt="colour, paint, ink wash, photo, digital art",
    ),
    StyleTemplate(
        key="poster",
        title="Poster with text",
        description="A bold portrait poster with one short headline. Put the exact words in quotes in the "
        "subject and keep them few: most local models misspell text, flux-q4 does best.",
        body="a bold graphic poster of {subject}, one large clear headline in clean sans-serif lettering, strong "
        "simple layout, high-contrast colours, print design",
        width=768,
        height=1024,
        negative_prompt="misspelled text, gibberish letters, extra text, cluttered layout, blurry lettering",
    ),
)


class TemplateCatalog:
    """The style templates this service offers, by key, in listing order."""

    def __init__(self, templates: Iterable[StyleTemplate]) -> None:
        self._templates = {template.key: template for template in templates}

    def __iter__(self) -> Iterator[StyleTemplate]:
        return iter(self._templates.values())

    def __contains__(self, key: object) -> bool:
        return key in self._templates

    def get(self, key: str) -> StyleTemplate:
        """The template for `key`, or `TemplateNotFound` naming the keys that exist."""
        try:
            return self._templates[key]
        except KeyError:
            raise TemplateNotFound(
                f"Unknown style template '{key}'.",
                hint=f"Use one of: {', '.join(self._templates)} (see list_styles over MCP, GET /templates over HTTP "
                "or `imageforge templates`).",
            ) from None


def load_templates(path: Path | None) -> TemplateCatalog:
    """The built-in templates plus those in the user's file at `path`, which add to or replace built-ins by key.

    A missing file leaves the built-ins; an unreadable file, or an invalid entry, is logged and skipped.
    """
    templates = {template.key: template for template in BUILTIN_TEMPLATES}
    if path is not None and path.is_file():
        for template in _read_file(path):
            if template.key in templates:
                log.info("templates file %s: [templates.%s] replaces the template of that name", path, template.key)
            templates[template.key] = template
    return TemplateCatalog(templates.values())


def _read_file(path: Path) -> list[StyleTemplate]:
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        log.error("templates file %s is unreadable, so none of its templates are available: %s", path, exc)
        return []
    entries = document.get("templates", {})
    if not isinstance(entries, Mapping):
        log.error("templates file %s: `templates` must be a table of [templates.<key>] entries; ignoring it", path)
        return []
    templates: list[StyleTemplate] = []
    for key, entry in entries.items():
        try:
            templates.append(_parse_entry(key, entry))
        except (TypeError, ValueError) as exc:
            log.warning("templates file %s: skipping [templates.%s]: %s", path, key, exc)
            continue
        unknown = sorted(set(entry) - _FIELDS)
        if unknown:
            log.warning("templates file %s: [templates.%s] ignores unknown fields %s", path, key, ", ".join(unknown))
    return templates


def _parse_entry(key: str, entry: Any) -> StyleTemplate:
    if not isinstance(entry, Mapping):
        raise TypeError("an entry must be a table")
    return StyleTemplate(
        key=key,
        title=_string(entry, "title", key),
        description=_string(entry, "description", ""),
        body=_string(entry, "body", None),
        width=_size(entry, "width"),
        height=_size(entry, "height"),
        negative_prompt=_string(entry, "negative_prompt", ""),
    )


def _string(entry: Mapping[str, Any], name: str, default: str | None) -> str:
    value = entry.get(name, default)
    if value is None:
        raise ValueError(f"{name} is required")
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string")
    return value


def _size(entry: Mapping[str, Any], name: str) -> int:
    value = entry.get(name, 512)
    # TOML has real integers; a bool is an int to Python but never a size.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer")
    return value
