"""Prometheus metrics of every task, through ``prometheus_client`` (extra ``trio-bg[metrics]``).

:class:`PrometheusInstrument` is a :class:`trio_bg.Instrument`: installed process-wide
(``trio_bg.add_instrument``) or given to managers and middlewares (``instruments=``), it keeps
these metrics, each labelled ``manager`` and ``task``:

========================================  ===========  ===========================================
name                                      type         what it counts
========================================  ===========  ===========================================
``trio_bg_tasks_started_total``           counter      accepted starts (``statistics().started``)
``trio_bg_tasks_finished_total{state}``   counter      ends: ``succeeded``, ``failed``,
                                                       ``cancelled``
``trio_bg_tasks_rejected_total``          counter      refused starts (``TaskRejected``)
``trio_bg_task_retries_total``            counter      failed attempts that were retried
``trio_bg_tasks_running``                 gauge        RUNNING tasks now
``trio_bg_tasks_pending``                 gauge        PENDING tasks now (queued or held)
``trio_bg_task_duration_seconds``         histogram    from RUNNING to the end, per task that ran
``trio_bg_task_wait_seconds``             histogram    from the start call to RUNNING, per task
                                                       that ran
========================================  ===========  ===========================================

``manager`` is the manager's name, or ``request`` for every request's manager (so the label never
carries a path). ``task`` is the task's name; once ``max_task_names`` distinct names have been
seen, further names are counted under ``other``. Times are read from trio's clock
(``trio.current_time()``) in the hooks.

Several processes (``hypercorn --workers N``): set ``PROMETHEUS_MULTIPROC_DIR`` before the
processes start and serve :func:`scrape_registry` on ``/metrics``; it adds up every process's
numbers (the gauges with ``livesum``). See ``docs/asgi/workers.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

import prometheus_client
import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from ._core._checks import check_count
from ._core._instruments import Instrument
from ._core._manager import TaskManager
from ._core._state import TaskState
from ._core._text import clean
from .asgi._request import RequestTaskManager

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from ._core._handle import TaskHandle

__all__ = ["PrometheusInstrument", "scrape_registry"]

OTHER = "other"
"""The ``task`` label of every name past ``max_task_names``."""

REQUEST = "request"
"""The ``manager`` label of every request's manager."""

LABEL_LIMIT = 200
"""The most characters of a task or manager name used as a label value."""

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
"""Histogram buckets in seconds (``+Inf`` is added): background tasks run from milliseconds to
minutes, so prometheus_client's default buckets (up to 10 s) are extended."""

_LABELS = ("manager", "task")
_ENDS = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)


@final
class _Series:
    """The children of every metric for one ``(manager, task)`` pair, made once and reused:
    ``metric.labels(...)`` validates and locks on each call, a cached child does not."""

    __slots__ = (
        "duration", "finished", "pending", "rejected", "retries", "running", "started", "wait",
    )  # fmt: skip

    def __init__(self, metrics: _Metrics, manager: str, task: str) -> None:
        labels = (manager, task)
        self.started = metrics.started.labels(*labels)
        self.finished = {state: metrics.finished.labels(*labels, state.value) for state in _ENDS}
        self.rejected = metrics.rejected.labels(*labels)
        self.retries = metrics.retries.labels(*labels)
        self.running = metrics.running.labels(*labels)
        self.pending = metrics.pending.labels(*labels)
        self.duration = metrics.duration.labels(*labels)
        self.wait = metrics.wait.labels(*labels)


@final
class _Metrics:
    """The eight metrics, not yet registered anywhere."""

    __slots__ = ("duration", "finished", "pending", "rejected", "retries", "running", "started",
                 "wait")  # fmt: skip

    def __init__(self) -> None:
        unregistered = None  # made here; PrometheusInstrument registers them, or refuses
        self.started = Counter(
            "trio_bg_tasks_started", "Task starts accepted.", _LABELS, registry=unregistered
        )
        self.finished = Counter(
            "trio_bg_tasks_finished",
            "Tasks that reached a terminal state (succeeded, failed or cancelled).",
            (*_LABELS, "state"),
            registry=unregistered,
        )
        self.rejected = Counter(
            "trio_bg_tasks_rejected",
            "Task starts refused with TaskRejected.",
            _LABELS,
            registry=unregistered,
        )
        self.retries = Counter(
            "trio_bg_task_retries",
            "Failed attempts that were retried.",
            _LABELS,
            registry=unregistered,
        )
        # livesum: with PROMETHEUS_MULTIPROC_DIR set, the live processes' values are added up
        # (the mode is ignored otherwise).
        self.running = Gauge(
            "trio_bg_tasks_running",
            "Tasks running now.",
            _LABELS,
            registry=unregistered,
            multiprocess_mode="livesum",
        )
        self.pending = Gauge(
            "trio_bg_tasks_pending",
            "Tasks waiting to run now (queued for a running slot, or held for a timing point).",
            _LABELS,
            registry=unregistered,
            multiprocess_mode="livesum",
        )
        self.duration = Histogram(
            "trio_bg_task_duration_seconds",
            "Seconds from a task's start of running to its end, for the tasks that ran.",
            _LABELS,
            registry=unregistered,
            buckets=BUCKETS,
        )
        self.wait = Histogram(
            "trio_bg_task_wait_seconds",
            "Seconds from a task's start call to its start of running, for the tasks that ran.",
            _LABELS,
            registry=unregistered,
            buckets=BUCKETS,
        )

    def all(self) -> tuple[Collector, ...]:
        return (self.started, self.finished, self.rejected, self.retries, self.running,
                self.pending, self.duration, self.wait)  # fmt: skip


@final
class _Track:
    """What the instrument keeps about one active task: its series and its times."""

    __slots__ = ("created", "series", "started")

    def __init__(self, series: _Series, created: float) -> None:
        self.series = series
        self.created = created
        self.started: float | None = None


@final
class PrometheusInstrument(Instrument):
    """An instrument that keeps Prometheus metrics of every task it sees (the module docstring
    lists them).

    One instance can be installed in any number of places: process-wide, on several managers,
    on several middlewares; its metrics add them up by their labels. A registry takes one
    instance (a second one on the same registry raises ``ValueError``).

    Its hooks never block and never cancel anything; cancellation does not reach them (they are
    plain methods). The gauges follow the hooks exactly: a task counts as pending from
    ``task_created`` to ``task_started`` and as running from there to ``task_finished``. A task
    that was already active when the instrument was installed is not counted at all. The two
    histograms are observed when a task ends, for the tasks whose function was called: ``wait``
    is the time from the start call to ``task_started``, ``duration`` from ``task_started`` to
    ``task_finished``. Per task, the instrument keeps one small record while the task is active
    (dropped at ``task_finished``); per label pair, one set of series.

    Args:
        registry: the ``prometheus_client.CollectorRegistry`` to register the metrics in; None
            for prometheus_client's default ``REGISTRY``.
        max_task_names: how many distinct task names get a ``task`` label of their own (the
            first ones seen); later names are counted as ``other``. 0 counts every task as
            ``other``.

    Raises:
        TypeError: ``registry`` is not a ``CollectorRegistry`` or None, or ``max_task_names`` is
            not an int.
        ValueError: ``max_task_names`` is negative, or ``registry`` already has a metric of one
            of these names (another PrometheusInstrument, most likely).
    """

    __slots__ = ("_max_task_names", "_metrics", "_names", "_registry", "_series", "_tasks")

    def __init__(
        self, registry: CollectorRegistry | None = None, max_task_names: int = 100
    ) -> None:
        self._registry = _check_registry(registry)
        self._max_task_names = check_count("max_task_names", max_task_names, 0)
        self._metrics = _Metrics()
        self._names: set[str] = set()
        self._series: dict[tuple[str, str], _Series] = {}
        self._tasks: dict[int, _Track] = {}
        registered: list[Collector] = []
        for metric in self._metrics.all():
            try:
                self._registry.register(metric)
            except ValueError:
                for done in registered:
                    self._registry.unregister(done)
                raise ValueError(
                    "the registry already has trio_bg's metrics: install one "
                    "PrometheusInstrument per registry (the same one may go to every manager)"
                ) from None
            registered.append(metric)

    @property
    def registry(self) -> CollectorRegistry:
        """The registry the metrics are registered in."""
        return self._registry

    @property
    def max_task_names(self) -> int:
        """How many distinct task names get a ``task`` label of their own."""
        return self._max_task_names

    def unregister(self) -> None:
        """Remove the metrics from the registry (then a new instrument may use it)."""
        for metric in self._metrics.all():
            self._registry.unregister(metric)

    def __repr__(self) -> str:
        return (
            f"<PrometheusInstrument {len(self._names)}/{self._max_task_names} task names, "
            f"{len(self._tasks)} active tasks>"
        )

    # -- labels --------------------------------------------------------------------------------

    def _series_for(self, manager: TaskManager, name: str) -> _Series:
        manager_label = REQUEST if isinstance(manager, RequestTaskManager) else manager.name
        names = self._names
        if name not in names:
            if len(names) < self._max_task_names:
                names.add(name)
            else:
                name = OTHER
        key = (manager_label, name)
        series = self._series.get(key)
        if series is None:
            # Label values as Prometheus can write them (valid UTF-8, bounded): a name with a
            # lone surrogate would make every later scrape fail.
            series = self._series[key] = _Series(
                self._metrics, clean(manager_label, LABEL_LIMIT), clean(name, LABEL_LIMIT)
            )
        return series

    # -- hooks ---------------------------------------------------------------------------------

    def task_created(self, handle: TaskHandle[Any]) -> None:
        manager = handle.manager
        assert isinstance(manager, TaskManager)  # an active task's manager
        series = self._series_for(manager, handle.name)
        self._tasks[handle.number] = _Track(series, trio.current_time())
        series.started.inc()
        series.pending.inc()

    def task_started(self, handle: TaskHandle[Any]) -> None:
        track = self._tasks.get(handle.number)
        if track is None:
            return  # created before this instrument was installed
        track.started = trio.current_time()
        track.series.pending.dec()
        track.series.running.inc()

    def task_retrying(self, handle: TaskHandle[Any], exc: BaseException, delay: float) -> None:
        track = self._tasks.get(handle.number)
        if track is not None:
            track.series.retries.inc()

    def task_finished(self, handle: TaskHandle[Any]) -> None:
        track = self._tasks.pop(handle.number, None)
        if track is None:
            return
        series = track.series
        series.finished[handle.state].inc()
        started = track.started
        if started is None:
            series.pending.dec()
            return
        series.running.dec()
        if handle.started_at is not None:  # its function was called
            series.wait.observe(started - track.created)
            series.duration.observe(trio.current_time() - started)

    def task_rejected(self, manager: TaskManager, name: str, reason: str) -> None:
        self._series_for(manager, name).rejected.inc()


def _check_registry(registry: object) -> CollectorRegistry:
    if registry is None:
        return prometheus_client.REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise TypeError(
            "registry must be a prometheus_client.CollectorRegistry or None, "
            f"got {type(registry).__name__}"
        )
    return registry


def scrape_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry to serve on ``/metrics`` (``prometheus_client.generate_latest(...)``).

    With ``PROMETHEUS_MULTIPROC_DIR`` set (prometheus_client's multiprocess mode), a new
    registry whose ``MultiProcessCollector`` adds up the files every process wrote there: the
    counters and histograms of all processes that ever ran, the gauges of the live ones. Each
    process's own registry is ignored then (its values are in the files). Otherwise
    ``registry``, or prometheus_client's default ``REGISTRY`` if None: this process only.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        combined = CollectorRegistry()
        collector: Callable[[CollectorRegistry], object] = MultiProcessCollector  # untyped
        collector(combined)  # registers itself in ``combined``
        return combined
    return _check_registry(registry)
