"""The ASGI callables, typed loosely enough for raw apps, Starlette, Quart and Hypercorn."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeAlias

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
ASGIApp: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]
WrappedApp: TypeAlias = Callable[[Any, Any, Any], Awaitable[None]]
"""What the middleware wraps: any ASGI 3 app. Frameworks type scope, receive and send in their
own ways (Quart with TypedDicts, Starlette with MutableMappings), so the parameters are open."""

REQUEST_TASKS_KEY = "trio_bg.request_tasks"
"""The http scope key under which the middleware puts the request's manager."""
APP_TASKS_KEY = "trio_bg.app_tasks"
"""The lifespan ``state`` (and http scope) key under which the middleware puts the app manager."""
