"""trio_bg: named, awaitable, nursery-owned background tasks for trio and Hypercorn.

This module only re-exports; the code lives in private modules, one concept each (the map is
``docs/architecture.md``).
"""

from __future__ import annotations

from . import _tasklog as _tasklog  # adds the task log (DEBUG lines of every task)
from ._core._closing import TaskManagerContext as TaskManagerContext
from ._core._exceptions import TaskCancelled as TaskCancelled
from ._core._exceptions import TaskRejected as TaskRejected
from ._core._group import TaskGroup as TaskGroup
from ._core._handle import ErrorHandler as ErrorHandler
from ._core._handle import TaskHandle as TaskHandle
from ._core._handle_like import TaskHandleLike as TaskHandleLike
from ._core._instruments import Instrument as Instrument
from ._core._instruments import add_instrument as add_instrument
from ._core._instruments import remove_instrument as remove_instrument
from ._core._manager import TaskManager as TaskManager
from ._core._manager import open_task_manager as open_task_manager
from ._core._progress import Progress as Progress
from ._core._registry import find_task as find_task
from ._core._registry import set_recent_limit as set_recent_limit
from ._core._reporting import report_progress as report_progress
from ._core._retry import Retry as Retry
from ._core._starter import TaskStarter as TaskStarter
from ._core._state import TaskState as TaskState
from ._core._state import Timing as Timing
from ._core._statistics import CloseDeadlines as CloseDeadlines
from ._core._statistics import ShutdownReport as ShutdownReport
from ._core._statistics import TaskStatistics as TaskStatistics
from ._core._where import WaitFrame as WaitFrame
from ._core._where import WaitPoint as WaitPoint
from ._public import fixup_module_metadata as _fixup_module_metadata
from ._serve import serve as serve
from ._version import __version__ as __version__

_fixup_module_metadata(__name__, globals())

__all__ = [
    "CloseDeadlines",
    "ErrorHandler",
    "Instrument",
    "Progress",
    "Retry",
    "ShutdownReport",
    "TaskCancelled",
    "TaskGroup",
    "TaskHandle",
    "TaskHandleLike",
    "TaskManager",
    "TaskManagerContext",
    "TaskRejected",
    "TaskStarter",
    "TaskState",
    "TaskStatistics",
    "Timing",
    "WaitFrame",
    "WaitPoint",
    "add_instrument",
    "find_task",
    "open_task_manager",
    "remove_instrument",
    "report_progress",
    "serve",
    "set_recent_limit",
]
