"""JSON for durable jobs, never pickle: arguments checked at enqueue, exceptions as plain dicts."""

from __future__ import annotations

import json
import traceback
from collections.abc import Sequence
from typing import Any

from .._core._text import safe_str

ERROR_KEY = "__trio_bg_error__"
"""The key of the dict a worker stores in place of an exception a job raised."""


def type_name(cls: type) -> str:
    """``ValueError`` for a builtin, ``package.module.Class`` for anything else."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _encode(value: object) -> object:
    if isinstance(value, BaseException):
        return {
            ERROR_KEY: {
                "type": type_name(type(value)),
                "message": safe_str(value),  # a __str__ may raise
                "traceback": "".join(traceback.format_exception(value)),
            }
        }
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: object) -> str:
    """JSON text for streaq's records; an exception becomes ``{ERROR_KEY: {type, message,
    traceback}}``, so a job that raised can always be stored and acked (never a poison
    message)."""
    return json.dumps(value, default=_encode, separators=(",", ":"))


def loads(raw: str | bytes) -> Any:
    return json.loads(raw)


def _refuse(value: object) -> object:
    raise TypeError


def encode_arguments(job_name: str, args: Sequence[object]) -> str:
    """The arguments as a JSON array; TypeError naming the first one JSON cannot carry."""
    try:
        return json.dumps(list(args), default=_refuse, separators=(",", ":"))
    except (TypeError, ValueError):
        check_arguments(job_name, args)  # raises, naming the argument
        raise


def encode_result(job_name: str, value: object) -> str:
    """The value a job returned as JSON; TypeError if it cannot be stored."""
    try:
        return json.dumps(value, default=_refuse, separators=(",", ":"))
    except (TypeError, ValueError):
        check_result(job_name, value)  # raises, naming the type
        raise


def check_arguments(job_name: str, args: Sequence[object]) -> None:
    """Raise TypeError naming the first argument JSON cannot carry, and the type it holds."""
    for index, arg in enumerate(args):

        def refuse(value: object, index: int = index) -> object:
            raise TypeError(
                f"argument {index} of durable job {job_name!r} holds a "
                f"{type(value).__name__}, which JSON cannot carry (durable jobs never pickle)"
            )

        json.dumps(arg, default=refuse)


_SCALARS = frozenset({str, int, float, bool, type(None)})
"""Exact types JSON always carries (subclasses are checked by encoding: they may not)."""


def check_result(job_name: str, value: object) -> None:
    """Raise TypeError if the value a job returned cannot be stored as JSON."""
    if type(value) in _SCALARS:  # most results: no encoding just to check
        return

    def refuse(inner: object) -> object:
        raise TypeError(
            f"durable job {job_name!r} returned a value holding a {type(inner).__name__}, "
            "which JSON cannot carry"
        )

    json.dumps(value, default=refuse)
