"""A request's LoRAs as diffusers adapters: loaded into the resident pipeline for one job, removed after it.

The base model is never reloaded: `load_lora_weights` injects each LoRA as a named adapter into the pipeline's
denoiser and text encoders, `set_adapters` gives them the request's weights, and `unload_lora_weights` takes the
adapter layers out again when the job ends, however it ends, so that the next job runs the base model. A LoRA's
tensors are read once (safetensors only) and kept in memory by content digest, within `KEPT_BYTES`, for the few
LoRAs a server alternates between.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from imageforge.domain import LoraWeight
from imageforge.engine.loras import LoraFile, LoraFolder
from imageforge.errors import LoraNotFound

#: The most bytes of LoRA tensors kept in memory between jobs: an SD LoRA takes tens of MB, an SDXL one up to a
#: few hundred, and one that does not fit is read again from disk (mapped, so from the page cache) each job.
KEPT_BYTES = 512 * 2**20


class RequestLoras:
    """Applies the LoRAs a request names, from `folder`, to a pipeline for the length of one job."""

    def __init__(self, folder: LoraFolder | None) -> None:
        self._folder = folder
        self._states: OrderedDict[str, tuple[dict[str, Any], int]] = OrderedDict()
        self._lock = threading.Lock()

    @contextmanager
    def applied(self, pipe: Any, loras: Sequence[LoraWeight]) -> Iterator[None]:
        """`pipe` with `loras` at their weights inside the block, and without any adapter after it."""
        if not loras:
            yield
            return
        files = [self._find(lora.name) for lora in loras]
        names = [f"request_{index}" for index in range(len(files))]
        try:
            for name, file in zip(names, files, strict=True):
                pipe.load_lora_weights(self._state(file), adapter_name=name)
            pipe.set_adapters(names, adapter_weights=[lora.weight for lora in loras])
            yield
        finally:
            # Also after a LoRA that failed to load halfway: no layer of it may stay for the next job.
            pipe.unload_lora_weights()

    def _find(self, name: str) -> LoraFile:
        if self._folder is None:
            raise LoraNotFound(f"No LoRA named {name!r}: this engine has no LoRA folder.", hint="Send no loras.")
        return self._folder.find(name)

    def _state(self, file: LoraFile) -> dict[str, Any]:
        """The tensors of `file`, read once per content digest; `load_lora_weights` copies the dict it is given."""
        from safetensors.torch import load_file

        with self._lock:
            kept = self._states.get(file.sha256)
            if kept is not None:
                self._states.move_to_end(file.sha256)
                return kept[0]
        state = load_file(str(file.path))
        size = sum(tensor.nbytes for tensor in state.values())
        with self._lock:
            self._states[file.sha256] = (state, size)
            while sum(size for _, size in self._states.values()) > KEPT_BYTES:
                self._states.popitem(last=False)
        return state
