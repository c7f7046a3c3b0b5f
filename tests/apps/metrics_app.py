"""An app for the multi-process metrics test: each ``POST /work`` starts one request task and
answers with the worker's pid; ``GET /metrics`` serves the metrics of every worker process.

Run under ``hypercorn --workers N`` with ``PROMETHEUS_MULTIPROC_DIR`` set to an empty directory.
"""

from __future__ import annotations

import os

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trio_bg.asgi import TaskMiddleware, request_tasks
from trio_bg.asgi._types import Receive, Scope, Send
from trio_bg.metrics import PrometheusInstrument, scrape_registry


async def work() -> None:
    await trio.lowlevel.checkpoint()


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")  # the middleware still opens the app manager
    if scope["path"] == "/metrics":
        body = generate_latest(scrape_registry())
        content_type = CONTENT_TYPE_LATEST.encode()
    else:
        request_tasks(scope).start_soon_named("work", work)
        body = str(os.getpid()).encode()
        content_type = b"text/plain"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = TaskMiddleware(inner, instruments=[PrometheusInstrument()])
