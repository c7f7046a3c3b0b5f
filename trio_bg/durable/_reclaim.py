"""Reclaim: a Redis worker's heartbeat, and the jobs of a worker whose heartbeat stopped.

streaq reclaims a job only once its stream entry has been idle for the reclaim timeout, when a
worker next reads (a blocked reader reads again after the reclaim timeout), and says nothing
when it does. trio_bg's workers (:class:`~._stats.CountingWorker`) beat instead: every
:func:`heartbeat_timeout` / 4 seconds each sets its streaq health key
(``streaq:<queue>:health:<worker>``, what ``statistics().workers`` counts) to expire after
:func:`heartbeat_timeout` seconds (half the reclaim timeout: 5 s by default), refreshes its
running jobs' entries, and writes which jobs it started when
(``streaq:<queue>:trio_bg:held:<worker>``). In the same beat each
worker looks at the queue's consumers: one that holds entries and has no health key is dead
(SIGKILL, OOM, a lost host, or a worker that stopped with jobs it had read and not started).
Its entries are put back at the end of the stream at once, in one script (so two workers never
both move one), where any worker blocked on the stream wakes for them; each is logged in one
WARNING line (the job, the worker that held it, how long). A dead worker's job thus runs again
within about 6.25 s by default (5 s, and one beat). A dead consumer that holds nothing is
removed from the group (its list would otherwise grow with every worker ever started).

streaq's own idle reclaim stays as the fallback (the reclaim timeout), for workers that do not
beat (plain streaq workers), and for a worker whose event loop stalled past it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, cast

import trio
from streaq.constants import REDIS_GROUP, REDIS_HEALTH
from streaq.utils import now_ms

from .._core._text import clean

logger = logging.getLogger("trio_bg.durable")

HELD_KEY = ":trio_bg:held:"
"""After ``streaq:<queue>``, before the worker's id: when that worker started its jobs."""
MAX_MOVED = 100
"""Entries of one dead worker moved per beat (the rest in the next ones)."""

# Atomic per entry: one worker moves it, the other finds it no longer pending for the dead one.
_MOVE = """
local moved = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local pending = redis.call('xpending', KEYS[1], ARGV[1], id, id, 1, ARGV[2])
  if #pending > 0 then
    local entry = redis.call('xrange', KEYS[1], id, id)
    local fields = {}
    if #entry > 0 then
      fields = entry[1][2]
      if #fields > 0 then redis.call('xadd', KEYS[1], '*', unpack(fields)) end
    end
    redis.call('xack', KEYS[1], ARGV[1], id)
    redis.call('xdel', KEYS[1], id)
    for j = 1, #fields - 1, 2 do
      if fields[j] == 'task_id' then redis.call('srem', KEYS[2], fields[j + 1]) end
    end
    moved[#moved + 1] = {id, pending[1][3], fields}
  end
end
return moved
"""


def heartbeat_timeout(reclaim_timeout: float) -> float:
    """Seconds without a heartbeat after which a worker is dead: half the reclaim timeout, so
    the heartbeat's put-back comes before streaq's idle reclaim (which logs nothing)."""
    return reclaim_timeout / 2


def health_key(worker: Any, worker_id: str) -> str:
    return f"{worker.prefix}{REDIS_HEALTH}:{worker_id}"


def held_key(worker: Any, worker_id: str) -> str:
    return f"{worker.prefix}{HELD_KEY}{worker_id}"


async def beat(worker: Any, scope: Any, started: Mapping[str, tuple[str, int]]) -> None:
    """Replaces streaq's ``renew_idle_timeouts``: the heartbeat, streaq's own renewals (the
    running jobs' entries, at every beat rather than every 0.9 of the reclaim timeout, so a
    dead worker's entries are never idle for the reclaim timeout before its heartbeat has
    expired; expired results), and a look for dead workers, until ``scope`` is cancelled
    (streaq cancels it once its jobs are done).

    On the way out the health key goes at once, shielded for at most 2 s: what this worker
    read and did not finish is then put back by the next beat of another worker. A lost Redis
    propagates (the worker is started again by ``run_worker``); any other failure of the look
    for dead workers is logged and the beat goes on.
    """
    idle_ms: int = worker.idle_timeout
    ttl_ms = int(heartbeat_timeout(idle_ms / 1000) * 1000)
    interval = ttl_ms / 4000
    with scope:
        try:
            while True:
                async with worker.redis.pipeline(transaction=False) as pipe:
                    pipe.set(health_key(worker, worker.id), str(worker), px=ttl_ms)
                    pipe.set(
                        held_key(worker, worker.id),
                        json.dumps(dict(started)),
                        px=max(3 * ttl_ms, 2 * idle_ms),
                    )
                    pipe.zremrangebyscore(worker._results_set, 0, now_ms())
                    for priority, tasks in worker._running_tasks.items():
                        if tasks:
                            pipe.xclaim(
                                worker.stream_key + priority,
                                REDIS_GROUP,
                                worker.id,
                                0,
                                tasks,
                                justid=True,
                            )
                try:
                    await reclaim_dead(worker, ttl_ms)
                except Exception as exc:  # a look that failed is tried again next beat
                    logger.warning("worker %s: cannot look for dead workers: %s", worker.id, exc)
                await trio.sleep(interval)
        finally:
            # Redis lost: the keys expire by themselves.
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(2),
                contextlib.suppress(Exception),
            ):
                await worker.redis.delete(
                    [health_key(worker, worker.id), held_key(worker, worker.id)]
                )


async def reclaim_dead(worker: Any, ttl_ms: int) -> int:
    """Put back the entries of every dead consumer of the queue's streams; the number moved."""
    redis = worker.redis
    streams = [worker.stream_key + p for p in worker.priorities]
    async with redis.pipeline(transaction=False) as pipe:
        infos = [pipe.xinfo_consumers(s, REDIS_GROUP) for s in streams]
    candidates: list[tuple[str, str, int, int]] = []  # stream, consumer, pending, idle
    for stream, info in zip(streams, infos, strict=True):
        for consumer in await info:
            name, pending, idle = (
                consumer.get("name"),
                consumer.get("pending"),
                consumer.get("idle"),
            )
            if not isinstance(name, str) or name == worker.id:
                continue
            pending = pending if isinstance(pending, int) else 0
            idle = idle if isinstance(idle, int) else 0
            if pending > 0 or idle > ttl_ms:
                candidates.append((stream, name, pending, idle))
    if not candidates:
        return 0
    names = sorted({name for _, name, _, _ in candidates})
    async with redis.pipeline(transaction=False) as pipe:
        alive = [pipe.exists([health_key(worker, n)]) for n in names]
    dead = {n for n, a in zip(names, alive, strict=True) if not await a}
    moved = 0
    for stream, name, pending, idle in candidates:
        if name not in dead:
            continue
        if pending == 0:
            if idle > ttl_ms:  # gone for good: keep the group's list of consumers short
                await redis.xgroup_delconsumer(stream, REDIS_GROUP, name)
            continue
        moved += await _move(worker, stream, name)
    return moved


async def _move(worker: Any, stream: str, consumer: str) -> int:
    redis = worker.redis
    listed = await redis.xpending(stream, REDIS_GROUP, "-", "+", MAX_MOVED, consumer=consumer)
    ids = [str(p.identifier) for p in listed]
    if not ids:
        return 0
    reply: Any = await redis.eval(
        _MOVE, [stream, worker._running_set], [REDIS_GROUP, consumer, *ids]
    )
    moved = cast("list[Sequence[Any]]", reply or [])
    if not moved:
        return 0
    starts = _starts(await redis.get(held_key(worker, consumer)))
    jobs: list[tuple[str, int, str | None]] = []  # entry, idle ms, job id
    for entry, idle, fields in moved:
        flat = [str(f) for f in fields]
        values = dict(zip(flat[::2], flat[1::2], strict=False))
        jobs.append((str(entry), int(idle), values.get("task_id")))
    async with redis.pipeline(transaction=False) as pipe:
        data = [pipe.get(worker.task_key + job) for _, _, job in jobs if job is not None]
    names = iter([_job_name(await d) for d in data])
    now = now_ms()
    for entry, idle, job in jobs:
        if job is None:
            logger.warning(
                "reclaimed stream entry %s from worker %s, which held it %.1f s "
                "(no heartbeat for %g s): put back to be checked",
                entry, clean(consumer, 120), idle / 1000, _heartbeat_s(worker),
            )  # fmt: skip
            continue
        name = next(names)
        # Since it started (as its last beat said), else since it was read (or its last
        # renewal, every 0.9 of the reclaim timeout): until now, when it is put back.
        started = starts.get(entry)
        held = (now - started if started is not None else idle) / 1000
        logger.warning(
            "reclaimed job %s (%s) from worker %s, which held it %.1f s "
            "(no heartbeat for %g s): queued again",
            name, clean(job, 120), clean(consumer, 120), held, _heartbeat_s(worker),
        )  # fmt: skip
    return len(moved)


def _heartbeat_s(worker: Any) -> float:
    return heartbeat_timeout(worker.idle_timeout / 1000)


def _starts(text: object) -> dict[str, int]:
    """A dead worker's ``{entry id: started ms}``; empty for anything it did not write."""
    try:
        data: object = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    starts: dict[str, int] = {}
    for entry, value in cast("dict[str, object]", data).items():
        if isinstance(value, list) and len(cast("list[object]", value)) == 2:
            at = cast("list[object]", value)[1]
            if isinstance(at, int) and not isinstance(at, bool):
                starts[entry] = at
    return starts


def _job_name(text: object) -> str:
    """The job's registered name in its task data, or ``?``."""
    try:
        data: object = json.loads(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "?"
    name = cast("dict[str, object]", data).get("f") if isinstance(data, dict) else None
    return clean(name, 200) if isinstance(name, str) else "?"
