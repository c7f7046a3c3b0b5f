"""The live stream of ``GET /api/events``: server-sent events carrying snapshots.

The first event is a snapshot at once. After that, a snapshot is sent when a task changes state
(the recorder's version moves), at most one per :data:`COALESCE` seconds however many tasks
change; while any task is active, or always on a dashboard that shows durable queues, at least
one every :data:`REFRESH` seconds (ages, durations, shutdown countdowns and queue depths move);
and when nothing is active, a comment line every
:data:`HEARTBEAT` seconds, so proxies keep the connection open and a dead client is noticed.

When the server is told to stop (the shutdown notice of :mod:`trio_bg._shutdown_notice`, which
``serve`` announces on its first signal and ``TaskMiddleware`` at ``lifespan.shutdown``), the
stream sends one last event, ``shutdown`` (what the stop will wait for and drop, with the
deadlines, and a last snapshot), and ends: an open dashboard holds no connection for the
server's graceful timeout, and the page shows the shutdown instead of reconnecting. The stream
also ends when the client disconnects (``http.disconnect``) and when the server cancels the
request (nothing here is shielded). ``EventSource`` reconnects by itself after :data:`RETRY_MS`
milliseconds; the page does not after ``shutdown``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from typing import final

import trio

from .._core import _registry
from .._shutdown_notice import ShutdownNotice, shutdown_notice, wait_for_shutdown_notice
from ..asgi._types import Receive, Send
from ._headers import response_headers
from ._recorder import Recorder

COALESCE = 0.5
"""The shortest time between two snapshots, in seconds."""
REFRESH = 2.0
"""The longest time between two snapshots while any task is active, in seconds."""
HEARTBEAT = 15.0
"""The time between two comment lines when nothing changes, in seconds."""
RETRY_MS = 2000
"""The reconnection delay the stream asks ``EventSource`` for."""

HEADERS = response_headers(
    b"text/event-stream; charset=utf-8",
    extra=[(b"x-accel-buffering", b"no")],  # nginx: pass each event on at once
)


def _anything_active() -> bool:
    return any(m.active_count for m in _registry.open_managers)


async def stream(
    receive: Receive,
    send: Send,
    recorder: Recorder,
    snapshot: Callable[[], Awaitable[object]],
    farewell: Callable[[ShutdownNotice], object],
    *,
    live: bool = False,
) -> None:
    """Send the stream until the client disconnects, the server is told to stop, or the call is
    cancelled.

    ``await snapshot()`` returns the JSON-able object of one event; ``farewell(notice)`` that of
    the last one, ``shutdown``, sent once a shutdown is announced (at once if it was before the
    stream began), after which the stream ends. ``live``: there is more than the tasks to show
    (durable queues), so send a snapshot every :data:`REFRESH` seconds even when no task is
    active. Cancellation ends the stream at once (no shutdown wait).
    """
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
        waits = _Waits()
        nursery.start_soon(waits.watch)
        await send(
            {
                "type": "http.response.body",
                "body": f"retry: {RETRY_MS}\n\n".encode(),
                "more_body": True,
            }
        )
        while waits.notice is None:
            version = recorder.version
            data = json.dumps(await snapshot(), separators=(",", ":"))
            body = f"event: snapshot\ndata: {data}\n\n".encode()
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await waits.wait(None, COALESCE)
            while waits.notice is None:
                active = live or _anything_active()
                changed = functools.partial(recorder.wait_for_change, version)
                if await waits.wait(changed, REFRESH if active else HEARTBEAT) or active:
                    break
                if waits.notice is None:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": b": heartbeat\n\n",
                            "more_body": True,
                        }
                    )
        data = json.dumps(farewell(waits.notice), separators=(",", ":"))
        body = f"event: shutdown\ndata: {data}\n\n".encode()
        await send({"type": "http.response.body", "body": body, "more_body": False})
        nursery.cancel_scope.cancel()  # the disconnect watcher


@final
class _Waits:
    """The waits of one stream, each ended early by the shutdown notice."""

    __slots__ = ("_scope", "notice")

    def __init__(self) -> None:
        self.notice = shutdown_notice()
        self._scope: trio.CancelScope | None = None

    async def watch(self) -> None:
        notice = await wait_for_shutdown_notice()
        self.notice = notice
        if self._scope is not None:
            self._scope.cancel()

    async def wait(self, until: Callable[[], Awaitable[object]] | None, seconds: float) -> bool:
        """Wait at most ``seconds`` for ``until()`` (None: only the time); True if it returned,
        False on the timeout or the notice. Only waits are ended early, never a send: an event
        is never cut in the middle."""
        if self.notice is not None:
            return False
        with trio.move_on_after(seconds) as scope:
            self._scope = scope
            try:
                if until is None:
                    await trio.sleep_forever()
                else:
                    await until()
                    return True
            finally:
                self._scope = None
        return False


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
