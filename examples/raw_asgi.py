"""The seed scenarios as a plain ASGI app with a tiny router: no framework, just trio_bg.

Run it from the repository root::

    python -m trio_bg serve examples.raw_asgi:app

then, for instance::

    curl -i -X POST localhost:8000/orders -d '{"email": "ada@example.com", "product_id": 1}'

Routes (the same in ``starlette_app.py`` and ``quart_trio_app.py``):

- ``POST /orders`` ``{"email", "product_id"}`` -> 201 ``{"order_id"}``. The confirmation email
  is sent after the response; the route also declares an audit task with
  ``@with_tasks(route_task(audit, "orders"))``. An unknown product id makes the handler raise:
  the middleware answers 500 and runs neither.
- ``POST /register`` -> 201 ``{"user_id"}``. The profile is created at once (a blocking function,
  run in a worker thread); the welcome email and the admin notice go out after the response.
- ``POST /webhooks/payment`` -> 200 at once; the event is processed after the response,
  shielded so that a shutdown does not cut a payment in half.
- ``GET /products/{id}`` reads through a cache (``x-cache: hit`` or ``miss``);
  ``PUT /products/{id}`` saves the price and invalidates the cache entry at ``after_route``
  (in the background: a read racing the invalidation may still get the old entry).
- ``POST /photos`` (the image as the body) -> 202 ``{"photo_id", "task"}``. An app task makes
  three thumbnails in a group and collects them with ``wait_all()``, in start order.

Everything the background work does is recorded in :data:`outbox`, in order.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeAlias, cast

import trio

from trio_bg import TaskManager
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks, route_task, with_tasks

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
Endpoint: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- the side effects, where tests (and curious readers) can see them ----------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    """One thing the background work did."""

    kind: str
    text: str
    at: float
    """``time.monotonic()`` when it happened."""


class Outbox:
    """A stand-in for the mail server, the cache server and the admin chat: a log, in order."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def add(self, kind: str, text: str) -> None:
        self.sent.append(Sent(kind, text, time.monotonic()))

    def of(self, kind: str) -> list[Sent]:
        return [sent for sent in self.sent if sent.kind == kind]

    def clear(self) -> None:
        self.sent.clear()


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    name: str
    price: float


@dataclass(frozen=True, slots=True)
class Order:
    id: int
    email: str
    product: Product


outbox = Outbox()
products: dict[int, Product] = {1: Product(1, "Teapot", 25.0), 2: Product(2, "Kettle", 40.0)}
cache: dict[int, Product] = {}
orders: dict[int, Order] = {}
_order_ids = itertools.count(1)
_user_ids = itertools.count(1)
_photo_ids = itertools.count(1)

THUMBNAIL_SIZES = (150, 300, 600)
RESIZE_SECONDS = {150: 0.1, 300: 0.03, 600: 0.06}
"""The fake resizes finish out of order; ``wait_all()`` still answers in start order."""


# -- the background work -----------------------------------------------------------------------


async def send_confirmation_email(order_id: int, address: str) -> None:
    await trio.sleep(0.1)  # a slow mail server
    outbox.add("email", f"order {order_id} confirmed to {address}")


async def audit(resource: str) -> None:
    outbox.add("audit", resource)


def create_profile(user_id: int, name: str) -> None:
    time.sleep(0.02)  # a blocking database driver: plain functions run in a worker thread
    outbox.add("profile", f"user {user_id}: {name}")


async def send_welcome_email(address: str) -> None:
    await trio.sleep(0.1)
    outbox.add("email", f"welcome {address}")


async def notify_admin(user_id: int, *, channel: str) -> None:
    await trio.sleep(0.05)
    outbox.add("admin", f"new user {user_id} on {channel}")


async def process_payment_webhook(event_id: str, kind: str) -> None:
    await trio.sleep(0.1)  # check with the payment provider, then mark the order paid
    outbox.add("webhook", f"{event_id} {kind}")


async def invalidate_cache(product_id: int) -> None:
    await trio.sleep(0.01)  # a round trip to the cache server
    cache.pop(product_id, None)
    outbox.add("cache", f"product {product_id} invalidated")


async def resize(photo_id: int, size: int) -> str:
    await trio.sleep(RESIZE_SECONDS[size])
    outbox.add("thumbnail", f"photo {photo_id} at {size}px")
    return f"photo-{photo_id}-{size}.jpg"


async def make_thumbnails(manager: TaskManager, photo_id: int) -> list[str]:
    """Resize to every size at once, in a group of the app manager; results in start order."""
    async with manager.open_group("thumbnails") as group:
        for size in THUMBNAIL_SIZES:
            group.start_soon_named(f"resize-{photo_id}-{size}", resize, photo_id, size)
    paths: list[str] = await group.wait_all()
    outbox.add("thumbnails", ", ".join(paths))
    return paths


# -- request and response helpers ----------------------------------------------------------------


class BadRequest(Exception):
    """The request body is not what the route needs: answered with 422."""


async def read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect: the client is gone
            return bytes(body)
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return bytes(body)


async def read_json(receive: Receive) -> dict[str, object]:
    try:
        payload: object = json.loads(await read_body(receive))
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise BadRequest("the body is not a JSON object")
    return cast("dict[str, object]", payload)


def text_field(payload: dict[str, object], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"{name!r} must be a non-empty string")
    return value


def id_field(payload: dict[str, object], name: str) -> int:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{name!r} must be an integer")
    return value


def price_field(payload: dict[str, object], name: str) -> float:
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise BadRequest(f"{name!r} must be a non-negative number")
    return float(value)


async def send_json(
    send: Send, status: int, payload: object, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


# -- the routes ----------------------------------------------------------------------------------


@with_tasks(route_task(audit, "orders"))
async def create_order(scope: Scope, receive: Receive, send: Send) -> None:
    payload = await read_json(receive)
    address, product_id = text_field(payload, "email"), id_field(payload, "product_id")
    order_id = next(_order_ids)
    request_tasks(scope).after_response.start_soon_named(
        f"confirm-order-{order_id}", send_confirmation_email, order_id, address
    )
    # Saved after the email was scheduled, which is safe: deferred tasks run only once the
    # answer is sent. Here an unknown product id raises KeyError (this example's stand-in for
    # any unexpected failure): the answer is a 500 and the email is never sent.
    orders[order_id] = Order(order_id, address, products[product_id])
    await send_json(send, 201, {"order_id": order_id})


async def register(scope: Scope, receive: Receive, send: Send) -> None:
    payload = await read_json(receive)
    address, name = text_field(payload, "email"), text_field(payload, "name")
    user_id = next(_user_ids)
    tasks = request_tasks(scope)
    tasks.start_soon_named(f"create-profile-{user_id}", create_profile, user_id, name)  # now
    tasks.after_response.start_soon_named(f"welcome-{user_id}", send_welcome_email, address)
    tasks.add_task(notify_admin, user_id, channel="#signups")  # Starlette-style: after response
    await send_json(send, 201, {"user_id": user_id})


async def payment_webhook(scope: Scope, receive: Receive, send: Send) -> None:
    payload = await read_json(receive)
    event_id, kind = text_field(payload, "id"), text_field(payload, "type")
    request_tasks(scope).after_response.start_soon_named(
        f"webhook-{event_id}", process_payment_webhook, event_id, kind, shield=True
    )
    await send_json(send, 200, {"received": event_id})


async def get_product(scope: Scope, receive: Receive, send: Send) -> None:
    product_id = int(scope["path_params"]["product_id"])
    product = cache.get(product_id)
    hit = product is not None
    if product is None:
        product = products.get(product_id)
        if product is None:
            await send_json(send, 404, {"error": f"no product {product_id}"})
            return
        cache[product_id] = product
    await send_json(send, 200, asdict(product), {"x-cache": "hit" if hit else "miss"})


async def update_product(scope: Scope, receive: Receive, send: Send) -> None:
    product_id = int(scope["path_params"]["product_id"])
    price = price_field(await read_json(receive), "price")
    product = products.get(product_id)
    if product is None:
        await send_json(send, 404, {"error": f"no product {product_id}"})
        return
    products[product_id] = product = replace(product, price=price)
    # As soon as the answer starts: a handler that fails before answering invalidates nothing.
    request_tasks(scope).after_route.start_soon_named(
        f"invalidate-product-{product_id}", invalidate_cache, product_id
    )
    await send_json(send, 200, asdict(product))


async def upload_photo(scope: Scope, receive: Receive, send: Send) -> None:
    if not await read_body(receive):
        raise BadRequest("the body must be the image")
    photo_id = next(_photo_ids)
    manager = app_tasks(scope)  # app lifetime: the thumbnails outlive this request
    handle = manager.start_soon_named(f"thumbnails-{photo_id}", make_thumbnails, manager, photo_id)
    await send_json(send, 202, {"photo_id": photo_id, "task": handle.id})


ROUTES: list[tuple[str, re.Pattern[str], Endpoint]] = [
    ("POST", re.compile(r"/orders"), create_order),
    ("POST", re.compile(r"/register"), register),
    ("POST", re.compile(r"/webhooks/payment"), payment_webhook),
    ("GET", re.compile(r"/products/(?P<product_id>[0-9]+)"), get_product),
    ("PUT", re.compile(r"/products/(?P<product_id>[0-9]+)"), update_product),
    ("POST", re.compile(r"/photos"), upload_photo),
]


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            outbox.add("lifespan", "startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            outbox.add("lifespan", "shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def router(scope: Scope, receive: Receive, send: Send) -> None:
    """Dispatch on method and path; answer 422 for a :class:`BadRequest`, else 404 or 405."""
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        raise RuntimeError(f"this app serves http only, not {scope['type']!r}")
    allowed: list[str] = []
    for method, pattern, endpoint in ROUTES:
        match = pattern.fullmatch(scope["path"])
        if match is None:
            continue
        if method != scope["method"]:
            allowed.append(method)
            continue
        scope["path_params"] = match.groupdict()
        try:
            await endpoint(scope, receive, send)
        except BadRequest as exc:
            await send_json(send, 422, {"error": str(exc)})
        return
    if allowed:
        await send_json(send, 405, {"error": "method not allowed"}, {"allow": ", ".join(allowed)})
    else:
        await send_json(send, 404, {"error": f"no route {scope['path']}"})


app = TaskMiddleware(router)
"""The app to serve: the router wrapped in TaskMiddleware."""
