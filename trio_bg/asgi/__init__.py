"""trio_bg.asgi: background tasks for ASGI apps under Hypercorn's trio worker.

``TaskMiddleware`` gives the app one task manager (opened in the lifespan) and each http request
one of its own, with the timing points ``after_route`` and ``after_response``.
"""

from __future__ import annotations

from .._public import fixup_module_metadata as _fixup_module_metadata
from ._lookup import app_tasks as app_tasks
from ._lookup import request_tasks as request_tasks
from ._middleware import TaskMiddleware as TaskMiddleware
from ._request import DeferredStarter as DeferredStarter
from ._request import RequestInfo as RequestInfo
from ._request import RequestTaskManager as RequestTaskManager
from ._route import RouteTask as RouteTask
from ._route import route_task as route_task
from ._route import route_task_with_scope as route_task_with_scope
from ._route import with_tasks as with_tasks
from ._types import APP_TASKS_KEY as APP_TASKS_KEY
from ._types import REQUEST_TASKS_KEY as REQUEST_TASKS_KEY

_fixup_module_metadata(__name__, globals())

__all__ = [
    "APP_TASKS_KEY",
    "REQUEST_TASKS_KEY",
    "DeferredStarter",
    "RequestInfo",
    "RequestTaskManager",
    "RouteTask",
    "TaskMiddleware",
    "app_tasks",
    "request_tasks",
    "route_task",
    "route_task_with_scope",
    "with_tasks",
]
