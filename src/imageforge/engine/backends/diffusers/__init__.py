"""The Hugging Face diffusers backend: with `tiny.py` and `speed.py`, the only code that imports torch or diffusers,
and only on first use, so that the CLI, the MCP handshake and /health start fast.

`weights` knows where a model's weights are and fetches them, `loading` builds a pipeline from them, `running`
generates with a loaded one, `device` speaks for the torch device, and `backend` ties them into the engine's
`ImageBackend`.
"""

from imageforge.engine.backends.diffusers.backend import DiffusersBackend
from imageforge.engine.backends.diffusers.running import DiffusersModel

__all__ = ["DiffusersBackend", "DiffusersModel"]
