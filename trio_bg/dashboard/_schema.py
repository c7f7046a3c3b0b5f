"""The dashboard's JSON: what ``GET /api/tasks``, ``GET /api/tasks/{id}`` and the event stream
send. Every field is documented in ``docs/dashboard.md``; :data:`SCHEMA` is bumped when a field
changes meaning or goes away.

Everything here reads the managers and handles as they are at the moment it is called, in the
trio thread, without awaiting: a snapshot is consistent.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import outcome
import trio

from .._core import _registry
from .._core._manager import TaskManager
from .._core._state import TaskState
from ..asgi._request import RequestTaskManager
from ._recorder import Recorder, short_repr, short_str

if TYPE_CHECKING:
    from .._core._handle import TaskHandle
    from .._core._where import WaitPoint

SCHEMA = 1
"""The version of the JSON layout."""
MAX_ACTIVE = 200
"""Active tasks listed per manager (the oldest); ``active_more`` counts the others."""
MAX_RECENT = 20
"""Finished tasks listed per manager (the newest)."""
MAX_HISTORY = 50
"""Finished tasks listed from the process-wide history (the newest)."""
MAX_REQUESTS = 100
"""Requests listed (the oldest that have tasks)."""

Json = dict[str, Any]
_RUNNING = TaskState.RUNNING
_PENDING = TaskState.PENDING


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def _round(seconds: float | None) -> float | None:
    return None if seconds is None or not math.isfinite(seconds) else round(seconds, 3)


class Snapshot:
    """One reading of the process: the clocks, the options, and the running coroutines."""

    __slots__ = ("now", "recorder", "show_args", "trio_now")

    def __init__(self, recorder: Recorder, *, show_args: bool) -> None:
        self.recorder = recorder
        self.show_args = show_args
        self.now = time.time()
        self.trio_now = trio.current_time()

    # -- one task --------------------------------------------------------------------------------

    def task(
        self,
        handle: TaskHandle[Any],
        *,
        point: WaitPoint | None = None,
        closing: Json | None = None,
    ) -> Json:
        """The JSON of one task. ``point``: where it waits, if RUNNING; ``closing``:
        its manager's closing deadlines (for ``cancel_in`` and ``cap_in``)."""
        created: float = handle.created_time
        started = handle.started_time
        finished = handle.finished_time
        state = handle.state
        end = self.now if finished is None else finished
        manager = handle.manager
        data: Json = {
            "id": handle.id,
            "name": handle.name,
            "state": state.value,
            "manager": None if manager is None else manager.name,
            "group": handle.group,
            "key": handle.key,
            "timing": handle.timing.value,
            "shielded": handle.shielded,
            "created_at": _iso(created),
            "started_at": _iso(started),
            "finished_at": _iso(finished),
            "age": _round(self.now - created),
            "wait": _round((end if started is None else started) - created),
            "duration": None if started is None else _round(end - started),
            "attempts": handle.attempts,
            "retries": [
                {
                    "at": _iso(r.at),
                    "attempt": r.attempt,
                    "error": r.error,
                    "message": r.message,
                    "delay": _round(r.delay),
                }
                for r in self.recorder.retries(handle.number)
            ],
            "cancel_in": None,
            "cap_in": None,
            "error": None,
            "where": None,
            "waiting": None,
            "stack": [],
            "progress": None,
        }
        progress = handle.progress
        if progress is not None:
            data["progress"] = {
                "fraction": progress.fraction,
                "message": progress.message,
                "at": progress.at.isoformat(),
            }
        result = handle.outcome if state.done else None
        if isinstance(result, outcome.Error):
            error = result.error
            data["error"] = {"type": type(error).__name__, "message": short_str(error)}
        if closing is not None and not state.done:
            if handle.shielded:
                data["cap_in"] = _round(closing["_cap"] - self.trio_now)
            else:
                data["cancel_in"] = _round(closing["_grace"] - self.trio_now)
        if point is not None:
            data["waiting"] = point.waiting  # a worker thread or a retry backoff
            at = point.at
            if at is not None:
                data["where"] = {"function": at.function, "file": at.file, "line": at.line}
            data["stack"] = [str(frame) for frame in point.stack]
        if self.show_args:
            data["args"] = self.recorder.args(handle.number)
            data["result"] = short_repr(result.value) if isinstance(result, outcome.Value) else None
        return data

    # -- one manager -----------------------------------------------------------------------------

    def closing(self, manager: TaskManager) -> Json | None:
        """A closing manager's deadlines (trio clock), or None while it is open.

        ``_grace``: when its unshielded tasks are cancelled (infinite for a request manager, which
        waits until the server cancels it); ``_cap``: when its shielded tasks are cancelled.
        """
        deadlines = manager.close_deadlines()
        if deadlines is None:
            return None
        began, grace, cap = deadlines.started, deadlines.grace, deadlines.cap
        return {
            "since": _round(self.trio_now - began),
            "grace_left": _round(max(0.0, grace - self.trio_now)),
            "cap_left": _round(max(0.0, cap - self.trio_now)),
            "_grace": grace,
            "_cap": cap,
        }

    def manager(self, manager: TaskManager) -> Json:
        """The JSON of one open manager, with its tasks."""
        closing = self.closing(manager)
        listed = list(itertools.islice(manager.active_tasks, MAX_ACTIVE))
        points = manager.wait_points() if any(h.state is _RUNNING for h in listed) else {}
        stats = manager.statistics()
        data: Json = {
            "name": manager.name,
            "kind": "request" if isinstance(manager, RequestTaskManager) else "manager",
            "closed": manager.closed,
            "statistics": {field: getattr(stats, field) for field in stats.__slots__},
            "active": [self.task(h, point=points.get(h.number), closing=closing) for h in listed],
            "active_more": max(0, manager.active_count - MAX_ACTIVE),
            "recent": [
                self.task(h) for h in itertools.islice(reversed(manager.recent), MAX_RECENT)
            ],
            "request": None,
            "closing": None,
        }
        if isinstance(manager, RequestTaskManager):
            info = manager.request_info
            if info.route is not None:
                data["name"] = f"{info.method} {info.route}"
            data["request"] = {
                "method": info.method,
                "route": info.route,
                "status": info.status,
                "opened_at": _iso(info.opened_time),
                "age": _round(self.now - info.opened_time),
            }
        if closing is not None:
            data["closing"] = {k: v for k, v in closing.items() if not k.startswith("_")}
            data["closing"]["will_cancel"] = [
                {"id": t["id"], "name": t["name"], "in": t["cancel_in"]}
                for t in data["active"]
                if not t["shielded"]
            ]
            data["closing"]["shielded"] = [
                {"id": t["id"], "name": t["name"], "cap_in": t["cap_in"]}
                for t in data["active"]
                if t["shielded"]
            ]
        return data

    # -- the process -----------------------------------------------------------------------------

    def process(self, queues: list[Json] | None = None) -> Json:
        """The JSON of ``GET /api/tasks`` and of each event of the stream. ``queues``: the
        durable queues' entries (read beforehand: nothing here awaits)."""
        managers = list(_registry.open_managers)
        requests = sorted(
            (m for m in managers if isinstance(m, RequestTaskManager)),
            key=lambda m: m.request_info.opened_time,
        )
        others = sorted(
            (m for m in managers if not isinstance(m, RequestTaskManager)), key=lambda m: m.name
        )
        with_tasks = [m for m in requests if m.active_count][:MAX_REQUESTS]
        listed = [self.manager(m) for m in (*others, *with_tasks)]
        totals = {
            field: 0
            for field in ("started", "pending", "running", "succeeded", "failed", "cancelled")
        }
        totals["rejected"] = 0
        for m in managers:
            stats = m.statistics()
            for field in totals:
                totals[field] += getattr(stats, field)
        history = itertools.islice(reversed(_registry.finished), MAX_HISTORY)
        return {
            "schema": SCHEMA,
            "pid": os.getpid(),
            "now": _iso(self.now),
            "version": self.recorder.version,
            "show_args": self.show_args,
            "managers": listed,
            "requests": {"open": len(requests), "with_tasks": len(with_tasks)},
            "totals": totals,
            "history": [self.task(h) for h in history],
            "rate": [
                {"at": second, "started": s, "succeeded": ok, "failed": f, "cancelled": c}
                for second, s, ok, f, c in self.recorder.rate(self.now)
            ],
            "shutdown": [
                {
                    "manager": m["name"],
                    "grace_left": m["closing"]["grace_left"],
                    "will_cancel": m["closing"]["will_cancel"],
                    "shielded": m["closing"]["shielded"],
                }
                for m in listed
                if m["closing"] is not None
            ],
            "queues": queues or [],
        }

    def one(self, handle: TaskHandle[Any]) -> Json:
        """The JSON of ``GET /api/tasks/{id}``: the task with its where-waiting and deadlines."""
        manager = handle.manager
        point = closing = None
        if not isinstance(manager, TaskManager):  # None once the task is done
            manager = None
        if manager is not None and handle.state is _RUNNING:
            point = manager.wait_points().get(handle.number)
        if manager is not None:
            closing = self.closing(manager)
        return self.task(handle, point=point, closing=closing)
