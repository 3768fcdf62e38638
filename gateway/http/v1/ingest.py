"""``/v1/ingest``: the shop pushes what the built-in context provider knows: customers' profiles,
orders, products (the catalog the bot uses too) and browsing events. Pushing about a customer
an agent is serving sends that agent the new context."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ...customers.context import order_key, view_key
from ..operations import Body, Call, Operation
from ..problems import Problem


class ProfileIn(Body):
    name: str = Field(default="", max_length=100)
    tier: str = Field(default="", max_length=32, description="Membership tier (金卡, VIP…).")
    tags: list[str] = Field(default_factory=list, max_length=20)
    phone: str = Field(default="", max_length=32)


class OrderItem(Body):
    product: str = Field(min_length=1, max_length=128)
    title: str = Field(default="", max_length=200)
    quantity: int = Field(default=1, ge=1, le=10_000)
    price: float | None = Field(default=None, ge=0)
    size: str = Field(default="", max_length=32)
    colour: str = Field(default="", max_length=32)


class OrderIn(Body):
    customer: str = Field(min_length=1, max_length=128, pattern=r"^[^:/]+$")
    items: list[OrderItem] = Field(min_length=1, max_length=100)
    status: str = Field(min_length=1, max_length=32, description="paid, shipped, delivered, refunded… (the shop's words).")
    total: float | None = Field(default=None, ge=0)
    created_at: int = Field(ge=0, description="ms since the epoch.")
    tracking: str = Field(default="", max_length=64)


class ProductIn(Body):
    title: str = Field(min_length=1, max_length=200)
    price: float | None = Field(default=None, ge=0)
    currency: str = Field(default="CNY", max_length=3)
    image: str = Field(default="", max_length=1000, description="Image URL.")
    attributes: dict[str, str] = Field(default_factory=dict, description="material, colour, fit… (material: 面料).")
    sizes: list[str] = Field(default_factory=list, max_length=50)
    size_chart: dict[str, dict[str, str]] = Field(default_factory=dict, description="size -> {measure: value}.")
    stock: dict[str, int] = Field(default_factory=dict, description="size -> units available.")


class EventIn(Body):
    type: Literal["view"] = "view"
    customer: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[^:/]+$", description="The shop's customer id; or give `channel` and `user` for an identity not logged in.")
    channel: Literal["app", "miniprogram", "web"] | None = None
    user: str | None = Field(default=None, min_length=1, max_length=128)
    product: str = Field(min_length=1, max_length=128)
    ts: int = Field(ge=0, lt=10**13, description="ms since the epoch.")


class Stored(BaseModel):
    kind: str
    id: str
    told: int = Field(description="Conversations whose agent was sent the new context.")


def _workspace(call: Call) -> Any:
    return call.services.node.workspace


def _path_id(call: Call, name: str) -> str:
    value = call.path[name]
    if not 0 < len(value) <= 128 or ":" in value or "/" in value:
        raise Problem("bad_request", f"`{name}` has 1..128 characters, no `:` or `/`", status=422)
    return value


async def put_customer(call: Call) -> tuple[int, dict]:
    workspace = _workspace(call)
    customer_id = _path_id(call, "customer_id")
    await workspace.directory.ensure(call.tenant, customer_id)
    await workspace.book.put(call.tenant, "profile", customer_id, call.body.model_dump())
    return 200, {"kind": "customer", "id": customer_id, "told": await workspace.customer_changed(call.tenant, customer_id)}


async def put_order(call: Call) -> tuple[int, dict]:
    workspace = _workspace(call)
    order_id = _path_id(call, "order_id")
    order = {"id": order_id, **call.body.model_dump()}
    await workspace.book.put(call.tenant, "order", order_key(call.body.customer, order_id), order)
    return 200, {"kind": "order", "id": order_id, "told": await workspace.customer_changed(call.tenant, call.body.customer)}


async def put_product(call: Call) -> tuple[int, dict]:
    product_id = _path_id(call, "product_id")
    await _workspace(call).catalog.put(call.tenant, product_id, call.body.model_dump())
    return 200, {"kind": "product", "id": product_id, "told": 0}


async def post_event(call: Call) -> tuple[int, dict]:
    workspace, body = _workspace(call), call.body
    if body.customer is not None:
        customer_id = body.customer
        if (body.channel, body.user) != (None, None):
            raise Problem("bad_request", "give either `customer`, or `channel` and `user`", status=422)
    elif body.channel is not None and body.user is not None:
        customer_id = (await workspace.directory.customer_of(call.tenant, body.channel, body.user))["id"]
    else:
        raise Problem("bad_request", "give either `customer`, or `channel` and `user`", status=422)
    await workspace.book.put(call.tenant, "view", view_key(customer_id, body.ts), {"product": body.product, "ts": body.ts})
    return 201, {"kind": "view", "id": customer_id, "told": await workspace.customer_changed(call.tenant, customer_id)}


INGEST = frozenset({"ingest"})
OPERATIONS = (
    Operation("PUT", "/v1/ingest/customers/{customer_id}", put_customer, "Store a customer's profile (name, tier, tags).", INGEST, body=ProfileIn, response=Stored),
    Operation("PUT", "/v1/ingest/orders/{order_id}", put_order, "Store an order (items, status) of a customer.", INGEST, body=OrderIn, response=Stored),
    Operation("PUT", "/v1/ingest/products/{product_id}", put_product, "Store a catalog product (title, attributes, sizes, size chart, price, image, stock).", INGEST, body=ProductIn, response=Stored),
    Operation("POST", "/v1/ingest/events", post_event, "Record a browsing event (a product viewed) of a customer or of a not-logged-in identity.", INGEST, body=EventIn, response=Stored, status=201),
)
