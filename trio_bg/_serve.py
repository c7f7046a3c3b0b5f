"""serve(): Hypercorn's trio worker in-process, with SIGTERM and SIGINT made graceful."""

from __future__ import annotations

import functools
import signal
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any, cast

import trio

from ._checks import check_seconds
from ._gc import tuned_gc
from ._log import logger

if TYPE_CHECKING:
    from hypercorn.config import Config

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

    SIGTERM and SIGINT start a graceful shutdown: Hypercorn stops accepting, gives open requests
    ``graceful_timeout`` seconds (their request tasks run on meanwhile), then cancels them
    (unshielded request tasks stop, shielded ones get the middleware's ``shield_timeout``); then
    the ASGI lifespan shutdown closes the app task manager with its ``grace_period`` and
    ``shield_timeout``. A second signal cancels the server at once (shielded tasks still get their
    ``shield_timeout``). Hypercorn's own worker, by contrast, dies at once on a SIGTERM sent
    straight to it.

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

    Cancelling the caller cancels the server without a graceful shutdown.
    """
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
    async with trio.open_nursery() as nursery:
        if handle_signals:
            await nursery.start(_graceful_signals, shutdown, nursery.cancel_scope)
        if shutdown_trigger is not None:
            nursery.start_soon(_trigger, shutdown_trigger, shutdown)
        with ExitStack() as stack:
            async with trio.open_nursery() as server_nursery:
                binds: list[str] = await server_nursery.start(
                    functools.partial(
                        hypercorn_serve, app, config, shutdown_trigger=shutdown.wait, mode="asgi"
                    )
                )
                stack.enter_context(tuned_gc(freeze=gc_freeze, threshold=gc_threshold))
                task_status.started(binds)
        nursery.cancel_scope.cancel()
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


async def _trigger(wait: Callable[[], Awaitable[Any]], shutdown: trio.Event) -> None:
    await wait()
    shutdown.set()


async def _graceful_signals(
    shutdown: trio.Event,
    server_scope: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(*_SIGNALS) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if not shutdown.is_set():
                logger.warning("%s received: shutting down gracefully (again to stop now)", name)
                shutdown.set()
            else:
                logger.warning("%s received again: stopping now", name)
                server_scope.cancel()
