"""An app with a dashboard, for the shutdown tests: ``python -m trio_bg serve
tests.apps.dashboard_app:app``. ``/dashboard/`` is the dashboard (local clients), ``/forever``
starts an app task that runs until cancelled (``?shield=1``: shielded), ``/slow`` answers after
30 s (an open request holds the server's graceful phase)."""

from __future__ import annotations

import trio

from trio_bg.asgi import TaskMiddleware, app_tasks
from trio_bg.asgi._types import Receive, Scope, Send
from trio_bg.dashboard import Dashboard

dashboard = Dashboard(local_only=True)


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")  # the middleware still opens the app manager
    path: str = scope["path"]
    if path.startswith("/dashboard"):
        scope["root_path"] = "/dashboard"
        await dashboard(scope, receive, send)
        return
    body = b"not found"
    status = 404
    if path == "/forever":
        shield = scope.get("query_string", b"") == b"shield=1"
        name = "forever-shielded" if shield else "forever"
        body = (
            app_tasks(scope).start_soon_named(name, trio.sleep_forever, shield=shield).id.encode()
        )
        status = 200
    elif path == "/slow":
        await trio.sleep(30)
        body, status = b"slow", 200
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


app = TaskMiddleware(inner, grace_period=0.5, shield_timeout=1.0)
