"""Where a running task is waiting: the innermost frame of its coroutine's ``await`` chain.

:meth:`TaskManager.wait_points <trio_bg.TaskManager.wait_points>` gives a :class:`WaitPoint` per
RUNNING task: the public view that the dashboard, the close's and ``serve``'s stuck lines and
users' own tools read. Nothing is recorded on the task path for this. A manager's nursery holds
one trio task per RUNNING handle, whose coroutine is ``run_task(manager, handle)`` of
:mod:`trio_bg._core._runner`: the handle is read from that coroutine's frame locals, and the
chain of ``cr_await`` (``gi_yieldfrom`` for generator-based awaitables, ``ag_await`` for async
generators) leads from it to the frame that is suspended now. The answer is the innermost frame
outside trio and trio_bg's core: the line of the user's code that awaits (``trio.sleep``, a
socket read, a lock). Whoever asks pays for it, never the task.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, final

import outcome
import trio

from . import _runner, _threads
from ._callables import callable_name

_RUN_TASK = _runner.run_task.__code__
_BACKOFF = _runner._backoff.__code__
_IN_THREAD = _threads.run_in_thread.__code__
_SKIPPED_DIRS = tuple(
    os.path.dirname(module.__file__) + os.sep for module in (trio, outcome) if module.__file__
)
_CORE_DIR = os.path.dirname(__file__)  # trio_bg's own modules, not its subpackages
MAX_FRAMES = 30
"""The longest ``await`` chain followed."""


@final
@dataclass(frozen=True, slots=True)
class WaitFrame:
    """One frame of a task's ``await`` chain: its function, file and current line."""

    function: str
    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.function} ({self.file}:{self.line})"


Frame = WaitFrame  # the name this module's functions use


@dataclass(frozen=True, slots=True)
class Waiting:
    """A wait with no line of the task's own code in it: what it is, and the frame to show (the
    sync function's definition for a worker thread, else None)."""

    text: str
    frame: Frame | None


@final
@dataclass(frozen=True, slots=True)
class WaitPoint:
    """Where one RUNNING task waits now (read when asked; the task path records nothing).

    Attributes:
        stack: the frames of its ``await`` chain, outermost first (its runner's included).
        at: the line to show: the innermost frame of the task's own code (outside trio,
            outcome and trio_bg's core), or a sync function's definition while it runs in a
            worker thread; None if the chain is empty.
        waiting: a wait with no line of the task's code: ``"in a worker thread: fn"``,
            ``"waiting for a worker thread: fn"``, ``"retry backoff, next attempt in 1.2 s"``;
            else None.
        text: all of it in one line, for logs: ``job (app.py:12) -> sleep (trio/_timeouts.py:98)``.
    """

    stack: tuple[WaitFrame, ...]
    at: WaitFrame | None
    waiting: str | None
    text: str


def wait_points(nursery: trio.Nursery | None) -> dict[int, WaitPoint]:
    """Where each RUNNING task in a manager's ``nursery`` waits, by task number."""
    points: dict[int, WaitPoint] = {}
    for number, coro in task_coroutines(nursery).items():
        frames = await_chain(coro)
        waiting = waiting_for(coro)
        at = waiting_at(frames) if waiting is None else waiting.frame
        points[number] = WaitPoint(
            tuple(frames), at, None if waiting is None else waiting.text, chain_text(coro)
        )
    return points


def handle_of(task: trio.lowlevel.Task) -> Any:
    """The handle a trio task runs, if it is a trio_bg task's (its coroutine is the runner's),
    else None."""
    frame: FrameType | None = getattr(task.coro, "cr_frame", None)
    if frame is not None and frame.f_code is _RUN_TASK:
        return frame.f_locals.get("handle")
    return None


def lineage(task: trio.lowlevel.Task) -> Iterator[trio.lowlevel.Task]:
    """``task`` and its ancestors through the nurseries between them, nearest first."""
    current: trio.lowlevel.Task | None = task
    while current is not None:
        yield current
        nursery = current.parent_nursery
        current = None if nursery is None else nursery.parent_task


def task_coroutines(nursery: trio.Nursery | None) -> dict[int, Any]:
    """The coroutine running each RUNNING task in a manager's ``nursery``, by task number."""
    if nursery is None:
        return {}
    found: dict[int, Any] = {}
    for task in nursery.child_tasks:
        number = getattr(handle_of(task), "_n", None)
        if type(number) is int:
            found[number] = task.coro
    return found


def await_chain(coro: Any) -> list[Frame]:
    """The frames from ``coro`` to the one suspended now, outermost first."""
    frames: list[Frame] = []
    current: Any = coro
    while current is not None and len(frames) < MAX_FRAMES:
        frame: FrameType | None = (
            getattr(current, "cr_frame", None)
            or getattr(current, "gi_frame", None)
            or getattr(current, "ag_frame", None)
        )
        if frame is not None:
            code = frame.f_code
            frames.append(Frame(code.co_qualname, code.co_filename, frame.f_lineno))
        current = (
            getattr(current, "cr_await", None)
            or getattr(current, "gi_yieldfrom", None)
            or getattr(current, "ag_await", None)
        )
    return frames


@functools.lru_cache(maxsize=1024)
def _skipped(file: str) -> bool:
    return os.path.dirname(file) == _CORE_DIR or file.startswith(_SKIPPED_DIRS)


def waiting_at(frames: list[Frame]) -> Frame | None:
    """The innermost frame outside trio, outcome and trio_bg's core modules (the runner, a
    group's wait); if every frame is theirs (the task's function is trio's own, such as
    ``trio.sleep``), the task's function: the first frame outside trio_bg's core."""
    for frame in reversed(frames):
        if not _skipped(frame.file):
            return frame
    for frame in frames:
        if os.path.dirname(frame.file) != _CORE_DIR:
            return frame
    return frames[-1] if frames else None


def waiting_for(coro: Any) -> Waiting | None:
    """What ``coro`` waits for if it is a worker thread or a retry backoff, else None.

    ``"in a worker thread: fn"`` (the sync function runs; ``frame`` is its definition), ``"waiting
    for a worker thread: fn"`` (the thread limiter has no token free), ``"retry backoff, next
    attempt in 1.2 s"`` (on trio's clock). Reads the locals of trio_bg's own frames only.
    """
    current: Any = coro
    for _ in range(MAX_FRAMES):
        frame: FrameType | None = getattr(current, "cr_frame", None)
        if frame is None:
            return None
        code = frame.f_code
        if code is _BACKOFF:
            deadline = frame.f_locals.get("deadline")
            if isinstance(deadline, float):
                left = max(0.0, deadline - trio.current_time())
                return Waiting(f"retry backoff, next attempt in {left:.1f} s", None)
            return None
        if code is _IN_THREAD:
            fn = frame.f_locals.get("fn")
            borrow = frame.f_locals.get("borrow")
            name = callable_name(fn) if callable(fn) else "?"
            if borrow is not None and not getattr(borrow, "holding", True):
                return Waiting(f"waiting for a worker thread: {name}", _defined_at(fn))
            return Waiting(f"in a worker thread: {name}", _defined_at(fn))
        current = getattr(current, "cr_await", None)
    return None


def _defined_at(fn: Any) -> Frame | None:
    """Where a sync function is defined (unwrapping ``functools.partial``), or None."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    code = getattr(fn, "__code__", None)
    if not isinstance(code, CodeType):
        return None
    return Frame(code.co_qualname, code.co_filename, code.co_firstlineno)


def chain_text(coro: Any) -> str:
    """Where ``coro`` waits, for a log line: ``job (app.py:12) -> sleep (trio/_timeouts.py:98)``.

    The frames outside trio, outcome and trio_bg's core, outermost first, then the trio function
    the innermost of them called (``sleep``, a lock's ``acquire``); a worker thread or a retry
    backoff as :func:`waiting_for` names it (``in a worker thread: export (app.py:3)``); for a
    chain with no such frame, the first frame outside trio_bg's core. ``""`` when the chain is
    empty.
    """
    waiting = waiting_for(coro)
    if waiting is not None:
        at = waiting.frame
        return waiting.text + ("" if at is None else f" ({at.file}:{at.line})")
    frames = await_chain(coro)
    mine = [n for n, frame in enumerate(frames) if not _skipped(frame.file)]
    if mine:
        shown = [frames[n] for n in mine]
        shown.extend(frames[mine[-1] + 1 : mine[-1] + 2])
    else:
        outside = [frame for frame in frames if os.path.dirname(frame.file) != _CORE_DIR]
        shown = (outside or frames)[:1]
    return " -> ".join(f"{frame.function} ({frame.file}:{frame.line})" for frame in shown)
