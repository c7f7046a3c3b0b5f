"""Shutdown as a dashboard user sees it: when the server is told to stop, every event stream
sends one last ``shutdown`` event (what the stop waits for and drops, with the deadlines) and
ends, so an open tab holds nothing.

Under a real ``python -m trio_bg serve`` subprocess, read by a real SSE client (httpx streaming),
on the real clock: SIGTERM with an open stream must exit about as fast as with none, not after
the server's graceful timeout (5 s here). And in-process, the two other ways a shutdown is
announced: ``lifespan.shutdown`` (servers trio_bg does not run) and a stream opened after it.
Figures (``pytest -s``) are in docs/reliability.md.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from tests.serve_process import start_server
from trio_bg._shutdown_notice import announce_shutdown, shutdown_notice
from trio_bg.asgi import TaskMiddleware, app_tasks
from trio_bg.asgi._types import Message, Receive, Scope, Send
from trio_bg.dashboard import Dashboard
from trio_bg.testing import run_lifespan

GRACE = 5.0  # the server's graceful timeout: what an open tab used to hold every stop for


def events_of(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any], float]]:
    """The events of a stream as they come: (event, data, when received), until it ends."""
    name = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield name, json.loads(line.removeprefix("data: ")), time.monotonic()


def stop_and_time(tmp_path: Path, *, with_stream: bool) -> tuple[float, int, list[Any], str]:
    """Serve tests.apps.dashboard_app with ``--grace 5``, start one app task, maybe open an event
    stream, SIGTERM: (seconds from the signal to the exit, exit status, the stream's events after
    the first snapshot, the server's log)."""
    tmp_path.mkdir()
    proc, url, log = start_server("tests.apps.dashboard_app:app", tmp_path, "--grace", str(GRACE))
    try:
        assert httpx.get(f"{url}/forever").status_code == 200
        received: list[Any] = []
        first = threading.Event()
        reader: threading.Thread | None = None
        if with_stream:

            def read() -> None:
                with (
                    httpx.Client(timeout=20) as client,
                    client.stream("GET", f"{url}/dashboard/api/events") as response,
                ):
                    assert response.status_code == 200
                    for event in events_of(response):  # returns when the server ends it
                        received.append(event)
                        first.set()
                received.append(("end", {}, time.monotonic()))

            reader = threading.Thread(target=read)
            reader.start()
            assert first.wait(10), "no first snapshot"
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        took = time.monotonic() - sent
        if reader is not None:
            reader.join(10)
            assert not reader.is_alive()
        assert received[:1] == [] or received[0][0] == "snapshot"
        return took, code, [(n, d, at - sent) for n, d, at in received[1:]], log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_sigterm_with_an_open_stream_sends_shutdown_ends_it_and_exits_at_once(
    tmp_path: Path,
) -> None:
    took, code, events, log = stop_and_time(tmp_path / "stream", with_stream=True)
    none_took, none_code, _, _ = stop_and_time(tmp_path / "none", with_stream=False)
    print(f"\nSIGTERM to exit, one app task (grace_period 0.5 s), graceful_timeout {GRACE} s: "
          f"open event stream {took:.2f} s, none {none_took:.2f} s")  # fmt: skip
    assert (code, none_code) == (0, 0)
    # The app's own grace period (0.5 s) is all either waits for; not the server's 5 s.
    assert took < GRACE / 2, log
    assert abs(took - none_took) < 1.0, (took, none_took)

    assert [name for name, _, _ in events] == ["shutdown", "end"]
    (_, notice, at), (_, _, ended) = events
    assert at < 1.0 and ended - at < 0.5  # sent at the signal, and the stream ended with it
    assert notice["reason"] == "SIGTERM"
    assert 4.0 < notice["requests_cancel_in"] <= GRACE
    (app,) = notice["managers"]
    assert (app["manager"], app["kind"], app["shielded"]) == ("app", "manager", [])
    (forever,) = app["will_cancel"]
    assert forever["name"] == "forever"
    assert 4.5 < forever["in"] <= GRACE + 0.5  # the requests' 5 s, then the app's grace
    assert forever["in"] == app["grace_left"]
    assert {t["name"] for m in notice["snapshot"]["managers"] for t in m["active"]} == {"forever"}
    assert "received: shutting down gracefully" in log


async def inner(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")
    app_tasks(scope).start_soon_named("ledger", trio.sleep_forever, shield=True)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class Client:
    """One ASGI http call: what it receives (nothing until told to disconnect), what it sent."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.disconnect = trio.Event()

    async def receive(self) -> Message:
        await self.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def events(self) -> list[str]:
        body = b"".join(m.get("body", b"") for m in self.sent[1:]).decode()
        return [part.partition("\n")[0] for part in body.split("\n\n") if part.startswith("event:")]

    def last(self) -> dict[str, Any]:
        data = self.sent[-1]["body"].decode().partition("data: ")[2]
        last: dict[str, Any] = json.loads(data)
        return last


def events_scope() -> Scope:
    return {
        "type": "http", "method": "GET", "path": "/api/events", "root_path": "",
        "query_string": b"", "headers": [(b"host", b"127.0.0.1:8000")],
        "client": ("127.0.0.1", 5000),
    }  # fmt: skip


async def test_lifespan_shutdown_announces_it_for_servers_that_are_not_ours(
    dashboards: list[Dashboard], autojump_clock: trio.testing.MockClock
) -> None:
    dashboard = Dashboard(local_only=True)
    dashboards.append(dashboard)
    app = TaskMiddleware(inner, grace_period=1.0, shield_timeout=2.0)
    client = Client()
    async with trio.open_nursery() as nursery:
        async with run_lifespan(app) as running:
            await running.app(
                {**events_scope(), "path": "/x"}, client.receive, client.send
            )  # starts the shielded app task "ledger"
            client.sent.clear()
            nursery.start_soon(dashboard, events_scope(), client.receive, client.send)
            await trio.testing.wait_all_tasks_blocked()
            assert client.events() == ["event: snapshot"]
            assert shutdown_notice() is None
            start = trio.current_time()
        # The block's end sent lifespan.shutdown: announced before the app manager closed.
        notice = shutdown_notice()
        assert notice is not None and notice.reason == "lifespan.shutdown"
        assert notice.requests_grace is None
    assert client.events() == ["event: snapshot", "event: shutdown"]
    assert client.sent[-1]["more_body"] is False  # the stream has ended, the client is not gone
    last = client.last()
    assert (last["reason"], last["requests_cancel_in"]) == ("lifespan.shutdown", None)
    (card,) = last["managers"]
    assert card["will_cancel"] == []
    (ledger,) = card["shielded"]
    assert (ledger["name"], ledger["cap_in"]) == ("ledger", 2.0)
    assert trio.current_time() - start == pytest.approx(2.0)  # capped at shield_timeout


async def test_a_stream_opened_after_the_announcement_says_goodbye_at_once(
    dashboards: list[Dashboard],
) -> None:
    dashboard = Dashboard(local_only=True)
    dashboards.append(dashboard)
    assert announce_shutdown("SIGINT", requests_grace=3.0)
    assert not announce_shutdown("SIGTERM")  # the first announcement wins
    client = Client()
    with trio.fail_after(2):
        await dashboard(events_scope(), client.receive, client.send)
    assert client.events() == ["event: shutdown"]
    assert client.sent[-1]["more_body"] is False
    last = client.last()
    assert last["reason"] == "SIGINT"
    assert last["requests_cancel_in"] == pytest.approx(3.0, abs=0.1)
    assert last["managers"] == []

    # A server that starts later in the run forgets it: streams live again.
    async with run_lifespan(TaskMiddleware(inner)):
        assert shutdown_notice() is None
        live = Client()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dashboard, events_scope(), live.receive, live.send)
            await trio.testing.wait_all_tasks_blocked()
            assert live.events() == ["event: snapshot"]
            live.disconnect.set()
    assert live.sent[-1].get("more_body") is True  # ended by the disconnect, not by a goodbye
