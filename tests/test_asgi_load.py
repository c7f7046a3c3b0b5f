"""TaskMiddleware under a real Hypercorn, many requests at once: nothing lost, counters exact."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import httpx
import pytest
import trio

from tests.asgi_server import respond
from tests.conftest import http_only
from trio_bg import TaskManager, TaskStatistics, Timing
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.testing import check_accounting, serve_app

pytestmark = pytest.mark.slow

REQUESTS = 200
CONNECTIONS = 32


async def test_200_concurrent_requests_run_all_their_tasks() -> None:
    ran: defaultdict[int, list[Timing]] = defaultdict(list)
    app_ran: list[int] = []
    managers: dict[int, TaskManager] = {}
    snapshots: list[TaskStatistics] = []
    spans: dict[int, tuple[float, float]] = {}

    async def record(i: int, timing: Timing, scope: Any) -> None:
        await trio.sleep(0.01)
        ran[i].append(timing)
        snapshots.append(request_tasks(scope).statistics())

    async def app_record(i: int) -> None:
        await trio.sleep(0.01)
        app_ran.append(i)

    async def handler(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        i = int(scope["query_string"].decode().removeprefix("i="))
        tasks = request_tasks(scope)
        managers[i] = tasks
        tasks.start_soon_named("immediate", record, i, Timing.IMMEDIATE, scope)
        tasks.after_route.start_soon_named("after-route", record, i, Timing.AFTER_ROUTE, scope)
        tasks.after_response.start_soon_named(
            "after-response", record, i, Timing.AFTER_RESPONSE, scope
        )
        app_tasks(scope).start_soon_named("app", app_record, i)
        began = trio.current_time()
        await trio.sleep(0.02)  # overlap the requests
        spans[i] = (began, trio.current_time())
        await respond(send, str(i).encode())
        snapshots.append(tasks.statistics())

    middleware = TaskMiddleware(handler)
    bodies: dict[int, str] = {}
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with serve_app(middleware, limits=limits) as server:
        app_manager = middleware.app_manager
        assert app_manager is not None

        # All 200 start at once; at most CONNECTIONS are handed to httpx at a time: its pool
        # rescans every queued request against every connection on each change (quadratic),
        # which made the client, not the server, the bottleneck.
        slots = trio.Semaphore(CONNECTIONS)

        async def get(i: int) -> None:
            async with slots:
                response = await server.client.get("/", params={"i": i})
            assert response.status_code == 200
            bodies[i] = response.text

        with trio.fail_after(10):
            async with trio.open_nursery() as clients:
                for i in range(REQUESTS):
                    clients.start_soon(get, i)
            for manager in managers.values():
                await manager.wait_idle()
            await app_manager.wait_idle()
        app_stats = app_manager.statistics()

    assert bodies == {i: str(i) for i in range(REQUESTS)}
    ordered = sorted(spans.values())
    overlapping = sum(a_end > b_start for (_, a_end), (b_start, _) in itertools.pairwise(ordered))
    assert overlapping > REQUESTS // 2, "the requests did not run concurrently"
    every_timing = sorted(Timing)
    assert {i: sorted(timings) for i, timings in ran.items()} == {
        i: every_timing for i in range(REQUESTS)
    }
    assert sorted(app_ran) == list(range(REQUESTS))
    for manager in managers.values():
        assert manager.statistics() == TaskStatistics(
            started=3, pending=0, running=0, succeeded=3, failed=0, cancelled=0, rejected=0
        )
    assert len(snapshots) == 4 * REQUESTS
    for stats in snapshots:
        assert stats.started == 3
        check_accounting(stats)
    assert app_stats == TaskStatistics(
        started=REQUESTS, pending=0, running=0, succeeded=REQUESTS, failed=0, cancelled=0,
        rejected=0,
    )  # fmt: skip
