"""DurableHandle: a durable job, seen from the process that enqueued or found it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, cast, final

import outcome

from .._core._state import TaskState
from ._exceptions import QueueUnavailable
from ._job_state import CANCELLED_TYPE as CANCELLED_TYPE
from ._job_state import JobState

if TYPE_CHECKING:
    from .._core._progress import Progress

T_co = TypeVar("T_co", covariant=True)


class JobOwner(Protocol):
    """What a handle shows of its queue: its name."""

    @property
    def name(self) -> str: ...


@final
class DurableHandle(Generic[T_co]):
    """A durable job: its id, where it is, and its result once a worker has stored one.

    Made by :meth:`DurableQueue.enqueue` and :meth:`DurableQueue.enqueue_soon`; it implements
    :class:`trio_bg.TaskHandleLike`. Its ``state`` is what this process last saw: the queue's
    result poller refreshes the state of every unfinished handle that is still referenced: every
    ``poll_interval`` seconds while a task awaits it, about every 20 of those otherwise.
    ``attempts`` counts the worker deliveries (retries, and re-deliveries after a worker died)
    once the job has finished.

    Ids start with ``job-``, so :func:`trio_bg.find_task` never mistakes one for a task of this
    process.
    """

    __slots__ = ("__weakref__", "_job", "_queue")

    def __init__(self, queue: JobOwner, job: JobState) -> None:
        self._queue = queue
        self._job = job

    # -- TaskHandleLike -------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """``job-`` and 32 hex digits; the job's id in Redis, the same in every process."""
        return self._job.id

    @property
    def name(self) -> str:
        """The job's registered name (the function's qualname unless ``@queue.task(name=)``)."""
        return self._job.name

    @property
    def state(self) -> TaskState:
        return self._job.state

    @property
    def created_at(self) -> datetime:
        return self._job.created_at

    @property
    def started_at(self) -> datetime | None:
        return self._job.started_at

    @property
    def finished_at(self) -> datetime | None:
        return self._job.finished_at

    @property
    def attempts(self) -> int:
        return self._job.attempts

    @property
    def done(self) -> bool:
        return self._job.done

    @property
    def outcome(self) -> outcome.Outcome[T_co] | None:
        return cast("outcome.Outcome[T_co] | None", self._job.outcome)

    @property
    def progress(self) -> Progress | None:
        """What the job last reported of how far it is (``trio_bg.report_progress`` in the
        job, on its worker): stored by the worker at most about once a second and read by this
        process's result poller, so it may lag by about a second plus a poll interval. None
        until the job reports anything; kept once the job has finished."""
        return self._job.progress

    @property
    def queue(self) -> JobOwner:
        """The queue the job was enqueued on."""
        return self._queue

    async def get(self) -> T_co:
        """Wait for the job's result; return the worker's value.

        Raises :class:`JobFailed` (naming the remote exception type and message) if the job
        raised on its last attempt, :class:`trio_bg.TaskCancelled` if it was cancelled (or its
        ``enqueue_soon`` never enqueued it), :class:`JobLost` if Redis has neither the job nor
        its result, or :class:`QueueUnavailable` if the queue was closed, or could not enqueue
        it, before that. Any number of tasks may wait on one handle; a result is fetched once
        and kept. Cancelling the caller stops its wait only: the job goes on.
        """
        await self.wait()
        job = self._job
        if job.state is TaskState.SUCCEEDED:
            return cast("outcome.Value[T_co]", job.outcome).value
        error = job.error
        assert error is not None
        raise error

    async def wait(self) -> None:
        """Wait until the job is done, whatever its result (see :meth:`get` for what ends it).

        Cancelling the caller stops its wait only.
        """
        job = self._job
        if job.done:
            return
        publisher = job.publisher
        if publisher is not None and not job.published:
            await publisher.wait()
            if job.done:
                return
        tracker = job.tracker
        tracker.watch(job)
        try:
            await job.wait_done()
        finally:
            tracker.unwatch(job)
        if not job.state.done:
            raise QueueUnavailable(
                f"durable queue {self._queue.name!r} was closed before job {job.id} finished"
            )

    def cancel(self) -> bool:
        """Ask for the job to be aborted; False if it is already done.

        A job not yet enqueued (``enqueue_soon`` before its timing point) is never enqueued and
        ends CANCELLED at once. Otherwise the queue tells the workers (an abort set in Redis):
        a queued or delayed job is dropped, a running one is cancelled within about half a
        second, and the handle ends CANCELLED when the queue sees that.
        """
        job = self._job
        if job.done:
            return False
        if not job.published:
            publisher = job.publisher
            job.finish(TaskState.CANCELLED, None)
            if publisher is not None:
                publisher.cancel()
            return True
        if job.request_cancel():
            job.tracker.abort(job)
        return True

    def __repr__(self) -> str:
        return f"<DurableHandle {self.id} {self.name!r} {self.state.value}>"
