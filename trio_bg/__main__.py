"""``python -m trio_bg serve module:app`` and ``python -m trio_bg demo``."""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import math
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import trio

from ._serve import serve


def load_app(path: str) -> Callable[..., Awaitable[None]]:
    """Import ``"package.module:attribute"`` (the attribute may be dotted) from the cwd."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise SystemExit(f"error: the app must be given as module:attribute, got {path!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    target: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise SystemExit(f"error: {path} is not an ASGI app (not callable)")
    return cast("Callable[..., Awaitable[None]]", target)


def _seconds(text: str) -> float:
    """``--grace``: a finite number of seconds >= 0 (argparse reports the error and exits 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (0 <= value < math.inf):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trio_bg")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve an ASGI app with graceful signals")
    serve_cmd.add_argument("app", help="module:attribute of the ASGI app")
    demo_cmd = commands.add_parser("demo", help="serve the demo app")
    for command in (serve_cmd, demo_cmd):
        command.add_argument(
            "--bind", action="append", help="host:port (repeatable; default 127.0.0.1:8000)"
        )
        command.add_argument(
            "--grace",
            type=_seconds,
            default=5.0,
            help="seconds open requests get at shutdown (Hypercorn's graceful_timeout)",
        )
        command.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "demo":
        from .asgi._demo import app as demo_app

        app: Callable[..., Awaitable[None]] = demo_app
    else:
        app = load_app(args.app)
    binds: list[str] = args.bind or ["127.0.0.1:8000"]
    trio.run(functools.partial(serve, app, binds, graceful_timeout=args.grace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
