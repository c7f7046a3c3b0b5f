"""OpenTelemetry: one span per task, checked with the real SDK and its in-memory exporter.

Each test gets a :class:`Traced`: an SDK ``TracerProvider`` that exports every span as it ends
(``SimpleSpanProcessor`` into an ``InMemorySpanExporter``) and notes, in an :class:`OpenSpans`
processor, each span between its start and its end, so a test can tell that none was left open.
The instrument is given that provider; the test opens its own parent spans with a tracer of the
same provider. Time-dependent checks run under ``autojump_clock``: retry delays and trio times
are exact; span timestamps are the handle's wall-clock ones, so they are checked for order.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

import trio_bg
from tests.asgi_server import respond, running
from tests.conftest import http_only, sleep_then_raise, sleep_then_return, trio_bg_records
from trio_bg import Retry, TaskHandle, TaskRejected, TaskState
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks
from trio_bg.otel import OpenTelemetryInstrument


class OpenSpans(SpanProcessor):
    """Keeps the names of the spans that have started and not yet ended."""

    def __init__(self) -> None:
        self.open: dict[int, str] = {}

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        self.open[span.get_span_context().span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        del self.open[span.context.span_id]


@dataclass
class Traced:
    """An SDK provider with an in-memory exporter, and an instrument that sends to it."""

    provider: TracerProvider = field(default_factory=TracerProvider)
    exporter: InMemorySpanExporter = field(default_factory=InMemorySpanExporter)
    spans_open: OpenSpans = field(default_factory=OpenSpans)

    def __post_init__(self) -> None:
        self.provider.add_span_processor(self.spans_open)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.instrument = OpenTelemetryInstrument(tracer_provider=self.provider)
        self.tracer = self.provider.get_tracer("tests")

    def ended(self, name: str) -> list[ReadableSpan]:
        """The exported (ended) spans called ``name``, in the order they ended."""
        return [s for s in self.exporter.get_finished_spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        [span] = self.ended(name)
        return span


@pytest.fixture
def traced() -> Traced:
    return Traced()


@pytest.fixture
def installed(traced: Traced) -> Any:
    """The instrument installed process-wide for the test, removed whatever happens."""
    trio_bg.add_instrument(traced.instrument)
    try:
        yield traced.instrument
    finally:
        trio_bg.remove_instrument(traced.instrument)


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def span_id(span: ReadableSpan | trace.Span) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.span_id


def trace_id(span: ReadableSpan | trace.Span) -> int:
    context = span.get_span_context()
    assert context is not None
    return context.trace_id


def event_names(span: ReadableSpan) -> list[str]:
    return [e.name for e in span.events]


def timestamps(span: ReadableSpan) -> list[int]:
    """The span's start, its events' timestamps, and its end, in that order."""
    assert span.start_time is not None and span.end_time is not None
    return [span.start_time, *(e.timestamp for e in span.events), span.end_time]


def seconds(stamps: Sequence[int]) -> float:
    """The difference of two nanosecond timestamps, in seconds."""
    later, earlier = stamps
    return (later - earlier) / 1e9


# -- parenting ---------------------------------------------------------------------------------


async def test_a_task_started_inside_a_span_is_its_child_and_its_attributes_are_exact(
    traced: Traced, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_bg.open_task_manager("app", instruments=[traced.instrument]) as tm:
        with traced.tracer.start_as_current_span("checkout") as checkout:
            handle = tm.start_soon_named("email", sleep_then_return, 1, "sent")
        assert await handle.get() == "sent"
        assert trio.current_time() == 1

    email = traced.one("email")
    assert trace_id(email) == trace_id(checkout)
    assert parent_id(email) == span_id(checkout)
    attributes = dict(email.attributes or {})
    wait = attributes.pop("trio_bg.task.wait_seconds")
    run = attributes.pop("trio_bg.task.run_seconds")
    assert attributes == {
        "trio_bg.task.id": handle.id,
        "trio_bg.task.name": "email",
        "trio_bg.task.timing": "immediate",
        "trio_bg.task.shielded": False,
        "trio_bg.manager.name": "app",
        "trio_bg.manager.kind": "app",
        "trio_bg.task.state": "succeeded",
        "trio_bg.task.attempts": 1,
    }
    assert email.status.status_code is StatusCode.OK
    assert event_names(email) == ["trio_bg.task.started"]
    start, started, end = timestamps(email)
    assert start <= started <= end
    # The span's times are the handle's (to the microsecond a datetime holds); the two
    # durations are the gaps between them (to the 256 ns a float of epoch nanoseconds holds).
    assert handle.created_at is not None and handle.started_at is not None
    assert handle.finished_at is not None
    assert start / 1e9 == pytest.approx(handle.created_at.timestamp(), abs=1e-6)
    assert started / 1e9 == pytest.approx(handle.started_at.timestamp(), abs=1e-6)
    assert end / 1e9 == pytest.approx(handle.finished_at.timestamp(), abs=1e-6)
    assert wait == pytest.approx(seconds((started, start)), abs=1e-6)
    assert run == pytest.approx(seconds((end, started)), abs=1e-6)


async def test_a_task_started_outside_any_span_is_the_root_of_a_trace_of_its_own(
    traced: Traced,
) -> None:
    async with trio_bg.open_task_manager(instruments=[traced.instrument]) as tm:
        with traced.tracer.start_as_current_span("before"):
            pass
        tm.start_soon_named("lonely", trio.sleep, 0)

    lonely = traced.one("lonely")
    assert lonely.parent is None
    assert trace_id(lonely) != trace_id(traced.one("before"))


async def test_a_queued_task_keeps_the_span_of_its_start_call_and_its_span_covers_the_wait(
    traced: Traced, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_bg.open_task_manager(max_running=1, instruments=[traced.instrument]) as tm:
        with traced.tracer.start_as_current_span("import"):
            tm.start_soon_named("first", trio.sleep, 1)
        with traced.tracer.start_as_current_span("export") as export:
            second = tm.start_soon_named("second", trio.sleep, 1)
        assert second.state is TaskState.PENDING
        await tm.wait_idle()  # the second gets its slot inside the first's finish
        assert trio.current_time() == 2

    first, queued = traced.one("first"), traced.one("second")
    assert parent_id(first) == span_id(traced.one("import"))
    assert parent_id(queued) == span_id(export)  # not the first's, where its slot came from
    start, started, end = timestamps(queued)
    assert first.end_time is not None
    # It waited from its start call until the first ended, then ran.
    assert start <= first.end_time <= started <= end
    assert queued.attributes is not None
    assert queued.attributes["trio_bg.task.wait_seconds"] == pytest.approx(
        seconds((started, start)), abs=1e-6
    )


# -- how a task ends ---------------------------------------------------------------------------


async def test_a_failed_task_has_status_error_and_its_exception_recorded(
    traced: Traced, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_bg.open_task_manager(instruments=[traced.instrument]) as tm:
        handle = tm.start_soon_named("charge", sleep_then_raise, 1, ValueError("card declined"))
        with pytest.raises(ValueError, match=r"^card declined$"):
            await handle.get()

    charge = traced.one("charge")
    assert charge.status.status_code is StatusCode.ERROR
    assert charge.status.description == "ValueError: card declined"
    assert charge.attributes is not None
    assert charge.attributes["trio_bg.task.state"] == "failed"
    assert charge.attributes["trio_bg.task.attempts"] == 1
    assert charge.attributes["error.type"] == "ValueError"
    assert event_names(charge) == ["trio_bg.task.started", "exception"]
    exception = charge.events[1].attributes
    assert exception is not None
    assert exception["exception.type"] == "ValueError"
    assert exception["exception.message"] == "card declined"
    stacktrace = exception["exception.stacktrace"]
    assert isinstance(stacktrace, str)
    assert "in sleep_then_raise" in stacktrace
    assert stacktrace.endswith("ValueError: card declined\n")
    assert timestamps(charge) == sorted(timestamps(charge))
    assert timestamps(charge)[-2] == charge.end_time  # recorded when the task ended


async def test_cancelled_tasks_say_so_and_whether_someone_asked(
    traced: Traced, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_bg.open_task_manager(
        max_running=2, grace_period=1, instruments=[traced.instrument]
    ) as tm:
        running_one = tm.start_soon_named("running", trio.sleep_forever)
        dropped = tm.start_soon_named("dropped-by-close", trio.sleep_forever)
        waiting = tm.start_soon_named("pending", trio.sleep_forever)
        await trio.sleep(1)
        assert waiting.state is TaskState.PENDING
        assert running_one.cancel() is True
        assert waiting.cancel() is True
        await trio.testing.wait_all_tasks_blocked()
    assert trio.current_time() == 2  # the close waited its grace period, then cancelled
    assert dropped.state is TaskState.CANCELLED

    for name, asked, ran in [
        ("running", True, True),
        ("pending", True, False),
        ("dropped-by-close", False, True),
    ]:
        span = traced.one(name)
        attributes = span.attributes
        assert attributes is not None
        assert attributes["trio_bg.task.state"] == "cancelled", name
        assert attributes["trio_bg.task.cancel_requested"] is asked, name
        assert span.status.status_code is StatusCode.UNSET, name
        assert event_names(span) == (["trio_bg.task.started"] if ran else []), name
        assert attributes["trio_bg.task.attempts"] == (1 if ran else 0), name
        assert ("trio_bg.task.run_seconds" in attributes) is ran, name
        assert ("trio_bg.task.wait_seconds" in attributes) is ran, name


class Flaky:
    """Fails its first ``failures`` calls with ConnectionError, then returns ``"ok"``."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError(f"down {self.calls}")
        return "ok"


@pytest.mark.parametrize(
    ("failures", "state", "status"),
    [(2, "succeeded", StatusCode.OK), (3, "failed", StatusCode.ERROR)],
)
async def test_each_retry_is_an_event_with_its_attempt_exception_and_delay(
    traced: Traced,
    autojump_clock: trio.testing.MockClock,
    failures: int,
    state: str,
    status: StatusCode,
) -> None:
    retry = Retry(attempts=3, backoff=0.5, jitter=False)
    async with trio_bg.open_task_manager(instruments=[traced.instrument]) as tm:
        handle = tm.start_soon_named("sync-crm", Flaky(failures), retry=retry)
        await handle.wait()
    assert trio.current_time() == 0.5 + 1.0

    span = traced.one("sync-crm")
    retries = [e for e in span.events if e.name == "trio_bg.task.retrying"]
    assert [dict(e.attributes or {}) for e in retries] == [
        {
            "trio_bg.task.attempt": 1,
            "trio_bg.task.retry_delay_seconds": 0.5,
            "exception.type": "ConnectionError",
            "exception.message": "down 1",
        },
        {
            "trio_bg.task.attempt": 2,
            "trio_bg.task.retry_delay_seconds": 1.0,
            "exception.type": "ConnectionError",
            "exception.message": "down 2",
        },
    ]
    expected = ["trio_bg.task.started", "trio_bg.task.retrying", "trio_bg.task.retrying"]
    assert event_names(span) == expected + (["exception"] if state == "failed" else [])
    assert timestamps(span) == sorted(timestamps(span))
    assert span.status.status_code is status
    assert span.attributes is not None
    assert span.attributes["trio_bg.task.state"] == state
    assert span.attributes["trio_bg.task.attempts"] == 3


async def test_shield_key_and_group_are_attributes(traced: Traced) -> None:
    async with trio_bg.open_task_manager(instruments=[traced.instrument]) as tm:
        keyed = tm.start_soon_named("refresh", trio.sleep, 0, key="user-7", shield=True)
        assert tm.start_soon_named("refresh", trio.sleep, 0, key="user-7") is keyed
        async with tm.open_group("thumbnails") as group:
            group.start_soon_named("thumb", trio.sleep, 0)

    [refresh] = traced.ended("refresh")  # the second start returned the first: one span
    assert refresh.attributes is not None
    assert refresh.attributes["trio_bg.task.shielded"] is True
    assert refresh.attributes["trio_bg.task.key"] == "user-7"
    assert "trio_bg.task.group" not in refresh.attributes
    thumb = traced.one("thumb")
    assert thumb.attributes is not None
    assert thumb.attributes["trio_bg.task.group"] == "thumbnails"
    assert "trio_bg.task.key" not in thumb.attributes


async def test_a_refused_start_makes_no_span_and_an_event_on_the_current_span(
    traced: Traced,
) -> None:
    async with trio_bg.open_task_manager(
        "mailer", max_running=1, max_pending=0, instruments=[traced.instrument]
    ) as tm:
        with traced.tracer.start_as_current_span("signup") as signup:
            tm.start_soon_named("welcome", trio.sleep, 0)
            with pytest.raises(TaskRejected):
                tm.start_soon_named("reminder", trio.sleep, 0)
        with pytest.raises(TaskRejected):
            tm.start_soon_named("outside", trio.sleep, 0)  # no current span: no event
    with traced.tracer.start_as_current_span("late"), pytest.raises(TaskRejected):
        tm.start_soon_named("too-late", trio.sleep, 0)

    names = [s.name for s in traced.exporter.get_finished_spans()]
    assert sorted(names) == ["late", "signup", "welcome"]
    [rejected] = traced.one("signup").events
    assert rejected.name == "trio_bg.task.rejected"
    assert dict(rejected.attributes or {}) == {
        "trio_bg.task.name": "reminder",
        "trio_bg.task.rejected_reason": "max_pending",
        "trio_bg.manager.name": "mailer",
        "trio_bg.manager.kind": "app",
    }
    [late] = traced.one("late").events
    assert late.attributes is not None
    assert late.attributes["trio_bg.task.rejected_reason"] == "closed"
    assert span_id(traced.one("signup")) == span_id(signup)


# -- no leak, no crash -------------------------------------------------------------------------


async def test_no_span_is_left_open_after_the_close_whatever_the_tasks_did(
    traced: Traced, autojump_clock: trio.testing.MockClock
) -> None:
    retry = Retry(attempts=2, backoff=1, jitter=False)
    async with trio_bg.open_task_manager(
        max_running=3, grace_period=1, instruments=[traced.instrument]
    ) as tm:
        with traced.tracer.start_as_current_span("work"):
            for i in range(4):
                tm.start_soon_named(f"ok-{i}", trio.sleep, i)
            tm.start_soon_named("fails", sleep_then_raise, 1, OSError("disk"), retry=retry)
            tm.start_soon_named("forever", trio.sleep_forever)  # cancelled by the close
            tm.start_soon_named("queued", trio.sleep_forever).cancel()
        await trio.sleep(1.5)
        # ok-0 and ok-1 are done, the queued one was cancelled; ok-3 got ok-0's slot, "fails"
        # ok-1's; "forever" waits for one.
        assert sorted(traced.spans_open.open.values()) == ["fails", "forever", "ok-2", "ok-3"]
        assert repr(traced.instrument) == "<OpenTelemetryInstrument spans_in_flight=4>"

    assert traced.spans_open.open == {}
    assert repr(traced.instrument) == "<OpenTelemetryInstrument spans_in_flight=0>"
    task_spans = [s for s in traced.exporter.get_finished_spans() if s.name != "work"]
    assert len(task_spans) == tm.statistics().started == 7
    for span in task_spans:
        assert timestamps(span) == sorted(timestamps(span)), span.name


async def test_an_instrument_installed_while_a_task_runs_skips_that_task_and_stays_installed(
    traced: Traced, caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    async with trio_bg.open_task_manager() as tm:
        early = tm.start_soon_named("early", sleep_then_raise, 1, RuntimeError("boom"))
        retried = tm.start_soon_named(
            "retried", Flaky(2), retry=Retry(attempts=3, backoff=2, jitter=False)
        )  # fails at once, before the instrument comes, and again after
        await trio.testing.wait_all_tasks_blocked()
        trio_bg.add_instrument(traced.instrument)  # mid-task: no task_created for those two
        try:
            await early.wait()
            await retried.wait()
            late = tm.start_soon_named("late", trio.sleep, 0)
            await late.wait()
        finally:
            trio_bg.remove_instrument(traced.instrument)  # KeyError if a hook had raised
    assert retried.state is TaskState.SUCCEEDED

    assert [s.name for s in traced.exporter.get_finished_spans()] == ["late"]
    assert [r.getMessage() for r in trio_bg_records(caplog, logging.ERROR)] == [
        f"task 'early' ({early.id}) failed"
    ]


async def test_without_an_sdk_the_spans_are_no_ops_and_tasks_are_unaffected(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # none configured
    instrument = OpenTelemetryInstrument()
    async with trio_bg.open_task_manager(
        instruments=[instrument], max_running=1, max_pending=1
    ) as tm:
        ok = tm.start_soon_named("ok", sleep_then_return, 1, "done")
        bad = tm.start_soon_named("bad", Flaky(5), retry=Retry(attempts=2, backoff=0))
        with pytest.raises(TaskRejected):
            tm.start_soon_named("refused", trio.sleep, 0)
    assert await ok.get() == "done"
    assert bad.state is TaskState.FAILED
    assert repr(instrument) == "<OpenTelemetryInstrument spans_in_flight=0>"
    assert not [r for r in caplog.records if "instrument" in r.getMessage()]


async def test_a_task_whose_span_is_not_sampled_is_not_tracked() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument = OpenTelemetryInstrument(tracer_provider=provider)
    async with trio_bg.open_task_manager(instruments=[instrument]) as tm:
        handle = tm.start_soon_named("quiet", sleep_then_raise, 0, ValueError("unseen"))
        assert handle.state is TaskState.RUNNING
        assert repr(instrument) == "<OpenTelemetryInstrument spans_in_flight=0>"
    assert handle.state is TaskState.FAILED
    assert exporter.get_finished_spans() == ()


# -- under a real server -----------------------------------------------------------------------


class SpanPerRequest:
    """A tiny tracing middleware: one span per http request around the app it wraps."""

    def __init__(self, app: Any, tracer: trace.Tracer) -> None:
        self.app = app
        self.tracer = tracer

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with self.tracer.start_as_current_span(f"{scope['method']} {scope['path']}"):
            await self.app(scope, receive, send)


async def test_a_requests_tasks_hang_under_the_requests_span_under_a_real_hypercorn(
    traced: Traced,
) -> None:
    handles: list[TaskHandle[None]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        http_only(scope)
        tasks = request_tasks(scope)
        handles.extend(
            [
                tasks.start_soon_named("audit", trio.sleep, 0),
                tasks.after_response.start_soon_named("email", trio.sleep, 0),
                app_tasks(scope).start_soon_named("report", trio.sleep, 0),
            ]
        )
        body = {
            "span": span_id(trace.get_current_span()),
            "ids": [h.id for h in handles[-3:]],
            "manager": tasks.name,
            "app_manager": app_tasks(scope).name,
        }
        await respond(send, json.dumps(body).encode())

    middleware = TaskMiddleware(SpanPerRequest(app, traced.tracer), instruments=[traced.instrument])
    async with running(middleware) as server:
        with trio.fail_after(5):
            answers = [(await server.client.get("/orders")).json() for _ in range(2)]
            for handle in handles:
                await handle.wait()
    # The server has stopped: every request, and the app manager, closed.
    assert traced.spans_open.open == {}

    by_id = {
        (s.attributes or {})["trio_bg.task.id"]: s
        for s in traced.exporter.get_finished_spans()
        if s.name != "GET /orders"
    }
    assert len(by_id) == 6
    requests = {span_id(s): s for s in traced.ended("GET /orders")}
    for answer in answers:
        request = requests[answer["span"]]
        audit, email, report = (by_id[task_id] for task_id in answer["ids"])
        for span, name, kind, manager, timing in [
            (audit, "audit", "request", answer["manager"], "immediate"),
            (email, "email", "request", answer["manager"], "after_response"),
            (report, "report", "app", answer["app_manager"], "immediate"),
        ]:
            assert span.name == name
            assert trace_id(span) == trace_id(request)
            assert parent_id(span) == span_id(request)
            assert span.attributes is not None
            assert span.attributes["trio_bg.manager.kind"] == kind
            assert span.attributes["trio_bg.manager.name"] == manager
            assert span.attributes["trio_bg.task.timing"] == timing
            assert span.status.status_code is StatusCode.OK
        assert answer["app_manager"] == "app"
        # An after_response task waits (held) from its start call until the response was sent.
        start, started, _ = timestamps(email)
        assert request.start_time is not None
        assert request.start_time <= start <= started


# -- the optional dependency -------------------------------------------------------------------


def test_trio_bg_imports_without_opentelemetry() -> None:
    code = (
        "import sys, trio_bg, trio_bg.asgi\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stdout == "[]\n"


def test_importing_trio_bg_otel_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "trio_bg.otel")
    with pytest.raises(
        ImportError,
        match=r"^trio_bg\.otel needs opentelemetry-api: pip install 'trio-bg\[otel\]'$",
    ):
        importlib.import_module("trio_bg.otel")


async def test_each_progress_report_is_an_event_with_its_fraction_and_message(
    traced: Traced,
) -> None:
    async def imports() -> None:
        trio_bg.report_progress(0.5, "half")
        await trio.lowlevel.checkpoint()
        trio_bg.report_progress(message="almost")

    async with trio_bg.open_task_manager(instruments=[traced.instrument]) as tm:
        handle = tm.start_soon_named("import", imports)
    assert handle.progress is not None
    span = traced.one("import")
    progress = [e for e in span.events if e.name == "trio_bg.task.progress"]
    assert [dict(e.attributes or {}) for e in progress] == [
        {"trio_bg.task.progress": 0.5, "trio_bg.task.progress_message": "half"},
        {"trio_bg.task.progress_message": "almost"},
    ]
    assert event_names(span) == [
        "trio_bg.task.started",
        "trio_bg.task.progress",
        "trio_bg.task.progress",
    ]
    assert progress[-1].timestamp == int(handle.progress.at.timestamp() * 1e9)
