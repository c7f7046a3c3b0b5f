"""trio_bg runs under trio only: the one check, and the one message, of every entry point.

Every entry point that can be reached from another event loop (a manager, the middleware's
lifespan and requests, the dashboard, ``serve``, the testing helpers, a durable queue) makes this
check before it touches trio, so asyncio gets one clear ``RuntimeError`` instead of whatever trio
raises first (``'RunContext' object has no attribute 'runner'``).
"""

from __future__ import annotations

import sniffio


def not_trio() -> str | None:
    """The message to refuse with when the running async library is not trio, else None."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        library = "no async library"
    if library == "trio":
        return None
    return (
        f"trio_bg needs trio, not {library}: run Hypercorn with --worker-class trio "
        "(hypercorn --worker-class trio module:app), or python -m trio_bg serve module:app"
    )


def require_trio() -> None:
    """Raise ``RuntimeError`` with :func:`not_trio`'s message unless running under trio.

    Called once per request (by every manager's entry): under trio, one sniffio call.
    """
    if sniffio.current_async_library() != "trio":
        raise RuntimeError(not_trio())
