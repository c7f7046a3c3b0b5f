"""trio_bg.durable: jobs that outlive the process, run by workers in it or in other processes.

Two stores behind one API, picked by the URL: Redis (streaq: Redis Streams consumer groups, acks,
reclaim of jobs held by a dead worker; extra ``trio-bg[durable]``; any number of hosts) and the
embedded journal (``sqlite:///jobs.db``: Python's sqlite3, leases, group commit; one host, no
extra). JSON, never pickle. See ``docs/durable.md`` and ``docs/journal.md``.
"""

from __future__ import annotations

from .._public import fixup_module_metadata as _fixup_module_metadata
from ._dead import DeadLetter as DeadLetter
from ._exceptions import JobFailed as JobFailed
from ._exceptions import JobLost as JobLost
from ._exceptions import QueueUnavailable as QueueUnavailable
from ._handle import DurableHandle as DurableHandle
from ._periodic import ScheduleState as ScheduleState
from ._queue import DurableQueue as DurableQueue
from ._statistics import QueueStatistics as QueueStatistics
from ._worker import run_worker as run_worker

_fixup_module_metadata(__name__, globals())

__all__ = [
    "DeadLetter",
    "DurableHandle",
    "DurableQueue",
    "JobFailed",
    "JobLost",
    "QueueStatistics",
    "QueueUnavailable",
    "ScheduleState",
    "run_worker",
]
