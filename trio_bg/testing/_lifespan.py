"""run_lifespan: the ASGI lifespan protocol for tests that call the app without a server.

``httpx.ASGITransport`` calls the app's http scope only: without the lifespan, ``TaskMiddleware``
never opens its app manager and ``app_tasks(scope)`` fails with "the server did not run the
ASGI lifespan protocol". ``run_lifespan(app)`` runs ``lifespan.startup`` on entry and
``lifespan.shutdown`` on exit, as a server would.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any, final

import trio

from .._core._log import logger
from .._core._trio_only import require_trio
from ..asgi._advice import SERVE_UNDER_TRIO
from ..asgi._types import Message, WrappedApp
from ._activity import AppActivity


@final
class LifespanApp:
    """The app of a :func:`run_lifespan` block, with its lifespan started.

    ``app`` is what to give to the transport (``httpx.ASGITransport(app=running.app)``): the
    app, wrapped so that requests see the lifespan state and :meth:`wait_idle` sees them.
    """

    __slots__ = ("_activity",)

    def __init__(self, activity: AppActivity) -> None:
        self._activity = activity

    @property
    def app(self) -> AppActivity:
        """The ASGI app to call (or to give to ``httpx.ASGITransport``)."""
        return self._activity

    @property
    def state(self) -> dict[str, Any]:
        """The lifespan state (``TaskMiddleware`` keeps the app manager there)."""
        state = self._activity.state
        assert state is not None  # set by the lifespan call, which began before the block
        return state

    async def wait_idle(self) -> None:
        """Return once every request's tasks and the app's tasks are done.

        A request's tasks are done when its ASGI call has returned: the after-response tasks
        run after the final body was sent, possibly after the client got its response. Waits
        for no clock. Cancelling the caller stops the wait only.
        """
        await self._activity.wait_idle()


@asynccontextmanager
async def run_lifespan(app: WrappedApp) -> AsyncGenerator[LifespanApp, None]:
    """Run ``app``'s lifespan for the duration of the block: startup on entry, shutdown on exit.

    Use it with ``httpx.ASGITransport(app=running.app)``. As the ASGI spec asks of a server, an
    app that raises before completing its startup is taken to have no lifespan support: the
    block runs without it (logged at WARNING on the ``trio_bg`` logger).

    Raises:
        RuntimeError: the app sent ``lifespan.startup.failed`` or ``lifespan.shutdown.failed``
            (with its message), or returned from the lifespan call before completing startup.

    An exception from the block comes out unchanged, after the shutdown. Cancelling the block
    cancels the lifespan call without one.
    """
    require_trio(SERVE_UNDER_TRIO)
    activity = AppActivity(app)
    call = _LifespanCall(activity)
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(call.run)
        # Errors are kept and raised once the nursery has exited, so that they come out as
        # themselves, not inside an exception group.
        try:
            await call.exchange("startup")
        except RuntimeError as exc:
            failure = exc
        else:
            try:
                yield LifespanApp(activity)
            except Exception as exc:
                failure = exc
            try:
                await call.exchange("shutdown")
            except RuntimeError as exc:
                failure = failure or exc  # the block's own error matters more
        nursery.cancel_scope.cancel()  # an app still in its lifespan call after shutdown
    if failure is not None:
        try:
            raise failure
        finally:
            failure = None


@final
class _LifespanCall:
    """The app's lifespan call, driven one message at a time."""

    __slots__ = ("_activity", "_error", "_incoming", "_replies", "_reply_send", "_supported")

    def __init__(self, activity: AppActivity) -> None:
        self._activity = activity
        self._incoming = trio.open_memory_channel[Message](math.inf)
        # None: the app's lifespan call has ended.
        self._reply_send, self._replies = trio.open_memory_channel[Message | None](math.inf)
        self._error: Exception | None = None
        self._supported = True

    async def run(self) -> None:
        scope: dict[str, Any] = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": {},
        }
        receive = self._incoming[1].receive
        try:
            await self._activity(scope, receive, self._reply_send.send)
        except Exception as exc:
            self._error = exc
        self._reply_send.send_nowait(None)

    async def exchange(self, step: str) -> None:
        """Send ``lifespan.<step>``; wait for the app's reply."""
        if not self._supported:
            return
        self._incoming[0].send_nowait({"type": f"lifespan.{step}"})
        reply = await self._replies.receive()
        if reply is None:
            error, self._error = self._error, None
            if step == "startup" and error is not None:
                logger.warning(
                    "the app raised %r in its lifespan call; running without lifespan", error
                )
                self._supported = False
                return
            if error is not None:
                raise RuntimeError(f"the app raised in lifespan.{step}") from error
            raise RuntimeError(f"the app returned from its lifespan call before {step} completed")
        if reply["type"] == f"lifespan.{step}.complete":
            return
        if reply["type"] == f"lifespan.{step}.failed":
            raise RuntimeError(f"lifespan {step} failed: {reply.get('message', '')!r}")
        raise RuntimeError(f"expected lifespan.{step}.complete, got {reply['type']!r}")
