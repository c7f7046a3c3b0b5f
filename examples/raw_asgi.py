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

The shop itself (its products, the fake background work, and the :data:`~examples.shop.outbox`
where that work records everything it does, in order) is in ``shop.py``, shared by the three
examples; this module is the ASGI glue.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict
from typing import Any, TypeAlias

from examples import shop
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks, route_task, with_tasks

Scope: TypeAlias = MutableMapping[str, Any]
Message: TypeAlias = MutableMapping[str, Any]
Receive: TypeAlias = Callable[[], Awaitable[Message]]
Send: TypeAlias = Callable[[Message], Awaitable[None]]
Endpoint: TypeAlias = Callable[[Scope, Receive, Send], Awaitable[None]]


# -- request and response helpers ----------------------------------------------------------------


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
    return shop.parse_json(await read_body(receive))


async def send_json(
    send: Send, status: int, payload: object, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


# -- the routes ----------------------------------------------------------------------------------


@with_tasks(route_task(shop.audit, "orders"))
async def create_order(scope: Scope, receive: Receive, send: Send) -> None:
    payload = await read_json(receive)
    address, product_id = shop.text_field(payload, "email"), shop.id_field(payload, "product_id")
    order_id = next(shop.order_ids)
    request_tasks(scope).after_response.start_soon_named(
        "confirm-order", shop.send_confirmation_email, order_id, address
    )
    # Saved after the email was scheduled, which is safe: deferred tasks run only once the
    # answer is sent. save_order() raises KeyError for an unknown product id (this example's
    # stand-in for any unexpected failure): the answer is a 500 and the email is never sent.
    shop.save_order(order_id, address, product_id)
    await send_json(send, 201, {"order_id": order_id})


async def register(scope: Scope, receive: Receive, send: Send) -> None:
    payload = await read_json(receive)
    address, name = shop.text_field(payload, "email"), shop.text_field(payload, "name")
    user_id = next(shop.user_ids)
    tasks = request_tasks(scope)
    tasks.start_soon_named("create-profile", shop.create_profile, user_id, name)  # now
    tasks.after_response.start_soon_named("welcome-email", shop.send_welcome_email, address)
    # Starlette-style, after the response; the keyword argument goes to the function:
    tasks.add_task(shop.notify_admin, user_id, channel="#signups")
    await send_json(send, 201, {"user_id": user_id})


async def payment_webhook(scope: Scope, receive: Receive, send: Send) -> None:
    payload = await read_json(receive)
    event_id, kind = shop.text_field(payload, "id"), shop.text_field(payload, "type")
    request_tasks(scope).after_response.start_soon_named(
        "payment-webhook", shop.process_payment_webhook, event_id, kind, shield=True
    )
    await send_json(send, 200, {"received": event_id})


async def get_product(scope: Scope, receive: Receive, send: Send) -> None:
    product_id = int(scope["path_params"]["product_id"])
    product, hit = shop.read_product(product_id)
    if product is None:
        await send_json(send, 404, {"error": f"no product {product_id}"})
        return
    await send_json(send, 200, asdict(product), {"x-cache": "hit" if hit else "miss"})


async def update_product(scope: Scope, receive: Receive, send: Send) -> None:
    product_id = int(scope["path_params"]["product_id"])
    price = shop.price_field(await read_json(receive), "price")
    product = shop.set_price(product_id, price)
    if product is None:
        await send_json(send, 404, {"error": f"no product {product_id}"})
        return
    # As soon as the answer starts: a handler that fails before answering invalidates nothing.
    request_tasks(scope).after_route.start_soon_named(
        "invalidate-product", shop.invalidate_cache, product_id
    )
    await send_json(send, 200, asdict(product))


async def upload_photo(scope: Scope, receive: Receive, send: Send) -> None:
    if not await read_body(receive):
        raise shop.BadRequest("the body must be the image")
    photo_id = next(shop.photo_ids)
    manager = app_tasks(scope)  # app lifetime: the thumbnails outlive this request
    handle = manager.start_soon_named("make-thumbnails", shop.make_thumbnails, manager, photo_id)
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
            shop.outbox.add("lifespan", "startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            shop.outbox.add("lifespan", "shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def router(scope: Scope, receive: Receive, send: Send) -> None:
    """Dispatch on method and path; answer 422 for a ``shop.BadRequest``, else 404 or 405."""
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
        except shop.BadRequest as exc:
            await send_json(send, 422, {"error": str(exc)})
        return
    if allowed:
        await send_json(send, 405, {"error": "method not allowed"}, {"allow": ", ".join(allowed)})
    else:
        await send_json(send, 404, {"error": f"no route {scope['path']}"})


app = TaskMiddleware(router)
"""The app to serve: the router wrapped in TaskMiddleware."""
