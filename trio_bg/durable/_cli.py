"""``python -m trio_bg worker module:queue --concurrency N``: run a durable queue's jobs."""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Sequence

import trio

from .._cli import CommandError, configure_logging, import_object, seconds_argument
from ._exceptions import QueueUnavailable
from ._queue import DurableQueue
from ._worker import run_worker


def load_queue(path: str) -> DurableQueue:
    """Import ``"package.module:attribute"`` (from the cwd too) and check it is a queue.

    Raises:
        CommandError: what :func:`trio_bg._cli.import_object` refuses, or not a queue.
    """
    target = import_object(path, "queue")
    if not isinstance(target, DurableQueue):
        raise CommandError(f"{path} is not a DurableQueue (got {type(target).__name__})", 2)
    return target


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trio_bg worker",
        description="Run the jobs of a trio_bg.durable queue until SIGTERM or SIGINT.",
    )
    parser.add_argument("queue", help="module:attribute of the DurableQueue")
    parser.add_argument("--concurrency", type=int, default=16, help="jobs at once (default 16)")
    parser.add_argument(
        "--grace",
        type=seconds_argument,
        default=30.0,
        help="seconds running jobs get to finish after SIGTERM (default 30)",
    )
    parser.add_argument(
        "--max-backoff",
        type=seconds_argument,
        default=5.0,
        help="longest wait between attempts to reach a lost Redis (default 5)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error(f"--concurrency must be >= 1, got {args.concurrency}")
    configure_logging(args.log_level)
    if logging.getLogger().level > logging.DEBUG:
        # streaq logs a line per job start and finish at INFO; failures stay (ERROR).
        logging.getLogger("streaq").setLevel(logging.WARNING)
    queue = load_queue(args.queue)
    logging.getLogger("trio_bg.durable").info(
        "worker for queue %r at %s: %d jobs registered, concurrency %d",
        queue.name,
        queue.url if queue.is_journal else queue.redis_url,
        len(queue.jobs),
        args.concurrency,
    )
    try:
        trio.run(
            functools.partial(
                run_worker,
                queue,
                concurrency=args.concurrency,
                grace=args.grace,
                max_backoff=args.max_backoff,
            )
        )
    except QueueUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
