"""An OpenAI-compatible Images API under /v1, for the official SDK and the tools built on it (LiteLLM, Open WebUI):
a transport that maps OpenAI's wire format onto the one request declaration and back (docs/openai-api.md)."""

from imageforge.transports.openai.errors import error_body
from imageforge.transports.openai.mapping import DEFAULT_MODEL_ALIASES
from imageforge.transports.openai.routes import PREFIX, router

__all__ = ["DEFAULT_MODEL_ALIASES", "PREFIX", "error_body", "router"]
