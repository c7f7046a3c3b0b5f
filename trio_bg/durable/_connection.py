"""Telling a lost Redis apart from other errors, and the coredis timeouts a client gets."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, cast

import trio
from coredis.exceptions import ConnectionError as RedisConnectionError

_FAILURES: tuple[type[BaseException], ...] = (
    RedisConnectionError,  # refused, reset, closed, LOADING (BusyLoadingError)
    TimeoutError,  # coredis stream_timeout / connect_timeout
    trio.TooSlowError,  # coredis max_idle_time (anyio's fail_after under trio)
    OSError,
)


def is_connection_failure(exc: BaseException) -> bool:
    """True if ``exc`` means Redis could not be reached or stopped answering.

    coredis raises from its own task groups, so the error may come wrapped in an exception
    group: a group counts if every leaf is such a failure or a ``trio.Cancelled`` that the
    failure caused.
    """
    if isinstance(exc, BaseExceptionGroup):
        leaves = list(_leaves(cast("BaseExceptionGroup[BaseException]", exc)))
        failures = [e for e in leaves if not isinstance(e, trio.Cancelled)]
        return bool(failures) and all(is_connection_failure(e) for e in failures)
    return isinstance(exc, _FAILURES)


def first_failure(exc: BaseException) -> BaseException:
    """The first leaf of a group that is not a ``trio.Cancelled`` (``exc`` itself if no group)."""
    for leaf in _leaves(exc):
        if not isinstance(leaf, trio.Cancelled):
            return leaf
    return exc


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        for inner in group.exceptions:
            yield from _leaves(inner)
    else:
        yield exc


def client_options(*, block_seconds: float, connect_timeout: float) -> dict[str, Any]:
    """coredis options for a client whose longest command blocks ``block_seconds``.

    streaq's worker blocks in XREADGROUP for its idle (reclaim) timeout. A read timeout
    (``stream_timeout``) or an idle-connection limit (``max_idle_time``) shorter than that kills
    the worker when the queue is quiet, so both are 1.5 times the block time, plus a second.
    """
    read_timeout = 1.5 * block_seconds + 1.0
    return {
        "stream_timeout": read_timeout,
        "max_idle_time": math.ceil(read_timeout),
        "connect_timeout": connect_timeout,
    }
