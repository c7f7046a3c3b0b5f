"""The demo app (``python -m trio_bg demo``): its dashboard, and what a newcomer found there.

The demo's work takes real seconds (a 2 s e-mail, a 3 s report), so it is driven here through
its ASGI interface with scripted messages under the autojump clock: the lifespan over memory
channels, each request as one call.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trio_bg._core import _registry
from trio_bg._demo import Demo, orders_placed
from trio_bg.asgi._types import Message


@pytest.fixture(scope="module")
def demo() -> Iterator[Demo]:
    """The demo, made here rather than when the tests are collected: making it makes its
    dashboard, which installs the recorder process-wide. It is removed after these tests, so
    that the rest of the suite runs without it."""
    made = Demo()
    yield made
    made.dashboard.close()


@asynccontextmanager
async def demo_lifespan(demo: Demo) -> AsyncIterator[None]:
    """Run the demo app's lifespan around the block (its app manager is open inside)."""
    to_app, app_inbox = trio.open_memory_channel[Message](1)
    app_outbox, from_app = trio.open_memory_channel[Message](1)
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(demo.app, scope, app_inbox.receive, app_outbox.send)
        await to_app.send({"type": "lifespan.startup"})
        assert (await from_app.receive())["type"] == "lifespan.startup.complete"
        yield
        await to_app.send({"type": "lifespan.shutdown"})
        assert (await from_app.receive())["type"] == "lifespan.shutdown.complete"


async def request(
    demo: Demo,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    accept: bytes = b"application/json",
    client: str = "127.0.0.1",
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request to the demo app; returns once its call (and its request tasks) are done."""
    sent: list[Message] = []
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:8000"), (b"accept", accept)],
        "client": (client, 50000),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await demo.app(scope, receive, send)
    start, *bodies = sent
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in bodies)


async def test_order_ids_do_not_skip_and_the_report_counts_the_orders(
    demo: Demo,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with demo_lifespan(demo):
        first = json.loads((await request(demo, "POST", "/orders"))[2])["order_id"]
        second = json.loads((await request(demo, "POST", "/orders"))[2])["order_id"]
        assert second == first + 1
        status, _, body = await request(demo, "POST", "/reports")
        assert status == 202
        task = json.loads(body)["task"]
        report = json.loads((await request(demo, "GET", f"/tasks/{task}", query=b"wait=1"))[2])
        assert report["state"] == "succeeded"
        assert f"'orders': {len(orders_placed)}" in report["result"]
        third = json.loads((await request(demo, "POST", "/orders"))[2])["order_id"]
        assert third == second + 1  # the report consumed no id


async def test_a_failed_task_is_described_as_failed_with_its_error_and_finished_at(
    demo: Demo,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with demo_lifespan(demo):
        task = json.loads((await request(demo, "POST", "/fail"))[2])["task"]
        status, headers, body = await request(demo, "GET", f"/tasks/{task}", query=b"wait=1")
    assert status == 200  # the description was found; the task's own outcome is in "state"
    assert headers[b"content-type"] == b"application/json"
    detail = json.loads(body)
    assert detail["state"] == "failed"
    assert detail["error"] == {"type": "ConnectionError", "message": "partner API unreachable"}
    assert detail["attempts"] == 3
    assert detail["finished_at"] is not None
    assert detail["finished_at"] >= detail["started_at"] >= detail["created_at"]
    assert "result" not in detail


async def test_request_tasks_are_described_too_and_unknown_ones_answer_404(
    demo: Demo,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with demo_lifespan(demo):
        await request(demo, "POST", "/orders")
        emails = [h for h in _registry.finished if h.name == "confirmation-email"]
        status, _, body = await request(demo, "GET", f"/tasks/{emails[-1].id}")
        assert status == 200
        assert json.loads(body)["result"] == "'sent to buyer@example.com'"
        assert (await request(demo, "GET", "/tasks/task-99999999"))[0] == 404


async def test_a_browser_gets_each_answer_in_a_page_with_a_way_back(
    demo: Demo,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with demo_lifespan(demo):
        # A form button: the work starts, and the browser is sent back to the home page.
        status, headers, _ = await request(demo, "POST", "/photos", accept=b"text/html")
        assert (status, headers[b"location"]) == (303, b"/")
        status, headers, body = await request(demo, "GET", "/tasks", accept=b"text/html,*/*")
        assert status == 200
        assert headers[b"content-type"] == b"text/html; charset=utf-8"
        page = body.decode()
        assert '<a href="/">&larr; back to the demo</a>' in page
        assert "&quot;statistics&quot;" in page  # the JSON, escaped
        home = (await request(demo, "GET", "/", accept=b"text/html"))[2].decode()
        assert '<a href="/dashboard/">Open the live dashboard</a>' in home


async def test_the_dashboard_is_mounted_for_local_clients_only(
    demo: Demo,
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with demo_lifespan(demo):
        status, _, body = await request(demo, "GET", "/dashboard/api/tasks")
        assert status == 200
        assert "app" in [m["name"] for m in json.loads(body)["managers"]]
        assert (await request(demo, "GET", "/dashboard/api/tasks", client="10.0.0.1"))[0] == 403
        page = await request(demo, "GET", "/dashboard/", accept=b"text/html")
        assert page[0] == 200
        assert b'<script src="static/dashboard.js" defer></script>' in page[2]


def test_importing_the_demo_installs_nothing_and_making_it_installs_the_recorder() -> None:
    import subprocess
    import sys

    script = (
        "from trio_bg._core._instruments import GLOBAL\n"
        "from trio_bg import _demo\n"
        "print(len(list(GLOBAL)))\n"
        "demo = _demo.Demo()\n"
        "print(len(list(GLOBAL)))\n"
        "demo.dashboard.close()\n"
        "print(len(list(GLOBAL)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.split() == ["0", "1", "0"]  # only a made Demo's dashboard recorder
