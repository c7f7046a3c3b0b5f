"""Backend: where a DurableQueue keeps its jobs. Redis (streaq) and the journal (SQLite).

:class:`~trio_bg.durable.DurableQueue` checks, registers and makes handles once; everything that
touches the store goes through this small interface, picked by the URL. The worker side
(claim, lease, complete, retry, reclaim) lives behind :meth:`Backend.run_worker`: the journal's
loop is :class:`~._journal_worker.JournalWorker`; Redis runs streaq's worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import trio

    from ._dead import DeadLetter
    from ._handle import DurableHandle
    from ._job_state import JobState
    from ._jobs import JobSpec
    from ._periodic import PeriodicSpec, ScheduleState, Taken
    from ._statistics import QueueStatistics


@dataclass(frozen=True, slots=True)
class Publication:
    """One job to enqueue: its PENDING state, what runs, and when."""

    job: JobState
    spec: JobSpec
    args: tuple[Any, ...]
    encoded_args: str
    """``args`` as a JSON array (checked once, at enqueue)."""
    delay: float | None
    key: str | None


class Backend(Protocol):
    """The store of one queue (see the module docstring)."""

    @property
    def where(self) -> str:
        """Where the jobs are, for messages: ``Redis at redis://…`` or ``journal /path``."""
        ...

    async def open(self) -> None:
        """Connect and start the result tracking; :class:`QueueUnavailable` if it cannot."""
        ...

    async def close(self) -> None:
        """Stop the result tracking (waiters raise QueueUnavailable) and disconnect."""
        ...

    async def publish(self, jobs: Sequence[Publication]) -> list[int | None]:
        """Enqueue the jobs in one atomic write; per job the enqueue time written into it (ms),
        or None if its key named a job still active (the handle then follows that one)."""
        ...

    def watch(self, job: JobState, /) -> None: ...
    def unwatch(self, job: JobState, /) -> None: ...
    def follow(self, job: JobState, /) -> None: ...
    def abort(self, job: JobState, /) -> None: ...

    async def statistics(self) -> QueueStatistics: ...

    async def dead_letters(self) -> list[DeadLetter]:
        """The messages workers could not run and kept, oldest first."""
        ...

    async def requeue_dead(self, letter_id: str) -> bool:
        """Queue a dead letter's job again and delete the letter; False if there is none."""
        ...

    async def discard_dead(self, letter_id: str) -> bool:
        """Delete a dead letter; False if there is none."""
        ...

    async def running_ids(self, limit: int) -> list[str]:
        """The ids of up to ``limit`` jobs running now."""
        ...

    async def schedules(self) -> list[ScheduleState]:
        """Each periodic job's state in the store."""
        ...

    async def take_instants(self, job: str, spec: PeriodicSpec, now: float) -> Taken:
        """A periodic job's atomic step at ``now`` (see :mod:`._periodic`): read the last
        instant taken, plan, enqueue the jobs (ids from the instants), record the newest
        instant, all or nothing; a process that comes second takes nothing. The schedulers
        beside :meth:`run_worker` call it at each instant. Cancelled mid-way, it took nothing
        or all (the store's transaction decides)."""
        ...

    async def find(self, job_id: str) -> DurableHandle[Any] | None:
        """A handle for a job the store still knows (``job_id`` already checked), or None."""
        ...

    async def run_worker(
        self,
        *,
        concurrency: int,
        grace: float,
        stop: trio.Event,
        task_status: trio.TaskStatus[None],
    ) -> None:
        """Run this queue's registered jobs in this process until ``stop`` is set, then give
        running jobs ``grace`` seconds before cancelling them (they run again elsewhere)."""
        ...
