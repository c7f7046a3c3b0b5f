"""AppActivity: an ASGI app wrapped so that a test can wait until its background work is done.

A request's tasks live in its manager, which ``TaskMiddleware`` closes before the request's ASGI
call returns; so "every request's tasks are done" is "no http call is in flight". The call can
end after the client got its response (after-response tasks run after the final body), which is
why the calls are counted rather than the responses. The app's own tasks live in the app
manager, which ``TaskMiddleware`` puts in the lifespan ``state``.
"""

from __future__ import annotations

from typing import Any, final

import trio

from .._core._manager import TaskManager
from ..asgi._types import APP_TASKS_KEY, Receive, Scope, Send, WrappedApp


@final
class AppActivity:
    """An ASGI app that counts its http calls in flight and finds its app task manager.

    The wrapped app is called unchanged; for http and websocket scopes without a ``state`` (a
    transport that does not run the lifespan protocol, such as ``httpx.ASGITransport``) it adds
    a copy of the lifespan state, as ASGI servers do.
    """

    __slots__ = ("_app", "_calls", "_no_calls", "_state")

    def __init__(self, app: WrappedApp) -> None:
        self._app = app
        self._calls = 0
        self._no_calls: trio.Event | None = None
        self._state: dict[str, Any] | None = None

    @property
    def state(self) -> dict[str, Any] | None:
        """The lifespan state, once the lifespan call began (None without a lifespan)."""
        return self._state

    @property
    def app_manager(self) -> TaskManager | None:
        """The app task manager that ``TaskMiddleware`` put in the lifespan state, if any."""
        found = None if self._state is None else self._state.get(APP_TASKS_KEY)
        return found if isinstance(found, TaskManager) else None

    @property
    def calls_in_flight(self) -> int:
        """How many http calls of the app have begun and not returned."""
        return self._calls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            state = scope.get("state")
            if not isinstance(state, dict):
                state = scope["state"] = {}
            self._state = state
            await self._app(scope, receive, send)
            return
        if self._state is not None and "state" not in scope:
            scope["state"] = dict(self._state)
        if kind != "http":
            await self._app(scope, receive, send)
            return
        self._calls += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._calls -= 1
            if not self._calls and self._no_calls is not None:
                self._no_calls.set()
                self._no_calls = None

    async def wait_idle(self) -> None:
        """Return once no http call is in flight and the app manager has no active task.

        Both at the same moment: a request may start app tasks, and an app task may make
        requests, so each wait is followed by a fresh look at the other. No clock is involved:
        the wait ends when the last call returns or the app manager's last task ends.
        Requests that the server has not yet handed to the app (sent, but not answered) are not
        seen; every request whose response the client has received is. Websocket connections
        are not waited for. Cancelling the caller stops the wait only.
        """
        await trio.lowlevel.checkpoint()
        while True:
            if self._calls:
                if self._no_calls is None:
                    self._no_calls = trio.Event()
                await self._no_calls.wait()
                continue
            manager = self.app_manager
            if manager is not None and manager.active_count:
                await manager.wait_idle()
                continue
            return
