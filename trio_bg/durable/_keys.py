"""The Redis keys of streaq's layout that trio_bg reads and writes besides streaq itself.

Each is the worker's public ``prefix`` (``streaq:<queue>``) and one of streaq's public
``streaq.constants``, as streaq composes them.
"""

from __future__ import annotations

from typing import Any

from streaq.constants import (
    REDIS_ABORT,
    REDIS_CHANNEL,
    REDIS_RESULTS_SET,
    REDIS_RETRY,
    REDIS_RUNNING_SET,
)


def abort_key(worker: Any) -> str:
    """The set of job ids a worker is to abort (``handle.cancel()`` adds to it)."""
    return f"{worker.prefix}{REDIS_ABORT}"


def channel_prefix(worker: Any) -> str:
    """The pub/sub channel of a job's result is this and the job id."""
    return f"{worker.prefix}{REDIS_CHANNEL}"


def results_set(worker: Any) -> str:
    """The sorted set of stored results, scored by when they expire."""
    return f"{worker.prefix}{REDIS_RESULTS_SET}"


def retry_key(worker: Any) -> str:
    """A job's delivery count is this and the job id."""
    return f"{worker.prefix}{REDIS_RETRY}"


def running_set(worker: Any) -> str:
    """The set of the ids of the jobs running now, on any worker."""
    return f"{worker.prefix}{REDIS_RUNNING_SET}"
