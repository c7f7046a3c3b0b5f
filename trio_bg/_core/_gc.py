"""Garbage-collector settings for a server that holds thousands of in-flight tasks.

Every in-flight task is a handful of container objects (trio's task and cancel scope, two
coroutine frames, the handle) that live for the task's duration, so they survive the young
collections and are promoted to the oldest generation. CPython 3.11 runs a full collection once
the objects promoted since the last one exceed a quarter of the old generation: with ~5,000
tasks of 2 s at ~2,500 requests/s that is a full collection about every second, each walking
every object of the process (the app's modules included), and each a pause that every open
request waits out. Two settings remove most of it: ``gc.freeze()`` after start-up moves the
start-up objects out of the collector's sight for good, and a larger ``threshold2`` makes full
collections rare (trio_bg's own per-task objects hold no reference cycles, so nothing waits on
the collector to be freed).
"""

from __future__ import annotations

import gc
from collections.abc import Generator
from contextlib import contextmanager

from ._log import logger


@contextmanager
def tuned_gc(*, freeze: bool, threshold: tuple[int, int, int] | None) -> Generator[None]:
    """Apply the settings for the block; restore the previous threshold and unfreeze after."""
    previous = gc.get_threshold()
    if freeze:
        gc.collect()
        gc.freeze()
    if threshold is not None:
        gc.set_threshold(*threshold)
    logger.debug("gc: %d objects frozen, threshold %s", gc.get_freeze_count(), gc.get_threshold())
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        if freeze:
            gc.unfreeze()
