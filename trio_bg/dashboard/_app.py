"""Dashboard: the ASGI app of the live task dashboard, its routes and its authorisation."""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib.resources import files
from typing import TYPE_CHECKING, Any, final

from .._core import _registry
from .._core._log import logger
from .._core._trio_only import not_trio, require_trio
from ..asgi._advice import SERVE_UNDER_TRIO
from ..asgi._types import Message, Receive, Scope, Send
from . import _auth
from ._durable import DurableSection, check_queues
from ._events import stream
from ._headers import response_headers
from ._recorder import RECORDER
from ._schema import Json, Snapshot
from ._shutdown import farewell

if TYPE_CHECKING:
    from .._shutdown_notice import ShutdownNotice
    from ..durable import DurableQueue

_STATIC = {
    "static/dashboard.js": b"text/javascript; charset=utf-8",
    "static/dashboard.css": b"text/css; charset=utf-8",
}


def _load(name: str) -> bytes:
    return files(__package__ or "trio_bg.dashboard").joinpath(name).read_bytes()


@final
class Dashboard:
    """The live task dashboard: an ASGI app to mount anywhere (raw ASGI, Starlette ``Mount``,
    Quart-Trio through a dispatching app).

    Routes, relative to where it is mounted (``scope["root_path"]``): ``GET /`` the page (live,
    through server-sent events), ``GET /api/tasks`` every open manager with its tasks,
    ``GET /api/tasks/{id}`` one task as :func:`trio_bg.find_task` finds it (404 otherwise),
    ``POST /api/tasks/{id}/cancel``, ``GET /api/events`` the event stream, ``GET /metrics``
    the Prometheus exposition of ``registry`` (through ``prometheus_client``). The JSON is
    documented field by field in ``docs/dashboard.md``.

    Every route but the page's script and style sheet answers 403 unless the request carries
    ``token`` (``Authorization: Bearer <token>``, or ``?token=`` on a GET; compared in constant
    time) or ``local_only`` is set and the client is on a loopback address. Task arguments and
    results are shown only with ``show_args``.

    Constructing a dashboard installs the process-wide recorder instrument (retry times,
    counts per second, and argument reprs while a ``show_args`` dashboard is open);
    :meth:`close` removes it once every dashboard is closed.

    Args:
        token: the secret a request must carry (a non-empty string), or None.
        local_only: also admit loopback clients without the token.
        show_args: include the repr of each task's arguments and result (cut to 200 chars).
        registry: the ``prometheus_client`` registry ``/metrics`` exposes (default: its global
            ``REGISTRY``).
        queues: durable queues (:class:`trio_bg.durable.DurableQueue`) to show: depth, delayed,
            in-flight, outcome counts and live workers of each, read from Redis at most once a
            second whoever asks (``queues`` in the JSON, "Durable queues" on the page). A
            request that needs a fresh reading waits for it, at most 2 s per queue.

    Raises:
        ValueError: ``token`` is None and ``local_only`` is False (a dashboard open to everyone
            must be put behind your own authentication: pass that a token), ``token`` is empty,
            or ``queues`` holds a queue twice.
        TypeError: ``token`` is not a str or None, or ``queues`` is not an iterable of
            DurableQueue.
    """

    __slots__ = (
        "_closed", "_durable", "_local_only", "_registry", "_show_args", "_static", "_token",
    )  # fmt: skip

    def __init__(
        self,
        token: str | None = None,
        *,
        local_only: bool = False,
        show_args: bool = False,
        registry: Any = None,
        queues: Iterable[DurableQueue] = (),
    ) -> None:
        if token is not None and type(token) is not str:
            raise TypeError(f"token must be a str or None, got {type(token).__name__}")
        if token == "":
            raise ValueError("token must not be empty")
        if token is None and not local_only:
            raise ValueError(
                "Dashboard() needs a token or local_only=True; it never serves everyone"
            )
        self._durable = DurableSection(check_queues(queues))
        self._token = None if token is None else token.encode()
        self._local_only = bool(local_only)
        self._show_args = bool(show_args)
        self._registry = registry
        self._static = {name: _load(name) for name in ("static/index.html", *_STATIC)}
        self._closed = False
        RECORDER.attach(show_args=self._show_args)

    def close(self) -> None:
        """Stop recording for this dashboard; the recorder instrument is removed once every
        dashboard of the process is closed. Idempotent. The app still answers afterwards."""
        if not self._closed:
            self._closed = True
            RECORDER.detach(show_args=self._show_args)

    def __repr__(self) -> str:
        return (
            f"<Dashboard token={'set' if self._token else 'none'} "
            f"local_only={self._local_only} show_args={self._show_args}>"
        )

    # -- ASGI --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":  # served on its own: nothing to start or stop
            await _lifespan(receive, send)
            return
        require_trio(SERVE_UNDER_TRIO)
        if kind != "http":
            raise RuntimeError(f"the dashboard serves http only, not {kind!r}")
        answer = _Answer(send)
        try:
            await self._http(scope, receive, answer.send)
        except Exception:
            # An observer's failure is no server error: logged here, answered with the headers
            # every answer carries (the server's own 500 would have none), and not raised.
            logger.exception("dashboard: %s %r failed", scope["method"], scope["path"])
            if not answer.started:
                await _error(send, 500, "internal error (the server logged it)")

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        root: str = scope.get("root_path", "")
        if root and path.startswith(root):  # Starlette and Hypercorn keep the full path
            path = path[len(root) :]
        if path == "":
            query = scope.get("query_string", b"")
            location = (root + "/").encode() + (b"?" + query if query else b"")
            await _respond(send, 308, b"", headers=[(b"location", location)])
            return
        static = path.removeprefix("/")
        if static in _STATIC:  # the script and the style sheet hold no data: no token needed
            if method != "GET":
                await _error(send, 405, "method not allowed")
                return
            await _respond(send, 200, self._static[static], content_type=_STATIC[static])
            return
        if not self._authorised(scope):
            await _error(send, 403, "forbidden: a valid token or a local client is needed")
            return
        await self._route(scope, receive, send, method, path)

    def _authorised(self, scope: Scope) -> bool:
        token = self._token
        if token is not None and _auth.token_matches(scope, token):
            return True
        if self._local_only and _auth.is_local(scope):
            return scope["method"] != "POST" or _auth.same_origin(scope)
        return False

    async def _route(
        self, scope: Scope, receive: Receive, send: Send, method: str, path: str
    ) -> None:
        if path == "/":
            if method != "GET":
                await _error(send, 405, "method not allowed")
                return
            await _respond(
                send,
                200,
                self._static["static/index.html"],
                content_type=b"text/html; charset=utf-8",
            )
        elif path == "/api/tasks":
            if method != "GET":
                await _error(send, 405, "method not allowed")
                return
            await _json(send, 200, await self._process())
        elif path == "/api/events":
            if method != "GET":
                await _error(send, 405, "method not allowed")
                return
            await stream(
                receive,
                send,
                RECORDER,
                self._process,
                self._farewell,
                live=bool(self._durable.queues),
            )
        elif path == "/metrics":
            if method != "GET":
                await _error(send, 405, "method not allowed")
                return
            await self._metrics(send)
        elif path.startswith("/api/tasks/"):
            rest = path.removeprefix("/api/tasks/")
            task_id, _, action = rest.partition("/")
            if action == "cancel":
                if method != "POST":
                    await _error(send, 405, "method not allowed")
                    return
                await self._cancel(send, task_id)
            elif action == "" and "/" not in rest:
                if method != "GET":
                    await _error(send, 405, "method not allowed")
                    return
                handle = _registry.find_task(task_id)
                if handle is None:
                    await _error(send, 404, f"no task {task_id}")
                    return
                await _json(send, 200, self._snapshot().one(handle))
            else:
                await _error(send, 404, "not found")
        else:
            await _error(send, 404, "not found")

    def _snapshot(self) -> Snapshot:
        return Snapshot(RECORDER, show_args=self._show_args)

    async def _process(self) -> Json:
        """The process snapshot, with the durable queues' reading refreshed first (if older
        than a second; one shared read)."""
        await self._durable.refresh()
        return self._snapshot().process(queues=self._durable.json())

    def _farewell(self, notice: ShutdownNotice) -> Json:
        """The ``shutdown`` event: the forecast and a last snapshot, with the durable queues as
        last read (no Redis round trip while the server stops)."""
        return farewell(notice, self._snapshot(), self._durable.json())

    async def _cancel(self, send: Send, task_id: str) -> None:
        handle = _registry.find_task(task_id)
        if handle is None:
            await _error(send, 404, f"no task {task_id}")
            return
        cancelled = handle.cancel()
        await _json(
            send, 200, {"id": handle.id, "cancelled": cancelled, "state": handle.state.value}
        )

    async def _metrics(self, send: Send) -> None:
        try:
            import prometheus_client
        except ImportError:
            await _error(
                send, 503, "prometheus_client is not installed: pip install trio-bg[metrics]"
            )
            return
        registry = prometheus_client.REGISTRY if self._registry is None else self._registry
        body = prometheus_client.generate_latest(registry)
        await _respond(send, 200, body, content_type=prometheus_client.CONTENT_TYPE_LATEST.encode())


@final
class _Answer:
    """The request's ``send``, noting whether the answer has started."""

    __slots__ = ("_send", "started")

    def __init__(self, send: Send) -> None:
        self._send = send
        self.started = False

    async def send(self, message: Message) -> None:
        self.started = True
        await self._send(message)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            refusal = not_trio(SERVE_UNDER_TRIO)
            if refusal is not None:  # fail the startup, so the server stops
                await send({"type": "lifespan.startup.failed", "message": refusal})
                raise RuntimeError(refusal)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: bytes = b"text/plain; charset=utf-8",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": response_headers(content_type, length=len(body), extra=headers or ()),
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await _respond(send, status, body, content_type=b"application/json")


async def _error(send: Send, status: int, message: str) -> None:
    await _json(send, status, {"error": message})
