"""trio_bg: named, awaitable, nursery-owned background tasks for trio and Hypercorn.

This module only re-exports; the code lives in private modules, one concept each.
"""

from __future__ import annotations

from ._deferred import DeferredStarter as DeferredStarter
from ._exceptions import TaskCancelled as TaskCancelled
from ._exceptions import TaskRejected as TaskRejected
from ._group import TaskGroup as TaskGroup
from ._handle import ErrorHandler as ErrorHandler
from ._handle import TaskHandle as TaskHandle
from ._manager import ShutdownReport as ShutdownReport
from ._manager import TaskManager as TaskManager
from ._manager import TaskStatistics as TaskStatistics
from ._manager import open_task_manager as open_task_manager
from ._retry import Retry as Retry
from ._serve import serve as serve
from ._state import TaskState as TaskState
from ._state import Timing as Timing

__version__ = "0.1.0"

for _obj in (
    DeferredStarter,
    TaskCancelled,
    TaskRejected,
    TaskGroup,
    TaskHandle,
    ShutdownReport,
    TaskManager,
    TaskStatistics,
    open_task_manager,
    Retry,
    serve,
    TaskState,
    Timing,
):
    _obj.__module__ = __name__
del _obj

__all__ = [
    "DeferredStarter",
    "ErrorHandler",
    "Retry",
    "ShutdownReport",
    "TaskCancelled",
    "TaskGroup",
    "TaskHandle",
    "TaskManager",
    "TaskRejected",
    "TaskState",
    "TaskStatistics",
    "Timing",
    "open_task_manager",
    "serve",
]
