"""Task logs: a DEBUG line on the ``trio_bg`` logger when a task is created, starts and ends.

Built in as an instrument that a manager includes when it opens, if the ``trio_bg`` logger is
enabled for DEBUG then; so a manager pays for the lines only when someone reads them. Each line
carries ``extra=`` fields for structured logging: ``task_id``, ``task_name``, ``task_manager``,
``task_state`` and, when the task ends, ``task_duration`` (seconds from its start, or from its
creation if it never started).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core._instruments import DEBUG_INSTRUMENTS, Instrument
from ._core._log import logger

if TYPE_CHECKING:
    from ._core._handle import TaskHandle


def _fields(handle: TaskHandle[Any]) -> dict[str, object]:
    manager = handle.manager
    return {
        "task_id": handle.id,
        "task_name": handle.name,
        "task_manager": None if manager is None else manager.name,
        "task_state": handle.state.value,
    }


class TaskLog(Instrument):
    """The DEBUG lines of every task (see the module docstring)."""

    __slots__ = ()

    def task_created(self, handle: TaskHandle[Any]) -> None:
        fields = _fields(handle)
        logger.debug(
            "task %r (%s) created in %r", handle.name, fields["task_id"],
            fields["task_manager"], extra=fields,
        )  # fmt: skip

    def task_started(self, handle: TaskHandle[Any]) -> None:
        logger.debug("task %r (%s) started", handle.name, handle.id, extra=_fields(handle))

    def task_progress(self, handle: TaskHandle[Any]) -> None:
        progress = handle.progress
        if progress is None:
            return
        fields = _fields(handle)
        shown = "" if progress.fraction is None else f"{progress.fraction:.0%}"
        if progress.message is not None:
            shown = f"{shown} {progress.message!r}" if shown else repr(progress.message)
        logger.debug("task %r (%s) progress %s", handle.name, handle.id, shown, extra=fields)

    def task_finished(self, handle: TaskHandle[Any]) -> None:
        fields = _fields(handle)
        finished = handle.finished_time
        assert finished is not None  # task_finished comes after the terminal state is set
        started = handle.started_time
        began = handle.created_time if started is None else started
        duration = fields["task_duration"] = finished - began
        logger.debug(
            "task %r (%s) %s after %.3f s", handle.name, fields["task_id"],
            fields["task_state"], duration, extra=fields,
        )  # fmt: skip


DEBUG_INSTRUMENTS.append(TaskLog())
