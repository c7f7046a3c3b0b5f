"""Where a running task is waiting: the innermost frame of its coroutine's ``await`` chain.

Nothing is recorded on the task path for this. A manager's nursery holds one trio task per RUNNING
handle, whose coroutine is ``trio_bg._core._runner.run_task(manager, handle)``: the handle is read
from that coroutine's frame locals, and the chain of ``cr_await`` (``gi_yieldfrom`` for generator-
based awaitables, ``ag_await`` for async generators) leads from it to the frame that is suspended
now. The answer is the innermost frame outside trio and trio_bg's core: the line of the user's code
that awaits (``trio.sleep``, a socket read, a lock). Whoever asks pays for it (the dashboard, the
log of a close or of ``serve`` that names stuck tasks), never the task.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

import outcome
import trio

from . import _runner

if TYPE_CHECKING:
    from ._manager import TaskManager

_RUN_TASK = _runner.run_task.__code__
_SKIPPED_DIRS = tuple(
    os.path.dirname(module.__file__) + os.sep for module in (trio, outcome) if module.__file__
)
_CORE_DIR = os.path.dirname(__file__)  # trio_bg's own modules, not its subpackages
MAX_FRAMES = 30
"""The longest ``await`` chain followed."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame of the chain: its function, file and current line."""

    function: str
    file: str
    line: int


def task_coroutines(manager: TaskManager) -> dict[int, Any]:
    """The coroutine running each RUNNING task of ``manager``, by task number."""
    nursery = manager._nursery
    if nursery is None:
        return {}
    found: dict[int, Any] = {}
    for task in nursery.child_tasks:
        coro: Any = task.coro
        frame: FrameType | None = getattr(coro, "cr_frame", None)
        if frame is None or frame.f_code is not _RUN_TASK:
            continue
        handle = frame.f_locals.get("handle")
        number = getattr(handle, "_n", None)
        if type(number) is int:
            found[number] = coro
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
    group's wait); the innermost of all if every frame is theirs (a sync function waiting in a
    worker thread)."""
    for frame in reversed(frames):
        if not _skipped(frame.file):
            return frame
    return frames[-1] if frames else None


def chain_text(coro: Any) -> str:
    """Where ``coro`` waits, for a log line: ``job (app.py:12) -> sleep (trio/_timeouts.py:98)``.

    The frames outside trio, outcome and trio_bg's core, outermost first, then the trio function
    the innermost of them called (``sleep``, a lock's ``acquire``); for a chain with no such frame
    (a sync function in its worker thread), the first frame outside trio_bg's core. ``""`` when
    the chain is empty.
    """
    frames = await_chain(coro)
    mine = [n for n, frame in enumerate(frames) if not _skipped(frame.file)]
    if mine:
        shown = [frames[n] for n in mine]
        shown.extend(frames[mine[-1] + 1 : mine[-1] + 2])
    else:
        outside = [frame for frame in frames if os.path.dirname(frame.file) != _CORE_DIR]
        shown = (outside or frames)[:1]
    return " -> ".join(f"{frame.function} ({frame.file}:{frame.line})" for frame in shown)
