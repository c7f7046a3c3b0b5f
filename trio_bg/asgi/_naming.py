"""``TaskMiddleware(request_name=...)``: the user's way to name requests the framework leaves
unrouted (raw ASGI apps, Quart), without ever using the raw path on its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import final

from .._core._log import logger
from .._core._text import clean
from ._types import Scope

NAME_LIMIT = 200
"""The most characters of a name ``request_name`` gives that are used."""


@final
class RequestNamer:
    """Calls ``request_name(scope)`` and keeps what it gives safe: a str (cleaned and cut to
    :data:`NAME_LIMIT`), or None. A callable that raises, or returns something else, is
    logged once per middleware and the request is named by its method."""

    __slots__ = ("_fn", "_warned")

    def __init__(self, fn: Callable[[Scope], str | None]) -> None:
        if not callable(fn):
            raise TypeError(
                f"request_name must be a callable (scope) -> str | None, got {type(fn).__name__}"
            )
        # Typed as returning anything: what it returns is checked, whatever its annotation says.
        self._fn: Callable[[Scope], object] = fn
        self._warned = False

    def name(self, scope: Scope) -> str | None:
        """The name for the request of ``scope``, or None to keep the method alone."""
        try:
            got = self._fn(scope)
        except Exception:
            self._warn("request_name raised; requests are named by their method", exc_info=True)
            return None
        if got is None:
            return None
        if not isinstance(got, str):
            self._warn(
                f"request_name returned {type(got).__name__}, not a str or None; "
                "requests are named by their method"
            )
            return None
        got = clean(got, NAME_LIMIT)
        return got or None

    def _warn(self, message: str, *, exc_info: bool = False) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(message, exc_info=exc_info)
