"""`SdcppBackend`: models that stable-diffusion.cpp runs, each in its own `sd-server` child process (ADR 0027).

Loading a model starts its child (which loads the weights before it answers); `close` stops it, so the pool's
memory budget and idle unloading apply to these models as to the diffusers ones. A job goes to the child's native
async API (`POST /sdcpp/v1/img_gen`, then `GET /sdcpp/v1/jobs/{id}`); its steps come from the child's output.
A child that dies fails the job in hand with `engine_crashed`; the next job starts a fresh one.

A request's LoRAs come from the server's LoRA folder, which every child is started with (`--lora-model-dir`): the
job names each one by its file there, and the child applies them for that job only (`at_runtime`: the resident
weights are never changed, so the next job without them runs the base model exactly).
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import queue
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from imageforge.domain import (
    SDCPP_SAMPLE_METHODS,
    CancelCheck,
    GenerationRequest,
    ModelSpec,
    Progress,
    ProgressCallback,
    Schedule,
    SdcppFiles,
    Task,
)
from imageforge.engine import digests
from imageforge.engine.backends.sdcpp.binary import SDCPP_PYTHON_VERSION, find_server
from imageforge.engine.backends.sdcpp.child import ChildFailed, SdServer, stop_orphans
from imageforge.engine.loras import LoraFolder
from imageforge.engine.protocol import DeviceInfo, Generated
from imageforge.errors import (
    Cancelled,
    EngineCrashed,
    GenerationFailed,
    InvalidRequest,
    LoraNotFound,
    ModelUnsupported,
    WeightsUnavailable,
)

log = logging.getLogger(__name__)

_HUB_URL = "https://huggingface.co/"
#: How long a job waits for a step before it asks the child for the job's state again.
_POLL_S = 0.2
#: sd.cpp's switch for each file of an entry.
_SWITCHES = {
    "model": "--model",
    "diffusion_model": "--diffusion-model",
    "vae": "--vae",
    "clip_l": "--clip_l",
    "clip_g": "--clip_g",
    "t5xxl": "--t5xxl",
    "llm": "--llm",
    "llm_vision": "--llm_vision",
}
BUILD_HINT = (
    "Build it once with `./start.sh sdcpp-build` (IMAGEFORGE_SDCPP_BUILD picks cpu, cuda, metal or vulkan), or "
    "name a prebuilt sd-server in IMAGEFORGE_SDCPP_SERVER."
)


class SdcppBackend:
    """Runs `backend = "sdcpp"` catalog entries, one `sd-server` child per loaded model.

    `records` is where running children are recorded (see `stop_orphans`); `request_timeout_s` bounds one HTTP
    request to a child: a status poll that times out is asked again while the child runs. `loras` is the folder
    a request's LoRAs come from (none without it).
    """

    def __init__(
        self,
        *,
        server: Path | None = None,
        flavour: str = "cpu",
        threads: int | None = None,
        load_timeout_s: float = 1800.0,
        download_sizes_gb: dict[str, float] | None = None,
        records: Path | None = None,
        request_timeout_s: float = 30.0,
        loras: LoraFolder | None = None,
    ) -> None:
        self._server_setting = server
        self._loras = loras
        self._flavour = flavour
        self._threads = threads
        self._load_timeout_s = load_timeout_s
        self._sizes = download_sizes_gb or {}
        self._version: str | None = None
        self._records = records
        self._request_timeout_s = request_timeout_s
        #: children left behind by a killed imageforge are stopped once, before this one starts its own
        self._orphans_checked = False

    def server(self) -> Path:
        """The `sd-server` binary to run; `ModelUnsupported` saying how to get one when there is none."""
        found = find_server(self._server_setting, flavour=self._flavour)
        if found is None:
            where = (
                f"IMAGEFORGE_SDCPP_SERVER names {self._server_setting}, which is not an executable file"
                if self._server_setting is not None
                else "no sd-server is on the PATH or in the build cache"
            )
            raise ModelUnsupported(f"The stable-diffusion.cpp engine is not installed here: {where}.", hint=BUILD_HINT)
        return found

    def version(self) -> str:
        """What `sd-server --version` says; the pinned release when it cannot say (a build from the source
        distribution knows no git commit and calls itself "version unknown")."""
        if self._version is None:
            found = find_server(self._server_setting, flavour=self._flavour)
            said = ""
            if found is not None:
                try:
                    said = subprocess.run(
                        [str(found), "--version"], capture_output=True, text=True, timeout=30, check=False
                    ).stdout.strip()
                except (OSError, subprocess.TimeoutExpired):
                    said = ""
            first = said.splitlines()[0] if said else ""
            self._version = first if first and "unknown" not in first else f"sdcpp-python-{SDCPP_PYTHON_VERSION}"
        return self._version

    def device_info(self) -> DeviceInfo:
        """The build flavour this engine runs on; its memory is the machine's or the GPU's, unknown here."""
        return DeviceInfo(
            device=f"sdcpp-{self._flavour}",
            dtype="per model",
            cuda_available=self._flavour == "cuda",
            mps_available=self._flavour == "metal",
            versions={"stable-diffusion.cpp": self.version()},
        )

    def fingerprint(self, spec: ModelSpec) -> str:
        """The sd.cpp build and the model's sd.cpp configuration (files, switches, sampling) that results depend
        on; the configuration as a short digest, since it names paths."""
        digest = hashlib.sha256(repr(_sdcpp(spec)).encode()).hexdigest()[:12]
        return f"sdcpp={self.version()};{self._flavour};config={digest}"

    def memory_in_use_gb(self) -> None:
        """None: the child's memory is its own process's, which the device's allocator does not report."""
        return

    def weights_digest(self, spec: ModelSpec) -> str | None:
        """A digest of the files `spec` loads on this machine, by name and content; None while one is missing."""
        found = [_cached(reference) for reference in _files(spec).values()]
        if any(path is None for path in found):
            return None
        return digests.weights_digest(Path(path) for path in found if path is not None)

    def weights_present(self, spec: ModelSpec) -> bool:
        """Whether every file of `spec` is on disk or in the Hugging Face cache."""
        return all(_cached(reference) is not None for reference in _files(spec).values())

    def pull(self, spec: ModelSpec) -> str:
        """Download the Hub files of `spec` into the Hugging Face cache; returns the folder of its first file."""
        paths = self._resolve(spec, pulling=True)
        return str(Path(next(iter(paths.values()))).parent)

    def load(self, spec: ModelSpec) -> SdcppModel:
        """Start `spec`'s child; returns once it has loaded the weights."""
        if self._records is not None and not self._orphans_checked:
            stop_orphans(self._records)
            self._orphans_checked = True
        binary = self.server()
        paths = self._resolve(spec, pulling=False)
        model = SdcppModel(
            spec,
            binary,
            self._arguments(spec, paths),
            load_timeout_s=self._load_timeout_s,
            records=self._records,
            request_timeout_s=self._request_timeout_s,
            loras=self._loras,
        )
        model.start()
        return model

    def _arguments(self, spec: ModelSpec, paths: dict[str, str]) -> list[str]:
        files = _sdcpp(spec)
        arguments = [item for name, path in paths.items() for item in (_SWITCHES[name], path)]
        if files.weight_type:
            arguments += ["--type", files.weight_type]
        if self._threads:
            arguments += ["--threads", str(self._threads)]
        if self._loras is not None:
            # A request's LoRAs apply beside the weights for its job only; an entry's options may say otherwise.
            arguments += ["--lora-model-dir", str(self._loras.root), "--lora-apply-mode", "at_runtime"]
        return [*arguments, *files.options]

    def _resolve(self, spec: ModelSpec, *, pulling: bool) -> dict[str, str]:
        """The local path of each file of `spec`, downloading Hub files not cached yet."""
        paths: dict[str, str] = {}
        for name, reference in _files(spec).items():
            if not reference.startswith(_HUB_URL):
                if not Path(reference).exists():
                    raise self._unavailable(spec, f"{reference} does not exist")
                paths[name] = reference
                continue
            try:
                paths[name] = _download(reference)
            except Exception as exc:
                log.warning("could not fetch %s for %s: %s: %s", reference, spec.key, type(exc).__name__, exc)
                raise self._unavailable(spec, f"{reference} could not be downloaded", pulling=pulling) from exc
        return paths

    def _unavailable(self, spec: ModelSpec, reason: str, *, pulling: bool = False) -> WeightsUnavailable:
        listed = "; ".join(
            f"{name}: {reference}" + (f" (~{self._sizes[reference]:g} GB)" if reference in self._sizes else "")
            for name, reference in _files(spec).items()
        )
        if pulling:
            hint = "Check the network connection, unset HF_HUB_OFFLINE, and set HF_TOKEN for gated repos."
        else:
            hint = (
                f"It needs these files: {listed}. Run `imageforge models pull {spec.key}` on a machine with internet "
                "access (it fills the Hugging Face cache, HF_HOME), or download them and name the paths in a "
                'models-file entry with backend = "sdcpp".'
            )
        return WeightsUnavailable(f"The weights of '{spec.key}' are not available: {reason}.", hint=hint)


class SdcppModel:
    """A model resident in an `sd-server` child. Jobs run one at a time (the pool hands a model to one job at a
    time per key, and the child itself queues); a dead child is replaced at the next job."""

    def __init__(
        self,
        spec: ModelSpec,
        binary: Path,
        arguments: list[str],
        *,
        load_timeout_s: float,
        records: Path | None = None,
        request_timeout_s: float = 30.0,
        loras: LoraFolder | None = None,
    ) -> None:
        self.spec = spec
        self._loras = loras
        self._records = records
        self._request_timeout_s = request_timeout_s
        self._binary = binary
        self._arguments = arguments
        self._load_timeout_s = load_timeout_s
        self._server: SdServer | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The running child's process id, if one runs."""
        return None if self._server is None else self._server.pid

    def start(self) -> None:
        """Start a child (loading the weights); `GenerationFailed` with its last output when it fails to."""
        server = SdServer(
            self._binary,
            self._arguments,
            name=self.spec.key,
            records=self._records,
            request_timeout_s=self._request_timeout_s,
        )
        try:
            server.start(self._load_timeout_s)
        except ChildFailed as exc:
            raise GenerationFailed(
                f"stable-diffusion.cpp could not load '{self.spec.key}': {exc}",
                hint="Check the model's files and options in the models file; the server log has the whole output.",
            ) from None
        self._server = server

    def generate(
        self, request: GenerationRequest, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> Generated:
        """Run one job on the child; `Cancelled` when `should_cancel` turns true, `EngineCrashed` when the child
        dies under it."""
        with self._lock:
            if self._server is None or not self._server.alive():
                self._discard()
                self.start()
            server = self._server
            assert server is not None
            assert server.client is not None
            while not server.steps.empty():
                server.steps.get_nowait()
            # Each LoRA's file in the child's LoRA folder, looked up once for the body and for the report.
            lora_files = {lora.name: self._lora_file(lora.name).name for lora in request.loras}
            body = self._body(request, lora_files)
            server.clear_lora_reports()
            try:
                submitted = server.client.post("/sdcpp/v1/img_gen", json=body)
            except httpx.TransportError as exc:
                raise self._crashed(server) from exc
            if submitted.status_code != 202:
                raise InvalidRequest(
                    f"stable-diffusion.cpp refused the request ({submitted.status_code}): {_error(submitted)}",
                    hint="Check the size, steps and images against the model.",
                )
            job_id = str(submitted.json()["id"])
            image = self._follow(server, job_id, on_progress, should_cancel)
            applied = server.lora_reports(set(lora_files.values()))
        runtime: dict[str, Any] = {
            "engine": "sdcpp",
            "sample_method": body["sample_params"].get("sample_method", "model default"),
            "scheduler": body["sample_params"].get("scheduler", "model default"),
            "options": list(_sdcpp(self.spec).options),
        }
        if request.loras:
            runtime["lora_tensors_applied"] = self._applied(lora_files, applied)
        return Generated(
            image=image,
            runtime=runtime,
            sampler=request.sampler,
            schedule=None if request.schedule is Schedule.DEFAULT else request.schedule,
        )

    def _follow(
        self, server: SdServer, job_id: str, on_progress: ProgressCallback, should_cancel: CancelCheck
    ) -> Image.Image:
        assert server.client is not None
        while True:
            if should_cancel():
                self._cancel(server, job_id)
            try:
                step, total = server.steps.get(timeout=_POLL_S)
            except queue.Empty:
                pass
            else:
                on_progress(Progress(step=step, total=total))
                continue
            if should_cancel():
                self._cancel(server, job_id)
            try:
                answer = server.client.get(f"/sdcpp/v1/jobs/{job_id}")
            except httpx.TimeoutException as exc:
                # A running child slow to answer (its threads hold the CPU on a busy machine) has not crashed.
                if server.alive():
                    log.warning("sd-server for %s is slow to answer; still waiting for job %s", self.spec.key, job_id)
                    continue
                raise self._crashed(server) from exc
            except httpx.TransportError as exc:
                raise self._crashed(server) from exc
            if answer.status_code != 200:
                raise GenerationFailed(
                    f"stable-diffusion.cpp lost job {job_id} ({answer.status_code}): {_error(answer)}",
                    hint="Submit the request again.",
                )
            job = answer.json()
            status = job.get("status")
            if status == "completed":
                while not server.steps.empty():
                    step, total = server.steps.get_nowait()
                    on_progress(Progress(step=step, total=total))
                encoded = job["result"]["images"][0]["b64_json"]
                with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
                    return image.convert("RGB")
            if status == "failed":
                error = job.get("error") or {}
                raise GenerationFailed(
                    f"stable-diffusion.cpp failed on this request: {error.get('message', 'no reason given')}",
                    hint="Try a smaller size or other parameters; the server keeps running.",
                )
            if status == "cancelled":
                raise Cancelled("The generation was cancelled.")

    def _cancel(self, server: SdServer, job_id: str) -> None:
        """Cancel the child's job: a queued one through its API; a generating one (which sd-server cannot stop)
        by stopping the child, which the next job replaces. Always raises `Cancelled`."""
        assert server.client is not None
        try:
            answer = server.client.post(f"/sdcpp/v1/jobs/{job_id}/cancel")
            stopped = answer.status_code == 200
        except httpx.TransportError:
            stopped = False
        if not stopped:
            log.info("stopping sd-server for %s to cancel its running job", self.spec.key)
            self._discard()
        raise Cancelled("The generation was cancelled.")

    def _crashed(self, server: SdServer) -> EngineCrashed:
        # A child that stopped answering is given a moment to finish exiting, so its exit code is known.
        server_exit = server.wait(timeout_s=2.0)
        tail = server.output_tail()
        self._discard()
        log.error("sd-server for %s died during a job (exit %s). %s", self.spec.key, server_exit, tail)
        return EngineCrashed(
            f"stable-diffusion.cpp's server for '{self.spec.key}' stopped during the job (exit code {server_exit}).",
            hint="The next job starts a fresh one; if it happens again, try a smaller size (it may have run out of "
            "memory) and see the server log.",
        )

    def _body(self, request: GenerationRequest, lora_files: dict[str, str]) -> dict[str, Any]:
        files = _sdcpp(self.spec)
        sample: dict[str, Any] = {"sample_steps": request.steps, "guidance": {"txt_cfg": request.guidance}}
        method = SDCPP_SAMPLE_METHODS.get(request.sampler) if request.sampler is not None else files.sample_method
        if method is not None:
            sample["sample_method"] = method
        scheduler = files.scheduler if request.schedule is Schedule.DEFAULT else request.schedule.value
        if scheduler is not None:
            sample["scheduler"] = scheduler
        if files.flow_shift is not None:
            sample["flow_shift"] = files.flow_shift
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "width": request.width,
            "height": request.height,
            "seed": request.seed,
            "batch_count": 1,
            "sample_params": sample,
            "output_format": "png",
            "embed_image_metadata": False,
        }
        if request.task is not Task.TEXT2IMG and request.init_image is not None:
            encoded = _png(request.init_image.convert("RGB"))
            if files.edit_with_reference:
                body["ref_images"] = [encoded]
            else:
                body["init_image"] = encoded
                body["strength"] = request.strength
        if request.task is Task.INPAINT and request.mask_image is not None:
            body["mask_image"] = _png(request.mask_image.convert("L"))
        if request.loras:
            body["lora"] = [{"path": lora_files[lora.name], "multiplier": lora.weight} for lora in request.loras]
        return body

    def _lora_file(self, name: str) -> Path:
        """The file of LoRA `name` in the folder the child was started with; `LoraNotFound` when it is gone."""
        if self._loras is None:
            raise LoraNotFound(f"No LoRA named {name!r}: this engine has no LoRA folder.", hint="Send no loras.")
        return self._loras.find(name).path

    def _applied(self, lora_files: dict[str, str], reports: dict[str, str]) -> dict[str, str]:
        """How many of each LoRA's tensors the child applied ("256/256"), as it printed them: a LoRA made for
        another architecture loads, but matches none of the model's layers ("0/8")."""
        applied = {}
        for name, file in lora_files.items():
            said = reports.get(file)
            applied[name] = said if said is not None else "not reported"
            if said is not None and said.startswith("0/"):
                log.warning("LoRA %s matched no layer of %s: it was made for another model", name, self.spec.key)
        return applied

    def count_tokens(self, prompt: str) -> tuple[int, int] | None:
        """sd.cpp does not say; the policy treats the prompt as unbounded."""
        return None

    def close(self) -> None:
        """Stop the child: its memory is freed when it exits."""
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()


def _sdcpp(spec: ModelSpec) -> SdcppFiles:
    if spec.sdcpp is None:
        raise ModelUnsupported(f"Model '{spec.key}' names no files for stable-diffusion.cpp.", hint=BUILD_HINT)
    return spec.sdcpp


def _files(spec: ModelSpec) -> dict[str, str]:
    return _sdcpp(spec).files()


def _hub(reference: str) -> tuple[str, str, str]:
    """The repo id, revision and file of a `https://huggingface.co/<owner>/<repo>/blob/<revision>/<path>` URL."""
    owner, repo, _blob, revision, *path = reference.removeprefix(_HUB_URL).split("/")
    return f"{owner}/{repo}", revision, "/".join(path)


def _cached(reference: str) -> str | None:
    if not reference.startswith(_HUB_URL):
        return reference if Path(reference).exists() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo_id, revision, filename = _hub(reference)
    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return found if isinstance(found, str) else None


def _download(reference: str) -> str:
    from huggingface_hub import hf_hub_download

    repo_id, revision, filename = _hub(reference)
    path: str = hf_hub_download(repo_id, filename, revision=revision)
    return path


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _error(answer: httpx.Response) -> str:
    try:
        data = answer.json()
    except ValueError:
        return answer.text[:200]
    return str(data.get("error") or data)[:200] if isinstance(data, dict) else str(data)[:200]
