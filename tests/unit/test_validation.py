"""Validation on its own, without a server: each rule a request meets before anything is queued."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from imageforge.domain import (
    SAMPLER_SCHEDULES,
    Decoder,
    GenerationParams,
    ImageSource,
    LoraWeight,
    ModelSpec,
    Sampler,
    Schedule,
    Task,
)
from imageforge.engine.catalog import BUILTIN_MODELS
from imageforge.errors import InvalidRequest, PathForbidden, UnsupportedOperation
from imageforge.inputs import InputPaths
from imageforge.validation import RequestLimits, RequestValidator
from tests.helpers import png_base64

SPECS = {spec.key: spec for spec in BUILTIN_MODELS}


@pytest.fixture
def validator(tmp_path: Path) -> RequestValidator:
    return RequestValidator(RequestLimits(max_res=512, max_steps=50), InputPaths(tmp_path, [tmp_path]))


def _spec(key: str) -> ModelSpec:
    return SPECS[key]


def test_defaults_come_from_the_model_and_a_seed_is_drawn(validator: RequestValidator) -> None:
    spec = _spec("sd-turbo")

    request = validator.validate(GenerationParams(task=Task.TEXT2IMG, prompt="  a fox  "), spec)

    assert (request.prompt, request.steps, request.guidance) == ("a fox", spec.default_steps, spec.default_guidance)
    assert (request.width, request.height) == (min(spec.default_size, 512),) * 2
    assert 0 <= request.seed < 2**32
    assert request.decoder is Decoder.FULL


def test_a_size_over_max_res_is_refused_with_the_limit_in_the_hint(validator: RequestValidator) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validator.validate(GenerationParams(task=Task.TEXT2IMG, prompt="x", width=1024, height=512), _spec("sd-turbo"))

    assert "width 1024" in refused.value.message
    assert "512 (MAX_RES)" in refused.value.hint


def test_flux_sizes_are_multiples_of_16_and_the_hint_offers_one(validator: RequestValidator) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validator.validate(GenerationParams(task=Task.TEXT2IMG, prompt="x", width=264), _spec("flux-q4"))

    assert "not a multiple of 16" in refused.value.message
    assert "e.g. 256" in refused.value.hint


def test_an_edit_without_steps_gets_enough_for_one_denoising_step(validator: RequestValidator) -> None:
    params = GenerationParams(
        task=Task.IMG2IMG, prompt="x", strength=0.25, init_image=ImageSource(base64=png_base64((64, 64)))
    )

    request = validator.validate(params, _spec("sd-turbo"))

    assert request.steps * request.strength >= 1
    assert request.init_image is not None
    assert request.init_image.size == (request.width, request.height) == (64, 64)


def test_a_strength_too_small_for_the_step_limit_is_refused_instead_of_running_unbounded_steps(
    validator: RequestValidator,
) -> None:
    params = GenerationParams(task=Task.IMG2IMG, prompt="x", strength=1e-6, init_image=ImageSource(png_base64()))

    with pytest.raises(InvalidRequest) as refused:
        validator.validate(params, _spec("sd-turbo"))

    assert "over the limit of 50" in refused.value.message


def test_a_mask_of_another_size_than_its_image_is_refused(validator: RequestValidator) -> None:
    params = GenerationParams(
        task=Task.INPAINT,
        prompt="x",
        init_image=ImageSource(base64=png_base64((64, 64))),
        mask_image=ImageSource(base64=png_base64((32, 32), 255, "L")),
    )

    with pytest.raises(InvalidRequest, match="mask_image is 32x32 but init_image is 64x64"):
        validator.validate(params, _spec("sd-turbo"))


def test_the_fast_decoder_is_refused_for_a_model_without_one(validator: RequestValidator) -> None:
    with pytest.raises(UnsupportedOperation, match="no fast decoder"):
        validator.validate(GenerationParams(task=Task.TEXT2IMG, prompt="x", decoder="fast"), _spec("flux-q4"))


def test_an_input_path_outside_the_allowed_folders_is_refused(tmp_path: Path) -> None:
    inside = tmp_path / "inside"
    inside.mkdir()
    validator = RequestValidator(RequestLimits(), InputPaths(tmp_path, [inside]))
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"not read")
    params = GenerationParams(task=Task.IMG2IMG, prompt="x", init_image=ImageSource(path=str(outside)))

    with pytest.raises(PathForbidden):
        validator.validate(params, _spec("sd-turbo"))


@pytest.mark.parametrize("count", [0, 5])
def test_a_count_outside_1_to_4_is_refused_naming_it(validator: RequestValidator, count: int) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validator.validate(GenerationParams(task=Task.TEXT2IMG, prompt="x", count=count), _spec("tiny"))

    assert refused.value.message == f"count {count} is out of range."
    assert "1 to 4" in refused.value.hint


def test_the_seeds_of_several_images_stay_within_the_largest_seed(validator: RequestValidator) -> None:
    last = 2**32 - 1
    fits = GenerationParams(task=Task.TEXT2IMG, prompt="x", seed=last - 3, count=4)
    over = GenerationParams(task=Task.TEXT2IMG, prompt="x", seed=last - 2, count=4)

    assert validator.validate(fits, _spec("tiny")).seed == last - 3
    with pytest.raises(InvalidRequest) as refused:
        validator.validate(over, _spec("tiny"))
    assert "up to seed+3" in refused.value.message
    assert f"Use 0 to {last - 3}" in refused.value.hint


def test_every_schedule_a_sampler_runs_is_accepted_on_sd_and_sdxl(validator: RequestValidator) -> None:
    for key in ("sd-turbo", "sdxl"):
        for sampler, schedules in SAMPLER_SCHEDULES.items():
            for schedule in schedules:
                params = GenerationParams(task=Task.TEXT2IMG, prompt="x", sampler=sampler, schedule=schedule)

                request = validator.validate(params, _spec(key))

                assert (request.sampler, request.schedule) == (sampler, schedule)


@pytest.mark.parametrize(("sampler", "schedule"), [("dpmpp_2m", "default"), ("euler", "karras"), (None, "exponential")])
def test_flux_takes_no_sampler_but_its_own_euler(
    validator: RequestValidator, sampler: str | None, schedule: str
) -> None:
    params = GenerationParams(task=Task.TEXT2IMG, prompt="x", sampler=sampler, schedule=schedule)

    with pytest.raises(InvalidRequest) as refused:
        validator.validate(params, _spec("flux-q4"))

    assert "flow matching" in refused.value.message
    assert "Leave sampler and schedule out" in refused.value.hint


def test_flux_accepts_euler_its_own_sampler(validator: RequestValidator) -> None:
    params = GenerationParams(task=Task.TEXT2IMG, prompt="x", sampler="euler")

    request = validator.validate(params, _spec("flux-q4"))

    assert (request.sampler, request.schedule) == (Sampler.EULER, Schedule.DEFAULT)


# -- loras --------------------------------------------------------------------------------------------


def _with_loras(*loras: LoraWeight) -> GenerationParams:
    return GenerationParams(task=Task.TEXT2IMG, prompt="x", loras=loras)


def test_more_loras_than_a_request_may_apply_are_refused_for_in_process_callers(validator: RequestValidator) -> None:
    with pytest.raises(InvalidRequest) as refused:
        validator.validate(_with_loras(*(LoraWeight(name=f"l{n}") for n in range(5))), _spec("sd-turbo"))

    assert "at most 4" in refused.value.hint


def test_a_lora_named_twice_even_with_its_suffix_is_refused(validator: RequestValidator) -> None:
    with pytest.raises(InvalidRequest, match="more than once"):
        validator.validate(_with_loras(LoraWeight(name="ink"), LoraWeight(name="ink.safetensors")), _spec("sd-turbo"))


def test_a_models_own_loras_come_first_and_a_request_naming_one_sets_its_weight(validator: RequestValidator) -> None:
    spec = replace(_spec("sd-turbo"), loras=(LoraWeight(name="ink", weight=0.8), LoraWeight(name="grain")))

    request = validator.validate(_with_loras(LoraWeight(name="film"), LoraWeight(name="ink", weight=0.0)), spec)

    assert request.loras == (
        LoraWeight(name="ink", weight=0.0),
        LoraWeight(name="grain", weight=1.0),
        LoraWeight(name="film", weight=1.0),
    )
