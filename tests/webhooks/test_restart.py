"""Webhook deliveries that still wait when the gateway is stopped gracefully are sent by the next
start, with the same delivery id: a deploy does not lose a shop's events."""

from __future__ import annotations

import logging

import trio

from gateway.model import DeleteRecord
from gateway.store import SqliteBackend
from gateway.webhooks.sender import PENDING_KIND, PENDING_TENANT, RECORD_KIND

from ..http.conftest import client, new_key
from ..postgres import PG_URL, drop_schema, fresh_schema
from ..support import connect, token
from .test_sender import delivered, metric, subscribe


async def stop(gw) -> None:
    gw.node.stop()  # what SIGTERM does
    with trio.fail_after(15):
        await gw.node.stopped()


async def test_a_delivery_waiting_for_its_retry_is_sent_after_a_graceful_restart(start_gateway, receiver, caplog):
    caplog.set_level(logging.INFO, logger="kefu.webhooks")
    gw = await start_gateway(store="sqlite", webhooks_allow_private="yes")
    gw.node.webhooks.retry_after_s = (3600.0,)  # its retry would come long after the restart
    receiver.answers = [503]
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, receiver.url + "/orders", ["conversation.opened"])
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
        [first] = await receiver.wait_for(1)
    await stop(gw)
    assert any("1 webhook deliveries saved for the next start" in r.getMessage() for r in caplog.records)

    again = await start_gateway(store="sqlite", webhooks_allow_private="yes")  # the same data directory
    [_, second] = await receiver.wait_for(2)
    assert second.headers["kefu-delivery"] == first.headers["kefu-delivery"] and second.body == first.body
    assert second.doc["data"]["conversation"]["id"] == conv
    assert await delivered(again, 1) == 1
    assert await again.node.store.records(PENDING_TENANT, PENDING_KIND) == []  # taken: sent once
    await trio.sleep(0.3)
    assert len(receiver.got) == 2


async def test_a_post_in_flight_at_shutdown_is_saved_too_and_events_not_yet_matched_are(start_gateway, receiver):
    gw = await start_gateway(store="sqlite", webhooks_allow_private="yes")
    held = receiver.hold = trio.Event()  # the receiver does not answer: the POST stays in flight
    async with client(gw, await new_key(gw)) as api:
        await subscribe(api, receiver.url + "/slow", ["conversation.opened"])
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            await shopper.ok("open")
            [in_flight] = await receiver.wait_for(1)
            for n in range(3):  # queued behind nothing: matched and sent at once, all held
                await connect_and_open(gw, f"s{n + 2}")
            await receiver.wait_for(4)
    await stop(gw)  # waits for the POSTs in flight a moment, then saves them
    saved = await saved_records(gw)
    assert len(saved) == 4 and in_flight.headers["kefu-delivery"] in {key.split("/")[0] for key in saved}
    receiver.hold = None
    held.set()

    again = await start_gateway(store="sqlite", webhooks_allow_private="yes")
    got = await receiver.wait_for(8)
    assert {r.headers["kefu-delivery"] for r in got[4:]} == {r.headers["kefu-delivery"] for r in got[:4]}  # the same ids: receivers dedupe
    assert await delivered(again, 4) == 4
    assert metric(again, "kefu_webhook_pending") == 0


async def connect_and_open(gw, user: str) -> None:
    async with connect(gw.url, token(user), resume={}) as shopper:
        await shopper.ok("open")


async def saved_records(gw) -> list[str]:
    """What the stopped gateway left in its SQLite file (read by a fresh store, as the next start would)."""
    backend = SqliteBackend(gw.node.config.sqlite_path)
    backend.open()
    try:
        return [record.key for record in backend.records(PENDING_TENANT, PENDING_KIND)]
    finally:
        backend.close()


async def test_a_delivery_to_a_webhook_deleted_meanwhile_is_not_restored(start_gateway, receiver, caplog):
    caplog.set_level(logging.INFO, logger="kefu.webhooks")
    gw = await start_gateway(store="sqlite", webhooks_allow_private="yes")
    gw.node.webhooks.retry_after_s = (3600.0,)
    receiver.answers = [503]
    async with client(gw, await new_key(gw)) as api:
        hook = await subscribe(api, receiver.url + "/gone", ["conversation.opened"])
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            await shopper.ok("open")
        await receiver.wait_for(1)
    await stop(gw)
    backend = SqliteBackend(gw.node.config.sqlite_path)  # the webhook is deleted while the gateway is down
    backend.open()
    try:
        assert backend.apply_batch([DeleteRecord("shop1", RECORD_KIND, hook["id"])]) == [True]
    finally:
        backend.close()
    again = await start_gateway(store="sqlite", webhooks_allow_private="yes")
    with trio.fail_after(10):
        while not any("restored (1 for webhooks deleted since)" in r.getMessage() for r in caplog.records):
            await trio.sleep(0.01)
    assert await again.node.store.records(PENDING_TENANT, PENDING_KIND) == []
    assert len(receiver.got) == 1 and metric(again, "kefu_webhook_pending") == 0


async def test_two_nodes_starting_at_once_on_postgresql_send_each_saved_delivery_once(start_gateway, receiver):
    schema = fresh_schema()
    shared = {"store": PG_URL, "store_schema": schema, "webhooks_allow_private": "yes"}
    started: list = []
    try:
        gw = await start_gateway(**shared)
        gw.node.webhooks.retry_after_s = (3600.0,)
        receiver.answers = [503] * 5
        async with client(gw, await new_key(gw)) as api:
            await subscribe(api, receiver.url + "/orders", ["conversation.opened"])
            for n in range(5):
                await connect_and_open(gw, f"s{n}")
            first = await receiver.wait_for(5)
        await stop(gw)

        async def boot() -> None:
            started.append(await start_gateway(**shared))

        async with trio.open_nursery() as starting:  # both read the saved deliveries as they start
            for _ in range(2):
                starting.start_soon(boot)
        got = await receiver.wait_for(10)
        await trio.sleep(0.5)
        assert len(receiver.got) == 10  # five first attempts, and each saved delivery sent once more
        assert sorted(r.headers["kefu-delivery"] for r in got[5:]) == sorted(r.headers["kefu-delivery"] for r in first)
    finally:
        for node in started:
            await stop(node)
        drop_schema(schema)
