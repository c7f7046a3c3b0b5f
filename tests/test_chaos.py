"""Chaos: a Hypothesis state machine drives one task manager and checks it after every step.

The rules start tasks of every kind (succeed, fail, hang, time out, retry, shielded, keyed, in a
group), cancel one, cancel all, add waiters to a handle, let time pass and close the manager,
under caps drawn at the start. After every step the invariants are checked against a model:

- the statistics add up and match the handles' states; ``rejected`` counts the refused starts
  (predicted exactly from the caps) and the ``task_rejected`` hook calls;
- a handle reaches one terminal state, never changes it, and that state fits what its function
  does (a task that can only fail never SUCCEEDS, a value is the function's own);
- every waiter of a handle (several ``get()`` calls, started at different times) sees the same
  answer: the same value object, the same exception object, or a TaskCancelled;
- the error handler was called exactly once per FAILED task (the task's own handler if it had
  one, else the manager's) and never for any other;
- the instrument hooks of each task come in the order created -> started -> retrying* ->
  finished, each once;
- ``cancel_all()`` returns the number of unshielded active tasks and cancels exactly those;
- after the close: every handle done, and the shutdown report names exactly the tasks the
  shutdown cancelled.

Hypothesis state machines are synchronous and trio is not, so each example runs one
``trio.run`` in a thread of its own, on a :class:`trio.testing.MockClock` that never moves by
itself. Each rule is one ``trio.from_thread.run`` call: it acts, then lets every task run until
all are blocked (``wait_all_tasks_blocked``), so the state it leaves is exact and repeatable;
only the ``advance`` rule moves the clock, one second at a time.

CI-sized by default (60 examples of up to 40 steps). ``TRIO_BG_CHAOS=long`` runs 2,000
examples of up to 60 steps (docs/reliability.md has the figures of such a run).
"""

from __future__ import annotations

import atexit
import math
import os
import sys
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

import trio_bg
from tests.workload import PlannedFailure, Step, steps, work_for
from trio_bg import Retry, TaskCancelled, TaskHandle, TaskManager, TaskRejected, TaskState
from trio_bg.testing import check_accounting

# 60 state-machine examples of up to 40 steps: ~8 s, the longest in-process test.
pytestmark = pytest.mark.slow

T = TypeVar("T")

LONG = os.environ.get("TRIO_BG_CHAOS") == "long"
CHAOS_SETTINGS = settings(
    max_examples=2000 if LONG else 60,
    stateful_step_count=60 if LONG else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TALLY: Counter[str] = Counter()
"""What the examples did, summed (printed at exit by a long run)."""


def _print_tally() -> None:  # pragma: no cover - long runs only
    print("chaos tally:", dict(sorted(TALLY.items())), file=sys.stderr)


if LONG:  # pragma: no cover
    atexit.register(_print_tally)

KINDS = ("succeed", "fail", "hang", "timeout", "retry", "shield")
KEYS = (None, None, "k0", "k1")  # half the starts have no key
RECENT_LIMIT = 5  # small, so that examples overflow it
RETRY = Retry(attempts=3, backoff=1, jitter=False)


Spec = Step
"""What a started task does: ``n`` is how many attempts of a ``retry`` task fail."""

specs = steps(KINDS, gaps=(0, 0), most_n=4)


@dataclass
class Task:
    """The model's record of one handle."""

    handle: TaskHandle[Any]
    spec: Spec
    value: object
    own_handler: bool
    key: str | None
    cancelled_by_us: bool = False  # handle.cancel(), tm.cancel(id) or cancel_all()
    terminal: TaskState | None = None  # the first terminal state seen
    answers: list[tuple[str, object]] = field(default_factory=list)
    waiters: int = 0


class Recorder(trio_bg.Instrument):
    """Notes every task hook, per task id, and every refusal."""

    def __init__(self) -> None:
        self.hooks: dict[str, list[str]] = {}
        self.finished: list[str] = []  # task ids in the order they finished
        self.rejected = 0

    def task_created(self, handle: TaskHandle[Any]) -> None:
        self.hooks.setdefault(handle.id, []).append("created")

    def task_started(self, handle: TaskHandle[Any]) -> None:
        self.hooks[handle.id].append("started")

    def task_retrying(self, handle: TaskHandle[Any], exc: BaseException, delay: float) -> None:
        self.hooks[handle.id].append("retrying")

    def task_finished(self, handle: TaskHandle[Any]) -> None:
        self.hooks[handle.id].append("finished")
        self.finished.append(handle.id)

    def task_rejected(self, manager: TaskManager, name: str, reason: str) -> None:
        self.rejected += 1


class TrioThread:
    """One ``trio.run`` on a still MockClock in a thread; :meth:`call` runs a step in it."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()  # autojump off: time moves only by jump()
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self.nursery: trio.Nursery | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chaos-trio", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the trio thread did not start")

    def _run(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:  # handed to the test by stop()
            self.error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` in the trio thread, then let every task run until all are blocked."""

        async def step() -> T:
            result = await fn()
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(step, trio_token=self._token)

    def stop(self) -> None:
        if self._stop is not None and self.error is None:
            stop = self._stop
            trio.from_thread.run_sync(stop.set, trio_token=self._token)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the trio thread did not end"
        if self.error is not None:
            raise self.error


async def _nothing() -> None:
    await trio.lowlevel.checkpoint()


class ChaosMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.trio = TrioThread()
        self.tasks: list[Task] = []
        self.by_id: dict[str, Task] = {}
        self.handled: Counter[str] = Counter()
        self.handler_of: dict[str, str] = {}
        self.rejected = 0
        self.recorder = Recorder()
        self.manager: TaskManager | None = None
        self.close_now = trio.Event()
        self.closing = False  # the close rule ran: the manager's close has begun
        self.closed_at: float | None = None
        self.manager_exited = False
        self.groups: list[tuple[list[Task], list[object]]] = []  # tasks, [result or error]
        self.max_running: int | None = None
        self.max_pending: int | None = None
        self.shield_timeout = 0.0
        self.async_handlers = False
        self.idle_waiters = 0
        self.idle_returned = 0

    # -- set-up ------------------------------------------------------------------------------

    @initialize(
        max_running=st.sampled_from([None, None, 1, 2, 3]),  # None twice: fewer refusals
        max_pending=st.sampled_from([None, None, 0, 1, 3]),
        grace_period=st.integers(0, 3),
        shield_extra=st.integers(0, 4),
        async_handlers=st.booleans(),
    )
    def open_manager(
        self,
        max_running: int | None,
        max_pending: int | None,
        grace_period: int,
        shield_extra: int,
        async_handlers: bool,
    ) -> None:
        self.max_running, self.max_pending = max_running, max_pending
        self.async_handlers = async_handlers
        self.shield_timeout = grace_period + shield_extra
        opened = threading.Event()

        async def own_manager() -> None:
            async with trio_bg.open_task_manager(
                name="chaos",
                recent_limit=RECENT_LIMIT,
                max_running=max_running,
                max_pending=max_pending,
                grace_period=grace_period,
                shield_timeout=self.shield_timeout,
                on_error=self.handler("manager"),
                instruments=(self.recorder,),
            ) as tm:
                self.manager = tm
                opened.set()
                await self.close_now.wait()
                self.closed_at = trio.current_time()
            self.manager_exited = True

        async def start() -> None:
            assert self.trio.nursery is not None
            self.trio.nursery.start_soon(own_manager)

        self.trio.call(start)
        assert opened.is_set()

    @property
    def tm(self) -> TaskManager:
        assert self.manager is not None
        return self.manager

    def handler(self, whose: str) -> trio_bg.ErrorHandler:
        """An error handler that notes its calls; an async one then takes a second (it runs in
        the task's scope, so a cancel or the close can reach it there)."""

        def note(handle: TaskHandle[Any]) -> None:
            self.handled[handle.id] += 1
            self.handler_of[handle.id] = whose

        def sync_handler(handle: TaskHandle[Any], exc: BaseException) -> None:
            note(handle)

        async def async_handler(handle: TaskHandle[Any], exc: BaseException) -> None:
            note(handle)
            await trio.sleep(1)

        return async_handler if self.async_handlers else sync_handler

    def in_handler(self, task: Task) -> bool:
        """The task failed and its (async) error handler is running: it ends FAILED."""
        return self.handled[task.handle.id] == 1 and not task.handle.done

    # -- the model's prediction of a start ---------------------------------------------------

    def expected_refusal(self, key: str | None) -> Task | bool:
        """The task a keyed start returns instead of a new one, or whether it is refused."""
        if key is not None:
            for task in self.tasks:
                if task.key == key and not task.handle.done:
                    return task
        if self.tm.closed:
            return True
        states = Counter(t.handle.state for t in self.tasks)
        return (
            self.max_running is not None
            and states[TaskState.RUNNING] >= self.max_running
            and self.max_pending is not None
            and states[TaskState.PENDING] >= self.max_pending
        )

    def start(
        self, starter: trio_bg.TaskStarter, spec: Spec, key: str | None, own_handler: bool
    ) -> Task | None:
        """Start ``spec`` on ``starter`` and check the outcome against the prediction."""
        expected = self.expected_refusal(key)
        before = self.tm.statistics()
        work, value = work_for(spec.kind, spec.seconds, spec.n)
        try:
            handle = starter.start_soon_named(
                spec.kind,
                work,
                shield=spec.kind == "shield",
                timeout=spec.seconds if spec.kind == "timeout" else None,
                retry=RETRY if spec.kind == "retry" else None,
                on_error=self.handler("own") if own_handler else None,
                key=key,
            )
        except TaskRejected:
            assert expected is True, "a start was refused that the model accepts"
            self.rejected += 1
            assert self.tm.statistics().started == before.started
            return None
        assert expected is not True, "a start was accepted that the model refuses"
        if isinstance(expected, Task):  # the same key is active: its handle, nothing new
            assert handle is expected.handle
            assert self.tm.statistics() == before
            return None
        assert handle.id not in self.by_id
        task = Task(handle, spec, value, own_handler, key)
        self.tasks.append(task)
        self.by_id[handle.id] = task
        return task

    # -- rules -------------------------------------------------------------------------------

    @rule(spec=specs, key=st.sampled_from(KEYS), own_handler=st.booleans())
    def start_task(self, spec: Spec, key: str | None, own_handler: bool) -> None:
        async def act() -> None:
            self.start(self.tm, spec, key, own_handler)

        self.trio.call(act)

    @rule(group_specs=st.lists(specs, min_size=1, max_size=4))
    def start_group(self, group_specs: list[Spec]) -> None:
        members: list[Task] = []
        answer: list[object] = []
        self.groups.append((members, answer))

        async def group_body() -> None:
            async with self.tm.open_group("chaos-group") as group:
                for spec in group_specs:
                    task = self.start(group, spec, None, own_handler=False)
                    if task is not None:
                        members.append(task)
            try:
                answer.append(await group.wait_all())
            except BaseExceptionGroup as failures:
                answer.append(failures)

        async def act() -> None:
            assert self.trio.nursery is not None
            self.trio.nursery.start_soon(group_body)

        self.trio.call(act)

    @rule(n=st.integers(0, 1000), by_id=st.booleans())
    def cancel_one(self, n: int, by_id: bool) -> None:
        if not self.tasks:
            return
        task = self.tasks[n % len(self.tasks)]

        async def act() -> TaskState | None:
            was_done = task.handle.done
            expected = TaskState.FAILED if self.in_handler(task) else TaskState.CANCELLED
            cancelled = self.tm.cancel(task.handle.id) if by_id else task.handle.cancel()
            assert cancelled is not was_done
            if cancelled:
                task.cancelled_by_us = True
                return expected
            return None

        expected = self.trio.call(act)
        if expected is not None:
            # A task that had not yet finished ends cancelled, shielded or not (one that had
            # failed and was in its error handler stays FAILED).
            assert task.handle.state is expected

    @rule()
    def cancel_all(self) -> None:
        async def act() -> list[tuple[Task, TaskState]]:
            targets = [t for t in self.tasks if not t.handle.done and not t.handle.shielded]
            expected = [
                TaskState.FAILED if self.in_handler(t) else TaskState.CANCELLED for t in targets
            ]
            assert self.tm.cancel_all() == len(targets)
            for task in targets:
                task.cancelled_by_us = True
            return list(zip(targets, expected, strict=True))

        for task, state in self.trio.call(act):
            assert task.handle.state is state

    @rule(n=st.integers(0, 1000), count=st.integers(1, 3))
    def wait_on(self, n: int, count: int) -> None:
        if not self.tasks:
            return
        task = self.tasks[n % len(self.tasks)]

        async def waiter() -> None:
            try:
                answer: tuple[str, object] = ("value", await task.handle.get())
            except TaskCancelled as exc:
                answer = ("cancelled", exc)
            except Exception as exc:
                answer = ("error", exc)
            task.answers.append(answer)

        async def act() -> None:
            assert self.trio.nursery is not None
            for _ in range(count):
                task.waiters += 1
                self.trio.nursery.start_soon(waiter)

        self.trio.call(act)

    @rule()
    def wait_idle(self) -> None:
        async def waiter() -> None:
            await self.tm.wait_idle()
            assert self.tm.active_count == 0  # it returned at a moment with no active task
            self.idle_returned += 1

        async def act() -> None:
            assert self.trio.nursery is not None
            self.idle_waiters += 1
            self.trio.nursery.start_soon(waiter)

        self.trio.call(act)

    @rule(seconds=st.integers(1, 5))
    def advance(self, seconds: int) -> None:
        for _ in range(seconds):
            self.trio.clock.jump(1)
            self.trio.call(_nothing)

    @rule(now=st.integers(0, 3))
    def close_sometimes(self, now: int) -> None:
        """A quarter as likely as the other rules: after a close, every start is refused, so
        an early close would leave the rest of the example little to do."""
        if now == 0:
            self.close()

    def close(self) -> None:
        """Leave the manager's ``async with``: its close begins (a second close does nothing)."""

        async def act() -> None:
            self.close_now.set()

        self.closing = True
        self.trio.call(act)
        assert self.tm.closed

    # -- invariants --------------------------------------------------------------------------

    @invariant()
    def everything_adds_up(self) -> None:
        if self.manager is None:
            return
        TALLY["checks"] += 1
        self.trio.call(self._check)

    async def _check(self) -> None:
        tm = self.tm
        stats = tm.statistics()
        check_accounting(stats)
        assert stats.started == len(self.tasks)
        assert stats.rejected == self.rejected == self.recorder.rejected
        states = Counter(t.handle.state for t in self.tasks)
        assert (stats.pending, stats.running) == (
            states[TaskState.PENDING],
            states[TaskState.RUNNING],
        )
        assert (stats.succeeded, stats.failed, stats.cancelled) == (
            states[TaskState.SUCCEEDED],
            states[TaskState.FAILED],
            states[TaskState.CANCELLED],
        )
        active = [t.handle for t in self.tasks if not t.handle.done]
        assert tm.active_count == len(active)
        assert set(map(id, tm.active_tasks)) == set(map(id, active))
        for handle in active:
            assert tm.get(handle.id) is handle
            assert trio_bg.find_task(handle.id) is handle
        if self.max_running is not None:
            assert stats.running <= self.max_running
        # recent: the newest finished handles, in the order they finished, bounded
        finished = self.recorder.finished
        assert len(tm.recent) == min(len(finished), RECENT_LIMIT)
        assert [h.id for h in tm.recent] == finished[len(finished) - len(tm.recent) :]
        # wait_idle: every waiter has returned once nothing is active (the waiters would have
        # failed had one returned while a task was active)
        if not active:
            assert self.idle_returned == self.idle_waiters
        assert set(self.handled) <= set(self.by_id)
        for task in self.tasks:
            self._check_task(task)
        for members, answer in self.groups:
            self._check_group(members, answer)

    def _check_task(self, task: Task) -> None:
        handle = task.handle
        state = handle.state
        # one terminal state, never changed
        if task.terminal is not None:
            assert state is task.terminal, (handle, task.terminal)
        elif state.done:
            task.terminal = state
        assert handle.done is state.done
        # the terminal state fits the function
        spec = task.spec
        if state is TaskState.SUCCEEDED:
            assert spec.kind in ("succeed", "shield") or (
                spec.kind == "retry" and spec.n < RETRY.attempts
            ), (spec, handle)
            result = handle.outcome
            assert result is not None and result.unwrap() is task.value
        elif state is TaskState.FAILED:
            error = getattr(handle.outcome, "error", None)
            expected_error = {
                "fail": PlannedFailure,
                "timeout": trio.TooSlowError,
                "retry": ConnectionError,
            }
            assert isinstance(error, expected_error[spec.kind]), (spec, error)
            if spec.kind == "retry":
                assert spec.n >= RETRY.attempts
                assert handle.attempts == RETRY.attempts
        elif state is TaskState.CANCELLED:
            assert handle.outcome is None
        if handle.done:
            assert handle.finished_at is not None
        # the error handler: once per failed task, the task's own if it has one
        calls = self.handled[handle.id]
        if state is TaskState.FAILED:
            assert calls == 1, (handle, calls)
            assert self.handler_of[handle.id] == ("own" if task.own_handler else "manager")
        elif state.done:
            assert calls == 0, (handle, calls)
        else:
            # the handler runs just before the task is finished (a sync one leaves no trace of
            # that between steps); an async one may still be running
            assert calls == (1 if self.in_handler(task) else 0), (handle, calls)
            assert calls == 0 or (self.async_handlers and state is TaskState.RUNNING)
        # the hooks: created -> started -> retrying* -> finished, each once
        hooks = self.recorder.hooks[handle.id]
        assert hooks[0] == "created"
        assert hooks.count("created") == 1
        assert hooks.count("finished") == (1 if state.done else 0)
        if state.done:
            assert hooks[-1] == "finished"
        started = hooks.count("started")
        assert started <= 1
        if handle.started_at is not None:
            assert started == 1
        elif started:  # launched, then cancelled before its first step
            assert state is TaskState.CANCELLED
        assert started == 1 or state in (TaskState.PENDING, TaskState.CANCELLED)
        if started:
            assert hooks[1] == "started"
        retries = hooks.count("retrying")
        assert retries == 0 or spec.kind == "retry"
        assert retries in (handle.attempts - 1, handle.attempts)
        # every waiter has the same answer, the right one
        if handle.done:
            assert len(task.answers) == task.waiters
        for kind, answer in task.answers:
            first_kind, first = task.answers[0]
            assert kind == first_kind
            if kind == "cancelled":
                assert isinstance(answer, TaskCancelled) and isinstance(first, TaskCancelled)
                assert (
                    str(answer) == str(first) == f"task {handle.name!r} ({handle.id}) was cancelled"
                )
                assert answer.__cause__ is first.__cause__
            else:
                assert answer is first
        if task.answers:
            kind, first = task.answers[0]
            assert (
                kind
                == {
                    TaskState.SUCCEEDED: "value",
                    TaskState.FAILED: "error",
                    TaskState.CANCELLED: "cancelled",
                }[state]
            )
            if kind == "value":
                assert first is task.value
            elif kind == "error":
                assert first is getattr(handle.outcome, "error", None)

    def _check_group(self, members: list[Task], answer: list[object]) -> None:
        if not answer:  # the group's block is still waiting for a member
            assert not all(t.handle.done for t in members)
            return
        assert all(t.handle.done for t in members)
        (result,) = answer
        states = [t.handle.state for t in members]
        if all(s is TaskState.SUCCEEDED for s in states):
            assert isinstance(result, list)
            assert [id(v) for v in result] == [id(t.value) for t in members]
            return
        assert isinstance(result, BaseExceptionGroup)
        failed = [t for t in members if t.handle.state is not TaskState.SUCCEEDED]
        assert len(result.exceptions) == len(failed)
        for task, error in zip(failed, result.exceptions, strict=True):
            if task.handle.state is TaskState.FAILED:
                assert error is getattr(task.handle.outcome, "error", None)
            else:
                assert isinstance(error, TaskCancelled)

    # -- the end: close, let it run out, check the report --------------------------------------

    def teardown(self) -> None:
        try:
            if self.manager is not None:
                self._finish()
        finally:
            self.trio.stop()

    def _finish(self) -> None:
        if not self.closing:
            self.close()
        for _ in range(math.ceil(self.shield_timeout) + 2):
            if self.manager_exited:
                break
            self.advance(1)
        assert self.manager_exited, "the close took longer than shield_timeout"
        self.everything_adds_up()
        assert all(t.handle.done for t in self.tasks)
        report = self.tm.shutdown_report
        assert report is not None and self.closed_at is not None
        assert report.duration <= self.shield_timeout
        # The report names exactly the tasks the shutdown cancelled: those nobody asked to
        # cancel that ended CANCELLED.
        dropped = {
            id(t.handle)
            for t in self.tasks
            if t.handle.state is TaskState.CANCELLED and not t.cancelled_by_us
        }
        assert {id(h) for h in report.cancelled} == dropped
        assert all(len(answer) == 1 for _, answer in self.groups)  # every group answered
        TALLY["examples"] += 1
        TALLY["tasks"] += len(self.tasks)
        TALLY["groups"] += len(self.groups)
        TALLY["rejected"] += self.rejected
        TALLY["waiters"] += sum(t.waiters for t in self.tasks)
        TALLY["named in a shutdown report"] += len(report.cancelled)
        TALLY.update(t.handle.state.name.lower() for t in self.tasks)


ChaosMachine.TestCase.settings = CHAOS_SETTINGS
test_chaos = pytest.mark.filterwarnings("error")(ChaosMachine.TestCase)
