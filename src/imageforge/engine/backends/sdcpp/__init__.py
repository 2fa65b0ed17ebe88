"""The stable-diffusion.cpp engine: `sd-server` as a child process per loaded model (ADR 0027).

`binary` finds or builds the `sd-server` binary, `child` runs one and reads its output, and `backend` is the
engine's `ImageBackend`. Nothing here imports torch.
"""

from imageforge.engine.backends.sdcpp.backend import SdcppBackend, SdcppModel

__all__ = ["SdcppBackend", "SdcppModel"]
