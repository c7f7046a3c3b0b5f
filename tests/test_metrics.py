"""PrometheusInstrument: the exposition parses, and its numbers are the managers' own.

Every test gives the instrument a registry of its own and reads it back through the text
exposition (``prometheus_client.generate_latest``, parsed with
``prometheus_client.parser.text_string_to_metric_families``), as Prometheus would. Times run on
pytest-trio's ``autojump_clock``; the property test runs each example in its own ``trio.run``
with an autojumping mock clock. The test with two Hypercorn worker processes uses the real
clock and is marked slow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import prometheus_client
import pytest
import trio
import trio.testing
from hypothesis import event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import trio_bg
from tests.asgi_server import respond, running
from tests.conftest import sleep_then_raise, sleep_then_return
from tests.test_asgi_timing_scripted import (
    FINAL_BODY,
    START_200,
    Scope,
    ScriptedLifespan,
    ScriptedServer,
    Timeline,
    http_scope,
)
from trio_bg import Retry, TaskHandle, TaskManager, TaskRejected, TaskStatistics
from trio_bg.asgi import TaskMiddleware, request_tasks
from trio_bg.metrics import PrometheusInstrument, scrape_registry
from trio_bg.testing import check_accounting

ROOT = Path(__file__).resolve().parent.parent
NAMES = (
    "trio_bg_tasks_started",
    "trio_bg_tasks_finished",
    "trio_bg_tasks_rejected",
    "trio_bg_task_retries",
    "trio_bg_tasks_running",
    "trio_bg_tasks_pending",
    "trio_bg_task_duration_seconds",
    "trio_bg_task_wait_seconds",
)


# -- reading the exposition -------------------------------------------------------------------


@dataclass(frozen=True)
class Scrape:
    """The samples of one exposition: ``(sample name, labels, value)``."""

    samples: list[tuple[str, dict[str, str], float]]
    types: dict[str, str]

    @classmethod
    def of(cls, text: str) -> Scrape:
        samples: list[tuple[str, dict[str, str], float]] = []
        types: dict[str, str] = {}
        for family in text_string_to_metric_families(text):
            types[family.name] = family.type
            samples.extend((s.name, s.labels, s.value) for s in family.samples)
        return cls(samples, types)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(
            value
            for sample, have, value in self.samples
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        )

    def label_values(self, label: str) -> set[str]:
        return {have[label] for name, have, _ in self.samples if name.startswith("trio_bg_")}

    @classmethod
    def collect(cls, registry: CollectorRegistry) -> Scrape:
        """The same samples straight from the registry, without the text: 20 times cheaper, for
        a check at every step of the property test."""
        samples: list[tuple[str, dict[str, str], float]] = []
        types: dict[str, str] = {}
        for family in registry.collect():
            types[family.name] = family.type
            samples.extend((s.name, s.labels, s.value) for s in family.samples)
        return cls(samples, types)


def scrape(registry: CollectorRegistry) -> Scrape:
    """Render the exposition and parse it back, as Prometheus reads it."""
    return Scrape.of(generate_latest(registry).decode())


def total_statistics(managers: list[TaskManager]) -> TaskStatistics:
    """The statistics of several managers, summed field by field."""
    totals = [0] * len(dataclasses.fields(TaskStatistics))
    for manager in managers:
        values = dataclasses.astuple(manager.statistics())
        totals = [a + b for a, b in zip(totals, values, strict=True)]
    return TaskStatistics(*totals)


def assert_matches(seen: Scrape, label: str, stats: TaskStatistics) -> None:
    """The counters and gauges of manager label ``label`` are ``stats``."""
    assert {
        "started": seen.total("trio_bg_tasks_started_total", manager=label),
        "pending": seen.total("trio_bg_tasks_pending", manager=label),
        "running": seen.total("trio_bg_tasks_running", manager=label),
        "succeeded": seen.total("trio_bg_tasks_finished_total", manager=label, state="succeeded"),
        "failed": seen.total("trio_bg_tasks_finished_total", manager=label, state="failed"),
        "cancelled": seen.total("trio_bg_tasks_finished_total", manager=label, state="cancelled"),
        "rejected": seen.total("trio_bg_tasks_rejected_total", manager=label),
    } == dataclasses.asdict(stats)


def ran(handles: list[TaskHandle[Any]]) -> int:
    """How many of ``handles`` have finished after their function was called."""
    return sum(1 for h in handles if h.done and h.started_at is not None)


# -- exact numbers ----------------------------------------------------------------------------


async def test_the_exposition_has_the_documented_names_types_and_labels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusInstrument(registry)
    assert scrape(registry).samples == []  # nothing seen yet: no series at all
    async with trio_bg.open_task_manager("app", instruments=[metrics]) as tm:
        tm.start_soon_named("email", sleep_then_return, 1, "sent")
    seen = scrape(registry)
    assert {name: seen.types[name] for name in NAMES} == {
        "trio_bg_tasks_started": "counter",
        "trio_bg_tasks_finished": "counter",
        "trio_bg_tasks_rejected": "counter",
        "trio_bg_task_retries": "counter",
        "trio_bg_tasks_running": "gauge",
        "trio_bg_tasks_pending": "gauge",
        "trio_bg_task_duration_seconds": "histogram",
        "trio_bg_task_wait_seconds": "histogram",
    }
    assert seen.label_values("manager") == {"app"}
    assert seen.label_values("task") == {"email"}
    assert {have["state"] for _, have, _ in seen.samples if "state" in have} == {
        "succeeded",
        "failed",
        "cancelled",
    }
    assert seen.total("trio_bg_tasks_finished_total", state="succeeded") == 1


async def test_a_queued_task_waits_and_runs_for_exactly_the_seconds_it_did(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusInstrument(registry)
    async with trio_bg.open_task_manager("app", max_running=1, instruments=[metrics]) as tm:
        first = tm.start_soon_named("first", sleep_then_return, 2, 1)
        second = tm.start_soon_named("second", sleep_then_return, 3, 2)
        await trio.sleep(1)
        seen = scrape(registry)
        assert seen.total("trio_bg_tasks_running", task="first") == 1
        assert seen.total("trio_bg_tasks_pending", task="second") == 1
        assert seen.total("trio_bg_tasks_running") == tm.statistics().running == 1
        assert seen.total("trio_bg_tasks_pending") == tm.statistics().pending == 1
        assert seen.total("trio_bg_task_duration_seconds_count") == 0  # none has ended yet
        await first.wait()
        assert trio.current_time() == 2
        seen = scrape(registry)
        assert seen.total("trio_bg_tasks_running", task="second") == 1
        assert seen.total("trio_bg_tasks_pending") == 0
        await second.wait()
    assert trio.current_time() == 5
    seen = scrape(registry)
    assert seen.total("trio_bg_task_wait_seconds_sum", task="first") == 0
    assert seen.total("trio_bg_task_duration_seconds_sum", task="first") == 2
    assert seen.total("trio_bg_task_wait_seconds_sum", task="second") == 2
    assert seen.total("trio_bg_task_duration_seconds_sum", task="second") == 3
    # Histogram buckets are cumulative: 3 s is counted from le="5" on, not in le="2.5".
    assert seen.total("trio_bg_task_duration_seconds_bucket", task="second", le="2.5") == 0
    assert seen.total("trio_bg_task_duration_seconds_bucket", task="second", le="5.0") == 1
    assert seen.total("trio_bg_task_duration_seconds_count") == 2
    assert seen.total("trio_bg_tasks_running") == seen.total("trio_bg_tasks_pending") == 0


async def test_failures_retries_rejections_and_tasks_that_never_ran(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusInstrument(registry)
    async with trio_bg.open_task_manager(
        "app", max_running=1, max_pending=1, instruments=[metrics]
    ) as tm:
        flaky = tm.start_soon_named(
            "flaky",
            sleep_then_raise,
            1,
            ConnectionError("down"),
            retry=Retry(attempts=3, backoff=1, jitter=False),
        )
        queued = tm.start_soon_named("queued", trio.sleep, 1)
        with pytest.raises(TaskRejected):
            tm.start_soon_named("refused", trio.sleep, 1)
        queued.cancel()  # while PENDING: it never runs
        await flaky.wait()
    assert flaky.attempts == 3
    seen = scrape(registry)
    assert_matches(seen, "app", tm.statistics())
    assert seen.total("trio_bg_task_retries_total", task="flaky") == 2
    assert seen.total("trio_bg_tasks_finished_total", task="flaky", state="failed") == 1
    assert seen.total("trio_bg_tasks_finished_total", task="queued", state="cancelled") == 1
    assert seen.total("trio_bg_tasks_rejected_total", task="refused") == 1
    assert seen.total("trio_bg_tasks_started_total", task="refused") == 0
    # Only the task that ran is in the histograms: three attempts of 1 s, backoffs of 1 and 2 s.
    assert seen.total("trio_bg_task_duration_seconds_count") == 1
    assert seen.total("trio_bg_task_duration_seconds_sum", task="flaky") == 6
    assert seen.total("trio_bg_task_wait_seconds_count") == 1
    assert repr(metrics) == "<PrometheusInstrument 3/100 task names, 0 active tasks>"


async def test_tasks_already_active_when_it_is_installed_are_not_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusInstrument(registry)
    async with trio_bg.open_task_manager("app") as tm:
        before = tm.start_soon_named("before", trio.sleep, 2)
        trio_bg.add_instrument(metrics)
        try:
            after = tm.start_soon_named("after", trio.sleep, 1)
            await trio.sleep(0.5)
            seen = scrape(registry)
            assert seen.total("trio_bg_tasks_running") == 1  # "after" only
            await before.wait()
        finally:
            trio_bg.remove_instrument(metrics)
    assert after.done
    seen = scrape(registry)
    assert seen.label_values("task") == {"after"}
    assert seen.total("trio_bg_tasks_running") == seen.total("trio_bg_tasks_pending") == 0
    assert seen.total("trio_bg_tasks_finished_total") == 1


async def test_ten_thousand_task_names_give_at_most_max_task_names_plus_other() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusInstrument(registry)  # max_task_names=100
    async with trio_bg.open_task_manager("app", instruments=[metrics]) as tm:
        for n in range(10_000):
            tm.start_soon_named(f"task {n}", trio.lowlevel.checkpoint)
            if n % 1000 == 999:
                await tm.wait_idle()
    seen = scrape(registry)
    names = seen.label_values("task")
    assert len(names) == 101
    assert names == {f"task {n}" for n in range(100)} | {"other"}
    assert seen.total("trio_bg_tasks_started_total") == 10_000
    assert seen.total("trio_bg_tasks_started_total", task="other") == 9_900
    assert seen.total("trio_bg_tasks_finished_total", state="succeeded") == 10_000

    none_named = CollectorRegistry()
    metrics = PrometheusInstrument(none_named, max_task_names=0)
    async with trio_bg.open_task_manager("app", instruments=[metrics]) as tm:
        tm.start_soon_named("a", trio.lowlevel.checkpoint)
        tm.start_soon_named("b", trio.lowlevel.checkpoint)
    assert scrape(none_named).label_values("task") == {"other"}


async def test_request_managers_are_labelled_request_under_a_real_hypercorn() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusInstrument(registry)

    async def inner(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise RuntimeError("no lifespan support")
        if scope["path"] == "/metrics":
            await respond(send, generate_latest(registry))
            return
        request_tasks(scope).add_task(trio.sleep, 0)
        await respond(send, b"ok")

    app = TaskMiddleware(inner, name="shop", instruments=[metrics])
    async with running(app) as server:
        for path in ("/orders/1", "/orders/2", "/users/alice?x=1"):
            assert (await server.client.post(path)).text == "ok"
        response = await server.client.get("/metrics")
    seen = Scrape.of(response.text)
    assert seen.label_values("manager") == {"request"}  # never a path
    assert seen.total("trio_bg_tasks_started_total", manager="request", task="sleep") == 3


async def test_one_instrument_serves_several_managers_and_a_registry_takes_one() -> None:
    registry = CollectorRegistry()
    metrics = PrometheusInstrument(registry)
    with pytest.raises(
        ValueError,
        match=r"^the registry already has trio_bg's metrics: install one PrometheusInstrument "
        r"per registry \(the same one may go to every manager\)$",
    ):
        PrometheusInstrument(registry)
    async with (
        trio_bg.open_task_manager("emails", instruments=[metrics]) as emails,
        trio_bg.open_task_manager("reports", instruments=[metrics]) as reports,
    ):
        emails.start_soon(trio.lowlevel.checkpoint)
        reports.start_soon(trio.lowlevel.checkpoint)
        reports.start_soon(trio.lowlevel.checkpoint)
    seen = scrape(registry)  # the refused instrument left nothing behind
    assert_matches(seen, "emails", emails.statistics())
    assert_matches(seen, "reports", reports.statistics())
    assert seen.total("trio_bg_tasks_started_total") == 3

    metrics.unregister()
    assert generate_latest(registry) == b""
    PrometheusInstrument(registry)  # the registry is free again


def test_a_partly_taken_registry_is_refused_and_left_as_it_was() -> None:
    registry = CollectorRegistry()
    prometheus_client.Gauge("trio_bg_tasks_pending", "someone else's", registry=registry)
    before = generate_latest(registry)
    with pytest.raises(ValueError, match=r"^the registry already has trio_bg's metrics"):
        PrometheusInstrument(registry)
    assert generate_latest(registry) == before


def test_bad_arguments_are_refused_with_exact_messages() -> None:
    bad: Any = "registry"
    with pytest.raises(
        TypeError,
        match=r"^registry must be a prometheus_client.CollectorRegistry or None, got str$",
    ):
        PrometheusInstrument(bad)
    cases: list[tuple[Any, type[Exception], str]] = [
        ("100", TypeError, r"^max_task_names must be an int, got str$"),
        (None, TypeError, r"^max_task_names must be an int, got NoneType$"),
        (True, TypeError, r"^max_task_names must be an int, got bool$"),
        (2.0, TypeError, r"^max_task_names must be an int, got float$"),
        (-1, ValueError, r"^max_task_names must be >= 0, got -1$"),
    ]
    for value, error, message in cases:
        registry = CollectorRegistry()
        with pytest.raises(error, match=message):
            PrometheusInstrument(registry, max_task_names=value)
        assert generate_latest(registry) == b""  # nothing registered on a refusal
    with pytest.raises(TypeError, match=r"^registry must be .* or None, got int$"):
        scrape_registry(cast(Any, 1))


def test_registry_none_is_prometheus_clients_default_registry() -> None:
    metrics = PrometheusInstrument()
    try:
        assert metrics.registry is prometheus_client.REGISTRY
        assert scrape_registry() is prometheus_client.REGISTRY
    finally:
        metrics.unregister()
    registry = CollectorRegistry()
    assert scrape_registry(registry) is registry


def test_with_a_multiprocess_dir_the_scrape_reads_every_processs_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    registry = CollectorRegistry()
    combined = scrape_registry(registry)
    assert combined is not registry
    # Written the way a process in multiprocess mode writes its counters: one file per pid.
    for pid, value in ((101, 2.0), (102, 3.0)):
        untyped: Any = prometheus_client.values.MultiProcessValue
        values = untyped(lambda pid=pid: pid)
        counter = values(
            "counter", "trio_bg_tasks_started", "trio_bg_tasks_started_total",
            ("manager", "task"), ("app", "job"), "Task starts accepted.",
        )  # fmt: skip
        counter.inc(value)
    seen = scrape(combined)
    assert seen.total("trio_bg_tasks_started_total", manager="app", task="job") == 5


# -- property: any mix of tasks, over the app manager and requests ---------------------------


KINDS = ("succeed", "fail", "retry", "forever", "queue", "cancel", "request", "request")


@dataclass(frozen=True)
class Step:
    kind: str
    gap: int  # seconds to wait before the step
    seconds: int  # how long the task's work takes
    n: int  # which task name / handle / request variant


@dataclass(frozen=True)
class Schedule:
    steps: list[Step]
    max_running: int | None
    max_pending: int | None
    max_tasks_per_request: int
    max_task_names: int


schedules = st.builds(
    Schedule,
    steps=st.lists(
        st.builds(
            Step,
            kind=st.sampled_from(KINDS),
            gap=st.integers(0, 2),
            seconds=st.integers(0, 4),
            n=st.integers(0, 19),
        ),
        min_size=3,
        max_size=12,
    ),
    max_running=st.sampled_from([None, 1, 2]),
    max_pending=st.sampled_from([None, 0, 2]),
    max_tasks_per_request=st.integers(1, 4),
    max_task_names=st.sampled_from([0, 3, 100]),
)


class Retries(trio_bg.Instrument):
    """Counts ``task_retrying`` calls: the oracle of the retries counter."""

    def __init__(self) -> None:
        self.count = 0

    def task_retrying(self, handle: TaskHandle[Any], exc: BaseException, delay: float) -> None:
        self.count += 1


@dataclass
class Run:
    """What the property test started: handles per manager label, and the request managers."""

    app: list[TaskHandle[Any]] = field(default_factory=list)
    request: list[TaskHandle[Any]] = field(default_factory=list)
    request_managers: list[TaskManager] = field(default_factory=list)


async def scripted_request(scope: Scope, receive: Any, send: Any) -> None:
    """The app of the property test: ``scope["step"]`` says what this request does."""
    if scope["type"] != "http":
        raise RuntimeError("no lifespan support")
    step: Step = scope["step"]
    run: Run = scope["run"]
    tasks = request_tasks(scope)
    run.request_managers.append(tasks)
    starts: list[Callable[[], TaskHandle[Any]]] = [
        lambda: tasks.start_soon_named("audit", sleep_then_return, step.seconds, 1),
        lambda: tasks.after_route.start_soon_named(
            "cache", sleep_then_raise, step.seconds, ValueError("stale"), always=step.n % 4 >= 2
        ),
        lambda: tasks.after_response.start_soon_named("email", sleep_then_return, 1, 2),
        lambda: tasks.add_task(sleep_then_return, step.seconds, 3),
    ]
    for start in starts:
        with contextlib.suppress(TaskRejected):  # past the request's cap
            run.request.append(start())
    if step.n % 5 == 0:
        run.request[-1].cancel()
    await trio.sleep(step.seconds / 2)
    if step.n % 2:
        raise ValueError("handler broke")
    await send(START_200)
    await send(FINAL_BODY)


async def serve_request(middleware: TaskMiddleware, step: Step, run: Run) -> None:
    scope = http_scope(f"/orders/{step.n}")
    scope["step"] = step
    scope["run"] = run
    server = ScriptedServer(Timeline())
    with contextlib.suppress(ValueError):  # "handler broke"
        await middleware(scope, server.receive, server.send)


def check(seen: Scrape, app: TaskManager, run: Run, retries: Retries, names: int) -> Scrape:
    """The metrics ``seen`` equal the managers' statistics at this moment."""
    check_accounting(app.statistics())
    assert_matches(seen, "app", app.statistics())
    assert_matches(seen, "request", total_statistics(run.request_managers))
    for label, handles in (("app", run.app), ("request", run.request)):
        assert seen.total("trio_bg_task_duration_seconds_count", manager=label) == ran(handles)
        assert seen.total("trio_bg_task_wait_seconds_count", manager=label) == ran(handles)
    assert seen.total("trio_bg_task_retries_total") == retries.count
    assert seen.label_values("manager") <= {"app", "request"}
    assert len(seen.label_values("task") - {"other"}) <= names
    return seen


async def run_schedule(schedule: Schedule) -> None:
    registry = CollectorRegistry()
    metrics = PrometheusInstrument(registry, max_task_names=schedule.max_task_names)
    retries = Retries()
    middleware = TaskMiddleware(
        scripted_request,
        grace_period=1,
        shield_timeout=1,
        max_tasks_per_request=schedule.max_tasks_per_request,
        max_running=schedule.max_running,
        max_pending=schedule.max_pending,
        instruments=[metrics, retries],
    )
    run = Run()
    lifespan = ScriptedLifespan()
    lifespan_scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    names = schedule.max_task_names
    async with trio.open_nursery() as nursery:
        nursery.start_soon(middleware, lifespan_scope, lifespan.receive, lifespan.send)
        assert await lifespan.say("lifespan.startup") == {"type": "lifespan.startup.complete"}
        app = middleware.app_manager
        assert app is not None
        async with trio.open_nursery() as requests:
            for step in schedule.steps:
                await trio.sleep(step.gap)
                name = f"job-{step.n % 5}"
                with contextlib.suppress(TaskRejected):
                    if step.kind == "succeed":
                        run.app.append(
                            app.start_soon_named(name, sleep_then_return, step.seconds, 1)
                        )
                    elif step.kind == "fail":
                        run.app.append(
                            app.start_soon_named(
                                name, sleep_then_raise, step.seconds, ValueError("planned")
                            )
                        )
                    elif step.kind == "retry":
                        retry = Retry(attempts=3, backoff=step.seconds / 2, jitter=False)
                        run.app.append(
                            app.start_soon_named(
                                name, sleep_then_raise, 1, ConnectionError("down"), retry=retry
                            )
                        )
                    elif step.kind == "forever":
                        run.app.append(app.start_soon_named(name, trio.sleep_forever))
                    elif step.kind == "queue":
                        for _ in range(3):
                            run.app.append(app.start_soon_named(name, trio.sleep, step.seconds))
                    elif step.kind == "cancel":
                        if run.app:
                            run.app[step.n % len(run.app)].cancel()
                    else:
                        requests.start_soon(serve_request, middleware, step, run)
                check(Scrape.collect(registry), app, run, retries, names)
            await trio.sleep(1)
            check(scrape(registry), app, run, retries, names)  # mid-run, through the text
        assert await lifespan.say("lifespan.shutdown") == {"type": "lifespan.shutdown.complete"}

    seen = check(scrape(registry), app, run, retries, names)
    assert seen.total("trio_bg_tasks_running") == seen.total("trio_bg_tasks_pending") == 0
    assert all(h.done for h in run.app + run.request)
    counted = {
        label: stats.started + stats.rejected
        for label, stats in (
            ("app", app.statistics()),
            ("request", total_statistics(run.request_managers)),
        )
    }
    assert seen.label_values("manager") == {label for label, n in counted.items() if n}
    assert repr(metrics).endswith(" 0 active tasks>")  # every task's record was dropped
    event(f"retries seen: {retries.count > 0}")
    event(f"rejections: {seen.total('trio_bg_tasks_rejected_total') > 0}")
    event(f"other names: {'other' in seen.label_values('task')}")
    event(f"requests: {bool(run.request_managers)}")


@settings(max_examples=30, deadline=None)
@given(schedules)
def test_random_mixes_keep_the_metrics_equal_to_the_managers_statistics(
    schedule: Schedule,
) -> None:
    trio.run(run_schedule, schedule, clock=trio.testing.MockClock(autojump_threshold=0))


# -- several worker processes -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(proc: subprocess.Popen[bytes], workers: set[int]) -> None:
    """SIGTERM the Hypercorn parent we started, wait a bounded time, then SIGKILL it and the
    workers it answered from (their pids came in the responses)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_two_hypercorn_workers_serve_the_tasks_of_both_processes(tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "PYTHONPATH": str(ROOT),
    }
    log_path = tmp_path / "hypercorn.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hypercorn", "--worker-class", "trio", "--workers", "2",
             "--bind", f"127.0.0.1:{port}", "tests.apps.metrics_app:app"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    workers: set[int] = set()
    base = f"http://127.0.0.1:{port}"
    requests = 20
    try:
        deadline = time.monotonic() + 20
        while True:  # until a worker answers (both bind the same socket)
            try:
                httpx.get(f"{base}/metrics", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"hypercorn did not start:\n{log_path.read_text()}")
                time.sleep(0.05)
        # No keep-alive: each request on a new connection, which either worker may accept.
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=5) as client:
            for _ in range(requests):
                response = client.post(f"{base}/work")
                assert response.status_code == 200
                workers.add(int(response.text))
            scrapes = [Scrape.of(client.get(f"{base}/metrics").text) for _ in range(6)]
    finally:
        _stop(proc, workers)
    assert len(workers) <= 2
    for seen in scrapes:  # whichever process answered: the sum over both
        assert seen.total("trio_bg_tasks_started_total", manager="request", task="work") == (
            requests
        ), workers
    files = {path.name for path in metrics_dir.iterdir()}
    assert {f"counter_{pid}.db" for pid in workers} <= files
