"""Settings: prefixed and bare environment names, `.env` files, path lists, relative paths, invalid values."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from imageforge.config import Settings

#: (bare name, field, raw value, parsed value) for every option the original design named without a prefix.
BARE_OPTIONS: list[tuple[str, str, str, object]] = [
    ("PORT", "port", "9000", 9000),
    ("HOST", "host", "0.0.0.0", "0.0.0.0"),
    ("DEVICE", "device", "cpu", "cpu"),
    ("MAX_RES", "max_res", "768", 768),
    ("OUTPUT_DIR", "output_dir", "/srv/images", Path("/srv/images")),
    ("CACHE_DIR", "cache_dir", "/srv/cache", Path("/srv/cache")),
    ("ALLOW_FLUX", "allow_flux", "1", True),
    ("ALLOW_KLEIN", "allow_klein", "true", True),
    ("WARMUP", "warmup", "yes", True),
    ("OLLAMA_URL", "ollama_url", "http://ollama:11434", "http://ollama:11434"),
    ("OLLAMA_MODEL", "ollama_model", "llama3:8b", "llama3:8b"),
]

#: (prefixed name, field, raw value, parsed value) for the options that exist only with the prefix.
PREFIXED_ONLY_OPTIONS: list[tuple[str, str, str, object]] = [
    ("IMAGEFORGE_MODEL", "default_model", "sdxl", "sdxl"),
    ("IMAGEFORGE_DATA_DIR", "data_dir", "/srv/data", Path("/srv/data")),
    ("IMAGEFORGE_LORA_PORTRAIT", "lora_portrait", "me/portrait", "me/portrait"),
    ("IMAGEFORGE_MODELS_FILE", "models_file", "/etc/imageforge/models.toml", Path("/etc/imageforge/models.toml")),
    ("IMAGEFORGE_TEMPLATES_FILE", "templates_file", "/etc/imageforge/t.toml", Path("/etc/imageforge/t.toml")),
    ("IMAGEFORGE_MAX_BODY_MB", "max_body_mb", "8", 8.0),
    ("IMAGEFORGE_MAX_STEPS", "max_steps", "50", 50),
    ("IMAGEFORGE_ASSIST_TIMEOUT_S", "assist_timeout_s", "5", 5.0),
    ("IMAGEFORGE_ROOT", "root_dir", "/srv/imageforge", Path("/srv/imageforge")),
]


def settings() -> Settings:
    """Settings from the environment alone, never from a `.env` in the directory the tests run in."""
    return Settings(_env_file=None)


def test_defaults_without_any_environment() -> None:
    current = settings()

    assert (current.default_model, current.device, current.host, current.port) == (
        "sd-turbo",
        "auto",
        "127.0.0.1",
        8765,
    )
    assert (current.max_res, current.max_steps, current.max_body_mb) == (1024, 100, 32.0)
    assert (current.allow_flux, current.allow_klein, current.warmup) == (False, False, False)
    assert current.lora_portrait is None
    assert current.input_dirs == []
    assert current.root_dir == Path.cwd()


@pytest.mark.parametrize(("name", "field", "raw", "parsed"), BARE_OPTIONS, ids=[o[0] for o in BARE_OPTIONS])
def test_bare_name_sets_its_option(
    monkeypatch: pytest.MonkeyPatch, name: str, field: str, raw: str, parsed: object
) -> None:
    monkeypatch.setenv(name, raw)

    assert getattr(settings(), field) == parsed


@pytest.mark.parametrize(("name", "field", "raw", "parsed"), BARE_OPTIONS, ids=[o[0] for o in BARE_OPTIONS])
def test_prefixed_name_sets_its_option(
    monkeypatch: pytest.MonkeyPatch, name: str, field: str, raw: str, parsed: object
) -> None:
    monkeypatch.setenv(f"IMAGEFORGE_{name}", raw)

    assert getattr(settings(), field) == parsed


@pytest.mark.parametrize(
    ("name", "field", "raw", "parsed"), PREFIXED_ONLY_OPTIONS, ids=[o[0] for o in PREFIXED_ONLY_OPTIONS]
)
def test_prefixed_only_option_is_read(
    monkeypatch: pytest.MonkeyPatch, name: str, field: str, raw: str, parsed: object
) -> None:
    monkeypatch.setenv(name, raw)

    assert getattr(settings(), field) == parsed


@pytest.mark.parametrize(
    "name", ["MODEL", "DEFAULT_MODEL", "DATA_DIR", "ROOT_DIR", "MAX_BODY_MB", "MAX_STEPS", "MODELS_FILE", "INPUT_DIRS"]
)
def test_generic_unprefixed_names_of_other_programs_are_ignored(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    defaults = settings()
    monkeypatch.setenv(name, "7")

    assert settings() == defaults


def test_prefixed_name_wins_over_the_bare_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("IMAGEFORGE_PORT", "9002")
    monkeypatch.setenv("ALLOW_FLUX", "0")
    monkeypatch.setenv("IMAGEFORGE_ALLOW_FLUX", "1")

    current = settings()

    assert (current.port, current.allow_flux) == (9002, True)


def test_imageforge_model_sets_the_default_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEFORGE_MODEL", "sdxl-turbo")

    assert settings().default_model == "sdxl-turbo"


@pytest.mark.parametrize("separator", [",", os.pathsep, f" {os.pathsep} "])
def test_input_dirs_split_on_commas_and_the_path_separator(monkeypatch: pytest.MonkeyPatch, separator: str) -> None:
    monkeypatch.setenv("IMAGEFORGE_INPUT_DIRS", f"/srv/photos{separator}scans,{separator}/mnt/shared")

    assert settings().input_dirs == [Path("/srv/photos"), Path("scans"), Path("/mnt/shared")]


def test_input_dirs_empty_string_is_no_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEFORGE_INPUT_DIRS", "")

    assert settings().input_dirs == []


def test_empty_lora_portrait_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEFORGE_LORA_PORTRAIT", "")

    assert settings().lora_portrait is None


def test_values_from_a_dotenv_file_are_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\nPORT=9100\nIMAGEFORGE_MAX_RES=512\nALLOW_FLUX=1\nIMAGEFORGE_INPUT_DIRS=a,b\nUNRELATED=x\n"
    )

    current = Settings(_env_file=env_file)

    assert (current.port, current.max_res, current.allow_flux) == (9100, 512, True)
    assert current.input_dirs == [Path("a"), Path("b")]


def test_environment_wins_over_the_dotenv_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=9100\n")
    monkeypatch.setenv("PORT", "9200")

    assert Settings(_env_file=env_file).port == 9200


def test_dotenv_file_ignores_unprefixed_names_of_prefixed_only_options(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DATA_DIR=/elsewhere\nMAX_BODY_MB=1\n")

    current = Settings(_env_file=env_file)

    assert (current.data_dir, current.max_body_mb) == (Path("data"), 32.0)


def test_relative_paths_resolve_against_root_dir(tmp_path: Path) -> None:
    current = Settings(
        _env_file=None, root_dir=tmp_path, output_dir=Path("out"), cache_dir=Path("c"), input_dirs=[Path("in")]
    )

    assert current.output_path == tmp_path / "out"
    assert current.cache_path == tmp_path / "c"
    assert current.data_path == tmp_path / "data"
    assert current.models_path == tmp_path / "data" / "models"
    assert current.resolve(current.models_file) == tmp_path / "models.toml"
    assert current.input_roots == [tmp_path / "out", tmp_path / "in"]


def test_absolute_paths_stay_as_they_are(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"

    current = Settings(_env_file=None, root_dir=tmp_path / "root", output_dir=elsewhere)

    assert current.output_path == elsewhere


def test_relative_paths_from_the_environment_resolve_against_imageforge_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMAGEFORGE_ROOT", str(tmp_path))
    monkeypatch.setenv("OUTPUT_DIR", "pictures")

    assert settings().output_path == tmp_path / "pictures"


def test_port_that_is_not_a_number_is_a_clear_validation_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "abc")

    with pytest.raises(ValidationError) as raised:
        settings()

    message = str(raised.value)
    assert "PORT" in message
    assert "valid integer" in message
    assert "'abc'" in message


@pytest.mark.parametrize(
    ("name", "raw", "words"),
    [
        ("PORT", "70000", "less than or equal to 65535"),
        ("DEVICE", "gpu", "'auto', 'cuda', 'mps' or 'cpu'"),
        ("MAX_RES", "32", "greater than or equal to 64"),
        ("ALLOW_FLUX", "perhaps", "valid boolean"),
        ("IMAGEFORGE_MAX_BODY_MB", "0", "greater than 0"),
        ("IMAGEFORGE_MAX_STEPS", "0", "greater than or equal to 1"),
    ],
)
def test_out_of_range_values_are_clear_validation_errors(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, words: str
) -> None:
    monkeypatch.setenv(name, raw)

    with pytest.raises(ValidationError, match=words):
        settings()


def test_init_arguments_by_field_name_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEFORGE_PORT", "9300")

    assert Settings(_env_file=None, port=9400).port == 9400


def test_with_imageforge_root_set_the_env_file_is_read_from_that_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    root, elsewhere = tmp_path / "imageforge", tmp_path / "where-the-agent-started-it"
    root.mkdir()
    elsewhere.mkdir()
    (root / ".env").write_text("IMAGEFORGE_MODEL=sdxl-turbo\nOUTPUT_DIR=pictures\n")
    (elsewhere / ".env").write_text("IMAGEFORGE_MODEL=tiny\n")
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("IMAGEFORGE_ROOT", str(root))

    settings = Settings()

    assert settings.default_model == "sdxl-turbo"
    assert settings.output_path == (root / "pictures").resolve()


def test_without_imageforge_root_the_env_file_of_the_working_folder_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("IMAGEFORGE_MODEL=tiny\n")
    monkeypatch.chdir(tmp_path)

    assert Settings().default_model == "tiny"


def test_allowed_hosts_and_cors_origins_are_comma_lists_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEFORGE_ALLOWED_HOSTS", " Imageforge.LAN., [fd00::5] ,")
    monkeypatch.setenv("IMAGEFORGE_CORS_ORIGINS", "https://Studio.example/, http://10.0.0.2:3000")

    current = settings()

    assert current.allowed_hosts == ["imageforge.lan", "fd00::5"]
    assert current.cors_origins == ["https://studio.example", "http://10.0.0.2:3000"]


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("IMAGEFORGE_ALLOWED_HOSTS", "good.lan, imageforge.lan:8765", "imageforge.lan:8765"),
        ("IMAGEFORGE_ALLOWED_HOSTS", "http://imageforge.lan", "http://imageforge.lan"),
        ("IMAGEFORGE_CORS_ORIGINS", "studio.example", "studio.example"),
        ("IMAGEFORGE_CORS_ORIGINS", "https://studio.example/app", "https://studio.example/app"),
    ],
)
def test_a_malformed_host_or_origin_is_refused_naming_the_entry(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError, match=re.escape(repr(named))):
        settings()


def test_queue_share_is_half_the_queue_where_clients_can_be_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def share(**options: Any) -> int:
        return Settings(_env_file=None, root_dir=tmp_path, **options).client_queue_share

    # On loopback without keys every caller is 127.0.0.1: one client, the whole queue.
    assert share() == 32
    assert share(api_keys="laptop:0123456789abcdef") == 16
    assert share(host="0.0.0.0") == 16
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keys.toml").write_text("")
    assert share() == 16
    assert share(max_queue=1) == 1
    monkeypatch.setenv("IMAGEFORGE_QUEUE_SHARE", "5")
    assert settings().client_queue_share == 5


def test_audit_log_is_in_the_data_folder_by_default_and_empty_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings(_env_file=None, root_dir=tmp_path).audit_path == tmp_path / "data" / "audit.jsonl"
    assert not settings().audit_prompts
    monkeypatch.setenv("IMAGEFORGE_AUDIT_LOG", "")
    assert settings().audit_path is None


def test_trusted_proxies_are_addresses_or_networks_and_nothing_else(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings().trusted_proxies == []
    monkeypatch.setenv("IMAGEFORGE_TRUSTED_PROXIES", " 127.0.0.1, 10.0.0.0/8,::1 ")
    assert settings().trusted_proxies == ["127.0.0.1", "10.0.0.0/8", "::1"]
    for wrong in ("*", "proxy.lan", "10.0.0.0/99"):
        monkeypatch.setenv("IMAGEFORGE_TRUSTED_PROXIES", wrong)
        with pytest.raises(ValidationError, match=re.escape(repr(wrong))):
            settings()


def test_an_api_keys_entry_ending_in_admin_is_an_admin_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEFORGE_API_KEYS", "ci:ci-key-0123456789abc, root:root-key-0123456789ab:admin")

    assert settings().api_keys == [("ci", "ci-key-0123456789abc", False), ("root", "root-key-0123456789ab", True)]


def test_openai_model_aliases_name_the_default_model_or_a_catalog_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGEFORGE_OPENAI_MODEL_ALIASES", " gpt-image-1 , dall-e-3=sdxl,,")

    assert Settings(_env_file=None).openai_model_aliases == {"gpt-image-1": None, "dall-e-3": "sdxl"}
    monkeypatch.delenv("IMAGEFORGE_OPENAI_MODEL_ALIASES")
    assert Settings(_env_file=None).openai_model_aliases is None
