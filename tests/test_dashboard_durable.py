"""The dashboard's durable queues against a real redis-server and a real worker process.

The numbers are real: jobs are enqueued by this process and run by ``python -m trio_bg worker``
(``tests/durable_helpers.py``). The dashboard reads Redis at most once a second, and a worker
counts an outcome just after it stored the result, so the tests poll the API (real time: other
processes move the numbers) until it shows what they expect, then assert it exactly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

import trio_bg
from tests import durable_jobs as jobs
from tests.durable_helpers import stop, wait_for_count, workers
from tests.redis_server import RedisServer, redis_server
from trio_bg.dashboard import Dashboard, _durable
from trio_bg.dashboard._recorder import RECORDER
from trio_bg.durable import DurableQueue, JobFailed, QueueStatistics

__all__ = ["redis_server"]  # the fixture, used by name

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
QUEUE_FIELDS = {
    "name", "redis", "status", "error", "read_at",
    "depth", "delayed", "in_flight", "succeeded", "failed", "cancelled", "workers",
    "running", "schedules", "dead",
}  # fmt: skip
NO_NUMBERS = dict.fromkeys(_durable.NUMBERS)


@asynccontextmanager
async def client_of(dashboard: Dashboard) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=dashboard)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as client:
        yield client


async def queue_entry(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/api/tasks", headers=AUTH)
    assert response.status_code == 200
    (entry,) = response.json()["queues"]
    assert set(entry) == QUEUE_FIELDS
    return dict(entry)


def numbers(entry: dict[str, Any]) -> dict[str, Any]:
    return {field: entry[field] for field in _durable.NUMBERS}


async def wait_for_numbers(client: httpx.AsyncClient, expected: dict[str, int]) -> None:
    """Poll the API until the queue shows ``expected`` (at most 15 s), then assert it."""
    entry = await queue_entry(client)
    with trio.move_on_after(15):
        while numbers(entry) != expected:
            await trio.sleep(0.2)
            entry = await queue_entry(client)
    assert entry["status"] == "ok"
    assert entry["error"] is None
    assert numbers(entry) == expected


async def test_depth_in_flight_and_outcomes_follow_real_jobs(
    redis_server: RedisServer, dashboards: list[Dashboard]
) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    dashboard = Dashboard(token=TOKEN, queues=[queue])
    dashboards.append(dashboard)
    async with client_of(dashboard) as client:
        closed = await queue_entry(client)
        assert closed == {
            "name": "tests",
            "redis": redis_server.url,
            "status": "closed",
            "error": None,
            "read_at": None,
            **NO_NUMBERS,
            "running": [],
            "schedules": [],
        }
        async with queue:
            added = [await queue.enqueue(jobs.add, i, 1) for i in range(3)]
            failing = [await queue.enqueue(jobs.fail, f"bad {i}") for i in range(2)]
            await queue.enqueue(jobs.record, "later", delay=600)
            entry = await queue_entry(client)  # no worker yet: no consumer group either
            assert entry["read_at"] is not None
            assert numbers(entry) == {
                "depth": 5, "delayed": 1, "in_flight": 0,
                "succeeded": 0, "failed": 0, "cancelled": 0, "workers": 0, "dead": 0,
            }  # fmt: skip
            with workers(redis_server) as (worker,):
                with trio.fail_after(15):
                    assert [await h.get() for h in added] == [1, 2, 3]
                    for handle in failing:
                        with pytest.raises(JobFailed):
                            await handle.get()
                await wait_for_numbers(
                    client,
                    {
                        "depth": 0, "delayed": 1, "in_flight": 0,
                        "succeeded": 3, "failed": 2, "cancelled": 0, "workers": 1, "dead": 0,
                    },
                )  # fmt: skip
                running = await queue.enqueue(jobs.slow, "held", 30)
                await wait_for_count(queue, "started", ["held"], 1)
                await wait_for_numbers(
                    client,
                    {
                        "depth": 0, "delayed": 1, "in_flight": 1,
                        "succeeded": 3, "failed": 2, "cancelled": 0, "workers": 1, "dead": 0,
                    },
                )  # fmt: skip
                assert running.cancel() is True
                with trio.fail_after(10), pytest.raises(trio_bg.TaskCancelled):
                    await running.get()
                await wait_for_numbers(
                    client,
                    {
                        "depth": 0, "delayed": 1, "in_flight": 0,
                        "succeeded": 3, "failed": 2, "cancelled": 1, "workers": 1, "dead": 0,
                    },
                )  # fmt: skip
                assert stop(worker) == 0
            # The same numbers through the queue itself (the stopped worker's health key
            # expires one reclaim timeout after its last refresh: 0 or 1 worker).
            stats = await queue.statistics()
            assert dataclasses.replace(stats, workers=0) == QueueStatistics(
                depth=0, delayed=1, in_flight=0, succeeded=3, failed=2, cancelled=1, workers=0
            )


async def test_a_stopped_redis_shows_the_queue_unavailable_and_the_rest_answers(
    redis_server: RedisServer, dashboards: list[Dashboard]
) -> None:
    queue = jobs.make_queue(redis_server.url, enqueue_timeout=2)
    dashboard = Dashboard(token=TOKEN, queues=[queue])
    dashboards.append(dashboard)
    async with client_of(dashboard) as client, queue, trio_bg.open_task_manager(name="m"):
        await queue.enqueue(jobs.add, 1, 2)
        await wait_for_numbers(
            client,
            {
                "depth": 1, "delayed": 0, "in_flight": 0,
                "succeeded": 0, "failed": 0, "cancelled": 0, "workers": 0, "dead": 0,
            },
        )  # fmt: skip
        redis_server.stop()
        await trio.sleep(_durable.MAX_AGE)  # the reading above is served until then
        with trio.fail_after(_durable.READ_TIMEOUT + 1):
            response = await client.get("/api/tasks", headers=AUTH)
        assert response.status_code == 200
        snapshot = response.json()
        assert [m["name"] for m in snapshot["managers"]] == ["m"]
        (entry,) = snapshot["queues"]
        assert entry["status"] == "unavailable"
        assert entry["error"].startswith(
            f"durable queue 'tests': cannot reach Redis at {redis_server.url} to read statistics: "
        )
        assert numbers(entry) == NO_NUMBERS
        redis_server.start()  # the AOF kept the job
        await wait_for_numbers(
            client,
            {
                "depth": 1, "delayed": 0, "in_flight": 0,
                "succeeded": 0, "failed": 0, "cancelled": 0, "workers": 0, "dead": 0,
            },
        )  # fmt: skip


async def test_many_clients_share_one_read_per_second(
    redis_server: RedisServer, dashboards: list[Dashboard], monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = 0
    read = DurableQueue.statistics

    async def counted(self: DurableQueue) -> QueueStatistics:
        nonlocal reads
        reads += 1
        return await read(self)

    monkeypatch.setattr(DurableQueue, "statistics", counted)
    monkeypatch.setattr(_durable, "MAX_AGE", math.inf)  # one reading, however long the test
    queue = jobs.make_queue(redis_server.url)
    dashboard = Dashboard(token=TOKEN, queues=[queue])
    dashboards.append(dashboard)
    entries: list[dict[str, Any]] = []

    async def ask(client: httpx.AsyncClient) -> None:
        entries.append(await queue_entry(client))

    async with client_of(dashboard) as client, queue, trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(ask, client)
    assert reads == 1
    assert len(entries) == 20
    assert all(e == entries[0] for e in entries)
    assert entries[0]["status"] == "ok"


def test_queues_misuse_is_refused_before_anything_is_recorded() -> None:
    users = RECORDER._users
    queue = DurableQueue("redis://127.0.0.1:1", name="q")
    with pytest.raises(
        TypeError, match=r"^queues must be an iterable of trio_bg.durable.DurableQueue, got int$"
    ):
        Dashboard(token=TOKEN, queues=5)  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"^queues must hold trio_bg.durable.DurableQueue objects, got str$",
    ):
        Dashboard(token=TOKEN, queues=["q"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"^queues holds durable queue 'q' twice$"):
        Dashboard(token=TOKEN, queues=[queue, queue])
    assert RECORDER._users == users


def test_the_redis_url_is_shown_without_its_password() -> None:
    assert _durable.public_url("redis://user:pw@10.0.0.1:6380/2") == "redis://10.0.0.1:6380/2"
    assert _durable.public_url("redis://:pw@host/0") == "redis://host/0"
    assert _durable.public_url("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"
