"""Settings: every option, read from the environment and `.env`.

Each option accepts its `IMAGEFORGE_`-prefixed name and, where the original design had one, its bare
name (`PORT`, `DEVICE`, `MAX_RES`, …); the prefixed name wins when both are set. Nothing here is read at
import time: `Settings()` reads the environment when it is constructed, in the composition root.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import annotated_types
from pydantic import AliasChoices, Field, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from imageforge.domain import DEFAULT_FALLBACK, Fallback, PolicyProfileName, is_loopback
from imageforge.logs import LogFormat

DeviceSetting = Literal["auto", "cuda", "mps", "cpu"]
DtypeSetting = Literal["auto", "float32", "bfloat16", "float16"]
AutoOnOff = Literal["auto", "on", "off"]
RuntimeSetting = Literal["auto", "torch", "openvino"]
PrecisionSetting = Literal["auto", "int8"]


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class WebhookAllowEntry:
    """One IMAGEFORGE_WEBHOOK_ALLOW entry: `*` (any public address), a host name, or an address or network, each
    with or without a port (jobs/webhook_targets.py says what each admits)."""

    name: str | None = None
    network: Network | None = None
    port: int | None = None
    anywhere: bool = False

    @classmethod
    def parse(cls, text: str) -> WebhookAllowEntry:
        """`*`, `host`, `host:port`, an address (`10.0.0.5`, `::1`), `[::1]:8080`, `address:port` or a network
        (`10.0.0.0/8`); `ValueError` for anything else."""
        text = text.strip().lower().rstrip(".")
        if text == "*":
            return cls(anywhere=True)
        if "://" in text:
            raise ValueError(f"{text!r}: give *, a host, host:port, an address or a network, not a URL")
        try:
            return cls(network=ipaddress.ip_network(text, strict=False))
        except ValueError:
            pass
        host, port = text, None
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = _port(rest.removeprefix(":"), text) if rest else None
        elif text.count(":") == 1:
            host, _, number = text.partition(":")
            port = _port(number, text)
        try:
            return cls(network=ipaddress.ip_network(host), port=port)
        except ValueError:
            pass
        if not host or "/" in host or ":" in host:
            raise ValueError(f"{text!r}: give *, a host, host:port, an address or a network (10.0.0.0/8)")
        return cls(name=host, port=port)


def _port(number: str, entry: str) -> int:
    if not number.isdigit() or not 0 < int(number) < 65536:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(number)


#: What ends an IMAGEFORGE_API_KEYS entry that is an admin key (`name:key:admin`).
ADMIN_SUFFIX = ":admin"


def _env(name: str, *, bare: bool = True) -> AliasChoices:
    """Accept `IMAGEFORGE_<NAME>` first, then the bare `<NAME>` of the original design."""
    names = [f"IMAGEFORGE_{name}"]
    if bare:
        names.append(name)
    return AliasChoices(*names)


class _DeclaredNamesOnly(PydanticBaseSettingsSource):
    """An environment or `.env` source that reads each option under its declared names only.

    `populate_by_name` lets code write `Settings(data_dir=...)`, but pydantic-settings then also reads the
    field name itself from the environment: a stray `DATA_DIR`, `ROOT_DIR` or `MAX_BODY_MB` set for another
    program would configure imageforge. The wrapped source reports a match by field name under that name
    (and a match by alias under the alias), so dropping field-name keys keeps exactly the declared names.
    """

    def __init__(self, source: PydanticBaseSettingsSource) -> None:
        super().__init__(source.settings_cls)
        self._source = source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        aliased = {name for name, info in self.settings_cls.model_fields.items() if info.validation_alias}
        return {key: value for key, value in self._source().items() if key not in aliased}


class Settings(BaseSettings):
    """The service's configuration; components receive the fields they need, never this whole object."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        protected_namespaces=(),
    )

    default_model: str = Field(
        "sd-turbo",
        validation_alias=AliasChoices("IMAGEFORGE_MODEL"),
        description="the default model, a key from `imageforge models` (see [models](models.md))",
    )
    device: DeviceSetting = Field(
        "auto", validation_alias=_env("DEVICE"), description="`auto` (cuda, then mps, then cpu), `cuda`, `mps` or `cpu`"
    )
    host: str = Field(
        "127.0.0.1",
        validation_alias=_env("HOST"),
        description="the address to bind; anything but loopback needs API keys (see [Running on a LAN](lan.md))",
    )
    port: int = Field(
        8765,
        ge=1,
        le=65535,
        validation_alias=_env("PORT"),
        description="the port of the HTTP API, the MCP endpoint `/mcp` and the web UI",
    )
    ollama_url: str = Field(
        "http://127.0.0.1:11434",
        validation_alias=_env("OLLAMA_URL"),
        description="the Ollama server for prompt assist (see [prompting](prompting.md#prompt-assist))",
    )
    ollama_model: str = Field(
        "gemma4:latest", validation_alias=_env("OLLAMA_MODEL"), description="the Ollama model for prompt assist"
    )
    assist_timeout_s: float = Field(
        20.0,
        gt=0,
        validation_alias=_env("ASSIST_TIMEOUT_S", bare=False),
        description=(
            "the longest wait for Ollama's answer before prompt assist passes the prompt through (a connection not "
            "accepted within 2 s counts as no Ollama)"
        ),
    )
    assist_concurrency: int = Field(
        2,
        ge=1,
        validation_alias=_env("ASSIST_CONCURRENCY", bare=False),
        description=(
            "the most `/assist` (and MCP `assist_prompt`) calls waiting on Ollama at once, for all clients together; "
            "one more answers 429 `assist_busy`"
        ),
    )
    output_dir: Path = Field(
        Path("outputs"),
        validation_alias=_env("OUTPUT_DIR"),
        description="where every result is written (PNG + JSON sidecar)",
    )
    cache_dir: Path = Field(
        Path("cache"), validation_alias=_env("CACHE_DIR"), description="the content-addressed cache of seeded results"
    )
    data_dir: Path = Field(
        Path("data"),
        validation_alias=_env("DATA_DIR", bare=False),
        description=(
            "imageforge's own state: the job database (`jobs.sqlite`), API keys, TLS files, the audit log, the built "
            "`tiny` model, compiled kernels"
        ),
    )
    max_res: int = Field(
        1024,
        ge=64,
        validation_alias=_env("MAX_RES"),
        description="the largest width or height a request may ask for",
    )
    allow_flux: bool = Field(
        False,
        validation_alias=_env("ALLOW_FLUX"),
        description="allow `flux-q4` (about 16 GB of memory, ~17 GB download)",
    )
    allow_klein: bool = Field(
        False,
        validation_alias=_env("ALLOW_KLEIN"),
        description="allow `flux2-klein` (about 16 GB of memory, ~13 GB download)",
    )
    allow_qwen_image: bool = Field(
        False,
        validation_alias=_env("ALLOW_QWEN_IMAGE"),
        description="allow `qwen-image` and `qwen-image-edit` (stable-diffusion.cpp; about 22 GB of memory, ~22 GB "
        "of downloads)",
    )
    warmup: bool = Field(
        False,
        validation_alias=_env("WARMUP"),
        description="load the default model at startup instead of on the first request",
    )
    lora_portrait: str | None = Field(
        None,
        validation_alias=_env("LORA_PORTRAIT", bare=False),
        description=(
            "the LoRA of `sdxl-portrait`: a name in the LoRA folder, applied per request (see "
            "[models](models.md#loras)), or a `.safetensors` file or Hub repo id, fused in when it loads"
        ),
    )
    lora_dir: Path | None = Field(
        None,
        validation_alias=_env("LORA_DIR", bare=False),
        description=(
            "the folder of LoRAs a request's `loras` may name (`.safetensors` files only; see "
            "[models](models.md#loras)); empty: `loras` in the data folder"
        ),
    )
    models_file: Path = Field(
        Path("models.toml"),
        validation_alias=_env("MODELS_FILE", bare=False),
        description="your own models (see [models](models.md#your-own-models))",
    )
    policy_file: Path = Field(
        Path("policy.toml"),
        validation_alias=_env("POLICY_FILE", bare=False),
        description=(
            "the policy: baseline negative prompt, text directives, restricted-use text (see "
            "[prompting](prompting.md#policy))"
        ),
    )
    policy_profile: PolicyProfileName = Field(
        "none",
        validation_alias=_env("POLICY_PROFILE", bare=False),
        description=(
            "a ready policy added to the policy file's: `none`, or `no-engineering` for an organisation whose images "
            "must not pass for engineering, CAD, UX or medical work (see [prompting](prompting.md#policy-profiles))"
        ),
    )
    templates_file: Path = Field(
        Path("templates.toml"),
        validation_alias=_env("TEMPLATES_FILE", bare=False),
        description="your own style templates (see [prompting](prompting.md#style-templates))",
    )
    input_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("INPUT_DIRS", bare=False),
        description=(
            "more folders whose images may be used by path, besides `OUTPUT_DIR` (separated by commas or the OS path "
            "separator)"
        ),
    )
    max_body_mb: float = Field(
        32.0,
        gt=0,
        validation_alias=_env("MAX_BODY_MB", bare=False),
        description="the largest request body, and the largest input image, in MB",
    )
    max_steps: int = Field(
        100,
        ge=1,
        validation_alias=_env("MAX_STEPS", bare=False),
        description="the most denoising steps a request may ask for",
    )
    max_queue: int = Field(
        32,
        ge=1,
        validation_alias=_env("MAX_QUEUE", bare=False),
        description="the most jobs waiting; one more answers 429 `queue_full`",
    )
    job_timeout_s: float | None = Field(
        None,
        gt=0,
        validation_alias=_env("JOB_TIMEOUT_S", bare=False),
        description="a job running longer than this many seconds ends `failed` with `timeout`; unset: no limit",
    )
    result_ttl_s: float = Field(
        3600.0,
        gt=0,
        validation_alias=_env("RESULT_TTL_S", bare=False),
        description="how long (seconds) a finished job's result, and its image in `OUTPUT_DIR`, is kept",
    )
    mcp_preview_px: int = Field(
        512,
        ge=64,
        le=2048,
        validation_alias=_env("MCP_PREVIEW_PX", bare=False),
        description="the longest side of the inline preview in an MCP tool result",
    )
    memory_budget: float | Literal["auto"] = Field(
        "auto",
        validation_alias=_env("MEMORY_BUDGET", bare=False),
        description=(
            "GB that resident models may take (by their catalog estimates); `auto` is 80% of the GPU's memory (of RAM "
            "on CPU and Apple silicon), `0` no limit"
        ),
    )
    memory_admission: bool = Field(
        True,
        validation_alias=_env("MEMORY_ADMISSION", bare=False),
        description=(
            "refuse at submit, with 422 `insufficient_memory`, a job whose estimated peak memory (measured on this "
            "machine, see [memory](memory.md)) is more than is free"
        ),
    )
    memory_margin_gb: float = Field(
        0.5,
        ge=0,
        validation_alias=_env("MEMORY_MARGIN_GB", bare=False),
        description="GB of free memory (GPU memory on CUDA, RAM on the CPU) that admission leaves to everything else",
    )
    oom_fallback: Annotated[list[Fallback], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_FALLBACK),
        validation_alias=_env("OOM_FALLBACK", bare=False),
        description=(
            "what the one retry of an image that ran out of memory may change, comma-separated: `tiled_vae`, "
            "`attention_slicing`, `cpu_offload` (CUDA), then `smaller_size` (only for requests with `allow_downsize`); "
            "unset: all four; empty: no retry"
        ),
    )
    idle_unload_s: float = Field(
        120.0,
        ge=0,
        validation_alias=_env("IDLE_UNLOAD_S", bare=False),
        description="unload a model unused this many seconds; `0` keeps models loaded",
    )
    #: (name, key, admin) for each entry of IMAGEFORGE_API_KEYS
    api_keys: Annotated[list[tuple[str, str, bool]], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("API_KEYS", bare=False),
        description=(
            "`name:key,name2:key2` (keys of 16+ characters; `name:key:admin` for an admin key); with keys, every "
            "request must carry `Authorization: Bearer <key>` (see [Running on a LAN](lan.md#api-keys))"
        ),
    )
    insecure_no_auth: bool = Field(
        False,
        validation_alias=_env("INSECURE_NO_AUTH", bare=False),
        description="allow `serve` on a network address without keys (shown loudly in the log and `/health`)",
    )
    root_dir: Path = Field(
        default_factory=Path.cwd,
        validation_alias=_env("ROOT", bare=False),
        description=(
            "imageforge's folder: where `.env` is read and what relative paths resolve against; unset: the folder "
            "imageforge starts in"
        ),
    )
    # Keys in a file, HTTPS and signed image links (issue 7): after root_dir, which their validators read.
    keys_file: Path | None = Field(
        None,
        validation_alias=_env("KEYS_FILE", bare=False),
        description="the keys file that `imageforge keys` manages; unset: `keys.toml` in the data folder",
    )
    tls_cert: Path | None = Field(
        None,
        validation_alias=_env("TLS_CERT", bare=False),
        description=(
            "a PEM certificate to serve HTTPS with; set together with `IMAGEFORGE_TLS_KEY` (see [HTTPS](lan.md#https))"
        ),
    )
    tls_key: Path | None = Field(
        None,
        validate_default=True,
        validation_alias=_env("TLS_KEY", bare=False),
        description="the PEM private key of `IMAGEFORGE_TLS_CERT`",
    )
    image_url_ttl_s: float | None = Field(
        None,
        gt=0,
        validation_alias=_env("IMAGE_URL_TTL_S", bare=False),
        description="how long (seconds) a signed image link opens its image; unset: `IMAGEFORGE_RESULT_TTL_S`",
    )
    # Browser protections, per-client limits and the audit log (issue 7, part B; ADR 0014).
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("ALLOWED_HOSTS", bare=False),
        description=(
            "more host names the server answers to (comma-separated, no port); `*` answers any (see [Browser "
            "protections](lan.md#browser-protections))"
        ),
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("CORS_ORIGINS", bare=False),
        description=(
            "other web pages (`https://app.example:8443`, comma-separated) that may call the API from a browser"
        ),
    )
    rate_limit: int = Field(
        0,
        ge=0,
        validation_alias=_env("RATE_LIMIT", bare=False),
        description="the most jobs one client may submit per minute; one more answers 429 `rate_limited`; `0` is off",
    )
    # Client isolation and forwarded headers (issue 14).
    queue_url: str = Field(
        "",
        validation_alias=_env("QUEUE_URL", bare=False),
        description=(
            "the Redis (`redis://HOST:PORT/DB`) that API nodes (`imageforge serve --queue`) and GPU workers "
            "(`imageforge worker`) share for the job queue across machines; empty: the embedded queue of one machine"
        ),
    )
    worker_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("WORKER_MODELS", bare=False),
        description="the model keys an `imageforge worker` runs jobs for (comma-separated); empty: every model",
    )
    worker_metrics_port: int = Field(
        0,
        ge=0,
        le=65535,
        validation_alias=_env("WORKER_METRICS_PORT", bare=False),
        description="the port an `imageforge worker` serves its Prometheus metrics on (`/metrics`, no key: see "
        "[deployment](deployment.md#monitoring)); 0: none",
    )
    worker_metrics_host: str = Field(
        "127.0.0.1",
        validation_alias=_env("WORKER_METRICS_HOST", bare=False),
        description="the address a worker's metrics port listens on; loopback unless a scraper on another machine "
        "must reach it",
    )
    # Webhooks (issue 23, part 5; docs/webhooks.md).
    webhook_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("WEBHOOK_ALLOW", bare=False),
        description=(
            "where job webhooks may go (comma-separated): `host`, `host:port`, an address or a network "
            "(`10.0.0.0/8`), or `*` for any public address; loopback, link-local and metadata addresses only when "
            "an address entry names them (`127.0.0.1:9000`); empty: webhooks are refused (`webhook_not_allowed`)"
        ),
    )
    webhook_secret: str = Field(
        "",
        validation_alias=_env("WEBHOOK_SECRET", bare=False),
        description=(
            "the secret webhooks are signed with, `whsec_` and base64 (Standard Webhooks); empty: one made on first "
            "use and kept in the data folder (`imageforge webhooks secret` prints it)"
        ),
    )
    webhook_retry_s: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0],
        validation_alias=_env("WEBHOOK_RETRY_S", bare=False),
        description=(
            "seconds between a failed webhook attempt and the next (comma-separated): one more attempt than "
            "entries, then the delivery is given up; default `5,30,120,600,1800`, six attempts over about 42 minutes"
        ),
    )
    mcp_sessions_per_client: int = Field(
        16,
        ge=1,
        validation_alias=_env("MCP_SESSIONS_PER_CLIENT", bare=False),
        description=(
            "the most live MCP sessions over HTTP one client may hold; one more initialize answers 429 "
            "`too_many_sessions`"
        ),
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        validation_alias=_env("TRUSTED_PROXIES", bare=False),
        description=(
            "addresses or networks of reverse proxies whose `X-Forwarded-For`/`-Proto` are believed (comma-separated); "
            "unset: none"
        ),
    )
    queue_share: int | None = Field(
        None,
        ge=1,
        validation_alias=_env("QUEUE_SHARE", bare=False),
        description=(
            "the most places one client may hold: its waiting and running jobs, and its extra waits on them; one more "
            "answers 429 `queue_share_exceeded`; unset: half of `IMAGEFORGE_MAX_QUEUE` (all of it on loopback without "
            "keys)"
        ),
    )
    audit_log: Path | None = Field(
        Path("audit.jsonl"),
        validation_alias=_env("AUDIT_LOG", bare=False),
        description="the audit log (JSON lines), in the data folder unless absolute; empty turns it off",
    )
    audit_prompts: bool = Field(
        False,
        validation_alias=_env("AUDIT_PROMPTS", bare=False),
        description="also write each job's prompt to the audit log",
    )
    # Operations: logs and tracing (issue 22).
    log_format: LogFormat = Field(
        "text",
        validation_alias=_env("LOG_FORMAT", bare=False),
        description=(
            "the server's log on stderr: `text` (a line a person reads), `json` (one JSON object a line, for a log "
            "system) or `auto` (text on a terminal, JSON otherwise); every line of a job's life carries its job id and "
            "client, no line carries a key, a signature or a prompt (prompts only with `IMAGEFORGE_AUDIT_PROMPTS`); "
            "see [Logs](deployment.md#logs)"
        ),
    )
    tracing_endpoint: str = Field(
        "",
        validation_alias=AliasChoices("IMAGEFORGE_TRACING_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description=(
            "an OpenTelemetry collector's OTLP/HTTP address (`http://collector:4318`): each job's spans (request, "
            "queue, load, denoise, decode, store) go there; needs `pip install 'imageforge[tracing]'`; empty: off "
            "(see [Tracing](deployment.md#tracing))"
        ),
    )
    # The OpenAI-compatible API (issue 18).
    openai_model_aliases: Annotated[dict[str, str | None] | None, NoDecode] = Field(
        None,
        validation_alias=_env("OPENAI_MODEL_ALIASES", bare=False),
        description=(
            "the OpenAI model names `/v1` takes, comma-separated: `name` means the default model, `name=key` a catalog "
            "key (`dall-e-3=sdxl`); unset: OpenAI's image model names (`gpt-image-1`, `dall-e-3`, …) mean the default "
            "model (see [OpenAI API](openai-api.md))"
        ),
    )
    shutdown_timeout_s: float = Field(
        5.0,
        ge=0,
        validation_alias=_env("SHUTDOWN_TIMEOUT_S", bare=False),
        description=(
            "on SIGTERM, how long (seconds) open requests may still run, then how long the running job gets to stop at "
            "its next step (it ends `interrupted`; queued jobs stay queued)"
        ),
    )
    # Engine speed: "auto" lets the engine choose per device (ADR 0012); each value here overrides its choice.
    dtype: DtypeSetting = Field(
        "auto",
        validation_alias=_env("DTYPE", bare=False),
        description=(
            "the weights' dtype: `auto` (fp16 on CUDA and MPS, bf16 on CPUs with native bf16, else fp32), `float32`, "
            "`bfloat16`, `float16`"
        ),
    )
    channels_last: AutoOnOff = Field(
        "auto",
        validation_alias=_env("CHANNELS_LAST", bare=False),
        description="channels_last memory layout: `auto` (on CUDA, and on the CPU with bf16), `on`, `off`",
    )
    threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        validation_alias=_env("THREADS", bare=False),
        description="CPU threads for torch; unset: the cores this process may use",
    )
    memory_savers: AutoOnOff = Field(
        "auto",
        validation_alias=_env("MEMORY_SAVERS", bare=False),
        description=(
            "VAE tiling and attention slicing (and CPU offload on CUDA): `auto` when free memory is short, `on`, `off`"
        ),
    )
    compile: bool = Field(
        False,
        validation_alias=_env("COMPILE", bare=False),
        description=(
            "`torch.compile` the UNet and VAE decoder, once per model and size; kernels kept in `compile-cache` in the "
            "data folder"
        ),
    )
    runtime: RuntimeSetting = Field(
        "auto",
        validation_alias=_env("RUNTIME", bare=False),
        description=(
            "what runs the UNet and VAE on the CPU: `openvino` (pip install 'imageforge[openvino]'; converted per "
            "model and size on first use, a minute or more each, kept in `openvino-cache` in the data folder), "
            "`torch`, or `auto`: OpenVINO, where installed, for the sizes already converted, torch for the rest "
            "(it converts nothing itself, except for int8)"
        ),
    )
    precision: PrecisionSetting = Field(
        "auto",
        validation_alias=_env("PRECISION", bare=False),
        description=(
            "`auto` (the dtype) or `int8`: the UNet quantized by NNCF on the CPU with OpenVINO, faster where the CPU "
            "has VNNI or AMX, at a small cost in fidelity"
        ),
    )

    # The stable-diffusion.cpp engine (ADR 0027).
    sdcpp_server: Path | None = Field(
        None,
        validation_alias=_env("SDCPP_SERVER", bare=False),
        description=(
            'a prebuilt stable-diffusion.cpp `sd-server` to run `backend = "sdcpp"` models with; unset: '
            "`sd-server` on the PATH, else the build `./start.sh sdcpp-build` caches"
        ),
    )
    sdcpp_build: Literal["cpu", "cuda", "metal", "vulkan"] = Field(
        "cpu",
        validation_alias=_env("SDCPP_BUILD", bare=False),
        description="which build of `sd-server` `./start.sh sdcpp-build` makes and the engine uses: `cpu`, `cuda`, "
        "`metal`, `vulkan`",
    )
    sdcpp_load_timeout_s: float = Field(
        1800.0,
        gt=0,
        validation_alias=_env("SDCPP_LOAD_TIMEOUT_S", bare=False),
        description="how long (seconds) an `sd-server` child may take to load its model before the job fails",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        root = os.environ.get("IMAGEFORGE_ROOT")
        if root and isinstance(dotenv_settings, DotEnvSettingsSource) and dotenv_settings.env_file == ".env":
            # An agent may start imageforge in any folder: with IMAGEFORGE_ROOT set, `.env` is that folder's.
            env_file = Path(root) / ".env"
            dotenv_settings = DotEnvSettingsSource(settings_cls, env_file=env_file, env_file_encoding="utf-8")
        sources = (env_settings, dotenv_settings, file_secret_settings)
        return init_settings, *(_DeclaredNamesOnly(source) for source in sources)

    @field_validator("input_dirs", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        """`IMAGEFORGE_INPUT_DIRS` is a path list separated by commas or the OS path separator."""
        if isinstance(value, str):
            parts = value.replace(os.pathsep, ",").split(",")
            return [Path(part.strip()) for part in parts if part.strip()]
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_api_keys(cls, value: object) -> object:
        """`IMAGEFORGE_API_KEYS` is `name:key,name2:key2`; keys are at least 16 characters, and `name:key:admin`
        makes an admin key (it sees and cancels every client's jobs)."""
        if not isinstance(value, str):
            return value
        keys = []
        for entry in (part.strip() for part in value.split(",")):
            if not entry:
                continue
            name, _, key = (text.strip() for text in entry.partition(":"))
            admin = key.endswith(ADMIN_SUFFIX)
            key = key.removesuffix(ADMIN_SUFFIX).strip()
            if not name or len(key) < 16:
                raise ValueError(f"entry {name or '?'!r}: use name:key with a key of 16 or more characters")
            keys.append((name, key, admin))
        return keys

    @field_validator("tls_key", mode="after")
    @classmethod
    def _tls_pair_readable(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        """The certificate and its key come together, and uvicorn must be able to read and use both at start."""
        cert = info.data.get("tls_cert")
        if (cert is None) != (value is None):
            raise ValueError(
                "set both IMAGEFORGE_TLS_CERT and IMAGEFORGE_TLS_KEY, or neither "
                "(`imageforge tls selfsigned` makes a pair and prints the two lines)"
            )
        root = info.data.get("root_dir", Path.cwd())
        for path in (cert, value):
            if path is not None:
                try:
                    (root / path).read_bytes()
                except OSError as exc:
                    raise ValueError(f"cannot read {root / path}: {exc.strerror or exc}") from None
        if cert is not None and value is not None:
            try:
                ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(root / cert, root / value)
            except ssl.SSLError as exc:
                raise ValueError(
                    f"{root / cert} and {root / value} are not a PEM certificate and its private key "
                    f"({exc.reason or exc}); `imageforge tls selfsigned` makes a pair"
                ) from None
        return value

    @field_validator("allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        """`IMAGEFORGE_ALLOWED_HOSTS` and `IMAGEFORGE_CORS_ORIGINS` are comma lists; names ignore case."""
        return [part.strip().lower() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("webhook_allow", "webhook_retry_s", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        """`IMAGEFORGE_WEBHOOK_ALLOW` and `IMAGEFORGE_WEBHOOK_RETRY_S` are comma lists."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("webhook_allow", mode="after")
    @classmethod
    def _allow_entries(cls, entries: list[str]) -> list[str]:
        for entry in entries:
            WebhookAllowEntry.parse(entry)
        return entries

    @field_validator("webhook_retry_s", mode="after")
    @classmethod
    def _delays(cls, delays: list[float]) -> list[float]:
        if any(delay < 0 for delay in delays):
            raise ValueError("give each delay as seconds, 0 or more")
        return delays

    @field_validator("webhook_secret", mode="after")
    @classmethod
    def _secret_form(cls, secret: str) -> str:
        """Standard Webhooks' form: receivers' libraries read it as it is."""
        if secret and not secret.startswith("whsec_"):
            raise ValueError("give whsec_ followed by base64 (at least 16 bytes), or leave it empty")
        return secret

    @field_validator("oom_fallback", mode="before")
    @classmethod
    def _fallback_steps(cls, value: object) -> object:
        """`IMAGEFORGE_OOM_FALLBACK` is a comma list of fallbacks, in the order they apply."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("worker_models", mode="before")
    @classmethod
    def _model_keys(cls, value: object) -> object:
        """`IMAGEFORGE_WORKER_MODELS` is a comma list of model keys."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("queue_url", mode="after")
    @classmethod
    def _redis_url(cls, url: str) -> str:
        """A Redis URL, or empty for the embedded queue."""
        if url and not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("give a Redis URL: redis://HOST:PORT/DB (rediss:// for TLS), or leave it empty")
        return url

    @field_validator("openai_model_aliases", mode="before")
    @classmethod
    def _alias_pairs(cls, value: object) -> object:
        """`IMAGEFORGE_OPENAI_MODEL_ALIASES` is a comma list of `name` (the default model) and `name=key`."""
        if not isinstance(value, str):
            return value
        pairs = (entry.strip().partition("=") for entry in value.split(",") if entry.strip())
        return {name.strip(): key.strip() or None for name, _, key in pairs}

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: object) -> object:
        """`IMAGEFORGE_TRUSTED_PROXIES` is a comma list of addresses and networks (`10.0.0.0/8`)."""
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator("trusted_proxies", mode="after")
    @classmethod
    def _proxy_addresses(cls, proxies: list[str]) -> list[str]:
        """Only addresses and networks: a typo must not silently trust nobody, nor `*` everybody."""
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"{proxy!r} is not an IP address or network; name each proxy by its address (127.0.0.1, 10.0.0.0/8)"
                ) from None
        return proxies

    @field_validator("allowed_hosts", mode="after")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        """Host names or addresses, with no port (any port is allowed); `*` allows any host."""
        names = [host.strip("[]").rstrip(".") for host in hosts]
        for name in names:
            if "/" in name or name.count(":") == 1:  # an IPv6 address has several colons, host:port one
                raise ValueError(f"entry {name!r}: give a host name or address without scheme or port")
        return names

    @field_validator("cors_origins", mode="after")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        """Origins as browsers send them: `scheme://host[:port]`, no path."""
        origins = [origin.rstrip("/") for origin in origins]
        for origin in origins:
            scheme, _, rest = origin.partition("://")
            if scheme not in ("http", "https") or not rest or "/" in rest:
                raise ValueError(f"entry {origin!r}: use an origin such as https://app.example:8443")
        return origins

    @field_validator("memory_budget", mode="after")
    @classmethod
    def _budget_not_negative(cls, value: float | str) -> float | str:
        if isinstance(value, float) and value < 0:
            raise ValueError("use a size in GB, 0 for no limit, or auto")
        return value

    @property
    def memory_budget_gb(self) -> float | Literal["auto"] | None:
        """The model pool's budget: GB, "auto" (a share of the device's memory) or None (0: no limit)."""
        return None if self.memory_budget == 0 else self.memory_budget

    @field_validator(
        "lora_portrait",
        "lora_dir",
        "job_timeout_s",
        "keys_file",
        "tls_cert",
        "tls_key",
        "image_url_ttl_s",
        "queue_share",
        "audit_log",
        "threads",
        mode="before",
    )
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    def resolve(self, path: Path) -> Path:
        """A configured path, made absolute against the project root when relative."""
        return (path if path.is_absolute() else self.root_dir / path).resolve()

    @property
    def output_path(self) -> Path:
        return self.resolve(self.output_dir)

    @property
    def cache_path(self) -> Path:
        return self.resolve(self.cache_dir)

    @property
    def data_path(self) -> Path:
        return self.resolve(self.data_dir)

    @property
    def jobs_path(self) -> Path:
        """The SQLite file of job records."""
        return self.data_path / "jobs.sqlite"

    @property
    def webhooks_path(self) -> Path:
        """The SQLite file of webhook deliveries, beside the job database."""
        return self.data_path / "webhooks.sqlite"

    @property
    def webhook_secret_path(self) -> Path:
        """Where the webhook secret made on first use is kept (when `IMAGEFORGE_WEBHOOK_SECRET` is empty)."""
        return self.data_path / "webhook.secret"

    @property
    def compile_cache_path(self) -> Path:
        """Where torch.compile keeps its compiled kernels between runs (`IMAGEFORGE_COMPILE`)."""
        return self.data_path / "compile-cache"

    @property
    def openvino_cache_path(self) -> Path:
        """Where the OpenVINO runtime keeps converted models between runs (`IMAGEFORGE_RUNTIME`)."""
        return self.data_path / "openvino-cache"

    @property
    def models_path(self) -> Path:
        """Where models built or converted by imageforge itself live (the `tiny` build)."""
        return self.data_path / "models"

    @property
    def lora_path(self) -> Path:
        """The folder of the LoRAs requests may apply by name (`IMAGEFORGE_LORA_DIR`)."""
        return self.data_path / "loras" if self.lora_dir is None else self.resolve(self.lora_dir)

    @property
    def keys_path(self) -> Path:
        """The file of hashed API keys that `imageforge keys` manages."""
        return self.data_path / "keys.toml" if self.keys_file is None else self.resolve(self.keys_file)

    @property
    def tls(self) -> tuple[Path, Path] | None:
        """The certificate and key files to serve HTTPS with, or None for plain HTTP."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        return self.resolve(self.tls_cert), self.resolve(self.tls_key)

    @property
    def local_url(self) -> str:
        """Where a process on this machine reaches the server bound to HOST:PORT: on loopback when it binds every
        interface, over https when it serves TLS."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        scheme = "http" if self.tls is None else "https"
        return f"{scheme}://[{host}]:{self.port}" if ":" in host else f"{scheme}://{host}:{self.port}"

    @property
    def client_queue_share(self) -> int:
        """The most waiting and running jobs one client may hold: `IMAGEFORGE_QUEUE_SHARE`, else half the queue
        where clients can be told apart (API keys, or a network address). On loopback without keys every caller
        is the same client (127.0.0.1), and a share would only shrink the queue: there it is the whole queue."""
        if self.queue_share:
            return self.queue_share
        clients_apart = bool(self.api_keys) or self.keys_path.exists() or not is_loopback(self.host)
        return max(1, self.max_queue // 2) if clients_apart else self.max_queue

    @property
    def audit_path(self) -> Path | None:
        """The audit log (JSON lines), relative to the data folder; None when `IMAGEFORGE_AUDIT_LOG` is empty."""
        return None if self.audit_log is None else (self.data_path / self.audit_log).resolve()

    @property
    def input_roots(self) -> list[Path]:
        """Folders whose files may be read as input images: the outputs plus `IMAGEFORGE_INPUT_DIRS`."""
        return [self.output_path, *(self.resolve(p) for p in self.input_dirs)]


_REFERENCE_INTRO = """\
# Configuration

<!-- Generated from `Settings` in src/imageforge/config.py by `imageforge config`; do not edit by hand. -->

Settings come from the environment and from `.env` in the folder you start imageforge in (or in
`IMAGEFORGE_ROOT`, when that is set: relative paths resolve against it too). Each setting is set under its
`IMAGEFORGE_`-prefixed name; the older ones also under a bare name (`PORT=9000`), and the prefixed name wins
when both are set. `imageforge check` prints the effective values. A value that is out of range or malformed
stops the start with `invalid_settings` and the name of the setting.

| setting | default | allowed | meaning |
|---|---|---|---|
"""

_REFERENCE_OUTRO = """
Relative paths are resolved against `IMAGEFORGE_ROOT` (the folder imageforge starts in). Boolean settings take
`1`/`0` (or `true`/`false`); list settings are comma-separated, and empty means none.

Set outside imageforge's settings:

- `IMAGEFORGE_API_KEY`: the key that the CLI (`--server`, `mcp --remote`, `mcp` beside a server) and the Python
  client send to a server with keys.
- `IMAGEFORGE_VENV` (default `.venv`) and `IMAGEFORGE_TORCH_SPEC` (default `torch==2.13.0`, passed to pip as it
  is): the virtual environment and the torch build that `./start.sh` installs.
- Hugging Face's own variables keep their usual meaning: `HF_HOME` (where downloaded weights live),
  `HF_HUB_OFFLINE=1` (never touch the network), `HF_TOKEN` (gated repos).
"""


def _env_names(info: FieldInfo) -> list[str]:
    """The names a user sets an option under, the winning one first."""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    return [str(alias)] if alias else []


def _shown_default(info: FieldInfo) -> str:
    """A field's default as a user writes it in `.env`; a computed or absent default is explained in its text."""
    value = info.default
    if info.default_factory is not None or value is None:
        return "—"
    if isinstance(value, bool):
        return f"`{int(value)}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    if isinstance(value, Path):
        return f"`{value.as_posix()}`"
    return f"`{value}`"


def _bounds(info: FieldInfo) -> str:
    """The range a field's constraints allow, in words (`1 to 65535`, `at least 1`, `more than 0`)."""
    low = high = ""
    for constraint in info.metadata:
        if isinstance(constraint, annotated_types.Ge):
            low = f"{constraint.ge}"
        elif isinstance(constraint, annotated_types.Gt):
            low = f"more than {constraint.gt}"
        elif isinstance(constraint, annotated_types.Le):
            high = f"{constraint.le}"
    if low and high:
        return f"{low} to {high}"
    if low:
        return low if low.startswith("more") else f"at least {low}"
    return f"at most {high}" if high else ""


def settings_reference() -> str:
    """`docs/configuration.md`: every setting's names, default and meaning, as declared on `Settings`."""
    rows = []
    for info in Settings.model_fields.values():
        names = " or ".join(f"`{name}`" for name in _env_names(info))
        meaning = (info.description or "").replace("|", "\\|")
        rows.append(f"| {names} | {_shown_default(info)} | {_bounds(info)} | {meaning} |\n")
    return _REFERENCE_INTRO + "".join(rows) + _REFERENCE_OUTRO
