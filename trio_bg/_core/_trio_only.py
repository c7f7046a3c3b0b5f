"""trio_bg runs under trio only: the one check, and the one message, of every entry point.

Every entry point that can be reached from another event loop (a manager, the middleware's
lifespan and requests, the dashboard, ``serve``, the testing helpers, a durable queue) makes this
check before it touches trio, so asyncio gets one clear ``RuntimeError`` instead of whatever trio
raises first (``'RunContext' object has no attribute 'runner'``). The core knows no server: its
advice is to run under trio; the ASGI layer and those above it pass their own (which server
option to use), ``trio_bg.asgi``'s ``SERVE_UNDER_TRIO``.
"""

from __future__ import annotations

import sniffio

RUN_UNDER_TRIO = "run it in a trio program (trio.run)"
"""The core's advice: it knows no server."""


def not_trio(advice: str = RUN_UNDER_TRIO) -> str | None:
    """The message to refuse with when the running async library is not trio, else None."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = "no async library"
    if library == "trio":
        return None
    return f"trio_bg needs trio, not {library}: {advice}"


def require_trio(advice: str = RUN_UNDER_TRIO) -> None:
    """Raise ``RuntimeError`` with :func:`not_trio`'s message unless running under trio.

    Called once per request (by every manager's entry): under trio, one sniffio call.
    """
    if sniffio.current_async_library() != "trio":
        raise RuntimeError(not_trio(advice))
