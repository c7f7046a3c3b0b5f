"""Instruments: which hook is called, when, with what, and in which order, for every kind of task.

An :class:`Audit` notes each hook call with the trio time it came at. Installed per manager
(``open_task_manager(instruments=...)``), process-wide (``trio_bg.add_instrument``, removed by the
``installed`` fixture whatever happens) or through ``TaskMiddleware(instruments=...)`` (the app
manager and every request's manager). Time-dependent checks run under ``autojump_clock``; the
property test runs each example in its own ``trio.run`` with an autojumping mock clock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import outcome
import pytest
import trio
import trio.testing
from hypothesis import event, given, settings
from hypothesis import strategies as st

import trio_bg
from tests.conftest import sleep_then_raise, sleep_then_return, trio_bg_records
from tests.test_asgi_timing_scripted import (
    FINAL_BODY,
    START_200,
    Scope,
    ScriptedLifespan,
    ScriptedServer,
    Timeline,
    http_scope,
)
from tests.workload import TASK_KINDS, Step, fail, start_step, steps
from trio_bg import (
    Instrument,
    Retry,
    ShutdownReport,
    TaskHandle,
    TaskManager,
    TaskRejected,
    TaskState,
    TaskStatistics,
)
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.testing import check_accounting

PENDING = TaskState.PENDING
RUNNING = TaskState.RUNNING
SUCCEEDED = TaskState.SUCCEEDED
FAILED = TaskState.FAILED
CANCELLED = TaskState.CANCELLED
TASK_HOOKS = ("task_created", "task_started", "task_retrying", "task_finished")


class Audit(Instrument):
    """Notes every hook call in ``events`` as ``(trio time, hook name, *what identifies its
    arguments)``; with a shared ``log``, also as ``(label, hook name, ...)`` there, so the order
    of calls across instruments can be seen.

    Task hooks note the handle's id and the state it is in at the call; ``task_finished`` also
    notes its outcome, ``task_retrying`` the exception, the delay and ``handle.attempts``.
    """

    def __init__(self, label: str = "", log: list[tuple[Any, ...]] | None = None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.label = label
        self.log = log

    def _note(self, *what: Any) -> None:
        self.events.append((trio.current_time(), *what))
        if self.log is not None:
            self.log.append((self.label, *what))

    def manager_opened(self, manager: TaskManager) -> None:
        self._note("manager_opened", manager)

    def manager_closed(self, manager: TaskManager, report: ShutdownReport) -> None:
        self._note("manager_closed", manager, report)

    def task_created(self, handle: TaskHandle[Any]) -> None:
        self._note("task_created", handle.id, handle.state)

    def task_started(self, handle: TaskHandle[Any]) -> None:
        self._note("task_started", handle.id, handle.state)

    def task_retrying(self, handle: TaskHandle[Any], exc: BaseException, delay: float) -> None:
        self._note("task_retrying", handle.id, exc, delay, handle.attempts)

    def task_finished(self, handle: TaskHandle[Any]) -> None:
        self._note("task_finished", handle.id, handle.state, handle.outcome)

    def task_rejected(self, manager: TaskManager, name: str, reason: str) -> None:
        self._note("task_rejected", manager, name, reason)

    def hooks(self) -> list[str]:
        """The hook names, in call order."""
        return [e[1] for e in self.events]

    def of(self, task_id: str) -> list[str]:
        """The task hooks called for one task, in order."""
        return [e[1] for e in self.events if e[1] in TASK_HOOKS and e[2] == task_id]


class Broken(Audit):
    """An Audit whose ``hook`` raises (after noting the call)."""

    def __init__(self, hook: str, log: list[tuple[Any, ...]] | None = None) -> None:
        super().__init__("broken", log)
        self.broken_hook = hook

    def _note(self, *what: Any) -> None:
        super()._note(*what)
        if what[0] == self.broken_hook:
            raise RuntimeError("hook broke")


@pytest.fixture
def installed() -> Iterator[Audit]:
    """An Audit installed process-wide for the test, removed after it whatever happened."""
    audit = Audit()
    trio_bg.add_instrument(audit)
    try:
        yield audit
    finally:
        # A test may have removed it already (or made the library remove it).
        with contextlib.suppress(KeyError):
            trio_bg.remove_instrument(audit)


# -- one task, each kind of life --------------------------------------------------------------


async def test_a_plain_task_goes_created_started_finished_between_the_manager_events(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    started_at_start: list[object] = []

    class StartedAt(Instrument):
        def task_started(self, handle: TaskHandle[Any]) -> None:
            started_at_start.append(handle.started_at)

    async with trio_bg.open_task_manager(instruments=[audit, StartedAt()]) as tm:
        handle = tm.start_soon_named("job", sleep_then_return, 1, 7)
        assert await handle.get() == 7

    assert audit.events == [
        (0, "manager_opened", tm),
        (0, "task_created", handle.id, PENDING),
        (0, "task_started", handle.id, RUNNING),
        (1, "task_finished", handle.id, SUCCEEDED, outcome.Value(7)),
        (1, "manager_closed", tm, ShutdownReport(manager="app", duration=0, cancelled=())),
    ]
    assert audit.events[-1][3] is tm.shutdown_report
    # RUNNING at the hook; the function is called at trio's next scheduling pass.
    assert started_at_start == [None]


async def test_a_task_cancelled_while_queued_behind_max_running_is_created_then_finished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    async with trio_bg.open_task_manager(max_running=1, instruments=[audit]) as tm:
        first = tm.start_soon_named("first", sleep_then_return, 2, "first")
        queued = tm.start_soon_named("queued", sleep_then_return, 1, "queued")
        await trio.sleep(1)
        assert queued.state is PENDING
        assert queued.cancel() is True

    assert audit.of(queued.id) == ["task_created", "task_finished"]
    assert [e for e in audit.events if e[1] in TASK_HOOKS] == [
        (0, "task_created", first.id, PENDING),
        (0, "task_started", first.id, RUNNING),
        (0, "task_created", queued.id, PENDING),
        (1, "task_finished", queued.id, CANCELLED, None),
        (2, "task_finished", first.id, SUCCEEDED, outcome.Value("first")),
    ]
    assert queued.started_at is None
    assert tm.statistics() == TaskStatistics(
        started=2, pending=0, running=0, succeeded=1, failed=0, cancelled=1, rejected=0
    )


async def test_a_held_task_discarded_when_the_handler_raises_is_created_then_finished(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    server = ScriptedServer(Timeline())
    seen: dict[str, Any] = {}

    async def handler(scope: Scope, receive: Any, send: Any) -> None:
        tasks = seen["manager"] = request_tasks(scope)
        seen["email"] = tasks.after_response.start_soon_named("email", sleep_then_return, 1, "sent")
        await trio.sleep(1)
        raise ValueError("handler broke")

    middleware = TaskMiddleware(handler, instruments=[audit])
    with pytest.raises(ValueError, match=r"^handler broke$"):
        await middleware(http_scope(), server.receive, server.send)

    manager, email = seen["manager"], seen["email"]
    assert audit.events == [
        (0, "manager_opened", manager),
        (0, "task_created", email.id, PENDING),
        (1, "task_finished", email.id, CANCELLED, None),
        (1, "manager_closed", manager, manager.shutdown_report),
    ]
    # No route in a raw ASGI scope: the manager is named by the method, never the raw path.
    assert manager.shutdown_report == ShutdownReport(manager="GET", duration=0, cancelled=())


async def test_a_retried_task_reports_each_failed_attempt_with_its_exception_and_delay(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    failures = [ConnectionError("first"), ConnectionError("second")]

    async def flaky() -> str:
        await trio.sleep(1)
        if failures:
            raise failures.pop(0)
        return "recovered"

    first, second = failures
    async with trio_bg.open_task_manager(instruments=[audit]) as tm:
        handle = tm.start_soon_named(
            "flaky", flaky, retry=Retry(attempts=3, backoff=2, jitter=False)
        )
        assert await handle.get() == "recovered"

    # Attempt 1 fails at 1, sleeps 2; attempt 2 fails at 4, sleeps 4; attempt 3 ends at 9.
    assert [e for e in audit.events if e[1] in TASK_HOOKS] == [
        (0, "task_created", handle.id, PENDING),
        (0, "task_started", handle.id, RUNNING),
        (1, "task_retrying", handle.id, first, 2.0, 1),
        (4, "task_retrying", handle.id, second, 4.0, 2),
        (9, "task_finished", handle.id, SUCCEEDED, outcome.Value("recovered")),
    ]
    assert handle.attempts == 3


async def test_a_timed_out_task_finishes_failed_with_too_slow_error_set(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    async with trio_bg.open_task_manager(instruments=[audit]) as tm:
        handle = tm.start_soon_named("slow", sleep_then_return, 10, "late", timeout=2)
        await handle.wait()

    assert audit.of(handle.id) == ["task_created", "task_started", "task_finished"]
    when, hook, task_id, state, result = audit.events[-2]
    assert (when, hook, task_id, state) == (2, "task_finished", handle.id, FAILED)
    assert isinstance(result, outcome.Error)
    assert type(result.error) is trio.TooSlowError
    assert result is handle.outcome


async def test_a_failed_task_finishes_after_its_error_handler_with_its_outcome_set(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    audit = Audit()
    error = ValueError("broke")

    async def on_error(handle: TaskHandle[Any], exc: BaseException) -> None:
        audit.events.append((trio.current_time(), "handler entered", handle.id, handle.state, exc))
        await trio.sleep(1)
        audit.events.append((trio.current_time(), "handler done", handle.id))

    async with trio_bg.open_task_manager(instruments=[audit], on_error=on_error) as tm:
        handle = tm.start_soon_named("broken", sleep_then_raise, 1, error)
        await handle.wait()

    assert [e for e in audit.events if e[1] not in ("manager_opened", "manager_closed")] == [
        (0, "task_created", handle.id, PENDING),
        (0, "task_started", handle.id, RUNNING),
        (1, "handler entered", handle.id, RUNNING, error),
        (2, "handler done", handle.id),
        (2, "task_finished", handle.id, FAILED, outcome.Error(error)),
    ]
    [record] = trio_bg_records(caplog, logging.ERROR)
    assert record.getMessage() == f"task 'broken' ({handle.id}) failed"


# -- refused starts ---------------------------------------------------------------------------


async def test_a_start_on_a_closed_manager_calls_task_rejected_closed_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    async with trio_bg.open_task_manager("jobs", instruments=[audit]) as tm:
        pass
    before = len(audit.events)

    with pytest.raises(TaskRejected, match=r"^task manager 'jobs' is closed to new tasks$"):
        tm.start_soon_named("late", trio.sleep, 0)

    assert audit.events[before:] == [(0, "task_rejected", tm, "late", "closed")]
    assert tm.statistics().rejected == 1


async def test_a_start_past_max_pending_calls_task_rejected_max_pending_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    async with trio_bg.open_task_manager(max_running=1, max_pending=1, instruments=[audit]) as tm:
        running = tm.start_soon_named("running", trio.sleep, 0)
        queued = tm.start_soon_named("queued", trio.sleep, 0)
        before = len(audit.events)
        with pytest.raises(
            TaskRejected, match=r"^task manager 'app' has 1 pending tasks \(max_pending=1\)$"
        ):
            tm.start_soon_named("refused", trio.sleep, 0)
        assert audit.events[before:] == [(0, "task_rejected", tm, "refused", "max_pending")]

    assert [audit.of(h.id) for h in (running, queued)] == [
        ["task_created", "task_started", "task_finished"]
    ] * 2
    stats = tm.statistics()
    assert (stats.started, stats.rejected) == (2, 1)


async def test_a_start_in_a_closed_group_calls_task_rejected_group_closed_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    async with trio_bg.open_task_manager(instruments=[audit]) as tm:
        async with tm.open_group("thumbnails") as group:
            group.start_soon_named("one", trio.sleep, 0)
        before = len(audit.events)
        with pytest.raises(TaskRejected, match=r"^group 'thumbnails' is closed to new tasks$"):
            group.start_soon_named("two", trio.sleep, 0)
        assert audit.events[before:] == [(0, "task_rejected", tm, "two", "group_closed")]

    assert tm.statistics().rejected == 1


async def test_a_start_past_the_request_cap_calls_task_rejected_max_tasks_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    server = ScriptedServer(Timeline())
    seen: dict[str, Any] = {}

    async def handler(scope: Scope, receive: Any, send: Any) -> None:
        tasks = seen["manager"] = request_tasks(scope)
        seen["first"] = tasks.start_soon_named("first", trio.sleep, 0)
        with pytest.raises(TaskRejected, match=r"^task manager 'GET' reached its cap of 1 tasks$"):
            tasks.after_response.start_soon_named("second", trio.sleep, 0)
        await send(START_200)
        await send(FINAL_BODY)

    middleware = TaskMiddleware(handler, max_tasks_per_request=1, instruments=[audit])
    await middleware(http_scope(), server.receive, server.send)

    manager, first = seen["manager"], seen["first"]
    assert audit.events == [
        (0, "manager_opened", manager),
        (0, "task_created", first.id, PENDING),
        (0, "task_started", first.id, RUNNING),
        (0, "task_rejected", manager, "second", "max_tasks"),
        (0, "task_finished", first.id, SUCCEEDED, outcome.Value(None)),
        (0, "manager_closed", manager, manager.shutdown_report),
    ]
    assert manager.statistics().rejected == 1


# -- managers ---------------------------------------------------------------------------------


async def test_manager_closed_gets_the_shutdown_report_naming_the_dropped_tasks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    async with trio_bg.open_task_manager(
        "jobs", grace_period=1, shield_timeout=3, instruments=[audit]
    ) as tm:
        done = tm.start_soon_named("done", sleep_then_return, 0.5, "done")
        stuck = tm.start_soon_named("stuck", trio.sleep_forever)
        shielded = tm.start_soon_named("shielded", trio.sleep_forever, shield=True)
        asked = tm.start_soon_named("asked", trio.sleep_forever)
        asked.cancel()

    report = ShutdownReport(manager="jobs", duration=3, cancelled=(stuck, shielded))
    assert tm.shutdown_report == report
    assert audit.events[0] == (0, "manager_opened", tm)
    assert audit.events[-1] == (3, "manager_closed", tm, report)
    finished = [e for e in audit.events if e[1] == "task_finished"]
    assert [e[:4] for e in finished] == [
        (0, "task_finished", asked.id, CANCELLED),
        (0.5, "task_finished", done.id, SUCCEEDED),
        (1, "task_finished", stuck.id, CANCELLED),
        (3, "task_finished", shielded.id, CANCELLED),
    ]


async def test_the_middleware_instruments_see_the_app_manager_and_every_request_manager(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    requests: list[TaskManager] = []
    handles: dict[str, TaskHandle[Any]] = {}

    async def inner(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan support")
        tasks = request_tasks(scope)
        requests.append(tasks)
        handles[scope["path"]] = tasks.after_response.start_soon_named(
            scope["path"], sleep_then_return, 1, scope["path"]
        )
        handles[f"app {scope['path']}"] = app_tasks(scope).start_soon_named(
            "reindex", sleep_then_return, 5, "reindexed"
        )
        await send(START_200)
        await send(FINAL_BODY)

    middleware = TaskMiddleware(inner, instruments=[audit])
    lifespan = ScriptedLifespan()
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(middleware, scope, lifespan.receive, lifespan.send)
        assert await lifespan.say("lifespan.startup") == {"type": "lifespan.startup.complete"}
        app = app_tasks(scope)
        for path in ("/a", "/b"):
            await middleware(http_scope(path), ScriptedServer(Timeline()).receive, take_any_message)
        assert await lifespan.say("lifespan.shutdown") == {"type": "lifespan.shutdown.complete"}

    first, second = requests
    manager_events = [e[:3] for e in audit.events if e[1].startswith("manager_")]
    assert manager_events == [
        (0, "manager_opened", app),
        (0, "manager_opened", first),
        (1, "manager_closed", first),
        (1, "manager_opened", second),
        (2, "manager_closed", second),
        (6, "manager_closed", app),  # the close, from 2, waited for the 5 s app tasks
    ]
    for handle in handles.values():
        assert audit.of(handle.id) == ["task_created", "task_started", "task_finished"]
        assert handle.state is SUCCEEDED


async def take_any_message(message: Any) -> None:
    """A server's ``send`` that takes every message at once."""


# -- process-wide instruments -----------------------------------------------------------------


async def test_a_process_wide_instrument_sees_every_manager_before_the_managers_own(
    installed: Audit,
) -> None:
    log: list[tuple[Any, ...]] = []
    installed.label, installed.log = "global", log
    async with trio_bg.open_task_manager("first", instruments=[Audit("own", log)]) as first:
        one = first.start_soon_named("one", trio.sleep, 0)
    async with trio_bg.open_task_manager("second") as second:
        two = second.start_soon_named("two", trio.sleep, 0)

    # Each call once per instrument that sees the manager: the process-wide one first.
    assert [e[:3] for e in log] == [
        ("global", "manager_opened", first),
        ("own", "manager_opened", first),
        ("global", "task_created", one.id),
        ("own", "task_created", one.id),
        ("global", "task_started", one.id),
        ("own", "task_started", one.id),
        ("global", "task_finished", one.id),
        ("own", "task_finished", one.id),
        ("global", "manager_closed", first),
        ("own", "manager_closed", first),
        ("global", "manager_opened", second),
        ("global", "task_created", two.id),
        ("global", "task_started", two.id),
        ("global", "task_finished", two.id),
        ("global", "manager_closed", second),
    ]


async def test_add_instrument_reaches_managers_already_open_and_remove_stops_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    audit = Audit()
    async with trio_bg.open_task_manager("open") as tm:
        before = tm.start_soon_named("before", trio.sleep, 0)
        await before.wait()
        trio_bg.add_instrument(audit)
        try:
            trio_bg.add_instrument(audit)  # a second add does nothing
            during = tm.start_soon_named("during", trio.sleep, 0)
            await during.wait()
        finally:
            trio_bg.remove_instrument(audit)
        after = tm.start_soon_named("after", trio.sleep, 0)
        await after.wait()

    assert audit.events == [
        (0, "task_created", during.id, PENDING),
        (0, "task_started", during.id, RUNNING),
        (0, "task_finished", during.id, SUCCEEDED, outcome.Value(None)),
    ]


def test_removing_an_instrument_that_is_not_installed_raises_key_error() -> None:
    audit = Audit()
    with pytest.raises(
        KeyError, match=rf"^'instrument {re.escape(repr(audit))} is not installed'$"
    ):
        trio_bg.remove_instrument(audit)


def test_only_instruments_can_be_installed() -> None:
    with pytest.raises(TypeError, match=r"^an instrument must be a trio_bg\.Instrument, got int$"):
        trio_bg.add_instrument(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^an instrument must be a trio_bg\.Instrument, got type$"):
        trio_bg.add_instrument(Audit)  # type: ignore[arg-type]


def test_the_instruments_option_takes_an_iterable_of_instruments() -> None:
    iterable_message = r"^instruments must be an iterable of trio_bg\.Instrument, got {}$"
    with pytest.raises(TypeError, match=iterable_message.format("int")):
        trio_bg.open_task_manager(instruments=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=iterable_message.format("Audit")):
        trio_bg.open_task_manager(instruments=Audit())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^an instrument must be a trio_bg\.Instrument, got str$"):
        trio_bg.open_task_manager(instruments=["audit"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=iterable_message.format("int")):
        TaskMiddleware(take_any_message, instruments=5)  # type: ignore[arg-type]


async def run_mixed_tasks(instruments: list[Instrument]) -> list[Any]:
    """Run a task that succeeds, one that fails and one the close cancels, under
    ``max_running=1``; return what can be seen of them, times relative to the start."""
    began = trio.current_time()
    async with trio_bg.open_task_manager(
        max_running=1, grace_period=5, instruments=instruments
    ) as tm:
        handles = [
            tm.start_soon_named("a", sleep_then_return, 1, "a"),
            tm.start_soon_named("b", sleep_then_raise, 1, ValueError("b")),
            tm.start_soon_named("c", trio.sleep_forever),
        ]
        at_start = [h.state for h in handles]
    report = tm.shutdown_report
    assert report is not None
    return [
        at_start,
        [h.state for h in handles],
        [h.attempts for h in handles],
        tm.statistics(),
        [h.name for h in report.cancelled],
        report.duration,
        trio.current_time() - began,
    ]


async def test_without_instruments_a_manager_behaves_as_with_one_that_overrides_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    bare = await run_mixed_tasks([])
    assert bare == [
        [RUNNING, PENDING, PENDING],
        [SUCCEEDED, FAILED, CANCELLED],
        [1, 1, 1],
        TaskStatistics(
            started=3, pending=0, running=0, succeeded=1, failed=1, cancelled=1, rejected=0
        ),
        ["c"],
        5,  # "a" ends at 1, "b" at 2, "c" is cancelled at the end of the grace period
        5,
    ]
    assert await run_mixed_tasks([Instrument()]) == bare
    assert await run_mixed_tasks([Audit()]) == bare


# -- a hook that raises -----------------------------------------------------------------------


async def test_a_raising_process_wide_hook_is_logged_and_removed_and_the_task_is_unaffected(
    installed: Audit, caplog: pytest.LogCaptureFixture
) -> None:
    broken = Broken("task_started")
    trio_bg.add_instrument(broken)
    try:
        async with trio_bg.open_task_manager() as tm:
            first = tm.start_soon_named("first", sleep_then_return, 0, "first")
            assert await first.get() == "first"
            second = tm.start_soon_named("second", sleep_then_return, 0, "second")
            assert await second.get() == "second"
    finally:
        with contextlib.suppress(KeyError):
            trio_bg.remove_instrument(broken)

    # Called up to the hook that raised, never again, not even for the same task's end.
    assert broken.hooks() == ["manager_opened", "task_created", "task_started"]
    with pytest.raises(KeyError, match=r"^'instrument .* is not installed'$"):
        trio_bg.remove_instrument(broken)  # already removed by the library
    # The other instrument saw everything.
    assert installed.of(first.id) == ["task_created", "task_started", "task_finished"]
    assert installed.of(second.id) == ["task_created", "task_started", "task_finished"]
    [record] = trio_bg_records(caplog, logging.ERROR)
    assert record.getMessage() == (
        f"instrument {broken!r} raised in task_started; it has been removed"
    )
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == "hook broke"


async def test_a_raising_hook_of_a_manager_is_removed_from_that_manager_and_the_task_unaffected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[tuple[Any, ...]] = []
    broken, audit = Broken("task_finished", log), Audit("audit", log)
    async with trio_bg.open_task_manager(instruments=[broken, audit]) as tm:
        first = tm.start_soon_named("first", sleep_then_return, 0, 1)
        assert await first.get() == 1
        second = tm.start_soon_named("second", sleep_then_return, 0, 2)
        assert await second.get() == 2

    # The broken instrument saw the first task to its end (the hook that raised), then nothing;
    # the other one, called after it, saw that same end and everything else.
    assert [e[:3] for e in log if e[1] in TASK_HOOKS] == [
        ("broken", "task_created", first.id),
        ("audit", "task_created", first.id),
        ("broken", "task_started", first.id),
        ("audit", "task_started", first.id),
        ("broken", "task_finished", first.id),
        ("audit", "task_finished", first.id),
        ("audit", "task_created", second.id),
        ("audit", "task_started", second.id),
        ("audit", "task_finished", second.id),
    ]
    assert broken.hooks() == ["manager_opened", "task_created", "task_started", "task_finished"]
    assert audit.hooks()[-1] == "manager_closed"
    assert first.outcome == outcome.Value(1)
    [record] = trio_bg_records(caplog, logging.ERROR)
    assert record.getMessage() == (
        f"instrument {broken!r} raised in task_finished; it has been removed"
    )


async def test_a_raising_hook_is_removed_from_every_manager_it_was_given_to(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Instrument's contract: one that raises "is removed (everywhere it was installed)".
    broken = Broken("task_created")
    async with (
        trio_bg.open_task_manager("a", instruments=[broken]) as a,
        trio_bg.open_task_manager("b", instruments=[broken]) as b,
    ):
        first = a.start_soon_named("first", trio.sleep, 0)
        second = b.start_soon_named("second", trio.sleep, 0)

    assert [e[2] for e in broken.events if e[1] == "task_created"] == [first.id]
    assert second.state is SUCCEEDED
    assert len(trio_bg_records(caplog, logging.ERROR)) == 1


async def test_a_raising_middleware_hook_is_removed_from_the_app_and_every_request_manager(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    broken, audit = Broken("task_started"), Audit()
    handles: list[TaskHandle[Any]] = []
    requests: list[TaskManager] = []

    async def inner(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            raise RuntimeError("no lifespan support")
        requests.append(request_tasks(scope))
        handles.append(requests[-1].start_soon_named("req", sleep_then_return, 1, 1))
        handles.append(app_tasks(scope).start_soon_named("app", sleep_then_return, 1, 2))
        await send(START_200)
        await send(FINAL_BODY)

    middleware = TaskMiddleware(inner, instruments=[broken, audit])
    lifespan = ScriptedLifespan()
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(middleware, scope, lifespan.receive, lifespan.send)
        assert await lifespan.say("lifespan.startup") == {"type": "lifespan.startup.complete"}
        app = app_tasks(scope)
        for _ in range(2):
            await middleware(http_scope(), ScriptedServer(Timeline()).receive, take_any_message)
        assert await lifespan.say("lifespan.shutdown") == {"type": "lifespan.shutdown.complete"}

    assert [h.state for h in handles] == [SUCCEEDED] * 4
    first = handles[0].id  # the first request's own task: the hook raised at its start
    assert [e[1:3] for e in broken.events] == [
        ("manager_opened", app),
        ("manager_opened", requests[0]),
        ("task_created", first),
        ("task_started", first),
    ]
    for handle in handles:
        assert audit.of(handle.id) == ["task_created", "task_started", "task_finished"]
    assert len(trio_bg_records(caplog, logging.ERROR)) == 1


# -- property: any mix of tasks keeps every task's hooks in order --------------------------------


KINDS = (
    "succeed",
    "fail",
    "retry",
    "timeout",
    "forever",
    "keyed",
    "group",
    "cancel",
    "cancel_all",
    "request",
)


@dataclass(frozen=True)
class Schedule:
    steps: list[Step]
    max_running: int | None
    max_pending: int | None
    grace_period: int
    close_at: float
    max_tasks_per_request: int


schedules = st.builds(
    Schedule,
    steps=st.lists(steps(KINDS), min_size=3, max_size=20),
    max_running=st.sampled_from([None, 1, 1, 2]),
    max_pending=st.sampled_from([None, 0, 2]),
    grace_period=st.integers(0, 3),
    close_at=st.integers(2, 20).map(lambda t: t + 0.5),
    max_tasks_per_request=st.integers(1, 4),
)


async def scripted_request(scope: Scope, receive: Any, send: Any) -> None:
    """The app of the property test: ``scope["step"]`` says what this request does."""
    step: Step = scope["step"]
    tasks = request_tasks(scope)
    always = step.n % 4 >= 2
    starts: list[Callable[[], TaskHandle[Any]]] = [
        lambda: tasks.start_soon_named("audit", sleep_then_return, step.seconds, 1),
        lambda: tasks.after_route.start_soon_named("cache", fail, step.seconds, always=always),
        lambda: tasks.after_response.start_soon_named("email", sleep_then_return, 1, 2),
        lambda: tasks.add_task(sleep_then_return, step.seconds, 3),
    ]
    handles: list[TaskHandle[Any]] = []
    for start in starts:
        with contextlib.suppress(TaskRejected):  # past the request's cap
            handles.append(start())
    if step.n % 5 == 0 and handles:
        handles[-1].cancel()
    await trio.sleep(step.seconds / 2)
    if step.n % 2:
        raise ValueError("handler broke")
    await send(START_200)
    await send(FINAL_BODY)


async def serve_request(middleware: TaskMiddleware, step: Step) -> None:
    scope = http_scope()
    scope["step"] = step
    server = ScriptedServer(Timeline())
    if step.n % 2:
        with pytest.raises(ValueError, match=r"^handler broke$"):
            await middleware(scope, server.receive, server.send)
    else:
        await middleware(scope, server.receive, server.send)


def seen_statistics(audit: Audit) -> TaskStatistics:
    """The statistics the instrument's calls imply, over every manager it saw."""
    last: dict[str, tuple[Any, ...]] = {}
    for e in audit.events:
        if e[1] in TASK_HOOKS:
            last[e[2]] = e
    ends = Counter(e[3] if e[1] == "task_finished" else e[1] for e in last.values())
    return TaskStatistics(
        started=len(last),
        pending=ends["task_created"],
        running=ends["task_started"] + ends["task_retrying"],
        succeeded=ends[SUCCEEDED],
        failed=ends[FAILED],
        cancelled=ends[CANCELLED],
        rejected=audit.hooks().count("task_rejected"),
    )


def total_statistics(managers: list[TaskManager]) -> TaskStatistics:
    """The statistics of several managers, summed field by field."""
    totals = [0] * len(dataclasses.fields(TaskStatistics))
    for manager in managers:
        values = dataclasses.astuple(manager.statistics())
        totals = [a + b for a, b in zip(totals, values, strict=True)]
    return TaskStatistics(*totals)


def check_task_hooks(audit: Audit) -> set[str]:
    """Each task's hooks came in order, each once (retrying any number of times), with the
    state they promise; every task finished. Returns the ids of the tasks seen."""
    ids = {e[2] for e in audit.events if e[1] in TASK_HOOKS}
    for task_id in ids:
        events = [e for e in audit.events if e[1] in TASK_HOOKS and e[2] == task_id]
        hooks = [e[1] for e in events]
        retries = hooks.count("task_retrying")
        assert hooks in (
            ["task_created", "task_finished"],
            ["task_created", "task_started", *["task_retrying"] * retries, "task_finished"],
        ), hooks
        assert events[0][3] is PENDING
        assert all(e[3] is RUNNING for e in events[1:-1] if e[1] == "task_started")
        assert events[-1][3].done
        times = [e[0] for e in events]
        assert times == sorted(times)
        if events[-1][3] in (SUCCEEDED, FAILED):
            attempts = [e[5] for e in events if e[1] == "task_retrying"]
            assert attempts == list(range(1, retries + 1))
    return ids


async def run_schedule(schedule: Schedule) -> None:
    core, web = Audit(), Audit()
    middleware = TaskMiddleware(
        scripted_request, max_tasks_per_request=schedule.max_tasks_per_request, instruments=[web]
    )
    handles: dict[str, TaskHandle[Any]] = {}
    served = 0

    def check(tm: TaskManager) -> None:
        check_accounting(tm.statistics())
        assert tm.statistics() == seen_statistics(core)
        assert set(handles) == {e[2] for e in core.events if e[1] == "task_created"}

    async with trio.open_nursery() as requests:
        async with trio_bg.open_task_manager(
            "core",
            max_running=schedule.max_running,
            max_pending=schedule.max_pending,
            grace_period=schedule.grace_period,
            shield_timeout=schedule.grace_period + 1,
            instruments=[core],
        ) as tm:
            with trio.move_on_after(schedule.close_at):
                async with tm.open_group("batch") as group:
                    for step in schedule.steps:
                        await trio.sleep(step.gap)
                        check(tm)
                        started: TaskHandle[Any] | None = None
                        with contextlib.suppress(TaskRejected):
                            if step.kind in TASK_KINDS:
                                started = start_step(tm, step)
                            elif step.kind == "group":
                                started = group.start_soon(sleep_then_return, step.seconds, 1)
                            elif step.kind == "cancel":
                                if handles:
                                    list(handles.values())[step.n % len(handles)].cancel()
                            elif step.kind == "cancel_all":
                                tm.cancel_all()
                            else:
                                requests.start_soon(serve_request, middleware, step)
                                served += 1
                        if started is not None:
                            handles[started.id] = started
                        check(tm)
            with pytest.raises(TaskRejected, match=r"^group 'batch' is closed to new tasks$"):
                group.start_soon(trio.sleep, 0)
            check(tm)
        check(tm)

    # Every task the instruments saw: its hooks in order, each once, and it finished.
    assert check_task_hooks(core) == set(handles)
    assert all(h.done for h in handles.values())
    check_task_hooks(web)
    # The statistics add up and match what the instruments saw, per manager and in all.
    final = tm.statistics()
    check_accounting(final)
    assert final.pending == final.running == 0
    assert final == seen_statistics(core)
    assert final.rejected >= 1  # at least the start in the closed group
    request_managers = [e[2] for e in web.events if e[1] == "manager_opened"]
    closed = [e[2] for e in web.events if e[1] == "manager_closed"]
    assert len(set(request_managers)) == len(request_managers)
    assert Counter(closed) == Counter(request_managers)  # each closed exactly once
    assert len(request_managers) == served
    for manager in request_managers:
        check_accounting(manager.statistics())
    web_totals = total_statistics(request_managers)
    assert web_totals == seen_statistics(web)
    assert web_totals.pending == web_totals.running == 0
    # The core manager: opened first, closed last, with the report of its close.
    assert core.events[0][1:] == ("manager_opened", tm)
    assert core.events[-1][1:] == ("manager_closed", tm, tm.shutdown_report)
    report = tm.shutdown_report
    assert report is not None
    assert all(h.state is CANCELLED and h.id in handles for h in report.cancelled)
    event(f"retries seen: {'task_retrying' in core.hooks()}")
    never_started = ["task_created", "task_finished"]
    event(f"core tasks never started: {any(core.of(i) == never_started for i in handles)}")
    web_ids = check_task_hooks(web)
    event(f"request tasks never started: {any(web.of(i) == never_started for i in web_ids)}")
    event(f"requests: {bool(request_managers)}")
    event(f"rejections: {final.rejected + web_totals.rejected > 1}")


@settings(max_examples=150, deadline=None)
@given(schedules)
def test_random_schedules_call_each_tasks_hooks_in_order_and_match_the_statistics(
    schedule: Schedule,
) -> None:
    trio.run(run_schedule, schedule, clock=trio.testing.MockClock(autojump_threshold=0))
