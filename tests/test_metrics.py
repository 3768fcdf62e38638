"""Metrics read at scrape time, logs that carry context and never secrets."""

from __future__ import annotations

import json
import logging

import trio

from gateway.app import serve
from gateway.build import IMPLEMENTATIONS
from gateway.bus import LocalBus
from gateway.logs import JsonFormatter

from .conftest import make_config
from .support import connect, token

TEXT = {"kind": "text", "text": "优惠券怎么用?"}


async def test_counters_move_with_traffic(gateway):
    value = gateway.registry.get_sample_value
    async with connect(gateway.url, token("alice"), resume={}) as shopper, connect(gateway.url, token("bob", "agent"), resume={}) as agent:
        assert value("kefu_connections", {"role": "shopper"}) == 1
        assert value("kefu_connections", {"role": "agent"}) == 1
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        for i in range(5):
            await shopper.ok("send", conv=conv, cmid=str(i), body=TEXT)
        await shopper.ok("send", conv=conv, cmid="0", body=TEXT)  # a duplicate
        for _ in range(5):
            await agent.next("msg")
        await shopper.send_raw(b"\xc1")
        await shopper.next("error")
    async with connect(gateway.url, "bad-token", hello=False) as refused:
        await refused.closed()
    with trio.fail_after(5):
        while value("kefu_connections", {"role": "shopper"}) != 0:
            await trio.sleep(0.01)
    assert value("kefu_messages_accepted_total") == 5
    assert value("kefu_messages_duplicate_total") == 1
    assert value("kefu_messages_delivered_total") == 5
    assert value("kefu_ack_latency_seconds_count") == 6
    assert value("kefu_store_commit_batch_size_count") >= 1
    assert value("kefu_errors_total", {"code": "bad_frame"}) == 1
    assert value("kefu_auth_failures_total", {"code": "token_invalid"}) == 1
    assert value("kefu_closes_total", {"code": "4001"}) == 1
    assert value("kefu_build_info", {"version": "0.1.0", **IMPLEMENTATIONS}) == 1


def test_json_logs_carry_the_connection_context():
    record = logging.LogRecord("kefu.node", logging.INFO, __file__, 1, "error %s", ("bad_frame",), None)
    record.conn, record.tenant, record.user = "ab-1", "shop1", "王丽"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "error bad_frame" and entry["user"] == "王丽" and entry["conn"] == "ab-1" and entry["level"] == "info"


class BrokenNode:
    """Another node on the bus whose handler fails on every event."""

    def __getattr__(self, name):
        def fail(*args):
            raise RuntimeError("node down")

        return fail


async def test_a_failed_publish_is_exported_and_the_message_still_acked_and_delivered(nursery, tmp_path):
    bus = LocalBus()
    gw = await nursery.start(lambda task_status: serve(make_config(tmp_path), bus=bus, task_status=task_status))
    async with connect(gw.url, token("alice"), resume={}) as shopper, connect(gw.url, token("bob", "agent"), resume={}) as agent:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        await nursery.start(bus.run, BrokenNode())
        assert (await shopper.ok("send", conv=conv, cmid="m1", body=TEXT))["seq"] == 1
        assert (await agent.next("msg", conv=conv))["seq"] == 1  # this node got it all the same
    assert gw.registry.get_sample_value("kefu_bus_publish_failures_total") >= 1
    gw.node.stop()
