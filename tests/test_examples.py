"""The examples under a real Hypercorn: every scenario, its response and its background work.

Each test runs for the three examples (raw ASGI, Starlette, Quart-Trio), which serve the same
routes over the same shop (``examples/shop.py``) and record their background work in its
``outbox``, reset before each test. The server runs in a nursery the test owns, so the graceful
shutdown (connections, then ``lifespan.shutdown``) runs for real; once ``serve_app()`` has
returned, every request task and app task is done, and ``server.wait_idle()`` waits for them
inside the block, without polling.
"""

from __future__ import annotations

import importlib
import time
from types import ModuleType
from typing import Any

import pytest

from examples import shop
from trio_bg.__main__ import load_app
from trio_bg.asgi import TaskMiddleware
from trio_bg.testing import ServedApp, serve_app

EXAMPLES = ("raw_asgi", "starlette_app", "quart_trio_app")


@pytest.fixture
def example(request: pytest.FixtureRequest) -> ModuleType:
    """The example module, with the shop's outbox and product cache emptied (and its catalogue
    restored: the three examples share it)."""
    module = importlib.import_module(f"examples.{request.param}")
    shop.reset()
    return module


def examples() -> pytest.MarkDecorator:
    return pytest.mark.parametrize("example", EXAMPLES, indirect=True)


async def sent(server: ServedApp, kind: str) -> list[Any]:
    """The outbox records of ``kind`` once every request's and the app's tasks are done."""
    await server.wait_idle()
    records: list[Any] = shop.outbox.of(kind)
    return records


def texts(outbox: Any, kind: str) -> list[str]:
    return [record.text for record in outbox.of(kind)]


def task_middleware(app: Any) -> TaskMiddleware:
    """The TaskMiddleware of an example: the app itself, Quart's ``asgi_app``, or in Starlette's
    middleware stack (``ServerErrorMiddleware(TaskMiddleware(...))``)."""
    candidate = app
    for attribute in ("asgi_app", "middleware_stack", "app"):
        if isinstance(candidate, TaskMiddleware):
            break
        candidate = getattr(candidate, attribute, candidate)
    assert isinstance(candidate, TaskMiddleware)
    return candidate


@examples()
def test_the_serve_command_in_the_docstring_loads_the_app(example: ModuleType) -> None:
    name = example.__name__
    assert f"python -m trio_bg serve {name}:app" in (example.__doc__ or "")
    assert load_app(f"{name}:app") is example.app


@examples()
async def test_order_confirmation_is_sent_after_the_response(example: ModuleType) -> None:
    outbox = shop.outbox
    async with serve_app(example.app) as server:
        response = await server.client.post(
            "/orders", json={"email": "ada@example.com", "product_id": 1}
        )
        answered = time.monotonic()
        assert response.status_code == 201
        order_id = response.json()["order_id"]
        assert outbox.of("email") == []  # the answer did not wait for the mail server
        [email] = await sent(server, "email")
        assert email.text == f"order {order_id} confirmed to ada@example.com"
        assert email.at > answered
        [audit] = await sent(server, "audit")  # declared on the route
        assert audit.text == "orders"


@examples()
async def test_an_invalid_order_is_refused_and_confirms_nothing(example: ModuleType) -> None:
    outbox = shop.outbox
    async with serve_app(example.app) as server:
        response = await server.client.post("/orders", json={"product_id": 1})
        assert response.status_code == 422
        assert response.json() == {"error": "'email' must be a non-empty string"}
        response = await server.client.post("/orders", json={"email": "ada@example.com"})
        assert response.status_code == 422
        assert response.json() == {"error": "'product_id' must be an integer"}
        response = await server.client.post("/orders", content=b"not json")
        assert response.status_code == 422
        # The route's audit was started before the body was read; a 422 is a full response.
        await server.wait_idle()
    assert texts(outbox, "audit") == ["orders", "orders", "orders"]
    assert outbox.of("email") == []


@examples()
async def test_an_order_that_fails_to_save_sends_no_email(
    example: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = shop.outbox
    async with serve_app(example.app) as server:
        # The email is scheduled, then saving raises KeyError for the unknown product.
        response = await server.client.post(
            "/orders", json={"email": "ada@example.com", "product_id": 99}
        )
        assert response.status_code == 500
    # The exception reached the middleware before any response was sent, so the request's
    # deferred tasks (the email, and the route's audit) were dropped, with one warning.
    assert outbox.of("email") == []
    assert outbox.of("audit") == []
    [warning] = [r for r in caplog.records if r.name == "trio_bg" and "not run" in r.message]
    assert warning.levelname == "WARNING"
    assert "'confirm-order'" in warning.message
    assert "'audit'" in warning.message
    # The server logged the handler's own exception, once (Quart-Trio's nursery wraps it).
    [logged] = [r.exc_info[1] for r in caplog.records if r.name == "hypercorn.error" and r.exc_info]
    key_error = pytest.RaisesGroup(
        pytest.RaisesExc(KeyError, check=lambda exc: exc.args == (99,)),
        allow_unwrapped=True,
        flatten_subgroups=True,
    )
    assert key_error.matches(logged), repr(logged)


@examples()
async def test_registration_creates_the_profile_now_and_mails_after(example: ModuleType) -> None:
    outbox = shop.outbox
    async with serve_app(example.app) as server:
        response = await server.client.post(
            "/register", json={"email": "grace@example.com", "name": "Grace"}
        )
        answered = time.monotonic()
        assert response.status_code == 201
        user_id = response.json()["user_id"]
        assert outbox.of("email") == []
        assert outbox.of("admin") == []
        [profile] = await sent(server, "profile")
        [welcome] = await sent(server, "email")
        [notice] = await sent(server, "admin")  # add_task(..., channel=...): after the response
    assert profile.text == f"user {user_id}: Grace"
    assert welcome.text == "welcome grace@example.com"
    assert notice.text == f"new user {user_id} on #signups"
    assert welcome.at > answered
    assert notice.at > answered
    assert outbox.of("audit") == []


@examples()
async def test_a_webhook_is_answered_at_once_and_processed_after(example: ModuleType) -> None:
    outbox = shop.outbox
    event = {"id": "evt_1", "type": "payment.succeeded"}
    async with serve_app(example.app) as server:
        response = await server.client.post("/webhooks/payment", json=event)
        answered = time.monotonic()
        assert response.status_code == 200
        assert response.json() == {"received": "evt_1"}
        assert outbox.of("webhook") == []
        [processed] = await sent(server, "webhook")
        assert processed.text == "evt_1 payment.succeeded"
        assert processed.at > answered
        response = await server.client.post("/webhooks/payment", json={"id": "evt_2"})
        assert response.status_code == 422
    assert texts(outbox, "webhook") == ["evt_1 payment.succeeded"]


@examples()
async def test_a_shutdown_does_not_cut_a_payment_in_half(example: ModuleType) -> None:
    outbox = shop.outbox
    # Hypercorn cancels open requests 10 ms into the shutdown: the shielded webhook task runs
    # on (up to the middleware's shield_timeout), the unshielded order email is cancelled.
    async with serve_app(example.app, graceful_timeout=0.01) as server:
        event = {"id": "evt_9", "type": "payment.succeeded"}
        assert (await server.client.post("/webhooks/payment", json=event)).status_code == 200
        order = {"email": "ada@example.com", "product_id": 1}
        assert (await server.client.post("/orders", json=order)).status_code == 201
        assert outbox.of("webhook") == []
    assert texts(outbox, "webhook") == ["evt_9 payment.succeeded"]
    assert outbox.of("email") == []


@examples()
async def test_a_product_update_invalidates_the_cache_at_after_route(example: ModuleType) -> None:
    outbox = shop.outbox
    async with serve_app(example.app) as server:
        first = await server.client.get("/products/2")
        assert first.status_code == 200
        assert first.headers["x-cache"] == "miss"
        price = first.json()["price"]
        assert (await server.client.get("/products/2")).headers["x-cache"] == "hit"

        updated = await server.client.put("/products/2", json={"price": price + 5})
        assert updated.status_code == 200
        assert updated.json() == {"id": 2, "name": "Kettle", "price": price + 5}
        [invalidated] = await sent(server, "cache")
        assert invalidated.text == "product 2 invalidated"
        fresh = await server.client.get("/products/2")
        assert fresh.headers["x-cache"] == "miss"
        assert fresh.json()["price"] == price + 5

        # Refused updates start no invalidation.
        assert (await server.client.put("/products/99", json={"price": 1})).status_code == 404
        assert (await server.client.put("/products/2", json={"price": "free"})).status_code == 422
    assert texts(outbox, "cache") == ["product 2 invalidated"]


@examples()
async def test_thumbnails_are_made_in_a_group_and_collected_in_order(
    example: ModuleType,
) -> None:
    outbox = shop.outbox
    async with serve_app(example.app) as server:
        response = await server.client.post("/photos", content=b"\x89PNG not really")
        assert response.status_code == 202
        photo_id, task_id = response.json()["photo_id"], response.json()["task"]
        assert isinstance(task_id, str)
        [collected] = await sent(server, "thumbnails")
        assert (await server.client.post("/photos", content=b"")).status_code == 422
    # The resizes finish out of order; wait_all() answers in start order.
    assert texts(outbox, "thumbnail") == [
        f"photo {photo_id} at 300px",
        f"photo {photo_id} at 600px",
        f"photo {photo_id} at 150px",
    ]
    assert collected.text == ", ".join(f"photo-{photo_id}-{size}.jpg" for size in (150, 300, 600))
    assert len(outbox.of("thumbnails")) == 1


@examples()
async def test_the_route_declared_audit_runs_for_its_route_only(example: ModuleType) -> None:
    outbox = shop.outbox
    async with serve_app(example.app) as server:
        await server.client.post("/register", json={"email": "a@example.com", "name": "A"})
        await server.client.post("/webhooks/payment", json={"id": "evt_3", "type": "refund"})
        await server.client.get("/products/1")
        await server.client.put("/products/1", json={"price": 10})
        await server.client.post("/photos", content=b"img")
        assert outbox.of("audit") == []
        await server.client.post("/orders", json={"email": "b@example.com", "product_id": 2})
        await server.wait_idle()
    assert texts(outbox, "audit") == ["orders"]


@examples()
async def test_the_shutdown_drains_app_tasks_before_the_app_shuts_down(
    example: ModuleType,
) -> None:
    outbox = shop.outbox
    middleware = task_middleware(example.app)
    assert middleware.app_manager is None
    async with serve_app(example.app) as server:
        manager = middleware.app_manager
        assert manager is not None
        assert not manager.closed
        response = await server.client.post("/photos", content=b"img")
        assert response.status_code == 202
        photo_id = response.json()["photo_id"]
        assert outbox.of("thumbnails") == []  # shut down while the thumbnails are being made
    assert middleware.app_manager is None
    assert manager.closed
    report = manager.shutdown_report
    assert report is not None
    assert report.cancelled == ()  # nothing dropped: the grace period was enough
    # The middleware closes the app manager before the app's own lifespan shutdown runs.
    assert [(r.kind, r.text) for r in outbox.sent if r.kind in ("lifespan", "thumbnails")] == [
        ("lifespan", "startup"),
        ("thumbnails", ", ".join(f"photo-{photo_id}-{size}.jpg" for size in (150, 300, 600))),
        ("lifespan", "shutdown"),
    ]
    stats = manager.statistics()
    assert (stats.started, stats.succeeded, stats.failed, stats.cancelled) == (4, 4, 0, 0)
