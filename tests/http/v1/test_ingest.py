"""``/v1/ingest``: the shop's pushes are validated field by field and need an ingest (or admin) key;
a refused push stores nothing."""

from __future__ import annotations

import pytest

from ..conftest import client, new_key, problem

ORDER = {"customer": "c1", "items": [{"product": "p1", "title": "衬衫", "quantity": 2}], "status": "paid", "created_at": 1_700_000_000_000}


@pytest.mark.parametrize("path, body, field", [
    ("/v1/ingest/orders/o1", {**ORDER, "items": []}, "items"),
    ("/v1/ingest/orders/o1", {**ORDER, "customer": "web:v-1"}, "customer"),
    ("/v1/ingest/orders/o1", {**ORDER, "items": [{"product": "p1", "quantity": 0}]}, "items.0.quantity"),
    ("/v1/ingest/products/p1", {"title": "", "price": 1}, "title"),
    ("/v1/ingest/products/p1", {"title": "衬衫", "price": -1}, "price"),
    ("/v1/ingest/products/p1", {"title": "衬衫", "stock": {"M": "many"}}, "stock.M"),
    ("/v1/ingest/customers/c1", {"name": "王", "vip": True}, "vip"),
    ("/v1/ingest/events", {"product": "p1", "ts": -5, "customer": "c1"}, "ts"),
])
async def test_a_malformed_push_is_refused_naming_the_field(api, path, body, field):
    method = api.post if path.endswith("events") else api.put
    doc = problem(await method(path, json=body), 422, "bad_request")
    assert any(e["field"] == field for e in doc["errors"]), doc


async def test_an_event_names_a_customer_or_an_identity_not_both_nor_neither(api):
    problem(await api.post("/v1/ingest/events", json={"product": "p1", "ts": 1}), 422, "bad_request")
    problem(await api.post("/v1/ingest/events", json={"product": "p1", "ts": 1, "customer": "c1", "channel": "web", "user": "v"}), 422, "bad_request")
    stored = await api.post("/v1/ingest/events", json={"product": "p1", "ts": 1, "channel": "web", "user": "v-9"})
    assert stored.status_code == 201 and stored.json()["id"] == "web:v-9"  # an anonymous visitor's own customer


async def test_pushing_needs_an_ingest_key_and_a_refused_push_stores_nothing(api):
    gw = api.gateway
    async with client(gw, await new_key(gw, scopes=("read",))) as reader:
        problem(await reader.put("/v1/ingest/orders/o1", json=ORDER), 403, "forbidden")
        problem(await reader.put("/v1/ingest/customers/c1", json={"name": "王女士"}), 403, "forbidden")
    problem(await api.put("/v1/ingest/customers/a:b", json={"name": "王女士"}), 422, "bad_request")
    problem(await api.get("/v1/customers/c1"), 404, "not_found")  # nothing was stored for c1
    async with client(gw, await new_key(gw, scopes=("ingest",))) as shop:
        assert (await shop.put("/v1/ingest/orders/o1", json=ORDER)).json() == {"kind": "order", "id": "o1", "told": 0}
        assert (await shop.put("/v1/ingest/customers/c1", json={"name": "王女士", "tier": "金卡"})).status_code == 200
    context = (await api.get("/v1/customers/c1/context")).json()
    assert context["status"] == "ok" and context["context"]["profile"]["tier"] == "金卡"
    assert [o["id"] for o in context["context"]["orders"]] == ["o1"]
