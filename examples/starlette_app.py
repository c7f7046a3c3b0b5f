"""The seed scenarios on Starlette, running on the trio backend (anyio) under Hypercorn.

Run it from the repository root::

    python -m trio_bg serve examples.starlette_app:app

then, for instance::

    curl -i -X POST localhost:8000/orders -d '{"email": "ada@example.com", "product_id": 1}'

:class:`~trio_bg.asgi.TaskMiddleware` goes into Starlette's middleware list, so it sits inside
Starlette's ``ServerErrorMiddleware``: when an endpoint raises, the middleware sees the exception
before any 500 is sent, and the request's deferred tasks are not run (no confirmation email for
an order that failed). Wrapped around the whole app instead (``TaskMiddleware(Starlette(...))``),
it would only see the 500 that ``ServerErrorMiddleware`` sends, and run them. Errors turned into
responses by exception handlers (the 422 below) are ordinary responses either way.

An endpoint gets its request's manager with ``request_tasks(request)`` (a ``Request`` is a
mapping over its scope) and the app manager with ``app_tasks(request)``.

Routes (the same in ``raw_asgi.py`` and ``quart_trio_app.py``):

- ``POST /orders`` ``{"email", "product_id"}`` -> 201 ``{"order_id"}``. The confirmation email
  is sent after the response; the endpoint also declares an audit task with
  ``@with_tasks(route_task(audit, "orders"))``. An unknown product id makes the endpoint raise:
  a 500, and neither runs.
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
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from typing import cast

import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trio_bg import TaskManager
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks, route_task, with_tasks

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


# -- request helpers ---------------------------------------------------------------------------


class BadRequest(Exception):
    """The request body is not what the route needs: answered with 422."""


async def read_json(request: Request) -> dict[str, object]:
    try:
        payload: object = json.loads(await request.body())
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


async def bad_request(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=422)


# -- the endpoints -------------------------------------------------------------------------------


@with_tasks(route_task(audit, "orders"))
async def create_order(request: Request) -> Response:
    payload = await read_json(request)
    address, product_id = text_field(payload, "email"), id_field(payload, "product_id")
    order_id = next(_order_ids)
    request_tasks(request).after_response.start_soon_named(
        f"confirm-order-{order_id}", send_confirmation_email, order_id, address
    )
    # Saved after the email was scheduled, which is safe: deferred tasks run only once the
    # answer is sent. Here an unknown product id raises KeyError (this example's stand-in for
    # any unexpected failure): the answer is a 500 and the email is never sent.
    orders[order_id] = Order(order_id, address, products[product_id])
    return JSONResponse({"order_id": order_id}, status_code=201)


async def register(request: Request) -> Response:
    payload = await read_json(request)
    address, name = text_field(payload, "email"), text_field(payload, "name")
    user_id = next(_user_ids)
    tasks = request_tasks(request)
    tasks.start_soon_named(f"create-profile-{user_id}", create_profile, user_id, name)  # now
    tasks.after_response.start_soon_named(f"welcome-{user_id}", send_welcome_email, address)
    tasks.add_task(notify_admin, user_id, channel="#signups")  # Starlette-style: after response
    return JSONResponse({"user_id": user_id}, status_code=201)


async def payment_webhook(request: Request) -> Response:
    payload = await read_json(request)
    event_id, kind = text_field(payload, "id"), text_field(payload, "type")
    request_tasks(request).after_response.start_soon_named(
        f"webhook-{event_id}", process_payment_webhook, event_id, kind, shield=True
    )
    return JSONResponse({"received": event_id})


async def get_product(request: Request) -> Response:
    product_id: int = request.path_params["product_id"]
    product = cache.get(product_id)
    hit = product is not None
    if product is None:
        product = products.get(product_id)
        if product is None:
            return JSONResponse({"error": f"no product {product_id}"}, status_code=404)
        cache[product_id] = product
    return JSONResponse(asdict(product), headers={"x-cache": "hit" if hit else "miss"})


async def update_product(request: Request) -> Response:
    product_id: int = request.path_params["product_id"]
    price = price_field(await read_json(request), "price")
    product = products.get(product_id)
    if product is None:
        return JSONResponse({"error": f"no product {product_id}"}, status_code=404)
    products[product_id] = product = replace(product, price=price)
    # When Starlette starts the answer: an endpoint that fails before it invalidates nothing.
    request_tasks(request).after_route.start_soon_named(
        f"invalidate-product-{product_id}", invalidate_cache, product_id
    )
    return JSONResponse(asdict(product))


async def upload_photo(request: Request) -> Response:
    if not await request.body():
        raise BadRequest("the body must be the image")
    photo_id = next(_photo_ids)
    manager = app_tasks(request)  # app lifetime: the thumbnails outlive this request
    handle = manager.start_soon_named(f"thumbnails-{photo_id}", make_thumbnails, manager, photo_id)
    return JSONResponse({"photo_id": photo_id, "task": handle.id}, status_code=202)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncGenerator[None]:
    outbox.add("lifespan", "startup")
    yield
    outbox.add("lifespan", "shutdown")


app = Starlette(
    routes=[
        Route("/orders", create_order, methods=["POST"]),
        Route("/register", register, methods=["POST"]),
        Route("/webhooks/payment", payment_webhook, methods=["POST"]),
        Route("/products/{product_id:int}", get_product, methods=["GET"]),
        Route("/products/{product_id:int}", update_product, methods=["PUT"]),
        Route("/photos", upload_photo, methods=["POST"]),
    ],
    middleware=[Middleware(TaskMiddleware, grace_period=5.0)],
    exception_handlers={BadRequest: bad_request},
    lifespan=lifespan,
)
"""The app to serve, with TaskMiddleware inside Starlette's error handling."""
