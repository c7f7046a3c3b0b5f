"""Text that observers can always write: ``safe_str`` never raises and gives valid UTF-8.

A task's name, key, arguments, result and error come from the program and can be anything:
a lone surrogate (``os.fsdecode`` of a filename that is not UTF-8), NUL, megabytes of text, an
exception whose ``__str__`` raises. Prometheus, OpenTelemetry exporters, JSON and log handlers
each break on some of these, so every shipped observer passes such values through here.
"""

from __future__ import annotations

LIMIT = 1000
"""The most characters :func:`safe_str` and :func:`clean` return."""


def clean(text: str, limit: int = LIMIT) -> str:
    """``text`` as valid UTF-8 (a lone surrogate becomes the escape ``\\udcff``), cut to
    ``limit`` characters with an ellipsis. ASCII text of the right length is returned as is."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return text


def safe_str(value: object, limit: int = LIMIT) -> str:
    """``str(value)``, made safe by :func:`clean`; never raises.

    A ``__str__`` that raises (or returns something that is not a str) gives
    ``<unprintable ValueError: RuntimeError in __str__>``.
    """
    if type(value) is str:
        return clean(value, limit)
    try:
        text = str(value)
        if type(text) is not str:
            text = str.__str__(text)
    except Exception as exc:
        return clean(f"<unprintable {type(value).__name__}: {type(exc).__name__} in __str__>")
    return clean(text, limit)


NAME_LIMIT = 200
"""The most characters of a name's repr in a log line or report."""


def quoted(name: str) -> str:
    """``repr(name)`` for a log line: escapes a lone surrogate, cut to :data:`NAME_LIMIT`
    characters (a task name can be megabytes; the line stays readable)."""
    return clean(repr(name), NAME_LIMIT)
