"""Small raw-socket helpers for tests that talk HTTP/1.1 by hand, and ``running``.

The real-Hypercorn harness is the plugin's :func:`trio_bg.testing.serve_app` (a free port of
127.0.0.1, lifespan run, an httpx client, ``wait_idle()``, a graceful shutdown on exit; its
``host`` and ``port`` are what these helpers connect to). ``running`` is the name it had here,
kept for the tests that still use it.
"""

from __future__ import annotations

from typing import Any

import trio

from trio_bg.testing import serve_app

HEADER_END = b"\r\n\r\n"

running = serve_app


async def read_until(stream: trio.SocketStream, marker: bytes) -> bytes:
    """Read from ``stream`` until ``marker`` has been received; return everything read."""
    data = b""
    while marker not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise AssertionError(f"connection closed before {marker!r}; got {data!r}")
        data += chunk
    return data


async def read_to_eof(stream: trio.SocketStream) -> bytes:
    """Read from ``stream`` until the peer closes it."""
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


def get_request(path: str, host: str, port: int, *, extra: str = "") -> bytes:
    """A raw HTTP/1.1 GET request."""
    return f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()


async def respond(send: Any, body: bytes, *, status: int = 200) -> None:
    """Send a complete plain-text response in two messages."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
