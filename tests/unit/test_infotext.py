"""AUTOMATIC1111's infotext: imageforge writes the layout its PNG Info, Civitai and sd-parsers read, and reads it
back as AUTOMATIC1111 does, checked against an infotext AUTOMATIC1111 v1.9.4 wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imageforge.domain import A1111_SAMPLER_NAMES, A1111_SCHEDULE_NAMES, Sampler, Schedule
from imageforge.infotext import format_infotext, parse_infotext, quote, request_fields

#: An inpaint result's infotext as AUTOMATIC1111 v1.9.4 wrote it (published with its images in a project README).
A1111_SAMPLE = (Path(__file__).parent / "fixtures" / "a1111_inpaint_infotext.txt").read_text()
#: The pairs of the sample that imageforge has no value for.
NOT_OURS = ("Model hash", "Masked content", "Version")

RECORD: dict[str, Any] = {
    "task": "text2img",
    "model": "tiny",
    "prompt": "a red fox",
    "negative_prompt": "blur",
    "seed": 42,
    "steps": 4,
    "guidance": 7.5,
    "width": 64,
    "height": 32,
    "strength": None,
    "sampler": "euler_a",
    "schedule": "default",
}


def test_our_text_for_the_samples_parameters_is_the_samples_text_without_what_we_do_not_have() -> None:
    parsed = parse_infotext(A1111_SAMPLE)
    fields = request_fields(parsed)
    assert (fields["sampler"], fields["schedule"], fields["strength"]) == ("dpmpp_2m", "karras", 0.91)

    ours = format_infotext({**fields, "task": "inpaint"})

    *sample_lines, sample_pairs = A1111_SAMPLE.strip().split("\n")
    kept = ", ".join(pair for pair in sample_pairs.split(", ") if pair.split(":")[0] not in NOT_OURS)
    assert ours.split("\n") == [*sample_lines, kept]


def test_the_sample_reads_as_automatic1111_reads_it() -> None:
    parsed = parse_infotext(A1111_SAMPLE)

    assert parsed["Prompt"] == "product shoot in sand with beach elements, warm weather, studio lighting"
    assert parsed["Negative prompt"] == "incomplete elements"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("985", "1266")
    assert "Size" not in parsed
    assert (parsed["Sampler"], parsed["Schedule type"], parsed["CFG scale"]) == ("DPM++ 2M", "Karras", "8")
    assert (parsed["Model hash"], parsed["Version"]) == ("b513c6287d", "v1.9.4")


def test_a_prompt_with_commas_newlines_and_quotes_survives_a_round_trip() -> None:
    prompt = 'a sign that says "OPEN, 24/7: come in"\nsecond line, with a comma'
    negative = 'blur, "text"\nwatermark'

    parsed = parse_infotext(format_infotext({**RECORD, "prompt": prompt, "negative_prompt": negative}))

    assert (parsed["Prompt"], parsed["Negative prompt"]) == (prompt, negative)
    assert parsed["Sampler"] == "Euler a"


def test_values_with_a_comma_colon_or_newline_are_json_strings_and_read_back() -> None:
    assert quote("plain") == "plain"
    assert quote("a, b") == '"a, b"'
    assert quote("a: b") == '"a: b"'
    assert quote('say "hi"\nok') == '"say \\"hi\\"\\nok"'
    text = format_infotext({**RECORD, "model": "my:model, v2"})

    assert 'Model: "my:model, v2"' in text
    assert parse_infotext(text)["Model"] == "my:model, v2"


def test_the_parameters_line_follows_automatic1111s_order_and_names() -> None:
    text = format_infotext({**RECORD, "task": "img2img", "strength": 0.6, "schedule": "default"})

    assert text.split("\n") == [
        "a red fox",
        "Negative prompt: blur",
        "Steps: 4, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7.5, Seed: 42, Size: 64x32, Model: tiny, "
        "Denoising strength: 0.6",
    ]


def test_what_a_record_lacks_is_left_out() -> None:
    text = format_infotext({"prompt": "p", "negative_prompt": "", "seed": 1, "steps": 2, "guidance": 0.0})

    assert text == "p\nSteps: 2, CFG scale: 0, Seed: 1"
    assert "Denoising strength" not in format_infotext({**RECORD, "strength": 0.6})  # text2img has none


def test_a_last_line_with_fewer_than_three_pairs_is_part_of_the_prompt() -> None:
    parsed = parse_infotext("portrait\nstyle: noir, mood: dark")

    assert parsed["Prompt"] == "portrait\nstyle: noir, mood: dark"
    assert parsed["Negative prompt"] == ""


def test_every_sampler_and_schedule_has_one_automatic1111_name() -> None:
    assert set(A1111_SAMPLER_NAMES) == set(Sampler)
    assert set(A1111_SCHEDULE_NAMES) == set(Schedule)
    assert len(set(A1111_SAMPLER_NAMES.values())) == len(Sampler)
    for sampler in Sampler:
        parsed = parse_infotext(format_infotext({**RECORD, "sampler": sampler.value}))
        assert request_fields(parsed)["sampler"] == sampler.value


def test_an_older_infotexts_sampler_with_its_schedule_in_the_name_reads_as_both() -> None:
    older = "a fox\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512"

    fields = request_fields(parse_infotext(older))

    assert (fields["sampler"], fields["schedule"]) == ("dpmpp_2m", "karras")
    assert "sampler" not in request_fields(parse_infotext(older.replace("DPM++ 2M", "DPM fast")))


def test_a_long_line_without_pairs_is_read_as_prompt_in_one_pass() -> None:
    # Anyone's PNG may carry this text: with keys of any length, reading it took time in the square of its length
    # (half a minute for this one); keys are at most 64 characters, so it reads at once.
    line = "word " * 20_000

    parsed = parse_infotext(f"{line}\n{line}")

    assert parsed["Prompt"] == f"{line.strip()}\n{line.strip()}"
    assert request_fields(parsed) == {"prompt": parsed["Prompt"], "negative_prompt": ""}
