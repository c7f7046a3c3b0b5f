"""DurableHandle: a durable job, seen from the process that enqueued or found it."""

from __future__ import annotations

# The durable package's internals (queue, handle, journal, workers) share private state among
# themselves, as the core's modules do: a handle's updates come from its queue's backends.
# pyright: reportPrivateUsage=false
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast, final

import outcome
import trio

from .._core._exceptions import TaskCancelled
from .._core._state import TaskState
from ._exceptions import JobFailed, JobLost, QueueUnavailable
from ._serialization import ERROR_KEY

if TYPE_CHECKING:
    from .._core._handle import TaskHandle
    from .._core._progress import Progress

T_co = TypeVar("T_co", covariant=True)

CANCELLED_TYPE = "streaq.types.StreaqCancelled"
"""The exception type streaq stores for a job aborted by ``cancel()``."""


class JobOwner(Protocol):
    """What a handle needs of its queue: its name, and its backend's result tracking."""

    @property
    def name(self) -> str: ...

    def _watch(self, handle: DurableHandle[Any]) -> None:
        """A task starts waiting on ``handle``: find its result as soon as there is one."""

    def _unwatch(self, handle: DurableHandle[Any]) -> None:
        """A wait on ``handle`` ended (however it ended)."""

    def _abort(self, handle: DurableHandle[Any]) -> None:
        """Ask the backend to abort ``handle``'s job."""


def _from_ms(ms: object) -> datetime | None:
    if isinstance(ms, int | float) and ms > 0:
        return datetime.fromtimestamp(ms / 1000, UTC)
    return None


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

    __slots__ = (
        "__weakref__",
        "_attempts",
        "_cancel_requested",
        "_created_at",
        "_done_event",
        "_enqueue_ms",
        "_error",
        "_finished_at",
        "_id",
        "_name",
        "_outcome",
        "_progress",
        "_published",
        "_publisher",
        "_queue",
        "_started_at",
        "_state",
    )

    def __init__(
        self,
        queue: JobOwner,
        *,
        job_id: str,
        name: str,
        enqueue_ms: int | None,
    ) -> None:
        self._queue = queue
        self._id = job_id
        self._name = name
        self._enqueue_ms = enqueue_ms
        """The enqueue time written into the job: a result is this job's if it carries it.
        None for a handle to a job someone else enqueued (a ``key`` that was already active)."""
        self._state = TaskState.PENDING
        self._created_at = datetime.now(UTC)
        self._started_at: datetime | None = None
        self._finished_at: datetime | None = None
        self._attempts = 0
        self._outcome: outcome.Outcome[T_co] | None = None
        self._error: BaseException | None = None
        self._done_event = trio.Event()
        self._publisher: TaskHandle[None] | None = None
        """The in-process task that will enqueue the job (``enqueue_soon``), until it did."""
        self._published = False
        self._cancel_requested = False
        self._progress: Progress | None = None

    # -- TaskHandleLike -------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """``job-`` and 32 hex digits; the job's id in Redis, the same in every process."""
        return self._id

    @property
    def name(self) -> str:
        """The job's registered name (the function's qualname unless ``@queue.task(name=)``)."""
        return self._name

    @property
    def state(self) -> TaskState:
        if self._publisher is not None and not self._published and self._publisher.done:
            self._settle_unpublished()
        return self._state

    @property
    def created_at(self) -> datetime:
        return self._created_at

    @property
    def started_at(self) -> datetime | None:
        return self._started_at

    @property
    def finished_at(self) -> datetime | None:
        return self._finished_at

    @property
    def attempts(self) -> int:
        return self._attempts

    @property
    def done(self) -> bool:
        return self.state.done

    @property
    def outcome(self) -> outcome.Outcome[T_co] | None:
        return self._outcome

    @property
    def progress(self) -> Progress | None:
        """What the job last reported of how far it is (``trio_bg.report_progress`` in the
        job, on its worker): stored by the worker at most about once a second and read by this
        process's result poller, so it may lag by about a second plus a poll interval. None
        until the job reports anything; kept once the job has finished."""
        return self._progress

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
        if self._state is TaskState.SUCCEEDED:
            return cast("outcome.Value[T_co]", self._outcome).value
        assert self._error is not None
        raise self._error

    async def wait(self) -> None:
        """Wait until the job is done, whatever its result (see :meth:`get` for what ends it).

        Cancelling the caller stops its wait only.
        """
        if self.done:
            return
        publisher = self._publisher
        if publisher is not None and not self._published:
            await publisher.wait()
            if self.state.done:
                return
        owner = self._queue
        owner._watch(self)
        try:
            await self._done_event.wait()
        finally:
            owner._unwatch(self)
        if not self._state.done:
            raise QueueUnavailable(
                f"durable queue {self._queue.name!r} was closed before job {self._id} finished"
            )

    def cancel(self) -> bool:
        """Ask for the job to be aborted; False if it is already done.

        A job not yet enqueued (``enqueue_soon`` before its timing point) is never enqueued and
        ends CANCELLED at once. Otherwise the queue tells the workers (an abort set in Redis):
        a queued or delayed job is dropped, a running one is cancelled within about half a
        second, and the handle ends CANCELLED when the queue sees that.
        """
        if self.done:
            return False
        if not self._published:
            self._finish(TaskState.CANCELLED, None)
            if self._publisher is not None:
                self._publisher.cancel()
            return True
        if not self._cancel_requested:
            self._cancel_requested = True
            self._queue._abort(self)
        return True

    # -- updates (called by the queue and its result poller only) --------------------------------

    def _publishing(self, publisher: TaskHandle[None]) -> None:
        """The in-process task that enqueues this job once its timing point comes."""
        self._publisher = publisher

    def _published_at(self, enqueue_ms: int | None) -> None:
        """The job is in the store, enqueued at ``enqueue_ms`` (None: its key named a job still
        active, which this handle follows)."""
        self._enqueue_ms = enqueue_ms
        self._published_now()

    def _published_now(self) -> None:
        self._published = True
        self._publisher = None

    def _settle_unpublished(self) -> None:
        """The in-process task that was to enqueue the job is done, and it did not."""
        publisher = self._publisher
        self._publisher = None
        if self._state.done or publisher is None:
            return
        result = publisher.outcome
        if isinstance(result, outcome.Error) and not isinstance(result.error, trio.Cancelled):
            self._finish(TaskState.FAILED, cast("Exception", result.error))
        else:
            self._finish(TaskState.CANCELLED, None)

    def _seen_progress(self, progress: Progress) -> None:
        current = self._progress
        if current is None or progress.at >= current.at:  # reports may arrive out of order
            self._progress = progress

    def _seen_running(self) -> None:
        if self._state is TaskState.PENDING:
            self._state = TaskState.RUNNING
            self._started_at = datetime.now(UTC)

    def _accepts(self, record: dict[str, Any]) -> bool:
        """Whether a stored result is this job's run (not an earlier run under the same key)."""
        created = record.get("ct")
        return self._enqueue_ms is None or not created or created == self._enqueue_ms

    def _seen_result(self, record: dict[str, Any]) -> None:
        """A worker stored the job's result: ``{"s": success, "r": value, "st", "ft", "t"...}``."""
        if self.done:
            return
        self._attempts = int(record.get("t") or 0)
        self._started_at = _from_ms(record.get("st")) or self._started_at
        finished_at = _from_ms(record.get("ft"))
        if record.get("s"):
            self._outcome = outcome.Value(cast("T_co", record.get("r")))
            self._finish(TaskState.SUCCEEDED, None, finished_at)
            return
        error: object = record.get("r")
        detail: dict[str, Any] = {"message": str(error)}
        if isinstance(error, dict):
            detail = cast("dict[str, Any]", error).get(ERROR_KEY) or {}
        remote_type = str(detail.get("type", "Exception"))
        message = str(detail.get("message", ""))
        if remote_type == CANCELLED_TYPE:
            self._finish(TaskState.CANCELLED, None, finished_at)
            return
        failure = JobFailed(self._name, remote_type, message, str(detail.get("traceback", "")))
        self._finish(TaskState.FAILED, failure, finished_at)

    def _seen_missing(self) -> None:
        """The store (Redis or the journal) has neither the job nor its result."""
        if self._cancel_requested:
            self._finish(TaskState.CANCELLED, None)
        else:
            self._finish(
                TaskState.FAILED,
                JobLost(
                    f"job {self._name!r} ({self._id}) is gone from the queue's store: its "
                    "result expired (result_ttl) or the store lost it"
                ),
            )

    def _finish(
        self, state: TaskState, error: Exception | None, finished_at: datetime | None = None
    ) -> None:
        if self._state.done:
            return
        self._state = state
        self._finished_at = finished_at or datetime.now(UTC)
        if state is TaskState.CANCELLED:
            error = TaskCancelled(f"durable job {self._name!r} ({self._id}) was cancelled")
        if error is not None:
            self._error = error
            self._outcome = outcome.Error(error)
        self._done_event.set()

    def _closed(self) -> None:
        """The queue closed: wake the waiters (they raise QueueUnavailable)."""
        self._done_event.set()

    def __repr__(self) -> str:
        return f"<DurableHandle {self._id} {self._name!r} {self.state.value}>"
