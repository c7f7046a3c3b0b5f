"""TaskOptions: the start options few tasks use, in one object that common tasks do without."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast, final

from ._checks import check_handler, check_seconds
from ._retry import Retry

Handler = Callable[[Any, BaseException], "Awaitable[None] | None"]
"""An error handler, as the options keep it (the public type is ``trio_bg.ErrorHandler``, which
names the handle: this module sits below the handle and imports nothing above it)."""


class GroupSlot(Protocol):
    """What the options and the lifecycle know of the group a task belongs to
    (:class:`~trio_bg.TaskGroup` is one)."""

    @property
    def name(self) -> str: ...

    def _add(self, handle: Any, /) -> None: ...

    def _task_done(self) -> None: ...


@final
class TaskOptions:
    """``timeout``, ``retry``, ``on_error``, ``key`` and ``always`` of one start, and what the
    manager adds for the task's life: its ``group`` and the ``context`` it was started in (for a
    task that starts later than its start call).

    A start with none of them passes ``None`` instead of an object: that is most tasks, and it
    keeps their handle small and their path free of these checks (docs/performance.md).
    """

    __slots__ = ("always", "context", "group", "key", "on_error", "retry", "service", "timeout")

    def __init__(
        self,
        timeout: float | None = None,
        retry: Retry | None = None,
        on_error: Handler | None = None,
        key: str | None = None,
        always: bool = False,
    ) -> None:
        self.timeout = timeout
        self.retry = retry
        self.on_error = on_error
        self.key = key
        self.always = always
        self.service = False
        """A task that runs until it is stopped (a periodic schedule's own task): the close
        cancels it first, at once, and its report does not name it."""
        self.group: GroupSlot | None = None
        self.context: contextvars.Context | None = None

    def validate(self) -> None:
        """Raise TypeError or ValueError (exact messages) for an option of the wrong kind."""
        if self.timeout is not None:
            self.timeout = check_seconds("timeout", self.timeout, allow_inf=True)
        retry = cast(object, self.retry)
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be a trio_bg.Retry or None, got {type(retry).__name__}")
        if self.on_error is not None:
            check_handler("on_error", self.on_error)
        key = cast(object, self.key)
        if key is not None and type(key) is not str:
            raise TypeError(f"key must be a str or None, got {type(key).__name__}")
        always = cast(object, self.always)
        if always is not False and always is not True:
            raise TypeError(f"always must be a bool, got {type(always).__name__}")

    def spent(self) -> bool:
        """True once launched if nothing but the start context and ``always`` was set."""
        return (
            self.timeout is None
            and self.retry is None
            and self.on_error is None
            and self.key is None
            and self.group is None
            and not self.service
        )
