"""The seed scenarios on Starlette, running on the trio backend (anyio) under Hypercorn.

Run it from the repository root::

    python -m trio_bg serve examples.starlette_app:app

then, for instance::

    curl -i -X POST localhost:8000/orders -d '{"email": "ada@example.com", "product_id": 1}'

:class:`~trio_bg.asgi.TaskMiddleware` goes into Starlette's middleware list, so it sits inside
Starlette's ``ServerErrorMiddleware``: when an endpoint raises, the middleware sees the exception
before any 500 is sent, and the request's deferred tasks are not run (no confirmation email for
an order that failed). Wrapped around the whole app instead (``TaskMiddleware(Starlette(...))``),
it would see the 500 that ``ServerErrorMiddleware`` sends, and a 5xx response counts as a failed
handler: the tasks would not run either. Errors turned into responses below 500 by exception
handlers (the 422 below) are ordinary responses either way.

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

The shop itself (its products, the fake background work, and the :data:`~examples.shop.outbox`
where that work records everything it does, in order) is in ``shop.py``, shared by the three
examples; this module is the Starlette glue.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import asdict

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from examples import shop
from trio_bg.asgi import TaskMiddleware, app_tasks, request_tasks, route_task, with_tasks

# -- request helpers ---------------------------------------------------------------------------


async def read_json(request: Request) -> dict[str, object]:
    return shop.parse_json(await request.body())


async def bad_request(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=422)


# -- the endpoints -------------------------------------------------------------------------------


@with_tasks(route_task(shop.audit, "orders"))
async def create_order(request: Request) -> Response:
    payload = await read_json(request)
    address, product_id = shop.text_field(payload, "email"), shop.id_field(payload, "product_id")
    order_id = next(shop.order_ids)
    request_tasks(request).after_response.start_soon_named(
        "confirm-order", shop.send_confirmation_email, order_id, address
    )
    # Saved after the email was scheduled, which is safe: deferred tasks run only once the
    # answer is sent. save_order() raises KeyError for an unknown product id (this example's
    # stand-in for any unexpected failure): the answer is a 500 and the email is never sent.
    shop.save_order(order_id, address, product_id)
    return JSONResponse({"order_id": order_id}, status_code=201)


async def register(request: Request) -> Response:
    payload = await read_json(request)
    address, name = shop.text_field(payload, "email"), shop.text_field(payload, "name")
    user_id = next(shop.user_ids)
    tasks = request_tasks(request)
    tasks.start_soon_named("create-profile", shop.create_profile, user_id, name)  # now
    tasks.after_response.start_soon_named("welcome-email", shop.send_welcome_email, address)
    # Starlette-style, after the response; the keyword argument goes to the function:
    tasks.add_task(shop.notify_admin, user_id, channel="#signups")
    return JSONResponse({"user_id": user_id}, status_code=201)


async def payment_webhook(request: Request) -> Response:
    payload = await read_json(request)
    event_id, kind = shop.text_field(payload, "id"), shop.text_field(payload, "type")
    request_tasks(request).after_response.start_soon_named(
        "payment-webhook", shop.process_payment_webhook, event_id, kind, shield=True
    )
    return JSONResponse({"received": event_id})


async def get_product(request: Request) -> Response:
    product_id: int = request.path_params["product_id"]
    product, hit = shop.read_product(product_id)
    if product is None:
        return JSONResponse({"error": f"no product {product_id}"}, status_code=404)
    return JSONResponse(asdict(product), headers={"x-cache": "hit" if hit else "miss"})


async def update_product(request: Request) -> Response:
    product_id: int = request.path_params["product_id"]
    price = shop.price_field(await read_json(request), "price")
    product = shop.set_price(product_id, price)
    if product is None:
        return JSONResponse({"error": f"no product {product_id}"}, status_code=404)
    # When Starlette starts the answer: an endpoint that fails before it invalidates nothing.
    request_tasks(request).after_route.start_soon_named(
        "invalidate-product", shop.invalidate_cache, product_id
    )
    return JSONResponse(asdict(product))


async def upload_photo(request: Request) -> Response:
    if not await request.body():
        raise shop.BadRequest("the body must be the image")
    photo_id = next(shop.photo_ids)
    manager = app_tasks(request)  # app lifetime: the thumbnails outlive this request
    handle = manager.start_soon_named("make-thumbnails", shop.make_thumbnails, manager, photo_id)
    return JSONResponse({"photo_id": photo_id, "task": handle.id}, status_code=202)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncGenerator[None]:
    shop.outbox.add("lifespan", "startup")
    yield
    shop.outbox.add("lifespan", "shutdown")


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
    exception_handlers={shop.BadRequest: bad_request},
    lifespan=lifespan,
)
"""The app to serve, with TaskMiddleware inside Starlette's error handling."""
