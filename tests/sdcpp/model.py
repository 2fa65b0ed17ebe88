"""A random-weight model that stable-diffusion.cpp loads: the sd-turbo architecture (SD 2.1: its UNet, VAE and
OpenCLIP ViT-H text encoder at full size, from bench/configs/sd-turbo) as a diffusers folder in float16.

sd.cpp builds each network from fixed shapes per model version, so the `tiny` model's shrunken layers would not
load; the full architecture does, and at 64x64 with one step it runs in seconds on a CPU. The weights are drawn
from the layers' shapes on the meta device (no slow initialisation); their values do not matter to what the tests
check. The text encoder's keys carry the `text_model.` prefix that sd.cpp expects and transformers 5 no longer
writes. Built once into a cache folder shared by test runs.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parents[2] / "bench" / "configs" / "sd-turbo"
DIFFUSERS_FILE = "diffusion_pytorch_model.safetensors"
#: Bumped whenever the built files change.
VERSION = "1"


def cached_model_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "imageforge" / "test-models" / f"sd-turbo-random-f16-v{VERSION}"


def build_sd_turbo(folder: Path) -> Path:
    """The random-weight sd-turbo folder at `folder`, built unless it is there; returns `folder`. Parallel test
    workers wait on one lock, so one of them builds."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with (folder.parent / f".{folder.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "model_index.json").is_file():
            _build(folder)
    return folder


def _build(folder: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    def config(part: str) -> dict[str, Any]:
        return dict(json.loads((CONFIGS / part / "config.json").read_text()))

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    generator = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        networks: dict[str, tuple[Any, str]] = {
            "unet": (UNet2DConditionModel.from_config(config("unet")), DIFFUSERS_FILE),  # type: ignore[no-untyped-call]
            "vae": (AutoencoderKL.from_config(config("vae")), DIFFUSERS_FILE),  # type: ignore[no-untyped-call]
            "text_encoder": (CLIPTextModel(CLIPTextConfig(**config("text_encoder"))), "model.safetensors"),
        }
    for part, (network, filename) in networks.items():
        tensors: dict[str, torch.Tensor] = {}
        for name, meta in network.state_dict().items():
            if part == "text_encoder" and not name.startswith("text_model."):
                name = f"text_model.{name}"
            if meta.dtype in (torch.int64, torch.int32):
                tensors[name] = torch.arange(meta.shape[-1]).expand(meta.shape).contiguous()
            elif name.endswith(".bias"):
                tensors[name] = torch.zeros(meta.shape, dtype=torch.float16)
            elif meta.dim() == 1:
                tensors[name] = torch.ones(meta.shape, dtype=torch.float16)
            else:
                tensors[name] = (torch.randn(meta.shape, generator=generator) * 0.02).to(torch.float16)
        (partial / part).mkdir(parents=True)
        save_file(tensors, str(partial / part / filename))
        shutil.copy(CONFIGS / part / "config.json", partial / part / "config.json")
    shutil.copy(CONFIGS / "model_index.json", partial / "model_index.json")
    partial.rename(folder)


def build_sd_turbo_lora(target: Path, *, seed: int) -> Path:
    """A random LoRA for the sd-turbo architecture's UNet at `target` (unless it is there), in the layout diffusers
    saves (`unet.<layer>.lora_A.weight`, `unet.<layer>.lora_B.weight`): rank 4 on every attention projection, 256
    tensors, with values large enough to change a 64x64 image. Another `seed`, another LoRA."""
    if target.is_file():
        return target
    import torch
    from diffusers import UNet2DConditionModel
    from safetensors.torch import save_file

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(json.loads((CONFIGS / "unet" / "config.json").read_text()))  # type: ignore[no-untyped-call]
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in unet.named_modules():
        if isinstance(layer, torch.nn.Linear) and name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            down = torch.randn(4, layer.in_features, generator=generator) * 0.1
            up = torch.randn(layer.out_features, 4, generator=generator) * 0.1
            tensors[f"unet.{name}.lora_A.weight"] = down.to(torch.float16)
            tensors[f"unet.{name}.lora_B.weight"] = up.to(torch.float16)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    save_file(tensors, str(partial))
    partial.rename(target)
    return target
