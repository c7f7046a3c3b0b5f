"""An app for the flood test: requests that start tasks until they are refused.

``GET /flood`` starts request tasks until the per-request cap refuses one, then app tasks
until the app manager's pending queue refuses one (at most ``APP_TASKS_PER_REQUEST``); a refused
app task is answered ``503`` (as an app would answer "busy"), with the TaskRejected message as
``busy`` in its JSON body. The body says what was started and refused. ``GET /ping`` starts
nothing. ``GET /stats`` is the app manager's statistics as JSON.

Run as ``python -m trio_bg serve tests.apps.flood_app:app``.
"""

from __future__ import annotations

import dataclasses
import json

import trio

from trio_bg import TaskRejected
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.asgi._types import Receive, Scope, Send

MAX_TASKS_PER_REQUEST = 5
MAX_RUNNING = 4
MAX_PENDING = 16
APP_TASKS_PER_REQUEST = 3
APP_TASK_SECONDS = 0.2  # so the app manager runs 20 tasks a second at most
REQUEST_TASK_SECONDS = 0.01


async def respond(send: Send, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": body})


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")  # the middleware still opens the app manager
    path = scope["path"]
    if path == "/stats":
        stats = dataclasses.asdict(app_tasks(scope).statistics())
        await respond(send, 200, json.dumps(stats).encode())
        return
    if path != "/flood":
        await respond(send, 200, b"pong")
        return
    tasks = request_tasks(scope)
    answer = {"request_started": 0, "request_rejected": 0, "app_started": 0}
    while True:
        try:
            tasks.start_soon_named("flood-request", trio.sleep, REQUEST_TASK_SECONDS)
        except TaskRejected:
            answer["request_rejected"] += 1
            break
        answer["request_started"] += 1
    app = app_tasks(scope)
    for _ in range(APP_TASKS_PER_REQUEST):
        try:
            app.start_soon_named("flood-app", trio.sleep, APP_TASK_SECONDS)
        except TaskRejected as busy:
            await respond(send, 503, json.dumps({**answer, "busy": str(busy)}).encode())
            return
        answer["app_started"] += 1
    await respond(send, 200, json.dumps(answer).encode())


app = TaskMiddleware(
    inner,
    max_tasks_per_request=MAX_TASKS_PER_REQUEST,
    max_running=MAX_RUNNING,
    max_pending=MAX_PENDING,
    grace_period=0.5,
    shield_timeout=1.0,
)
