"""JournalBackend: a DurableQueue's jobs in an SQLite file (``sqlite:///jobs.db``), no broker.

The file is written by one thread per open queue (:class:`._journal_file.JournalFile`, group
commit). This module is the trio side: enqueue, the results of the handles of this process,
cancel, statistics, find, pruning finished jobs after ``result_ttl``, and the worker
(:class:`._journal_worker.JournalWorker`).

Results reach a handle two ways: a job finished by a worker **of this process** is handed to
its handle right after the commit (no polling); a job finished by another process is noticed
when the file changes (``PRAGMA data_version``, watched by the file's thread), and the handles
being awaited are read again then (and every 20 ``poll_interval`` anyway).

Times in the file are unix seconds from the queue's clock: wall time when the queue opened
plus trio's clock since (so trio's ``autojump_clock`` moves it in tests).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, cast

import trio

from .._core._state import TaskState
from .._core._text import clean
from . import _journal_sql as sql
from ._dead import MAX_RAW, DeadLetter
from ._exceptions import QueueUnavailable
from ._handle import CANCELLED_TYPE, DurableHandle, JobOwner
from ._job_state import JobState
from ._journal_file import JournalError, JournalFile, describe
from ._journal_sql import JobRow, NewJob
from ._periodic import ScheduleState, Taken, plan, run_periodic, schedule_state
from ._progress import decode_progress
from ._serialization import ERROR_KEY, loads
from ._statistics import QueueStatistics

if TYPE_CHECKING:
    from .._core._progress import Progress
    from ._backend import Publication
    from ._jobs import JobSpec
    from ._journal_worker import JournalWorker
    from ._periodic import PeriodicSpec

logger = logging.getLogger("trio_bg.durable")

_SWEEP_EVERY = 20
"""A slice of the handles nobody awaits is read every this many poll intervals."""
_SWEEP_SLICE = 1000
_PRUNE_BATCH = 2000


def journal_path(url: str) -> str:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    path = url.removeprefix("sqlite:///")
    if not path or path == "/":
        raise ValueError(f"sqlite URL must name a file (sqlite:///jobs.db), got {url!r}")
    return path


class JournalBackend:
    """The journal of one queue (see the module docstring)."""

    def __init__(
        self,
        owner: JobOwner,
        *,
        path: str,
        jobs: Mapping[str, JobSpec],
        synchronous: str,
        lease_timeout: float,
        result_ttl: float,
        poll_interval: float,
        busy_timeout: float,
    ) -> None:
        self._owner = owner
        self.path = path
        self.jobs = jobs
        self._synchronous = synchronous
        self.lease_timeout = lease_timeout
        self._result_ttl = result_ttl
        self._poll_interval = poll_interval
        self._busy_timeout = busy_timeout
        self._file: JournalFile | None = None
        self._stack: AsyncExitStack | None = None
        self._offset = 0.0
        self._handles: weakref.WeakValueDictionary[str, JobState] = weakref.WeakValueDictionary()
        self._awaited: dict[str, int] = {}
        self._changed = trio.Event()
        self._check: set[str] = set()
        """Ids to read in the next round: handles that just started being awaited."""
        self._check_all = False
        """Another process changed the file: read every awaited handle in the next round."""
        self._work = trio.Event()
        """Set when a worker of this process may find a job: an enqueue here, a change of the
        file by another process, a slot freed, a stop."""
        self.local_worker: JournalWorker | None = None
        """The worker running in this process (open_worker, the app's), if any: enqueues here
        hand it jobs directly."""
        self.local_runs: dict[str, Any] = {}
        """Job id -> the run of a worker of this process (to cancel it directly)."""
        self._nursery: trio.Nursery | None = None

    @property
    def where(self) -> str:
        return f"journal {self.path}"

    @property
    def name(self) -> str:
        return self._owner.name

    def now(self) -> float:
        return trio.current_time() + self._offset

    @property
    def file(self) -> JournalFile:
        if self._file is None:
            raise RuntimeError(f"durable queue {self.name!r} is not open")
        return self._file

    def unavailable(self, exc: BaseException, what: str) -> NoReturn:
        """Raise QueueUnavailable naming the cause for a file error; re-raise anything else."""
        if isinstance(exc, JournalError):
            raise QueueUnavailable(
                f"durable queue {self.name!r}: cannot {what}: journal {self.path} {exc.cause} "
                f"({exc.error})"
            ) from exc
        if isinstance(exc, OSError):
            raise QueueUnavailable(
                f"durable queue {self.name!r}: cannot {what}: journal {self.path} "
                f"{describe(exc)} ({exc})"
            ) from exc
        raise exc

    # -- open / close -------------------------------------------------------------------------

    async def open(self) -> None:
        self._offset = time.time() - trio.current_time()
        try:
            # A mkdir, not worth a thread: the directory is local, as SQLite's file must be.
            parent = os.path.dirname(os.path.abspath(self.path))  # noqa: ASYNC240
            os.makedirs(parent, exist_ok=True)
        except OSError as exc:
            self.unavailable(exc, "open")
        journal = JournalFile(
            self.path,
            synchronous=self._synchronous,
            busy_timeout=self._busy_timeout,
            idle_poll=self._poll_interval,
            on_change=self._file_changed,
        )
        try:
            await journal.open()
        except BaseException as exc:
            self.unavailable(exc, "open")
        stack = AsyncExitStack()
        stack.push_async_callback(journal.close)
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        self._file = journal
        self._stack = stack
        self._nursery = nursery
        nursery.start_soon(self._follow_results)
        nursery.start_soon(self._prune)

    async def close(self) -> None:
        stack, self._stack, self._nursery = self._stack, None, None
        handles = list(self._handles.values())
        self._handles.clear()
        self._awaited.clear()
        for handle in handles:
            handle.closed()
        if stack is not None:
            await stack.aclose()
        self._file = None

    # -- enqueue ------------------------------------------------------------------------------

    async def publish(self, jobs: Sequence[Publication]) -> list[int | None]:
        """Write the jobs in the next commit group. A job without key or delay goes straight to
        a worker of this process that has a free slot: written already leased to it, handed
        over after the commit (one round trip to the thread saved)."""
        now = self.now()
        rows: list[NewJob] = []
        taker = self.local_worker
        handed: list[NewJob] = []
        for job in jobs:
            owner: str | None = None
            if taker is not None and not job.key and not job.delay and taker.reserve():
                owner = taker.owner
            row = NewJob(
                id=job.job.id,
                function=job.spec.name,
                args=job.encoded_args,
                run_at=now + job.delay if job.delay else now,
                key=job.key,
                created_at=now,
                max_attempts=job.spec.max_deliveries,
                lease_owner=owner,
                lease_expires=None if owner is None else now + self.lease_timeout,
            )
            rows.append(row)
            if owner is not None:
                handed.append(row)
        inserted: list[bool] = []
        try:
            # Shielded: a cancelled caller must not leave a handle that does not know whether
            # its job was written (the write is one transaction either way).
            with trio.CancelScope(shield=True):
                inserted = await self.file.call_many(sql.insert_many, self.name, rows)
        except BaseException as exc:
            if taker is not None:
                taker.unreserve(len(handed))
            self.unavailable(exc, "enqueue")
        if taker is not None and handed:
            taker.take(handed)
        self._work.set()
        stamp = _ms(now)
        return [stamp if new else None for new in inserted]

    # -- results ------------------------------------------------------------------------------

    def watch(self, handle: JobState) -> None:
        if self._file is None:
            handle.closed()
            return
        self._handles[handle.id] = handle
        self._awaited[handle.id] = self._awaited.get(handle.id, 0) + 1
        if handle.id not in self.local_runs:  # else this process's worker will tell it
            self._check.add(handle.id)
            self._changed.set()

    def unwatch(self, handle: JobState) -> None:
        waiters = self._awaited.get(handle.id, 0) - 1
        if waiters > 0:
            self._awaited[handle.id] = waiters
        else:
            self._awaited.pop(handle.id, None)

    def follow(self, handle: JobState) -> None:
        if self._file is not None:
            self._handles[handle.id] = handle

    def abort(self, handle: JobState) -> None:
        if self._nursery is None:
            handle.closed()
            return
        self._handles[handle.id] = handle
        run = self.local_runs.get(handle.id)
        if run is not None:
            run.abort()
            return
        self._nursery.start_soon(self._send_abort, handle)

    async def _send_abort(self, handle: JobState) -> None:
        try:
            outcome = await self.file.call(sql.cancel, self.name, handle.id, self.now())
        except (JournalError, RuntimeError):
            logger.exception("durable queue %r: cannot cancel job %s", self.name, handle.id)
            return
        if outcome == "cancelled":
            handle.finish(TaskState.CANCELLED, None)
        self._changed.set()

    def finished(self, row: JobRow) -> None:
        """A worker of this process stored ``row``'s outcome (committed): tell its handle."""
        handle = self._handles.get(row.id)
        if handle is not None:
            self._apply(handle, row)

    def _file_changed(self) -> None:
        self._check_all = True
        self._changed.set()
        self._work.set()

    def wake_workers(self) -> None:
        self._work.set()

    def work_event(self) -> trio.Event:
        """A fresh event that the next reason to look for work sets."""
        self._work = trio.Event()
        return self._work

    async def _follow_results(self) -> None:
        """Read the rows of the handles that need it: one that just started being awaited; every
        awaited one after another process changed the file; and, every 20 poll intervals, a
        slice of at most :data:`_SWEEP_SLICE` of the others, in turn (their ``state``)."""
        sweep_every = self._poll_interval * _SWEEP_EVERY
        next_sweep = trio.current_time() + sweep_every
        swept: list[str] = []
        while True:
            with trio.move_on_at(next_sweep):
                await self._changed.wait()
            self._changed = trio.Event()
            if self._check_all:
                ids = [i for i in self._awaited if i in self._handles]
            else:
                ids = [i for i in self._check if i in self._handles]
            self._check.clear()
            self._check_all = False
            if trio.current_time() >= next_sweep:
                next_sweep = trio.current_time() + sweep_every
                if not swept:
                    swept = list(self._handles.keys())
                ids += swept[-_SWEEP_SLICE:]
                del swept[-_SWEEP_SLICE:]
            if not ids:
                continue
            try:
                rows: list[JobRow] = await self.file.call(sql.read, self.name, ids)
            except JournalError as exc:
                logger.warning("durable queue %r: cannot read results: %s", self.name, exc)
                await trio.sleep(max(self._poll_interval, 0.5))
                continue
            found = {row.id for row in rows}
            for row in rows:
                handle = self._handles.get(row.id)
                if handle is not None:
                    self._apply(handle, row)
            for job_id in ids:
                if job_id not in found:
                    handle = self._handles.pop(job_id, None)
                    if handle is not None and handle.published:
                        handle.seen_missing()

    def progressed(self, job_id: str, progress: Progress) -> None:
        """A worker of this process heard job ``job_id`` report ``progress``."""
        handle = self._handles.get(job_id)
        if handle is not None:
            handle.seen_running()  # it reports: it runs
            handle.seen_progress(progress)

    def _apply(self, handle: JobState, row: JobRow) -> None:
        progress = decode_progress(row.progress)
        if progress is not None:
            handle.seen_progress(progress)
        if row.state == "running":
            handle.seen_running()
            return
        if row.state == "queued":
            return
        record: dict[str, Any] = {
            "s": row.state == "succeeded",
            "t": row.attempts,
            "st": _ms(row.started_at),
            "ft": _ms(row.finished_at),
            "ct": _ms(row.created_at),
        }
        if row.state == "succeeded":
            record["r"] = loads(row.result) if row.result is not None else None
        elif row.state == "cancelled":
            record["r"] = {ERROR_KEY: {"type": CANCELLED_TYPE, "message": "cancelled"}}
        else:
            record["r"] = {ERROR_KEY: loads(row.error) if row.error else {}}
        if handle.accepts(record):
            handle.seen_result(record)
            self._handles.pop(row.id, None)

    # -- find, statistics, pruning ------------------------------------------------------------

    async def find(self, job_id: str) -> DurableHandle[Any] | None:
        try:
            rows: list[JobRow] = await self.file.call(sql.read, self.name, [job_id])
        except BaseException as exc:
            self.unavailable(exc, "find a job")
        if not rows:
            return None
        row = rows[0]
        job = JobState(
            job_id=row.id, name=row.function, enqueue_ms=_ms(row.created_at), tracker=self
        )
        job.published_now()
        self._apply(job, row)
        if not job.done:
            self._handles[job.id] = job
        return DurableHandle(self._owner, job)

    async def running_ids(self, limit: int) -> list[str]:
        try:
            rows: list[JobRow] = await self.file.call(sql.running, self.name, limit)
        except BaseException as exc:
            self.unavailable(exc, "read the running jobs")
        return [row.id for row in rows]

    async def schedules(self) -> list[ScheduleState]:
        try:
            taken: dict[str, tuple[float, str | None]] = await self.file.call(
                sql.schedules, self.name
            )
        except BaseException as exc:
            self.unavailable(exc, "read the schedules")
        now = self.now()
        states: list[ScheduleState] = []
        for spec in self.jobs.values():
            if spec.periodic is not None:
                last, job = taken.get(spec.name, (None, None))
                states.append(schedule_state(spec.name, spec.periodic, now, last, job))
        return states

    async def dead_letters(self) -> list[DeadLetter]:
        try:
            rows = await self.file.call(sql.dead_letters, self.name)
        except BaseException as exc:
            self.unavailable(exc, "read the dead letters")
        letters: list[DeadLetter] = []
        for job_id, function, args, error, at in rows:
            reason: object = None
            if error is not None:
                try:
                    decoded: object = loads(error)
                except ValueError:
                    decoded = None
                if isinstance(decoded, dict):
                    reason = cast("dict[str, object]", decoded).get("message")
            raw = json.dumps({"function": function, "args": args}, ensure_ascii=False)
            letters.append(
                DeadLetter(
                    id=job_id,
                    job=job_id,
                    reason=reason if isinstance(reason, str) else "",
                    raw=clean(raw, MAX_RAW),
                    at=datetime.fromtimestamp(at, UTC),
                )
            )
        return letters

    async def requeue_dead(self, letter_id: str) -> bool:
        try:
            requeued: bool = await self.file.call(
                sql.requeue_dead, self.name, letter_id, self.now()
            )
        except BaseException as exc:
            self.unavailable(exc, "requeue a dead letter")
        if requeued:
            self.wake_workers()
        return requeued

    async def discard_dead(self, letter_id: str) -> bool:
        try:
            discarded: bool = await self.file.call(sql.discard_dead, self.name, letter_id)
        except BaseException as exc:
            self.unavailable(exc, "discard a dead letter")
        return discarded

    async def statistics(self) -> QueueStatistics:
        now = self.now()
        try:
            counts: dict[str, int] = await self.file.call(
                sql.statistics, self.name, now, now - self.lease_timeout
            )
        except BaseException as exc:
            self.unavailable(exc, "read statistics")
        return QueueStatistics(**counts)

    async def _prune(self) -> None:
        """Delete jobs finished more than ``result_ttl`` ago, a batch at a time."""
        interval = min(max(self._result_ttl / 10, 0.5), 60.0)
        while True:
            try:
                deleted: int = await self.file.call(
                    sql.prune, self.name, self.now() - self._result_ttl, _PRUNE_BATCH
                )
            except JournalError as exc:
                logger.warning("durable queue %r: cannot prune: %s", self.name, exc)
                deleted = 0
            if deleted < _PRUNE_BATCH:
                await trio.sleep(interval)

    # -- workers ------------------------------------------------------------------------------

    async def run_worker(
        self,
        *,
        concurrency: int,
        grace: float,
        stop: trio.Event,
        task_status: trio.TaskStatus[None],
    ) -> None:
        from ._journal_worker import JournalWorker

        worker = JournalWorker(self, concurrency=concurrency, grace=grace)
        async with trio.open_nursery() as schedulers:
            for spec in self.jobs.values():
                if spec.periodic is not None:
                    schedulers.start_soon(
                        functools.partial(
                            run_periodic,
                            queue=self.name,
                            job=spec.name,
                            spec=spec.periodic,
                            now=self.now,
                            take=self.take_instants,
                        )
                    )
            await worker.run(stop, task_status=task_status)
            schedulers.cancel_scope.cancel()

    async def take_instants(self, job: str, spec: PeriodicSpec, now: float) -> Taken:
        """A periodic job's atomic step (see :mod:`._periodic`), in one commit group."""
        job_spec = self.jobs[job]
        taken: Taken = await self.file.call(
            sql.take_instants,
            self.name,
            job,
            job_spec.max_deliveries,
            functools.partial(plan, spec, now=now),
            spec.overlap == "skip",
            now,
        )
        if taken.enqueued:
            self._work.set()  # a worker of this process may take them at once
        return taken

    def new_owner_id(self) -> str:
        return f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _ms(seconds: float | None) -> int | None:
    # Truncated, as the claim's CAST(created_at * 1000 AS INTEGER): both must agree exactly.
    return None if seconds is None else int(seconds * 1000)
