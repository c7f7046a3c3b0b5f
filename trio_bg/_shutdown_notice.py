"""The "shutdown announced" signal of a trio run: set once, when the server is told to stop.

``serve`` announces on the first SIGTERM / SIGINT (or when its ``shutdown_trigger`` returns),
before it tells Hypercorn to stop; :class:`~trio_bg.asgi.TaskMiddleware` announces when
``lifespan.shutdown`` arrives, for servers trio_bg does not run. Whoever holds a connection open
for its own reasons (the dashboard's event stream) waits for it, says goodbye and lets go, so
that an open browser tab never holds the server's shutdown for its graceful timeout. The notice
is per trio run (a ``RunVar``): one process can run trio several times (tests do); and a server
that starts in a run where another one stopped clears it (:func:`clear_shutdown_notice`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import final

import trio


@dataclass(frozen=True, slots=True)
class ShutdownNotice:
    """Why and when the server was told to stop."""

    reason: str
    """``"SIGTERM"``, ``"SIGINT"``, ``"shutdown trigger"`` or ``"lifespan.shutdown"``."""
    at: float
    """When, on the wall clock (``time.time()``)."""
    trio_at: float
    """When, on trio's clock."""
    requests_grace: float | None
    """Seconds the server gives open requests before it cancels them (Hypercorn's
    ``graceful_timeout``), counted from ``trio_at``; None when the announcer does not know."""


@final
class _Board:
    __slots__ = ("event", "notice")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.notice: ShutdownNotice | None = None


_BOARD: trio.lowlevel.RunVar[_Board] = trio.lowlevel.RunVar("trio_bg_shutdown_notice")


def _board() -> _Board:
    try:
        return _BOARD.get()
    except LookupError:
        board = _Board()
        _BOARD.set(board)
        return board


def announce_shutdown(reason: str, *, requests_grace: float | None = None) -> bool:
    """Announce that the server was told to stop; the first announcement of a run wins (True),
    later ones change nothing (False). Call it in the trio thread."""
    board = _board()
    if board.notice is not None:
        return False
    board.notice = ShutdownNotice(reason, time.time(), trio.current_time(), requests_grace)
    board.event.set()
    return True


def clear_shutdown_notice() -> None:
    """A server starts: forget an announcement made earlier in this run (a server that stopped
    before, in a program or a test that runs several one after another). An unannounced notice
    is kept, so the streams already waiting on it still hear the next announcement."""
    try:
        board = _BOARD.get()
    except LookupError:
        return
    if board.notice is not None:
        _BOARD.set(_Board())


def shutdown_notice() -> ShutdownNotice | None:
    """The notice of this trio run, or None if no shutdown was announced (or outside a run)."""
    try:
        return _BOARD.get().notice
    except (LookupError, RuntimeError):  # none yet in this run; no run
        return None


async def wait_for_shutdown_notice() -> ShutdownNotice:
    """Return the notice once a shutdown is announced (at once if it was). Cancellation ends
    the wait."""
    board = _board()
    await board.event.wait()
    assert board.notice is not None
    return board.notice
