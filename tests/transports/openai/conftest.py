"""A real server on loopback with an API key, and the official `openai` SDK pointed at its /v1."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from openai import OpenAI
from PIL import Image

from imageforge.service import ImageService
from imageforge.transports.http.app import create_app
from imageforge.transports.http.auth import ApiKeys
from tests.loopback import serving_app

KEY = "alice-key-0123456789"
BEARER = {"Authorization": f"Bearer {KEY}"}
#: Generous: the first generation of a test session builds the `tiny` model.
TIMEOUT_S = 120.0


@pytest.fixture
def served(service: ImageService) -> Iterator[str]:
    """The base URL of a keyed server on `service`."""
    with serving_app(create_app(service, api_keys=ApiKeys([("alice", KEY)]))) as url:
        yield url


@pytest.fixture
def sdk(served: str) -> Iterator[OpenAI]:
    """The SDK as a user configures it for imageforge; no retries, so that each refusal is seen once."""
    with OpenAI(base_url=f"{served}/v1", api_key=KEY, max_retries=0, timeout=TIMEOUT_S) as client:
        yield client


def png(size: tuple[int, int] = (64, 64), mode: str = "RGB", color: object = (200, 40, 40)) -> bytes:
    """A plain image as PNG bytes."""
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")  # type: ignore[arg-type]
    return buffer.getvalue()
