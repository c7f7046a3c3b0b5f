"""Durable schedules without waiting: what a take decides (``catch_up``, the first take, the
cap), the journal's atomic step on a real SQLite file (exactly once for two takers, overlap),
``@queue.periodic``'s checks, and a worker in this process running a schedule."""

from __future__ import annotations

import itertools
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_bg._core._schedule import make_schedule
from trio_bg.durable import DurableQueue, _journal_file, _journal_sql
from trio_bg.durable._periodic import MAX_CATCH_UP, ON_TIME, PeriodicSpec, plan

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


def take(connection: sqlite3.Connection, rule: PeriodicSpec, now: float) -> Any:
    connection.execute("BEGIN IMMEDIATE")
    taken = _journal_sql.take_instants(
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
