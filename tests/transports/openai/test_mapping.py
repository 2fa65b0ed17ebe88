"""The OpenAI API takes every field of the one request declaration, with the declaration's own bounds."""

from __future__ import annotations

from imageforge.domain import REQUEST_FIELDS, TextToImageFields
from imageforge.transports.openai.mapping import CARRIED, DECIDED, EDIT_EXTRAS, GENERATION_EXTRAS


def test_every_declared_field_is_an_openai_field_an_extra_field_or_decided_by_the_endpoint() -> None:
    for name in REQUEST_FIELDS:
        assert (name in CARRIED) + (name in DECIDED) + (name in EDIT_EXTRAS.model_fields) == 1, name
    assert set(GENERATION_EXTRAS.model_fields) == set(EDIT_EXTRAS.model_fields) & set(TextToImageFields.model_fields)


def test_extra_fields_keep_their_declared_type_bounds_and_default() -> None:
    for name, extra in EDIT_EXTRAS.model_fields.items():
        declared = REQUEST_FIELDS[name]
        assert (extra.annotation, extra.metadata, extra.default) == (
            declared.annotation,
            declared.metadata,
            declared.default,
        ), name
