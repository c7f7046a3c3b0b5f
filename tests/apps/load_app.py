"""An app for the shutdown-under-load test: every request starts tasks of each kind.

``GET /work`` starts, for its request: a shielded task (``SHIELDED_WORK`` seconds), an
unshielded one that would run for a minute, and a shielded ``after_response`` task; and in the
app manager a shielded and an unshielded task of the same lengths. ``GET /ping`` starts nothing.
Task names are unique (``request-long-7`` is request 7's); each task appends ``begin <name>``
when it starts and ``end <name>`` when its work is done to the file named by
``TRIO_BG_TEST_LOG`` (one ``write`` of one short line: appends from one process do not
interleave). A name with ``shielded`` in it is a shielded task.

Run as ``python -m trio_bg serve tests.apps.load_app:app --grace 1``.
"""

from __future__ import annotations

import itertools
import os

import trio

from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.asgi._types import Receive, Scope, Send

LOG = os.environ.get("TRIO_BG_TEST_LOG", os.devnull)
SHIELDED_WORK = 1.0  # seconds: fits the shield cap (SHIELD_TIMEOUT) with room to spare
LONG_WORK = 60.0  # seconds: only the shutdown ends it
GRACE_PERIOD = 0.5  # the app manager's grace period
SHIELD_TIMEOUT = 3.0  # the cap for shielded app and request tasks once shutdown reached them


def note(line: str) -> None:
    with open(LOG, "a") as log:
        log.write(line + "\n")


async def work(name: str, seconds: float) -> None:
    note(f"begin {name}")
    await trio.sleep(seconds)
    note(f"end {name}")


_requests = itertools.count(1)


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")  # the middleware still opens the app manager
    body = b"pong"
    if scope["path"] == "/work":
        n = next(_requests)
        tasks = request_tasks(scope)
        app = app_tasks(scope)
        for starter, name, seconds, shield in (
            (tasks, f"request-shielded-{n}", SHIELDED_WORK, True),
            (tasks, f"request-long-{n}", LONG_WORK, False),
            (tasks.after_response, f"request-deferred-shielded-{n}", SHIELDED_WORK, True),
            (app, f"app-shielded-{n}", SHIELDED_WORK, True),
            (app, f"app-long-{n}", LONG_WORK, False),
        ):
            starter.start_soon_named(name, work, name, seconds, shield=shield)
        body = str(n).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


app = TaskMiddleware(inner, grace_period=GRACE_PERIOD, shield_timeout=SHIELD_TIMEOUT)
