"""The last event of every stream: ``shutdown``, sent when the server is told to stop.

What the stop will wait for and what it will drop, with the deadlines, as far as they are known
at the announcement (:mod:`trio_bg._shutdown_notice`): open requests run on until the server
cancels them (``requests_grace`` from the announcement: their unshielded tasks are then cancelled,
their shielded ones get ``shield_timeout`` more); the app manager closes at ``lifespan.shutdown``,
once every request has ended (at the latest when they are cancelled), and then gives its
unshielded tasks ``grace_period`` and its shielded ones ``shield_timeout``. Each deadline is the
latest it can be: a close that begins sooner ends sooner.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._core import _registry
from ..asgi._request import RequestTaskManager
from ._schema import MAX_ACTIVE, MAX_REQUESTS, Json, Snapshot

if TYPE_CHECKING:
    from .._core._manager import TaskManager
    from .._shutdown_notice import ShutdownNotice


def _seconds(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(max(0.0, value), 3)


def _plus(start: float | None, seconds: float) -> float | None:
    return None if start is None or not math.isfinite(seconds) else start + seconds


def farewell(notice: ShutdownNotice, snapshot: Snapshot, queues: list[Json]) -> Json:
    """The JSON of the ``shutdown`` event: the notice, the forecast per manager with active
    tasks (``managers``, shaped like the snapshot's ``shutdown`` entries) and a last snapshot."""
    now = snapshot.trio_now
    requests_left = (
        None
        if notice.requests_grace is None
        else max(0.0, notice.trio_at + notice.requests_grace - now)
    )
    # The app manager's close begins once the requests have ended: at the latest when the server
    # cancels them, at once for an announcement made at lifespan.shutdown.
    close_in = 0.0 if notice.reason == "lifespan.shutdown" else requests_left
    managers = list(_registry.open_managers)
    requests = sorted(
        (m for m in managers if isinstance(m, RequestTaskManager) and m.active_count),
        key=lambda m: m.request_info.opened_time,
    )
    others = sorted(
        (m for m in managers if not isinstance(m, RequestTaskManager) and m.active_count),
        key=lambda m: m.name,
    )
    entries = [
        _forecast(m, snapshot, requests_left, close_in) for m in (*others, *requests[:MAX_REQUESTS])
    ]
    return {
        "reason": notice.reason,
        "announced_at": datetime.fromtimestamp(notice.at, UTC).isoformat(),
        "requests_cancel_in": _seconds(requests_left),
        "open_requests": sum(isinstance(m, RequestTaskManager) for m in managers),
        "managers": entries,
        "snapshot": snapshot.process(queues=queues),
    }


def _forecast(
    manager: TaskManager, snapshot: Snapshot, requests_left: float | None, close_in: float | None
) -> Json:
    closing = snapshot.closing(manager)
    if closing is not None:  # closing already: its own deadlines
        cancel_in: float | None = closing["grace_left"]
        cap_in: float | None = closing["cap_left"]
    elif isinstance(manager, RequestTaskManager):  # until the server cancels the request
        cancel_in = requests_left
        cap_in = _plus(requests_left, manager.shield_timeout)
    else:
        cancel_in = _plus(close_in, manager.grace_period)
        cap_in = _plus(close_in, manager.shield_timeout)
    listed = list(itertools.islice(manager.active_tasks, MAX_ACTIVE))
    name = manager.name
    if isinstance(manager, RequestTaskManager):
        info = manager.request_info  # read only: the manager is not renamed by being shown
        if info.route is not None:
            name = f"{info.method} {info.route}"
    return {
        "manager": name,
        "kind": "request" if isinstance(manager, RequestTaskManager) else "manager",
        "grace_left": _seconds(cancel_in),
        "will_cancel": [
            {"id": h.id, "name": h.name, "in": _seconds(cancel_in)}
            for h in listed
            if not h.shielded
        ],
        "shielded": [
            {"id": h.id, "name": h.name, "cap_in": _seconds(cap_in)} for h in listed if h.shielded
        ],
    }
