"""What kind of callable a task is given: async or sync, its default name, misuse checks, and
whether the arguments of a start fit its parameters."""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any, cast

_CO_COROUTINE = inspect.CO_COROUTINE


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """True when calling ``fn`` returns a coroutine to await, False when it runs synchronously.

    Sees through ``functools.partial`` and detects objects with an ``async def __call__``.
    """
    if type(fn) is types.FunctionType:  # the hot path: a plain ``def`` or ``async def``
        return bool(fn.__code__.co_flags & _CO_COROUTINE)
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isfunction(fn) or inspect.ismethod(fn) or isinstance(fn, type):
        return False
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def callable_name(fn: Callable[..., Any]) -> str:
    """The default task name: the function's qualified name."""
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return name
    while isinstance(fn, functools.partial):
        fn = fn.func
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return name
    return type(fn).__qualname__


def reject_non_function(method: str, fn: object) -> None:
    """Raise TypeError for what cannot be a task function; close a coroutine object first.

    Called only when ``fn`` is not a plain function, so the common case costs nothing.
    """
    if inspect.iscoroutine(fn):
        qualname = fn.__qualname__
        fn.close()  # no "coroutine ... was never awaited" warning
        raise TypeError(
            f"{method}() takes a function, not a coroutine object: "
            f"write {method}({qualname}, *args), not {method}({qualname}(*args))"
        )
    if inspect.isawaitable(fn):
        raise TypeError(f"{method}() takes a function, not an awaitable {type(fn).__name__!r}")
    if not callable(fn):
        raise TypeError(f"{method}() takes a function, got {type(fn).__name__!r}")
    target: object = fn
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
        raise TypeError(
            f"{method}() takes a function, not a generator function "
            f"{callable_name(fn)!r}: wrap it in a function that consumes it"
        )


# -- do the arguments fit? ----------------------------------------------------------------------

_CO_VARARGS = inspect.CO_VARARGS
_CO_VARKEYWORDS = inspect.CO_VARKEYWORDS
_NO_KEYWORDS: dict[str, Any] = {}
_START_OPTIONS = frozenset({"shield", "timeout", "retry", "on_error", "key", "always"})


def check_arguments(method: str, name: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Raise TypeError if calling ``fn(*args)`` would fail to bind its arguments.

    The message names the start method and the task, then gives Python's own reason:
    ``start_soon() cannot start 'send_email': send_email() missing 1 required positional
    argument: 'addr'``. Sees through ``functools.partial`` (whose keywords count), bound methods,
    objects with a Python ``__call__`` and classes with a Python ``__init__`` / ``__new__``; a
    callable whose parameters cannot be read this way (a builtin, a C callable) is not checked.

    The manager calls it only when a plain function's positional parameters are not filled
    exactly by ``args`` (or for any other kind of callable): the per-task cost of the common case
    is the two comparisons in ``_spawn``.
    """
    if isinstance(fn, types.MethodType):
        # The usual bound method, filled by position, checked inline: far cheaper than
        # through _unwrap (docs/performance.md).
        func = fn.__func__
        if type(func) is types.FunctionType:
            code = func.__code__
            if code.co_argcount == len(args) + 1 and not code.co_kwonlyargcount:
                return
    target, npos, kwargs = _unwrap(fn, len(args))
    if type(target) is types.FunctionType:
        if fits(target, npos, kwargs):
            return
        reason = _call_error(target, npos, kwargs)
    elif isinstance(target, type):
        reason = _class_error(target, npos, kwargs)
    else:
        return
    if reason is None:
        return
    if method == "add_task":
        options = sorted(key for key in kwargs if key in _START_OPTIONS)
        if options and "keyword argument" in reason:
            reason += (
                f" (add_task() passes its keyword arguments to the function and takes no task "
                f"options: for {options[0]}=, use start_soon() or start_soon_named())"
            )
    raise TypeError(f"{method}() cannot start {name!r}: {reason}")


def _unwrap(fn: Callable[..., Any], npos: int) -> tuple[Callable[..., Any], int, dict[str, Any]]:
    """The Python function (or class) that a call of ``fn`` with ``npos`` positional arguments
    binds its arguments to, how many positional arguments it gets (a partial's own, a bound
    method's ``self``, a callable object's ``self`` added) and the keywords (a partial's).

    Counts, not the arguments: binding depends only on how many there are and on the keywords'
    names, and no tuple is built for a start that fits.
    """
    kwargs = _NO_KEYWORDS
    while True:
        if isinstance(fn, functools.partial):
            if fn.keywords:
                kwargs = {**fn.keywords, **kwargs}
            npos += len(fn.args)
            fn = fn.func
        elif isinstance(fn, types.MethodType):
            npos += 1
            fn = fn.__func__
        elif type(fn) is types.FunctionType or isinstance(fn, type):
            return fn, npos, kwargs
        else:
            call: object = getattr(type(fn), "__call__", None)  # noqa: B004 - the method
            if not isinstance(call, types.FunctionType):
                return fn, npos, kwargs  # a builtin or C callable: not checked
            npos += 1
            fn = call


def fits(fn: types.FunctionType, npos: int, kwargs: Mapping[str, object]) -> bool:
    """Would ``fn`` bind ``npos`` positional arguments and the keywords ``kwargs``?

    Read from the code object and the defaults, as CPython binds a call; agrees with
    ``inspect.signature(fn).bind`` (a property test checks it) at a fraction of its cost.
    """
    code = fn.__code__
    argcount = code.co_argcount
    kwonly = code.co_kwonlyargcount
    if npos == argcount and not kwonly and not kwargs:
        return True  # every parameter filled by position: a bound method's usual start
    flags = code.co_flags
    if npos > argcount and not flags & _CO_VARARGS:
        return False
    names = code.co_varnames
    posonly = code.co_posonlyargcount
    if kwargs:
        named = names[posonly : argcount + kwonly]  # what a keyword may name
        for key in kwargs:
            if key in named:
                position = posonly + named.index(key)
                if position < argcount and position < npos:
                    return False  # given twice
            elif not flags & _CO_VARKEYWORDS:
                return False  # unknown, or positional-only
    defaults = fn.__defaults__
    required = argcount - (len(defaults) if defaults else 0)
    for position in range(npos, required):
        if position < posonly or names[position] not in kwargs:
            return False
    if kwonly:
        kwdefaults = fn.__kwdefaults__ or _NO_KEYWORDS
        for key in names[argcount : argcount + kwonly]:
            if key not in kwargs and key not in kwdefaults:
                return False
    return True


def _call_error(fn: types.FunctionType, npos: int, kwargs: dict[str, Any]) -> str | None:
    """Python's own message for calling ``fn`` with ``npos`` positional arguments and
    ``kwargs``, got by calling a stub with the same parameters, names and defaults (its body is
    ``pass``: nothing of the function runs)."""
    code = fn.__code__
    names = code.co_varnames
    argcount = code.co_argcount
    posonly = code.co_posonlyargcount
    kwonly = code.co_kwonlyargcount
    params = list(names[:argcount])
    if posonly:
        params.insert(posonly, "/")
    extra = argcount + kwonly
    if code.co_flags & _CO_VARARGS:
        params.append(f"*{names[extra]}")
        extra += 1
    elif kwonly:
        params.append("*")
    params.extend(names[argcount : argcount + kwonly])
    if code.co_flags & _CO_VARKEYWORDS:
        params.append(f"**{names[extra]}")
    namespace: dict[str, Any] = {}
    try:
        exec(f"def stub({', '.join(params)}): pass", namespace)  # the names come from a code object
    except SyntaxError:  # pragma: no cover - a code object made by hand
        return f"{code.co_qualname}() cannot take these arguments"
    stub = cast("types.FunctionType", namespace["stub"])
    stub.__code__ = stub.__code__.replace(co_name=code.co_name, co_qualname=code.co_qualname)
    stub.__name__ = fn.__name__
    stub.__qualname__ = fn.__qualname__  # what CPython's message names
    stub.__defaults__ = fn.__defaults__
    stub.__kwdefaults__ = fn.__kwdefaults__
    try:
        stub(*(None,) * npos, **kwargs)
    except TypeError as exc:
        return str(exc)
    return None  # pragma: no cover - fits() said no: they disagree, so let the call decide


def _class_error(cls: type, npos: int, kwargs: dict[str, Any]) -> str | None:
    """The reason ``cls(*args, **kwargs)`` would fail to bind, for a class whose ``__new__`` and
    ``__init__`` are Python functions or object's own; None when it fits or cannot be told."""
    if type(cls).__call__ is not type.__call__:  # a metaclass decides the call
        return None
    new: object = cls.__new__
    init: object = getattr(cls, "__init__")  # noqa: B009 - mypy refuses cls.__init__
    if new is object.__new__ and init is object.__init__:
        return f"{cls.__qualname__}() takes no arguments" if npos or kwargs else None
    for method in (new, init):
        if method is object.__new__ or method is object.__init__:
            continue  # object's own ignores the arguments when the other one is overridden
        if not isinstance(method, types.FunctionType):
            return None  # a C __new__ or __init__ (a builtin base class): not checked
        if not fits(method, npos + 1, kwargs):  # + the class, or the instance
            return _call_error(method, npos + 1, kwargs)
    return None
