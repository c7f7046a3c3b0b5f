"""``python -m trio_bg serve module:app``, ``python -m trio_bg demo`` and
``python -m trio_bg worker module:queue`` (``trio_bg.durable``)."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import trio

from ._cli import CommandError, configure_logging, import_object, seconds_argument
from ._core._log import logger
from ._serve import EXIT_DROPPED, MAX_NAMED, forced_drops, serve


def load_app(path: str) -> Callable[..., Awaitable[None]]:
    """Import ``"package.module:attribute"`` (the attribute may be dotted) from the cwd.

    Raises:
        CommandError: the path is malformed, the module is not found (``ModuleNotFoundError``,
            for it or a module it imports), an attribute is missing, or the object is not
            callable. Any other exception raised by the module's own code propagates with its
            traceback.
    """
    target = import_object(path, "app")
    if not callable(target):
        raise CommandError(f"{path} is not an ASGI app (not callable)", 2)
    return cast("Callable[..., Awaitable[None]]", target)


def serve_command(app: Callable[..., Awaitable[None]], binds: list[str], grace: float) -> int:
    """Run :func:`trio_bg.serve` until it stops, Hypercorn logging through the root logger;
    return the exit status: 0, or :data:`~trio_bg._serve.EXIT_DROPPED` (75) when a forced stop
    (a second signal) dropped running unshielded tasks.

    Raises:
        CommandError: an address could not be bound (in use, not local, a privileged port).
    """
    from hypercorn.config import Config

    config = Config()
    config.bind = binds
    config.graceful_timeout = grace
    # A Logger, not "-": Hypercorn then adds no handler of its own, and each of its lines goes
    # out once, through the root handler of logging.basicConfig (with "-" it went out twice).
    config.errorlog = logging.getLogger("hypercorn.error")
    started: list[str] = []
    try:
        return trio.run(_serve_noting_binds, app, config, started)
    except BaseExceptionGroup as group:
        failure = None if started else _bind_failure(group, binds)
        if failure is None:
            raise
        raise CommandError(failure, 1) from None


async def _serve_noting_binds(
    app: Callable[..., Awaitable[None]], config: Any, started: list[str]
) -> int:
    async with trio.open_nursery() as nursery:
        started.extend(await nursery.start(functools.partial(serve, app, config=config)))
    dropped = forced_drops()
    if not dropped:
        return 0
    shown = ", ".join(f"{h.name!r} ({h.id})" for h in dropped[:MAX_NAMED])
    more = f" and {len(dropped) - MAX_NAMED} more" if len(dropped) > MAX_NAMED else ""
    logger.error(
        "exiting with status %d: the forced stop dropped %d running task(s): %s%s",
        EXIT_DROPPED, len(dropped), shown, more,
    )  # fmt: skip
    return EXIT_DROPPED


def _bind_failure(group: BaseExceptionGroup[BaseException], binds: list[str]) -> str | None:
    """``cannot bind host:port: reason`` if ``group`` holds only ``OSError``s (a server that
    failed before it started), else None. Which address failed is found by binding each again."""
    matched, rest = group.split(OSError)
    if matched is None or rest is not None:
        return None
    from hypercorn.config import Config

    for bind in binds:
        probe = Config()
        probe.bind = [bind]
        try:
            sockets = probe.create_sockets()
        except OSError as exc:
            return f"cannot bind {bind}: {_reason(exc)}"
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets, *sockets.quic_sockets):
            sock.close()
    first = matched.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return f"cannot bind {', '.join(binds)}: {_reason(first)}"


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc)
    return reason[:1].lower() + reason[1:]


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:  # python -m trio_bg worker module:queue (trio_bg.durable)
        from .durable._cli import main as worker_main

        try:
            return worker_main(argv[1:])
        except CommandError as error:
            print(f"error: {error}", file=sys.stderr)
            return error.code
    parser = argparse.ArgumentParser(prog="python -m trio_bg")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve an ASGI app with graceful signals")
    serve_cmd.add_argument("app", help="module:attribute of the ASGI app")
    demo_cmd = commands.add_parser("demo", help="serve the demo app")
    # Listed for --help only: main() hands "worker" to trio_bg.durable's own parser above.
    commands.add_parser(
        "worker", help="run a trio_bg.durable queue's jobs (python -m trio_bg worker --help)"
    )
    for command in (serve_cmd, demo_cmd):
        command.add_argument(
            "--bind", action="append", help="host:port (repeatable; default 127.0.0.1:8000)"
        )
        command.add_argument(
            "--grace",
            type=seconds_argument,
            default=5.0,
            help="seconds open requests get at shutdown (Hypercorn's graceful_timeout)",
        )
        command.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        if args.command == "demo":
            from ._demo import Demo

            app: Callable[..., Awaitable[None]] = Demo().app
        else:
            app = load_app(args.app)
        return serve_command(app, args.bind or ["127.0.0.1:8000"], args.grace)
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.code


if __name__ == "__main__":
    sys.exit(main())
