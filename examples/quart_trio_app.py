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
email for an order that failed). With it off, Quart would send its own 500 page, and the
middleware, seeing a 5xx response (a failed handler), would not run them either. Errors turned
into responses below 500 by error handlers (the 422 below) are ordinary responses either way.

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

The shop itself (its products, the fake background work, and the :data:`~examples.shop.outbox`
where that work records everything it does, in order) is in ``shop.py``, shared by the three
examples; this module is the Quart glue.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TypeAlias

from quart import request
from quart_trio import QuartTrio

from examples import shop
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks

# -- request helpers ---------------------------------------------------------------------------


async def read_json() -> dict[str, object]:
    return shop.parse_json(await request.get_data())


# -- the app and its views -----------------------------------------------------------------------

Json: TypeAlias = dict[str, object]

app = QuartTrio(__name__)
app.config["PROPAGATE_EXCEPTIONS"] = True  # unhandled errors reach the middleware (see above)
# Quart's documented way to add ASGI middleware, so that `app` stays a Quart app. The checkers
# object, for two honest reasons: Quart types the ASGI callables with Hypercorn's TypedDicts where
# the middleware's __call__ takes plain mappings (the same dicts at runtime), and mypy refuses
# any assignment to a method.
app.asgi_app = TaskMiddleware(app.asgi_app)  # type: ignore[method-assign, assignment]


@app.errorhandler(shop.BadRequest)
async def bad_request(exc: shop.BadRequest) -> tuple[Json, int]:
    return {"error": str(exc)}, 422


@app.before_serving
async def started() -> None:
    shop.outbox.add("lifespan", "startup")


@app.after_serving
async def stopped() -> None:
    shop.outbox.add("lifespan", "shutdown")


@app.post("/orders")
async def create_order() -> tuple[Json, int]:
    tasks = request_tasks(request.scope)
    # Quart views take no request argument, so @with_tasks cannot decorate them: the route's
    # audit is started here, before anything can fail, as @with_tasks would start it.
    tasks.after_response.start_soon_named("audit", shop.audit, "orders")
    payload = await read_json()
    address, product_id = shop.text_field(payload, "email"), shop.id_field(payload, "product_id")
    order_id = next(shop.order_ids)
    tasks.after_response.start_soon_named(
        "confirm-order", shop.send_confirmation_email, order_id, address
    )
    # Saved after the email was scheduled, which is safe: deferred tasks run only once the
    # answer is sent. save_order() raises KeyError for an unknown product id (this example's
    # stand-in for any unexpected failure): the answer is a 500 and the email is never sent.
    shop.save_order(order_id, address, product_id)
    return {"order_id": order_id}, 201


@app.post("/register")
async def register() -> tuple[Json, int]:
    payload = await read_json()
    address, name = shop.text_field(payload, "email"), shop.text_field(payload, "name")
    user_id = next(shop.user_ids)
    tasks = request_tasks(request.scope)
    tasks.start_soon_named("create-profile", shop.create_profile, user_id, name)  # now
    tasks.after_response.start_soon_named("welcome-email", shop.send_welcome_email, address)
    # Starlette-style, after the response; the keyword argument goes to the function:
    tasks.add_task(shop.notify_admin, user_id, channel="#signups")
    return {"user_id": user_id}, 201


@app.post("/webhooks/payment")
async def payment_webhook() -> Json:
    payload = await read_json()
    event_id, kind = shop.text_field(payload, "id"), shop.text_field(payload, "type")
    request_tasks(request.scope).after_response.start_soon_named(
        "payment-webhook", shop.process_payment_webhook, event_id, kind, shield=True
    )
    return {"received": event_id}


@app.get("/products/<int:product_id>")
async def get_product(product_id: int) -> tuple[Json, int, dict[str, str]]:
    product, hit = shop.read_product(product_id)
    if product is None:
        return {"error": f"no product {product_id}"}, 404, {}
    return asdict(product), 200, {"x-cache": "hit" if hit else "miss"}


@app.put("/products/<int:product_id>")
async def update_product(product_id: int) -> tuple[Json, int]:
    price = shop.price_field(await read_json(), "price")
    product = shop.set_price(product_id, price)
    if product is None:
        return {"error": f"no product {product_id}"}, 404
    # When Quart starts the answer: a view that fails before it invalidates nothing.
    request_tasks(request.scope).after_route.start_soon_named(
        "invalidate-product", shop.invalidate_cache, product_id
    )
    return asdict(product), 200


@app.post("/photos")
async def upload_photo() -> tuple[Json, int]:
    if not await request.get_data():
        raise shop.BadRequest("the body must be the image")
    photo_id = next(shop.photo_ids)
    manager = app_tasks(request.scope)  # app lifetime: the thumbnails outlive this request
    handle = manager.start_soon_named("make-thumbnails", shop.make_thumbnails, manager, photo_id)
    return {"photo_id": photo_id, "task": handle.id}, 202
