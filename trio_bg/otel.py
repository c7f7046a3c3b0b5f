"""OpenTelemetry tracing: one span per task, child of the span current where it was started.

Needs the extra ``trio-bg[otel]`` (``opentelemetry-api`` only: which SDK and exporter to use is
the application's choice). Without an SDK configured, the spans are OpenTelemetry's no-op spans.

Where a span begins, and why there: in ``task_created``, which runs synchronously inside the
start call (``start_soon``, ``add_task``, ...), so the context current there is the caller's: a
task started inside a request's span is that span's child, whether it runs at once, waits in the
queue for a running slot, or is held for its request's timing point. ``task_started`` is no place
for it: a queued task gets its slot from ``_fill_slots``, inside *another* task's finish. So the
span covers the wait and the run: it begins at ``handle.created_at``, an event
``trio_bg.task.started`` marks ``handle.started_at`` (when the function was first called), and it
ends at ``handle.finished_at``. All three are the handle's own timestamps, so the span and the
handle (and anything else showing the handle, like the dashboard) agree to the nanosecond.

The task's own code does not run inside the task's span: a task runs in the context of its start
call (trio copies it), which an instrument cannot change. Spans the task opens are children of
the span that was current at the start call, siblings of the task's span.
"""

from __future__ import annotations

import time
import traceback
from typing import TYPE_CHECKING, Any

import outcome

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.trace import Span, Status, StatusCode, TracerProvider
    from opentelemetry.util.types import AttributeValue
except ImportError as exc:  # the extra is not installed
    raise ImportError("trio_bg.otel needs opentelemetry-api: pip install 'trio-bg[otel]'") from exc

from ._core._instruments import Instrument
from ._core._manager import TaskManager
from ._core._state import TaskState
from ._core._text import clean, safe_str
from ._version import __version__
from .asgi import RequestTaskManager

if TYPE_CHECKING:
    from ._core._handle import TaskHandle

__all__ = ["OpenTelemetryInstrument"]

_SUCCEEDED = TaskState.SUCCEEDED
_FAILED = TaskState.FAILED


def _ns(seconds: float) -> int:
    """A ``time.time()`` reading as OpenTelemetry's nanoseconds since the epoch (monotone: a
    later reading never gives an earlier timestamp)."""
    return int(seconds * 1e9)


def _kind(manager: TaskManager) -> str:
    return "request" if isinstance(manager, RequestTaskManager) else "app"


class _TaskSpan:
    """The span of one task in flight, and whether its ``trio_bg.task.started`` event is in."""

    __slots__ = ("span", "started_noted")

    def __init__(self, span: Span) -> None:
        self.span = span
        self.started_noted = False


class OpenTelemetryInstrument(Instrument):
    """An instrument that traces every task as one OpenTelemetry span.

    Install it like any instrument: ``trio_bg.add_instrument(OpenTelemetryInstrument())``,
    ``open_task_manager(instruments=[...])`` or ``TaskMiddleware(app, instruments=[...])``.

    Each task's span is named after the task and is a child of the span that was current where
    the task was started. It begins when the start is accepted and ends when the task reaches its
    terminal state; its status is OK for SUCCEEDED, ERROR (with the exception recorded) for
    FAILED, and left unset for CANCELLED. A retried attempt is a ``trio_bg.task.retrying``
    event. A refused start makes no span; it adds a ``trio_bg.task.rejected`` event to the
    current span, if one is recording. The attributes are listed in ``docs/otel.md``.

    Args:
        tracer_provider: Where the spans go. None (the default) uses the global provider
            (``opentelemetry.trace.set_tracer_provider``), looked up when a span is made, so it
            may be configured after the instrument was created.

    The hooks neither block nor checkpoint, so cancellation never reaches them; a task's
    cancellation shows on its span as the state ``cancelled``. The recording spans of tasks in
    flight are kept in a dict keyed by task, and each entry leaves it when its task finishes (a
    no-op or unsampled span is not kept). An instrument
    installed while a task is already active makes no span for that task; one removed while
    tasks are active leaves their spans unended (never exported), dropped with the instrument.
    """

    __slots__ = ("_spans", "_tracer")

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer("trio_bg", __version__, tracer_provider=tracer_provider)
        self._spans: dict[int, _TaskSpan] = {}

    def __repr__(self) -> str:
        return f"<OpenTelemetryInstrument spans_in_flight={len(self._spans)}>"

    def task_created(self, handle: TaskHandle[Any]) -> None:
        manager = handle.manager
        assert isinstance(manager, TaskManager)  # set while the task is active
        attributes: dict[str, AttributeValue] = {
            "trio_bg.task.id": handle.id,
            "trio_bg.task.name": clean(handle.name),
            "trio_bg.task.timing": handle.timing.value,
            "trio_bg.task.shielded": handle.shielded,
            "trio_bg.manager.name": clean(manager.name),
            "trio_bg.manager.kind": _kind(manager),
        }
        key = handle.key
        if key is not None:
            attributes["trio_bg.task.key"] = clean(key)
        group = handle.group
        if group is not None:
            attributes["trio_bg.task.group"] = clean(group)
        span = self._tracer.start_span(
            clean(handle.name),
            # The caller's context: this hook runs inside the start call.
            context=otel_context.get_current(),
            attributes=attributes,
            start_time=_ns(handle.created_time),
        )
        if span.is_recording():
            # A no-op span (no SDK) or one the sampler dropped needs no end: keep none, and the
            # task's other hooks cost one dict lookup.
            self._spans[handle.number] = _TaskSpan(span)

    def task_retrying(self, handle: TaskHandle[Any], exc: BaseException, delay: float) -> None:
        task = self._spans.get(handle.number)
        if task is None:
            return  # created before this instrument was installed
        self._note_started(task, handle)
        task.span.add_event(
            "trio_bg.task.retrying",
            {
                "trio_bg.task.attempt": handle.attempts,
                "trio_bg.task.retry_delay_seconds": delay,
                "exception.type": _qualified_name(exc),
                "exception.message": safe_str(exc),
            },
            timestamp=_ns(time.time()),
        )

    def task_progress(self, handle: TaskHandle[Any]) -> None:
        task = self._spans.get(handle.number)
        progress = handle.progress
        if task is None or progress is None:
            return  # created before this instrument was installed
        self._note_started(task, handle)
        attributes: dict[str, str | float] = {}
        if progress.fraction is not None:
            attributes["trio_bg.task.progress"] = progress.fraction
        if progress.message is not None:
            attributes["trio_bg.task.progress_message"] = progress.message
        task.span.add_event(
            "trio_bg.task.progress", attributes, timestamp=_ns(progress.at.timestamp())
        )

    def task_finished(self, handle: TaskHandle[Any]) -> None:
        task = self._spans.pop(handle.number, None)
        if task is None:
            return  # created before this instrument was installed
        span = task.span
        # The span ends whatever the task's values do to the code below: a task whose error
        # cannot be printed must not leave its span open.
        try:
            self._finish(task, handle)
        finally:
            span.end(end_time=_ns(handle.finished_time or time.time()))

    def _finish(self, task: _TaskSpan, handle: TaskHandle[Any]) -> None:
        self._note_started(task, handle)
        span = task.span
        state = handle.state
        finished = handle.finished_time
        assert finished is not None  # task_finished comes after the terminal state is set
        # One set_attributes call, not one set_attribute per key: the SDK takes its lock and
        # checks the values once (16 us fewer per task with the SDK, timeit).
        attributes: dict[str, AttributeValue] = {
            "trio_bg.task.state": state.value,
            "trio_bg.task.attempts": handle.attempts,
        }
        started = handle.started_time
        if started is not None:
            attributes["trio_bg.task.wait_seconds"] = started - handle.created_time
            attributes["trio_bg.task.run_seconds"] = finished - started
        if state is _SUCCEEDED:
            span.set_attributes(attributes)
            span.set_status(Status(StatusCode.OK))
        elif state is _FAILED:
            result = handle.outcome
            assert isinstance(result, outcome.Error)  # FAILED
            exc = result.error
            attributes["error.type"] = _qualified_name(exc)
            span.set_attributes(attributes)
            message = safe_str(exc)
            # The SDK's record_exception calls str(exc) itself, and raises with it.
            span.add_event(
                "exception",
                {
                    "exception.type": attributes["error.type"],
                    "exception.message": message,
                    "exception.stacktrace": _stacktrace(exc),
                    "exception.escaped": False,
                },
                timestamp=_ns(finished),
            )
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {message}"))
        else:
            attributes["trio_bg.task.cancel_requested"] = handle.cancel_requested
            span.set_attributes(attributes)

    def task_rejected(self, manager: TaskManager, name: str, reason: str) -> None:
        span = trace.get_current_span()  # the caller's: this hook runs inside the start call
        if span.is_recording():
            span.add_event(
                "trio_bg.task.rejected",
                {
                    "trio_bg.task.name": clean(name),
                    "trio_bg.task.rejected_reason": reason,
                    "trio_bg.manager.name": clean(manager.name),
                    "trio_bg.manager.kind": _kind(manager),
                },
                timestamp=_ns(time.time()),
            )

    @staticmethod
    def _note_started(task: _TaskSpan, handle: TaskHandle[Any]) -> None:
        """Add the ``trio_bg.task.started`` event at ``handle.started_at``, once, as soon as it
        is known (it is set when trio first runs the task, after ``task_started``)."""
        if task.started_noted:
            return
        started = handle.started_time
        if started is not None:
            task.started_noted = True
            task.span.add_event("trio_bg.task.started", timestamp=_ns(started))


def _stacktrace(exc: BaseException) -> str:
    """The exception's traceback as text; its own lines when its ``__str__`` raises."""
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:
        text = "".join(traceback.format_tb(exc.__traceback__)) + f"{type(exc).__qualname__}\n"
    return clean(text, 100_000)


def _qualified_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
