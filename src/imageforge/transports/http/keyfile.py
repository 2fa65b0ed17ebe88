"""The API keys file that `imageforge keys` manages: each key's name, role, creation time and SHA-256 hash, never
the key. A key without a role (a file from before roles) is a `user` key.

A key is 256 random bits made here, not a password a person chose, so a plain SHA-256 is as hard to reverse as
the key is to guess; a slow password hash would only slow down every request (ADR 0013). The file is written
whole to a temporary file (mode 0600) and renamed into place, so that a server reading it meanwhile sees the
old keys or the new ones, never half a file.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from imageforge.errors import ImageforgeError

#: Names go into the file as TOML keys and into logs: letters, digits, dot, dash and underscore.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEADER = "# imageforge API keys: SHA-256 hashes only. Manage with `imageforge keys add|list|remove`.\n"
#: A `user` key sees its own jobs; an `admin` key sees and cancels every client's.
ROLES = ("user", "admin")


class KeyFileError(ImageforgeError):
    code = "invalid_keys_file"


class KeyExists(ImageforgeError):
    code = "key_exists"


class KeyNotFound(ImageforgeError):
    code = "key_not_found"


@dataclass(frozen=True)
class StoredKey:
    name: str
    #: hex SHA-256 of the key
    sha256: str
    #: ISO 8601, UTC
    created: str
    #: one of ROLES
    role: str = "user"

    @property
    def admin(self) -> bool:
        return self.role == "admin"


def digest(key: str) -> bytes:
    """The SHA-256 of a presented or stored key, as compared in constant time."""
    return hashlib.sha256(key.encode()).digest()


class KeyFile:
    """The keys file at `path`; a missing file holds no keys."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[StoredKey]:
        try:
            data = tomllib.loads(self.path.read_text(encoding="utf-8"))
            keys = [
                StoredKey(name, str(entry["sha256"]), str(entry["created"]), str(entry.get("role", "user")))
                for name, entry in data.get("keys", {}).items()
            ]
            unknown = sorted({key.role for key in keys} - set(ROLES))
            if unknown:
                raise ValueError(f"unknown role {unknown[0]!r} (roles: {', '.join(ROLES)})")
            return keys
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyFileError(
                f"The API keys file {self.path} cannot be read: {exc}",
                hint="Fix or delete it (its keys stop working), then add keys again with `imageforge keys add`.",
            ) from None

    def add(self, name: str, *, taken: frozenset[str] = frozenset(), admin: bool = False) -> str:
        """Store a new key named `name` (an `admin` one when asked) and return it: the only time the key itself
        exists anywhere.

        `taken` are names used elsewhere (IMAGEFORGE_API_KEYS): each name identifies one key.
        """
        if not NAME_PATTERN.fullmatch(name):
            raise KeyFileError(
                f"The key name {name!r} is not allowed.",
                hint="Use up to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit.",
            )
        keys = self.read()
        if name in taken or any(key.name == name for key in keys):
            raise KeyExists(
                f"A key named '{name}' already exists.",
                hint="Choose another name, or `imageforge keys remove` the old key first (it stops working).",
            )
        key = secrets.token_urlsafe(32)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        self._write([*keys, StoredKey(name, digest(key).hex(), created, "admin" if admin else "user")])
        return key

    def remove(self, name: str) -> None:
        keys = self.read()
        kept = [key for key in keys if key.name != name]
        if len(kept) == len(keys):
            raise KeyNotFound(
                f"No key named '{name}' in {self.path}.",
                hint="`imageforge keys list` shows the names; keys from IMAGEFORGE_API_KEYS are removed there.",
            )
        self._write(kept)

    def _write(self, keys: list[StoredKey]) -> None:
        lines = [_HEADER]
        for key in keys:
            lines.append(
                f'\n[keys."{key.name}"]\nsha256 = "{key.sha256}"\ncreated = "{key.created}"\nrole = "{key.role}"\n'
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # mkstemp creates the file 0600, so the hashes are never readable by others, not even for a moment.
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write("".join(lines))
            Path(temporary).replace(self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
