"""The headers of every dashboard answer: one place builds them, for every route and status.

The page promises a Content-Security-Policy that admits nothing but its own script, style sheet
and event stream, no framing and no content sniffing; an answer without them (an error, the
event stream) would be the one a browser could be tricked with, so none goes out without them.
"""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]

SECURITY: tuple[tuple[bytes, bytes], ...] = (
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
)
"""Sent with every answer of the dashboard, whatever its status."""


def response_headers(
    content_type: bytes, *, length: int | None = None, extra: Iterable[tuple[bytes, bytes]] = ()
) -> Headers:
    """The headers of one answer: its type, its length (None for a stream), :data:`SECURITY`,
    then ``extra``."""
    headers: Headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    headers.extend(SECURITY)
    headers.extend(extra)
    return headers
