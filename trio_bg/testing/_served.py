"""serve_app: the app under a real Hypercorn (trio worker) in this process, with a client.

httpx and Hypercorn are imported when ``serve_app`` is called, so that ``trio_bg.testing`` (a
pytest plugin, loaded by every pytest run once trio-bg is installed) imports without them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, cast, final

import trio

from .._core._checks import check_seconds
from .._core._manager import TaskManager
from .._core._trio_only import require_trio
from ..asgi._advice import SERVE_UNDER_TRIO
from ..asgi._types import WrappedApp
from ._activity import AppActivity

if TYPE_CHECKING:
    import httpx


@final
class ServedApp:
    """An app being served by :func:`serve_app`: its address, a client, and :meth:`wait_idle`."""

    __slots__ = ("_activity", "client", "host", "port", "url")

    def __init__(
        self, activity: AppActivity, *, url: str, host: str, port: int, client: httpx.AsyncClient
    ) -> None:
        self._activity = activity
        self.url = url
        """The base URL, ``http://127.0.0.1:<port>``."""
        self.host = host
        self.port = port
        self.client = client
        """An ``httpx.AsyncClient`` whose ``base_url`` is :attr:`url` (closed on exit)."""

    @property
    def app_manager(self) -> TaskManager | None:
        """The app task manager (``TaskMiddleware``'s, found in the lifespan state), or None."""
        return self._activity.app_manager

    async def wait_idle(self) -> None:
        """Return once every request's tasks and the app's tasks are done.

        A request's tasks are done when its ASGI call has returned, which can be after the
        client got its response (after-response tasks run once the final body was sent); the
        app's tasks are those of the app manager. Waits for both at once, with no sleep and no
        polling: the wait ends when the last call returns and the app manager is idle. Requests
        the server has not yet handed to the app, and websocket connections, are not waited
        for. Cancelling the caller stops the wait only.
        """
        await self._activity.wait_idle()

    def __repr__(self) -> str:
        return f"<ServedApp {self.url}>"


@asynccontextmanager
async def serve_app(
    app: WrappedApp,
    *,
    graceful_timeout: float = 1.0,
    client_timeout: float = 10.0,
    limits: httpx.Limits | None = None,
) -> AsyncGenerator[ServedApp, None]:
    """Serve ``app`` with Hypercorn's trio worker on a free port of 127.0.0.1 for the block.

    ``async with serve_app(app) as served:`` runs the ASGI lifespan (``lifespan.startup``
    before the block), gives ``served.client``, an ``httpx.AsyncClient`` on ``served.url``, and
    ``await served.wait_idle()``. Leaving the block closes the client and shuts the server down
    gracefully: accepting stops, open request calls get ``graceful_timeout`` seconds (then
    Hypercorn cancels them), then ``lifespan.shutdown`` closes the app manager. The block returns
    once Hypercorn's ``serve()`` has returned, so whatever the app did at shutdown is done.

    The server runs in a nursery of its own (not pytest-trio's ``nursery`` fixture, which is
    cancelled at the end of a test, so the lifespan shutdown would never run). Hypercorn's error
    log goes to the ``hypercorn.error`` logger (so ``caplog`` sees it); there is no access log.

    Args:
        app: the ASGI app, usually wrapped in :class:`trio_bg.asgi.TaskMiddleware`.
        graceful_timeout: seconds open requests get once the shutdown began.
        client_timeout: the client's timeout, in seconds.
        limits: the client's connection limits (httpx's defaults if None).

    An exception from the block comes out unchanged, after the graceful shutdown. Cancelling
    the block cancels the server without one.
    """
    require_trio(SERVE_UNDER_TRIO)
    import httpx
    import hypercorn.trio
    from hypercorn.config import Config

    check_seconds("graceful_timeout", graceful_timeout, allow_inf=False)
    # Hypercorn's signature also admits WSGI apps, whose types are partly unknown to pyright.
    hypercorn_serve = cast(
        "Callable[..., Awaitable[None]]",
        hypercorn.trio.serve,  # pyright: ignore[reportUnknownMemberType]
    )
    config = Config()
    config.bind = ["127.0.0.1:0"]  # a free port; serve() reports the one it got
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # a Logger is used as is
    activity = AppActivity(app)
    shutdown = trio.Event()
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            functools.partial(hypercorn_serve, activity, config, shutdown_trigger=shutdown.wait)
        )
        url = binds[0]
        host, _, port = url.removeprefix("http://").rpartition(":")
        try:
            async with httpx.AsyncClient(
                base_url=url, timeout=client_timeout, limits=limits or httpx.Limits()
            ) as client:
                yield ServedApp(activity, url=url, host=host, port=int(port), client=client)
        except Exception as exc:
            failure = exc  # raised once the server has stopped, not wrapped in a group
        finally:
            shutdown.set()  # graceful: connections first, then lifespan.shutdown
    if failure is not None:
        try:
            raise failure
        finally:
            failure = None
