"""The catalog: built-in entries, guards, the portrait LoRA setting and the user's models file."""

from __future__ import annotations

import logging
from pathlib import Path

import huggingface_hub.constants
import pytest

from imageforge.domain import Family, LoraWeight, ModelSpec, Task
from imageforge.engine.backends.diffusers import DiffusersBackend
from imageforge.engine.catalog import BUILTIN_MODELS, Catalog, build_catalog, load_models_file
from imageforge.errors import ModelGuarded, ModelNotFound

BUILTIN_KEYS = [
    "sd-turbo",
    "sdxl-turbo",
    "sdxl",
    "sdxl-lcm",
    "sdxl-portrait",
    "flux-q4",
    "flux2-klein",
    "qwen-image",
    "qwen-image-edit",
    "tiny",
]


def _catalog(
    *, lora_portrait: str | None = None, models_file: Path | None = None, guards: tuple[str, ...] = ()
) -> Catalog:
    return build_catalog(lora_portrait=lora_portrait, models_file=models_file, allowed_guards=guards)


def _models_file(folder: Path, text: str) -> Path:
    path = folder / "models.toml"
    path.write_text(text)
    return path


# -- built-in entries ---------------------------------------------------------------------------------


def test_builtin_entries_are_listed_in_order() -> None:
    assert [spec.key for spec in _catalog()] == BUILTIN_KEYS


def test_builtin_entries_carry_their_defaults() -> None:
    catalog = _catalog()

    sd_turbo = catalog.get("sd-turbo")
    assert (sd_turbo.family, sd_turbo.default_steps, sd_turbo.default_guidance, sd_turbo.default_size) == (
        Family.SD,
        1,
        0.0,
        512,
    )
    lcm = catalog.get("sdxl-lcm")
    assert (lcm.family, lcm.scheduler, lcm.lora) == (Family.SDXL, "LCMScheduler", "latent-consistency/lcm-lora-sdxl")
    flux = catalog.get("flux-q4")
    assert (flux.family, flux.guard) == (Family.FLUX, "ALLOW_FLUX")
    assert flux.transformer_file is not None
    assert flux.transformer_file.endswith(".gguf")
    klein = catalog.get("flux2-klein")
    assert (klein.family, klein.guard, klein.tasks) == (Family.FLUX2_KLEIN, "ALLOW_KLEIN", (Task.TEXT2IMG,))
    tiny = catalog.get("tiny")
    assert tiny.builtin
    assert tiny.guard is None
    assert set(tiny.tasks) == set(Task)


def test_every_builtin_entry_defaults_to_a_size_its_family_accepts() -> None:
    for spec in _catalog():
        assert spec.default_size % spec.size_multiple == 0, spec.key
        assert spec.default_steps >= 1, spec.key


def test_unknown_key_raises_model_not_found_listing_the_keys_that_can_run() -> None:
    with pytest.raises(ModelNotFound) as caught:
        _catalog().get("no-such-model")

    assert "no-such-model" in caught.value.message
    for spec in BUILTIN_MODELS:
        assert (spec.key in caught.value.hint) == (spec.guard is None), spec.key
    assert caught.value.code == "model_not_found"


# -- guards -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "guard"), [("flux-q4", "ALLOW_FLUX"), ("flux2-klein", "ALLOW_KLEIN")])
def test_require_refuses_a_guarded_model_naming_the_setting(key: str, guard: str) -> None:
    catalog = _catalog()

    with pytest.raises(ModelGuarded) as caught:
        catalog.require(key)
    assert guard in caught.value.hint
    assert caught.value.code == "model_guarded"
    assert not catalog.is_allowed(catalog.get(key))


@pytest.mark.parametrize(("key", "guard"), [("flux-q4", "ALLOW_FLUX"), ("flux2-klein", "ALLOW_KLEIN")])
def test_require_allows_a_guarded_model_once_its_guard_is_open(key: str, guard: str) -> None:
    catalog = _catalog(guards=(guard,))

    assert catalog.require(key).key == key
    assert catalog.is_allowed(catalog.get(key))


def test_an_open_guard_opens_only_its_own_models() -> None:
    with pytest.raises(ModelGuarded):
        _catalog(guards=("ALLOW_FLUX",)).require("flux2-klein")


def test_get_returns_a_guarded_entry_for_listing() -> None:
    assert _catalog().get("flux-q4").guard == "ALLOW_FLUX"


# -- sdxl-portrait -------------------------------------------------------------------------------------


def test_sdxl_portrait_without_a_lora_runs_as_plain_sdxl_with_a_notice() -> None:
    spec = _catalog(lora_portrait=None).get("sdxl-portrait")

    assert spec.lora is None
    assert "IMAGEFORGE_LORA_PORTRAIT" in spec.notice


def test_sdxl_portrait_with_a_lora_carries_it_without_a_notice() -> None:
    spec = _catalog(lora_portrait="someone/portrait-lora").get("sdxl-portrait")

    assert spec.lora == "someone/portrait-lora"
    assert spec.notice == ""


def test_sdxl_portrait_applies_a_lora_folder_name_per_request_instead_of_fusing_it() -> None:
    spec = _catalog(lora_portrait="portrait").get("sdxl-portrait")

    assert spec.loras == (LoraWeight(name="portrait", weight=1.0),)
    assert spec.lora is None
    assert spec.notice == ""


def test_sdxl_portrait_with_a_lora_folder_name_runs_on_the_sdxl_entrys_weights() -> None:
    catalog = _catalog(lora_portrait="portrait")

    assert catalog.loaded_as(catalog.get("sdxl-portrait")).key == "sdxl"
    assert catalog.loaded_as(catalog.get("sdxl")).key == "sdxl"


def test_an_entry_with_its_own_weights_or_fused_lora_runs_on_its_own() -> None:
    fused = _catalog(lora_portrait="someone/portrait-lora")

    assert fused.loaded_as(fused.get("sdxl-portrait")).key == "sdxl-portrait"
    assert fused.loaded_as(fused.get("sdxl-lcm")).key == "sdxl-lcm"


@pytest.mark.parametrize("setting", ["portrait.safetensors", "/srv/loras/portrait", "~/portrait"])
def test_a_portrait_lora_given_as_a_path_is_fused_as_before(setting: str) -> None:
    spec = _catalog(lora_portrait=setting).get("sdxl-portrait")

    assert spec.lora == setting
    assert spec.loras == ()


def test_models_file_entries_may_name_loras_every_request_applies(tmp_path: Path) -> None:
    path = _models_file(
        tmp_path,
        '[models.inked]\nsource = "o/inked"\nloras = [{name = "ink", weight = 0.7}, {name = "grain"}]\n',
    )

    spec = _catalog(models_file=path).get("inked")

    assert spec.loras == (LoraWeight(name="ink", weight=0.7), LoraWeight(name="grain", weight=1.0))


@pytest.mark.parametrize("loras", ['"ink"', '[{name = "ink", weight = 5}]', "[{weight = 1}]"])
def test_a_models_file_entry_with_unusable_loras_is_skipped(tmp_path: Path, loras: str) -> None:
    path = _models_file(tmp_path, f'[models.inked]\nsource = "o/inked"\nloras = {loras}\n')

    assert "inked" not in _catalog(models_file=path)


def test_the_portrait_lora_touches_no_other_entry() -> None:
    with_lora = _catalog(lora_portrait="someone/portrait-lora")

    for spec in _catalog():
        if spec.key != "sdxl-portrait":
            assert with_lora.get(spec.key) == spec


# -- the user's models file ---------------------------------------------------------------------------


def test_models_file_entries_join_the_builtins(tmp_path: Path) -> None:
    models_file = _models_file(tmp_path, '[models.mine]\nsource = "someone/my-model"\n')

    catalog = _catalog(models_file=models_file)

    assert [spec.key for spec in catalog] == [*BUILTIN_KEYS, "mine"]


def test_a_models_file_entry_may_replace_a_builtin_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models_file = _models_file(tmp_path, '[models.sdxl]\nsource = "/srv/models/sdxl"\nfamily = "sdxl"\n')

    with caplog.at_level(logging.WARNING, logger="imageforge.engine.catalog"):
        catalog = _catalog(models_file=models_file)

    assert [spec.key for spec in catalog] == BUILTIN_KEYS
    assert catalog.get("sdxl").source == "/srv/models/sdxl"
    assert any("[models.sdxl]" in record.getMessage() for record in caplog.records)


def test_a_missing_models_file_leaves_the_builtins(tmp_path: Path) -> None:
    assert [spec.key for spec in _catalog(models_file=tmp_path / "absent.toml")] == BUILTIN_KEYS


def test_models_file_relative_paths_resolve_against_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "config"
    (folder / "models" / "mine").mkdir(parents=True)
    (folder / "loras").mkdir()
    (folder / "loras" / "style.safetensors").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    models_file = _models_file(
        folder,
        """
        [models.mine]
        source = "models/mine"
        lora = "loras/style.safetensors"

        [models.not-yet-there]
        source = "models/later"
        lora = "loras/later.safetensors"
        """,
    )

    [mine, later] = load_models_file(models_file)

    assert mine.source == str((folder / "models" / "mine").resolve())
    assert mine.lora == str((folder / "loras" / "style.safetensors").resolve())
    # Not on disk and shaped like `owner/repo`: a Hub repo id. A .safetensors name is always a file.
    assert later.source == "models/later"
    assert later.lora == str((folder / "loras" / "later.safetensors").resolve())


def test_models_file_keeps_hub_ids_and_absolute_paths(tmp_path: Path) -> None:
    models_file = _models_file(
        tmp_path,
        f"""
        [models.from-hub]
        source = "someone/some-model"
        lora = "someone/some-lora"

        [models.absolute]
        source = "{tmp_path / "elsewhere"}"
        """,
    )

    [from_hub, absolute] = load_models_file(models_file)

    assert (from_hub.source, from_hub.lora) == ("someone/some-model", "someone/some-lora")
    assert absolute.source == str((tmp_path / "elsewhere").resolve())


def test_models_file_entries_take_defaults(tmp_path: Path) -> None:
    models_file = _models_file(
        tmp_path,
        """
        [models.sd]
        source = "someone/sd"

        [models.xl]
        source = "someone/xl"
        family = "sdxl"

        [models.klein]
        source = "someone/klein"
        family = "flux2-klein"
        """,
    )

    [sd, xl, klein] = load_models_file(models_file)

    assert (sd.family, sd.default_steps, sd.default_guidance, sd.default_size) == (Family.SD, 25, 5.0, 512)
    assert sd.tasks == (Task.TEXT2IMG, Task.IMG2IMG, Task.INPAINT)
    assert (sd.scheduler, sd.lora, sd.revision, sd.transformer_file, sd.guard) == (None, None, None, None, None)
    assert not sd.builtin
    assert (xl.family, xl.default_size) == (Family.SDXL, 1024)
    # diffusers has no img2img or inpaint pipeline for FLUX.2 klein.
    assert klein.tasks == (Task.TEXT2IMG,)


def test_models_file_entries_carry_every_setting(tmp_path: Path) -> None:
    models_file = _models_file(
        tmp_path,
        """
        [models.full]
        source = "someone/full"
        family = "sdxl"
        description = "Mine."
        steps = 6
        guidance = 1.5
        size = 768
        tasks = ["text2img", "img2img"]
        memory_gb = 9.5
        quality_note = "Sharp."
        scheduler = "LCMScheduler"
        lora = "someone/lora"
        revision = "v2"
        fast_decoder = "someone/taesdxl"
        """,
    )

    [spec] = load_models_file(models_file)

    assert spec == ModelSpec(
        key="full",
        source="someone/full",
        family=Family.SDXL,
        description="Mine.",
        default_steps=6,
        default_guidance=1.5,
        default_size=768,
        tasks=(Task.TEXT2IMG, Task.IMG2IMG),
        est_memory_gb=9.5,
        quality_note="Sharp.",
        scheduler="LCMScheduler",
        lora="someone/lora",
        revision="v2",
        fast_decoder="someone/taesdxl",
    )


def test_models_file_entries_get_their_familys_fast_decoder(tmp_path: Path) -> None:
    models_file = _models_file(
        tmp_path,
        """
        [models.sd]
        source = "someone/sd"
        [models.xl]
        source = "someone/xl"
        family = "sdxl"
        [models.flux]
        source = "someone/flux"
        family = "flux"
        """,
    )

    [sd, xl, flux] = load_models_file(models_file)

    assert (sd.fast_decoder, xl.fast_decoder, flux.fast_decoder) == (
        "madebyollin/taesd",
        "madebyollin/taesdxl",
        None,
    )


def test_models_file_flux_entry_may_name_a_gguf_transformer(tmp_path: Path) -> None:
    models_file = _models_file(
        tmp_path,
        """
        [models.local]
        source = "someone/flux"
        family = "flux"
        transformer_file = "q4.gguf"

        [models.hub]
        source = "someone/flux"
        family = "flux"
        transformer_file = "someone/flux-gguf/q4.gguf"

        [models.url]
        source = "someone/flux"
        family = "flux"
        transformer_file = "https://huggingface.co/someone/flux-gguf/blob/main/q4.gguf"
        """,
    )

    [local, hub, url] = load_models_file(models_file)

    assert local.transformer_file == str((tmp_path / "q4.gguf").resolve())
    assert hub.transformer_file == "someone/flux-gguf/q4.gguf"
    assert url.transformer_file == "https://huggingface.co/someone/flux-gguf/blob/main/q4.gguf"


INVALID_ENTRIES = {
    "no-source": 'family = "sd"',
    "bad-family": 'source = "someone/m"\nfamily = "dalle"',
    "bad-task": 'source = "someone/m"\ntasks = ["upscale"]',
    "no-tasks": 'source = "someone/m"\ntasks = []',
    "tasks-not-a-list": 'source = "someone/m"\ntasks = "text2img"',
    "bad-steps": 'source = "someone/m"\nsteps = "many"',
    "zero-steps": 'source = "someone/m"\nsteps = 0',
    "odd-size": 'source = "someone/m"\nsize = 500',
    "flux-size": 'source = "someone/m"\nfamily = "flux"\nsize = 520',
    "scheduler-not-a-name": 'source = "someone/m"\nscheduler = 3',
    "gguf-for-sdxl": 'source = "someone/m"\nfamily = "sdxl"\ntransformer_file = "q4.gguf"',
    "transformer-not-gguf": 'source = "someone/m"\nfamily = "flux"\ntransformer_file = "t.safetensors"',
    "transformer-url-not-a-file": 'source = "someone/m"\nfamily = "flux"\ntransformer_file = "https://huggingface.co/a.gguf"',
}


def test_invalid_entries_are_skipped_with_a_warning_and_the_rest_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    text = "\n".join(f"[models.{key}]\n{body}\n" for key, body in INVALID_ENTRIES.items())
    models_file = _models_file(tmp_path, f'{text}\n[models.good]\nsource = "someone/good"\n')

    with caplog.at_level(logging.WARNING, logger="imageforge.engine.catalog"):
        catalog = _catalog(models_file=models_file)

    assert [spec.key for spec in catalog] == [*BUILTIN_KEYS, "good"]
    for key in INVALID_ENTRIES:
        assert any(f"[models.{key}]" in record.getMessage() for record in caplog.records), key


def test_an_entry_that_is_not_a_table_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    models_file = _models_file(tmp_path, 'models.flat = "someone/m"\n[models.good]\nsource = "someone/good"\n')

    with caplog.at_level(logging.WARNING, logger="imageforge.engine.catalog"):
        specs = load_models_file(models_file)

    assert [spec.key for spec in specs] == ["good"]
    assert any("[models.flat]" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("text", ["[models.broken\nsource = 1", "models = 3"])
def test_an_unusable_models_file_is_logged_and_leaves_the_builtins(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, text: str
) -> None:
    models_file = _models_file(tmp_path, text)

    with caplog.at_level(logging.ERROR, logger="imageforge.engine.catalog"):
        catalog = _catalog(models_file=models_file)

    assert [spec.key for spec in catalog] == BUILTIN_KEYS
    assert any(str(models_file) in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("suffix", [".ckpt", ".bin", ".pt", ".pth", ".pkl", ".CKPT"])
@pytest.mark.parametrize("field", ["source", "lora"])
def test_pickle_weights_in_a_models_file_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, suffix: str, field: str
) -> None:
    (tmp_path / f"weights{suffix}").write_bytes(b"")
    entry = f'{field} = "weights{suffix}"' if field == "source" else f'source = "someone/m"\nlora = "weights{suffix}"'
    models_file = _models_file(tmp_path, f"[models.pickled]\n{entry}\n")

    with caplog.at_level(logging.WARNING, logger="imageforge.engine.catalog"):
        specs = load_models_file(models_file)

    assert specs == []
    [record] = [r for r in caplog.records if "[models.pickled]" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "pickle" in record.getMessage()


def test_a_lora_file_that_is_not_safetensors_is_refused(tmp_path: Path) -> None:
    (tmp_path / "style.lora").write_bytes(b"")
    models_file = _models_file(tmp_path, '[models.m]\nsource = "someone/m"\nlora = "style.lora"\n')

    assert load_models_file(models_file) == []


# -- whether an entry's weights are on this machine ----------------------------------------------------


def _backend(tmp_path: Path) -> DiffusersBackend:
    return DiffusersBackend(device="cpu", models_path=tmp_path / "models")


def _spec(source: str, **changes: str) -> ModelSpec:
    return ModelSpec(
        key="m",
        source=source,
        family=Family.FLUX if "transformer_file" in changes else Family.SDXL,
        description="",
        default_steps=1,
        default_guidance=0.0,
        default_size=64,
        lora=changes.get("lora"),
        transformer_file=changes.get("transformer_file"),
    )


def _cache_file(cache: Path, repo_id: str, filename: str) -> None:
    """Put `filename` of `repo_id` into a Hugging Face cache laid out the way `hf_hub_download` leaves it."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40) / filename
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.write_bytes(b"")


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache in place of the machine's own."""
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_weights_present_for_a_local_folder_that_exists(tmp_path: Path, hub_cache: Path) -> None:
    (tmp_path / "mine").mkdir()

    assert _backend(tmp_path).weights_present(_spec(str(tmp_path / "mine")))
    assert not _backend(tmp_path).weights_present(_spec(str(tmp_path / "absent")))


def test_weights_absent_for_a_hub_repo_not_in_the_cache(tmp_path: Path, hub_cache: Path) -> None:
    assert not _backend(tmp_path).weights_present(_spec("imageforge-tests/not-downloaded"))


def test_weights_present_for_a_hub_repo_in_the_cache(tmp_path: Path, hub_cache: Path) -> None:
    _cache_file(hub_cache, "someone/model", "model_index.json")

    assert _backend(tmp_path).weights_present(_spec("someone/model"))
    assert not _backend(tmp_path).weights_present(_spec("someone/model", lora="someone/lora"))
    _cache_file(hub_cache, "someone/lora", "pytorch_lora_weights.safetensors")
    assert _backend(tmp_path).weights_present(_spec("someone/model", lora="someone/lora"))


def test_weights_present_checks_the_builtin_flux_gguf_file_by_its_url(tmp_path: Path, hub_cache: Path) -> None:
    flux = _catalog().get("flux-q4")
    backend = _backend(tmp_path)
    _cache_file(hub_cache, flux.source, "model_index.json")

    assert not backend.weights_present(flux)
    _cache_file(hub_cache, "city96/FLUX.1-schnell-gguf", "flux1-schnell-Q4_K_S.gguf")
    assert backend.weights_present(flux)


def test_the_builtin_tiny_model_needs_no_download(tmp_path: Path, hub_cache: Path) -> None:
    assert _backend(tmp_path).weights_present(_catalog().get("tiny"))
