"""Memory: what a job needs, measured on this machine, and what to do when a job runs out.

`MemoryPlanner` estimates a job's peak memory as the weights of its model (nothing while the model is loaded:
they are in memory already) plus what generating takes. The latter is fitted from the peaks this machine
recorded for the model, task and device (`PeakLog`): a straight line in pixels by least squares over the
median peak of each size once two sizes ran, that one peak scaled by pixels while one size ran, and until then
the catalog's `est_memory_gb` seed (`SEED_ACTIVATION_SHARE` of it at the model's default size, scaled by
pixels). Images of one job run one after the other, so a job's peak does not grow with its `count`.

At submit, a job whose estimate exceeds what is free (the device's free memory, plus what the running job and
the idle models the pool unloads when short will give back, less a margin) is refused with
`InsufficientMemory`, naming the estimate, what is free and the largest size of the same shape that fits.

When a job still runs out of memory, `retry` plans the one retry the operator's fallback policy allows: the
memory savers not yet on, else (for a request that allows it) a smaller size.
"""

from __future__ import annotations

import logging
import math
import statistics
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from imageforge.domain import (
    DEFAULT_FALLBACK,
    MEMORY_SAVERS,
    MIN_SIZE,
    Fallback,
    GenerationRequest,
    MemoryEstimate,
    ModelSpec,
    Task,
)
from imageforge.engine.memory import MemoryProbe, PeakReading
from imageforge.engine.pool import ModelPool
from imageforge.errors import InsufficientMemory, OutOfMemory
from imageforge.storage.peaks import Peak, PeakLog

log = logging.getLogger(__name__)

#: Share of a model's catalog `est_memory_gb` that generating one image at its default size is taken to need
#: until a run of it is measured here (SDXL at 1024x1024 in fp16: ~2.5 GB of its 10).
SEED_ACTIVATION_SHARE = 0.25
#: How much a smaller-size retry shrinks each side at least.
SHRINK = 0.75


@dataclass(frozen=True)
class MemoryPolicy:
    """The operator's memory settings: whether submit refuses jobs that would not fit (`admission`), the memory
    kept free besides (`margin_gb`), and what a retry after running out of memory may change (`fallback`)."""

    admission: bool = True
    margin_gb: float = 0.5
    fallback: tuple[Fallback, ...] = DEFAULT_FALLBACK


@dataclass(frozen=True)
class Estimate:
    """A job's estimated peak memory in GB: loading its model (0 when loaded), and generating one image."""

    weights_gb: float
    activations_gb: float
    #: "measured" (fitted from recorded peaks) or "catalog" (the seed)
    source: str

    @property
    def need_gb(self) -> float:
        return self.weights_gb + self.activations_gb


@dataclass(frozen=True)
class Retry:
    """The one retry after running out of memory: the request as it runs again and what was changed."""

    request: GenerationRequest
    applied: tuple[Fallback, ...]


def fit(peaks: Sequence[Peak]) -> Callable[[int], float] | None:
    """The peak memory (GB) of a run at a number of pixels, fitted from `peaks`; None without any.

    The median of each size's peaks stands for the size (the first run at a new size also fills the CPU
    kernels' caches, an outlier); two sizes or more give a least-squares line, one a proportion. A line that
    falls with size says the sizes were too close for the noise: the proportion through the largest size is
    used instead.
    """
    by_size: dict[int, list[float]] = {}
    for peak in peaks:
        by_size.setdefault(peak.pixels, []).append(peak.peak_gb)
    if not by_size:
        return None
    points = sorted((pixels, statistics.median(values)) for pixels, values in by_size.items())
    largest_pixels, largest_gb = points[-1]
    if len(points) >= 2:
        mean_x = statistics.fmean(x for x, _ in points)
        mean_y = statistics.fmean(y for _, y in points)
        spread = sum((x - mean_x) ** 2 for x, _ in points)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
        if slope > 0:
            intercept = mean_y - slope * mean_x
            return lambda pixels: max(0.0, intercept + slope * pixels)
    return lambda pixels: largest_gb * pixels / largest_pixels


#: What a refusal on the catalog's figure adds to its hint: that figure is a guess until a job has run.
_UNMEASURED = (
    " Until a job of the model has run here its estimate is the catalog's figure: a model of your own takes its"
    " `memory_gb` from models.toml (8 GB when it has none)."
)


def _amount(gb: float) -> str:
    return f"{gb:.1f} GB" if gb >= 1 else f"{gb * 1024:.0f} MB"


class MemoryPlanner:
    """Estimates, admission and the retry plan, for the device `probe` measures."""

    def __init__(self, probe: MemoryProbe, peaks: PeakLog, pool: ModelPool, policy: MemoryPolicy) -> None:
        self._probe = probe
        self._peaks = peaks
        self._pool = pool
        self.policy = policy
        self._lock = threading.Lock()
        #: what the running job's generation is estimated to take: given back before a job submitted now runs
        self._running_gb = 0.0

    # -- estimates ----------------------------------------------------------------------------------

    def _activations(self, spec: ModelSpec, task: Task) -> tuple[Callable[[int], float], str]:
        fitted = fit(self._peaks.peaks(spec.key, task.value, self._probe.device()))
        if fitted is not None:
            return fitted, "measured"
        seed_gb = spec.est_memory_gb * SEED_ACTIVATION_SHARE
        return (lambda pixels: seed_gb * pixels / spec.default_size**2), "catalog"

    def estimate(self, spec: ModelSpec, task: Task, width: int, height: int) -> Estimate:
        """What a job of `spec` at `width` x `height` needs now: the weights unless loaded, and generating."""
        activations, source = self._activations(spec, task)
        weights = 0.0 if spec.key in self._pool.resident() else spec.est_memory_gb
        return Estimate(weights, activations(width * height), source)

    def free_gb(self, spec: ModelSpec) -> float | None:
        """What a job of `spec` may count on: free memory, plus what the running job's generation and the idle
        models other than `spec` give back (the pool unloads those when memory runs short), less the margin."""
        free = self._probe.free_gb()
        if free is None:
            return None
        idle = sum(
            float(entry["est_memory_gb"])
            for entry in self._pool.status()["resident"]
            if entry["key"] != spec.key and not entry["in_use"]
        )
        with self._lock:
            running = self._running_gb
        return max(0.0, free + running + idle - self.policy.margin_gb)

    def _need(self, estimate: Estimate, free: float) -> float:
        # Weights that do not fit stay in RAM when the engine offloads them (CUDA); generating must fit.
        if estimate.weights_gb > free and self._probe.offloads_weights():
            return estimate.activations_gb
        return estimate.need_gb

    def describe(self, spec: ModelSpec) -> MemoryEstimate:
        """A text-to-image job of `spec` at its default size, as `/models` and `list_models` show it."""
        side = spec.default_size
        estimate = self.estimate(spec, Task.TEXT2IMG, side, side)
        free = self.free_gb(spec)
        return MemoryEstimate(
            width=side,
            height=side,
            need_gb=round(estimate.need_gb, 3),
            weights_gb=round(estimate.weights_gb, 3),
            activations_gb=round(estimate.activations_gb, 3),
            source=estimate.source,
            free_gb=None if free is None else round(free, 3),
            fits=None if free is None else self._need(estimate, free) <= free,
        )

    # -- admission ----------------------------------------------------------------------------------

    def admit(self, spec: ModelSpec, task: Task, width: int, height: int) -> None:
        """Refuse (`InsufficientMemory`) a job of `spec` at `width` x `height` that would not fit now; admit it
        when the policy has the check off or the device cannot tell its free memory."""
        if not self.policy.admission:
            return
        free = self.free_gb(spec)
        if free is None:
            return
        estimate = self.estimate(spec, task, width, height)
        if self._need(estimate, free) <= free:
            return
        fits = self.fitting_size(spec, task, width, height, free)
        parts = f"{_amount(estimate.weights_gb)} to load it, " if estimate.weights_gb else ""
        origin = "measured on this machine" if estimate.source == "measured" else "from the catalog's figure"
        suggestion = f"{fits[0]}x{fits[1]} fits." if fits else "no size of that shape fits."
        raise InsufficientMemory(
            f"At {width}x{height} '{spec.key}' needs about {_amount(estimate.need_gb)} ({parts}"
            f"{_amount(estimate.activations_gb)} to generate, {origin}); {_amount(free)} is free for it; {suggestion}",
            hint=(f"Ask for {fits[0]}x{fits[1]} or smaller, or free" if fits else "Free")
            + " memory: unload other models (POST /models/{key}/unload) or choose a lighter model."
            + (_UNMEASURED if estimate.source == "catalog" else "")
            + " The server's admin sets the memory kept free with IMAGEFORGE_MEMORY_MARGIN_GB and turns this check "
            "off with IMAGEFORGE_MEMORY_ADMISSION=0.",
        )

    def fitting_size(self, spec: ModelSpec, task: Task, width: int, height: int, free: float) -> tuple[int, int] | None:
        """The largest size of the shape of `width` x `height`, in the model's size steps, whose estimate fits
        `free` GB; None when not even the smallest does."""
        activations, _source = self._activations(spec, task)
        weights = 0.0 if spec.key in self._pool.resident() else spec.est_memory_gb
        multiple = spec.size_multiple
        longest = max(width, height)
        for side in range(longest - longest % multiple, MIN_SIZE - 1, -multiple):
            scale = side / longest
            size = (_down(width * scale, multiple), _down(height * scale, multiple))
            estimate = Estimate(weights, activations(size[0] * size[1]), "")
            if self._need(estimate, free) <= free:
                return size
        return None

    # -- running ------------------------------------------------------------------------------------

    @contextmanager
    def running(self, spec: ModelSpec, request: GenerationRequest, count: int) -> Iterator[PeakReading]:
        """Measure one generation of `request` (an image of a job of `count`) and record its peak (first tries
        only: a retry's savers lower it); meanwhile its estimate counts as given back for jobs submitted before
        it ends."""
        estimate = self.estimate(spec, request.task, request.width, request.height)
        with self._lock:
            self._running_gb = estimate.activations_gb
        try:
            with self._probe.measure() as reading:
                yield reading
        finally:
            with self._lock:
                self._running_gb = 0.0
        if reading.peak_gb is not None and not request.memory_savers:
            peak = Peak(request.width, request.height, count, reading.peak_gb)
            self._peaks.record(spec.key, request.task.value, self._probe.device(), peak)

    # -- out of memory ------------------------------------------------------------------------------

    def retry(
        self, failure: OutOfMemory, spec: ModelSpec, request: GenerationRequest, *, downsize: bool
    ) -> Retry | None:
        """The retry the fallback policy allows after `failure`: every memory saver of the policy not on when it
        ran out (CPU offload only on CUDA), else, when the request allows it (`downsize`), a smaller size; None
        when nothing is left to change."""
        cuda = self._probe.device().startswith("cuda")
        savers = tuple(
            step
            for step in self.policy.fallback
            if step in MEMORY_SAVERS
            and step.value not in failure.savers
            and step not in request.memory_savers
            and (step is not Fallback.CPU_OFFLOAD or cuda)
        )
        if savers:
            return Retry(replace(request, memory_savers=request.memory_savers | frozenset(savers)), savers)
        if Fallback.SMALLER_SIZE not in self.policy.fallback or not downsize:
            return None
        size = self._smaller(spec, request)
        if size is None:
            return None
        return Retry(resized(request, size), (Fallback.SMALLER_SIZE,))

    def _smaller(self, spec: ModelSpec, request: GenerationRequest) -> tuple[int, int] | None:
        """At most `SHRINK` of each side, smaller still where the estimate says only that fits."""
        multiple = spec.size_multiple
        size = (_down(request.width * SHRINK, multiple), _down(request.height * SHRINK, multiple))
        free = self.free_gb(spec)
        fits = None if free is None else self.fitting_size(spec, request.task, *size, free)
        size = fits or size
        return None if size[0] >= request.width and size[1] >= request.height else size


def _down(side: float, multiple: int) -> int:
    return max(MIN_SIZE, math.floor(side / multiple) * multiple)


def resized(request: GenerationRequest, size: tuple[int, int]) -> GenerationRequest:
    """`request` at `size`, its input images scaled to it (the engine draws at the input image's size)."""
    images: dict[str, Any] = {
        name: None if image is None else image.resize(size)
        for name, image in (("init_image", request.init_image), ("mask_image", request.mask_image))
    }
    return replace(request, width=size[0], height=size[1], **images)


def describe_downgrade(request: GenerationRequest, retry: Retry, failure: OutOfMemory) -> dict[str, Any]:
    """What a result says of its retry: the size asked for, the fallbacks applied, and what ran out."""
    reason = failure.message.split(": ", 1)[-1]
    return {
        "from": {"width": request.width, "height": request.height},
        "applied": [step.value for step in retry.applied],
        "reason": f"out of memory at {request.width}x{request.height}: {reason}",
    }
