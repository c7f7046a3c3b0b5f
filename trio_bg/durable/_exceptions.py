"""The exceptions of durable queues: a job that failed on a worker, and a Redis out of reach."""

from __future__ import annotations


class JobFailed(Exception):
    """Raised by ``await handle.get()`` when the job raised on a worker (after its last retry).

    The worker's exception cannot travel (durable jobs are JSON, never pickle), so this one
    carries what is known of it: ``remote_type`` (the exception class, ``ValueError`` or
    ``package.module.Class``), ``remote_message`` (its ``str``) and ``remote_traceback`` (the
    worker's formatted traceback, or ``""``). The message says all of it on one line:
    ``send_receipt raised ValueError: no such order``.
    """

    def __init__(
        self, job_name: str, remote_type: str, remote_message: str, remote_traceback: str = ""
    ) -> None:
        super().__init__(f"{job_name} raised {remote_type}: {remote_message}")
        self.job_name = job_name
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback


class JobLost(Exception):
    """Raised by ``await handle.get()`` when Redis holds neither the job nor its result.

    The result outlived the queue's ``result_ttl`` and expired, or Redis lost the job (it was
    restarted without persistence). The job may or may not have run.
    """


class QueueUnavailable(ConnectionError):
    """Redis could not be reached (or did not answer in time) for a durable queue's command.

    Raised by ``enqueue`` within the queue's ``enqueue_timeout``; nothing was enqueued. A plain
    exception (never an exception group), a subclass of the built-in ``ConnectionError``.
    """
