"""The dashboard's JSON API and its security, served by a real Hypercorn beside a TaskMiddleware
app (raw ASGI path dispatch, and a Starlette ``Mount``), with a real httpx client."""

from __future__ import annotations

import json
from typing import Any

import prometheus_client
import pytest
import trio
import trio.testing
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

import trio_bg
from tests.asgi_server import HEADER_END, get_request, read_until, respond, running
from tests.conftest import settle
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.asgi._types import Receive, Scope, Send
from trio_bg.dashboard import Dashboard

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TASK_FIELDS = {
    "id", "name", "state", "manager", "group", "key", "timing", "shielded",
    "created_at", "started_at", "finished_at", "age", "wait", "duration",
    "attempts", "retries", "cancel_in", "cap_in", "error", "where", "waiting", "stack",
    "progress",
}  # fmt: skip
MANAGER_FIELDS = {
    "name", "kind", "closed", "statistics", "active", "active_more", "recent", "request",
    "closing",
}  # fmt: skip
PROCESS_FIELDS = {
    "schema", "pid", "now", "version", "show_args", "managers", "requests", "totals",
    "history", "rate", "shutdown", "queues",
}  # fmt: skip


async def wait_here(release: trio.Event) -> str:
    await release.wait()  # the dashboard must name this line
    return "released"


WAIT_LINE = wait_here.__code__.co_firstlineno + 1


def dispatching(
    dashboard: Dashboard, handler: Any, *, returned: trio.Event | None = None
) -> TaskMiddleware:
    """A raw ASGI app: ``/dashboard/...`` goes to the dashboard, the rest to ``handler``.
    ``returned`` is set when a call of the dashboard returns."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/dashboard"):
            scope["root_path"] = scope.get("root_path", "") + "/dashboard"
            await dashboard(scope, receive, send)
            if returned is not None:
                returned.set()
        elif scope["type"] == "http":
            await handler(scope, receive, send)
        else:
            raise RuntimeError("no lifespan")

    return TaskMiddleware(app)


def request_cards(snapshot: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in snapshot["managers"] if m["kind"] == "request"]


async def test_the_api_shows_a_request_with_its_task_waiting_where_it_waits(
    dashboards: list[Dashboard],
) -> None:
    dashboard = Dashboard(token=TOKEN)
    dashboards.append(dashboard)
    release = trio.Event()

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        request_tasks(scope).start_soon_named("hold", wait_here, release, key="k-1")
        await respond(send, b"ok", status=201)

    async with running(dispatching(dashboard, handler)) as server:
        assert (await server.client.post("/orders/17")).status_code == 201
        await settle()
        response = await server.client.get("/dashboard/api/tasks", headers=AUTH)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        snapshot = response.json()
        assert set(snapshot) == PROCESS_FIELDS
        assert snapshot["schema"] == 1
        (card,) = request_cards(snapshot)
        assert set(card) == MANAGER_FIELDS
        assert card["name"] == "POST"  # a raw ASGI app has no route; never the raw path
        assert card["request"]["method"] == "POST"
        assert card["request"]["route"] is None
        assert card["request"]["status"] == 201
        assert card["request"]["age"] >= 0
        (task,) = card["active"]
        assert set(task) == TASK_FIELDS
        assert task["name"] == "hold"
        assert task["state"] == "running"
        assert task["manager"] == "POST"
        assert task["key"] == "k-1"
        assert task["shielded"] is False
        assert task["finished_at"] is None
        assert task["attempts"] == 1
        assert task["where"] == {"function": "wait_here", "file": __file__, "line": WAIT_LINE}
        assert task["stack"][0].startswith("run_task (")
        assert "args" not in task and "result" not in task
        assert card["statistics"]["running"] == 1

        one = await server.client.get(f"/dashboard/api/tasks/{task['id']}", headers=AUTH)
        assert one.status_code == 200
        assert one.json()["where"]["line"] == WAIT_LINE

        release.set()
        await settle()
        done = (await server.client.get(f"/dashboard/api/tasks/{task['id']}", headers=AUTH)).json()
        assert done["state"] == "succeeded"
        assert done["finished_at"] is not None
        assert done["where"] is None
        assert done["duration"] >= 0


async def test_unknown_tasks_answer_404(dashboards: list[Dashboard]) -> None:
    dashboard = Dashboard(token=TOKEN)
    dashboards.append(dashboard)
    async with running(dispatching(dashboard, None)) as server:
        for path in ("/api/tasks/task-999999", "/api/tasks/nonsense", "/api/nothing"):
            response = await server.client.get(f"/dashboard{path}", headers=AUTH)
            assert response.status_code == 404, path
        cancel = await server.client.post("/dashboard/api/tasks/task-999999/cancel", headers=AUTH)
        assert cancel.status_code == 404
        assert cancel.json() == {"error": "no task task-999999"}


async def test_cancel_needs_the_token_and_cancels_the_task(dashboards: list[Dashboard]) -> None:
    dashboard = Dashboard(token=TOKEN)
    dashboards.append(dashboard)
    seen: dict[str, trio_bg.TaskHandle[Any]] = {}

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        seen["task"] = app_tasks(scope).start_soon_named("long", trio.sleep_forever)
        await respond(send, b"ok")

    async with running(dispatching(dashboard, handler)) as server:
        await server.client.post("/work")
        task = seen["task"]
        await settle()
        path = f"/dashboard/api/tasks/{task.id}/cancel"
        refused = await server.client.post(path)
        assert refused.status_code == 403
        wrong = await server.client.post(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        query = await server.client.post(f"{path}?token={TOKEN}")  # a POST needs the header
        assert query.status_code == 403
        await settle()
        assert task.state == trio_bg.TaskState.RUNNING

        response = await server.client.post(path, headers=AUTH)
        assert response.status_code == 200
        assert response.json() == {"id": task.id, "cancelled": True, "state": "running"}
        await settle()
        assert task.state == trio_bg.TaskState.CANCELLED
        again = await server.client.post(path, headers=AUTH)
        assert again.json() == {"id": task.id, "cancelled": False, "state": "cancelled"}
        assert (await server.client.get(path, headers=AUTH)).status_code == 405


async def test_every_route_but_the_static_files_needs_the_token(
    dashboards: list[Dashboard],
) -> None:
    dashboard = Dashboard(token=TOKEN)
    dashboards.append(dashboard)
    async with running(dispatching(dashboard, None)) as server:
        for path in ("/", "/api/tasks", "/api/tasks/task-1", "/metrics", "/api/events"):
            url = f"/dashboard{path}"
            assert (await server.client.get(url)).status_code == 403, path
            bad = await server.client.get(url, headers={"Authorization": "Bearer s3cret-tokeX"})
            assert bad.status_code == 403, path
            assert (await server.client.get(url, params={"token": "wrong"})).status_code == 403
        page = await server.client.get("/dashboard/", headers=AUTH)
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="static/dashboard.js" defer></script>' in page.text
        by_query = await server.client.get("/dashboard/api/tasks", params={"token": TOKEN})
        assert by_query.status_code == 200
        script = await server.client.get("/dashboard/static/dashboard.js")
        assert script.status_code == 200
        assert "textContent" in script.text
        redirect = await server.client.get("/dashboard", params={"token": TOKEN})
        assert redirect.status_code == 308
        assert redirect.headers["location"] == f"/dashboard/?token={TOKEN}"


def scripted_scope(
    client: str, host: bytes, *, method: str = "GET", path: str = "/api/tasks", **headers: bytes
) -> Scope:
    extra = [(name.replace("_", "-").encode(), value) for name, value in headers.items()]
    return {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "client": (client, 50000),
        "headers": [(b"host", host), *extra],
    }


async def call(app: Dashboard, scope: Scope) -> tuple[int, Any]:
    """Drive the ASGI app directly with a scripted scope; return the status and the JSON."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


async def test_local_only_admits_loopback_clients_and_refuses_others(
    dashboards: list[Dashboard],
) -> None:
    dashboard = Dashboard(local_only=True)
    dashboards.append(dashboard)
    assert (await call(dashboard, scripted_scope("127.0.0.1", b"127.0.0.1:8000")))[0] == 200
    assert (await call(dashboard, scripted_scope("::1", b"[::1]:8000")))[0] == 200
    assert (await call(dashboard, scripted_scope("127.0.0.5", b"localhost:8000")))[0] == 200
    status, body = await call(dashboard, scripted_scope("10.0.0.1", b"127.0.0.1:8000"))
    assert (status, body) == (
        403,
        {"error": "forbidden: a valid token or a local client is needed"},
    )
    # A loopback client asking for another host: a page whose domain was re-bound to 127.0.0.1.
    assert (await call(dashboard, scripted_scope("127.0.0.1", b"evil.example:8000")))[0] == 403
    # A cross-site page cannot make a local browser cancel a task.
    cancel = "/api/tasks/task-999999/cancel"
    cross_site = scripted_scope(
        "127.0.0.1", b"localhost:8000", method="POST", path=cancel, origin=b"http://evil.example"
    )
    assert (await call(dashboard, cross_site))[0] == 403
    fetched = scripted_scope(
        "127.0.0.1", b"localhost:8000", method="POST", path=cancel, sec_fetch_site=b"cross-site"
    )
    assert (await call(dashboard, fetched))[0] == 403
    own = scripted_scope(
        "127.0.0.1", b"localhost:8000", method="POST", path=cancel, origin=b"http://localhost:8000"
    )
    assert (await call(dashboard, own))[0] == 404  # admitted: there is no such task


async def test_with_a_token_and_local_only_either_admits(dashboards: list[Dashboard]) -> None:
    dashboard = Dashboard(TOKEN, local_only=True)
    dashboards.append(dashboard)
    remote = scripted_scope("10.0.0.1", b"tasks.example", authorization=f"Bearer {TOKEN}".encode())
    assert (await call(dashboard, remote))[0] == 200
    assert (await call(dashboard, scripted_scope("10.0.0.1", b"tasks.example")))[0] == 403
    assert (await call(dashboard, scripted_scope("127.0.0.1", b"localhost")))[0] == 200


def test_a_dashboard_open_to_everyone_is_refused() -> None:
    with pytest.raises(
        ValueError,
        match=r"^Dashboard\(\) needs a token or local_only=True; it never serves everyone$",
    ):
        Dashboard()
    with pytest.raises(ValueError, match=r"^token must not be empty$"):
        Dashboard("")
    with pytest.raises(TypeError, match=r"^token must be a str or None, got bytes$"):
        Dashboard(b"x")  # type: ignore[arg-type]


async def secret_job(card: str, *, pin: int) -> str:
    await trio.lowlevel.checkpoint()
    return f"charged {card}"


@pytest.mark.parametrize("show_args", [False, True])
async def test_arguments_and_results_only_with_show_args(
    dashboards: list[Dashboard], show_args: bool
) -> None:
    dashboard = Dashboard(token=TOKEN, show_args=show_args)
    dashboards.append(dashboard)

    seen: dict[str, trio_bg.TaskHandle[Any]] = {}

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        seen["task"] = request_tasks(scope).add_task(secret_job, "4111-1111", pin=1234)
        await respond(send, b"ok")

    async with running(dispatching(dashboard, handler)) as server:
        await server.client.post("/pay")
        await settle()
        snapshot = (await server.client.get("/dashboard/api/tasks", headers=AUTH)).json()
    (task,) = [t for t in snapshot["history"] if t["id"] == seen["task"].id]
    assert task["state"] == "succeeded"
    assert snapshot["show_args"] is show_args
    if show_args:
        assert task["args"] == "('4111-1111', pin=1234)"
        assert task["result"] == "'charged 4111-1111'"
    else:
        assert "args" not in task and "result" not in task
        assert "4111" not in json.dumps(task)


XSS = "<img src=x onerror=alert(1)>"


async def test_a_hostile_task_name_comes_back_as_literal_text(
    dashboards: list[Dashboard],
) -> None:
    dashboard = Dashboard(token=TOKEN)
    dashboards.append(dashboard)
    seen: dict[str, trio_bg.TaskHandle[Any]] = {}

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        seen["task"] = app_tasks(scope).start_soon_named(XSS, trio.sleep_forever)
        await respond(send, b"ok")

    async with running(dispatching(dashboard, handler)) as server:
        await server.client.post("/x")
        one = await server.client.get(f"/dashboard/api/tasks/{seen['task'].id}", headers=AUTH)
        assert one.json()["name"] == XSS
        assert one.headers["x-content-type-options"] == "nosniff"
        seen["task"].cancel()


async def failing() -> None:
    await trio.lowlevel.checkpoint()
    raise ConnectionError("partner down")


async def test_a_failed_task_shows_its_error_and_retry_timeline(
    dashboards: list[Dashboard],
) -> None:
    dashboard = Dashboard(token=TOKEN)
    dashboards.append(dashboard)
    seen: dict[str, trio_bg.TaskHandle[Any]] = {}

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        seen["task"] = app_tasks(scope).start_soon_named(
            "flaky", failing, retry=trio_bg.Retry(attempts=3, backoff=0, jitter=False)
        )
        await respond(send, b"ok")

    async with running(dispatching(dashboard, handler)) as server:
        await server.client.post("/x")
        await settle()
        task = (
            await server.client.get(f"/dashboard/api/tasks/{seen['task'].id}", headers=AUTH)
        ).json()
    assert task["state"] == "failed"
    assert task["error"] == {"type": "ConnectionError", "message": "partner down"}
    assert task["attempts"] == 3
    assert [(r["attempt"], r["error"], r["message"], r["delay"]) for r in task["retries"]] == [
        (1, "ConnectionError", "partner down", 0),
        (2, "ConnectionError", "partner down", 0),
    ]


async def test_the_event_stream_sends_a_snapshot_after_a_task_finishes(
    dashboards: list[Dashboard],
) -> None:
    dashboard = Dashboard(token=TOKEN)
    dashboards.append(dashboard)
    release = trio.Event()
    seen: dict[str, trio_bg.TaskHandle[Any]] = {}

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        seen["task"] = app_tasks(scope).start_soon_named("streamed", wait_here, release)
        await respond(send, b"ok")

    def states(event: dict[str, Any], task_id: str) -> set[str]:
        tasks = [t for m in event["managers"] for t in (*m["active"], *m["recent"])]
        return {t["state"] for t in (*tasks, *event["history"]) if t["id"] == task_id}

    returned = trio.Event()
    async with running(dispatching(dashboard, handler, returned=returned)) as server:
        await server.client.post("/x")
        task_id = seen["task"].id
        # A raw socket, not httpx.stream: leaving httpx's never-ending body iterator makes its
        # nested async generators warn when they are collected (and warnings are errors here).
        seen_states: list[set[str]] = []
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream(server.host, server.port)
            async with stream:
                path = f"/dashboard/api/events?token={TOKEN}"
                await stream.send_all(get_request(path, server.host, server.port))
                head = await read_until(stream, HEADER_END)
                assert b"content-type: text/event-stream; charset=utf-8" in head.lower()
                received = head.partition(HEADER_END)[2]
                while not seen_states or seen_states[-1] != {"succeeded"}:
                    # One event per chunk, one JSON line per event.
                    _, found, rest = received.partition(b"data: ")
                    data, newline, rest = rest.partition(b"\n")
                    if not (found and newline):
                        received += await stream.receive_some(65536)
                        continue
                    received = rest
                    seen_states.append(states(json.loads(data), task_id))
                    if seen_states[-1] == {"running"}:
                        release.set()
            assert not returned.is_set()
        with trio.fail_after(2):
            await returned.wait()  # the client went away: the stream has ended
        assert seen_states[0] == {"running"}
        assert seen_states[-1] == {"succeeded"}


async def test_metrics_are_the_registry_exposed_by_prometheus_client(
    dashboards: list[Dashboard],
) -> None:
    registry = prometheus_client.CollectorRegistry()
    counter = prometheus_client.Counter("orders", "Orders placed", registry=registry)
    counter.inc(3)
    dashboard = Dashboard(token=TOKEN, registry=registry)
    dashboards.append(dashboard)
    async with running(dispatching(dashboard, None)) as server:
        response = await server.client.get("/dashboard/metrics", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
    assert response.content == prometheus_client.generate_latest(registry)
    assert "orders_total 3.0" in response.text


async def test_starlette_mount_and_request_managers_named_by_route_template(
    dashboards: list[Dashboard],
) -> None:
    dashboard = Dashboard(token=TOKEN)
    dashboards.append(dashboard)
    release = trio.Event()
    seen: dict[str, Any] = {}

    async def pay(request: Request) -> PlainTextResponse:
        tasks = seen["manager"] = request_tasks(request.scope)
        tasks.start_soon_named("charge", wait_here, release)
        return PlainTextResponse("ok")

    starlette = Starlette(
        routes=[Route("/pay/{order_id}", pay, methods=["POST"]), Mount("/dashboard", app=dashboard)]
    )
    async with running(TaskMiddleware(starlette)) as server:
        assert (await server.client.post("/pay/8")).status_code == 200
        await settle()
        snapshot = (await server.client.get("/dashboard/api/tasks", headers=AUTH)).json()
        (card,) = [m for m in request_cards(snapshot) if m["active"]]
        assert card["name"] == "POST /pay/{order_id}"
        assert card["request"]["route"] == "/pay/{order_id}"
        assert card["active"][0]["manager"] == "POST /pay/{order_id}"
        page = await server.client.get("/dashboard/", params={"token": TOKEN})
        assert page.status_code == 200
        release.set()
        manager = seen["manager"]
        with trio.fail_after(2):
            await manager.wait_idle()
    assert manager.name == "POST /pay/{order_id}"
    assert "8" not in manager.name
    assert manager._request_scope is None  # no scope <-> manager cycle after the request


async def test_request_managers_of_raw_apps_are_named_by_method_alone() -> None:
    seen: dict[str, Any] = {}

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        seen["manager"] = request_tasks(scope)
        await respond(send, b"ok")

    async with running(TaskMiddleware(handler)) as server:
        await server.client.delete("/users/42?token=abc")
    assert seen["manager"].name == "DELETE"
    assert seen["manager"]._route is None
    assert seen["manager"]._status == 200


async def test_close_removes_the_recorder_once_every_dashboard_is_closed() -> None:
    from trio_bg._core._instruments import GLOBAL
    from trio_bg.dashboard._recorder import RECORDER

    first, second = Dashboard(TOKEN), Dashboard(local_only=True)
    assert RECORDER in GLOBAL
    first.close()
    first.close()  # idempotent
    assert RECORDER in GLOBAL
    second.close()
    assert RECORDER not in GLOBAL


async def test_an_open_event_stream_holds_a_shutdown_no_longer_than_graceful_timeout(
    dashboards: list[Dashboard],
) -> None:
    dashboard = Dashboard(token=TOKEN)
    dashboards.append(dashboard)
    returned = trio.Event()
    with trio.fail_after(3):  # graceful_timeout (0.2 s), and the server's own stop
        async with running(
            dispatching(dashboard, None, returned=returned), graceful_timeout=0.2
        ) as server:
            stream = await trio.open_tcp_stream(server.host, server.port)
            path = f"/dashboard/api/events?token={TOKEN}"
            await stream.send_all(get_request(path, server.host, server.port))
            await read_until(stream, b"data: ")
        # The server has stopped with the client still connected: Hypercorn cancelled the
        # stream at its graceful timeout, and the stream let itself be cancelled.
        assert not returned.is_set()
        await stream.aclose()


async def test_the_shutdown_view_names_what_the_grace_period_will_cancel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from trio_bg.dashboard._recorder import RECORDER
    from trio_bg.dashboard._schema import Snapshot

    def shutdown_view() -> dict[str, Any]:
        (view,) = [
            s for s in Snapshot(RECORDER, show_args=False).process()["shutdown"]
            if s["manager"] == "closing"
        ]  # fmt: skip
        return view

    async def owner(*, task_status: trio.TaskStatus[tuple[Any, Any]]) -> None:
        async with trio_bg.open_task_manager("closing", grace_period=5, shield_timeout=20) as tm:
            plain = tm.start_soon_named("plain", trio.sleep_forever)
            shielded = tm.start_soon_named("shielded", trio.sleep_forever, shield=True)
            task_status.started((plain, shielded))
        # The body has ended at once: the close begins at t = 0.

    async with trio.open_nursery() as nursery:
        plain, shielded = await nursery.start(owner)
        await trio.sleep(2)
        assert shutdown_view() == {
            "manager": "closing",
            "grace_left": 3.0,
            "will_cancel": [{"id": plain.id, "name": "plain", "in": 3.0}],
            "shielded": [{"id": shielded.id, "name": "shielded", "cap_in": 18.0}],
        }
        await trio.sleep(4)  # the grace period is over: "plain" was cancelled
        assert shutdown_view() == {
            "manager": "closing",
            "grace_left": 0.0,
            "will_cancel": [],
            "shielded": [{"id": shielded.id, "name": "shielded", "cap_in": 14.0}],
        }
        shielded.cancel()
    assert plain.state == trio_bg.TaskState.CANCELLED
