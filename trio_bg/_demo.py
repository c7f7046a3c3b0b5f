"""The demo app: orders, photo thumbnails, reports and a failing task, as raw ASGI.

Served by ``python -m trio_bg demo``. It shows every timing point, a group, an awaitable handle,
retries and the error handler, and durable jobs on a journal file (``trio_bg_demo.db`` in the
working directory, or ``$TRIO_BG_DEMO_JOURNAL``) run by workers in the app: ``kill -9`` the demo
while they run and start it again, and they go on. ``GET /`` has a button per kind of work and
lists the app's tasks; the live dashboard is mounted at ``/dashboard/``, for local clients only.

``GET /tasks/<id>`` describes any task :func:`trio_bg.find_task` finds (404 if none): its state,
timestamps (``created_at``, ``started_at``, ``finished_at``), attempts, and either ``result``
(SUCCEEDED) or ``error`` (FAILED: its type and message). The answer is 200 whatever the task's own
outcome, since the request for its description succeeded: a client reads ``state``. A browser
(``Accept: text/html``) gets the same JSON in a page with a way back.
"""

from __future__ import annotations

import html
import itertools
import json
import logging
import os
from typing import Any

import outcome
import trio

from ._core._handle import TaskHandle
from ._core._instruments import Instrument
from ._core._manager import TaskManager
from ._core._registry import find_task
from ._core._retry import Retry
from .asgi import TaskMiddleware, app_tasks, request_tasks
from .asgi._types import Message, Receive, Scope, Send
from .dashboard import Dashboard
from .durable import DurableQueue

logger = logging.getLogger("trio_bg.demo")
_order_ids = itertools.count(1)
_photo_ids = itertools.count(1)
failures: list[str] = []
orders_placed: list[int] = []
"""The ids of the orders placed so far (the report counts them; it takes no id)."""

shipping = DurableQueue(
    "sqlite:///" + os.environ.get("TRIO_BG_DEMO_JOURNAL", "trio_bg_demo.db"), name="shipping"
)
"""The demo's durable jobs: a journal file, run by the app's own workers (queue_concurrency)."""


@shipping.task
async def ship_order(order_id: int) -> str:
    await trio.sleep(5)  # a slow carrier: kill -9 the demo now, start it again; it still ships
    return f"order {order_id} shipped"


# -- the background work -------------------------------------------------------------------


async def reserve_stock(order_id: int) -> None:
    await trio.sleep(0.2)
    logger.info("order %d: stock reserved", order_id)


async def send_confirmation_email(order_id: int, address: str) -> str:
    await trio.sleep(2)  # a slow mail server
    logger.info("order %d: confirmation sent to %s", order_id, address)
    return f"sent to {address}"


async def invalidate_cache(key: str) -> None:
    await trio.sleep(0.05)
    logger.info("cache key %s invalidated", key)


async def resize(photo_id: int, size: int) -> str:
    await trio.sleep(0.3 + size / 1000)
    return f"photo-{photo_id}-{size}px.jpg"


async def make_thumbnails(manager: TaskManager, photo_id: int) -> list[str]:
    async with manager.open_group(f"thumbnails-{photo_id}") as group:
        for size in (64, 256, 1024):
            group.start_soon_named(f"resize-{photo_id}-{size}", resize, photo_id, size)
    names = await group.wait_all(str)
    logger.info("photo %d: thumbnails %s", photo_id, ", ".join(names))
    return names


async def build_report(month: str) -> dict[str, Any]:
    await trio.sleep(3)
    return {"month": month, "orders": len(orders_placed), "revenue": 1234.5}


async def call_flaky_partner() -> None:
    await trio.sleep(0.1)
    raise ConnectionError("partner API unreachable")


def record_failure(handle: TaskHandle[Any], exc: BaseException) -> None:
    failures.append(f"{handle.name} ({handle.id}): {exc!r}")


# -- the routes ------------------------------------------------------------------------------


_JSON_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>trio_bg demo</title>
<style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f4f4f4;padding:1em}}</style>
</head><body><p><a href="/">&larr; back to the demo</a> &middot;
<a href="/dashboard/">live dashboard</a></p><pre>{body}</pre></body></html>"""


def _wants_html(scope: Scope) -> bool:
    return b"text/html" in dict(scope.get("headers", ())).get(b"accept", b"")


async def _json(send: Send, status: int, payload: object, *, scope: Scope | None = None) -> None:
    """Send ``payload`` as JSON; to a browser (``scope`` given), inside a page with a way back."""
    text = json.dumps(payload, indent=2)
    if scope is not None and _wants_html(scope):
        body = _JSON_PAGE.format(body=html.escape(text)).encode()
        content_type = b"text/html; charset=utf-8"
    else:
        body, content_type = text.encode(), b"application/json"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type)],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _iso(moment: Any) -> str | None:
    return None if moment is None else str(moment.isoformat())


def _describe(handle: TaskHandle[Any]) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "id": handle.id,
        "name": handle.name,
        "state": handle.state.value,
        "created_at": _iso(handle.created_at),
        "started_at": _iso(handle.started_at),
        "finished_at": _iso(handle.finished_at),
        "attempts": handle.attempts,
        "group": handle.group,
    }
    result = handle.outcome
    if isinstance(result, outcome.Value):
        detail["result"] = repr(result.value)
    elif isinstance(result, outcome.Error):
        detail["error"] = {"type": type(result.error).__name__, "message": str(result.error)}
    return detail


async def orders(scope: Scope, receive: Receive, send: Send) -> None:
    order_id = next(_order_ids)
    orders_placed.append(order_id)
    tasks = request_tasks(scope)
    tasks.start_soon_named("reserve-stock", reserve_stock, order_id)
    tasks.after_route.start_soon_named("invalidate-cache", invalidate_cache, f"orders:{order_id}")
    tasks.after_response.start_soon_named(
        "confirmation-email", send_confirmation_email, order_id, "buyer@example.com"
    )
    await _json(send, 201, {"order_id": order_id, "email": "after the response"})


async def photos(scope: Scope, receive: Receive, send: Send) -> None:
    photo_id = next(_photo_ids)
    manager = app_tasks(scope)
    handle = manager.start_soon_named(f"photo-{photo_id}", make_thumbnails, manager, photo_id)
    await _json(send, 202, {"photo_id": photo_id, "task": handle.id})


async def reports(scope: Scope, receive: Receive, send: Send) -> None:
    month = "2026-11"
    handle = app_tasks(scope).start_soon_named(
        f"report-{month}", build_report, month, key=f"report:{month}"
    )
    await _json(send, 202, {"task": handle.id, "poll": f"/tasks/{handle.id}?wait=1"})


async def ship(scope: Scope, receive: Receive, send: Send) -> None:
    handles = await shipping.enqueue_many([(ship_order, (next(_order_ids),)) for _ in range(10)])
    await _json(send, 202, {"jobs": [h.id for h in handles], "note": "durable: survive kill -9"})


async def fail(scope: Scope, receive: Receive, send: Send) -> None:
    handle = app_tasks(scope).start_soon_named(
        "flaky-partner",
        call_flaky_partner,
        retry=Retry(attempts=3, backoff=0.2, jitter=False),
        on_error=record_failure,
    )
    await _json(send, 202, {"task": handle.id, "note": "fails 3 times, then the handler runs"})


async def task_detail(scope: Scope, receive: Receive, send: Send, task_id: str) -> None:
    handle = find_task(task_id)  # app tasks and request tasks (the order e-mails) alike
    if handle is None:
        await _json(send, 404, {"error": f"no task {task_id}"}, scope=scope)
        return
    if b"wait=1" in scope.get("query_string", b""):
        with trio.move_on_after(10):
            await handle.wait()
    # 200 whatever the task's outcome: the description was found; "state" says how it ended.
    await _json(send, 200, _describe(handle), scope=scope)


async def task_list(scope: Scope, receive: Receive, send: Send) -> None:
    manager = app_tasks(scope)
    stats = manager.statistics()
    await _json(
        send,
        200,
        {
            "statistics": {field: getattr(stats, field) for field in stats.__slots__},
            "active": [_describe(h) for h in manager.active_tasks],
            "recent": [_describe(h) for h in reversed(manager.recent)],
            "failures": failures[-20:],
        },
        scope=scope,
    )


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>trio_bg demo</title>
<style>body{{font-family:sans-serif;margin:2em}}
td,th{{padding:2px 10px;text-align:left}}form{{display:inline}}</style></head><body>
<h1>trio_bg demo</h1>
<p>{forms}</p>
<p><strong><a href="/dashboard/">Open the live dashboard</a></strong>: every task of the app and
of its requests, live, with where each one is waiting (local clients only).</p>
<p>{stats}</p>
<h2>Active app tasks</h2><table><tr><th>id</th><th>name</th><th>state</th></tr>{active}</table>
<h2>Recently finished</h2><table><tr><th>id</th><th>name</th><th>state</th></tr>{recent}</table>
<p>This page shows the app's tasks when it is loaded; reload it, or watch the dashboard.
JSON: <a href="/tasks">/tasks</a>, <code>/tasks/&lt;id&gt;</code>.</p>
</body></html>"""


def _rows(handles: list[TaskHandle[Any]]) -> str:
    return "".join(
        f'<tr><td><a href="/tasks/{html.escape(h.id)}">{html.escape(h.id)}</a></td>'
        f"<td>{html.escape(h.name)}</td>"
        f"<td>{html.escape(h.state.value)}</td></tr>"
        for h in handles
    )


async def index(scope: Scope, receive: Receive, send: Send) -> None:
    manager = app_tasks(scope)
    forms = " ".join(
        f'<form method="post" action="{path}"><button>{label}</button></form>'
        for path, label in (
            ("/orders", "Place an order"),
            ("/photos", "Upload a photo"),
            ("/reports", "Build the report"),
            ("/fail", "Call a flaky partner"),
            ("/ship", "Ship 10 orders (durable jobs)"),
        )
    )
    page = _PAGE.format(
        forms=forms,
        stats=html.escape(str(manager.statistics())),
        active=_rows(list(manager.active_tasks)),
        recent=_rows(list(reversed(manager.recent))[:20]),
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/html; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": page.encode()})


async def router(scope: Scope, receive: Receive, send: Send) -> None:
    """The demo's own routes (the dashboard is mounted by :class:`Demo`); anything that is not
    http (lifespan included) is declined."""
    if scope["type"] != "http":
        raise RuntimeError(f"the demo router serves http only, not {scope['type']!r}")
    method, path = scope["method"], scope["path"]
    if method == "GET" and path == "/":
        await index(scope, receive, send)
    elif method == "GET" and path == "/tasks":
        await task_list(scope, receive, send)
    elif method == "GET" and path.startswith("/tasks/"):
        await task_detail(scope, receive, send, path.removeprefix("/tasks/"))
    elif method == "POST" and path in _POSTS:
        if b"text/html" in dict(scope["headers"]).get(b"accept", b""):
            # A browser form: start the work, then show the task list again.
            await _POSTS[path](scope, receive, _discard_body(send))
            await send(
                {"type": "http.response.start", "status": 303, "headers": [(b"location", b"/")]}
            )
            await send({"type": "http.response.body", "body": b""})
        else:
            await _POSTS[path](scope, receive, send)
    else:
        await _json(send, 404, {"error": f"no route {method} {path}"}, scope=scope)


def route_name(scope: Scope) -> str | None:
    """The route template of a demo request, for ``TaskMiddleware(request_name=...)``: the
    router above matches raw paths, so without this every request would be named by its
    method alone. Never the raw path: ``/tasks/task-7`` is ``/tasks/{id}``."""
    path: str = scope.get("path", "")
    if path in _POSTS or path in ("/", "/tasks"):
        return path
    if path.startswith("/tasks/"):
        return "/tasks/{id}"
    return None


def _discard_body(send: Send) -> Send:
    """A ``send`` that swallows the JSON answer, for browser form posts that get a redirect."""

    async def swallow(message: Message) -> None:
        return None

    return swallow


_POSTS = {
    "/orders": orders,
    "/photos": photos,
    "/reports": reports,
    "/fail": fail,
    "/ship": ship,
}


def _metrics() -> tuple[object, tuple[Instrument, ...]]:
    """The demo's metrics for ``/dashboard/metrics``, when the metrics extra is installed: a
    registry of the demo's own (so that the demo claims no name in the default one) and the
    instrument that fills it."""
    try:
        from prometheus_client import CollectorRegistry

        from .metrics import PrometheusInstrument
    except ImportError:  # pragma: no cover - installed without trio-bg[metrics]
        return None, ()
    registry = CollectorRegistry()
    return registry, (PrometheusInstrument(registry=registry),)


class Demo:
    """The demo app with its live dashboard mounted at ``/dashboard/`` (loopback clients only).

    Importing this module installs nothing; making a ``Demo`` makes its dashboard, which installs
    the dashboard's recorder process-wide until :meth:`Dashboard.close`, and the metrics
    instrument its app manager includes.
    """

    __slots__ = ("app", "dashboard")

    def __init__(self) -> None:
        registry, instruments = _metrics()
        self.dashboard = Dashboard(local_only=True, registry=registry, queues=[shipping])
        self.app = TaskMiddleware(
            self._mount,
            grace_period=5.0,
            shield_timeout=30.0,
            instruments=instruments,
            queues=[shipping],
            queue_concurrency=4,
            request_name=route_name,
        )
        """The demo app, ready for ``trio_bg.serve(app)``."""

    async def _mount(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/dashboard" or path.startswith("/dashboard/")):
            scope["root_path"] = scope.get("root_path", "") + "/dashboard"
            await self.dashboard(scope, receive, send)
        else:
            await router(scope, receive, send)
