"""Durable schedules without waiting: what a take decides (``catch_up``, the first take, the
cap), the journal's atomic step on a real SQLite file (exactly once for two takers, overlap),
``@queue.periodic``'s checks, and a worker in this process running a schedule."""

from __future__ import annotations

import itertools
import logging
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio
import trio.testing
from streaq import Worker

from tests.redis_server import RedisServer, redis_server
from trio_bg._core._schedule import make_schedule
from trio_bg.durable import DurableQueue, _journal_file, _journal_sql
from trio_bg.durable._backend import Backend
from trio_bg.durable._periodic import (
    MAX_CATCH_UP,
    ON_TIME,
    PeriodicSpec,
    Taken,
    _log,  # pyright: ignore[reportPrivateUsage]
    instant_job_id,
    plan,
    run_periodic,
)
from trio_bg.durable._redis import RedisBackend

__all__ = ["redis_server"]

EVERY_10 = make_schedule(10, None, None)


def spec(catch_up: Any = "latest", overlap: Any = "skip") -> PeriodicSpec:
    return PeriodicSpec(schedule=EVERY_10, catch_up=catch_up, overlap=overlap)


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


# -- what a take decides ---------------------------------------------------------------------


def test_the_first_take_runs_the_current_instant_only_if_it_is_on_time() -> None:
    assert plan(spec(), None, 100.5).run == (100.0,)
    assert plan(spec(), None, 100.5).newest == 100.0
    late = plan(spec(), None, 100.0 + ON_TIME + 0.5)  # deployed between two instants
    assert (late.run, late.newest) == ((), 100.0)


def test_an_on_time_instant_runs_under_every_catch_up_rule() -> None:
    for rule in ("latest", "all", "none"):
        assert plan(spec(rule), 100.0, 110.2).run == (110.0,)


def test_nothing_new_to_take() -> None:
    taken = plan(spec(), 110.0, 119.9)
    assert (taken.run, taken.newest) == ((), None)


@pytest.mark.parametrize(
    ("rule", "run"),
    [
        ("latest", (150.0, 160.0)),  # the most recent missed one, and the on-time one
        ("all", (110.0, 120.0, 130.0, 140.0, 150.0, 160.0)),
        ("none", (160.0,)),
    ],
)
def test_after_downtime_catch_up_decides_the_missed_instants(
    rule: str, run: tuple[float, ...]
) -> None:
    # The last take was 100; every scheduler was down until 160.3.
    decided = plan(spec(rule), 100.0, 160.3)
    assert (decided.run, decided.newest, decided.dropped) == (run, 160.0, 0)


@pytest.mark.parametrize(
    ("rule", "run"),
    [("latest", (150.0,)), ("all", (110.0, 120.0, 130.0, 140.0, 150.0)), ("none", ())],
)
def test_back_between_two_instants_every_due_instant_is_missed(
    rule: str, run: tuple[float, ...]
) -> None:
    decided = plan(spec(rule), 100.0, 155.0)
    assert (decided.run, decided.newest) == (run, 150.0)


def test_catch_up_all_runs_at_most_the_cap_the_newest() -> None:
    last = 0.0
    now = (MAX_CATCH_UP + 50) * 10 + 5.0  # 1,050 missed instants, none on time
    decided = plan(spec("all"), last, now)
    assert len(decided.run) == MAX_CATCH_UP
    assert decided.run[-1] == (MAX_CATCH_UP + 50) * 10
    assert decided.run[0] == 51 * 10
    assert decided.dropped == 50


# -- the journal's atomic step ---------------------------------------------------------------


def journal(tmp_path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    for statement in _journal_file.SCHEMA.split(";\n"):
        if statement.strip():
            connection.execute(statement)
    return connection


def take(connection: sqlite3.Connection, rule: PeriodicSpec, now: float) -> Taken:
    connection.execute("BEGIN IMMEDIATE")
    taken: Taken = _journal_sql.take_instants(
        connection, "q", "tick", 4, lambda last: plan(rule, last, now), rule.overlap == "skip", now
    )
    connection.execute("COMMIT")
    return taken


def jobs(connection: sqlite3.Connection) -> list[tuple[str, str]]:
    return connection.execute("SELECT id, state FROM jobs ORDER BY seq").fetchall()


def test_two_takers_of_one_instant_enqueue_it_once(tmp_path: Path) -> None:
    one, two = journal(tmp_path), sqlite3.connect(tmp_path / "jobs.db", isolation_level=None)
    rule = spec(overlap="allow")
    assert take(one, rule, 100.2).enqueued == (100.0,)
    assert take(two, rule, 100.3).enqueued == ()  # the same instant: already taken
    assert take(two, rule, 110.1).enqueued == (110.0,)
    assert take(one, rule, 110.4).enqueued == ()
    assert len(jobs(one)) == 2
    assert one.execute("SELECT instant FROM schedules").fetchall() == [(110.0,)]


def test_overlap_skip_skips_while_the_previous_job_is_queued_or_running(tmp_path: Path) -> None:
    connection = journal(tmp_path)
    rule = spec(overlap="skip")
    assert take(connection, rule, 100.1).enqueued == (100.0,)
    skipped = take(connection, rule, 110.1)
    assert (skipped.enqueued, skipped.skipped) == ((), (110.0,))
    connection.execute("UPDATE jobs SET state = 'running'")
    assert take(connection, rule, 120.1).skipped == (120.0,)
    connection.execute("UPDATE jobs SET state = 'succeeded'")
    assert take(connection, rule, 130.1).enqueued == (130.0,)
    assert len(jobs(connection)) == 2


# -- registration ----------------------------------------------------------------------------


async def tick() -> None:
    pass


async def needs(x: int) -> None:
    del x


@pytest.mark.parametrize(
    ("kwargs", "fn", "error", "message"),
    [
        ({}, tick, TypeError, "give exactly one of every= (seconds) or cron= (an expression)"),
        ({"every": 5, "catch_up": "some"}, tick, ValueError,
         "catch_up must be 'latest', 'all' or 'none', got 'some'"),
        ({"every": 5, "overlap": "no"}, tick, ValueError,
         "overlap must be 'skip' or 'allow', got 'no'"),
        ({"cron": "0 3 * * *", "tz": "Nowhere/City"}, tick, ValueError,
         "unknown time zone 'Nowhere/City'"),
    ],
)  # fmt: skip
def test_a_bad_periodic_registration_raises_and_registers_nothing(
    tmp_path: Path, kwargs: dict[str, Any], fn: Any, error: type[Exception], message: str
) -> None:
    queue = DurableQueue(f"sqlite:///{tmp_path / 'jobs.db'}")
    with pytest.raises(error, match=exact(message)):
        queue.periodic(**kwargs)(fn)
    assert dict(queue.jobs) == {}


def test_a_periodic_job_takes_no_arguments(tmp_path: Path) -> None:
    queue = DurableQueue(f"sqlite:///{tmp_path / 'jobs.db'}")
    with pytest.raises(TypeError, match=r"^periodic\(\) cannot start 'needs': "):
        queue.periodic(every=5)(needs)
    assert dict(queue.jobs) == {}
    assert queue.periodic(every=5)(tick) is tick
    assert dict(queue.jobs) == {"tick": tick}


async def test_a_worker_in_this_process_runs_each_instant(tmp_path: Path) -> None:
    runs: list[float] = []
    five = trio.Event()
    queue = DurableQueue(f"sqlite:///{tmp_path / 'jobs.db'}", name="q")

    @queue.periodic(every=0.2, overlap="allow", name="often")
    async def often() -> None:
        runs.append(trio.current_time())
        if len(runs) == 5:
            five.set()

    async with queue.open_worker(concurrency=2, grace=1):
        with trio.fail_after(5):
            await five.wait()
    # The first take runs the current instant (it was on time), then one run per instant.
    gaps = [b - a for a, b in itertools.pairwise(runs[1:])]
    assert all(0.1 < gap < 0.35 for gap in gaps), gaps
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        stored = db.execute("SELECT count(*) FROM jobs WHERE function = 'often'").fetchone()[0]
    assert stored >= len(runs)


def test_catch_up_all_enqueues_every_missed_instant_under_overlap_skip(tmp_path: Path) -> None:
    # The instants of one take are one decision: overlap looks at the run of an earlier take.
    connection = journal(tmp_path)
    rule = spec("all", overlap="skip")
    assert take(connection, rule, 100.1).enqueued == (100.0,)
    connection.execute("UPDATE jobs SET state = 'succeeded'")
    back = take(connection, rule, 140.2)  # every scheduler was down from 100 to 140
    assert (back.enqueued, back.skipped) == ((110.0, 120.0, 130.0, 140.0), ())
    ids = {row[0] for row in jobs(connection)}
    assert ids == {instant_job_id("q", "tick", t) for t in (100.0, 110.0, 120.0, 130.0, 140.0)}


def test_a_take_skipped_whole_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    connection = journal(tmp_path)
    rule = spec("all", overlap="skip")
    take(connection, rule, 100.1)  # its job stays queued: no worker runs here
    skipped = take(connection, rule, 140.2)
    assert (skipped.enqueued, skipped.skipped) == ((), (110.0, 120.0, 130.0, 140.0))
    caplog.set_level(logging.INFO, "trio_bg.durable")
    _log("q", "tick", skipped)
    assert [r.getMessage() for r in caplog.records] == [
        "durable queue 'q': periodic job 'tick' skipped its run of 4 instants, "
        "1970-01-01T00:01:50+00:00 to 1970-01-01T00:02:20+00:00: the previous run is still "
        "queued or running (overlap='skip')"
    ]


# -- cron across DST changes, the scheduler loop on an injected clock ------------------------

BERLIN = ZoneInfo("Europe/Berlin")


def berlin(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


async def scheduled(
    tmp_path: Path, cron: str, start: str, seconds: float, catch_up: Any = "latest"
) -> list[str]:
    """Run the scheduler loop of a Berlin ``cron`` job for ``seconds`` from ``start`` on the
    journal's atomic step, its clock trio's (``autojump_clock``: no waiting); the local times of
    the jobs it enqueued, in order."""
    connection = journal(tmp_path)
    rule = PeriodicSpec(make_schedule(None, cron, "Europe/Berlin"), catch_up, "allow")
    origin = berlin(start) - trio.current_time()
    enqueued: list[float] = []

    async def step(job: str, periodic: PeriodicSpec, now: float) -> Taken:
        assert (job, periodic) == ("tick", rule)
        taken = take(connection, periodic, now)
        enqueued.extend(taken.enqueued)
        return taken

    with trio.move_on_after(seconds):
        await run_periodic(
            queue="q", job="tick", spec=rule, now=lambda: origin + trio.current_time(), take=step
        )
    assert len(jobs(connection)) == len(enqueued)  # one job per instant taken
    return [datetime.fromtimestamp(t, BERLIN).isoformat() for t in enqueued]


async def test_a_0230_job_runs_once_on_the_spring_forward_day(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # 2026-03-29 in Berlin: 02:00 -> 03:00; 02:30 does not exist: it runs once, at 03:00.
    got = await scheduled(tmp_path, "30 2 * * *", "2026-03-28T12:00:00", 3 * 86400)
    assert got == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


async def test_a_0230_job_runs_once_on_the_fall_back_day(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    # 2026-10-25 in Berlin: 03:00 -> 02:00; 02:30 comes twice: it runs at the first.
    got = await scheduled(tmp_path, "30 2 * * *", "2026-10-24T12:00:00", 3 * 86400)
    assert got == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]


async def test_an_every_30_minutes_cron_runs_in_the_repeated_hour_too(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    got = await scheduled(tmp_path, "*/30 * * * *", "2026-10-25T01:10:00", 3 * 3600)
    assert got == [
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


# -- Redis's atomic step ---------------------------------------------------------------------


async def redis_queues(url: str, count: int) -> list[DurableQueue]:
    """``count`` queues named ``q`` on ``url`` with ``tick`` periodic (as ``count`` processes)."""
    queues: list[DurableQueue] = []
    for _ in range(count):
        queue = DurableQueue(url, name="q")
        queue.periodic(every=10, catch_up="all", name="tick")(tick)
        queues.append(queue)
    return queues


def streaq_worker(queue: DurableQueue) -> Worker[Any]:
    """The open queue's own streaq client (what a worker process's scheduler uses)."""
    backend = queue._backend  # pyright: ignore[reportPrivateUsage]
    assert isinstance(backend, RedisBackend)
    return backend.open_worker()


async def redis_take(queue: DurableQueue, rule: PeriodicSpec, now: float) -> Taken:
    backend: Backend = queue._backend  # pyright: ignore[reportPrivateUsage]
    return await backend.take_instants("tick", rule, now)  # the seam a worker's scheduler uses


async def take_into(
    results: list[Taken], queue: DurableQueue, rule: PeriodicSpec, now: float
) -> None:
    results.append(await redis_take(queue, rule, now))


async def test_on_redis_concurrent_takers_of_one_instant_enqueue_it_once(
    redis_server: RedisServer,
) -> None:
    queues = await redis_queues(redis_server.url, 3)
    rule = spec("all", overlap="allow")
    async with queues[0], queues[1], queues[2]:
        for now in (100.2, 110.1, 140.3):
            results: list[Taken] = []
            async with trio.open_nursery() as nursery:
                for queue in queues:
                    nursery.start_soon(take_into, results, queue, rule, now)
            enqueued = sorted(t for taken in results for t in taken.enqueued)
            assert enqueued == {100.2: [100.0], 110.1: [110.0], 140.3: [120.0, 130.0, 140.0]}[now]
        worker = streaq_worker(queues[0])
        stored = await worker.redis.keys(worker.task_key + "*")
        expected = {instant_job_id("q", "tick", 10.0 * k) for k in range(10, 15)}
        assert {str(key).removeprefix(worker.task_key) for key in stored} == expected
        (state,) = await queues[1].schedules()
        assert state.last_at == datetime.fromtimestamp(140.0, UTC)
        assert state.last_job == instant_job_id("q", "tick", 140.0)


async def test_on_redis_overlap_skip_waits_for_the_previous_run(
    redis_server: RedisServer,
) -> None:
    (queue,) = await redis_queues(redis_server.url, 1)
    rule = spec("all", overlap="skip")
    async with queue:
        worker = streaq_worker(queue)
        assert (await redis_take(queue, rule, 100.1)).enqueued == (100.0,)
        skipped = await redis_take(queue, rule, 120.1)  # the job of 100 is still queued
        assert (skipped.enqueued, skipped.skipped) == ((), (110.0, 120.0))
        # Its task record gone is how a finished job looks to the scheduler (a worker's end).
        await worker.redis.delete([worker.task_key + instant_job_id("q", "tick", 100.0)])
        back = await redis_take(queue, rule, 140.2)
        assert (back.enqueued, back.skipped) == ((130.0, 140.0), ())
