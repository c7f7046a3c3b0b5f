"""Telling an outer cancellation apart from a task's own failure."""

from __future__ import annotations

from typing import cast

import trio


def split_cancelled(
    group: BaseExceptionGroup[BaseException],
) -> tuple[BaseExceptionGroup[BaseException] | None, BaseExceptionGroup[BaseException] | None]:
    return group.split(trio.Cancelled)


def separate_cancelled(exc: BaseException) -> tuple[BaseException, BaseException | None]:
    """Split a failure that also carries an outer cancellation into (failure, cancellation)."""
    if isinstance(exc, BaseExceptionGroup):
        group = cast("BaseExceptionGroup[BaseException]", exc)
        cancelled, rest = split_cancelled(group)
        if cancelled is not None and rest is not None:
            return rest, cancelled
        return group, None
    return exc, None


def all_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return split_cancelled(cast("BaseExceptionGroup[BaseException]", exc))[1] is None
    return False


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception of a (possibly nested) group that is not itself a group."""
    first: BaseException = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        inner = cast("BaseExceptionGroup[BaseException]", first)
        first = inner.exceptions[0]
    return first
