"""serve(): Hypercorn's trio worker in-process, with SIGTERM and SIGINT made graceful (and a
third signal that ends a process a stuck task keeps alive)."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, NoReturn, cast

import trio

from ._core import _registry
from ._core._checks import check_seconds
from ._core._closing import STUCK_AFTER, STUCK_INTERVAL
from ._core._gc import tuned_gc
from ._core._log import logger
from ._core._state import TaskState
from ._core._threads import abandoned_threads
from ._core._trio_only import require_trio
from ._shutdown_notice import announce_shutdown, clear_shutdown_notice
from .asgi._advice import SERVE_UNDER_TRIO

if TYPE_CHECKING:
    from hypercorn.config import Config

    from ._core._handle import TaskHandle

_SIGNALS = (signal.SIGTERM, signal.SIGINT)

GC_THRESHOLD: tuple[int, int, int] | None = (700, 10, 1000)
"""serve()'s default ``gc_threshold``: CPython's young generations as they are, and a full
collection only after 1,000 middle-generation ones (CPython: 10). Measured with ~5,000 in-flight
2 s tasks (benchmarks, case d): no full collection in the 10 s window instead of 4 (up to 131 ms
each), and p99 42 ms instead of 141 ms; a larger first threshold (5000, 20, 1000) made the middle
collections long (94 ms) and p99 worse (91 ms)."""


async def serve(
    app: Callable[..., Awaitable[None]],
    bind: str | Sequence[str] = "127.0.0.1:8000",
    *,
    config: Config | None = None,
    graceful_timeout: float | None = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    handle_signals: bool = True,
    gc_freeze: bool = True,
    gc_threshold: tuple[int, int, int] | None = GC_THRESHOLD,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an ASGI app with Hypercorn's trio worker in this process until asked to stop.

    SIGTERM and SIGINT start a graceful shutdown, announced first (the dashboard's event streams
    send their last ``shutdown`` event and end, so an open tab holds nothing; so does the end of
    ``shutdown_trigger``): Hypercorn stops accepting, gives open requests
    ``graceful_timeout`` seconds (their request tasks run on meanwhile), then cancels them
    (unshielded request tasks stop, shielded ones get the middleware's ``shield_timeout``); then
    the ASGI lifespan shutdown closes the app task manager with its ``grace_period`` and
    ``shield_timeout``. A second signal cancels the server at once (shielded tasks still get their
    ``shield_timeout``); if it has not stopped a second later, a WARNING names the trio_bg tasks
    still running and where they wait, again every 10 s. A third signal ends the process at once:
    an ERROR names those tasks, the log handlers are flushed, and ``os._exit(128 + signal
    number)`` skips everything still pending (a task that shields itself or ignores cancellation
    would otherwise keep the process alive: trio cannot return from the run while it holds one).
    Hypercorn's own worker, by contrast, dies at once on a SIGTERM sent straight to it.

    Args:
        app: the ASGI app, usually wrapped in :class:`trio_bg.asgi.TaskMiddleware`.
        bind: ``"host:port"`` or several; port 0 picks a free port.
        config: a full Hypercorn ``Config`` (then ``bind`` is ignored).
        graceful_timeout: seconds open requests get after the shutdown began.
        shutdown_trigger: an async callable; when it returns, a graceful shutdown starts.
        handle_signals: install the SIGTERM/SIGINT handlers (main thread only).
        gc_freeze: once the app has started (lifespan startup done), ``gc.collect()`` and
            ``gc.freeze()`` the start-up objects so full collections no longer walk them.
        gc_threshold: ``gc.set_threshold(*gc_threshold)`` while serving (None: leave it). The
            default makes full collections rare; see ``docs/benchmarks.md`` for the measurements.
            Both settings are restored when the server stops.
        task_status: ``nursery.start(serve, ...)`` gets the bound addresses (``http://...``).

    Raises:
        TypeError, ValueError: an argument of the wrong kind or value, before any socket is
            opened.

    Cancelling the caller cancels the server without a graceful shutdown; the signal handlers
    stay until the server has stopped.
    """
    require_trio(SERVE_UNDER_TRIO)
    import hypercorn.trio
    from hypercorn.config import Config

    _check_arguments(app, bind, config, graceful_timeout, shutdown_trigger, gc_threshold, Config)

    # Hypercorn's signature also admits WSGI apps, whose types are partly unknown to pyright.
    hypercorn_serve = cast(
        "Callable[..., Awaitable[None]]",
        hypercorn.trio.serve,  # pyright: ignore[reportUnknownMemberType]
    )

    if config is None:
        config = Config()
        config.bind = [bind] if isinstance(bind, str) else list(bind)
    if graceful_timeout is not None:
        config.graceful_timeout = graceful_timeout
    shutdown = trio.Event()
    server_scope = trio.CancelScope()
    clear_shutdown_notice()  # a server that stopped earlier in this run announced its own stop
    async with trio.open_nursery() as nursery:
        signals_scope: trio.CancelScope | None = None
        grace = float(config.graceful_timeout)
        if handle_signals:
            signals = functools.partial(_signals, shutdown, server_scope, requests_grace=grace)
            signals_scope = await nursery.start(signals)
        if shutdown_trigger is not None:
            nursery.start_soon(_trigger, shutdown_trigger, shutdown, grace)
        try:
            with server_scope, ExitStack() as stack:
                async with trio.open_nursery() as server_nursery:
                    run = functools.partial(
                        hypercorn_serve, app, config, shutdown_trigger=shutdown.wait, mode="asgi"
                    )
                    binds: list[str] = await server_nursery.start(run)
                    stack.enter_context(tuned_gc(freeze=gc_freeze, threshold=gc_threshold))
                    task_status.started(binds)
        finally:
            nursery.cancel_scope.cancel()
            if signals_scope is not None:  # shielded, so that it outlives an outer cancellation
                signals_scope.cancel()
    logger.info("server stopped")


def _check_arguments(
    app: object,
    bind: object,
    config: object,
    graceful_timeout: object,
    shutdown_trigger: object,
    gc_threshold: object,
    config_class: type[Config],
) -> None:
    """serve()'s arguments: TypeError or ValueError with an exact message, before any socket."""
    if not callable(app):
        raise TypeError(f"serve() takes an ASGI app, got {type(app).__name__!r}")
    binds: object = [bind] if isinstance(bind, str) else bind
    if not isinstance(binds, list | tuple) or not all(
        isinstance(b, str) for b in cast("list[object]", binds)
    ):
        raise TypeError(f"bind must be a str or a sequence of str, got {type(bind).__name__}")
    if not binds or not all(cast("list[str]", binds)):
        raise ValueError(f"bind must name at least one host:port, got {bind!r}")
    if config is not None and not isinstance(config, config_class):
        raise TypeError(f"config must be a hypercorn Config or None, got {type(config).__name__}")
    if graceful_timeout is not None:
        check_seconds("graceful_timeout", graceful_timeout, allow_inf=False)
    if shutdown_trigger is not None and not callable(shutdown_trigger):
        raise TypeError(
            f"shutdown_trigger must be callable or None, got {type(shutdown_trigger).__name__}"
        )
    if gc_threshold is not None:
        counts: tuple[object, ...] = (
            cast("tuple[object, ...]", gc_threshold) if isinstance(gc_threshold, tuple) else ()
        )
        if len(counts) != 3 or any(type(n) is not int for n in counts):
            raise TypeError(f"gc_threshold must be a tuple of 3 ints or None, got {gc_threshold!r}")
        if any(cast(int, n) < 0 for n in counts):
            raise ValueError(f"gc_threshold must hold ints >= 0, got {gc_threshold!r}")


async def _trigger(
    wait: Callable[[], Awaitable[Any]], shutdown: trio.Event, requests_grace: float
) -> None:
    await wait()
    announce_shutdown("shutdown trigger", requests_grace=requests_grace)
    shutdown.set()


async def _signals(
    shutdown: trio.Event,
    server_scope: trio.CancelScope,
    *,
    requests_grace: float,
    task_status: trio.TaskStatus[trio.CancelScope] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Receive SIGTERM and SIGINT until the server has stopped: the first announces the shutdown
    (:func:`~trio_bg._shutdown_notice.announce_shutdown`: the dashboard's event streams say
    goodbye and end) and starts the graceful one, the second cancels ``server_scope`` (noting the
    unshielded tasks it may drop, :func:`forced_drops`), the third ends the process
    (:func:`_exit`).

    Runs in a shielded scope of its own, given to ``task_status``, which ``serve`` cancels when
    the server has stopped; an outer cancellation does not end it, so a third signal still works
    when a stuck task keeps the run alive.
    """
    with trio.CancelScope(shield=True) as own, trio.open_signal_receiver(*_SIGNALS) as signals:
        task_status.started(own)
        stopped_at = report_at = math.inf
        while True:
            signum: int | None = None
            with trio.move_on_at(report_at):
                signum = await signals.__anext__()
            if signum is None:  # the server has not stopped since the second signal
                logger.warning(
                    "the server was told to stop %.1f s ago and still waits for %s; SIGINT or "
                    "SIGTERM again ends the process at once",
                    trio.current_time() - stopped_at, _still_running(),
                )  # fmt: skip
                report_at = trio.current_time() + STUCK_INTERVAL
                continue
            name = signal.Signals(signum).name
            if not shutdown.is_set():
                logger.warning("%s received: shutting down gracefully (again to stop now)", name)
                announce_shutdown(name, requests_grace=requests_grace)
                shutdown.set()
            elif not server_scope.cancel_called:
                logger.warning(
                    "%s received again: stopping now (a third time to exit the process)", name
                )
                _FORCED.set(_unshielded_tasks())
                server_scope.cancel()
                stopped_at = trio.current_time()
                report_at = stopped_at + STUCK_AFTER
            else:
                _exit(name, 128 + signum, trio.current_time() - stopped_at)


EXIT_DROPPED = 75
"""The exit status of ``python -m trio_bg serve`` when a forced stop (a second SIGTERM or SIGINT)
cancelled unshielded tasks that were running: work was lost, and a process manager should know
(``EX_TEMPFAIL`` of ``sysexits.h``; systemd shows ``status=75/TEMPFAIL``). A graceful stop exits
0 even if the app's own ``grace_period`` cancelled tasks (that is the policy it chose, and the
shutdown report names them); a third signal exits ``128 + signal number``."""

_FORCED: trio.lowlevel.RunVar[tuple[TaskHandle[Any], ...]] = trio.lowlevel.RunVar(
    "trio_bg_forced_stop", default=()
)


def _unshielded_tasks() -> tuple[TaskHandle[Any], ...]:
    return tuple(
        handle
        for manager in tuple(_registry.open_managers)
        for handle in manager.active_tasks
        if not handle.shielded
    )


def forced_drops() -> list[TaskHandle[Any]]:
    """The unshielded tasks that were running when a second signal forced the stop, and ended
    cancelled: the work that stop dropped (empty if no stop was forced in this trio run)."""
    return [handle for handle in _FORCED.get() if handle.state is TaskState.CANCELLED]


def _exit(name: str, code: int, waited: float) -> NoReturn:
    """End the process now with ``code``, after one ERROR naming what still runs.

    ``os._exit``: trio cannot leave its run while a task that ignores cancellation holds a
    nursery open, and ``sys.exit`` would wait for it; nothing pending runs (no ``finally``, no
    lifespan shutdown), so only the explicit third signal does this.
    """
    threads = abandoned_threads()
    logger.error(
        "%s received a third time: exiting with code %d, %.1f s after the server was told to "
        "stop, still waiting for %s%s",
        name, code, waited, _still_running(),
        f"; {threads} abandoned worker thread(s) running" if threads else "",
    )  # fmt: skip
    logging.shutdown()  # flushes every handler
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


MAX_NAMED = 20
"""The most tasks named in one line of the signal handler."""


def _still_running() -> str:
    """The trio_bg tasks active in every open manager, with where they wait, for a log line."""
    phrases: list[str] = []
    for manager in tuple(_registry.open_managers):
        points = manager.wait_points()
        for handle in manager.active_tasks:
            phrase = f"{handle.name!r} ({handle.id}, manager {manager.name!r})"
            point = points.get(handle.number)
            where = "" if point is None else point.text
            phrases.append(f"{phrase} waiting in {where}" if where else phrase)
    if not phrases:
        return (
            "no trio_bg task (something else ignores cancellation: a request handler, "
            "the app's lifespan)"
        )
    shown = "; ".join(phrases[:MAX_NAMED])
    more = len(phrases) - MAX_NAMED
    return f"{len(phrases)} task(s): {shown}" + (f"; and {more} more" if more > 0 else "")
