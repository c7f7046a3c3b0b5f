"""trio_bg.durable against a real redis-server: enqueue, results, errors, misuse, request timing.

Each test gets its own ``redis-server`` (``tests/redis_server.py``); workers are real
``python -m trio_bg worker`` processes (``tests/durable_helpers.py``). The multi-worker and
failure scenarios are in ``test_durable_workers.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio
import trio.testing

import trio_bg
from tests import durable_jobs as jobs
from tests.durable_helpers import counts, stop, stream_state, workers
from tests.redis_server import RedisServer, redis_server
from trio_bg import TaskHandleLike, TaskState
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.durable import DurableHandle, DurableQueue, JobFailed, QueueUnavailable
from trio_bg.testing import serve_app

__all__ = ["redis_server"]  # the fixture, used by name


async def test_a_worker_runs_a_job_and_get_returns_its_value(redis_server: RedisServer) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    with workers(redis_server) as (worker,):
        async with queue:
            handle = await queue.enqueue(jobs.add, 2, 3)
            assert isinstance(handle, TaskHandleLike)
            assert handle.id.startswith("job-")
            assert handle.name == "add"
            with trio.fail_after(15):
                assert await handle.get() == 5
            assert handle.state is TaskState.SUCCEEDED
            assert handle.done
            assert handle.attempts == 1
            assert handle.started_at is not None
            assert handle.finished_at is not None
            # A finished job answers from the handle, without Redis.
            start = time.perf_counter()
            assert await handle.get() == 5
            assert time.perf_counter() - start < 0.01
        assert stop(worker) == 0


async def test_a_job_that_raises_fails_get_and_is_acked(redis_server: RedisServer) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    with workers(redis_server) as (worker,):
        async with queue:
            failing = await queue.enqueue(jobs.fail, "no such order")
            with (
                trio.fail_after(15),
                pytest.raises(JobFailed, match=r"^fail raised ValueError: no such order$") as info,
            ):
                await failing.get()
            assert info.value.remote_type == "ValueError"
            assert info.value.remote_message == "no such order"
            assert "ValueError: no such order" in info.value.remote_traceback
            assert failing.state is TaskState.FAILED
            # The same error again for every waiter.
            with pytest.raises(JobFailed, match=r"^fail raised ValueError: no such order$"):
                await failing.get()
            # The message was acked and deleted (no poison loop), and the worker is still up.
            assert await stream_state(queue) == (0, 0)
            after = await queue.enqueue(jobs.add, 1, 1)
            with trio.fail_after(15):
                assert await after.get() == 2
            assert worker.poll() is None
        assert stop(worker) == 0


async def test_an_unserialisable_return_value_fails_the_job(redis_server: RedisServer) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    with workers(redis_server) as (worker,):
        async with queue:
            handle = await queue.enqueue(jobs.returns_set)
            with (
                trio.fail_after(15),
                pytest.raises(
                    JobFailed,
                    match=r"^returns_set raised TypeError: durable job 'returns_set' returned a "
                    r"value holding a set, which JSON cannot carry$",
                ),
            ):
                await handle.get()
            assert worker.poll() is None
        assert stop(worker) == 0


async def test_retry_with_backoff_then_success(redis_server: RedisServer) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    with workers(redis_server) as (worker,):
        async with queue:
            handle = await queue.enqueue(jobs.flaky, "f", 2)
            with trio.fail_after(20):
                assert await handle.get() == 3
            assert handle.attempts == 3
            failing = await queue.enqueue(jobs.flaky, "g", 5)
            with (
                trio.fail_after(20),
                pytest.raises(JobFailed, match=r"^flaky raised RuntimeError: run 3 of g fails$"),
            ):
                await failing.get()
            assert await counts(queue, "effects", ["f", "g"]) == [3, 3]
        assert stop(worker) == 0


async def test_misuse_is_refused_at_enqueue_and_nothing_is_enqueued(
    redis_server: RedisServer,
) -> None:
    queue = jobs.make_queue(redis_server.url)

    async def not_a_job(x: int) -> int:
        return x

    with pytest.raises(RuntimeError, match=r"^durable queue 'tests' is not open: enqueue\(\)"):
        await queue.enqueue(jobs.add, 1, 2)
    async with queue:
        with pytest.raises(
            ValueError,
            match=r"^test_misuse_is_refused_at_enqueue_and_nothing_is_enqueued.<locals>"
            r".not_a_job is not a job of durable queue 'tests': register it with @queue.task$",
        ):
            await queue.enqueue(not_a_job, 1)
        with pytest.raises(
            TypeError,
            match=r"^argument 1 of durable job 'add' holds a set, which JSON cannot carry "
            r"\(durable jobs never pickle\)$",
        ):
            await queue.enqueue(jobs.add, 1, {2})  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"^argument 0 of durable job 'record' holds a bytes"):
            await queue.enqueue(jobs.record, b"x")  # type: ignore[arg-type]
        coro = jobs.add(1, 2)
        with pytest.raises(TypeError, match=r"^enqueue\(\) takes a function, not a coroutine"):
            await queue.enqueue(coro)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^delay must be a non-negative number"):
            await queue.enqueue(jobs.add, 1, 2, delay=-1)
        with pytest.raises(TypeError, match=r"^key must be a str or None, got int$"):
            await queue.enqueue(jobs.add, 1, 2, key=42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"^key must be a non-empty str or None, got ''$"):
            await queue.enqueue(jobs.add, 1, 2, key="")
        with pytest.raises(TypeError, match=r"^enqueue_soon\(\) takes a trio_bg starter first"):
            queue.enqueue_soon(object(), jobs.add, 1, 2)  # type: ignore[arg-type]
        assert await stream_state(queue) == (0, 0)
        assert await queue.redis.keys("streaq:tests:task:data:*") == set()
    with (
        pytest.raises(TypeError, match=r"^use 'async with queue:', not 'with queue:'$"),
        queue,  # type: ignore[attr-defined]
    ):
        pass


def test_registration_misuse() -> None:
    queue = DurableQueue("redis://127.0.0.1:1", name="misuse")

    def sync_job() -> None:
        pass

    with pytest.raises(TypeError, match=r"^durable jobs must be async functions, got function"):
        queue.task(sync_job)  # type: ignore[type-var]
    queue.task(jobs.add)
    with pytest.raises(ValueError, match=r"^durable queue 'misuse' already has a job named 'add'$"):
        queue.task(jobs.add)
    with pytest.raises(TypeError, match=r"^name must be a str or None, got int$"):
        queue.task(name=5)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match=r"^name must be a non-empty str or None, got ''$"):
        queue.task(name="")
    with pytest.raises(
        ValueError, match=r"^url must be a redis:// or sqlite:/// URL, got 'http://x'$"
    ):
        DurableQueue("http://x")
    with pytest.raises(ValueError, match=r"^name must be a non-empty str without ':', got 'a:b'$"):
        DurableQueue("redis://x", name="a:b")


async def test_redis_down_at_enqueue_raises_quickly_and_enqueues_nothing(
    redis_server: RedisServer,
) -> None:
    queue = jobs.make_queue(redis_server.url, enqueue_timeout=2)
    async with queue:
        redis_server.stop()
        start = time.monotonic()
        with pytest.raises(
            QueueUnavailable,
            match=rf"^durable queue 'tests': cannot reach Redis at {redis_server.url} to enqueue",
        ):
            await queue.enqueue(jobs.add, 1, 2)
        assert time.monotonic() - start < 3
        redis_server.start()
        assert await stream_state(queue) == (0, 0)
        assert await queue.redis.keys("streaq:tests:task:data:*") == set()


async def test_redis_down_at_open_raises_queue_unavailable(redis_server: RedisServer) -> None:
    queue = jobs.make_queue(redis_server.url, enqueue_timeout=2)
    redis_server.stop()
    with pytest.raises(QueueUnavailable, match=r"^durable queue 'tests': cannot reach Redis"):
        async with queue:
            pass
    assert not queue.is_open


async def test_key_names_one_job_while_it_is_queued(redis_server: RedisServer) -> None:
    queue = jobs.make_queue(redis_server.url)
    async with queue:
        first = await queue.enqueue(jobs.record, "k", key="order-42")
        second = await queue.enqueue(jobs.record, "k", key="order-42")
        other = await queue.enqueue(jobs.record, "k", key="order-43")
        assert first.id == second.id != other.id
        assert await stream_state(queue) == (2, 0)


async def test_cancel_a_delayed_job_and_a_running_one(redis_server: RedisServer) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    with workers(redis_server) as (worker,):
        async with queue:
            delayed = await queue.enqueue(jobs.record, "delayed", delay=30)
            running = await queue.enqueue(jobs.slow, "running", 30)
            from tests.durable_helpers import wait_for_count

            await wait_for_count(queue, "started", ["running"], 1)
            assert delayed.cancel() is True
            assert running.cancel() is True
            with trio.fail_after(10):
                for handle in (delayed, running):
                    with pytest.raises(trio_bg.TaskCancelled, match=r"^durable job '\w+' \("):
                        await handle.get()
                    assert handle.state is TaskState.CANCELLED
            assert delayed.cancel() is False
            assert await counts(queue, "effects", ["delayed", "running"]) == [0, 0]
        assert stop(worker) == 0


# -- the request timing ------------------------------------------------------------------------


def receipt_app(queue: DurableQueue, seen: dict[str, Any]) -> TaskMiddleware:
    """An ASGI app: POST schedules ``add(2, 3)`` for after the response; an app task awaits it.

    The queue is opened in the lifespan (coredis wants its opener to close it).
    """

    async def wait_for(handle: DurableHandle[int]) -> None:
        seen["value"] = await handle.get()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            assert message["type"] == "lifespan.startup"
            async with queue:
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                assert message["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        handle = queue.enqueue_soon(request_tasks(scope).after_response, jobs.add, 2, 3)
        seen["state_at_response"] = handle.state
        seen["handle"] = handle
        app_tasks(scope).start_soon(wait_for, handle)
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": handle.id.encode()})

    return TaskMiddleware(app)


async def test_a_request_schedules_a_job_after_its_response(redis_server: RedisServer) -> None:
    queue = jobs.make_queue(redis_server.url, reclaim_timeout=2)
    seen: dict[str, Any] = {}
    with workers(redis_server) as (worker,):
        async with serve_app(receipt_app(queue, seen)) as served:
            response = await served.client.post("/orders")
            assert response.status_code == 202
            assert seen["state_at_response"] is TaskState.PENDING
            with trio.fail_after(15):
                await served.wait_idle()
            assert seen["value"] == 5
            handle = seen["handle"]
            assert response.text == handle.id
            assert handle.state is TaskState.SUCCEEDED
        assert stop(worker) == 0


async def test_a_failed_response_never_enqueues_its_after_response_job(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The 5xx rule holds for durable jobs too: a 500 response's after-response job is never
    enqueued, and its handle ends CANCELLED."""
    queue = jobs.make_queue(redis_server.url)
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            message = await receive()
            async with queue:
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                assert message["type"] == "lifespan.shutdown"
            await send({"type": "lifespan.shutdown.complete"})
            return
        seen["handle"] = queue.enqueue_soon(request_tasks(scope).after_response, jobs.add, 2, 3)
        await send({"type": "http.response.start", "status": 500, "headers": []})
        await send({"type": "http.response.body", "body": b"failed"})

    async with serve_app(TaskMiddleware(app)) as served:
        response = await served.client.post("/orders")
        assert response.status_code == 500
        with trio.fail_after(15):
            await served.wait_idle()
        handle = seen["handle"]
        assert handle.state is TaskState.CANCELLED
        with pytest.raises(trio_bg.TaskCancelled):
            await handle.get()
        assert await stream_state(queue) == (0, 0)
        assert await queue.redis.keys("streaq:tests:task:data:*") == set()
    assert "the response status was 500" in caplog.text


async def test_enqueue_soon_cancelled_before_its_point_is_never_enqueued(
    redis_server: RedisServer,
) -> None:
    queue = jobs.make_queue(redis_server.url)
    async with queue, trio_bg.open_task_manager() as manager:
        handle = queue.enqueue_soon(manager, jobs.record, "never")
        assert handle.state is TaskState.PENDING
        assert handle.cancel() is True
        assert handle.state is TaskState.CANCELLED
        with pytest.raises(trio_bg.TaskCancelled):
            await handle.get()
        await manager.wait_idle()
        published = queue.enqueue_soon(manager, jobs.record, "soon")
        await manager.wait_idle()
        assert published.state is TaskState.PENDING
        assert await stream_state(queue) == (1, 0)


# -- the result poller's rounds -----------------------------------------------------------------


async def test_a_round_asks_about_awaited_jobs_and_a_slice_of_the_others(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """40 unfinished jobs, one of them awaited: every round asks about the awaited one, and
    about 2 of the 39 others (a twentieth), so that 20 rounds ask about each of them once."""
    from trio_bg.durable import _results

    rounds: list[list[str]] = []
    poll = _results.ResultPoller._poll
    run_round = _results.ResultPoller._round

    async def recorded_round(
        self: _results.ResultPoller, worker: Any, *, whole: bool = False
    ) -> None:
        rounds.append([])
        await run_round(self, worker, whole=whole)

    async def recorded_poll(
        self: _results.ResultPoller, worker: Any, handles: list[Any], check_missing: bool
    ) -> None:
        rounds[-1].extend(h.id for h in handles)
        await poll(self, worker, handles, check_missing)

    monkeypatch.setattr(_results.ResultPoller, "_round", recorded_round)
    monkeypatch.setattr(_results.ResultPoller, "_poll", recorded_poll)
    queue = jobs.make_queue(redis_server.url, poll_interval=0.01)
    async with queue:
        handles = [await queue.enqueue(jobs.add, i, 1) for i in range(40)]
        awaited, others = handles[0], {h.id for h in handles[1:]}
        assert queue._redis("test").results.watched == 40
        async with trio.open_nursery() as nursery:
            nursery.start_soon(awaited.wait)
            await trio.testing.wait_all_tasks_blocked()
            assert queue._redis("test").results.awaited == 1
            start = len(rounds)
            with trio.fail_after(10):
                while len(rounds) < start + 62:  # noqa: ASYNC110 - real rounds on a real Redis
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        assert queue._redis("test").results.awaited == 0  # the cancelled wait let go of it
        # The pass under way when the awaited job left the others may be cut short; from the
        # next pass on, the slices repeat every 20 rounds.
        window = rounds[start + 21 : start + 61]  # the last round listed may be under way
        for asked in window:
            assert asked[0] == awaited.id
            assert len(asked) - 1 in (1, 2)  # slices of ceil(39 / 20) = 2, the last one 1
        for first in (0, 20):  # 20 slices to a pass: any 20 rounds in a row ask about each once
            swept = [i for asked in window[first : first + 20] for i in asked[1:]]
            assert sorted(swept) == sorted(others)  # each other job once per 20 rounds


async def test_an_app_that_drops_its_handles_pays_no_poll_round_per_enqueue(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Handles enqueued and dropped one after another (nobody awaits them, no worker): the
    poller runs at the idle pace, one round per SWEEP_ROUNDS intervals, not one per enqueue."""
    from trio_bg.durable import _results

    rounds: list[float] = []
    run_round = _results.ResultPoller._round

    async def recorded_round(
        self: _results.ResultPoller, worker: Any, *, whole: bool = False
    ) -> None:
        rounds.append(trio.current_time())
        await run_round(self, worker, whole=whole)

    monkeypatch.setattr(_results.ResultPoller, "_round", recorded_round)
    interval = 0.01
    queue = jobs.make_queue(redis_server.url, poll_interval=interval)
    async with queue:
        began = trio.current_time()
        for i in range(200):
            await queue.enqueue(jobs.add, i, 1)  # the handle is dropped at once
        elapsed = trio.current_time() - began
    idle = _results.SWEEP_ROUNDS * interval
    assert len(rounds) <= elapsed / idle + 2, (len(rounds), elapsed)
    assert len(rounds) < 200 / 10


@pytest.mark.parametrize(
    ("path", "stderr"),
    [
        ("nocolon", "error: the queue must be given as module:attribute, got 'nocolon'"),
        ("tests.nosuch:queue", "error: cannot import module 'tests.nosuch': No module named "
         "'tests.nosuch'"),
        ("tests.durable_jobs:nope", "error: module 'tests.durable_jobs' has no attribute 'nope'"),
        ("tests.durable_jobs:add", "error: tests.durable_jobs:add is not a DurableQueue (got "
         "function)"),
    ],
)  # fmt: skip
def test_the_worker_command_says_what_it_cannot_load_in_one_line(
    path: str, stderr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from trio_bg.__main__ import main

    assert main(["worker", path, "--log-level", "WARNING"]) == 2
    assert capsys.readouterr() == ("", stderr + "\n")


def test_the_worker_command_refuses_a_grace_that_is_not_finite(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from trio_bg.__main__ import main

    with pytest.raises(SystemExit) as exited:
        main(["worker", "tests.durable_jobs:queue", "--grace", "nan"])
    assert exited.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "python -m trio_bg worker: error: argument --grace: "
        "must be a finite number of seconds >= 0, got 'nan'"
    )


async def test_an_enqueue_after_redis_lost_streaqs_functions_loads_them_again(
    redis_server: RedisServer,
) -> None:
    """A Redis restarted without persistence has lost streaq's Lua functions: the enqueue
    loads them again and goes through (FUNCTION FLUSH stands in for the restart)."""
    queue = jobs.make_queue(redis_server.url)
    async with queue:
        await queue.redis.flushall()
        await queue.enqueue(jobs.add, 1, 2)
        await queue.redis.function_flush()
        await queue.enqueue(jobs.add, 2, 3)
        await queue.enqueue_many([(jobs.add, (3, 4))])
        assert await queue.redis.xlen(f"streaq:{jobs.QUEUE_NAME}:queues:normal") == 3
