"""ResultPoller: one task per open queue that finds the results of every waited-on job.

Results are **pushed**: streaq publishes each stored result on its channel, in the pipeline
that stores it, and :meth:`ResultPoller.listen` (one pattern subscription per queue) applies it
to its job state at once. The polling rounds are the fallback (a message lost with a connection),
and what refreshes the ``state`` of unfinished jobs and notices lost jobs.

streaq's own ``Task.result()`` opens a pub/sub subscription per call (about 100 ms each to close,
and 100 concurrent calls exhaust the pool and hang). Instead every unfinished job of the
process is in one table (its ``JobState``, weakly: a job no handle holds is not polled), and
one loop asks Redis about them in one pipeline per round (MGET of the result keys and progress
keys, SMISMEMBER of the running set), then wakes the waiters of the jobs that finished.

What a round asks about: every job that somebody is **awaiting** (``get()``/``wait()``), and
a slice of the others, so that each of those is asked about once every :data:`SWEEP_ROUNDS`
rounds. Rounds run every ``poll_interval`` seconds while any job is awaited (at once when a
wait begins: a finished job answers in one round trip); while none is, one round every
``SWEEP_ROUNDS`` intervals asks about all of them (the same pace per job, and no round per
enqueue for an app that drops its handles). A lost job (Redis has neither it nor its result) is
noticed within 20 rounds if awaited, 400 otherwise; with none, the loop sleeps.

Aborts requested by ``handle.cancel()`` are sent by the same loop (SADD to streaq's abort set;
a delayed job is also taken off the delayed queue and its data deleted).
"""

from __future__ import annotations

import logging
import math
import weakref
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, cast

import trio

from .._core._state import TaskState
from ._connection import is_connection_failure
from ._keys import abort_key, channel_prefix, running_set
from ._progress import decode_progress, progress_key
from ._serialization import loads

if TYPE_CHECKING:
    from streaq import Worker

    from ._job_state import JobState

logger = logging.getLogger("trio_bg.durable")

_EARLY = 256
"""Published results kept for jobs not followed yet (a fast job, or another process's)."""
_CHUNK = 1000
"""Jobs per pipeline round trip."""
SWEEP_ROUNDS = 20
"""A job nobody awaits is asked about once every this many rounds (a slice of them per round),
an awaited one every round. Every this many rounds, a round also asks whether the jobs it asks
about still exist (EXISTS on their data): every 20 rounds for an awaited job, every 400 for
the others."""


class ResultPoller:
    """The result poller of one open queue (see the module docstring)."""

    def __init__(self, *, queue_name: str, poll_interval: float) -> None:
        self._queue_name = queue_name
        self._poll_interval = poll_interval
        self._followed: weakref.WeakValueDictionary[str, JobState] = weakref.WeakValueDictionary()
        self._awaited: dict[str, int] = {}
        """Job id -> how many tasks are in ``wait()`` on it now."""
        self._aborts: list[JobState] = []
        self._early: OrderedDict[str, object] = OrderedDict()
        """Results published for jobs not followed (yet): the newest :data:`_EARLY`."""
        self._wake = trio.Event()
        self._sweep_at = 0
        """Where the next slice of the jobs nobody awaits starts."""
        self._sweeps = 0
        """Passes begun over the jobs nobody awaits."""
        self._rounds = 0
        self._closed = False
        self._empty = False
        """The loop waits for a first job to follow (a follow wakes it only then)."""

    @property
    def watched(self) -> int:
        """How many unfinished jobs the poller follows."""
        return len(self._followed)

    @property
    def awaited(self) -> int:
        """How many of them somebody is waiting on."""
        return len(self._awaited)

    def watch(self, job: JobState) -> None:
        """A task starts waiting on ``job``: ask about it every round, and poll at once.

        Pair every call with :meth:`unwatch` when the wait ends (however it ends).
        """
        if self._closed:
            job.closed()
            return
        self._followed[job.id] = job
        self._awaited[job.id] = self._awaited.get(job.id, 0) + 1
        self._wake.set()

    def unwatch(self, job: JobState) -> None:
        """A wait on ``job`` ended: once nobody waits, it is only swept."""
        waiters = self._awaited.get(job.id, 0) - 1
        if waiters > 0:
            self._awaited[job.id] = waiters
        else:
            self._awaited.pop(job.id, None)

    def follow(self, job: JobState) -> None:
        """Follow ``job`` from the next round on (an enqueue: no round at once)."""
        early = self._early.pop(job.id, None)
        if not self._closed:
            self._followed[job.id] = job
            if self._empty:
                self._wake.set()
            if early is not None:  # its result was published before the enqueue returned
                self._apply(job, early)

    def abort(self, job: JobState) -> None:
        """Send an abort for ``job``'s job in a round at once."""
        if self._closed:
            job.closed()
            return
        self._aborts.append(job)
        self._followed[job.id] = job
        self._wake.set()

    def close(self) -> None:
        """Stop following; wake every waiter (they raise QueueUnavailable)."""
        self._closed = True
        jobs = list(self._followed.values())
        self._followed.clear()
        self._awaited.clear()
        for job in jobs:
            job.closed()

    async def run(self, worker: Worker[Any]) -> None:
        """Poll until cancelled (the queue's close). A Redis error is logged (once per outage)
        and the round is tried again after ``poll_interval`` (at least 0.5 s); waiters keep
        waiting. Cancellation ends the loop at its next checkpoint."""
        failing = False
        while True:
            if not self._followed and not self._aborts:
                self._empty = True
                await self._wake.wait()
                self._empty = False
                if not self._awaited and not self._aborts:
                    # A first job followed, nobody waits: its result comes pushed, and the
                    # fallback round comes at the idle pace, not at once (an app that enqueues
                    # and drops each job would pay a round per enqueue).
                    self._wake = trio.Event()
                    with trio.move_on_after(self._poll_interval * SWEEP_ROUNDS):
                        await self._wake.wait()
            whole = not self._awaited and not self._aborts
            self._wake = trio.Event()
            try:
                await self._round(worker, whole=whole)
            except (Exception, BaseExceptionGroup) as exc:
                if not is_connection_failure(exc):
                    logger.exception("durable queue %r: result poller error", self._queue_name)
                elif not failing:
                    logger.warning(
                        "durable queue %r: cannot reach Redis to poll results (%s); retrying",
                        self._queue_name,
                        exc,
                    )
                failing = True
                await trio.sleep(max(self._poll_interval, 0.5))
                continue
            if failing:
                logger.info("durable queue %r: Redis reachable again", self._queue_name)
                failing = False
            # Nobody waits: results come pushed (listen), so a round every poll interval would
            # only repeat what the sweep does; one round asks about every followed job once
            # per SWEEP_ROUNDS intervals instead (the same pace per job, not 20 small rounds:
            # an app that enqueues and drops its handles pays no round per enqueue).
            idle = not self._awaited and not self._aborts
            with trio.move_on_after(self._poll_interval * (SWEEP_ROUNDS if idle else 1)):
                await self._wake.wait()

    async def listen(self, worker: Worker[Any]) -> None:
        """Take results as workers store them: streaq publishes each stored result on its
        channel (``streaq:<queue>:channel:<job id>``) in the same pipeline that stores it, so
        one pattern subscription per queue wakes a waiter at once, with no round of its own.
        The polling rounds stay, as the fallback (a message lost with a connection, a result
        stored while the subscription was down). A lost connection is retried after
        ``poll_interval`` (at least 0.5 s); cancellation ends the listener."""
        prefix: str = channel_prefix(worker)
        while True:
            try:
                async with worker.redis.pubsub(
                    patterns=[prefix + "*"], ignore_subscribe_messages=True
                ) as pubsub:
                    async for message in pubsub:
                        await self._pushed(worker, prefix, message)
            except Exception as exc:
                if not is_connection_failure(exc):
                    logger.exception("durable queue %r: result listener error", self._queue_name)
            await trio.sleep(max(self._poll_interval, 0.5))

    async def _pushed(self, worker: Worker[Any], prefix: str, message: object) -> None:
        """One published result: apply it to its job, if this process follows that job."""
        if not isinstance(message, dict):
            return
        fields = cast("dict[str, object]", message)
        channel = fields.get("channel")
        if not isinstance(channel, str | bytes):
            return
        job_id = (channel.decode() if isinstance(channel, bytes) else channel).removeprefix(prefix)
        job = self._followed.get(job_id)
        data = fields.get("data")
        if job is None:
            # Another process's job (left undecoded), or a fast job that finished before its
            # enqueue returned and its job was followed: keep the newest a moment.
            self._early[job_id] = data
            if len(self._early) > _EARLY:
                self._early.popitem(last=False)
            return
        if not job.done:
            self._apply(job, data)

    def _apply(self, job: JobState, data: object) -> None:
        """A published result for ``job``: ``data`` as streaq stored it (JSON)."""
        try:
            decoded: object = loads(cast("str | bytes", data))
        except (TypeError, ValueError):  # not a result this code can read: the poller will look
            return
        if isinstance(decoded, dict):
            record = cast("dict[str, Any]", decoded)
            if job.accepts(record):
                job.seen_result(record)
                self._followed.pop(job.id, None)

    async def _round(self, worker: Worker[Any], *, whole: bool = False) -> None:
        if self._aborts:
            aborts = list(self._aborts)
            await _send_aborts(worker, aborts)
            del self._aborts[: len(aborts)]
        self._rounds += 1
        check_missing = self._rounds % SWEEP_ROUNDS == 0
        awaited: list[JobState] = []
        others: list[JobState] = []
        for job in self._followed.values():
            if not job.done:
                (awaited if job.id in self._awaited else others).append(job)
        if whole:  # nobody waits: every followed job, once (see run)
            self._sweeps += 1
            swept, check_swept = others, self._sweeps % SWEEP_ROUNDS == 0
        else:
            swept, check_swept = self._sweep(others)
        for start in range(0, len(awaited), _CHUNK):
            await self._poll(worker, awaited[start : start + _CHUNK], check_missing)
        for start in range(0, len(swept), _CHUNK):
            await self._poll(worker, swept[start : start + _CHUNK], check_swept)

    def _sweep(self, others: list[JobState]) -> tuple[list[JobState], bool]:
        """The next slice of the jobs nobody awaits (each comes up about every
        SWEEP_ROUNDS rounds), and whether to check that their jobs exist (every SWEEP_ROUNDS
        passes over them all)."""
        if not others:
            self._sweep_at = 0
            return [], False
        size = math.ceil(len(others) / SWEEP_ROUNDS)
        start = self._sweep_at
        if start >= len(others):
            start = 0
        if start == 0:
            self._sweeps += 1
        self._sweep_at = start + size
        return others[start : start + size], self._sweeps % SWEEP_ROUNDS == 0

    async def _poll(self, worker: Worker[Any], jobs: list[JobState], check_missing: bool) -> None:
        ids = [h.id for h in jobs]
        # One transaction: a job that finishes between the MGET and the EXISTS of a pipeline
        # would otherwise look lost (no result read, no data left).
        async with worker.redis.pipeline(transaction=True) as pipe:
            results = pipe.mget([worker.results_key + i for i in ids])
            reported = pipe.mget([progress_key(worker, i) for i in ids])
            running = pipe.smismember(running_set(worker), ids)
            exists = [pipe.exists([worker.task_key + i]) for i in ids] if check_missing else []
        raw_results = await results
        raw_progress = await reported
        is_running = await running
        present = [await e for e in exists]
        for index, (job, raw) in enumerate(zip(jobs, raw_results, strict=True)):
            progress = decode_progress(raw_progress[index])
            if progress is not None:
                job.seen_progress(progress)
            if raw is not None:
                decoded: object = await worker.deserialize(raw)
                record = cast("dict[str, Any]", decoded) if isinstance(decoded, dict) else None
                if record is not None and job.accepts(record):
                    job.seen_result(record)
                    self._followed.pop(job.id, None)
                    continue
            if is_running[index]:
                job.seen_running()
            elif present and not present[index] and raw is None:
                job.seen_missing()
                self._followed.pop(job.id, None)


async def _send_aborts(worker: Worker[Any], jobs: list[JobState]) -> None:
    """Abort the jobs: SADD to the abort set (a worker cancels a running job within about
    0.5 s, or drops a queued one when it reaches it); a delayed job is removed at once."""
    ids = [h.id for h in jobs]
    async with worker.redis.pipeline(transaction=True) as pipe:
        pipe.sadd(abort_key(worker), ids)
        removed = [[pipe.zrem(worker.queue_key + p, [i]) for p in worker.priorities] for i in ids]
    gone: list[str] = []
    for job_id, per_priority in zip(ids, removed, strict=True):
        if any([await r for r in per_priority]):
            gone.append(job_id)
    if gone:
        async with worker.redis.pipeline(transaction=True) as pipe:
            pipe.delete([worker.task_key + i for i in gone])
            pipe.srem(abort_key(worker), gone)
        for job in jobs:
            if job.id in gone:
                job.finish(TaskState.CANCELLED, None)
