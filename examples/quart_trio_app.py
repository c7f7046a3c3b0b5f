"""The seed scenarios on Quart-Trio, under Hypercorn's trio worker.

Run it from the repository root::

    python -m trio_bg serve examples.quart_trio_app:app

then, for instance::

    curl -i -X POST localhost:8000/orders -d '{"email": "ada@example.com", "product_id": 1}'

Quart's own advice for ASGI middleware is to wrap ``app.asgi_app``, so that ``app`` stays a
Quart app (for its CLI and test client): ``app.asgi_app = TaskMiddleware(app.asgi_app)``. A view
gets its request's manager with ``request_tasks(request.scope)`` and the app manager with
``app_tasks(request.scope)``.

``PROPAGATE_EXCEPTIONS`` is on: an exception no error handler takes then leaves Quart and reaches
the middleware, which answers 500 and does not run the request's deferred tasks (no confirmation
email for an order that failed). With it off, Quart would send its own 500 page, the middleware
would see a complete response, and run them. Errors turned into responses by error handlers (the
422 below) are ordinary responses either way.

Routes (the same in ``raw_asgi.py`` and ``starlette_app.py``):

- ``POST /orders`` ``{"email", "product_id"}`` -> 201 ``{"order_id"}``. The confirmation email
  is sent after the response. Quart views take no ``request`` argument, so ``@with_tasks``
  cannot decorate them: the view starts the route's audit task itself, first thing. An unknown
  product id makes the view raise: a 500, and neither runs.
- ``POST /register`` -> 201 ``{"user_id"}``. The profile is created at once (a blocking function,
  run in a worker thread); the welcome email and the admin notice go out after the response.
- ``POST /webhooks/payment`` -> 200 at once; the event is processed after the response,
  shielded so that a shutdown does not cut a payment in half.
- ``GET /products/<id>`` reads through a cache (``x-cache: hit`` or ``miss``);
  ``PUT /products/<id>`` saves the price and invalidates the cache entry at ``after_route``
  (in the background: a read racing the invalidation may still get the old entry).
- ``POST /photos`` (the image as the body) -> 202 ``{"photo_id", "task"}``. An app task makes
  three thumbnails in a group and collects them with ``wait_all()``, in start order.

Everything the background work does is recorded in :data:`outbox`, in order.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import TypeAlias, cast

import trio
from quart import request
from quart_trio import QuartTrio

from trio_bg import TaskManager
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks

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


async def read_json() -> dict[str, object]:
    try:
        payload: object = json.loads(await request.get_data())
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


# -- the app and its views -----------------------------------------------------------------------

Json: TypeAlias = dict[str, object]

app = QuartTrio(__name__)
app.config["PROPAGATE_EXCEPTIONS"] = True  # unhandled errors reach the middleware (see above)
# Quart's documented way to add ASGI middleware, so that `app` stays a Quart app. The checkers
# object, for two honest reasons: Quart types the ASGI callables with Hypercorn's TypedDicts where
# the middleware's __call__ takes plain mappings (the same dicts at runtime), and mypy refuses
# any assignment to a method.
app.asgi_app = TaskMiddleware(app.asgi_app)  # type: ignore[method-assign, assignment]


@app.errorhandler(BadRequest)
async def bad_request(exc: BadRequest) -> tuple[Json, int]:
    return {"error": str(exc)}, 422


@app.before_serving
async def started() -> None:
    outbox.add("lifespan", "startup")


@app.after_serving
async def stopped() -> None:
    outbox.add("lifespan", "shutdown")


@app.post("/orders")
async def create_order() -> tuple[Json, int]:
    tasks = request_tasks(request.scope)
    # Quart views take no request argument, so @with_tasks cannot decorate them: the route's
    # audit is started here, before anything can fail, as @with_tasks would start it.
    tasks.after_response.start_soon_named("audit", audit, "orders")
    payload = await read_json()
    address, product_id = text_field(payload, "email"), id_field(payload, "product_id")
    order_id = next(_order_ids)
    tasks.after_response.start_soon_named(
        f"confirm-order-{order_id}", send_confirmation_email, order_id, address
    )
    # Saved after the email was scheduled, which is safe: deferred tasks run only once the
    # answer is sent. Here an unknown product id raises KeyError (this example's stand-in for
    # any unexpected failure): the answer is a 500 and the email is never sent.
    orders[order_id] = Order(order_id, address, products[product_id])
    return {"order_id": order_id}, 201


@app.post("/register")
async def register() -> tuple[Json, int]:
    payload = await read_json()
    address, name = text_field(payload, "email"), text_field(payload, "name")
    user_id = next(_user_ids)
    tasks = request_tasks(request.scope)
    tasks.start_soon_named(f"create-profile-{user_id}", create_profile, user_id, name)  # now
    tasks.after_response.start_soon_named(f"welcome-{user_id}", send_welcome_email, address)
    tasks.add_task(notify_admin, user_id, channel="#signups")  # Starlette-style: after response
    return {"user_id": user_id}, 201


@app.post("/webhooks/payment")
async def payment_webhook() -> Json:
    payload = await read_json()
    event_id, kind = text_field(payload, "id"), text_field(payload, "type")
    request_tasks(request.scope).after_response.start_soon_named(
        f"webhook-{event_id}", process_payment_webhook, event_id, kind, shield=True
    )
    return {"received": event_id}


@app.get("/products/<int:product_id>")
async def get_product(product_id: int) -> tuple[Json, int, dict[str, str]]:
    product = cache.get(product_id)
    hit = product is not None
    if product is None:
        product = products.get(product_id)
        if product is None:
            return {"error": f"no product {product_id}"}, 404, {}
        cache[product_id] = product
    return asdict(product), 200, {"x-cache": "hit" if hit else "miss"}


@app.put("/products/<int:product_id>")
async def update_product(product_id: int) -> tuple[Json, int]:
    price = price_field(await read_json(), "price")
    product = products.get(product_id)
    if product is None:
        return {"error": f"no product {product_id}"}, 404
    products[product_id] = product = replace(product, price=price)
    # When Quart starts the answer: a view that fails before it invalidates nothing.
    request_tasks(request.scope).after_route.start_soon_named(
        f"invalidate-product-{product_id}", invalidate_cache, product_id
    )
    return asdict(product), 200


@app.post("/photos")
async def upload_photo() -> tuple[Json, int]:
    if not await request.get_data():
        raise BadRequest("the body must be the image")
    photo_id = next(_photo_ids)
    manager = app_tasks(request.scope)  # app lifetime: the thumbnails outlive this request
    handle = manager.start_soon_named(f"thumbnails-{photo_id}", make_thumbnails, manager, photo_id)
    return {"photo_id": photo_id, "task": handle.id}, 202
