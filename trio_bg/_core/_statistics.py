"""The values a manager reports about itself: its counters, and what its close did."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from ._text import quoted

if TYPE_CHECKING:
    from ._handle_like import TaskHandleLike


@final
@dataclass(frozen=True, slots=True)
class TaskStatistics:
    """Counters of a manager at one moment.

    ``started == pending + running + succeeded + failed + cancelled`` always holds. ``rejected``
    counts refused starts, for which no handle exists.
    """

    started: int
    pending: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    rejected: int


@final
@dataclass(frozen=True, slots=True)
class CloseDeadlines:
    """A closing manager's deadlines, on trio's clock (``trio.current_time()``), as
    :meth:`TaskManager.close_deadlines <trio_bg.TaskManager.close_deadlines>` gives them."""

    started: float
    """When the close began."""
    grace: float
    """When its unshielded tasks are cancelled: the end of the grace period (the time it was
    read, once the grace period is over)."""
    cap: float
    """When its shielded tasks are cancelled (``inf``: not capped)."""


@final
@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What a manager's close did: how long it took and which tasks it had to cancel."""

    manager: str
    duration: float
    """Seconds from the start of the close to its end (on trio's clock)."""
    cancelled: tuple[TaskHandleLike[Any], ...]
    """Every task cancelled by the shutdown (or an outer cancellation), oldest first (each a
    :class:`~trio_bg.TaskHandle`, typed by what every handle has so that the report, a value,
    does not name the handle module)."""

    def __str__(self) -> str:
        if not self.cancelled:
            return (
                f"task manager {quoted(self.manager)} closed in {self.duration:.3f} s; "
                "no task dropped"
            )
        names = ", ".join(f"{quoted(h.name)} ({h.id})" for h in self.cancelled)
        return (
            f"task manager {quoted(self.manager)} closed in {self.duration:.3f} s; "
            f"{len(self.cancelled)} task(s) cancelled by the shutdown: {names}"
        )
