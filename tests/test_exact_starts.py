"""Arguments that cannot bind to the task's function fail at the start call, as a direct call
would: a TypeError naming the start method and the task, with Python's own reason, and nothing
created, counted, hooked or left un-awaited (pytest runs with filterwarnings=error)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_bg
from trio_bg import TaskHandle, TaskManager, TaskStarter, TaskStatistics
from trio_bg._core._callables import callable_name, check_arguments, fits
from trio_bg.asgi import TaskMiddleware, request_tasks

NOTHING = TaskStatistics(0, 0, 0, 0, 0, 0, 0)


def exact(message: str) -> str:
    return f"^{re.escape(message)}$"


# -- the callables -----------------------------------------------------------------------------


async def send_email(addr: str) -> str:
    await trio.lowlevel.checkpoint()
    return f"sent to {addr}"


def area(width: int, height: int) -> int:  # sync: runs in a worker thread
    return width * height


def render(page: str, *, size: int) -> str:
    return f"{page}@{size}"


class Mailer:
    async def send(self, addr: str, retries: int = 1) -> str:
        await trio.lowlevel.checkpoint()
        return f"{addr} x{retries}"


class AsyncGreeter:
    async def __call__(self, name: str) -> str:
        await trio.lowlevel.checkpoint()
        return f"hello {name}"


class Report:  # a class is a sync callable: it runs in a thread and returns the instance
    def __init__(self, month: int) -> None:
        self.month = month


class Empty:
    pass


# (what, fn, good arguments, the value they give, bad arguments, Python's reason for them)
KINDS: list[
    tuple[str, Callable[..., Any], tuple[Any, ...] | None, object, tuple[Any, ...], str]
] = [
    (
        "async function",
        send_email,
        ("a@b",),
        "sent to a@b",
        (),
        "send_email() missing 1 required positional argument: 'addr'",
    ),
    (
        "async function, too many",
        send_email,
        ("a@b",),
        "sent to a@b",
        ("a@b", "c@d"),
        "send_email() takes 1 positional argument but 2 were given",
    ),
    (
        "sync function",
        area,
        (2, 3),
        6,
        (2,),
        "area() missing 1 required positional argument: 'height'",
    ),
    (
        "sync partial",
        functools.partial(render, size=2),
        ("home",),
        "home@2",
        (),
        "render() missing 1 required positional argument: 'page'",
    ),
    (
        "sync function, keyword-only",
        render,
        None,  # no positional arguments make a good start
        None,
        ("home",),
        "render() missing 1 required keyword-only argument: 'size'",
    ),
    (
        "partial",
        functools.partial(send_email, "a@b"),
        (),
        "sent to a@b",
        ("c@d",),
        "send_email() takes 1 positional argument but 2 were given",
    ),
    (
        "partial with a keyword",
        functools.partial(send_email, addr="a@b"),
        (),
        "sent to a@b",
        ("c@d",),
        "send_email() got multiple values for argument 'addr'",
    ),
    (
        "bound method",
        Mailer().send,
        ("a@b", 3),
        "a@b x3",
        ("a@b", 3, 4),
        "Mailer.send() takes from 2 to 3 positional arguments but 4 were given",
    ),
    (
        "async __call__",
        AsyncGreeter(),
        ("ann",),
        "hello ann",
        (),
        "AsyncGreeter.__call__() missing 1 required positional argument: 'name'",
    ),
    (
        "class",
        Report,
        (5,),
        Report,  # an instance of it
        (),
        "Report.__init__() missing 1 required positional argument: 'month'",
    ),
    ("class without __init__", Empty, (), Empty, (1,), "Empty() takes no arguments"),
]
KIND_IDS = [kind[0] for kind in KINDS]


def direct_call_reason(fn: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """What Python itself says when ``fn(*args)`` is called (a coroutine it makes is closed)."""
    try:
        result = fn(*args)
    except TypeError as exc:
        return str(exc)
    if inspect.iscoroutine(result):
        result.close()
    raise AssertionError(f"{fn!r} accepted {args!r}")


@pytest.mark.parametrize(("what", "fn", "good", "value", "bad", "reason"), KINDS, ids=KIND_IDS)
def test_the_reason_is_pythons_own(
    what: str,
    fn: Callable[..., Any],
    good: tuple[Any, ...] | None,
    value: object,
    bad: tuple[Any, ...],
    reason: str,
) -> None:
    del what, good, value
    assert direct_call_reason(fn, bad) == reason


class Hooks(trio_bg.Instrument):
    """Notes every hook a manager calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def task_created(self, handle: TaskHandle[Any]) -> None:
        self.calls.append("task_created")

    def task_started(self, handle: TaskHandle[Any]) -> None:
        self.calls.append("task_started")

    def task_finished(self, handle: TaskHandle[Any]) -> None:
        self.calls.append("task_finished")

    def task_rejected(self, manager: TaskManager, name: str, reason: str) -> None:
        self.calls.append("task_rejected")


@contextmanager
def refused(
    manager: TaskManager, hooks: Hooks, method: str, name: str, reason: str
) -> Iterator[None]:
    """The start inside raises the exact TypeError; the manager is left as it was."""
    before = manager.statistics()
    calls = len(hooks.calls)
    active = manager.active_count
    with pytest.raises(TypeError, match=exact(f"{method}() cannot start {name!r}: {reason}")):
        yield
    assert manager.statistics() == before
    assert hooks.calls[calls:] == []
    assert manager.active_count == active


def name_of(fn: Callable[..., Any]) -> str:
    return callable_name(fn)


async def refuse_on_every_start(
    manager: TaskManager,
    starter: TaskStarter,
    hooks: Hooks,
    fn: Callable[..., Any],
    bad: tuple[Any, ...],
    reason: str,
) -> None:
    with refused(manager, hooks, "start_soon", name_of(fn), reason):
        starter.start_soon(fn, *bad)
    with refused(manager, hooks, "start_soon_named", "job", reason):
        starter.start_soon_named("job", fn, *bad)
    with refused(manager, hooks, "start_soon", name_of(fn), reason):
        starter.start_soon(fn, *bad, timeout=5, key="k")  # the options path too
    with refused(manager, hooks, "add_task", name_of(fn), reason):
        starter.add_task(fn, *bad)


@pytest.mark.parametrize(("what", "fn", "good", "value", "bad", "reason"), KINDS, ids=KIND_IDS)
async def test_manager_and_group_refuse_at_the_call_and_run_the_good_start(
    what: str,
    fn: Callable[..., Any],
    good: tuple[Any, ...] | None,
    value: object,
    bad: tuple[Any, ...],
    reason: str,
) -> None:
    del what
    hooks = Hooks()
    async with trio_bg.open_task_manager(instruments=[hooks]) as tm:
        await refuse_on_every_start(tm, tm, hooks, fn, bad, reason)
        assert tm.statistics() == NOTHING
        async with tm.open_group("g") as group:
            await refuse_on_every_start(tm, group, hooks, fn, bad, reason)
            assert group.handles == ()
            if good is None:
                return
            handle = group.start_soon(fn, *good)
        assert tm.statistics() == dataclasses.replace(NOTHING, started=1, succeeded=1)
    result = await handle.get()
    if isinstance(value, type):
        assert type(result) is value
    else:
        assert result == value


async def test_add_task_says_that_its_keywords_go_to_the_function() -> None:
    async def work(n: int) -> int:
        await trio.lowlevel.checkpoint()
        return n

    async with trio_bg.open_task_manager() as tm:
        with pytest.raises(
            TypeError,
            match=exact(
                "add_task() cannot start 'test_add_task_says_that_its_keywords_go_to_the_"
                "function.<locals>.work': "
                "test_add_task_says_that_its_keywords_go_to_the_function.<locals>.work() got an "
                "unexpected keyword argument 'timeout' (add_task() passes its keyword arguments "
                "to the function and takes no task options: for timeout=, use start_soon() or "
                "start_soon_named())"
            ),
        ):
            tm.add_task(work, 1, timeout=5)
        with pytest.raises(
            TypeError,
            match=exact(
                "add_task() cannot start 'test_add_task_says_that_its_keywords_go_to_the_"
                "function.<locals>.work': "
                "test_add_task_says_that_its_keywords_go_to_the_function.<locals>.work() got an "
                "unexpected keyword argument 'm'"
            ),
        ):
            tm.add_task(work, 1, m=5)  # not an option: no hint
        assert tm.statistics() == NOTHING
        assert await tm.add_task(work, n=3).get() == 3


async def test_add_task_passes_an_option_name_to_a_function_that_takes_it() -> None:
    def wait(*, timeout: float) -> float:  # in a worker thread
        return timeout

    def takes_any(**kwargs: object) -> dict[str, object]:
        return kwargs

    async with trio_bg.open_task_manager() as tm:
        assert await tm.add_task(wait, timeout=5).get() == 5
        assert await tm.add_task(takes_any, key="k").get() == {"key": "k"}


async def test_a_builtin_is_not_checked_at_the_call_and_fails_when_it_runs() -> None:
    async with trio_bg.open_task_manager() as tm:
        handle = tm.start_soon(time.sleep, 0, 1)  # type: ignore[call-overload]  # the mistake
        with pytest.raises(
            TypeError, match=r"^time\.sleep\(\) takes exactly one argument \(2 given\)$"
        ):
            await handle.get()
        assert await tm.start_soon(len, "abc").get() == 3


async def test_a_refused_start_from_a_worker_thread_raises_in_that_thread() -> None:
    async with trio_bg.open_task_manager() as tm:
        with pytest.raises(
            TypeError,
            match=exact(
                "start_soon() cannot start 'send_email': send_email() missing 1 required "
                "positional argument: 'addr'"
            ),
        ):
            await trio.to_thread.run_sync(lambda: tm.start_soon(send_email))  # type: ignore[call-overload]
        assert tm.statistics() == NOTHING


async def test_a_bad_start_is_refused_even_while_its_key_is_active() -> None:
    async with trio_bg.open_task_manager() as tm:
        first = tm.start_soon(send_email, "a@b", key="mail")
        with pytest.raises(TypeError, match=r"^start_soon\(\) cannot start 'send_email': "):
            tm.start_soon(send_email, key="mail")  # type: ignore[call-overload]
        assert tm.start_soon(send_email, "c@d", key="mail") is first
        await first.get()


async def test_defaults_varargs_and_wrappers_fit() -> None:
    async def defaults(a: int, b: int = 2, *, c: int = 3) -> int:
        await trio.lowlevel.checkpoint()
        return a + b + c

    def decorated(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await fn(*args, **kwargs)

        return wrapper

    async with trio_bg.open_task_manager() as tm:
        assert await tm.start_soon(defaults, 1).get() == 6
        assert await tm.start_soon(defaults, 1, 5).get() == 9
        assert await tm.add_task(defaults, 1, c=0).get() == 3
        # A wrapper takes anything, as a direct call of it would: the wrapped function fails
        # when it runs.
        handle = tm.start_soon(decorated(send_email), "a", "b")
        with pytest.raises(TypeError, match=r"takes 1 positional argument but 2 were given$"):
            await handle.get()


# -- on a request manager: immediate, after_route, after_response, add_task --------------------

Scope = MutableMapping[str, Any]


async def test_request_starts_refuse_at_the_call_before_the_response() -> None:
    hooks = Hooks()
    seen: dict[str, TaskStatistics] = {}
    ran: list[str] = []

    async def note(what: str) -> None:
        ran.append(what)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        tasks = request_tasks(scope)
        trio_bg.add_instrument(hooks)
        try:
            reason = "test_request_starts_refuse_at_the_call_before_the_response.<locals>.note() "
            missing = reason + "missing 1 required positional argument: 'what'"
            too_many = reason + "takes 1 positional argument but 2 were given"
            for starter in (tasks, tasks.after_route, tasks.after_response):
                name = name_of(note)
                with refused(tasks, hooks, "start_soon", name, missing):
                    starter.start_soon(note)  # type: ignore[call-overload]
                with refused(tasks, hooks, "start_soon_named", "n", too_many):
                    starter.start_soon_named("n", note, "a", "b")  # type: ignore[call-overload]
                with refused(
                    tasks,
                    hooks,
                    "add_task",
                    name,
                    reason + "got an unexpected keyword argument 'timeout' (add_task() passes "
                    "its keyword arguments to the function and takes no task options: for "
                    "timeout=, use start_soon() or start_soon_named())",
                ):
                    starter.add_task(note, "x", timeout=1)
        finally:
            trio_bg.remove_instrument(hooks)
        seen["request"] = tasks.statistics()
        tasks.after_response.start_soon(note, "after")
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    messages: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    await TaskMiddleware(app)(scope, receive, send)
    assert seen["request"] == NOTHING
    assert [m["type"] for m in messages] == ["http.response.start", "http.response.body"]
    assert ran == ["after"]


# -- the fast check agrees with inspect.signature -----------------------------------------------


@st.composite
def signatures(draw: st.DrawFn) -> tuple[str, list[str]]:
    """A ``def`` line with every kind of parameter, and the names it has."""
    posonly = [f"p{i}" for i in range(draw(st.integers(0, 2)))]
    plain = [f"a{i}" for i in range(draw(st.integers(0, 3)))]
    kwonly = [f"k{i}" for i in range(draw(st.integers(0, 2)))]
    varargs = draw(st.booleans())
    varkw = draw(st.booleans())
    positional = posonly + plain
    ndefaults = draw(st.integers(0, len(positional)))
    params = [
        name + ("=0" if i >= len(positional) - ndefaults else "")
        for i, name in enumerate(positional)
    ]
    if posonly:
        params.insert(len(posonly), "/")
    if varargs:
        params.append("*rest")
    elif kwonly:
        params.append("*")
    params += [name + ("=0" if draw(st.booleans()) else "") for name in kwonly]
    if varkw:
        params.append("**extra")
    return f"def f({', '.join(params)}): pass", positional + kwonly + ["rest", "extra", "z"]


@settings(max_examples=400, deadline=None)
@given(signatures(), st.data())
def test_the_fast_check_agrees_with_the_call_and_signature_bind(
    signature: tuple[str, list[str]], data: st.DataObject
) -> None:
    """The oracle is the call itself (the generated body is ``pass``); inspect.signature's bind
    agrees except where it is stricter than the call on Python 3.11: a positional-only name
    given as a keyword to a function with ``**kwargs`` (the call puts it in the ``**kwargs``)."""
    source, names = signature
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # a generated signature
    fn = namespace["f"]
    npos = data.draw(st.integers(0, 6), label="npos")
    keywords = data.draw(st.lists(st.sampled_from(names), unique=True, max_size=4), label="kw")
    args = tuple(range(npos))
    kwargs = dict.fromkeys(keywords, 0)
    reason = None
    try:
        fn(*args, **kwargs)
    except TypeError as exc:
        reason = str(exc)
    assert fits(fn, npos, kwargs) is (reason is None), source
    try:
        inspect.signature(fn).bind(*args, **kwargs)
    except TypeError:
        posonly_in_varkw = "**" in source and any(k.startswith("p") for k in kwargs)
        assert reason is not None or posonly_in_varkw, source
    else:
        assert reason is None, source
    partial = functools.partial(fn, **kwargs) if kwargs else fn
    if reason is None:
        check_arguments("start_soon", "f", partial, args)
        return
    with pytest.raises(TypeError, match=exact(f"start_soon() cannot start 'f': {reason}")):
        check_arguments("start_soon", "f", partial, args)


@pytest.mark.parametrize("method", ["start_soon", "start_soon_named"])
async def test_keywords_for_the_function_point_to_partial_and_add_task(method: str) -> None:
    """The reverse of ``add_task(fn, timeout=...)``: a keyword meant for the function, given to
    a start method whose keywords are task options, names the method and the two ways to pass
    it, for every kind of starter; nothing is started, held or counted."""

    async def send(address: str, *, order_id: int) -> None:
        await trio.lowlevel.checkpoint()

    message = exact(
        f"{method}() got an unexpected keyword argument 'order_id' ({method}() takes task "
        "options as keywords, not the function's: for order_id=, use "
        "functools.partial(send, order_id=...) or add_task())"
    )

    def misuse(starter: trio_bg.TaskStarter) -> None:
        start: Any = getattr(starter, method)
        args = ("email", send, "a@x") if method == "start_soon_named" else (send, "a@x")
        with pytest.raises(TypeError, match=message):
            start(*args, order_id=1)

    async with trio_bg.open_task_manager() as tm:
        misuse(tm)
        async with tm.open_group("g") as group:
            misuse(group)
        assert tm.statistics() == NOTHING

    seen: dict[str, trio_bg.TaskStatistics] = {}

    async def app(scope: Scope, receive: Any, send_message: Any) -> None:
        tasks = request_tasks(scope)
        for starter in (tasks, tasks.after_route, tasks.after_response):
            misuse(starter)
        seen["request"] = tasks.statistics()
        await send_message({"type": "http.response.start", "status": 204, "headers": []})
        await send_message({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def ignore(message: dict[str, object]) -> None:
        return None

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    await TaskMiddleware(app)(scope, receive, ignore)
    assert seen["request"] == NOTHING
