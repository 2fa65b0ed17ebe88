"""What a client is told when a model's weights cannot be had: why, in imageforge's words, whatever the Hub client
and its HTTP library raised."""

from __future__ import annotations

import httpx2
import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

from imageforge.engine.backends.diffusers.weights import is_fetch_failure, unavailable
from imageforge.engine.catalog import BUILTIN_MODELS

SD_TURBO = next(spec for spec in BUILTIN_MODELS if spec.key == "sd-turbo")
LIBRARY_ONLY = ("stacktrace", "local_files_only", "Please ")


def _response(status: int) -> httpx2.Response:
    return httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/x"))


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (httpx2.ConnectError("[Errno -2] Name or service not known"), "the Hub could not be reached"),
        (
            LocalEntryNotFoundError("Cannot find the requested files in the local cache."),
            "the Hub could not be reached",
        ),
        (
            OSError("... not fully cached locally ... Please check out the root cause in the stacktrace above."),
            "the Hub could not be reached",
        ),
        (GatedRepoError("Access to model is restricted.", response=_response(401)), "HF_TOKEN"),
        (RepositoryNotFoundError("404 Client Error.", response=_response(404)), "no such repo"),
    ],
    ids=["unreachable", "not-cached-offline", "diffusers-not-cached", "gated", "no-such-repo"],
)
@pytest.mark.parametrize("pulling", [False, True], ids=["load", "pull"])
def test_a_fetch_failure_is_weights_unavailable_saying_why_without_the_librarys_words(
    exc: Exception, reason: str, pulling: bool
) -> None:
    assert is_fetch_failure(exc)

    error = unavailable(SD_TURBO, exc, pulling=pulling)

    assert error.code == "weights_unavailable"
    assert "sd-turbo" in error.message
    assert reason in error.message
    assert not any(words in error.message for words in LIBRARY_ONLY)


def test_an_error_that_is_not_about_fetching_is_not_taken_for_one() -> None:
    assert not is_fetch_failure(ValueError("bad config"))
