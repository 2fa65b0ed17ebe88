"""An AUTOMATIC1111-compatible API under /sdapi/v1: the subset its common clients call (Open WebUI, SillyTavern,
`webuiapi`), mapped onto the one request declaration and the one service door (docs/a1111-api.md)."""

from imageforge.transports.a1111.checkpoints import CheckpointChoices
from imageforge.transports.a1111.errors import error_body
from imageforge.transports.a1111.router import PREFIX, router

__all__ = ["PREFIX", "CheckpointChoices", "error_body", "router"]
