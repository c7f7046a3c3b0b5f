"""The pytest fixtures of the plugin: ``task_manager`` and ``task_recorder``.

``task_manager`` is an async fixture: it needs pytest-trio, and a test that runs under trio
(``trio_mode = true`` in the pytest configuration, or ``@pytest.mark.trio``).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar, final

import pytest

from .._core._handle import TaskHandle
from .._core._instruments import Instrument, add_instrument, remove_instrument
from .._core._manager import TaskManager, open_task_manager
from .._core._statistics import TaskStatistics

F = TypeVar("F", bound=Callable[..., Any])


def _run_in_trio(func: F) -> F:
    # What pytest_trio.trio_fixture does, without importing pytest-trio (pytest imports every
    # installed plugin, and trio-bg does not require pytest-trio): the mark makes pytest-trio run
    # the fixture in the test's trio run, with or without trio_mode.
    func._force_trio_fixture = True  # type: ignore[attr-defined]
    return func


def check_accounting(stats: TaskStatistics) -> None:
    """Fail unless every started task is in exactly one state.

    Raises:
        AssertionError: ``started != pending + running + succeeded + failed + cancelled``.
    """
    total = stats.pending + stats.running + stats.succeeded + stats.failed + stats.cancelled
    if stats.started != total:
        raise AssertionError(
            f"started ({stats.started}) != pending + running + succeeded + failed + cancelled "
            f"({total}): {stats}"
        )


@asynccontextmanager
async def checked_task_manager(name: str = "test") -> AsyncGenerator[TaskManager, None]:
    """``open_task_manager(name=name)``, then a check of its counters once it has closed.

    The close is the usual one (a 5 s grace period, then the unshielded tasks are cancelled).

    Raises:
        AssertionError: after the close, the accounting invariant does not hold, or a task is
            still PENDING or RUNNING.
    """
    async with open_task_manager(name=name) as manager:
        yield manager
    stats = manager.statistics()
    check_accounting(stats)
    if stats.pending or stats.running:
        raise AssertionError(f"tasks still active after the close: {stats}")


@pytest.fixture
@_run_in_trio
async def task_manager() -> AsyncGenerator[TaskManager, None]:
    """An open trio_bg task manager named ``"test"``, closed after the test, with its counters
    checked then (:func:`checked_task_manager`)."""
    async with checked_task_manager() as manager:
        yield manager


@final
class TaskRecorder(Instrument):
    """A process-wide instrument that keeps every task created and finished during a test."""

    def __init__(self) -> None:
        self.created: list[TaskHandle[object]] = []
        """Every task created, in order."""
        self.finished: list[TaskHandle[object]] = []
        """Every task that reached a terminal state, in the order they did."""

    def task_created(self, handle: TaskHandle[object]) -> None:
        self.created.append(handle)

    def task_finished(self, handle: TaskHandle[object]) -> None:
        self.finished.append(handle)

    def named(self, name: str) -> list[TaskHandle[object]]:
        """The finished tasks called ``name``, in the order they finished."""
        return [handle for handle in self.finished if handle.name == name]


@pytest.fixture
def task_recorder() -> Iterator[TaskRecorder]:
    """A :class:`TaskRecorder` installed process-wide for the test (every manager reports to
    it, request managers included), removed after it."""
    recorder = TaskRecorder()
    add_instrument(recorder)
    try:
        yield recorder
    finally:
        remove_instrument(recorder)
