"""Where a model's weights are, and how they get onto this machine.

A model's source is a local folder or `.safetensors` file (an absolute path) or a Hugging Face Hub repo, whose files
live in the Hugging Face cache (HF_HOME). `imageforge models pull` and a model's first use fetch the same files,
safetensors only; with HF_HUB_OFFLINE set nothing is fetched. The built-in `tiny` model is built, not fetched.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from imageforge.domain import ModelSpec
from imageforge.engine.backends import tiny
from imageforge.errors import WeightsUnavailable

log = logging.getLogger(__name__)

#: What `models pull` fetches of a diffusers repo: configs, tokenizers (with chat templates) and the components'
#: safetensors weights, never pickles, and not the single-file checkpoints some repos also keep at their top
#: level (`sd_turbo.safetensors`), which `from_pretrained` never reads: their pattern needs a folder.
_PULL_PATTERNS = ["*.json", "*.txt", "*.model", "*.jinja", "*/*.safetensors"]
_PULL_IGNORE = ["*.ckpt", "*.bin", "*.pt", "*.onnx", "*.msgpack", "*.gguf"]
#: diffusers' name for the half-precision copies of a repository's weights (`unet/….fp16.safetensors`). Where
#: the weights run in fp16 or bf16 they are pulled and loaded instead of the fp32 files: half the download, and
#: a quarter off the peak memory of a load (docs/benchmarks.md).
_HALF_VARIANT = "fp16"
_HALF_SUFFIX = f".{_HALF_VARIANT}.safetensors"
_HUB_URL = "https://huggingface.co/"


class Weights:
    """The weights of catalog models on this machine, and fetching them from the Hub."""

    def __init__(self, models_path: Path, dtype: Callable[[], str]) -> None:
        self._models_path = models_path
        #: the dtype the weights will run in, which picks the files to fetch; asked only when a Hub repo is
        #: fetched, since choosing it imports torch
        self._dtype = dtype

    def present(self, spec: ModelSpec) -> bool:
        """Whether everything `spec` loads is on this machine."""
        if spec.builtin:
            return True
        sources = [spec.source] + ([spec.lora] if spec.lora else [])
        return all(_present(source, spec.revision) for source in sources) and (
            spec.transformer_file is None or _file_present(spec.transformer_file)
        )

    def local_files(self, spec: ModelSpec) -> list[Path]:
        """The files and folders on this machine that `spec` loads its weights from (a Hub repo not in the cache
        names none)."""
        if spec.builtin:
            return [self.builtin_model(spec)]
        found = [diffusers_folder(spec.source, spec.revision) if not spec.source.endswith(".safetensors") else None]
        if is_local(spec.source) and spec.source.endswith(".safetensors"):
            found.append(Path(spec.source))
        for extra in (spec.transformer_file, spec.lora):
            if extra is not None and is_local(extra):
                found.append(Path(extra))
        return [path for path in found if path is not None and path.exists()]

    def pull(self, spec: ModelSpec) -> str:
        """Fetch what `spec` loads into the Hugging Face cache (or build the built-in model); returns where the
        model's weights are."""
        if spec.builtin:
            self.builtin_fast_decoder()
            return str(self.builtin_model(spec))
        from huggingface_hub import hf_hub_download, snapshot_download

        try:
            where = spec.source
            if not is_local(spec.source):
                where = self._download(spec)
            elif not Path(spec.source).exists():
                raise FileNotFoundError(spec.source)
            if spec.lora and not is_local(spec.lora):
                snapshot_download(spec.lora, allow_patterns=["*.safetensors"])
            if spec.transformer_file and not is_local(spec.transformer_file):
                repo_id, filename, revision = hub_file(spec.transformer_file)
                hf_hub_download(repo_id, filename, revision=revision)
            if spec.fast_decoder and not is_local(spec.fast_decoder):
                snapshot_download(spec.fast_decoder, allow_patterns=["*.json", "*.safetensors"])
            return where
        except Exception as exc:
            if not is_fetch_failure(exc):
                raise
            raise unavailable(spec, exc, pulling=True) from exc

    def _download(self, spec: ModelSpec) -> str:
        """Fetch the model's Hub repo into the Hub cache: the files this runtime's dtype reads, and not the
        transformer that `transformer_file` replaces; returns their folder."""
        from huggingface_hub import HfApi, snapshot_download

        leave_out = ["transformer/*"] if spec.transformer_file else []
        if self._dtype() == "float32":
            leave_out.append(f"*{_HALF_SUFFIX}")
        else:  # the fp16 files where the repository has them, the fp32 ones of the other components
            leave_out += _full_twins(HfApi().list_repo_files(spec.source, revision=spec.revision))
        folder: str = snapshot_download(
            spec.source, revision=spec.revision, allow_patterns=_PULL_PATTERNS, ignore_patterns=_PULL_IGNORE + leave_out
        )
        return folder

    def builtin_model(self, spec: ModelSpec) -> Path:
        """The folder of the built-in model `spec`, built on first use."""
        return tiny.build_tiny_sd(self._models_path / spec.key)

    def builtin_fast_decoder(self) -> Path:
        """The folder of the built-in model's tiny autoencoder, built on first use."""
        return tiny.build_tiny_taesd(self._models_path / "tiny-taesd")


def is_local(source: str) -> bool:
    """Whether `source` is a path on this machine rather than a Hub repo id."""
    return Path(source).is_absolute()


def offline() -> bool:
    """Whether HF_HUB_OFFLINE is set now (huggingface_hub reads it once, when it is imported)."""
    from huggingface_hub import constants

    setting = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return setting in ("1", "on", "yes", "true") or bool(constants.is_offline_mode())


def hub_file(reference: str) -> tuple[str, str, str | None]:
    """The repo id, file name and revision of `owner/repo/path/in/repo` or of a Hub file URL.

    A URL is `https://huggingface.co/owner/repo/blob/<revision>/path` (or `/resolve/`), as the Hub's pages show it.
    """
    if reference.startswith(_HUB_URL):
        parts = reference.removeprefix(_HUB_URL).split("/")
        if len(parts) < 5 or parts[2] not in ("blob", "resolve"):
            raise ValueError(f"{reference} is not a Hugging Face Hub file URL (…/owner/repo/blob/revision/file)")
        return f"{parts[0]}/{parts[1]}", "/".join(parts[4:]), parts[3]
    parts = reference.split("/", 2)
    if len(parts) < 3:
        raise ValueError(f"{reference} names no file: expected owner/repo/path/in/repo")
    return f"{parts[0]}/{parts[1]}", parts[2], None


def has_file(source: str, marker: str, revision: str | None = None) -> bool:
    """Whether a local folder exists, or the Hub cache holds `marker` of the repo `source`."""
    if is_local(source):
        return Path(source).exists()
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(source, marker, revision=revision), str)


def _present(source: str, revision: str | None) -> bool:
    markers = ("model_index.json", "pytorch_lora_weights.safetensors")
    return any(has_file(source, marker, revision) for marker in markers)


def _file_present(reference: str) -> bool:
    if is_local(reference):
        return Path(reference).is_file()
    from huggingface_hub import try_to_load_from_cache

    repo_id, filename, revision = hub_file(reference)
    return isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str)


def diffusers_folder(source: str, revision: str | None) -> Path | None:
    """The folder of a diffusers model: a local one, or the Hub cache's snapshot of a repo; None if not pulled."""
    if is_local(source):
        return Path(source)
    from huggingface_hub import try_to_load_from_cache

    index = try_to_load_from_cache(source, "model_index.json", revision=revision)
    return Path(index).parent if isinstance(index, str) else None


def single_file(reference: str) -> str:
    """The local path of one weights file: `reference` itself, or the Hub file it names, fetched into the cache."""
    if not is_local(reference):
        from huggingface_hub import hf_hub_download

        repo_id, filename, revision = hub_file(reference)
        path: str = hf_hub_download(repo_id, filename, revision=revision)
        return path
    if not Path(reference).is_file():
        raise FileNotFoundError(reference)
    return reference


def _full_twins(files: list[str]) -> list[str]:
    """The fp32 files of `files` that have a half-precision twin: what a half-precision pull leaves out."""
    return [name.removesuffix(_HALF_SUFFIX) + ".safetensors" for name in files if name.endswith(_HALF_SUFFIX)]


def variant(folder: Path | None, dtype: str) -> str | None:
    """Which weights to load from a diffusers folder: the fp16 files where the model runs in half precision and
    the folder has them (components without them load their fp32 files), else the fp32 files. A folder pulled
    in half precision that lacks some fp32 files loads its fp16 ones even in fp32, upcast, and says so."""
    if folder is None or not folder.is_dir():
        return None
    half = {path.relative_to(folder).as_posix() for path in folder.glob(f"*/*{_HALF_SUFFIX}")}
    if not half:
        return None
    if dtype != "float32":
        return _HALF_VARIANT
    missing = [name for name in _full_twins(sorted(half)) if not (folder / name).is_file()]
    if not missing:
        return None
    log.warning(
        "%s has only fp16 weights for %s: loading them upcast to fp32; `imageforge models pull` fetches the fp32 files",
        folder,
        ", ".join(name.split("/")[0] for name in missing),
    )
    return _HALF_VARIANT


#: What the Hub client and its HTTP libraries raise when the Hub cannot be reached, by class name: they change
#: module between versions (httpx, httpx2, requests), and a name outlives a move.
_UNREACHABLE = frozenset(
    {"ConnectError", "ConnectTimeout", "ReadTimeout", "TimeoutException", "TransportError", "ConnectionError"}
    | {"OfflineModeIsEnabled", "LocalEntryNotFoundError"}
)


def is_fetch_failure(exc: BaseException) -> bool:
    """Whether `exc` says that weights could not be read from disk or fetched from the Hub."""
    return isinstance(exc, OSError) or bool(_UNREACHABLE & {cls.__name__ for cls in type(exc).__mro__})


def why_unavailable(spec: ModelSpec, exc: BaseException) -> str:
    """Why weights could not be had, in words a client can act on: never a library's own text, which points at a
    stack trace the client cannot see or at arguments it cannot pass."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    text = str(exc)
    if "GatedRepoError" in names:
        return "the repo is gated: it needs HF_TOKEN of an account that accepted its license"
    if "RepositoryNotFoundError" in names:
        return "the Hub has no such repo, or it is private"
    if names & _UNREACHABLE or "outgoing traffic has been disabled" in text or "not fully cached" in text:
        return "they are not in the Hugging Face cache, and the Hub could not be reached (offline, or HF_HUB_OFFLINE)"
    if isinstance(exc, FileNotFoundError) and is_local(spec.source):
        return f"{spec.source} does not exist"
    first = text.splitlines()[0] if text else type(exc).__name__
    # Library messages go on to point at a stack trace; the sentence before that is the reason.
    return first.split(" Please ")[0].split(" Check ")[0].rstrip(". ")


def unavailable(spec: ModelSpec, exc: BaseException, *, pulling: bool = False) -> WeightsUnavailable:
    """What a client is told when the weights of `spec` could not be read or fetched (the server log keeps the
    library's own words)."""
    log.warning("weights of %s unavailable: %s: %s", spec.key, type(exc).__name__, exc)
    reason = why_unavailable(spec, exc)
    if ".safetensors" in reason and "no file named" in reason.lower():
        return WeightsUnavailable(
            f"The weights of '{spec.key}' could not be loaded: {reason}",
            hint=(
                "imageforge loads safetensors weights only, never pickled .bin/.ckpt/.pt files (loading those "
                "can run code). Convert the model with save_pretrained(..., safe_serialization=True) or use a "
                "safetensors release of it."
            ),
        )
    where = spec.source if is_local(spec.source) else f"the Hugging Face Hub repo {spec.source}"
    if pulling:
        return WeightsUnavailable(
            f"Could not download the weights of '{spec.key}' from {where}: {reason}",
            hint="Check the network connection, unset HF_HUB_OFFLINE, and set HF_TOKEN for gated repos.",
        )
    return WeightsUnavailable(
        f"The weights of '{spec.key}' are not on this machine and could not be fetched from {where}: {reason}",
        hint=(
            f"On a machine with internet access run `imageforge models pull {spec.key}` (it fills the Hugging "
            "Face cache, HF_HOME), or put a diffusers folder on disk and add it to your models file."
        ),
    )
