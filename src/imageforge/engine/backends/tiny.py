"""Offline random-weight pipelines in the real diffusers layouts.

`tiny` is a real Stable Diffusion pipeline (UNet2DConditionModel, AutoencoderKL, CLIP text encoder and
tokenizer) whose weights are small and random. It is built deterministically on first use, saved with
`save_pretrained` and loaded back through the same `from_pretrained` path as any downloaded model (its
tiny autoencoder for `decoder: "fast"` too), so tests, `selftest` and CI exercise the real loading and
generation code without a network.

The SDXL, FLUX.1 and FLUX.2 klein builders (and the GGUF writer) exist so that every pipeline family in the
catalog can be loaded and run by a test; they are not catalog entries themselves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

#: Bumped whenever the built layout changes, so an old build is replaced instead of half-reused.
TINY_VERSION = "2"

_SEED = 0
_MARKER = "imageforge_tiny.json"


def _seed() -> None:
    import torch

    torch.manual_seed(_SEED)


def clip_tokenizer() -> Any:
    """A byte-level CLIP tokenizer built in code: any text tokenizes, ids stay small."""
    from transformers import CLIPTokenizer

    symbols = [chr(c) for c in range(33, 127)]
    vocab: dict[str, int] = {}
    for sym in symbols:
        vocab[sym] = len(vocab)
    for sym in symbols:
        vocab[sym + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    # transformers 5 annotates merges as strings, but only (left, right) tuples build a working tokenizer.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)  # type: ignore[arg-type]


def _clip_text_encoder(vocab_size: int, *, projection: bool = False) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _vae(*, latent_channels: int = 4, **config: Any) -> Any:
    """Four blocks, like the real VAEs, so latents are 1/8 of the image side and cost what they should."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=64,
        **config,
    )


def _scheduler() -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="trailing"
    )


def _save(components: dict[str, Any], pipeline_class: Any, target: Path, family: str) -> Path:
    return _save_model(pipeline_class(**components), target, family)


def _save_model(model: Any, target: Path, family: str) -> Path:
    """Save atomically: build in a sibling folder, then rename, so a crash never leaves half a model."""
    staging = target.with_name(target.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    (staging / _MARKER).write_text(json.dumps({"version": TINY_VERSION, "family": family}))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def is_built(target: Path) -> bool:
    """Whether a current tiny build already lies at `target`."""
    marker = target / _MARKER
    if not marker.is_file():
        return False
    try:
        return bool(json.loads(marker.read_text()).get("version") == TINY_VERSION)
    except (OSError, ValueError):
        return False


def build_tiny_sd(target: Path) -> Path:
    """Build the `tiny` Stable Diffusion pipeline into `target` (idempotent)."""
    if is_built(target):
        return target
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    _seed()
    tokenizer = clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    components = {
        "unet": unet,
        "vae": _vae(),
        "text_encoder": _clip_text_encoder(len(tokenizer)),
        "tokenizer": tokenizer,
        "scheduler": _scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    return _save(components, StableDiffusionPipeline, target, "sd")


def build_tiny_taesd(target: Path) -> Path:
    """Build the tiny model's tiny autoencoder (an AutoencoderTiny, as TAESD) into `target` (idempotent).

    It decodes `decoder: "fast"` requests and live previews of `tiny`, through the same loading code as
    madebyollin/taesd.
    """
    if is_built(target):
        return target
    from diffusers import AutoencoderTiny

    _seed()
    decoder = AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    )
    return _save_model(decoder, target, "taesd")


def build_tiny_sdxl(target: Path) -> Path:
    """Build a tiny SDXL pipeline (two CLIP encoders, added time conditioning) into `target`."""
    if is_built(target):
        return target
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    _seed()
    tokenizer = clip_tokenizer()
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=80,  # 6 * 8 time ids + 32 pooled text
        cross_attention_dim=64,  # both encoders' hidden states, concatenated
        norm_num_groups=32,
    )
    components = {
        "unet": unet,
        "vae": _vae(),
        "text_encoder": _clip_text_encoder(len(tokenizer)),
        "tokenizer": tokenizer,
        "text_encoder_2": _clip_text_encoder(len(tokenizer), projection=True),
        "tokenizer_2": clip_tokenizer(),
        "scheduler": _scheduler(),
        "image_encoder": None,
        "feature_extractor": None,
    }
    return _save(components, StableDiffusionXLPipeline, target, "sdxl")


def build_tiny_sdxl_lora(base: Path, target: Path) -> Path:
    """Save a random LoRA for the tiny SDXL UNet as `pytorch_lora_weights.safetensors` in `target`."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict

    _seed()
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    layers = get_peft_model_state_dict(unet)
    # A fresh LoRA's up-projections are zero; give them values so the adapter changes the output.
    layers = {name: torch.randn_like(weight) * 0.1 for name, weight in layers.items()}
    StableDiffusionXLPipeline.save_lora_weights(target, unet_lora_layers=layers, safe_serialization=True)
    return target / "pytorch_lora_weights.safetensors"


def build_tiny_sd_lora(base: Path, target: Path, *, seed: int = _SEED) -> Path:
    """Save a random LoRA for the `tiny` model built at `base` (its UNet and its text encoder) as the
    `.safetensors` file `target`; another `seed` makes another LoRA."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_pretrained(base / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    text_encoder = CLIPTextModel.from_pretrained(base / "text_encoder")
    # Through peft itself: transformers' own `add_adapter` asks for a newer peft than diffusers does.
    config = LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])
    inject_adapter_in_model(config, text_encoder)
    # A fresh LoRA's up-projections are zero; give every matrix values so that the adapter changes the output.
    layers = [
        {name: torch.randn_like(weight) * 0.3 for name, weight in get_peft_model_state_dict(model).items()}
        for model in (unet, text_encoder)
    ]
    StableDiffusionPipeline.save_lora_weights(
        target.parent,
        unet_lora_layers=layers[0],
        text_encoder_lora_layers=layers[1],
        weight_name=target.name,
        safe_serialization=True,
    )
    return target


def build_tiny_flux(target: Path) -> Path:
    """Build a tiny FLUX.1 pipeline (CLIP + T5 encoders, flow-matching transformer) into `target`."""
    if is_built(target):
        return target
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import T5Config, T5EncoderModel

    _seed()
    tokenizer = clip_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,  # latent_channels * 2 * 2: FLUX packs 2x2 latent patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 4, 8),
    )
    vae = _vae(
        latent_channels=1, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035
    )
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4))
    components = {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": _clip_text_encoder(len(tokenizer)),
        "tokenizer": tokenizer,
        # Any tokenizer with small ids stands in for T5's sentencepiece one; the encoder is a real T5.
        "text_encoder_2": t5,
        "tokenizer_2": clip_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "image_encoder": None,
        "feature_extractor": None,
    }
    return _save(components, FluxPipeline, target, "flux")


def _byte_level_tokenizer() -> Any:
    """A Qwen2 byte-level BPE tokenizer built in code (256 byte tokens, no merges) with a chat template."""
    from transformers import Qwen2Tokenizer

    # GPT-2's byte-to-unicode table: printable bytes stand for themselves, the rest move above 255.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))
    symbols = [chr(byte) if byte in printable else chr(next(shifted)) for byte in range(256)]
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    vocab["<|endoftext|>"] = len(vocab)
    template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    return Qwen2Tokenizer(vocab=vocab, merges=[], chat_template=template)


def build_tiny_flux2_klein(target: Path) -> Path:
    """Build a tiny FLUX.2 [klein] pipeline (Qwen3 text encoder, FLUX.2 transformer and VAE) into `target`."""
    if is_built(target):
        return target
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    _seed()
    tokenizer = _byte_level_tokenizer()
    hidden = 16
    # The pipeline stacks the hidden states of layers 9, 18 and 27 as the prompt embedding, so the encoder
    # needs 27 layers (cheap at this width) and the transformer's text input is three hidden states wide.
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=16,
            num_hidden_layers=27,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            max_position_embeddings=512,
            tie_word_embeddings=True,
        )
    )
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=4,  # latent_channels * 2 * 2: FLUX.2 packs 2x2 latent patches too
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=3 * hidden,
        timestep_guidance_channels=32,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    vae = AutoencoderKLFlux2(
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=1,
        norm_num_groups=8,
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    components = {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": FlowMatchEulerDiscreteScheduler(),
        "is_distilled": True,
    }
    return _save(components, Flux2KleinPipeline, target, "flux2-klein")


def write_tiny_flux_gguf(base: Path, target: Path) -> Path:
    """Write the transformer of the tiny FLUX.1 pipeline at `base` as a Q8_0 GGUF file at `target`.

    The tensors keep diffusers' names: diffusers converts the original BFL layout (what city96's files use)
    with FLUX.1's full widths written into the conversion, so a tiny model in that layout cannot load.
    Matrices whose rows split into 32-value blocks are quantised; norms, biases and the rest stay float32.
    """
    import gguf
    from diffusers import FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(base / "transformer", use_safetensors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(target), arch="flux")
    for name, tensor in transformer.state_dict().items():
        values = tensor.float().numpy()
        if values.ndim == 2 and values.shape[-1] % 32 == 0:
            quantised = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, quantised, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target
