"""Hostile task data never breaks an observer: a task name, key, argument, result or error can
be anything a program makes (lone surrogates from ``surrogateescape``, NUL, control characters,
huge strings, an exception whose ``__str__`` raises, a ``__repr__`` that raises or returns no
str). Checked with the real prometheus_client, the real OpenTelemetry SDK (its in-memory
exporter) and the dashboard's JSON under a real Hypercorn."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client import CollectorRegistry, generate_latest

import trio_bg
from trio_bg._core._text import safe_str
from trio_bg.dashboard import Dashboard
from trio_bg.metrics import PrometheusInstrument
from trio_bg.otel import OpenTelemetryInstrument
from trio_bg.testing import serve_app


class StrRaises(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class ReprRaises:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class ReprNotStr:
    def __repr__(self) -> Any:
        return 42


HOSTILE_TEXT = [
    "\udcff",  # a lone surrogate: os.fsdecode of a non-UTF-8 filename
    "a\x00b",
    "\x1b[31mred\r\n",
    "x" * 100_000,
    "\ud800\udc00",  # a surrogate pair written as two code points
]
HOSTILE_OBJECTS: list[object] = [*HOSTILE_TEXT, StrRaises(), ReprRaises(), ReprNotStr()]


@pytest.mark.parametrize("value", HOSTILE_OBJECTS, ids=range(len(HOSTILE_OBJECTS)))
def test_safe_str_is_total_and_gives_utf8_of_bounded_length(value: object) -> None:
    text = safe_str(value)
    assert isinstance(text, str)
    text.encode("utf-8")  # never a lone surrogate
    assert len(text) <= 1000


async def _raise(exc: BaseException) -> None:
    raise exc


async def _return(value: object) -> object:
    return value


def _start_hostile(tm: trio_bg.TaskManager) -> list[trio_bg.TaskHandle[Any]]:
    handles: list[trio_bg.TaskHandle[Any]] = []
    for i, text in enumerate(HOSTILE_TEXT):
        handles.append(tm.start_soon_named(text, _return, ReprRaises(), key=f"{text}{i}"))
        handles.append(tm.start_soon_named(text, _raise, StrRaises()))
        handles.append(tm.start_soon_named(text, _return, ReprNotStr()))
    return handles


async def test_metrics_keep_scraping_after_hostile_task_names() -> None:
    registry = CollectorRegistry()
    instrument = PrometheusInstrument(registry=registry)
    async with trio_bg.open_task_manager(name="\udcffapp", instruments=(instrument,)) as tm:
        handles = _start_hostile(tm)
        await tm.wait_idle()
    assert all(h.done for h in handles)
    text = generate_latest(registry).decode()
    # Every task was counted, and the scrape works now and after.
    assert "trio_bg_tasks_started_total" in text
    assert generate_latest(registry) == generate_latest(registry)
    async with trio_bg.open_task_manager(instruments=(instrument,)) as tm:
        h = tm.start_soon_named("plain", _return, 1)
        assert await h.get() == 1
    assert 'task="plain"' in generate_latest(registry).decode()


async def test_otel_ends_every_span_and_stays_installed_for_hostile_errors() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrument = OpenTelemetryInstrument(tracer_provider=provider)
    trio_bg.add_instrument(instrument)
    try:
        async with trio_bg.open_task_manager() as tm:
            handles = _start_hostile(tm)
            await tm.wait_idle()
            after = tm.start_soon_named("after", _return, 1)
            await after.wait()
    finally:
        trio_bg.remove_instrument(instrument)
    spans = exporter.get_finished_spans()
    # Every task's span ended (the instrument was not removed by a raising __str__).
    assert len(spans) == len(handles) + 1
    failed = [s for s in spans if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == len(HOSTILE_TEXT)
    for span in failed:
        assert span.status.description is not None
        span.status.description.encode("utf-8")
        assert any(e.name == "exception" for e in span.events)
    assert [s.name for s in spans][-1] == "after"


async def test_the_dashboard_json_encodes_hostile_tasks(dashboards: list[Dashboard]) -> None:
    dashboard = Dashboard(local_only=True, show_args=True)
    dashboards.append(dashboard)
    release = trio.Event()

    async def held(_value: object) -> None:
        await release.wait()

    async with serve_app(dashboard) as served, trio_bg.open_task_manager() as tm:
        handles = _start_hostile(tm)
        waiting = tm.start_soon_named("\udcff", held, ReprRaises())
        await trio.testing.wait_all_tasks_blocked()
        got = await served.client.get("/api/tasks")
        assert got.status_code == 200
        body = json.loads(got.text)
        assert body["managers"]
        one = await served.client.get(f"/api/tasks/{handles[1].id}")
        assert one.status_code == 200
        assert one.json()["error"]["type"] == "StrRaises"
        release.set()
        await waiting.wait()
