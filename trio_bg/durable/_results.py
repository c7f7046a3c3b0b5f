"""ResultPoller: one task per open queue that finds the results of every waited-on job.

streaq's own ``Task.result()`` opens a pub/sub subscription per call (about 100 ms each to close,
and 100 concurrent calls exhaust the pool and hang). The poller replaces it: every unfinished
handle of the process is in one table (weakly: a handle nobody holds is not polled), and one
loop asks Redis about all of them in one pipeline per round (MGET of the result keys, SMISMEMBER
of the running set), then wakes the waiters of the jobs that finished. A round runs at once when
a handle starts being waited on (a finished job answers in one round trip) and otherwise every
``poll_interval`` seconds while any handle is unfinished; with none, the loop sleeps.

Aborts requested by ``handle.cancel()`` are sent by the same loop (SADD to streaq's abort set;
a delayed job is also taken off the delayed queue and its data deleted).
"""

from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any, cast

import trio

from .._state import TaskState
from ._connection import is_connection_failure

if TYPE_CHECKING:
    from streaq import Worker

    from ._handle import DurableHandle

logger = logging.getLogger("trio_bg.durable")

_CHUNK = 1000
"""Jobs per pipeline round trip."""
_MISSING_EVERY = 20
"""Check that unfinished jobs still exist (EXISTS on their data) every this many rounds."""


class ResultPoller:
    """The result poller of one open queue (see the module docstring)."""

    def __init__(self, *, queue_name: str, poll_interval: float) -> None:
        self._queue_name = queue_name
        self._poll_interval = poll_interval
        self._handles: weakref.WeakValueDictionary[str, DurableHandle[Any]] = (
            weakref.WeakValueDictionary()
        )
        self._aborts: list[DurableHandle[Any]] = []
        self._wake = trio.Event()
        self._rounds = 0
        self._closed = False

    @property
    def watched(self) -> int:
        """How many unfinished handles the poller follows."""
        return len(self._handles)

    def watch(self, handle: DurableHandle[Any]) -> None:
        """Follow ``handle`` (idempotent) and poll at once."""
        if self._closed:
            handle._closed()
            return
        self._handles[handle.id] = handle
        self._wake.set()

    def follow(self, handle: DurableHandle[Any]) -> None:
        """Follow ``handle`` from the next round on (an enqueue: no round at once)."""
        if not self._closed:
            self._handles[handle.id] = handle
            if len(self._handles) == 1:
                self._wake.set()

    def abort(self, handle: DurableHandle[Any]) -> None:
        """Send an abort for ``handle``'s job in the next round."""
        self._aborts.append(handle)
        self.watch(handle)

    def close(self) -> None:
        """Stop following; wake every waiter (they raise QueueUnavailable)."""
        self._closed = True
        handles = list(self._handles.values())
        self._handles.clear()
        for handle in handles:
            handle._closed()

    async def run(self, worker: Worker[Any]) -> None:
        """Poll until cancelled (the queue's close). A Redis error is logged (once per outage)
        and the round is tried again after ``poll_interval`` (at least 0.5 s); waiters keep
        waiting. Cancellation ends the loop at its next checkpoint."""
        failing = False
        while True:
            if not self._handles and not self._aborts:
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                await self._round(worker)
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
            with trio.move_on_after(self._poll_interval):
                await self._wake.wait()

    async def _round(self, worker: Worker[Any]) -> None:
        if self._aborts:
            aborts = list(self._aborts)
            await _send_aborts(worker, aborts)
            del self._aborts[: len(aborts)]
        self._rounds += 1
        check_missing = self._rounds % _MISSING_EVERY == 0
        handles = [h for h in self._handles.values() if not h._state.done]
        for start in range(0, len(handles), _CHUNK):
            await self._poll(worker, handles[start : start + _CHUNK], check_missing)

    async def _poll(
        self, worker: Worker[Any], handles: list[DurableHandle[Any]], check_missing: bool
    ) -> None:
        ids = [h.id for h in handles]
        async with worker.redis.pipeline(transaction=False) as pipe:
            results = pipe.mget([worker.results_key + i for i in ids])
            running = pipe.smismember(worker._running_set, ids)
            exists = [pipe.exists([worker.task_key + i]) for i in ids] if check_missing else []
        raw_results = await results
        is_running = await running
        present = [await e for e in exists]
        for index, (handle, raw) in enumerate(zip(handles, raw_results, strict=True)):
            if raw is not None:
                decoded: object = await worker.deserialize(raw)
                record = cast("dict[str, Any]", decoded) if isinstance(decoded, dict) else None
                if record is not None and handle._accepts(record):
                    handle._seen_result(record)
                    self._handles.pop(handle.id, None)
                    continue
            if is_running[index]:
                handle._seen_running()
            elif present and not present[index] and raw is None:
                handle._seen_missing()
                self._handles.pop(handle.id, None)


async def _send_aborts(worker: Worker[Any], handles: list[DurableHandle[Any]]) -> None:
    """Abort the jobs: SADD to the abort set (a worker cancels a running job within about
    0.5 s, or drops a queued one when it reaches it); a delayed job is removed at once."""
    ids = [h.id for h in handles]
    async with worker.redis.pipeline(transaction=True) as pipe:
        pipe.sadd(worker._abort_key, ids)
        removed = [[pipe.zrem(worker.queue_key + p, [i]) for p in worker.priorities] for i in ids]
    gone: list[str] = []
    for job_id, per_priority in zip(ids, removed, strict=True):
        if any([await r for r in per_priority]):
            gone.append(job_id)
    if gone:
        async with worker.redis.pipeline(transaction=True) as pipe:
            pipe.delete([worker.task_key + i for i in gone])
            pipe.srem(worker._abort_key, gone)
        for handle in handles:
            if handle.id in gone:
                handle._finish(TaskState.CANCELLED, None)
