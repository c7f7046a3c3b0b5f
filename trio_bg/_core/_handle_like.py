"""TaskHandleLike: the read-only surface every kind of task handle offers."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import outcome

    from ._state import TaskState

T_co = TypeVar("T_co", covariant=True)


@runtime_checkable
class TaskHandleLike(Protocol[T_co]):
    """What code that only watches or awaits a task may rely on, whoever runs the task.

    :class:`trio_bg.TaskHandle` (a task of this process) implements it, and so do other kinds of
    handle, such as a durable job's: write helpers, dashboards and tests against this Protocol
    and they work with either.
    """

    @property
    def id(self) -> str:
        """Unique among the tasks of its kind."""
        ...

    @property
    def name(self) -> str: ...

    @property
    def state(self) -> TaskState: ...

    @property
    def created_at(self) -> datetime: ...

    @property
    def started_at(self) -> datetime | None: ...

    @property
    def finished_at(self) -> datetime | None: ...

    @property
    def attempts(self) -> int: ...

    @property
    def done(self) -> bool: ...

    @property
    def outcome(self) -> outcome.Outcome[T_co] | None: ...

    async def get(self) -> T_co:
        """Wait for the task; return its value, raise its exception, or raise
        :class:`trio_bg.TaskCancelled`. Cancelling the caller stops the wait only."""
        ...

    async def wait(self) -> None:
        """Wait until the task is done, whatever its result."""
        ...

    def cancel(self) -> bool:
        """Ask for the task to be cancelled; False if it was already done."""
        ...
