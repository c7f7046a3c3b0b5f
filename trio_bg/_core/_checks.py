"""Option checks shared by the manager, the middleware and the runner: exact messages."""

from __future__ import annotations

import math


def check_seconds(what: str, value: object, *, allow_inf: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {type(value).__name__}")
    if math.isnan(value) or value < 0 or (value == math.inf and not allow_inf):
        raise ValueError(f"{what} must be a non-negative number of seconds, got {value!r}")
    return float(value)


def check_cap(what: str, value: object, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int or None, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be None or >= {minimum}, got {value}")
    return value


def check_count(what: str, value: object, minimum: int) -> int:
    """An int >= ``minimum`` (None refused, unlike :func:`check_cap`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return value


def check_name(what: str, value: object) -> str:
    """A non-empty str (a task's, group's or manager's name): a wrong kind is a TypeError, an
    empty str a ValueError."""
    if type(value) is not str:
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must be a non-empty string")
    return value


def check_optional_str(what: str, value: object) -> None:
    """None, or a non-empty str: a wrong kind is a TypeError, an empty str a ValueError."""
    if value is None:
        return
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str or None, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must be a non-empty str or None, got ''")


def check_handler(what: str, handler: object) -> None:
    if handler is not None and not callable(handler):
        raise TypeError(f"{what} must be callable or None, got {type(handler).__name__}")
