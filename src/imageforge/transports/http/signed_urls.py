"""Signed, expiring image links: `/images/{name}?exp=...&sig=...` opens one image without an API key.

A browser's `<img src>` and a plain `curl` send no Authorization header, so when keys are on, the image links
in results carry an HMAC-SHA256 of the image name and expiry time under a random server secret. A signature
opens only the image it names, only until it expires, and nothing else on the port (ADR 0013).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from imageforge.errors import BadSignature, UrlExpired

IMAGES_PREFIX = "/images/"
SECRET_BYTES = 32


class ImageUrlSigner:
    """Signs image names for `lifetime_s` seconds and checks such signatures."""

    def __init__(self, secret: bytes, lifetime_s: float, *, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._lifetime_s = lifetime_s
        self._clock = clock

    @classmethod
    def with_secret_file(cls, path: Path, lifetime_s: float) -> ImageUrlSigner:
        """A signer whose secret lives in `path` (made 0600 on first use), so links outlive a restart."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            secret = path.read_bytes()
        else:
            secret = secrets.token_bytes(SECRET_BYTES)
            with os.fdopen(handle, "wb") as out:
                out.write(secret)
        return cls(secret, lifetime_s)

    def query(self, name: str) -> str:
        """The query string that opens image `name` until the lifetime has passed."""
        expires = int(self._clock() + self._lifetime_s)
        return f"exp={expires}&sig={self._signature(name, str(expires))}"

    def check(self, name: str, expires: str, signature: str) -> str | None:
        """None when `signature` is this server's for `name` and `expires` and that time has not passed, else
        the error code: `bad_signature` (tampered, or for another image) or `url_expired`."""
        if not hmac.compare_digest(signature.encode(), self._signature(name, expires).encode()):
            return BadSignature.code
        if not expires.isdigit() or int(expires) < self._clock():
            return UrlExpired.code
        return None

    def _signature(self, name: str, expires: str) -> str:
        return hmac.new(self._secret, f"{name}\n{expires}".encode(), hashlib.sha256).hexdigest()
