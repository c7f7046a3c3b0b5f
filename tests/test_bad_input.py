"""Bad input at every public entry point: the exact exception and message, and nothing done.

One file for the subject (it was four): the tables of entry points first, then misuse of the
core's API (coroutine objects, names, options, groups, ``with`` instead of ``async with``), then
misuse that says what to do instead (a middleware name of the wrong kind, the context used as the
manager, a request object instead of its scope). Arguments that cannot bind to the task's
function are tests/test_exact_starts.py.

One table per kind of entry point. Each case asserts the exception type and its whole message
(anchored), that no warning was emitted (no "coroutine ... was never awaited"), and that nothing
was started or counted: a manager's statistics and active tasks are unchanged and no task
function ran; process-wide state (open managers, instruments, the finished-task history) is
unchanged; ``serve`` opened no socket; the CLI exited before serving.

The tables do not repeat the cases of the sections below them (coroutine objects,
non-callables, names, timeouts, ``retry``, ``key`` and ``on_error`` of a start, the caps,
``grace_period`` and names of ``open_task_manager``, most of ``Retry``; ``TaskMiddleware(name=)``,
a request object instead of a scope), nor ``Retry(on=)`` (tests/test_core_retry.py) and odd task
ids (tests/test_lookup_ids.py).
"""

from __future__ import annotations

import gc
import inspect
import math
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trio_bg
from trio_bg import Retry, TaskManager, TaskRejected
from trio_bg._core._instruments import GLOBAL as global_instruments
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks

ran: list[object] = []
calls: list[object] = []  # what work() was called with


async def work(x: object = None) -> None:
    ran.append("work")
    calls.append(x)


async def asgi_app(scope: object, receive: object, send: object) -> None:
    del scope, receive, send


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


@contextmanager
def nothing_happens(*, collect: bool = False) -> Iterator[None]:
    """No warning, no task function run, no process-wide state changed in the block.

    ``collect``: run the garbage collector at the end, so that a coroutine object made and
    dropped in the block would warn "never awaited" (for the entry points that take a task
    function; a collection costs ~0.2 s in a full test process).
    """
    from trio_bg._core import _registry

    ran.clear()
    managers = set(_registry.open_managers)
    instruments = list(global_instruments)
    history = _registry.finished.maxlen
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        if collect:
            gc.collect()  # a coroutine left unawaited would warn here
    assert [str(w.message) for w in caught] == []
    assert ran == []
    assert _registry.open_managers == managers
    assert list(global_instruments) == instruments
    assert _registry.finished.maxlen == history


# -- entry points that need no manager ------------------------------------------------------------

Case = tuple[str, Callable[[], object], type[Exception], str]

PLAIN: list[Case] = [
    # open_task_manager: every option, wrong kind and wrong value
    (
        "max_pending str",
        lambda: trio_bg.open_task_manager(max_pending="x"),  # type: ignore[arg-type]
        TypeError,
        "max_pending must be an int or None, got str",
    ),
    (
        "max_running bool",
        lambda: trio_bg.open_task_manager(max_running=True),
        TypeError,
        "max_running must be an int or None, got bool",
    ),
    (
        "max_threads str",
        lambda: trio_bg.open_task_manager(max_threads="1"),  # type: ignore[arg-type]
        TypeError,
        "max_threads must be an int or None, got str",
    ),
    (
        "grace_period str",
        lambda: trio_bg.open_task_manager(grace_period="5"),  # type: ignore[arg-type]
        TypeError,
        "grace_period must be a number of seconds, got str",
    ),
    (
        "grace_period nan",
        lambda: trio_bg.open_task_manager(grace_period=math.nan),
        ValueError,
        "grace_period must be a non-negative number of seconds, got nan",
    ),
    (
        "shield_timeout negative",
        lambda: trio_bg.open_task_manager(shield_timeout=-1),
        ValueError,
        "shield_timeout must be a non-negative number of seconds, got -1",
    ),
    (
        "shield_timeout bool",
        lambda: trio_bg.open_task_manager(shield_timeout=True),
        TypeError,
        "shield_timeout must be a number of seconds, got bool",
    ),
    (
        "recent_limit None",
        lambda: trio_bg.open_task_manager(recent_limit=None),  # type: ignore[arg-type]
        TypeError,
        "recent_limit must be an int, got NoneType",
    ),
    (
        "recent_limit negative",
        lambda: trio_bg.open_task_manager(recent_limit=-1),
        ValueError,
        "recent_limit must be >= 0, got -1",
    ),
    (
        "instruments not iterable",
        lambda: trio_bg.open_task_manager(instruments=5),  # type: ignore[arg-type]
        TypeError,
        "instruments must be an iterable of trio_bg.Instrument, got int",
    ),
    (
        "instruments one instrument",
        lambda: trio_bg.open_task_manager(instruments=trio_bg.Instrument()),  # type: ignore[arg-type]
        TypeError,
        "instruments must be an iterable of trio_bg.Instrument, got Instrument",
    ),
    (
        "instruments holding a non-instrument",
        lambda: trio_bg.open_task_manager(instruments=[5]),  # type: ignore[list-item]
        TypeError,
        "an instrument must be a trio_bg.Instrument, got int",
    ),
    (
        "on_error bool",
        lambda: trio_bg.open_task_manager(on_error=True),  # type: ignore[arg-type]
        TypeError,
        "on_error must be callable or None, got bool",
    ),
    # Retry
    (
        "Retry attempts bool",
        lambda: Retry(attempts=True),
        TypeError,
        "Retry attempts must be an int, got bool",
    ),
    (
        "Retry backoff str",
        lambda: Retry(backoff="1"),  # type: ignore[arg-type]
        TypeError,
        "Retry backoff must be a number, got str",
    ),
    (
        "Retry max_backoff nan",
        lambda: Retry(max_backoff=math.nan),
        ValueError,
        "Retry max_backoff must be a finite number >= 0, got nan",
    ),
    (
        "Retry jitter str",  # was accepted (and taken as true) before this campaign
        lambda: Retry(jitter="yes"),  # type: ignore[arg-type]
        TypeError,
        "Retry jitter must be a bool, got str",
    ),
    (
        "Retry on None",
        lambda: Retry(on=None),  # type: ignore[arg-type]
        TypeError,
        "Retry on must be an Exception subclass or a tuple of them, got NoneType",
    ),
    # process-wide lookup and instruments
    (
        "set_recent_limit negative",
        lambda: trio_bg.set_recent_limit(-1),
        ValueError,
        "limit must be >= 0, got -1",
    ),
    (
        "set_recent_limit bool",
        lambda: trio_bg.set_recent_limit(True),
        TypeError,
        "limit must be an int, got bool",
    ),
    (
        "add_instrument int",
        lambda: trio_bg.add_instrument(5),  # type: ignore[arg-type]
        TypeError,
        "an instrument must be a trio_bg.Instrument, got int",
    ),
    (
        "add_instrument a class",
        lambda: trio_bg.add_instrument(trio_bg.Instrument),  # type: ignore[arg-type]
        TypeError,
        "an instrument must be a trio_bg.Instrument, got type",
    ),
    # TaskMiddleware
    (
        "middleware app not callable",
        lambda: TaskMiddleware(5),  # type: ignore[arg-type]
        TypeError,
        "TaskMiddleware() takes an ASGI app, got 'int'",
    ),
    (
        "middleware grace_period negative",
        lambda: TaskMiddleware(asgi_app, grace_period=-1),
        ValueError,
        "grace_period must be a non-negative number of seconds, got -1",
    ),
    (
        "middleware shield_timeout str",
        lambda: TaskMiddleware(asgi_app, shield_timeout="x"),  # type: ignore[arg-type]
        TypeError,
        "shield_timeout must be a number of seconds, got str",
    ),
    (
        "middleware shield_timeout below grace_period",
        lambda: TaskMiddleware(asgi_app, grace_period=2, shield_timeout=1),
        ValueError,
        "shield_timeout (1.0) must be >= grace_period (2.0): "
        "shielded tasks get at least the grace period",
    ),
    (
        "middleware max_tasks_per_request 0",
        lambda: TaskMiddleware(asgi_app, max_tasks_per_request=0),
        ValueError,
        "max_tasks_per_request must be None or >= 1, got 0",
    ),
    (
        "middleware max_tasks_per_request str",
        lambda: TaskMiddleware(asgi_app, max_tasks_per_request="1"),  # type: ignore[arg-type]
        TypeError,
        "max_tasks_per_request must be an int or None, got str",
    ),
    (
        "middleware on_error int",
        lambda: TaskMiddleware(asgi_app, on_error=1),  # type: ignore[arg-type]
        TypeError,
        "on_error must be callable or None, got int",
    ),
    (
        "middleware max_running 0",
        lambda: TaskMiddleware(asgi_app, max_running=0),
        ValueError,
        "max_running must be None or >= 1, got 0",
    ),
    (
        "middleware max_pending negative",
        lambda: TaskMiddleware(asgi_app, max_pending=-1),
        ValueError,
        "max_pending must be None or >= 0, got -1",
    ),
    (
        "middleware instruments int",
        lambda: TaskMiddleware(asgi_app, instruments=3),  # type: ignore[arg-type]
        TypeError,
        "instruments must be an iterable of trio_bg.Instrument, got int",
    ),
    (
        "middleware recent_limit negative",
        lambda: TaskMiddleware(asgi_app, recent_limit=-2),
        ValueError,
        "recent_limit must be >= 0, got -2",
    ),
    # request_tasks / app_tasks on a scope the middleware never saw
    (
        "request_tasks outside the middleware",
        lambda: request_tasks({"type": "http"}),
        RuntimeError,
        "request_tasks() found no task manager in this scope: "
        "wrap the ASGI app in trio_bg.asgi.TaskMiddleware",
    ),
    (
        "app_tasks outside the middleware",
        lambda: app_tasks({}),
        RuntimeError,
        "app_tasks() found no task manager in this scope: "
        "wrap the ASGI app in trio_bg.asgi.TaskMiddleware",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [pytest.param(call, error, message, id=case) for case, call, error, message in PLAIN],
)
def test_entry_points_without_a_manager(
    call: Callable[[], object], error: type[Exception], message: str
) -> None:
    with nothing_happens(), pytest.raises(error, match=exact(message)):
        call()


def test_remove_instrument_that_is_not_installed() -> None:
    instrument = trio_bg.Instrument()
    with nothing_happens(), pytest.raises(KeyError) as caught:
        trio_bg.remove_instrument(instrument)
    assert caught.value.args == (f"instrument {instrument!r} is not installed",)


# -- entry points on a live manager ---------------------------------------------------------------

ON_MANAGER: list[tuple[str, Callable[[TaskManager], object], type[Exception], str]] = [
    (
        "shield str",  # was accepted (and taken as true) before this campaign
        lambda tm: tm.start_soon(work, shield="yes"),  # type: ignore[call-overload, call-arg]
        TypeError,
        "shield must be a bool, got str",
    ),
    (
        "shield None on start_soon_named",
        lambda tm: tm.start_soon_named("n", work, shield=None),  # type: ignore[call-overload, call-arg]
        TypeError,
        "shield must be a bool, got NoneType",
    ),
    (
        "always str",  # was accepted before this campaign
        lambda tm: tm.start_soon(work, always="x"),  # type: ignore[call-overload, call-arg]
        TypeError,
        "always must be a bool, got str",
    ),
    (
        "always int with a timeout",
        lambda tm: tm.start_soon_named("n", work, timeout=1, always=1),  # type: ignore[call-overload, call-arg]
        TypeError,
        "always must be a bool, got int",
    ),
    (
        "timeout bool",
        lambda tm: tm.start_soon(work, timeout=True),
        TypeError,
        "timeout must be a number of seconds, got bool",
    ),
    (
        "name bytes",
        lambda tm: tm.start_soon_named(b"n", work),  # type: ignore[call-overload]
        TypeError,
        "task name must be a str, got bytes",
    ),
    (
        "add_task non-callable",
        lambda tm: tm.add_task(5),  # type: ignore[call-overload]
        TypeError,
        "add_task() takes a function, got 'int'",
    ),
    (
        "start_soon None",
        lambda tm: tm.start_soon(None),  # type: ignore[call-overload]
        TypeError,
        "start_soon() takes a function, got 'NoneType'",
    ),
    (
        "open_group None",
        lambda tm: tm.open_group(None),  # type: ignore[arg-type]
        TypeError,
        "group name must be a str, got NoneType",
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [pytest.param(call, error, message, id=case) for case, call, error, message in ON_MANAGER],
)
async def test_entry_points_on_a_manager(
    call: Callable[[TaskManager], object], error: type[Exception], message: str
) -> None:
    async with trio_bg.open_task_manager() as tm:
        keep = tm.start_soon(trio.sleep, 0)
        before = tm.statistics()
        with nothing_happens(collect=True), pytest.raises(error, match=exact(message)):
            call(tm)
        assert tm.statistics() == before  # not even counted as rejected
        assert tm.active_tasks == (keep,)
        await trio.testing.wait_all_tasks_blocked()
    assert ran == []


async def test_a_bad_start_on_a_group_and_a_timing_point_is_refused_the_same_way() -> None:
    from trio_bg.testing import serve_app

    async with trio_bg.open_task_manager() as tm:
        async with tm.open_group("g") as group:
            before = tm.statistics()
            with (
                nothing_happens(collect=True),
                pytest.raises(TypeError, match=exact("shield must be a bool, got int")),
            ):
                group.start_soon(work, shield=1)  # type: ignore[call-overload, call-arg]
            assert tm.statistics() == before
            assert group.handles == ()
        with pytest.raises(TypeError, match=exact("wait_all() takes a class, got int")):
            await group.wait_all(5)  # type: ignore[call-overload]

    answers: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        tasks = request_tasks(scope)
        try:
            tasks.after_response.start_soon_named("late", work, always="yes")  # type: ignore[call-overload, call-arg]
        except TypeError as exc:
            answers.append(str(exc))
        answers.append(repr(tasks.statistics()))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with serve_app(TaskMiddleware(inner)) as served:
        response = await served.client.get("/")
        assert response.status_code == 204
        await served.wait_idle()
    assert answers == [
        "always must be a bool, got str",
        "TaskStatistics(started=0, pending=0, running=0, succeeded=0, failed=0, cancelled=0, "
        "rejected=0)",
    ]
    assert ran == []


@pytest.mark.parametrize("task_id", [5, None, b"task-1", ["task-1"]], ids=repr)
async def test_lookups_answer_not_found_for_an_id_of_the_wrong_kind(task_id: object) -> None:
    # Deliberately not a TypeError (tests/test_lookup.py: find_task(5) is None): a lookup answers
    # "no such task" for anything that is no task id.
    async with trio_bg.open_task_manager() as tm:
        keep = tm.start_soon(trio.sleep, 0)
        before = tm.statistics()
        with nothing_happens():
            assert tm.get(task_id) is None  # type: ignore[arg-type]
            assert tm.cancel(task_id) is False  # type: ignore[arg-type]
            assert trio_bg.find_task(task_id) is None  # type: ignore[arg-type]
        assert tm.statistics() == before
        assert tm.active_tasks == (keep,)


# -- serve() --------------------------------------------------------------------------------------

SERVE: list[tuple[str, dict[str, Any], type[Exception], str]] = [
    ("app not callable", {"app": 5}, TypeError, "serve() takes an ASGI app, got 'int'"),
    ("bind int", {"bind": 5}, TypeError, "bind must be a str or a sequence of str, got int"),
    (
        "bind list of int",
        {"bind": [80]},
        TypeError,
        "bind must be a str or a sequence of str, got list",
    ),
    ("bind empty", {"bind": ""}, ValueError, "bind must name at least one host:port, got ''"),
    ("bind no address", {"bind": []}, ValueError, "bind must name at least one host:port, got []"),
    (
        "config",
        {"config": {"bind": "x"}},
        TypeError,
        "config must be a hypercorn Config or None, got dict",
    ),
    (
        "graceful_timeout negative",
        {"graceful_timeout": -1},
        ValueError,
        "graceful_timeout must be a non-negative number of seconds, got -1",
    ),
    (
        "graceful_timeout str",
        {"graceful_timeout": "5"},
        TypeError,
        "graceful_timeout must be a number of seconds, got str",
    ),
    (
        "graceful_timeout inf",
        {"graceful_timeout": math.inf},
        ValueError,
        "graceful_timeout must be a non-negative number of seconds, got inf",
    ),
    (
        "shutdown_trigger not callable",
        {"shutdown_trigger": 5},
        TypeError,
        "shutdown_trigger must be callable or None, got int",
    ),
    (
        "gc_threshold too short",
        {"gc_threshold": (1, 2)},
        TypeError,
        "gc_threshold must be a tuple of 3 ints or None, got (1, 2)",
    ),
    (
        "gc_threshold negative",
        {"gc_threshold": (700, -1, 10)},
        ValueError,
        "gc_threshold must hold ints >= 0, got (700, -1, 10)",
    ),
]


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [pytest.param(arguments, error, message, id=case) for case, arguments, error, message in SERVE],
)
async def test_serve_refuses_bad_arguments_before_it_opens_a_socket(
    arguments: dict[str, Any], error: type[Exception], message: str
) -> None:
    arguments = {"app": asgi_app, "bind": "127.0.0.1:0", "handle_signals": False, **arguments}
    serve: Callable[..., Awaitable[None]] = trio_bg.serve
    with nothing_happens():
        with trio.fail_after(5), pytest.raises(error, match=exact(message)):
            await serve(**arguments)
        assert gc.isenabled()


# -- python -m trio_bg ---------------------------------------------------------------------------

CLI: list[tuple[str, list[str], int, str]] = [
    (
        "no command",
        [],
        2,
        "python -m trio_bg: error: the following arguments are required: command",
    ),
    (
        "missing app",
        ["serve"],
        2,
        "python -m trio_bg serve: error: the following arguments are required: app",
    ),
    (
        "grace not a number",
        ["serve", "tests.apps.graceful_app:app", "--grace", "abc"],
        2,
        "python -m trio_bg serve: error: argument --grace: not a number of seconds: 'abc'",
    ),
    (
        "grace negative",  # was accepted (Hypercorn then got a negative timeout)
        ["serve", "tests.apps.graceful_app:app", "--grace", "-1"],
        2,
        "python -m trio_bg serve: error: argument --grace: "
        "must be a finite number of seconds >= 0, got '-1'",
    ),
    (
        "grace nan",  # was accepted, and failed with a traceback at the first signal
        ["serve", "tests.apps.graceful_app:app", "--grace", "nan"],
        2,
        "python -m trio_bg serve: error: argument --grace: "
        "must be a finite number of seconds >= 0, got 'nan'",
    ),
    (
        "demo grace inf",
        ["demo", "--grace", "inf"],
        2,
        "python -m trio_bg demo: error: argument --grace: "
        "must be a finite number of seconds >= 0, got 'inf'",
    ),
]
# An app path that cannot be loaded (no colon, not callable, no such module or attribute) is one
# "error:" line and exit status 2: tests/test_serve_cli.py runs those through the real CLI.


@pytest.mark.parametrize(
    ("argv", "code", "stderr"),
    [pytest.param(argv, code, stderr, id=case) for case, argv, code, stderr in CLI],
)
def test_the_cli_refuses_bad_arguments_before_it_serves(
    argv: list[str], code: int, stderr: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from trio_bg.__main__ import main

    with nothing_happens(), pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == code
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == stderr
    assert err.startswith("usage: python -m trio_bg")


# -- misuse of the core's API ----------------------------------------------------------------


async def agen() -> AsyncIterator[int]:
    yield 1


class Ready:
    """An awaitable that is not a coroutine (and not callable)."""

    def __await__(self) -> Generator[None]:
        yield


@pytest.fixture(autouse=True)
def _reset_calls() -> None:
    calls.clear()


# -- coroutine objects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "start"),
    [
        ("start_soon", lambda tm, coro: tm.start_soon(coro)),
        ("start_soon_named", lambda tm, coro: tm.start_soon_named("n", coro)),
        ("add_task", lambda tm, coro: tm.add_task(coro)),
    ],
)
async def test_a_coroutine_object_is_refused_and_closed_without_a_never_awaited_warning(
    method: str, start: Callable[[TaskManager, Any], object]
) -> None:
    async with trio_bg.open_task_manager() as tm:
        before = tm.statistics()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            coro = work(1)
            with pytest.raises(
                TypeError,
                match=exact(
                    f"{method}() takes a function, not a coroutine object: "
                    f"write {method}(work, *args), not {method}(work(*args))"
                ),
            ):
                start(tm, coro)
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
            del coro
            gc.collect()
        assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
        assert tm.statistics() == before
        assert tm.active_count == 0
    assert calls == []


def test_the_warning_check_above_would_see_a_never_awaited_coroutine() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coro = work(1)
        del coro
        gc.collect()
    assert [str(w.message) for w in caught] == ["coroutine 'work' was never awaited"]


# -- bad starts -------------------------------------------------------------------------------

BAD_STARTS: list[tuple[str, Callable[[TaskManager], object], type[Exception], str]] = [
    (
        "non-callable",
        lambda tm: tm.start_soon(42),  # type: ignore[call-overload]
        TypeError,
        "start_soon() takes a function, got 'int'",
    ),
    (
        "empty name",
        lambda tm: tm.start_soon_named("", work),
        ValueError,
        "task name must be a non-empty string",
    ),
    (
        "non-str name",
        lambda tm: tm.start_soon_named(7, work),  # type: ignore[call-overload]
        TypeError,
        "task name must be a str, got int",
    ),
    (
        "negative timeout",
        lambda tm: tm.start_soon(work, timeout=-1),
        ValueError,
        "timeout must be a non-negative number of seconds, got -1",
    ),
    (
        "NaN timeout",
        lambda tm: tm.start_soon(work, timeout=math.nan),
        ValueError,
        "timeout must be a non-negative number of seconds, got nan",
    ),
    (
        "non-number timeout",
        lambda tm: tm.start_soon(work, timeout="3"),  # type: ignore[call-overload]
        TypeError,
        "timeout must be a number of seconds, got str",
    ),
    (
        "retry not a Retry",
        lambda tm: tm.start_soon(work, retry=3),  # type: ignore[call-overload]
        TypeError,
        "retry must be a trio_bg.Retry or None, got int",
    ),
    (
        "on_error not callable",
        lambda tm: tm.start_soon(work, on_error="log"),  # type: ignore[call-overload]
        TypeError,
        "on_error must be callable or None, got str",
    ),
    (
        "non-str key",
        lambda tm: tm.start_soon(work, key=5),  # type: ignore[call-overload]
        TypeError,
        "key must be a str or None, got int",
    ),
    (
        "async generator function",
        lambda tm: tm.start_soon(agen),
        TypeError,
        "start_soon() takes a function, not a generator function 'agen': "
        "wrap it in a function that consumes it",
    ),
    (
        "awaitable that is not a coroutine",
        lambda tm: tm.start_soon_named("n", Ready()),  # type: ignore[call-overload]
        TypeError,
        "start_soon_named() takes a function, not an awaitable 'Ready'",
    ),
]


@pytest.mark.parametrize(
    ("start", "error", "message"),
    [pytest.param(start, error, message, id=case) for case, start, error, message in BAD_STARTS],
)
async def test_a_bad_start_raises_an_exact_message_and_starts_nothing(
    start: Callable[[TaskManager], object], error: type[Exception], message: str
) -> None:
    async with trio_bg.open_task_manager() as tm:
        keep = tm.start_soon(trio.sleep, 0)
        before = tm.statistics()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(error, match=exact(message)):
                start(tm)
            gc.collect()
        assert [str(w.message) for w in caught] == []
        assert tm.statistics() == before  # not even counted as rejected: it is a bug, not load
        assert tm.active_tasks == (keep,)
        await trio.testing.wait_all_tasks_blocked()
    assert calls == []


# -- bad options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_running": 0}, ValueError, "max_running must be None or >= 1, got 0"),
        ({"max_pending": -1}, ValueError, "max_pending must be None or >= 0, got -1"),
        ({"max_running": "2"}, TypeError, "max_running must be an int or None, got str"),
        ({"max_threads": 0}, ValueError, "max_threads must be None or >= 1, got 0"),
        (
            {"grace_period": -1},
            ValueError,
            "grace_period must be a non-negative number of seconds, got -1",
        ),
        (
            {"grace_period": 2, "shield_timeout": 1},
            ValueError,
            "shield_timeout (1.0) must be >= grace_period (2.0): "
            "shielded tasks get at least the grace period",
        ),
        ({"on_error": 5}, TypeError, "on_error must be callable or None, got int"),
        ({"name": ""}, ValueError, "task manager name must be a non-empty string"),
        ({"name": 3}, TypeError, "task manager name must be a str, got int"),
    ],
)
def test_bad_manager_options_raise_exact_messages(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=exact(message)):
        trio_bg.open_task_manager(**options)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"attempts": 0}, ValueError, "Retry attempts must be >= 1, got 0"),
        ({"attempts": 1.5}, TypeError, "Retry attempts must be an int, got float"),
        (
            {"on": (KeyboardInterrupt,)},
            TypeError,
            "Retry on must hold Exception subclasses, got <class 'KeyboardInterrupt'>",
        ),
        ({"on": (int,)}, TypeError, "Retry on must hold Exception subclasses, got <class 'int'>"),
        ({"on": ()}, ValueError, "Retry on must be a non-empty tuple of Exception subclasses"),
        ({"backoff": -1}, ValueError, "Retry backoff must be a finite number >= 0, got -1"),
        (
            {"max_backoff": math.inf},
            ValueError,
            "Retry max_backoff must be a finite number >= 0, got inf",
        ),
    ],
)
def test_bad_retry_policies_raise_exact_messages(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=exact(message)):
        Retry(**options)


# -- wrong use of the objects -----------------------------------------------------------------


def test_with_instead_of_async_with_on_open_task_manager() -> None:
    with (
        pytest.raises(
            TypeError, match=exact("use 'async with trio_bg.open_task_manager(...)', not 'with'")
        ),
        trio_bg.open_task_manager(),  # type: ignore[attr-defined]
    ):
        pytest.fail("unreachable")  # pragma: no cover


async def test_with_instead_of_async_with_on_open_group() -> None:
    async with trio_bg.open_task_manager() as tm:
        message = exact("use 'async with tm.open_group(...)', not 'with'")
        with pytest.raises(TypeError, match=message), tm.open_group("g"):
            pytest.fail("unreachable")  # pragma: no cover


def test_the_classes_have_no_public_constructor() -> None:
    with pytest.raises(
        TypeError,
        match=exact(
            "trio_bg.TaskManager has no public constructor; "
            "use 'async with trio_bg.open_task_manager() as tm'"
        ),
    ):
        TaskManager()
    with pytest.raises(
        TypeError,
        match=exact("trio_bg.TaskGroup has no public constructor; use tm.open_group(name)"),
    ):
        trio_bg.TaskGroup()


async def test_open_task_manager_cannot_be_entered_twice() -> None:
    scope = trio_bg.open_task_manager()
    async with scope:
        pass
    with pytest.raises(RuntimeError, match=exact("this open_task_manager() was already entered")):
        async with scope:
            pass  # pragma: no cover


async def test_start_after_close_is_rejected_counted_and_never_calls_the_function() -> None:
    async with trio_bg.open_task_manager(name="shop") as tm:
        pass
    before = tm.statistics()
    with pytest.raises(TaskRejected, match=exact("task manager 'shop' is closed to new tasks")):
        tm.start_soon(work, 1)
    with pytest.raises(TaskRejected, match=exact("task manager 'shop' is closed to new tasks")):
        tm.start_soon_named("late", work, 2)
    after = tm.statistics()
    assert after.rejected == before.rejected + 2
    assert after.started == before.started == 0
    await trio.testing.wait_all_tasks_blocked()
    assert calls == []


async def test_group_misuse() -> None:
    async with trio_bg.open_task_manager() as tm:
        with pytest.raises(ValueError, match=exact("group name must be a non-empty string")):
            tm.open_group("")
        with pytest.raises(TypeError, match=exact("group name must be a str, got int")):
            tm.open_group(5)  # type: ignore[arg-type]

        group = tm.open_group("g")
        with pytest.raises(
            RuntimeError, match=exact("enter group 'g' with 'async with' before starting tasks")
        ):
            group.start_soon(work)
        async with group:
            group.start_soon(work, "inside")
        with pytest.raises(RuntimeError, match=exact("group 'g' was already entered")):
            async with group:
                pass  # pragma: no cover

        before = tm.statistics()
        with pytest.raises(TaskRejected, match=exact("group 'g' is closed to new tasks")):
            group.start_soon(work, "after")
        with pytest.raises(TaskRejected, match=exact("group 'g' is closed to new tasks")):
            group.add_task(work, "after")
        after = tm.statistics()
        assert after.started == before.started
        assert after.rejected == before.rejected + 2

        # A coroutine object given to a closed group is a TypeError, and it is closed.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            coro = work("coro")
            with pytest.raises(TypeError, match=r"^start_soon\(\) takes a function, not a corou"):
                group.start_soon(coro)
            assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED
            del coro
            gc.collect()
        assert caught == []
        assert tm.statistics() == after
    assert calls == ["inside"]


async def test_a_sync_function_that_returns_a_coroutine_fails_the_task() -> None:
    def returns_coroutine() -> object:
        return work("never")

    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon_named("wrong", returns_coroutine)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            # trio.to_thread.run_sync closes the coroutine and raises this itself
            with pytest.raises(
                TypeError,
                match=r"^Trio expected a sync function, but '.*returns_coroutine' appears to be "
                r"asynchronous$",
            ):
                await handle.get()
            gc.collect()
        assert caught == []
    assert handle.state is trio_bg.TaskState.FAILED
    assert calls == []


async def test_request_only_timing_points_are_refused_on_a_plain_manager() -> None:
    async with trio_bg.open_task_manager(name="plain") as tm:
        with pytest.raises(
            RuntimeError,
            match=exact(
                "task manager 'plain' has no timing points: after_route tasks belong to a "
                "request manager (trio_bg.asgi.request_tasks(scope))"
            ),
        ):
            _ = tm.after_route


# -- misuse that says what to do instead ----------------------------------------------------


async def _app(scope: object, receive: object, send: object) -> None:
    del scope, receive, send


def test_a_middleware_name_of_the_wrong_kind_is_a_type_error() -> None:
    with pytest.raises(TypeError, match=exact("task manager name must be a str, got int")):
        TaskMiddleware(_app, name=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=exact("task manager name must be a non-empty string")):
        TaskMiddleware(_app, name="")


def test_using_the_context_as_the_manager_says_what_to_do() -> None:
    context = trio_bg.open_task_manager()
    with pytest.raises(
        AttributeError,
        match=exact(
            "'TaskManagerContext' object has no attribute 'start_soon_named': "
            "open_task_manager() returns an async context manager; the manager is what "
            "'async with trio_bg.open_task_manager() as tm' gives you"
        ),
    ):
        context.start_soon_named  # type: ignore[attr-defined]  # noqa: B018


class QuartLikeRequest:
    """Not a mapping: what Quart's ``request`` is (its scope is ``request.scope``)."""

    def __init__(self) -> None:
        self.scope: dict[str, object] = {}


@pytest.mark.parametrize("lookup", [request_tasks, app_tasks])
def test_a_request_object_instead_of_its_scope_says_what_to_pass(lookup: object) -> None:
    name = getattr(lookup, "__name__")  # noqa: B009
    with pytest.raises(
        TypeError,
        match=exact(
            f"{name}() takes the ASGI scope (a mapping; in Quart pass request.scope), "
            "got QuartLikeRequest"
        ),
    ):
        lookup(QuartLikeRequest())  # type: ignore[operator]
