"""How the diffusers backend runs fast on the device it finds (ADR 0012).

`choose_runtime` turns the settings (each "auto" or a value) into one `Runtime` per process: the dtype
(fp16 on CUDA and MPS, bf16 on CPUs that compute it natively, fp32 otherwise), channels_last, the CPU thread
count and whether to compile. `memory_savers` decides per request whether VAE tiling and attention slicing
are needed: they cost time, so they are switched on only when the free memory would not hold the step.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from imageforge.engine.protocol import EngineOptions

log = logging.getLogger(__name__)

#: Activation memory of a full-VAE decode, per output pixel and byte of dtype: its widest layers hold
#: 128-512 channels at full resolution, several tensors at once (measured ~5 GB at 1024x1024 in fp32).
_DECODE_BYTES_PER_PIXEL_BYTE = 1280
#: Free memory a decode may take before the savers switch on; the rest is for the UNet and the OS.
_FREE_SHARE = 0.5


@dataclass(frozen=True)
class Runtime:
    """What the engine chose for this process; `/health` and every result report it."""

    device: str
    dtype: str
    channels_last: bool
    #: CPU threads torch uses; None off the CPU
    threads: int | None
    #: "auto" (by need, per request), "on" (always) or "off" (never)
    memory_savers: str
    compile: bool
    #: "torch", or "openvino" where OpenVINO runs the networks (CPU only)
    library: str = "torch"
    #: the dtype, or "int8" where the UNet runs quantized
    precision: str = ""
    #: whether OpenVINO converts a network for a size it has no model of yet (`IMAGEFORGE_RUNTIME=openvino`), or
    #: leaves that size to torch (`auto`: only what an earlier run converted runs on OpenVINO, ADR 0028)
    convert: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "channels_last": self.channels_last,
            "attention": "sdpa",
            "threads": self.threads,
            "memory_savers": self.memory_savers,
            "compile": self.compile,
            "runtime": self.library,
            "precision": self.precision or self.dtype,
            **({"openvino_converts": self.convert} if self.library == "openvino" else {}),
        }


def _torch() -> Any:
    import torch

    return torch


def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX), where bf16 beats fp32 by ~3x."""
    torch = _torch()
    checks = (torch.ops.mkldnn._is_mkldnn_bf16_supported, torch.cpu._is_avx512_bf16_supported)
    try:
        return bool(torch.backends.mkldnn.is_available() and all(check() for check in checks))
    except (AttributeError, RuntimeError):  # an older torch or a build without oneDNN
        return False


def _usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count where the OS says so)."""
    if hasattr(os, "sched_getaffinity"):  # Linux; macOS and Windows lack it
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def openvino_missing(*, int8: bool) -> list[str]:
    """The packages of the `openvino` extra that this install lacks (NNCF only matters for int8)."""
    import importlib.util

    wanted = ("openvino", "nncf") if int8 else ("openvino",)
    return [name for name in wanted if importlib.util.find_spec(name) is None]


def _library(device: str, options: EngineOptions) -> str:
    int8 = options.precision == "int8"
    wanted = options.runtime
    if wanted == "auto":
        # OpenVINO is the faster runtime on CPUs (docs/benchmarks.md). Its first image of each size converts for a
        # minute or more, which `auto` never makes a request wait for: it runs what is converted (ADR 0028).
        wanted = "openvino" if device == "cpu" and not openvino_missing(int8=int8) else "torch"
    if wanted == "openvino" and device != "cpu":
        log.warning("OpenVINO runs on the CPU only here; the %s runs torch (IMAGEFORGE_RUNTIME)", device)
        wanted = "torch"
    if int8 and wanted != "openvino":
        log.warning("int8 needs the OpenVINO runtime on a CPU; running %s in the dtype instead", device)
    return wanted


def choose_runtime(device: str, options: EngineOptions) -> Runtime:
    """The settings resolved for `device`; also applies the process-wide parts (threads, compile cache)."""
    torch = _torch()
    dtype = options.dtype
    if dtype == "auto":
        native = "float16" if device in ("cuda", "mps") else "bfloat16" if native_bf16() else None
        dtype = native or "float32"
    # channels_last speeds convolutions up on CUDA and in oneDNN's bf16 kernels (~3x here); fp32 convolutions
    # on the CPU and MPS gain nothing or lose from it.
    helps = device.startswith("cuda") or (device == "cpu" and dtype == "bfloat16")
    channels_last = options.channels_last == "on" or (options.channels_last == "auto" and helps)
    threads = None
    if device == "cpu":
        threads = options.threads or min(torch.get_num_threads(), _usable_cores())
        torch.set_num_threads(threads)
    if options.compile and options.compile_cache is not None:
        # Inductor keeps compiled kernels here, so a restart reuses them instead of compiling for minutes.
        options.compile_cache.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(options.compile_cache))
    library = _library(device, options)
    precision = "int8" if options.precision == "int8" and library == "openvino" else dtype
    # int8 is asked for by name, and only OpenVINO runs it: it converts whatever the runtime setting says
    convert = options.runtime == "openvino" or precision == "int8"
    return Runtime(
        device, dtype, channels_last, threads, options.memory_savers, options.compile, library, precision, convert
    )


def on_torch(runtime: Runtime) -> Runtime:
    """`runtime` for a model that torch runs whole: under `auto`, one that OpenVINO has nothing converted of."""
    return replace(runtime, library="torch", precision=runtime.dtype)


def prepare(pipe: Any, runtime: Runtime) -> None:
    """Put a loaded pipeline's networks in the chosen layout, and mark them for compiling when asked.

    Attention stays on diffusers' default processor, which is torch's scaled_dot_product_attention (SDPA):
    the fastest here; slicing it costs ~15% and is left to `memory_savers`.
    """
    # Under OpenVINO the UNet's torch weights are mapped from a file written in channels-last (ADR 0025):
    # converting them here would copy a UNet that is about to be dropped for the file's.
    names = ("transformer", "vae") if runtime.library == "openvino" else ("unet", "transformer", "vae")
    networks = [getattr(pipe, name, None) for name in names]
    for network in (n for n in networks if n is not None):
        if runtime.channels_last:
            network.to(memory_format=_torch().channels_last)
    if runtime.compile:
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        # In place, so the pipeline keeps the same module objects and from_pipe shares them as before.
        for network in (denoiser, getattr(getattr(pipe, "vae", None), "decoder", None)):
            if network is not None:
                network.compile()


def free_memory_gb(device: str) -> float | None:
    """Memory free for a generation now: the GPU's on CUDA, available RAM on the CPU; None when unknown."""
    torch = _torch()
    if device.startswith("cuda"):
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return float(free) / 2**30
    if device == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
        except (OSError, ValueError, IndexError):
            return None
    return None


def memory_savers(runtime: Runtime, width: int, height: int) -> bool:
    """Whether this size needs VAE tiling and attention slicing on this device now."""
    if runtime.memory_savers != "auto":
        return runtime.memory_savers == "on"
    free = free_memory_gb(runtime.device)
    if free is None:
        return False
    element = 4 if runtime.dtype == "float32" else 2
    need_gb = width * height * element * _DECODE_BYTES_PER_PIXEL_BYTE / 2**30
    wanted = need_gb > free * _FREE_SHARE
    if wanted:
        log.info("%dx%d needs ~%.1f GB to decode, %.1f GB free: tiling the VAE", width, height, need_gb, free)
    return wanted


def offload_to_cpu(runtime: Runtime, est_memory_gb: float) -> bool:
    """Whether a model should live in RAM and visit the GPU one component at a time (CUDA only)."""
    if not runtime.device.startswith("cuda") or runtime.memory_savers == "off":
        return False
    if runtime.memory_savers == "on":
        return True
    free = free_memory_gb(runtime.device)
    return free is not None and est_memory_gb > free
