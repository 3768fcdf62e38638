"""One customer across channels: links from token claims and the REST API, one history, an
anonymous visitor's login merging (recorded, visible, undoable by an admin only)."""

from __future__ import annotations

import trio

from ..http.conftest import client, new_key, problem
from ..support import connect, token


async def open_conv(gw, user: str, channel: str, customer: str | None = None) -> str:
    async with connect(gw.url, token(user, channel=channel, customer=customer), resume={}) as shopper:
        return (await shopper.ok("open"))["conv"]["id"]


async def test_a_shopper_on_two_channels_is_one_customer_with_one_history(desk):
    gw = desk.gateway
    with trio.fail_after(20):
        app_conv = await open_conv(gw, "u1", "app", customer="c1")
        mini_conv = await open_conv(gw, "o-7f", "miniprogram", customer="c1")
        other = await open_conv(gw, "u2", "app", customer="c2")
        customer = (await desk.get("/v1/customers/c1")).json()
        assert customer["links"] == ["app:u1", "miniprogram:o-7f"] and customer["merged_into"] == ""
        history = (await desk.get("/v1/customers/c1/conversations")).json()["conversations"]
        assert [c["id"] for c in history] == [mini_conv, app_conv]  # newest first, both channels
        assert other not in {c["id"] for c in history}
        assert (await desk.get("/v1/merges")).json()["merges"] == []  # linking new identities merges nothing


async def test_an_anonymous_visitor_who_logs_in_is_merged_keeping_both_histories_and_an_admin_undoes_it(desk):
    gw = desk.gateway
    with trio.fail_after(20):
        app_conv = await open_conv(gw, "u1", "app", customer="c1")
        anonymous = await open_conv(gw, "v-3a", "web")  # not logged in: a customer of its own
        assert (await desk.get("/v1/customers/web:v-3a")).json()["links"] == ["web:v-3a"]
        logged_in = await open_conv(gw, "v-3a", "web", customer="c1")

        customer = (await desk.get("/v1/customers/c1")).json()
        assert customer["links"] == ["app:u1", "web:v-3a"] and customer["absorbed"] == ["web:v-3a"]
        assert (await desk.get("/v1/customers/web:v-3a")).json()["merged_into"] == "c1"
        history = {c["id"] for c in (await desk.get("/v1/customers/c1/conversations")).json()["conversations"]}
        assert history == {app_conv, anonymous, logged_in}
        [merge] = (await desk.get("/v1/customers/c1/merges")).json()["merges"]
        assert (merge["from"], merge["into"], merge["links"], merge["by"], merge["undone_at"]) == ("web:v-3a", "c1", ["web:v-3a"], "token", 0)

        async with client(gw, await new_key(gw, scopes=("ingest", "read"))) as shop:
            problem(await shop.post(f"/v1/merges/{merge['id']}/undo"), 403, "forbidden")
        undone = (await desk.post(f"/v1/merges/{merge['id']}/undo")).json()
        assert undone["undone_at"] > 0 and undone["undone_by"].startswith("apikey:")
        assert (await desk.get("/v1/customers/c1")).json()["links"] == ["app:u1"]
        restored = (await desk.get("/v1/customers/web:v-3a")).json()
        assert restored["links"] == ["web:v-3a"] and restored["merged_into"] == ""
        assert {c["id"] for c in (await desk.get("/v1/customers/web:v-3a/conversations")).json()["conversations"]} == {anonymous, logged_in}
        assert {c["id"] for c in (await desk.get("/v1/customers/c1/conversations")).json()["conversations"]} == {app_conv}
        again = await open_conv(gw, "v-3a", "web", customer="c1")  # the token still claims c1: the undo holds
        assert (await desk.get("/v1/customers/c1")).json()["links"] == ["app:u1"]
        assert again in {c["id"] for c in (await desk.get("/v1/customers/web:v-3a/conversations")).json()["conversations"]}
        relinked = await desk.post("/v1/customers/c1/links", json={"channel": "web", "user": "v-3a"})  # the API decides
        assert relinked.json()["links"] == ["app:u1", "web:v-3a"]
        assert len((await desk.get("/v1/merges")).json()["merges"]) == 2
        problem(await desk.post(f"/v1/merges/{merge['id']}/undo"), 409, "conflict")
        problem(await desk.post("/v1/merges/nope/undo"), 404, "not_found")


async def test_identities_are_linked_over_rest_and_tokens_name_a_customer(desk):
    gw = desk.gateway
    with trio.fail_after(20):
        linked = await desk.post("/v1/customers/c9/links", json={"channel": "miniprogram", "user": "o-1"})
        assert linked.status_code == 200 and linked.json()["links"] == ["miniprogram:o-1"]
        problem(await desk.post("/v1/customers/c9/links", json={"channel": "fax", "user": "o-1"}), 422, "bad_request")
        problem(await desk.post("/v1/customers/a:b/links", json={"channel": "web", "user": "o-1"}), 422, "bad_request")
        problem(await desk.get("/v1/customers/nobody"), 404, "not_found")
        minted = (await desk.post("/v1/tokens", json={"user": "o-1", "role": "shopper", "channel": "miniprogram", "customer": "c9"})).json()
        assert minted["customer"] == "c9"
        problem(await desk.post("/v1/tokens", json={"user": "a1", "role": "agent", "customer": "c9"}), 422, "bad_request")
        async with connect(gw.url, minted["token"], resume={}) as shopper:
            assert (await shopper.ok("open"))["customer"] == "c9"


async def test_a_token_with_a_malformed_customer_claim_is_refused(desk):
    async with connect(desk.gateway.url, token("u1", customer="a:b"), hello=False) as shopper:
        refused = await shopper.recv()
        assert refused["t"] == "error" and refused["code"] == "token_invalid"
