"""Readiness: whether this service can take and run jobs now, the question an orchestrator's probe asks.

Three checks, each passing (None) or failing with a stable code: `storage` (every folder the service writes takes
a write now, and the job store takes them), `queue` (the job queue runs) and `model` (the default model is
resident, loading, or loadable from this machine; on an API node of the distributed queue, the workers load it).
"""

from __future__ import annotations

from dataclasses import dataclass

from imageforge.errors import ImageforgeError

#: The checks, in the order they are reported.
CHECKS = ("storage", "queue", "model")


@dataclass(frozen=True)
class CheckFailure:
    """Why one check fails: a stable error code, a message naming settings (never a path) and what to do."""

    code: str
    message: str
    hint: str = ""

    @classmethod
    def of(cls, error: ImageforgeError) -> CheckFailure:
        """The failure an error stands for."""
        return cls(error.code, error.message, error.hint)


@dataclass(frozen=True)
class Readiness:
    """Each check by name (`CHECKS`): None when it passes, else its failure."""

    checks: dict[str, CheckFailure | None]

    @property
    def ready(self) -> bool:
        """Whether every check passes."""
        return all(failure is None for failure in self.checks.values())
