"""Lookup across managers: the open managers of the process and its recently finished tasks.

:func:`find_task` answers "where is task-42?" from anywhere in the process: a request can look up
the task another request started, and a dashboard can show any task by its id. Live tasks are
found in the table of the open manager that owns them; finished ones in one process-wide,
bounded history (request managers keep no ``recent`` of their own).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._checks import check_count
from ._instruments import Instrument, on_change

if TYPE_CHECKING:
    from ._handle import TaskHandle
    from ._manager import TaskManager

open_managers: set[TaskManager] = set()
"""Every manager between its opening and the end of its close."""

finished: deque[TaskHandle[Any]] = deque(maxlen=1000)
"""Finished tasks that no open manager keeps, newest last."""


def _instruments_changed(removed: Sequence[Instrument]) -> None:
    """Instruments came or went: take the ``removed`` ones (a hook raised) out of every open
    manager's own set, and rebuild every open manager's hook table."""
    for manager in open_managers:
        own = manager._instruments
        if own is not None:
            for instrument in removed:
                own.discard(instrument)
        manager._refresh_hooks()


on_change(_instruments_changed)


_MAX_DIGITS = 20


def task_number(task_id: object) -> int | None:
    """The number of a ``"task-<n>"`` id, or None for anything else."""
    if type(task_id) is not str or not task_id.startswith("task-"):
        return None
    digits = task_id[5:]
    # Longer than any number a process gives (a 64-bit count has 20 digits): such a string is
    # not an id, and int() of thousands of digits would raise (Python's int-digit limit).
    if not 0 < len(digits) <= _MAX_DIGITS or not (digits.isascii() and digits.isdigit()):
        return None
    if digits[0] == "0":
        return None  # not an id trio_bg gives ("task-07", "task-²", "task-")
    return int(digits)


def find_task(task_id: str) -> TaskHandle[Any] | None:
    """The handle of task ``task_id`` from any manager of this process, or None.

    Finds every PENDING or RUNNING task of every open manager (request managers included), the
    finished tasks each open manager keeps in its ``recent``, and the process-wide history of
    finished tasks (:func:`set_recent_limit`, 1,000 by default): the tasks of managers that keep
    no ``recent`` (request managers) as they finish, and a manager's ``recent`` when it closes.
    Costs one dict lookup per open manager plus a scan of the histories: meant for people and
    dashboards, not for a hot loop.
    """
    n = task_number(task_id)
    if n is None:
        return None
    for manager in open_managers:
        found = manager._find(n)
        if found is not None:
            return found
    history: Iterable[TaskHandle[Any]] = reversed(finished)
    for done in history:
        if done._n == n:
            return done
    return None


def set_recent_limit(limit: int) -> int:
    """Set how many finished tasks, process-wide, :func:`find_task` keeps; return the old limit.

    The newest ``limit`` are kept (0 keeps none). An app manager's own ``recent_limit``
    (``TaskMiddleware(recent_limit=...)``) keeps more of its tasks findable while it is open.

    Raises:
        TypeError, ValueError: ``limit`` is not an int >= 0.
    """
    global finished
    checked = check_count("limit", limit, 0)
    previous = finished.maxlen or 0
    finished = deque(finished, maxlen=checked)
    return previous
