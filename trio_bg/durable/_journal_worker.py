"""JournalWorker: runs a journal queue's jobs in this process (``open_worker``, the CLI).

The loop claims as many runnable jobs as it has free slots in one statement (a batch, leased to
this worker for ``lease_timeout`` seconds), runs each in a task, and stores each outcome; the
journal's thread commits claims and outcomes that arrive together in one transaction. With
nothing to claim it sleeps until something may have changed: an enqueue in this process, a
commit by another process, a freed slot, the next delayed job's time, or a stop.

A heartbeat every ``lease_timeout / 3`` renews this worker's leases, says it is alive (the
``workers`` count), cancels the jobs someone asked to cancel from another process, and
reclaims the jobs of workers whose lease expired (each logged with how long it was held): they
run again, ``attempts`` counting the lost run; past the job's allowed deliveries it fails.

Stopping (the ``stop`` event): no more claims; running jobs get ``grace`` seconds, then they
are cancelled and handed back to the queue (this run not counted), to run again at once.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any, cast, final

import trio

from .._core._progress import reporter, sink
from .._core._text import safe_str
from . import _journal_sql as sql
from ._journal_file import JournalError
from ._progress import ProgressOutbox
from ._serialization import dumps, encode_result, loads, type_name

if TYPE_CHECKING:
    from ._journal import JournalBackend
    from ._journal_sql import Claimed

logger = logging.getLogger("trio_bg.durable")


@final
class _Run:
    """One claimed job running in this worker."""

    __slots__ = ("aborted", "job", "scope")

    def __init__(self, job: Claimed) -> None:
        self.job = job
        self.scope = trio.CancelScope()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True
        self.scope.cancel()


@final
class JournalWorker:
    """See the module docstring."""

    def __init__(self, backend: JournalBackend, *, concurrency: int, grace: float) -> None:
        self._backend = backend
        self._concurrency = concurrency
        self._grace = grace
        self._owner = backend.new_owner_id()
        self._runs: dict[str, _Run] = {}
        self._stopping = False
        self._reserved = 0
        """Slots promised to jobs being enqueued in this process (see :meth:`reserve`)."""
        self._nursery: trio.Nursery | None = None

    @property
    def owner(self) -> str:
        return self._owner

    def reserve(self) -> bool:
        """Promise a free slot to a job this process is enqueuing; False if there is none."""
        if self._stopping or self._nursery is None:
            return False
        if len(self._runs) + self._reserved >= self._concurrency:
            return False
        self._reserved += 1
        return True

    def unreserve(self, count: int) -> None:
        self._reserved -= count

    def take(self, rows: list[sql.NewJob]) -> None:
        """Run jobs written already leased to this worker (their enqueue committed)."""
        self._reserved -= len(rows)
        nursery = self._nursery
        for row in rows:
            job = sql.Claimed(
                id=row.id,
                function=row.function,
                args=loads(row.args),
                attempts=1,
                max_attempts=row.max_attempts,
                created_at=row.created_at,
                started_at=row.created_at,
            )
            if nursery is None or self._stopping:
                self._backend.file.submit(sql.release, [job.id], self._owner)
                continue
            self._start(nursery, job)

    def _start(self, nursery: trio.Nursery, job: Claimed) -> None:
        run = _Run(job)
        self._runs[job.id] = run
        self._backend.local_runs[job.id] = run
        nursery.start_soon(self._run, run)

    async def run(self, stop: trio.Event, *, task_status: trio.TaskStatus[None]) -> None:
        backend = self._backend
        lease = backend.lease_timeout
        logger.info(
            "worker %s for queue %r on %s: concurrency %d",
            self._owner,
            backend.name,
            backend.where,
            self._concurrency,
        )
        await self._heartbeat_once()
        self._outbox = ProgressOutbox(self._write_progress, local=backend.progressed)
        async with trio.open_nursery() as service:
            service.start_soon(self._heartbeat, lease / 3)
            service.start_soon(self._outbox.run)
            service.start_soon(self._stop_on, stop)
            try:
                async with trio.open_nursery() as runs:
                    self._nursery = runs
                    if backend.local_worker is None:
                        backend.local_worker = self
                    task_status.started()
                    await self._claim_loop(runs)
                    self._nursery = None
                    with trio.move_on_after(self._grace):
                        while self._runs:
                            await backend.work_event().wait()
                    for run in self._runs.values():
                        run.scope.cancel()
            finally:
                self._nursery = None
                if backend.local_worker is self:
                    backend.local_worker = None
                service.cancel_scope.cancel()
                with trio.CancelScope(shield=True):
                    await self._leave()

    async def _stop_on(self, stop: trio.Event) -> None:
        await stop.wait()
        self._stopping = True
        self._backend.wake_workers()

    async def _claim_loop(self, runs: trio.Nursery) -> None:
        backend = self._backend
        while not self._stopping:
            woken = backend.work_event()
            free = self._concurrency - len(self._runs) - self._reserved
            due: float | None = None
            if free > 0:
                now = backend.now()
                claimed: list[Claimed]
                try:
                    claimed, due = await backend.file.call(
                        sql.claim,
                        backend.name,
                        self._owner,
                        free,
                        now,
                        now + backend.lease_timeout,
                    )
                except JournalError as exc:
                    logger.warning("worker %s: cannot claim jobs: %s", self._owner, exc)
                    claimed = []
                    await trio.sleep(1.0)
                for job in claimed:
                    self._start(runs, job)
                if len(claimed) == free:
                    continue  # maybe more are waiting
            if self._stopping:
                return
            wait = math.inf if due is None else max(due - backend.now(), 0.0)
            with trio.move_on_after(wait):
                await woken.wait()

    async def _write_progress(self, pending: dict[str, str]) -> None:
        try:
            await self._backend.file.call(sql.set_progress, list(pending.items()))
        except JournalError as exc:
            logger.warning("worker %s: cannot store progress: %s", self._owner, exc)

    async def _run(self, run: _Run) -> None:
        backend = self._backend
        job = run.job
        # This task's own context: report_progress inside the job (and its threads) finds it.
        reporter.set(sink(self._outbox.reporter(job.id)))
        spec = backend.jobs.get(job.function)
        problem = _problem(job, spec is not None)
        if spec is None or problem is not None:
            self._runs.pop(job.id, None)
            backend.local_runs.pop(job.id, None)
            await self._dead(job, problem or "")
            backend.wake_workers()
            return
        state, result, error = "failed", None, None
        retry_at: float | None = None
        try:
            args: list[Any] = job.args
            with run.scope:
                if spec.timeout is not None:
                    with trio.fail_after(spec.timeout):
                        value = await spec.fn(*args)
                else:
                    value = await spec.fn(*args)
                state, result = "succeeded", encode_result(spec.name, value)
            if run.scope.cancelled_caught:
                state = "cancelled" if run.aborted else "released"
        except trio.TooSlowError:
            error_exc: Exception = TimeoutError(
                f"durable job {job.function!r} timed out after {spec.timeout if spec else 0:g} s"
            )
            retry_at, error = self._failure(job, error_exc)
        except Exception as exc:
            retry_at, error = self._failure(job, exc)
        finally:
            self._runs.pop(job.id, None)
            backend.local_runs.pop(job.id, None)
            last = self._outbox.take(job.id)
            if last is not None:  # stored before the outcome (the same or an earlier commit)
                backend.file.submit_many(sql.last_progress, None, (job.id, last))
        if state in ("succeeded", "failed", "cancelled") and retry_at is None:
            self._finish(job, state, result, error)
        else:
            with trio.CancelScope(shield=True):
                await self._store(job, state, result, error, retry_at)
        backend.wake_workers()

    async def _dead(self, job: Claimed, reason: str) -> None:
        """One WARNING line; the row kept in state 'dead' (its handles see it failed)."""
        backend = self._backend
        logger.warning(
            "worker %s: dead letter (job %s): %s; kept in journal %s",
            self._owner, job.id, reason, backend.path,
        )  # fmt: skip
        error = dumps({"type": "DeadLetter", "message": reason})
        now = backend.now()
        backend.finished(_ended(job, "dead", None, error, now))
        with trio.CancelScope(shield=True):
            try:
                await backend.file.call(sql.dead, backend.name, self._owner, job.id, error, now)
            except JournalError as exc:  # its lease runs out: it is claimed and checked again
                logger.warning(
                    "worker %s: cannot keep dead letter %s: %s", self._owner, job.id, exc
                )

    def _failure(self, job: Claimed, exc: Exception) -> tuple[float | None, str]:
        spec = self._backend.jobs.get(job.function)
        error = dumps(
            {"type": type_name(type(exc)), "message": safe_str(exc), "traceback": _traceback(exc)}
        )
        delay = spec.retry_delay(exc, job.attempts) if spec is not None else None
        if delay is None:
            logger.warning(
                "durable job %s (%s) failed: %s: %s",
                job.function, job.id, type(exc).__name__, safe_str(exc),
            )  # fmt: skip
            return None, error
        return self._backend.now() + delay, error

    def _finish(self, job: Claimed, state: str, result: str | None, error: str | None) -> None:
        """Tell the handles of this process, then write the outcome in the next commit group
        without waiting for it: the job has run, and a crash before that commit only runs it
        again, as a crash just before it returned would (at-least-once). A failed write is
        logged by the journal's thread; the lease then expires and the job runs again."""
        backend = self._backend
        now = backend.now()
        backend.finished(_ended(job, state, result, error, now))
        backend.file.submit_many(
            sql.finish_many, (backend.name, self._owner), (job.id, state, result, error, now)
        )

    async def _store(
        self,
        job: Claimed,
        state: str,
        result: str | None,
        error: str | None,
        retry_at: float | None,
    ) -> None:
        backend = self._backend
        try:
            if state == "released":
                await backend.file.call(sql.release, [job.id], self._owner)
            elif retry_at is not None:
                assert error is not None
                await backend.file.call(sql.retry, job.id, self._owner, retry_at, error)
            else:
                self._finish(job, state, result, error)
        except JournalError as exc:
            # Its lease runs out and it runs again: at-least-once.
            logger.error(
                "worker %s: cannot store the outcome of job %s (%s): %s",
                self._owner,
                job.function,
                job.id,
                exc,
            )

    async def _heartbeat(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            await self._heartbeat_once()

    async def _heartbeat_once(self) -> None:
        backend = self._backend
        now = backend.now()
        try:
            cancels: list[str] = await backend.file.call(
                sql.heartbeat, backend.name, self._owner, now, now + backend.lease_timeout
            )
            reclaimed: list[sql.Reclaimed] = await backend.file.call(
                sql.reclaim, backend.name, now, 3 * backend.lease_timeout
            )
        except JournalError as exc:
            logger.warning("worker %s: heartbeat failed: %s", self._owner, exc)
            return
        for job_id in cancels:
            run = self._runs.get(job_id)
            if run is not None:
                run.abort()
        for lost in reclaimed:
            logger.warning(
                "reclaimed job %s (%s) from worker %s, which held it %.1f s (lease expired): %s",
                lost.function,
                lost.id,
                lost.owner,
                lost.held,
                "queued again" if lost.requeued else "no deliveries left, failed",
            )
        if reclaimed:
            backend.wake_workers()

    async def _leave(self) -> None:
        backend = self._backend
        try:
            left = [run.job.id for run in self._runs.values()]
            if left:
                await backend.file.call(sql.release, left, self._owner)
            await backend.file.call(sql.leave, self._owner)
        except (JournalError, RuntimeError) as exc:
            logger.warning("worker %s: cannot leave cleanly: %s", self._owner, exc)


def _problem(job: Claimed, registered: bool) -> str | None:
    """Why a claimed row cannot run (written by something other than trio_bg), or None."""
    if not registered:
        return f"no job named {safe_str(job.function, 200)!r} is registered in this worker"
    if not isinstance(cast(object, job.args), list):
        return "arguments ('args') are not a JSON array"
    return None


def _ended(
    job: Claimed, state: str, result: str | None, error: str | None, now: float
) -> sql.JobRow:
    """The row of a claimed job that ended in ``state`` at ``now``, as its handles read it."""
    return sql.JobRow(
        id=job.id,
        function=job.function,
        state=state,
        attempts=job.attempts,
        result=result,
        error=error,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=now,
    )


def _traceback(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))
