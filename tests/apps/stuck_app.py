"""An app whose tasks never end: each shields itself from cancellation and sleeps forever.

``GET /app`` starts the app task ``stubborn-app``, ``GET /request`` the request task
``stubborn-request``. Run as ``python -m trio_bg serve tests.apps.stuck_app:app``; only the
third signal ends such a server.
"""

from __future__ import annotations

import trio

from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.asgi._types import Receive, Scope, Send


async def stubborn() -> None:
    with trio.CancelScope(shield=True):
        await trio.sleep_forever()


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")  # the middleware still opens the app manager
    if scope["path"] == "/app":
        app_tasks(scope).start_soon_named("stubborn-app", stubborn)
    else:
        request_tasks(scope).start_soon_named("stubborn-request", stubborn)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"started"})


app = TaskMiddleware(inner, grace_period=0.2, shield_timeout=0.5)
