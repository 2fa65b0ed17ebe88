"""`DiffusersBackend`: the engine's `ImageBackend` on one torch device, tying weights, loading and running."""

from __future__ import annotations

import threading
from functools import partial
from importlib.metadata import version
from pathlib import Path

from imageforge.domain import ModelSpec
from imageforge.engine import digests
from imageforge.engine.backends import speed
from imageforge.engine.backends.diffusers import loading
from imageforge.engine.backends.diffusers.adapters import RequestLoras
from imageforge.engine.backends.diffusers.device import import_torch, memory_gb, memory_in_use_gb, resolve_device
from imageforge.engine.backends.diffusers.library_logs import quiet_libraries
from imageforge.engine.backends.diffusers.openvino import parked_unet
from imageforge.engine.backends.diffusers.running import DiffusersModel
from imageforge.engine.backends.diffusers.weights import Weights
from imageforge.engine.loras import LoraFolder
from imageforge.engine.protocol import DeviceInfo, EngineOptions


class DiffusersBackend:
    """Loads catalog models with diffusers on one device; requests apply LoRAs from `loras` (none without it)."""

    def __init__(
        self,
        *,
        device: str,
        models_path: Path,
        options: EngineOptions | None = None,
        loras: LoraFolder | None = None,
    ) -> None:
        self._device_setting = device
        self._options = options or EngineOptions()
        self._loras = RequestLoras(loras)
        self._weights = Weights(models_path, dtype=lambda: self.runtime().dtype)
        self._models_path = models_path
        self._info: DeviceInfo | None = None
        self._runtime: speed.Runtime | None = None
        self._info_lock = threading.Lock()

    def device_info(self) -> DeviceInfo:
        """The device, dtype and library versions; the first call imports torch and chooses the runtime.

        diffusers and transformers are imported by the first load, not here (their versions come from the package
        metadata): they take longer to import than torch, and /health and a server's readiness need neither.
        """
        with self._info_lock:
            if self._info is None:
                torch = import_torch()
                device = resolve_device(self._device_setting)
                self._runtime = speed.choose_runtime(device, self._options)
                self._info = DeviceInfo(
                    device=device,
                    dtype=self._runtime.dtype,
                    cuda_available=torch.cuda.is_available(),
                    mps_available=torch.backends.mps.is_available(),
                    versions={
                        "torch": torch.__version__,
                        "diffusers": version("diffusers"),
                        "transformers": version("transformers"),
                    },
                    memory_gb=memory_gb(device),
                    runtime=self._runtime.as_dict(),
                )
            return self._info

    def memory_in_use_gb(self) -> float | None:
        """What torch's allocator holds on the device now (CUDA, MPS); None on the CPU and before the device was
        chosen (reading it must not import torch for a scrape)."""
        info = self._info
        return None if info is None else memory_in_use_gb(info.device)

    def runtime(self) -> speed.Runtime:
        """The speed settings chosen for this device (chosen with `device_info`, once per backend)."""
        self.device_info()
        assert self._runtime is not None
        return self._runtime

    def fingerprint(self, spec: ModelSpec) -> str:
        """The libraries, device, dtype and runtime that results depend on (the same for every model)."""
        info = self.device_info()
        text = f"diffusers={info.versions['diffusers']};torch={info.versions['torch']};{info.device};{info.dtype}"
        runtime = self.runtime()
        if runtime.library == "openvino":  # its images differ from torch's in the last bits
            text += f";openvino={version('openvino')};{runtime.precision}"
            # `auto` runs the sizes nobody converted in torch: its images answer for neither runtime's requests
            text += "" if runtime.convert else ";where-converted"
        return text

    def weights_present(self, spec: ModelSpec) -> bool:
        """Whether everything `spec` loads is on this machine."""
        return self._weights.present(spec)

    def weights_digest(self, spec: ModelSpec) -> str | None:
        """A digest of the weight files `spec` loads on this machine, by name and content."""
        return digests.weights_digest(self._weights.local_files(spec))

    def pull(self, spec: ModelSpec) -> str:
        """Fetch the weights of `spec` ahead of time; returns where they are."""
        if not spec.builtin:
            return self._weights.pull(spec)
        # Building it runs diffusers and transformers; a download from the Hub imports neither.
        quiet_libraries()
        with loading.BUILDING:
            return self._weights.pull(spec)

    def load(self, spec: ModelSpec) -> DiffusersModel:
        """`spec` loaded on this backend's device, ready to generate."""
        runtime = self.runtime()
        quiet_libraries()
        cache = self._options.openvino_cache or self._models_path.parent / "openvino-cache"
        parked = None
        if runtime.library == "openvino" and (source := loading.unet_source(spec, runtime, self._weights)):
            parked = parked_unet(cache, *source, channels_last=runtime.channels_last)
        if runtime.library == "openvino" and not runtime.convert and (parked is None or parked.digest is None):
            runtime = speed.on_torch(runtime)  # `auto`, and OpenVINO never ran this model here (ADR 0028)
        pipe, fast_decoder = loading.load(spec, runtime, self._weights, parked)
        networks = None
        if runtime.library == "openvino":
            networks = loading.openvino_networks(spec, pipe, runtime, cache, parked)
        return DiffusersModel(
            spec,
            pipe,
            runtime,
            fast_decoder=fast_decoder,
            load_fast_decoder=partial(loading.load_fast_decoder, spec, runtime, self._weights),
            loras=self._loras,
            openvino=networks,
        )
