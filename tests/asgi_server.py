"""A real Hypercorn (trio worker) inside a pytest-trio test, and small raw-socket helpers.

``running(app)`` serves ``app`` on a free port of 127.0.0.1 in a nursery of its own (pytest-trio's
``nursery`` fixture is cancelled hard at the end of a test, so ``lifespan.shutdown`` would never
run there), yields a :class:`Server` with a real ``httpx.AsyncClient``, and on exit closes the
client and triggers Hypercorn's graceful shutdown: accepting stops, open request calls get
``graceful_timeout`` seconds, then the lifespan is shut down. The block returns once ``serve()``
has returned, so everything the app did at shutdown is visible after it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

HEADER_END = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class Server:
    """A running Hypercorn: its base URL, host and port, and a client bound to it."""

    url: str
    host: str
    port: int
    client: httpx.AsyncClient


@asynccontextmanager
async def running(
    app: Any,
    *,
    graceful_timeout: float = 1.0,
    limits: httpx.Limits | None = None,
) -> AsyncIterator[Server]:
    """Serve ``app`` with Hypercorn's trio worker for the duration of the block."""
    config = Config()
    config.bind = ["127.0.0.1:0"]  # a free port; serve() reports the real one
    config.graceful_timeout = graceful_timeout
    config.accesslog = None
    # A Logger object is used as is: no stderr handler, records propagate to caplog.
    config.errorlog = logging.getLogger("hypercorn.error")
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            functools.partial(serve, app, config, shutdown_trigger=shutdown.wait)
        )
        url = binds[0]
        host, _, port = url.removeprefix("http://").rpartition(":")
        try:
            async with httpx.AsyncClient(
                base_url=url, timeout=10, limits=limits or httpx.Limits()
            ) as client:
                yield Server(url=url, host=host, port=int(port), client=client)
        finally:
            shutdown.set()  # graceful: connections first, then lifespan.shutdown


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
