"""Job ids: ``job-`` and 32 hex digits, random, or derived from an enqueue ``key``."""

from __future__ import annotations

import hashlib
import os
import threading

_POOL = 4096
"""Random bytes read at once: one ``getrandom`` per 256 ids (a syscall each cost ~10 µs)."""


class _RandomIds:
    """128 random bits per id from a pool refilled from ``os.urandom``; refilled in a child
    after ``fork`` (the pool is never shared by two processes)."""

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
            chunk = self._pool[self._at : self._at + 16]
            self._at += 16
        return "job-" + chunk.hex()


random_id = _RandomIds().next


def key_id(queue: str, job: str, key: str) -> str:
    """The id of the job ``job`` of ``queue`` enqueued with ``key``: the same in every process."""
    digest = hashlib.sha256(f"{queue}\0{job}\0{key}".encode()).hexdigest()
    return "job-" + digest[:32]
