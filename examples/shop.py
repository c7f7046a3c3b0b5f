"""The shop behind the three examples: its data, its fake background work, and the outbox.

``raw_asgi.py``, ``starlette_app.py`` and ``quart_trio_app.py`` tell the same scenarios; this
module is the part that does not depend on a framework, so that each example keeps only its glue:
routing, reading the request, answering, and which timing point each task uses. Nothing here
starts a task (except :func:`make_thumbnails`, which opens a group in the manager it is given).

Everything the background work does is recorded in :data:`outbox`, in order, where tests (and
curious readers) can see it. The three examples share this state (the outbox, the catalogue, the
cache and the id counters); :func:`reset` puts it back as it was at import, but for the counters.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, replace
from typing import cast

import trio

from trio_bg import TaskManager

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


# -- the data ------------------------------------------------------------------------------------


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


CATALOGUE = (Product(1, "Teapot", 25.0), Product(2, "Kettle", 40.0))
"""The products the shop starts with."""

outbox = Outbox()
products: dict[int, Product] = {product.id: product for product in CATALOGUE}
cache: dict[int, Product] = {}
orders: dict[int, Order] = {}
order_ids = itertools.count(1)
user_ids = itertools.count(1)
photo_ids = itertools.count(1)

THUMBNAIL_SIZES = (150, 300, 600)
RESIZE_SECONDS = {150: 0.1, 300: 0.03, 600: 0.06}
"""The fake resizes finish out of order; ``wait_all()`` still answers in start order."""


def reset() -> None:
    """Empty the outbox, the cache and the orders, and restore the catalogue's prices."""
    outbox.clear()
    cache.clear()
    orders.clear()
    products.clear()
    products.update((product.id, product) for product in CATALOGUE)


def save_order(order_id: int, address: str, product_id: int) -> Order:
    """Save an order. An unknown product id raises KeyError: the examples' stand-in for any
    unexpected failure in a handler."""
    orders[order_id] = order = Order(order_id, address, products[product_id])
    return order


def read_product(product_id: int) -> tuple[Product | None, bool]:
    """The product (``None`` if there is none), read through the cache; and whether the cache
    had it."""
    product = cache.get(product_id)
    if product is not None:
        return product, True
    product = products.get(product_id)
    if product is not None:
        cache[product_id] = product
    return product, False


def set_price(product_id: int, price: float) -> Product | None:
    """Save a new price (``None`` if there is no such product). The cache entry is left for
    :func:`invalidate_cache`, which the examples run in the background."""
    product = products.get(product_id)
    if product is None:
        return None
    products[product_id] = product = replace(product, price=price)
    return product


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
            group.start_soon_named("resize", resize, photo_id, size)
    paths = await group.wait_all(str)
    outbox.add("thumbnails", ", ".join(paths))
    return paths


# -- reading a request's JSON body, whatever the framework ---------------------------------------


class BadRequest(Exception):
    """The request body is not what the route needs: answered with 422."""


def parse_json(body: str | bytes) -> dict[str, object]:
    try:
        payload: object = json.loads(body)
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
