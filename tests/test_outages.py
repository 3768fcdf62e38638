"""A gateway whose PostgreSQL or Redis goes away and comes back: sends are refused with a
retryable error and never acked without being durable, /readyz and the metrics say what is
happening, and the gateway recovers by itself."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from functools import partial

import httpx
import pytest
import trio

from gateway.app import serve
from gateway.bus.redis import RedisBus
from gateway.model import AppendMessage
from gateway.store import PostgresBackend, StoreError

from .conftest import make_config
from .postgres import PG_URL, drop_schema, fresh_schema
from .services import TcpProxy, private_redis  # noqa: F401  (the fixture)
from .support import connect, token
from .webhooks.conftest import receiver  # noqa: F401  (the fixture)

TEXT = {"kind": "text", "text": "还在吗"}

pytestmark = pytest.mark.timeout(60)


async def ready(running) -> tuple[int, str, str]:
    async with httpx.AsyncClient(base_url=running.http_url) as http:
        answer = await http.get("/readyz")
        metrics = (await http.get("/metrics")).text
    return answer.status_code, answer.text, metrics


def stored(schema: str, conv: str) -> list[tuple[int, str]]:
    """(seq, cmid) of every message PostgreSQL holds for ``conv``, read afresh."""
    check = PostgresBackend(PG_URL, schema=schema)
    check.open()
    try:
        return [(m.seq, m.cmid) for m in check.read_messages(conv, limit=100).messages]
    finally:
        check.close()


async def wait_ready(running, status: int) -> tuple[str, str]:
    while True:
        code, text, metrics = await ready(running)
        if code == status:
            return text, metrics
        await trio.sleep(0.05)


async def test_postgresql_away_mid_traffic_refuses_sends_retryably_and_recovers(nursery, tmp_path):
    proxy, schema = TcpProxy(5432), fresh_schema()
    await nursery.start(proxy.run)
    url = re.sub(r":5432/", f":{proxy.port}/", PG_URL)
    running = await nursery.start(serve, make_config(tmp_path, store=url, store_schema=schema))
    try:
        with trio.fail_after(45):
            text, metrics = await wait_ready(running, 200)
            assert text.splitlines()[:2] == ["ready", "store: ok - PostgresBackend"]
            async with connect(running.url, token("alice"), resume={}) as shopper, connect(running.url, token("bob", "agent"), resume={}) as agent:
                conv = (await shopper.ok("open"))["conv"]["id"]
                await agent.ok("join", conv=conv)
                acked = {}
                for i in range(5):
                    acked[f"m{i}"] = (await shopper.ok("send", conv=conv, cmid=f"m{i}", body=TEXT))["seq"]
                proxy.down()
                refused = await shopper.request("send", conv=conv, cmid="m5", body=TEXT)
                assert (refused["t"], refused["code"], refused["retryable"]) == ("error", "unavailable", True)
                text, metrics = await wait_ready(running, 503)
                assert "store: down" in text and "kefu_store_up 0.0" in metrics
                await proxy.up()
                while "m5" not in acked:  # the client retries with the same cmid until it is acked
                    reply = await shopper.request("send", conv=conv, cmid="m5", body=TEXT)
                    if reply["t"] == "ack":
                        acked["m5"] = reply["seq"]
                    else:
                        assert reply["code"] == "unavailable"
                        await trio.sleep(0.05)
                for i in range(6, 10):
                    acked[f"m{i}"] = (await shopper.ok("send", conv=conv, cmid=f"m{i}", body=TEXT))["seq"]
                assert list(acked.values()) == list(range(1, 11))
                got = [await agent.next("msg", conv=conv) for _ in range(10)]
                assert [(m["seq"], m["cmid"]) for m in got] == [(s, c) for c, s in acked.items()]
                text, metrics = await wait_ready(running, 200)
                assert "kefu_store_up 1.0" in metrics
        assert stored(schema, conv) == [(s, c) for c, s in acked.items()]  # each once
    finally:
        running.node.stop()
        with trio.fail_after(10):
            await running.node.stopped()
        drop_schema(schema)


async def test_readyz_and_metrics_say_when_redis_is_away(nursery, tmp_path, private_redis):
    running = await nursery.start(lambda task_status: serve(make_config(tmp_path), bus=RedisBus(private_redis.url), task_status=task_status))
    with trio.fail_after(30):
        text, metrics = await wait_ready(running, 200)
        assert "bus: ok" in text and "kefu_bus_up 1.0" in metrics
        assert re.search(r'^kefu_node_info\{bus="RedisBus",node="[0-9a-f]+",store="MemoryBackend"\} 1.0$', metrics, re.M)
        private_redis.kill()
        text, metrics = await wait_ready(running, 503)
        assert "bus: down" in text and "kefu_bus_up 0.0" in metrics
        private_redis.start()
        text, metrics = await wait_ready(running, 200)
        assert "bus: ok" in text and float(re.search(r"^kefu_bus_reconnects_total (\S+)", metrics, re.M).group(1)) >= 1
    running.node.stop()


class CommitAnswerLost:
    """PostgreSQL that commits a batch and then loses the connection before it answers, as an
    immediate stop can: once, for the batch holding the message ``cmid``. The gateway hears a
    failure, though the message is stored."""

    def __init__(self, inner: PostgresBackend, cmid: str) -> None:
        self.inner, self.cmid, self.lost = inner, cmid, False

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def apply_batch(self, ops):
        results = self.inner.apply_batch(ops)
        if not self.lost and any(type(op) is AppendMessage and op.cmid == self.cmid for op in ops):
            self.lost = True
            raise StoreError("PostgreSQL write failed: consuming input failed: server closed the connection unexpectedly")
        return results


async def test_a_message_whose_commit_answer_was_lost_is_delivered_once_when_resent(nursery, tmp_path):
    """The send is refused as retryable, the client resends it with its cmid, the store finds it
    stored and the gateway acks it then: the agent must get it then too (it never had), once."""
    schema = fresh_schema()
    backend = CommitAnswerLost(PostgresBackend(PG_URL, schema=schema), "m2")
    running = await nursery.start(partial(serve, make_config(tmp_path, store=PG_URL, store_schema=schema), backend=backend))
    try:
        with trio.fail_after(30):
            async with connect(running.url, token("alice"), resume={}) as shopper, connect(running.url, token("bob", "agent"), resume={}) as agent:
                conv = (await shopper.ok("open"))["conv"]["id"]
                await agent.ok("join", conv=conv)
                assert (await shopper.request("send", conv=conv, cmid="m1", body=TEXT))["seq"] == 1
                refused = await shopper.request("send", conv=conv, cmid="m2", body=TEXT)
                assert (refused["t"], refused["code"], refused["retryable"]) == ("error", "unavailable", True)
                assert (await shopper.request("send", conv=conv, cmid="m2", body=TEXT))["seq"] == 2  # stored after all
                assert (await shopper.request("send", conv=conv, cmid="m3", body=TEXT))["seq"] == 3
                got = [await agent.next("msg", conv=conv) for _ in range(3)]
                assert [(m["seq"], m["cmid"]) for m in got] == [(1, "m1"), (2, "m2"), (3, "m3")]
                assert (await shopper.request("send", conv=conv, cmid="m2", body=TEXT))["seq"] == 2  # resent again
                assert [f for f in await agent.quiet(0.2) if f["t"] == "msg"] == []  # delivered once
        assert stored(schema, conv) == [(1, "m1"), (2, "m2"), (3, "m3")]
    finally:
        running.node.stop()
        with trio.fail_after(10):
            await running.node.stopped()
        drop_schema(schema)


async def test_a_rest_post_whose_commit_answer_was_lost_is_delivered_and_told_once_when_retried(nursery, tmp_path, receiver):  # noqa: F811
    """The server-side twin of the test above: a backend's POST with an Idempotency-Key is refused
    as retryable, its retry finds the message stored (200, duplicate): the members get it then,
    once, and so does a webhook."""
    from .http.conftest import client, new_key

    schema = fresh_schema()
    backend = CommitAnswerLost(PostgresBackend(PG_URL, schema=schema), "p2")
    config = make_config(tmp_path, store=PG_URL, store_schema=schema, webhooks_allow_private="yes")
    running = await nursery.start(partial(serve, config, backend=backend))
    try:
        with trio.fail_after(30):
            async with client(running, await new_key(running)) as api, connect(running.url, token("bob", "agent"), resume={}) as agent:
                hook = await api.post("/v1/webhooks", json={"url": receiver.url + "/messages", "events": ["message.created"]})
                assert hook.status_code == 201, hook.text
                async with connect(running.url, token("alice"), resume={}) as shopper:
                    conv = (await shopper.ok("open"))["conv"]["id"]
                await agent.ok("join", conv=conv)
                notice = {"sender": {"role": "system"}, "body": {"kind": "text", "text": "您的订单已发货"}}
                refused = await api.post(f"/v1/conversations/{conv}/messages", headers={"idempotency-key": "p2"}, json=notice)
                assert refused.status_code == 503 and refused.json()["retryable"] is True, refused.text
                retried = await api.post(f"/v1/conversations/{conv}/messages", headers={"idempotency-key": "p2"}, json=notice)
                assert retried.status_code == 200 and retried.json()["duplicate"] is True and retried.json()["seq"] == 1, retried.text
                assert (await agent.next("msg", conv=conv))["cmid"] == "p2"
                again = await api.post(f"/v1/conversations/{conv}/messages", headers={"idempotency-key": "p2"}, json=notice)
                assert again.status_code == 200 and again.json()["duplicate"] is True
                assert [f for f in await agent.quiet(0.3) if f["t"] == "msg"] == []  # delivered once
        assert [r.doc["data"]["message"]["cmid"] for r in receiver.got] == ["p2"]  # told once
        assert stored(schema, conv) == [(1, "p2")]
    finally:
        running.node.stop()
        with trio.fail_after(10):
            await running.node.stopped()
        drop_schema(schema)


def postgresql(action: str) -> None:
    """Act on the machine's own PostgreSQL cluster (the one the tests use), as .ci/run starts it;
    ``restart`` in immediate mode: the server stops as a crash would, then starts again."""
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    mode = ["-m", "immediate"] if action in ("stop", "restart") else []
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, *mode], check=True, timeout=60, capture_output=True)


def postgresql_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.alone  # the README's test command runs the others in parallel, and this one after them
async def test_postgresql_restarted_mid_traffic_loses_and_repeats_nothing(nursery, tmp_path):
    """The real thing, not a proxy: the machine's PostgreSQL crashes (immediate stop) and starts
    again while a shopper sends; every send is acked exactly once, in order, or refused as
    retryable and resent with its cmid; the store holds each once and the agent got each once."""
    if shutil.which("pg_ctlcluster") is None or not os.path.isdir("/etc/postgresql"):
        pytest.fail("PostgreSQL's pg_ctlcluster is not installed (Debian's postgresql package)")
    schema = fresh_schema()
    running = await nursery.start(serve, make_config(tmp_path, store=PG_URL, store_schema=schema))
    try:
        with trio.fail_after(50):
            await wait_ready(running, 200)
            async with connect(running.url, token("alice"), resume={}) as shopper, connect(running.url, token("bob", "agent"), resume={}) as agent:
                conv = (await shopper.ok("open"))["conv"]["id"]
                await agent.ok("join", conv=conv)
                acked: dict[str, int] = {}
                refused = 0

                async def send_all() -> None:
                    nonlocal refused
                    for i in range(40):
                        while f"m{i}" not in acked:  # a client resends the same cmid until acked
                            reply = await shopper.request("send", conv=conv, cmid=f"m{i}", body=TEXT)
                            if reply["t"] == "ack":
                                acked[f"m{i}"] = reply["seq"]
                            else:
                                assert (reply["code"], reply["retryable"]) == ("unavailable", True), reply
                                refused += 1
                                await trio.sleep(0.05)
                        await trio.sleep(0.01)

                async with trio.open_nursery() as traffic:
                    traffic.start_soon(send_all)
                    while len(acked) < 10:
                        await trio.sleep(0.01)
                    await trio.to_thread.run_sync(postgresql, "restart")
                assert list(acked.values()) == list(range(1, 41))
                assert refused > 0  # the restart was felt, and answered retryably
                got = [await agent.next("msg", conv=conv) for _ in range(40)]
                assert [(m["seq"], m["cmid"]) for m in got] == [(s, c) for c, s in acked.items()]
                assert [f for f in await agent.quiet(0.2) if f["t"] == "msg"] == []
                await wait_ready(running, 200)
        assert stored(schema, conv) == [(s, c) for c, s in acked.items()]  # each once
    finally:
        if not postgresql_up():
            await trio.to_thread.run_sync(postgresql, "start")
        running.node.stop()
        with trio.fail_after(10):
            await running.node.stopped()
        drop_schema(schema)
