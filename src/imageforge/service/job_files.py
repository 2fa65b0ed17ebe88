"""JobFiles: a job's input images and result image, kept on disk for as long as some job is readable that uses
them."""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from imageforge.domain import GenerationRequest, Job, result_images
from imageforge.jobs.queue import JobQueue
from imageforge.service.faults import StorageFaults
from imageforge.storage.inputs import InputStore, image_digest
from imageforge.storage.outputs import OutputStore

#: The payload fields that name input images by digest in the input store.
INPUT_FIELDS = ("init_image", "mask_image")


class JobFiles:
    """Stores a submission's input images once by digest, and removes a job's files when its result expires.

    Equal images share one file, so a file goes only with the last job that names it. The digests of submissions
    between storing their images and queueing their jobs are pinned, so that a job expiring meanwhile cannot
    remove an equal image; an input is removed only under the lock and when neither a pin nor a job names it.
    """

    def __init__(self, queue: JobQueue, inputs: InputStore, outputs: OutputStore, faults: StorageFaults) -> None:
        self._queue = queue
        self._inputs = inputs
        self._outputs = outputs
        self._faults = faults
        self._pinned: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def stored_inputs(self, request: GenerationRequest) -> Iterator[tuple[str | None, str | None]]:
        """Store the request's images for the job about to be queued; yield the init image's and the mask's
        digests. When the block raises (the job was refused), what was stored for it goes again unless another
        job uses it."""
        images = {name: image for name in INPUT_FIELDS if (image := getattr(request, name)) is not None}
        digests = {name: image_digest(image) for name, image in images.items()}
        with self._lock:
            self._pinned.update(digests.values())
        queued = False
        try:
            for image in images.values():
                self._faults.stored(self._inputs, functools.partial(self._inputs.put, image))
            yield digests.get("init_image"), digests.get("mask_image")
            queued = True
        finally:
            with self._lock:
                self._pinned -= Counter(digests.values())
                if not queued:
                    self._remove_unused_inputs(digests, job_id=None)

    def stored_base64(self, digest: str) -> str:
        """The input image named `digest`, as base64 of a PNG; `InputMissing` when it is no longer stored."""
        buffer = io.BytesIO()
        self._inputs.get(digest).save(buffer, format="PNG", compress_level=1)
        return base64.b64encode(buffer.getvalue()).decode()

    def input_png(self, job: Job, name: str) -> bytes | None:
        """The PNG of the job's input image `name` (one of INPUT_FIELDS), as it was stored; None when the job had
        none. `InputMissing` when it is no longer in the store."""
        digest = job.payload.get(name)
        if name not in INPUT_FIELDS or not isinstance(digest, str):
            return None
        buffer = io.BytesIO()
        self._inputs.get(digest).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    def expire(self, job: Job) -> None:
        """A job's result expired: remove its images from the output store (the cache keeps its own copies) and
        its inputs from the input store.

        A cache hit answers with the image already stored, so an image goes with the last readable job that
        shares it, cache hit or not; an input goes with the last job whose payload names it.
        """
        for image in result_images(job.result) if job.result else []:
            output = image.output_path
            if not any(other.id != job.id for other in self._queue.results_with("output_path", output)):
                self._outputs.delete(Path(output))
        digests = {name: digest for name in INPUT_FIELDS if isinstance(digest := job.payload.get(name), str)}
        with self._lock:
            self._remove_unused_inputs(digests, job_id=job.id)

    def _remove_unused_inputs(self, digests: dict[str, str], *, job_id: str | None) -> None:
        """Remove each input image that no submission pins and no job besides `job_id` names (caller holds the
        lock). A job keeps its inputs from submit until its result expires, so that a restart or a retry of the
        sweep still finds them."""
        for name, digest in digests.items():
            # The digest covers the mode: an init image (RGB) and a mask (L) never share one.
            if self._pinned[digest] or any(other.id != job_id for other in self._queue.payloads_with(name, digest)):
                continue
            self._inputs.delete(digest)
