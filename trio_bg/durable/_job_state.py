"""JobState: what this process knows of one durable job, and the one place that changes it.

A :class:`~trio_bg.durable.DurableHandle` is the public, read-only view of a JobState. The queue
makes both at an enqueue (a backend, at a ``find_job``); the queue and its backend (the result
poller and listener on Redis, the journal's watcher) report what they learn through the
transitions here: published, seen running, a progress report, a stored result, gone, cancelled,
the queue closed. Nothing else writes a job's fields (``tests/test_import_layers.py``).

The backends follow job states, not handles, and hold them weakly: the handle holds its state,
so a state nobody's handle holds is dropped and no longer asked about.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, cast, final

import outcome
import trio

from .._core._exceptions import TaskCancelled
from .._core._state import TaskState
from ._exceptions import JobFailed, JobLost
from ._serialization import ERROR_KEY

if TYPE_CHECKING:
    from .._core._handle import TaskHandle
    from .._core._progress import Progress

CANCELLED_TYPE = "streaq.types.StreaqCancelled"
"""The exception type streaq stores for a job aborted by ``cancel()``."""


class JobTracker(Protocol):
    """What a job's waits and cancels ask of its queue's backend."""

    def watch(self, job: JobState, /) -> None:
        """A task starts waiting on ``job``: find its result as soon as there is one."""

    def unwatch(self, job: JobState, /) -> None:
        """A wait on ``job`` ended (however it ended)."""

    def abort(self, job: JobState, /) -> None:
        """Abort ``job`` in the store."""


def _from_ms(ms: object) -> datetime | None:
    if isinstance(ms, int | float) and ms > 0:
        return datetime.fromtimestamp(ms / 1000, UTC)
    return None


@final
class JobState:
    """One durable job as this process knows it (see the module docstring)."""

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
        "_started_at",
        "_state",
        "tracker",
    )

    def __init__(
        self, *, job_id: str, name: str, enqueue_ms: int | None, tracker: JobTracker
    ) -> None:
        self._id = job_id
        self._name = name
        self._enqueue_ms = enqueue_ms
        """The enqueue time written into the job: a result is this job's if it carries it.
        None for a job someone else enqueued (a ``key`` that was already active)."""
        self.tracker = tracker
        """The backend that watches the job for this process (set once, here)."""
        self._state = TaskState.PENDING
        self._created_at = datetime.now(UTC)
        self._started_at: datetime | None = None
        self._finished_at: datetime | None = None
        self._attempts = 0
        self._outcome: outcome.Outcome[Any] | None = None
        self._error: BaseException | None = None
        self._done_event = trio.Event()
        self._publisher: TaskHandle[None] | None = None
        """The in-process task that will enqueue the job (``enqueue_soon``), until it did."""
        self._published = False
        self._cancel_requested = False
        self._progress: Progress | None = None

    # -- reading ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def name(self) -> str:
        return self._name

    @property
    def state(self) -> TaskState:
        """The state, once the in-process enqueue task (if any) has been accounted for."""
        publisher = self._publisher
        if publisher is not None and not self._published and publisher.done:
            self.settle_unpublished()
        return self._state

    @property
    def done(self) -> bool:
        return self.state.done

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
    def outcome(self) -> outcome.Outcome[Any] | None:
        return self._outcome

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def progress(self) -> Progress | None:
        return self._progress

    @property
    def published(self) -> bool:
        """The job is in the store (enqueued, or followed through its key, or found)."""
        return self._published

    @property
    def publisher(self) -> TaskHandle[None] | None:
        """The in-process task that will enqueue the job, until it did."""
        return self._publisher

    async def wait_done(self) -> None:
        """Until the job is done or the queue closed. Cancellation ends the wait only."""
        await self._done_event.wait()

    # -- transitions (the queue and its backend report here) ---------------------------------

    def publishing(self, publisher: TaskHandle[None]) -> None:
        """The in-process task that enqueues this job once its timing point comes."""
        self._publisher = publisher

    def published_at(self, enqueue_ms: int | None) -> None:
        """The job is in the store, enqueued at ``enqueue_ms`` (None: its key named a job still
        active, which this one follows)."""
        self._enqueue_ms = enqueue_ms
        self.published_now()

    def published_now(self) -> None:
        self._published = True
        self._publisher = None

    def settle_unpublished(self) -> None:
        """The in-process task that was to enqueue the job is done, and it did not."""
        publisher = self._publisher
        self._publisher = None
        if self._state.done or publisher is None:
            return
        result = publisher.outcome
        if isinstance(result, outcome.Error) and not isinstance(result.error, trio.Cancelled):
            self.finish(TaskState.FAILED, cast("Exception", result.error))
        else:
            self.finish(TaskState.CANCELLED, None)

    def request_cancel(self) -> bool:
        """Note that ``cancel()`` was asked for; True the first time."""
        if self._cancel_requested:
            return False
        self._cancel_requested = True
        return True

    def seen_progress(self, progress: Progress) -> None:
        current = self._progress
        if current is None or progress.at >= current.at:  # reports may arrive out of order
            self._progress = progress

    def seen_running(self) -> None:
        if self._state is TaskState.PENDING:
            self._state = TaskState.RUNNING
            self._started_at = datetime.now(UTC)

    def accepts(self, record: dict[str, Any]) -> bool:
        """Whether a stored result is this job's run (not an earlier run under the same key)."""
        created = record.get("ct")
        return self._enqueue_ms is None or not created or created == self._enqueue_ms

    def seen_result(self, record: dict[str, Any]) -> None:
        """A worker stored the job's result: ``{"s": success, "r": value, "st", "ft", "t"...}``."""
        if self.done:
            return
        self._attempts = int(record.get("t") or 0)
        self._started_at = _from_ms(record.get("st")) or self._started_at
        finished_at = _from_ms(record.get("ft"))
        if record.get("s"):
            self._outcome = outcome.Value(record.get("r"))
            self.finish(TaskState.SUCCEEDED, None, finished_at)
            return
        error: object = record.get("r")
        detail: dict[str, Any] = {"message": str(error)}
        if isinstance(error, dict):
            detail = cast("dict[str, Any]", error).get(ERROR_KEY) or {}
        remote_type = str(detail.get("type", "Exception"))
        message = str(detail.get("message", ""))
        if remote_type == CANCELLED_TYPE:
            self.finish(TaskState.CANCELLED, None, finished_at)
            return
        failure = JobFailed(self._name, remote_type, message, str(detail.get("traceback", "")))
        self.finish(TaskState.FAILED, failure, finished_at)

    def seen_missing(self) -> None:
        """The store (Redis or the journal) has neither the job nor its result."""
        if self._cancel_requested:
            self.finish(TaskState.CANCELLED, None)
        else:
            self.finish(
                TaskState.FAILED,
                JobLost(
                    f"job {self._name!r} ({self._id}) is gone from the queue's store: its "
                    "result expired (result_ttl) or the store lost it"
                ),
            )

    def finish(
        self, state: TaskState, error: Exception | None, finished_at: datetime | None = None
    ) -> None:
        """The job ended in ``state`` (once: later calls change nothing)."""
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

    def closed(self) -> None:
        """The queue closed: wake the waiters (they raise QueueUnavailable)."""
        self._done_event.set()
