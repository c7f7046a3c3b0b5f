"""Run the inner app's side of the ASGI lifespan protocol, message by message."""

from __future__ import annotations

import math
from typing import final

import trio

from .._core._log import logger
from ._types import Message, Scope, WrappedApp


@final
class InnerLifespan:
    """The wrapped app's lifespan call, driven one exchange at a time.

    :meth:`exchange` hands the inner app one message (``lifespan.startup`` or
    ``lifespan.shutdown``) and returns its reply, or None if the app does not take part in the
    lifespan protocol (it raised, or returned, instead of replying): an app without lifespan
    support still works.
    """

    __slots__ = ("_app", "_inbox", "_inbox_reader", "_replies", "_reply_writer", "_scope")

    def __init__(self, app: WrappedApp, scope: Scope) -> None:
        self._app = app
        self._scope = scope
        self._inbox, self._inbox_reader = trio.open_memory_channel[Message](math.inf)
        self._reply_writer, self._replies = trio.open_memory_channel[Message](math.inf)

    async def run(self) -> None:
        """The inner app's lifespan call; it ends when the app returns or raises.

        Cancellation (the middleware's lifespan call ending) cancels the inner call.
        """
        try:
            async with self._reply_writer:
                await self._app(self._scope, self._receive, self._send)
        except Exception as exc:  # the app does not speak lifespan: go on without it
            logger.debug("inner app raised on the lifespan scope: %r", exc)

    async def _receive(self) -> Message:
        return await self._inbox_reader.receive()

    async def _send(self, message: Message) -> None:
        await self._reply_writer.send(message)

    async def exchange(self, message: Message) -> Message | None:
        """Send one message to the inner app; return its reply, or None if it has no lifespan."""
        try:
            self._inbox.send_nowait(message)
            return await self._replies.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            return None
