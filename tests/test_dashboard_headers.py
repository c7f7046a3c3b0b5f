"""Every answer of the dashboard carries the security headers its page promises: every route,
every method, every status (the event stream, the errors, a 500 of its own), served by a real
Hypercorn and read off a raw socket (the stream never ends by itself)."""

from __future__ import annotations

import logging
import sys

import pytest
import trio

from tests.asgi_server import HEADER_END, read_until, running
from tests.test_dashboard_api import TOKEN, dispatching
from trio_bg.dashboard import Dashboard
from trio_bg.dashboard._headers import SECURITY

PROMISED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}
ROUTES = [  # (method, path under /dashboard, with the token, the status it answers)
    ("GET", "", True, 308),
    ("GET", "/", True, 200),
    ("GET", "/", False, 403),
    ("POST", "/", True, 405),
    ("GET", "/static/dashboard.js", False, 200),
    ("GET", "/static/dashboard.css", False, 200),
    ("POST", "/static/dashboard.js", False, 405),
    ("GET", "/api/tasks", True, 200),
    ("GET", "/api/tasks", False, 403),
    ("DELETE", "/api/tasks", True, 405),
    ("GET", "/api/tasks/task-99999999", True, 404),
    ("PUT", "/api/tasks/task-99999999", True, 405),
    ("POST", "/api/tasks/task-99999999/cancel", True, 404),
    ("GET", "/api/tasks/task-99999999/cancel", True, 405),
    ("GET", "/api/tasks/task-1/other", True, 404),
    ("GET", "/api/events", True, 200),
    ("GET", "/api/events", False, 403),
    ("POST", "/api/events", True, 405),
    ("GET", "/metrics", True, 200),
    ("POST", "/metrics", True, 405),
    ("GET", "/nowhere", True, 404),
    ("GET", "/nowhere", False, 403),
]


async def head_of(
    host: str, port: int, method: str, path: str, token: bool
) -> tuple[int, dict[str, str]]:
    """Send one request on a fresh connection; return the status and headers of the answer
    (the body, an event stream's too, is not read)."""
    auth = f"Authorization: Bearer {TOKEN}\r\n" if token else ""
    request = (
        f"{method} /dashboard{path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    with trio.fail_after(5):
        async with await trio.open_tcp_stream(host, port) as stream:
            await stream.send_all(request.encode())
            head = (await read_until(stream, HEADER_END)).partition(HEADER_END)[0].decode()
    status_line, *lines = head.split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"{name} sent twice"
        headers[name.lower()] = value.strip()
    return int(status_line.split()[1]), headers


def test_one_place_holds_the_promised_headers() -> None:
    assert {name.decode(): value.decode() for name, value in SECURITY} == PROMISED


async def test_every_route_method_and_status_carries_the_security_headers(
    dashboards: list[Dashboard], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dashboard = Dashboard(token=TOKEN)
    dashboards.append(dashboard)
    seen: set[int] = set()

    async def check(method: str, path: str, token: bool, status: int) -> dict[str, str]:
        got, headers = await head_of(server.host, server.port, method, path, token)
        assert got == status, (method, path, token)
        for name, value in PROMISED.items():
            assert headers.get(name) == value, (method, path, status, name)
        seen.add(got)
        return headers

    async with running(dispatching(dashboard, None)) as server:
        for route in ROUTES:
            await check(*route)
        stream = await check("GET", "/api/events", True, 200)
        assert stream["content-type"] == "text/event-stream; charset=utf-8"
        assert "content-length" not in stream

        # /metrics without prometheus_client: 503
        monkeypatch.setitem(sys.modules, "prometheus_client", None)
        await check("GET", "/metrics", True, 503)
        monkeypatch.undo()

        # A failure of the dashboard's own: a 500 with the headers, logged, not raised.
        async def broken(self: Dashboard) -> None:
            raise ZeroDivisionError("a bug")

        monkeypatch.setattr(Dashboard, "_process", broken)
        with caplog.at_level(logging.ERROR, "trio_bg"):
            await check("GET", "/api/tasks", True, 500)
    assert seen == {200, 308, 403, 404, 405, 500, 503}
    (record,) = [r for r in caplog.records if r.name == "trio_bg"]
    assert record.getMessage() == "dashboard: GET '/dashboard/api/tasks' failed"
    assert record.exc_info is not None and isinstance(record.exc_info[1], ZeroDivisionError)
