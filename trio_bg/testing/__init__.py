"""trio_bg.testing: test apps that use trio_bg; also a pytest plugin.

Installing trio-bg registers this module as a pytest plugin (entry point ``pytest11``), which
provides the fixtures ``task_manager`` and ``task_recorder``. :func:`serve_app` runs an app under
a real Hypercorn with an httpx client (both imported only when it is called); :func:`run_lifespan`
runs an app's lifespan for tests that use ``httpx.ASGITransport``. Both give ``wait_idle()``,
which returns once every request's and the app's tasks are done, without sleeping.
"""

from __future__ import annotations

from .._public import fixup_module_metadata as _fixup_module_metadata
from ._activity import AppActivity as AppActivity
from ._fixtures import TaskRecorder as TaskRecorder
from ._fixtures import check_accounting as check_accounting
from ._fixtures import checked_task_manager as checked_task_manager
from ._fixtures import task_manager as task_manager
from ._fixtures import task_recorder as task_recorder
from ._lifespan import LifespanApp as LifespanApp
from ._lifespan import run_lifespan as run_lifespan
from ._served import ServedApp as ServedApp
from ._served import serve_app as serve_app

_fixup_module_metadata(__name__, globals())

__all__ = [
    "AppActivity",
    "LifespanApp",
    "ServedApp",
    "TaskRecorder",
    "check_accounting",
    "checked_task_manager",
    "run_lifespan",
    "serve_app",
    "task_manager",
    "task_recorder",
]
