"""An app for the graceful-shutdown test: each request starts shielded and unshielded tasks.

Run as ``python -m trio_bg serve tests.apps.graceful_app:app --grace 1``; side effects are files
in the directory named by ``TRIO_BG_TEST_DIR``.
"""

from __future__ import annotations

import os
from pathlib import Path

import trio

from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.asgi._types import Receive, Scope, Send

OUT = Path(os.environ.get("TRIO_BG_TEST_DIR", "."))


async def write_after(seconds: float, name: str) -> None:
    await trio.sleep(seconds)
    (OUT / name).write_text("done")


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")  # the middleware still opens the app manager
    tasks = request_tasks(scope)
    tasks.start_soon_named("request-shielded", write_after, 2, "request-shielded", shield=True)
    tasks.start_soon_named("request-unshielded", write_after, 60, "request-unshielded")
    app = app_tasks(scope)
    app.start_soon_named("app-shielded", write_after, 3, "app-shielded", shield=True)
    app.start_soon_named("app-unshielded", write_after, 60, "app-unshielded")
    (OUT / "started").write_text("yes")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"started"})


app = TaskMiddleware(inner, grace_period=0.5, shield_timeout=3.0)
