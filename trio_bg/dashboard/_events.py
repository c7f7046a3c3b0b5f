"""The live stream of ``GET /api/events``: server-sent events carrying snapshots.

The first event is a snapshot at once. After that, a snapshot is sent when a task changes state
(the recorder's version moves), at most one per :data:`COALESCE` seconds however many tasks
change; while any task is active, or always on a dashboard that shows durable queues, at least
one every :data:`REFRESH` seconds (ages, durations, shutdown countdowns and queue depths move);
and when nothing is active, a comment line every
:data:`HEARTBEAT` seconds, so proxies keep the connection open and a dead client is noticed.

The stream ends when the client disconnects (``http.disconnect``) and when the server cancels
the request: Hypercorn does at its ``graceful_timeout`` on shutdown, and nothing here is shielded,
so an open dashboard never holds a shutdown longer than that. ``EventSource`` reconnects by
itself after :data:`RETRY_MS` milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import trio

from .._core import _registry
from ..asgi._types import Receive, Send
from ._recorder import Recorder

COALESCE = 0.5
"""The shortest time between two snapshots, in seconds."""
REFRESH = 2.0
"""The longest time between two snapshots while any task is active, in seconds."""
HEARTBEAT = 15.0
"""The time between two comment lines when nothing changes, in seconds."""
RETRY_MS = 2000
"""The reconnection delay the stream asks ``EventSource`` for."""

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]


def _anything_active() -> bool:
    return any(m.active_count for m in _registry.open_managers)


async def stream(
    receive: Receive,
    send: Send,
    recorder: Recorder,
    snapshot: Callable[[], Awaitable[object]],
    *,
    live: bool = False,
) -> None:
    """Send the stream until the client disconnects or the call is cancelled.

    ``await snapshot()`` returns the JSON-able object of one event. ``live``: there is more
    than the tasks to show (durable queues), so send a snapshot every :data:`REFRESH` seconds
    even when no task is active. Cancellation ends the stream at once (no shutdown wait).
    """
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
        await send(
            {
                "type": "http.response.body",
                "body": f"retry: {RETRY_MS}\n\n".encode(),
                "more_body": True,
            }
        )
        while True:
            version = recorder.version
            data = json.dumps(await snapshot(), separators=(",", ":"))
            body = f"event: snapshot\ndata: {data}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await trio.sleep(COALESCE)
            while True:
                active = live or _anything_active()
                with trio.move_on_after(REFRESH if active else HEARTBEAT):
                    await recorder.wait_for_change(version)
                    break
                if active:
                    break
                await send(
                    {"type": "http.response.body", "body": b": heartbeat\n\n", "more_body": True}
                )


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
