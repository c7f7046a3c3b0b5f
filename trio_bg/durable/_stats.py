"""Queue statistics: how many jobs wait, run and ended, read from Redis (for the dashboard).

Everything but the outcome counts is streaq's own state, read as it is:

- ``depth``: entries of the queue's streams not yet delivered to a worker (XLEN minus the
  consumer group's pending count; streaq deletes an entry when it acks it);
- ``delayed``: jobs waiting for their time (``delay=``, and retries waiting for their backoff):
  the sorted sets of delayed jobs;
- ``in_flight``: entries delivered to a worker and not acked yet (XINFO GROUPS ``pending``): running
  jobs, the one a worker may have prefetched, and jobs of a dead worker until they are reclaimed;
- ``workers``: the consumers of the group whose streaq health key exists (a running worker
  refreshes it every 0.9 reclaim timeouts; it expires one reclaim timeout after the worker
  stopped).

streaq keeps no lasting count of outcomes (its counters live in each worker process, and its
results expire), so workers count them: :class:`CountingWorker`, the worker that
``python -m trio_bg worker`` runs, adds one to a field of the hash ``streaq:<queue>:trio_bg:ended``
(``succeeded``, ``failed``, ``cancelled``) once it has stored a job's final result. The hash has
no expiry: the counts are since the queue's keys were created.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import AsyncGenerator, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Self, cast

import trio
from coredis.response.types import StreamEntry
from streaq import Worker
from streaq.constants import REDIS_GROUP, REDIS_HEALTH
from streaq.types import StreaqCancelled, StreaqError
from streaq.utils import now_ms

from .._core._text import clean
from ._dead import dead_key, record, stream_entry_problem, task_data_problem
from ._reclaim import beat
from ._statistics import QueueStatistics

if TYPE_CHECKING:
    from anyio import CancelScope
    from streaq.types import Entries, StreamMessage

    from ._jobs import JobSpec


class _SaidOnce(logging.Filter):
    """Drops streaq's own lines that trio_bg's say better, so each event is one line: its ERROR
    for data it could not deserialize and its WARNING for data that is gone (the dead letter's
    WARNING names the entry and why), and
    its ERROR with two tracebacks plus an INFO line for an expected retry (the job's WARNING
    says which attempt failed, why, and when the next one comes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not (
            message.endswith("failed to deserialize")
            or (message.startswith("task † ") and message.endswith(" expired"))
            or message.startswith("Retrying task ")
            or " ↻ " in message
        )


logging.getLogger("streaq").addFilter(_SaidOnce())


def _note_reclaimed(worker: Worker[Any], message: StreamEntry) -> None:
    """Log an entry this read claimed from a worker that stopped refreshing it (delivered
    before, idle past the reclaim timeout): the job, how long it went without a heartbeat."""
    delivered = getattr(message, "delivered", None)
    idle = getattr(message, "idle", None)
    if not isinstance(delivered, int) or delivered < 1 or not isinstance(idle, int):
        return
    fields = cast(object, message.field_values)
    job = (
        cast("Mapping[object, object]", fields).get("task_id")
        if isinstance(fields, Mapping)
        else None
    )
    logger.warning(
        "worker %s reclaimed job %s: the worker that held it sent no heartbeat for %.1f s "
        "(delivery %d); it runs again here",
        worker.id, clean(str(job), 120), idle / 1000, delivered + 1,
    )  # fmt: skip


logger = logging.getLogger("trio_bg.durable")


_message: ContextVar[list[tuple[str, str]] | None] = ContextVar(
    "trio_bg_streaq_message", default=None
)
"""The job id and stream entry id of the message a worker's task is running (streaq runs each
in a task), until its task data is deserialized: what is deserialized after it (a result) is
not task data."""
_EXPIRED = "Task expired!"
"""streaq's failure for a stream entry whose task data is gone."""

ENDED_KEY = ":trio_bg:ended"
"""After ``streaq:<queue>``: the hash of outcome counts."""


def ended_key(worker: Worker[Any]) -> str:
    """The Redis key of the queue's outcome counts."""
    return worker.prefix + ENDED_KEY


def _outcome(success: bool, value: object) -> str:
    if success:
        return "succeeded"
    return "cancelled" if isinstance(value, StreaqCancelled) else "failed"


class CountingWorker(Worker[Any]):
    """streaq's worker, counting each job's outcome in Redis once its final result is stored,
    and checking every message before streaq indexes it (see the dead letters' module).

    The counts are kept in the process and written every :data:`FLUSH_INTERVAL` seconds, and
    when the worker stops (one pipeline for all of them, not a round trip per job): a worker
    killed in between misses the counts of its last quarter second (its jobs are not run again
    for it).

    The checks sit where streaq reads from Redis: the stream readers (an entry without a job
    id is acked, deleted and kept as a dead letter, and never reaches streaq's producer, which
    would index it) and the task data's deserializer (data that is no JSON object with what a
    job needs, or names no registered function, raises streaq's own ``StreaqError``, which
    streaq stores as the job's failure and acks; the data is kept as a dead letter).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs: Mapping[str, JobSpec] = {}
        """The trio_bg jobs registered with this worker (set by the queue that made it): its
        periodic ones get a scheduler beside it."""
        self._started: dict[str, tuple[str, int]] = {}
        """Per stream entry of a job running here: its id and when it started (unix ms)."""

    async def _read_streams_max_count(self, count: int, block: bool = False) -> Entries:
        return await self._checked(await super()._read_streams_max_count(count, block))

    async def _read_streams_legacy(self, count: int, block: bool = False) -> Entries:
        return await self._checked(await super()._read_streams_legacy(count, block))

    async def _checked(self, entries: Entries) -> Entries:
        """``entries`` without those that cannot run (each acked, deleted, dead-lettered)."""
        if not entries:
            return entries
        kept: dict[str, tuple[StreamEntry, ...]] = {}
        for stream, messages in entries.items():
            good: list[StreamEntry] = []
            for message in messages:
                _note_reclaimed(self, message)
                # Typed as a mapping; what Redis returned is checked, not trusted.
                job, problem = stream_entry_problem(cast(object, message.field_values))
                if problem is None:
                    good.append(message)
                    continue
                entry = str(message.identifier)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.xack(stream, REDIS_GROUP, [entry])
                    pipe.xdel(stream, [entry])
                await record(self, letter=entry, job=job, reason=problem, raw=message.field_values)
            if good:
                kept[stream] = tuple(good)
        return kept

    async def run_task(self, msg: StreamMessage) -> None:
        # The first deserialize of this task is its task data (see deserialize).
        running = _message.set([(msg.task_id, msg.message_id)])
        # For the heartbeat: a worker that finds this one dead logs how long it held the job.
        self._started[msg.message_id] = (msg.task_id, now_ms())
        try:
            await super().run_task(msg)
        finally:
            _message.reset(running)
            self._started.pop(msg.message_id, None)

    async def renew_idle_timeouts(self, scope: CancelScope) -> None:
        await beat(self, scope, self._started)

    async def deserialize(self, data: Any) -> Any:
        waiting = _message.get()
        if not waiting:
            return await super().deserialize(data)  # a result, or not in a job's run
        job, entry = waiting.pop()
        try:
            decoded: Any = await super().deserialize(data)
        except StreaqError:
            await self._dead_data(job, entry, "task data is not JSON", data)
            raise
        problem = task_data_problem(decoded)
        name = cast("dict[str, str]", decoded)["f"] if problem is None else ""
        if problem is None and name not in self.registry:
            problem = f"no job named {clean(name, 200)!r} is registered in this worker"
        if problem is not None:
            await self._dead_data(job, entry, problem, data)
            raise StreaqError(problem)
        return decoded

    async def _dead_data(self, job: str, entry: str, reason: str, data: object) -> None:
        """Keep bad task data as a dead letter (streaq stores the job's failure and acks)."""
        await record(
            self, letter=job, job=job, reason=reason, raw=data, entry=entry, task_data=True
        )

    async def finish_failed_task(
        self,
        msg: StreamMessage,
        exc: BaseException,
        tries: int,
        created_time: int,
        fn_name: str = "Unknown",
        ttl: timedelta | int | None = 300,
        otherwise: str | None = None,
    ) -> None:
        if isinstance(exc, StreaqError) and str(exc) == _EXPIRED:
            # streaq's word for an entry whose task data is gone (trio_bg sets no expiry).
            reason = "task data is missing"
            await record(self, letter=msg.task_id, job=msg.task_id, reason=reason, raw="",
                         entry=msg.message_id)  # fmt: skip
        await super().finish_failed_task(
            msg, exc, tries, created_time, fn_name=fn_name, ttl=ttl, otherwise=otherwise
        )
        self._count_outcome(_outcome(False, exc))

    async def finish_task(
        self,
        msg: StreamMessage,
        finish: bool,
        schedule: int | None,
        return_value: Any,
        start_time: int,
        finish_time: int,
        created_time: int,
        fn_name: str,
        success: bool,
        silent: bool,
        ttl: timedelta | int | None,
        triggers: str | None,
        lock_key: str | None,
        tries: int,
        otherwise: str | None,
    ) -> None:
        await super().finish_task(
            msg,
            finish,
            schedule,
            return_value,
            start_time,
            finish_time,
            created_time,
            fn_name,
            success,
            silent,
            ttl,
            triggers,
            lock_key,
            tries,
            otherwise,
        )
        if finish:  # not a retry, nor a job handed back to the stream
            self._count_outcome(_outcome(success, return_value))

    @asynccontextmanager
    async def __asynccontextmanager__(self) -> AsyncGenerator[Self]:
        async with super().__asynccontextmanager__() as worker:
            try:
                yield worker
            finally:
                # The counts of its last jobs, while its Redis client is still open.
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(2),
                    contextlib.suppress(Exception),
                ):
                    await self.flush_outcomes()

    def _count_outcome(self, outcome: str) -> None:
        self._ended()[outcome] += 1
        self.counted().set()

    def counted(self) -> trio.Event:
        """Set when an outcome was counted since the last flush began."""
        event: trio.Event | None = getattr(self, "_trio_bg_counted", None)
        if event is None:
            event = self._trio_bg_counted = trio.Event()
        return event

    def _ended(self) -> Counter[str]:
        """Outcomes counted since the last flush (streaq's Worker has no room for a field of
        ours in its constructor: made at the first outcome)."""
        ended: Counter[str] | None = getattr(self, "_trio_bg_ended", None)
        if ended is None:
            ended = Counter()
            self._trio_bg_ended = ended
        return ended

    async def flush_outcomes(self) -> None:
        """Add the outcomes counted since the last flush to the queue's hash: one pipeline of at
        most three HINCRBY, not a round trip per job. Counts a write could not store are kept
        for the next flush."""
        ended = self._ended()
        self._trio_bg_counted = trio.Event()
        if not ended:
            return
        pending = dict(ended)
        ended.clear()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                for outcome, count in pending.items():
                    pipe.hincrby(ended_key(self), outcome, count)
        except BaseException:
            ended.update(pending)
            raise


FLUSH_INTERVAL = 0.25
"""Seconds between two writes of a worker's outcome counts (``statistics()`` lags by that)."""


async def flush_outcomes_forever(worker: Worker[Any]) -> None:
    """Write a counting worker's outcomes at most every :data:`FLUSH_INTERVAL` while there are
    any (an idle worker does not wake), until cancelled; a lost Redis keeps them for the next
    try (the worker itself reports the loss)."""
    if not isinstance(worker, CountingWorker):
        return
    while True:
        await worker.counted().wait()
        await trio.sleep(FLUSH_INTERVAL)
        with contextlib.suppress(Exception):  # kept for the next flush
            await worker.flush_outcomes()


async def read_statistics(worker: Worker[Any]) -> QueueStatistics:
    """Read the queue's statistics through ``worker``'s open client (at most four round trips).

    Raises what coredis raises when Redis cannot be reached; no timeout of its own (the caller
    bounds it). Cancellation abandons the reading.
    """
    redis = worker.redis
    streams = [worker.stream_key + p for p in worker.priorities]
    async with redis.pipeline(transaction=False) as pipe:
        exists = [pipe.exists([s]) for s in streams]
        delayed = [pipe.zcard(worker.queue_key + p) for p in worker.priorities]
        ended = pipe.hgetall(ended_key(worker))
        dead_count = pipe.hlen(dead_key(worker))
    present = [s for s, e in zip(streams, exists, strict=True) if await e]
    counts = {str(k): int(v) for k, v in (await ended).items()}
    # The length and the pending count in one transaction, so that depth never goes negative.
    async with redis.pipeline(transaction=True) as pipe:
        lengths = [pipe.xlen(s) for s in present]
        infos = [pipe.xinfo_groups(s) for s in present]
    depth = in_flight = 0
    grouped: list[str] = []
    for stream, length, info in zip(present, lengths, infos, strict=True):
        pending = 0
        for group in await info:
            if group["name"] == REDIS_GROUP:
                pending = int(group["pending"] or 0)
                grouped.append(stream)
        in_flight += pending
        depth += max(0, int(await length) - pending)
    names: set[str] = set()
    if grouped:
        async with redis.pipeline(transaction=False) as pipe:
            consumers = [pipe.xinfo_consumers(s, REDIS_GROUP) for s in grouped]
        for listed in consumers:
            for consumer in await listed:
                names.add(str(consumer["name"]))
    workers = 0
    if names:
        workers = int(await redis.exists([f"{worker.prefix}{REDIS_HEALTH}:{n}" for n in names]))
    return QueueStatistics(
        depth=depth,
        delayed=sum([int(await d) for d in delayed]),
        in_flight=in_flight,
        succeeded=counts.get("succeeded", 0),
        failed=counts.get("failed", 0),
        cancelled=counts.get("cancelled", 0),
        workers=workers,
        dead=int(await dead_count),
    )
