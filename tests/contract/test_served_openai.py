"""The OpenAI SDK against `imageforge serve` as a user starts it: the key and the model aliases from the
environment reach the /v1 API."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import openai
import pytest
from openai import OpenAI
from PIL import Image

from tests.contract.conftest import private_data, serving

KEY = "alice-key-0123456789"


def test_the_sdk_generates_through_a_served_api_with_the_environments_key_and_aliases(
    tmp_path: Path, data_dir: Path
) -> None:
    settings = {"IMAGEFORGE_API_KEYS": f"alice:{KEY}", "IMAGEFORGE_OPENAI_MODEL_ALIASES": "house-model=tiny"}
    with serving(tmp_path, private_data(tmp_path, data_dir), settings=settings) as server:
        with OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0, timeout=120) as sdk:
            answer = sdk.images.generate(model="house-model", prompt="a red fox", size="64x64", extra_body={"steps": 1})
        with (
            OpenAI(base_url=f"{server.url}/v1", api_key="none", max_retries=0) as keyless,
            pytest.raises(openai.AuthenticationError) as refused,
        ):
            # The SDK insists on a key; `omit` takes its header out of the request, as a client without one sends.
            keyless.images.generate(prompt="a red fox", extra_headers={"Authorization": openai.omit})

    assert answer.data is not None
    assert Image.open(io.BytesIO(base64.b64decode(answer.data[0].b64_json or ""))).size == (64, 64)
    assert refused.value.code == "unauthorized"
