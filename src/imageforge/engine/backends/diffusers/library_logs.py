"""What diffusers and transformers may write to a service's log: no loading bars, and no prompts."""

from __future__ import annotations

import logging


def quiet_libraries() -> None:
    """Turn off the libraries' loading bars and keep prompts out of what they log; imports them."""
    import diffusers
    import transformers

    # A service logs; per-component loading bars from the libraries would only clutter it.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    if logging.getLogger().handlers:
        # The process set its log up (`imageforge serve`, `worker`, `mcp`): the libraries' lines go through it, in
        # its format (JSON lines included), instead of through a handler of their own.
        for library in (diffusers.utils.logging, transformers.utils.logging):
            library.disable_default_handler()
            library.enable_propagation()
    _keep_prompts_out_of_logs(logging.getLogger("diffusers"))


class _TruncatedPromptRedaction(logging.Filter):
    """diffusers logs the part of a long prompt that its text encoder cut off; prompts stay out of the server's
    log (the audit log keeps them when IMAGEFORGE_AUDIT_PROMPTS asks for it)."""

    MARKER = "was truncated because"

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.MARKER in message:
            reason = message.partition(" tokens:")[0]
            record.msg, record.args = f"{reason} tokens (the text that was cut off is not logged)", None
        return True


def _keep_prompts_out_of_logs(library: logging.Logger) -> None:
    """Redact prompts on every handler the library logs through (its records do not reach the root logger)."""
    handlers = library.handlers if not library.propagate else [*library.handlers, *logging.getLogger().handlers]
    for handler in handlers:
        if not any(isinstance(existing, _TruncatedPromptRedaction) for existing in handler.filters):
            handler.addFilter(_TruncatedPromptRedaction())
