"""Job ids: ``job-`` and 32 hex digits, time-ordered and random, or derived from an enqueue
``key``."""

from __future__ import annotations

import hashlib
import os
import threading
import time

_POOL = 4000
"""Random bytes read at once: one ``getrandom`` per 400 ids (a syscall each cost ~10 µs)."""
_RANDOM = 10
"""Random bytes per id (80 bits), after 6 bytes of the time in milliseconds."""


class _RandomIds:
    """Per id, the time in milliseconds (48 bits), then 80 random bits from a pool refilled from
    ``os.urandom``; refilled in a child after ``fork`` (the pool is never shared by two
    processes).

    The time first makes ids of one moment sort together, like a UUIDv7: the journal's unique
    index on ``id`` grows at its right edge instead of at a random page, so an enqueue costs
    the same with a million jobs in the file (random ids made it 3.4x slower there).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool = b""
        self._at = 0
        self._pid = -1

    def next(self) -> str:
        with self._lock:
            if self._at >= len(self._pool) or self._pid != os.getpid():
                self._pool = os.urandom(_POOL)
                self._at = 0
                self._pid = os.getpid()
            chunk = self._pool[self._at : self._at + _RANDOM]
            self._at += _RANDOM
        return f"job-{time.time_ns() // 1_000_000 & 0xFFFF_FFFF_FFFF:012x}{chunk.hex()}"


random_id = _RandomIds().next


def key_id(queue: str, job: str, key: str) -> str:
    """The id of the job ``job`` of ``queue`` enqueued with ``key``: the same in every process."""
    digest = hashlib.sha256(f"{queue}\0{job}\0{key}".encode()).hexdigest()
    return "job-" + digest[:32]
