"""In-process periodic tasks (``tm.start_periodic_named``) on ``autojump_clock``, and the
instants of a schedule (``every`` and ``cron`` in a time zone, across DST changes) with no clock
at all."""

from __future__ import annotations

import itertools
import logging
import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio
import trio.testing

import trio_bg
from trio_bg import TaskState
from trio_bg._core._schedule import make_schedule

BERLIN = ZoneInfo("Europe/Berlin")


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


async def test_every_starts_a_run_per_period_each_its_own_task_until_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[float] = []

    async def refresh(label: str) -> str:
        runs.append(trio.current_time())
        await trio.sleep(1)
        return label

    async with trio_bg.open_task_manager() as tm:
        schedule = tm.start_periodic_named("refresh", refresh, "cache", every=30)
        assert schedule.name == "refresh (every 30 s)"
        await trio.sleep(95)
        assert runs == [30, 60, 90]
        named = [h for h in tm.recent if h.name == "refresh"]
        assert [h.state for h in named] == [TaskState.SUCCEEDED] * 3  # each ran 1 s
        assert [await h.get() for h in named] == ["cache", "cache", "cache"]
        assert schedule.cancel()
        await trio.sleep(100)
        assert runs == [30, 60, 90]  # no run after the cancel
        assert schedule.state is TaskState.CANCELLED
    report = tm.shutdown_report
    assert report is not None and report.cancelled == ()
    stats = tm.statistics()
    assert (stats.started, stats.succeeded, stats.cancelled) == (4, 3, 1)


async def test_overlap_skip_skips_an_instant_while_the_previous_run_is_active(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "trio_bg")
    runs: list[float] = []

    async def slow() -> None:
        runs.append(trio.current_time())
        await trio.sleep(25)  # longer than the period

    async with trio_bg.open_task_manager() as tm:
        tm.start_periodic_named("slow", slow, every=10)
        await trio.sleep(65)
        assert runs == [10, 40]  # 20 and 30 skipped (10's run lasts until 35); 50 and 60 too
        tm.cancel_all()
    skipped = [r.getMessage() for r in caplog.records if "is skipped" in r.getMessage()]
    assert len(skipped) == 4
    assert skipped[0].startswith("periodic task 'slow': the run due now is skipped, the previous")


async def test_overlap_allow_starts_every_instant(autojump_clock: trio.testing.MockClock) -> None:
    runs: list[float] = []

    async def slow() -> None:
        runs.append(trio.current_time())
        await trio.sleep(25)

    async with trio_bg.open_task_manager() as tm:
        tm.start_periodic_named("slow", slow, every=10, overlap="allow")
        await trio.sleep(32)
        assert runs == [10, 20, 30]
        assert tm.active_count == 4  # the schedule and three runs, each 25 s long
        tm.cancel_all()


async def test_the_close_stops_the_schedule_at_once_and_lets_a_run_finish_in_its_grace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    done: list[float] = []

    async def work() -> None:
        await trio.sleep(3)
        done.append(trio.current_time())

    async with trio_bg.open_task_manager(grace_period=5) as tm:
        schedule = tm.start_periodic_named("work", work, every=10)
        await trio.sleep(11)
    assert done == [13]  # the close waited for the run, not for the schedule's next instant
    assert trio.current_time() == 13
    assert schedule.state is TaskState.CANCELLED
    report = tm.shutdown_report
    assert report is not None and report.cancelled == ()


async def test_runs_take_the_start_options(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    failed: list[str] = []

    async def hangs() -> None:
        await trio.sleep_forever()

    def handler(handle: trio_bg.TaskHandle[Any], exc: BaseException) -> None:
        failed.append(f"{handle.name}: {type(exc).__name__}")

    async with trio_bg.open_task_manager() as tm:
        tm.start_periodic_named("hangs", hangs, every=10, timeout=2, on_error=handler)
        await trio.sleep(25)
        tm.cancel_all()
    assert failed == ["hangs: TooSlowError", "hangs: TooSlowError"]


async def test_cron_runs_at_its_wall_clock_instants(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runs: list[float] = []

    async def tick() -> None:
        runs.append(trio.current_time())

    async with trio_bg.open_task_manager() as tm:
        tm.start_periodic_named("tick", tick, cron="* * * * *")
        await trio.sleep(181)
        tm.cancel_all()
    # One run per minute, 60 s apart on trio's clock: at each full minute of the wall clock.
    assert len(runs) == 3
    assert [b - a for a, b in itertools.pairwise(runs)] == [60.0, 60.0]
    assert 0 < runs[0] <= 60


ONE_OF = "give exactly one of every= (seconds) or cron= (an expression)"
NEGATIVE_TIMEOUT = "timeout must be a non-negative number of seconds, got -1"
TZ_WITH_EVERY = "tz= goes with cron=, not every= (every counts seconds, in no zone)"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, TypeError, ONE_OF),
        (
            {"every": 1, "cron": "* * * * *"},
            TypeError,
            "give exactly one of every= (seconds) or cron= (an expression)",
        ),
        ({"every": 0}, ValueError, "every must be a positive, finite number of seconds, got 0"),
        ({"every": "5"}, TypeError, "every must be a number of seconds, got str"),
        (
            {"every": 5, "tz": "UTC"},
            TypeError,
            "tz= goes with cron=, not every= (every counts seconds, in no zone)",
        ),
        ({"cron": "61 * * * *"}, ValueError, "invalid cron expression '61 * * * *': Bad minute"),
        ({"cron": "* * * * *", "tz": "Mars/Base"}, ValueError, "unknown time zone 'Mars/Base'"),
        (
            {"every": 5, "overlap": "queue"},
            ValueError,
            "overlap must be 'skip' or 'allow', got 'queue'",
        ),
        (
            {"every": 5, "timeout": -1},
            ValueError,
            "timeout must be a non-negative number of seconds, got -1",
        ),
    ],
)
async def test_a_bad_schedule_raises_exactly_and_starts_nothing(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    async def job() -> None:
        pass

    async with trio_bg.open_task_manager() as tm:
        with pytest.raises(error, match=exact(message)):
            tm.start_periodic_named("job", job, **kwargs)
        assert tm.statistics().started == 0


async def test_arguments_the_function_cannot_take_are_refused_at_the_call() -> None:
    async def job(a: int) -> None:
        pass

    async with trio_bg.open_task_manager() as tm:
        with pytest.raises(
            TypeError,
            match=r"^start_periodic_named\(\) cannot start 'job': .*job\(\) missing 1 required ",
        ):
            tm.start_periodic_named("job", job, every=5)  # type: ignore[call-arg]
        assert tm.statistics().started == 0


# -- the instants, with no clock -----------------------------------------------------------------


def berlin(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


def shown(instants: list[float]) -> list[str]:
    return [datetime.fromtimestamp(t, BERLIN).isoformat() for t in instants]


def first(schedule: Any, after: float, n: int) -> list[float]:
    it = schedule.instants_after(after)
    return [next(it) for _ in range(n)]


def test_every_is_the_multiples_of_its_period_since_the_epoch() -> None:
    schedule = make_schedule(60, None, None)
    assert schedule.next_after(125.0) == 180.0
    assert schedule.next_after(180.0) == 240.0  # strictly after
    assert first(schedule, 59.5, 3) == [60.0, 120.0, 180.0]


def test_a_fixed_time_on_the_spring_forward_day_runs_once_after_the_gap() -> None:
    # 2026-03-29 in Berlin: 02:00 -> 03:00; 02:30 does not exist.
    schedule = make_schedule(None, "30 2 * * *", "Europe/Berlin")
    got = first(schedule, berlin("2026-03-28T12:00:00"), 3)
    assert shown(got) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_a_fixed_time_on_the_fall_back_day_runs_once_at_its_first_occurrence() -> None:
    # 2026-10-25 in Berlin: 03:00 -> 02:00; 02:30 occurs twice.
    schedule = make_schedule(None, "30 2 * * *", "Europe/Berlin")
    got = first(schedule, berlin("2026-10-24T12:00:00"), 3)
    assert shown(got) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]


def test_a_wildcard_hour_runs_through_the_repeated_hour() -> None:
    schedule = make_schedule(None, "*/30 * * * *", "Europe/Berlin")
    got = first(schedule, berlin("2026-10-25T01:50:00"), 6)
    assert shown(got) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    assert [b - a for a, b in itertools.pairwise(got)] == [1800.0] * 5


def test_the_schedule_task_names_its_schedule() -> None:
    assert make_schedule(None, "0 3 * * *", "Europe/Berlin").describe() == (
        "cron '0 3 * * *' (Europe/Berlin)"
    )
    assert make_schedule(2.5, None, None).describe() == "every 2.5 s"


def test_the_skipped_line_is_info(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "trio_bg")

    async def main() -> None:
        async def slow() -> None:
            await trio.sleep(15)

        async with trio_bg.open_task_manager() as tm:
            tm.start_periodic_named("slow", slow, every=10)
            await trio.sleep(21)
            tm.cancel_all()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    levels = {r.levelno for r in caplog.records if "is skipped" in r.getMessage()}
    assert levels == {logging.INFO}
