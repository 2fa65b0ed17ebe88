"""Job records, events, cancel flags and heartbeats in Redis: the state every API node and worker shares.

All keys live under one prefix (`imageforge:` by default):

- `job:<id>`: a hash with the job as JSON (`job`), its `status`, the `attempt` that may run it and its `route`;
- `jobs` (every job by creation time), `queued` (waiting jobs, FIFO), `running`, `ended` (by `expires_at`);
- `active:<client>`: a client's jobs not ended, what its share of the queue counts;
- `idem:<key>` and `dedupe:<key>`: the job an idempotency key, or an in-flight duplicate's key, names;
- `events:<id>`: the job's events as a Redis Stream whose entry ids are `0-<index + 1>`, so that a follower on
  any API node resumes after the last index it saw; `evn:<id>` counts them;
- `cancel:<id>`: set when a running job is cancelled, read by the worker at each step;
- `hb:<id>`: the running job's heartbeat, a key with a short TTL its worker renews;
- `worker:<name>`: each worker's heartbeat (its models and device), for /health;
- `rate:<client>`: when a client's jobs of the last minute were accepted, for the per-client rate;
- `runs:<route>`: how long the last jobs of a route (a model) ran, newest first, for `eta_s`.

State changes are compare-and-set transactions (WATCH on the job's hash), so an API node's cancel, a worker's
claim and the sweeper's re-dispatch never both win.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import redis
from redis.client import Pipeline

from imageforge.domain import Job, JobEvent, JobStatus
from imageforge.errors import QueueUnavailable

#: Redis socket timeouts (seconds): a Redis that is down or unreachable answers `QueueUnavailable`, never a hang.
CONNECT_TIMEOUT_S = 3.0
SOCKET_TIMEOUT_S = 10.0

#: How many run times per route `eta_s` goes by.
RECENT_RUNS = 10

# Appends one event with the next index: atomic, so two publishers never race for an index.
_PUBLISH = """
local n = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[1], '0-' .. n, 'e', ARGV[1])
if tonumber(ARGV[2]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return n - 1
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def connect(url: str, *, block_s: float = 0.0) -> redis.Redis:
    """A client for `url` with bounded connect and read timeouts (`block_s` more for blocking reads)."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S + block_s,
        health_check_interval=30,
    )


def unavailable(exc: Exception) -> QueueUnavailable:
    """The `QueueUnavailable` for a Redis error."""
    return QueueUnavailable(
        f"The job queue's Redis did not answer ({type(exc).__name__}).",
        hint="Try again shortly; the server's admin checks that Redis (IMAGEFORGE_QUEUE_URL) is running.",
    )


def job_to_json(job: Job) -> str:
    """The job as JSON for its record."""
    return json.dumps(dataclasses.asdict(job), separators=(",", ":"))


def job_from_json(text: str | bytes) -> Job:
    """The job a record holds."""
    data = json.loads(text)
    data["status"] = JobStatus(data["status"])
    return Job(**data)


@dataclasses.dataclass
class Record:
    """A job as its record holds it: the job, which attempt may run it, and where it is routed."""

    job: Job
    attempt: int
    route: str


class Records:
    """The shared state of the distributed queue in one Redis, under `prefix`."""

    def __init__(self, url: str, *, prefix: str = "imageforge:") -> None:
        self.url = url
        self.prefix = prefix
        self.redis = connect(url)
        self._publish = self.redis.register_script(_PUBLISH)
        self._unlock = self.redis.register_script(_UNLOCK)

    def close(self) -> None:
        """Close the connections to Redis."""
        self.redis.close()

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- reading ------------------------------------------------------------------------------------

    def load(self, job_id: str) -> Record | None:
        fields = self.redis.hgetall(self.key("job", job_id))
        return _record(fields) if fields else None

    def load_many(self, job_ids: Iterable[str]) -> list[Job]:
        ids = list(job_ids)
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(self.key("job", job_id), "job")
        return [job_from_json(text) for text in pipe.execute() if text is not None]

    def newest(self, start: int, count: int) -> list[str]:
        """`count` job ids from the `start`th newest on, newest first."""
        return [_text(raw) for raw in self.redis.zrevrange(self.key("jobs"), start, start + count - 1)]

    def live_ids(self, now: float) -> list[str]:
        """The jobs not expired by `now`: waiting, running, or ended with a result still readable."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrange(self.key("queued"), 0, -1)
        pipe.smembers(self.key("running"))
        pipe.zrangebyscore(self.key("ended"), f"({now}", "+inf")
        queued, running, ended = pipe.execute()
        return [_text(raw) for raw in [*queued, *running, *ended]]

    def waiting(self) -> int:
        return int(self.redis.zcard(self.key("queued")))

    def ahead_of(self, job_id: str) -> int | None:
        """How many waiting jobs came before `job_id`; None when it is not waiting."""
        rank: Any = self.redis.zrank(self.key("queued"), job_id)
        return None if rank is None else int(rank)

    def running_count(self) -> int:
        return int(self.redis.scard(self.key("running")))

    def running_ids(self) -> list[str]:
        return sorted(_text(raw) for raw in self.redis.smembers(self.key("running")))

    def active_of(self, client: str) -> int:
        return int(self.redis.scard(self.key("active", client)))

    def by_key(self, kind: str, key: str) -> str | None:
        """The job an idempotency (`idem`) or dedupe (`dedupe`) key names."""
        raw = self.redis.get(self.key(kind, key))
        return None if raw is None else _text(raw)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.key("cancel", job_id)))

    def heartbeat_alive(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.key("hb", job_id)))

    def expired_ids(self, now: float) -> list[str]:
        return [_text(raw) for raw in self.redis.zrangebyscore(self.key("ended"), "-inf", now)]

    # -- writing ------------------------------------------------------------------------------------

    def create(
        self,
        job: Job,
        route: str,
        event: dict[str, Any],
        check: Callable[[Pipeline], Job | None],
    ) -> Job:
        """Store a new queued job with its first event, unless `check` returns the job its idempotency or dedupe
        key already names, which is returned instead, or raises to refuse it.

        `check` runs under WATCH of those keys, the waiting jobs and the client's jobs: when another node writes
        any of them before this job is stored, `check` runs again on what it wrote, so that admission counts
        every node's jobs (two nodes at once never both take the last place).
        """
        watched = [
            *(self.key("idem", k) for k in (job.idempotency_key,) if k),
            *(self.key("dedupe", k) for k in (job.dedupe_key,) if k),
            self.key("queued"),
            self.key("active", job.client),
        ]

        def body(pipe: Pipeline) -> Job:
            earlier = check(pipe)
            if earlier is not None:
                return earlier
            pipe.multi()
            self._write(pipe, job, attempt=1, route=route)
            pipe.zadd(self.key("jobs"), {job.id: job.created_at})
            pipe.zadd(self.key("queued"), {job.id: job.created_at})
            pipe.sadd(self.key("active", job.client), job.id)
            if job.idempotency_key:
                pipe.set(self.key("idem", job.idempotency_key), job.id)
            if job.dedupe_key:
                pipe.set(self.key("dedupe", job.dedupe_key), job.id)
            self.publish(job.id, event, client=pipe)
            return job

        result = self.redis.transaction(body, *watched, value_from_callable=True)  # type: ignore[arg-type]
        assert isinstance(result, Job)
        return result

    def change(self, job_id: str, decide: Callable[[Record], Callable[[Pipeline], None] | None]) -> Record | None:
        """Change a job's record atomically: `decide` sees the record as it is and returns what to write (queued
        commands on a MULTI pipeline), or None to leave it. Returns the record `decide` saw, None when unknown."""
        key = self.key("job", job_id)
        seen: list[Record] = []

        def body(pipe: Pipeline) -> None:
            seen.clear()
            fields = pipe.hgetall(key)
            if not fields:
                return
            record = _record(fields)
            seen.append(record)
            write = decide(record)
            if write is not None:
                pipe.multi()
                write(pipe)

        self.redis.transaction(body, key)
        return seen[0] if seen else None

    def write(self, pipe: Pipeline, job: Job, *, attempt: int, route: str) -> None:
        """Queue the writes that store `job` as it is now, and update the indexes its status is in."""
        self._write(pipe, job, attempt=attempt, route=route)
        queued, running, ended = self.key("queued"), self.key("running"), self.key("ended")
        if job.status is JobStatus.QUEUED:
            pipe.zadd(queued, {job.id: job.created_at})
            pipe.srem(running, job.id)
        elif job.status is JobStatus.RUNNING:
            pipe.zrem(queued, job.id)
            pipe.sadd(running, job.id)
        else:
            pipe.zrem(queued, job.id)
            pipe.srem(running, job.id)
            pipe.srem(self.key("active", job.client), job.id)
            pipe.delete(self.key("cancel", job.id), self.key("hb", job.id))
            if job.expires_at is not None:
                pipe.zadd(ended, {job.id: job.expires_at})
            if job.dedupe_key:
                # Only while in flight: a later duplicate is a new job (it may hit the cache).
                pipe.delete(self.key("dedupe", job.dedupe_key))

    def _write(self, pipe: Pipeline, job: Job, *, attempt: int, route: str) -> None:
        pipe.hset(
            self.key("job", job.id),
            mapping={"job": job_to_json(job), "status": job.status.value, "attempt": attempt, "route": route},
        )

    def publish(self, job_id: str, event: dict[str, Any], *, client: Any = None, ttl_s: float = 0) -> None:
        """Append `{"type", "data"}` to the job's event stream (through `client`, a pipeline, when given);
        `ttl_s` makes the stream expire with the job's result."""
        keys = [self.key("events", job_id), self.key("evn", job_id)]
        self._publish(keys=keys, args=[json.dumps(event), int(ttl_s)], client=client or self.redis)

    def publish_places(self) -> None:
        """Tell each waiting job where it is now, as a `queue` event: the queue moved (a job started or left)."""
        waiting = [_text(raw) for raw in self.redis.zrange(self.key("queued"), 0, -1)]
        running = self.running_count()
        for position, job_id in enumerate(waiting, start=1):
            self.publish(job_id, {"type": "queue", "data": {"position": position, "ahead": position - 1 + running}})

    def last_index(self, job_id: str) -> int:
        raw = self.redis.get(self.key("evn", job_id))
        return -1 if raw is None else int(raw) - 1

    def request_cancel(self, job_id: str, ttl_s: float) -> None:
        self.redis.set(self.key("cancel", job_id), "1", ex=max(1, int(ttl_s)))

    def beat(self, job_id: str, worker: str, ttl_s: float) -> None:
        """Renew the running job's heartbeat."""
        self.redis.set(self.key("hb", job_id), worker, px=int(ttl_s * 1000))

    def delete(self, job: Job) -> None:
        pipe = self.redis.pipeline()
        pipe.delete(self.key("job", job.id), self.key("events", job.id), self.key("evn", job.id))
        for index in ("jobs", "queued", "ended"):
            pipe.zrem(self.key(index), job.id)
        if job.idempotency_key and self.by_key("idem", job.idempotency_key) == job.id:
            pipe.delete(self.key("idem", job.idempotency_key))
        pipe.execute()

    def release_idempotency_key(self, key: str, job_id: str) -> None:
        if self.by_key("idem", key) == job_id:
            self.redis.delete(self.key("idem", key))

    def try_lock(self, name: str, ttl_s: float) -> str | None:
        """Take a short lock (one node sweeps at a time), or None when another holds it; it lapses by itself
        after `ttl_s` (a node that dies holding it) and `unlock` with the returned token frees it now."""
        token = secrets.token_hex(8)
        taken = self.redis.set(self.key("lock", name), token, nx=True, px=int(ttl_s * 1000))
        return token if taken else None

    def unlock(self, name: str, token: str) -> None:
        """Free a lock `try_lock` gave `token`, unless it lapsed and another node took it since."""
        self._unlock(keys=[self.key("lock", name)], args=[token])

    # -- the per-client rate -------------------------------------------------------------------------

    def recent(self, client: str, since: float) -> list[float]:
        """When `client`'s jobs accepted after `since` were, oldest first, counted by every API node (`RateLog`)."""
        key = self.key("rate", client)
        pipe = self.redis.pipeline()
        pipe.zremrangebyscore(key, "-inf", since)
        pipe.zrange(key, 0, -1, withscores=True)
        return [float(score) for _member, score in pipe.execute()[1]]

    def note(self, client: str, at: float) -> None:
        key = self.key("rate", client)
        pipe = self.redis.pipeline()
        pipe.zadd(key, {f"{at}:{secrets.token_hex(4)}": at})
        pipe.expire(key, 3600)
        pipe.execute()

    # -- run times ----------------------------------------------------------------------------------

    def note_run(self, pipe: Pipeline, route: str, run_s: float) -> None:
        """Queue the writes that add a finished job's run time to its route's recent ones."""
        key = self.key("runs", route)
        pipe.lpush(key, round(run_s, 3))
        pipe.ltrim(key, 0, RECENT_RUNS - 1)
        pipe.expire(key, 86400)

    def recent_runs(self, route: str) -> list[float]:
        """How long the route's last jobs ran (seconds), newest first."""
        return [float(raw) for raw in self.redis.lrange(self.key("runs", route), 0, -1)]

    # -- workers ------------------------------------------------------------------------------------

    def worker_beat(self, name: str, info: dict[str, Any], ttl_s: float) -> None:
        self.redis.set(self.key("worker", name), json.dumps(info), px=int(ttl_s * 1000))

    def workers(self) -> list[dict[str, Any]]:
        """The workers whose heartbeat is live: their name, models, device and running job."""
        keys = list(self.redis.scan_iter(match=self.key("worker", "*"), count=100))
        if not keys:
            return []
        return [json.loads(raw) for raw in self.redis.mget(keys) if raw is not None]

    # -- events -------------------------------------------------------------------------------------

    def events_after(self, job_id: str, after: int, block_s: float) -> list[JobEvent]:
        """The job's events with an index above `after`, waiting up to `block_s` for one."""
        stream = self.key("events", job_id)
        client = self.redis if block_s <= 0 else connect(self.url, block_s=block_s)
        try:
            reply = client.xread({stream: f"0-{after + 1}"}, block=int(block_s * 1000) if block_s > 0 else None)
        finally:
            if client is not self.redis:
                client.close()
        return parse_events(job_id, reply)


def parse_events(job_id: str, reply: Any) -> list[JobEvent]:
    """The `JobEvent`s of an XREAD reply."""
    events = []
    for _stream, entries in reply or []:
        for entry_id, fields in entries:
            index = int(_text(entry_id).split("-")[1]) - 1
            body = json.loads(fields[b"e"])
            events.append(JobEvent(type=body["type"], job_id=job_id, data=body["data"], index=index))
    return events


def _record(fields: Any) -> Record:
    return Record(job_from_json(fields[b"job"]), int(fields[b"attempt"]), _text(fields[b"route"]))


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)
