"""The recorder: a process-wide instrument that keeps what a handle does not.

A handle knows its attempts but not when each failed; it lets go of its arguments when it starts;
and nothing counts tasks over time. The recorder keeps those, bounded, for the dashboard: the
retry timeline of each task, the repr of its arguments (only while a dashboard with
``show_args=True`` is open), per-second counts of started and finished tasks for the chart, and
a version number that moves on every transition, with the events of the streams waiting for it.

One recorder serves every :class:`~trio_bg.dashboard.Dashboard` of the process. The first
dashboard constructed installs it with :func:`trio_bg.add_instrument`; the last one closed
removes it. Each hook costs a few dict and deque operations; none of them can raise into the
task (a hook that raised would have its instrument removed).
"""

from __future__ import annotations

import functools
import reprlib
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

import trio

from .._core._instruments import Instrument, add_instrument, remove_instrument
from .._core._text import safe_str

if TYPE_CHECKING:
    from .._core._handle import TaskHandle
    from .._core._manager import TaskManager

KEEP_TASKS = 2000
"""How many tasks' retry timelines and argument reprs are kept (the newest)."""
KEEP_SECONDS = 120
"""How many seconds of per-second counts are kept for the chart."""
REPR_LIMIT = 200
"""Argument and result reprs longer than this are cut, with an ellipsis."""

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlevel = 3


def cut(text: str) -> str:
    """``text``, cut to :data:`REPR_LIMIT` characters with an ellipsis."""
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 3] + "..."


def short_repr(value: object) -> str:
    """A repr of ``value`` of at most :data:`REPR_LIMIT` characters; never raises."""
    try:
        return cut(_repr.repr(value))
    except Exception as exc:  # a broken __repr__ must not break the dashboard
        return f"<repr failed: {type(exc).__name__}>"


def short_str(value: object) -> str:
    """``str(value)`` of at most :data:`REPR_LIMIT` characters, valid UTF-8; never raises."""
    return safe_str(value, REPR_LIMIT)


@dataclass(frozen=True, slots=True)
class Retry:
    """One failed attempt that was retried: when (``time.time()``), with what, and the delay."""

    at: float
    attempt: int
    error: str
    message: str
    delay: float


@final
class Recorder(Instrument):
    """The dashboard's instrument (see the module docstring)."""

    __slots__ = (
        "_args",
        "_counts",
        "_retries",
        "_show_args",
        "_users",
        "_waiters",
        "rejected",
        "version",
    )

    def __init__(self) -> None:
        self._retries: OrderedDict[int, list[Retry]] = OrderedDict()
        self._args: OrderedDict[int, str] = OrderedDict()
        # [second, started, succeeded, failed, cancelled] per wall-clock second, oldest first.
        self._counts: deque[list[int]] = deque(maxlen=KEEP_SECONDS)
        self._waiters: list[trio.Event] = []
        self._users = 0
        self._show_args = 0
        self.rejected = 0
        self.version = 0

    # -- who uses it ---------------------------------------------------------------------------

    def attach(self, *, show_args: bool) -> None:
        """A dashboard opened: install the recorder if it is the first."""
        self._users += 1
        self._show_args += show_args
        if self._users == 1:
            add_instrument(self)

    def detach(self, *, show_args: bool) -> None:
        """A dashboard closed: remove the recorder (and forget everything) if it was the last."""
        self._users -= 1
        self._show_args -= show_args
        if not self._show_args:
            self._args.clear()
        if self._users == 0:
            remove_instrument(self)
            self._retries.clear()
            self._counts.clear()

    # -- what the dashboard reads --------------------------------------------------------------

    def retries(self, n: int) -> list[Retry]:
        return self._retries.get(n, [])

    def args(self, n: int) -> str | None:
        return self._args.get(n)

    def rate(self, now: float, seconds: int = 60) -> list[tuple[int, int, int, int, int]]:
        """Counts per second for the last ``seconds`` seconds, oldest first, zeros filled in:
        ``(second, started, succeeded, failed, cancelled)``."""
        last = int(now)
        by_second = {row[0]: row for row in self._counts}
        points: list[tuple[int, int, int, int, int]] = []
        for second in range(last - seconds + 1, last + 1):
            row = by_second.get(second)
            points.append(
                (second, 0, 0, 0, 0) if row is None else (second, row[1], row[2], row[3], row[4])
            )
        return points

    async def wait_for_change(self, version: int) -> None:
        """Return once :attr:`version` differs from ``version`` (at once if it already does).

        Cancellation stops the wait.
        """
        if self.version != version:
            await trio.lowlevel.checkpoint()
            return
        event = trio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        finally:
            if event in self._waiters:
                self._waiters.remove(event)

    # -- the hooks -------------------------------------------------------------------------------

    def task_created(self, handle: TaskHandle[Any]) -> None:
        self._count(1)
        if self._show_args:
            _keep(self._args, handle.number, _call_repr(handle))
        self._changed()

    def task_started(self, handle: TaskHandle[Any]) -> None:
        self._changed()

    def task_retrying(self, handle: TaskHandle[Any], exc: BaseException, delay: float) -> None:
        retry = Retry(
            at=time.time(),
            attempt=handle.attempts,
            error=type(exc).__name__,
            message=short_str(exc),
            delay=delay,
        )
        timeline = self._retries.get(handle.number)
        if timeline is None:
            _keep(self._retries, handle.number, [retry])
        else:
            timeline.append(retry)
        self._changed()

    def task_progress(self, handle: TaskHandle[Any]) -> None:
        self._changed()  # the page reads handle.progress itself

    def task_finished(self, handle: TaskHandle[Any]) -> None:
        state = handle.state.value
        self._count(2 if state == "succeeded" else 3 if state == "failed" else 4)
        self._changed()

    def task_rejected(self, manager: TaskManager, name: str, reason: str) -> None:
        self.rejected += 1
        self._changed()

    def _count(self, column: int) -> None:
        second = int(time.time())
        counts = self._counts
        if not counts or counts[-1][0] != second:
            counts.append([second, 0, 0, 0, 0])
        counts[-1][column] += 1

    def _changed(self) -> None:
        self.version += 1
        waiters = self._waiters
        if waiters:
            self._waiters = []
            for event in waiters:
                event.set()

    def __repr__(self) -> str:
        return f"<trio_bg.dashboard recorder, {self._users} dashboard(s)>"


def _keep(table: OrderedDict[int, Any], n: int, value: Any) -> None:
    table[n] = value
    if len(table) > KEEP_TASKS:
        table.popitem(last=False)


def _call_repr(handle: TaskHandle[Any]) -> str:
    """``(arg, ...; key=value, ...)`` of a task's call, cut to :data:`REPR_LIMIT` characters."""
    # The handle lets go of the call when the task starts: the dashboard's opt-in show_args
    # reads it here, at creation.
    call = handle.pending_call
    if call is None:
        return "()"
    fn, args = call
    keywords: dict[str, Any] = {}
    while isinstance(fn, functools.partial):  # add_task(fn, *args, **kwargs) and partials
        args = (*fn.args, *args)
        keywords = {**fn.keywords, **keywords}
        fn = fn.func
    parts = [short_repr(a) for a in args] + [f"{k}={short_repr(v)}" for k, v in keywords.items()]
    text = "(" + ", ".join(parts) + ")"
    return text if len(text) <= REPR_LIMIT else text[: REPR_LIMIT - 4] + "...)"


RECORDER = Recorder()
"""The one recorder of the process."""
