"""The engine's speed work on the real loading path with the `tiny` model: the chosen runtime and its
overrides, the fast decoder (the tiny TAESD built beside `tiny`), TAESD previews, and warm paths."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from imageforge.domain import Decoder, GenerationRequest, ModelSpec, Progress, Task
from imageforge.engine.backends import speed, tiny
from imageforge.engine.backends.diffusers import DiffusersBackend, DiffusersModel
from imageforge.engine.catalog import BUILTIN_MODELS
from imageforge.engine.protocol import EngineOptions
from imageforge.errors import WeightsUnavailable

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 64, 48
TINY = next(spec for spec in BUILTIN_MODELS if spec.key == "tiny")


@pytest.fixture(scope="module")
def models_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def model(models_path: Path) -> DiffusersModel:
    return DiffusersBackend(device="cpu", models_path=models_path).load(TINY)


def tiny_request(decoder: Decoder = Decoder.FULL, *, prompt: str = "a fox", seed: int = 1) -> GenerationRequest:
    return GenerationRequest(
        task=Task.TEXT2IMG,
        model="tiny",
        prompt=prompt,
        negative_prompt="",
        steps=2,
        guidance=0.0,
        width=WIDTH,
        height=HEIGHT,
        seed=seed,
        decoder=decoder,
    )


def never_cancel() -> bool:
    """A cancel check that never stops the generation."""
    return False


def _previews(model: DiffusersModel, request: GenerationRequest) -> list[Image.Image]:
    previews: list[Image.Image] = []

    def watch(progress: Progress) -> None:
        assert progress.preview is not None
        previews.append(progress.preview())

    model.generate(request, watch, never_cancel)
    return previews


class _Calls:
    """Counts the calls of one method of one object, by wrapping it on the instance."""

    def __init__(self, owner: Any, method: str) -> None:
        self.count = 0
        original: Callable[..., Any] = getattr(owner, method)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(*args, **kwargs)

        setattr(owner, method, counted)


# -- the runtime the engine chooses ------------------------------------------------------------------------


def test_auto_picks_bf16_with_channels_last_only_where_the_cpu_computes_bf16_natively() -> None:
    runtime = speed.choose_runtime("cpu", EngineOptions())

    native = speed.native_bf16()
    assert runtime.dtype == ("bfloat16" if native else "float32")
    assert runtime.channels_last is native
    assert runtime.threads == torch.get_num_threads()
    assert runtime.threads >= 1
    assert runtime.as_dict()["attention"] == "sdpa"
    assert runtime.compile is False


def test_settings_override_every_choice() -> None:
    runtime = speed.choose_runtime(
        "cpu", EngineOptions(dtype="float32", channels_last="on", threads=1, memory_savers="on", compile=True)
    )
    try:
        assert (runtime.dtype, runtime.channels_last, runtime.threads) == ("float32", True, 1)
        assert torch.get_num_threads() == 1
        assert speed.memory_savers(runtime, WIDTH, HEIGHT) is True
    finally:
        speed.choose_runtime("cpu", EngineOptions())  # the machine's thread count again


def test_memory_savers_switch_on_by_need_only() -> None:
    auto = speed.choose_runtime("cpu", EngineOptions())
    off = replace(auto, memory_savers="off")

    assert speed.memory_savers(auto, 512, 512) is False
    # No machine has the free memory to decode 64k x 64k pixels in one piece.
    assert speed.memory_savers(auto, 65536, 65536) is True
    assert speed.memory_savers(off, 65536, 65536) is False


def test_a_dtype_setting_loads_the_weights_in_that_dtype(models_path: Path) -> None:
    backend = DiffusersBackend(device="cpu", models_path=models_path, options=EngineOptions(dtype="float32"))

    model = backend.load(TINY)

    assert backend.device_info().dtype == "float32"
    assert model.pipeline.unet.dtype == torch.float32
    assert model.generate(tiny_request(), lambda p: None, never_cancel).runtime["dtype"] == "float32"


# -- the fast decoder and previews -------------------------------------------------------------------------


def test_fast_decoder_decodes_with_the_tiny_autoencoder_at_the_requested_size(model: DiffusersModel) -> None:
    assert model.fast_decoder is not None
    full_vae = _Calls(model.pipeline.vae, "decode")
    tiny_vae = _Calls(model.fast_decoder, "decode")

    fast = model.generate(tiny_request(Decoder.FAST), lambda p: None, never_cancel)
    full = model.generate(tiny_request(Decoder.FULL), lambda p: None, never_cancel)

    assert fast.image.size == (WIDTH, HEIGHT)
    assert fast.runtime["decoder"] == "fast"
    assert full.runtime["decoder"] == "full"
    assert (full_vae.count, tiny_vae.count) == (1, 1)
    assert fast.image.tobytes() != full.image.tobytes()


def test_previews_come_from_the_tiny_autoencoder_at_full_size(model: DiffusersModel) -> None:
    previews = _previews(model, tiny_request())

    assert [preview.size for preview in previews] == [(WIDTH, HEIGHT)] * 2


def test_without_a_fast_decoder_previews_are_the_latents_and_fast_is_refused_with_a_pull_hint(
    models_path: Path,
) -> None:
    source = tiny.build_tiny_sd(models_path / "tiny")
    spec = ModelSpec(
        key="mine",
        source=str(source),
        family=TINY.family,
        description="",
        default_steps=2,
        default_guidance=0.0,
        default_size=64,
        fast_decoder="nobody/missing-taesd",  # not in the Hub cache, and the tests run offline
    )
    model = DiffusersBackend(device="cpu", models_path=models_path).load(spec)

    assert model.fast_decoder is None
    assert [preview.size for preview in _previews(model, tiny_request())] == [(WIDTH // 8, HEIGHT // 8)] * 2
    with pytest.raises(WeightsUnavailable) as refused:
        model.generate(tiny_request(Decoder.FAST), lambda p: None, never_cancel)
    assert "nobody/missing-taesd" in refused.value.message
    assert "imageforge models pull mine" in refused.value.hint


# -- warm paths --------------------------------------------------------------------------------------------


def test_a_repeated_prompt_runs_the_text_encoder_once(models_path: Path) -> None:
    model = DiffusersBackend(device="cpu", models_path=models_path).load(TINY)
    encoder = _Calls(model.pipeline.text_encoder, "forward")

    model.generate(tiny_request(prompt="a red fox", seed=1), lambda p: None, never_cancel)
    model.generate(tiny_request(prompt="a red fox", seed=2, decoder=Decoder.FAST), lambda p: None, never_cancel)
    assert encoder.count == 1
    model.generate(tiny_request(prompt="a blue fox", seed=1), lambda p: None, never_cancel)
    assert encoder.count == 2


def test_cached_embeddings_give_the_same_pixels_as_encoding_afresh(models_path: Path) -> None:
    first = DiffusersBackend(device="cpu", models_path=models_path).load(TINY)
    second = DiffusersBackend(device="cpu", models_path=models_path).load(TINY)
    first.generate(tiny_request(prompt="a red fox", seed=7), lambda p: None, never_cancel)

    cached = first.generate(tiny_request(prompt="a red fox", seed=3), lambda p: None, never_cancel).image
    fresh = second.generate(tiny_request(prompt="a red fox", seed=3), lambda p: None, never_cancel).image

    assert cached.tobytes() == fresh.tobytes()


def test_img2img_and_inpaint_pipelines_share_the_text2img_networks(model: DiffusersModel) -> None:
    init = Image.new("RGB", (WIDTH, HEIGHT), (200, 40, 40))
    edit = replace(tiny_request(), task=Task.IMG2IMG, strength=0.6, init_image=init)
    model.generate(edit, lambda p: None, never_cancel)

    text2img, img2img = model.pipeline, model._pipeline(Task.IMG2IMG)
    assert img2img is not text2img
    for name in ("unet", "vae", "text_encoder"):
        assert getattr(img2img, name) is getattr(text2img, name)


# -- half-precision weights --------------------------------------------------------------------------------


def _folder_with_fp16_unet(target: Path) -> Path:
    """The tiny model as a local diffusers folder whose UNet also has an fp16 copy, every weight 0.5, so a test
    can tell which file was loaded."""
    import diffusers

    folder = tiny.build_tiny_sd(target)
    unet_class: Any = diffusers.UNet2DConditionModel
    unet = unet_class.from_pretrained(folder / "unet")
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.fill_(0.5)
    unet.half().save_pretrained(folder / "unet", variant="fp16", safe_serialization=True)
    return folder


def _local(folder: Path) -> ModelSpec:
    return replace(TINY, key="local", source=str(folder), builtin=False, fast_decoder=None)


def _first_unet_weight(model: DiffusersModel) -> float:
    return float(next(model.pipeline.unet.parameters()).detach().flatten()[0])


def test_half_precision_loads_the_fp16_files_of_a_folder_that_has_them(tmp_path: Path) -> None:
    spec = _local(_folder_with_fp16_unet(tmp_path / "model"))

    half = DiffusersBackend(device="cpu", models_path=tmp_path, options=EngineOptions(dtype="bfloat16")).load(spec)
    full = DiffusersBackend(device="cpu", models_path=tmp_path, options=EngineOptions(dtype="float32")).load(spec)

    assert _first_unet_weight(half) == 0.5  # the fp16 file
    assert _first_unet_weight(full) != 0.5  # the fp32 file
    # components without an fp16 copy load their fp32 files in both
    assert torch.equal(
        half.pipeline.vae.decoder.conv_out.weight.float(),
        full.pipeline.vae.decoder.conv_out.weight.to(torch.bfloat16).float(),
    )
    assert half.generate(tiny_request(), lambda p: None, never_cancel).image.size == (WIDTH, HEIGHT)


def test_fp32_loads_fp16_only_weights_upcast_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _folder_with_fp16_unet(tmp_path / "model")
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # as a half-precision pull leaves it

    model = DiffusersBackend(device="cpu", models_path=tmp_path, options=EngineOptions(dtype="float32")).load(
        _local(folder)
    )

    assert model.pipeline.unet.dtype == torch.float32
    assert _first_unet_weight(model) == 0.5
    assert "only fp16 weights for unet" in caplog.text
    assert "models pull" in caplog.text


class _FakeHub:
    """The Hub as `huggingface_hub`'s listing and download calls see it: repos that are local folders, and a cache
    that downloads copy the files they ask for into (by huggingface_hub's allow/ignore pattern rule)."""

    def __init__(self, repos: dict[str, Path], cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import huggingface_hub

        self.repos, self.cache = repos, cache
        self.downloads: list[tuple[str, list[str]]] = []
        monkeypatch.setattr(
            huggingface_hub.HfApi, "list_repo_files", lambda api, repo_id, revision=None: self.files(repo_id)
        )
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)
        monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)

    def files(self, repo_id: str) -> list[str]:
        repo = self.repos[repo_id]
        return sorted(path.relative_to(repo).as_posix() for path in repo.rglob("*") if path.is_file())

    def snapshot_download(
        self, repo_id: str, *, allow_patterns: list[str], ignore_patterns: Sequence[str] = (), **kwargs: Any
    ) -> str:
        fetched = [name for name in self.files(repo_id) if _fetched(name, allow_patterns, list(ignore_patterns))]
        self.downloads.append((repo_id, fetched))
        for name in fetched:
            (self.cache / repo_id / name).parent.mkdir(parents=True, exist_ok=True)
            (self.cache / repo_id / name).write_bytes((self.repos[repo_id] / name).read_bytes())
        return str(self.cache / repo_id)


def _fetched(name: str, allow: list[str], ignore: list[str]) -> bool:
    from fnmatch import fnmatch

    return any(fnmatch(name, pattern) for pattern in allow) and not any(fnmatch(name, pattern) for pattern in ignore)


def _weights(files: list[str]) -> list[str]:
    return [name for name in files if name.endswith(".safetensors")]


def test_a_pull_fetches_the_files_its_dtype_reads_and_no_single_file_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _folder_with_fp16_unet(tmp_path / "repo")
    (repo / "sd_turbo.safetensors").write_bytes(b"a single-file checkpoint beside the diffusers folders")
    spec = replace(TINY, key="hub", source="someone/some-model", builtin=False, fast_decoder=None)

    for dtype in ("bfloat16", "float32"):
        hub = _FakeHub({spec.source: repo}, tmp_path / f"cache-{dtype}", monkeypatch)
        DiffusersBackend(device="cpu", models_path=tmp_path, options=EngineOptions(dtype=dtype)).pull(spec)
        [(_, fetched)] = hub.downloads
        assert "model_index.json" in fetched
        if dtype == "bfloat16":  # the fp16 UNet, and the fp32 files of the components without an fp16 copy
            assert _weights(fetched) == [
                "text_encoder/model.safetensors",
                "unet/diffusion_pytorch_model.fp16.safetensors",
                "vae/diffusion_pytorch_model.safetensors",
            ]
        else:
            assert _weights(fetched) == [
                "text_encoder/model.safetensors",
                "unet/diffusion_pytorch_model.safetensors",
                "vae/diffusion_pytorch_model.safetensors",
            ]


def test_a_first_use_downloads_what_a_pull_does_and_loads_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)
    taesd = tiny.build_tiny_taesd(tmp_path / "taesd")
    repos = {"someone/some-model": _folder_with_fp16_unet(tmp_path / "repo"), "someone/taesd": taesd}
    hub = _FakeHub(repos, tmp_path / "cache", monkeypatch)
    spec = replace(TINY, key="hub", source="someone/some-model", builtin=False, fast_decoder="someone/taesd")

    model = DiffusersBackend(device="cpu", models_path=tmp_path, options=EngineOptions(dtype="bfloat16")).load(spec)

    (model_repo, fetched), (decoder_repo, _) = hub.downloads  # the model, then its fast decoder, as `pull` does
    assert (model_repo, decoder_repo) == ("someone/some-model", "someone/taesd")
    assert "unet/diffusion_pytorch_model.safetensors" not in fetched
    assert _first_unet_weight(model) == 0.5
    assert model.generate(tiny_request(), lambda p: None, never_cancel).image.size == (WIDTH, HEIGHT)


def test_a_pull_leaves_out_the_transformer_that_a_transformer_file_replaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    repo = tmp_path / "repo"
    for name in ("model_index.json", "transformer/config.json", "transformer/diffusion_pytorch_model.safetensors"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("{}")
    (repo / "vae").mkdir()
    (repo / "vae" / "diffusion_pytorch_model.safetensors").write_text("{}")
    hub = _FakeHub({"someone/flux": repo}, tmp_path / "cache", monkeypatch)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *args, **kwargs: str(tmp_path / "q4.gguf"))
    spec = replace(TINY, key="flux", source="someone/flux", builtin=False, fast_decoder=None)

    DiffusersBackend(device="cpu", models_path=tmp_path).pull(replace(spec, transformer_file="someone/gguf/q4.gguf"))
    DiffusersBackend(device="cpu", models_path=tmp_path).pull(spec)

    (_, with_file), (_, without) = hub.downloads
    assert _weights(with_file) == ["vae/diffusion_pytorch_model.safetensors"]
    assert _weights(without) == [
        "transformer/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    ]
