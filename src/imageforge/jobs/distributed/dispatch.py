"""The Celery app: the transport that carries a job's id to a worker of its model, and supervises that worker.

Celery carries only `imageforge.run_job(job_id, attempt)`; the job itself, its progress and its result are in our
records (records.py). docs/adr/0023-distributed-queue-on-celery-and-redis.md says why each setting is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery

#: The one task: run the job with this id, if this attempt is still the one to run.
RUN_JOB = "imageforge.run_job"
#: Redis socket timeouts for the broker connection (seconds): a dead broker fails a publish, never hangs it.
BROKER_SOCKET_TIMEOUT_S = 10.0
BROKER_CONNECT_TIMEOUT_S = 3.0
#: A publish retries this often on a dropped connection (a Redis restart) before the submit answers 503.
PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 1.0}
#: The visibility timeout when jobs have no time limit: a day, past any job this service runs.
LONGEST_JOB_S = 24 * 3600.0


def queue_name(route: str) -> str:
    """The Celery queue of a model's jobs: a worker consumes only the queues of the models it serves."""
    return f"imageforge.model.{route}"


def make_app(url: str, *, job_timeout_s: float | None = None) -> Celery:
    """The Celery app on the Redis at `url`."""
    app = Celery("imageforge", broker=url, set_as_current=False)
    longest = job_timeout_s or LONGEST_JOB_S
    app.conf.update(
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_concurrency=1,
        broker_transport_options={
            "visibility_timeout": int(longest * 2) + 60,
            "unacked_restore_interval": 5,
            "unacked_restore_throttle": 1,
            "socket_timeout": BROKER_SOCKET_TIMEOUT_S,
            "socket_connect_timeout": BROKER_CONNECT_TIMEOUT_S,
            "health_check_interval": 10,
        },
        broker_connection_timeout=BROKER_CONNECT_TIMEOUT_S,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        task_publish_retry_policy=PUBLISH_RETRY,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
        broker_channel_error_retry=True,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


def send(app: Celery, job_id: str, attempt: int, route: str) -> None:
    """Publish the task that runs attempt `attempt` of the job to its model's queue; raises when the broker
    cannot take it after a few retries."""
    app.send_task(RUN_JOB, args=[job_id, attempt], queue=queue_name(route), retry=True, retry_policy=PUBLISH_RETRY)


def bind_task(app: Celery, run: Callable[[str, int], None]) -> Any:
    """Register the task body on this worker's app: `run(job_id, attempt)`, which drops what it must not run."""

    @app.task(name=RUN_JOB, shared=False, ignore_result=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def run_job(job_id: str, attempt: int) -> None:
        run(job_id, attempt)

    return run_job
