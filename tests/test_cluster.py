"""Several ``kefu serve`` processes over one PostgreSQL store and one Redis bus, with the members of
one conversation spread over them: messages, receipts and typing cross; concurrent appends from
every process stay gap-free; SIGKILL of one node mid-traffic loses and repeats nothing for the
members, who reconnect to a surviving node and resume."""

from __future__ import annotations

import secrets
import signal
from contextlib import AsyncExitStack, asynccontextmanager

import pytest
import trio
from trio_websocket import ConnectionClosed, HandshakeError

from .postgres import PG_URL, create_api_key, drop_schema, fresh_schema
from .support import connect, token
from .test_process import gateway_process
from .webhooks.conftest import receiver  # noqa: F401  (the fixture)

REDIS_URL = "redis://127.0.0.1:6379"
TEXT = {"kind": "text", "text": "在吗？"}

pytestmark = pytest.mark.timeout(90)


@asynccontextmanager
async def cluster(tmp_path, n: int, *flags: str, schema: str | None = None, channel: str | None = None):
    """``n`` gateway processes sharing a fresh PostgreSQL schema and a Redis channel of their own
    (or the given ones), with ``flags`` for each; yields [(process, websocket url, metrics url)]."""
    schema, channel = schema or fresh_schema(), channel or f"kefu:test:{secrets.token_hex(6)}"
    shared = ("--store", PG_URL, "--store-schema", schema, "--bus", REDIS_URL, "--bus-channel", channel, *flags)
    try:
        async with AsyncExitStack() as stack:
            nodes = []
            for i in range(n):
                nodes.append(await stack.enter_async_context(gateway_process(tmp_path / f"node{i}", *shared)))
            yield nodes
    finally:
        drop_schema(schema)


async def test_members_on_three_processes_hear_each_other(tmp_path):
    async with cluster(tmp_path, 3) as nodes:
        (_, url1, _), (_, url2, _), (_, url3, _) = nodes
        with trio.fail_after(30):
            async with connect(url1, token("alice"), resume={}) as shopper, connect(url2, token("bob", "agent"), resume={}) as agent, connect(
                url3, token("carol", "supervisor"), resume={}
            ) as supervisor:
                conv = (await shopper.ok("open"))["conv"]["id"]
                await agent.ok("join", conv=conv)
                await supervisor.ok("join", conv=conv)
                assert (await shopper.next("joined", conv=conv, user="carol"))["role"] == "supervisor"
                seq = (await shopper.ok("send", conv=conv, cmid="q1", body=TEXT))["seq"]
                for member in (agent, supervisor):
                    got = await member.next("msg", conv=conv)
                    assert (got["seq"], got["cmid"], got["from"]) == (seq, "q1", "alice")
                await agent.send("typing", conv=conv, on=True)
                assert (await shopper.next("typing", conv=conv))["user"] == "bob"
                reply = (await agent.ok("send", conv=conv, cmid="a1", body=TEXT))["seq"]
                assert (await shopper.next("msg", conv=conv))["seq"] == reply == seq + 1
                assert (await supervisor.next("msg", conv=conv, cmid="a1"))["seq"] == reply
                await shopper.ok("receipt", conv=conv, kind="read", seq=reply)
                for member in (agent, supervisor):
                    assert (await member.next("receipt", conv=conv, user="alice"))["seq"] == reply


async def test_concurrent_appends_from_three_processes_are_gap_free(tmp_path):
    async with cluster(tmp_path, 3) as nodes:
        urls = [url for _, url, _ in nodes]
        users = [("alice", "shopper"), ("bob", "agent"), ("dave", "agent")]
        per_member = 40
        with trio.fail_after(60):
            async with AsyncExitStack() as stack:
                clients = [await stack.enter_async_context(connect(url, token(user, role), resume={})) for url, (user, role) in zip(urls, users)]
                conv = (await clients[0].ok("open"))["conv"]["id"]
                for client in clients[1:]:
                    await client.ok("join", conv=conv)
                acks: dict[str, list[int]] = {}

                async def send_all(client, user):
                    rids = [await client.send("send", conv=conv, cmid=f"{user}-{i}", body=TEXT) for i in range(per_member)]
                    acks[user] = [(await client.next(id=rid))["seq"] for rid in rids]

                async with trio.open_nursery() as nursery:
                    for client, (user, _) in zip(clients, users):
                        nursery.start_soon(send_all, client, user)
                total = per_member * len(users)
                every = sorted(seq for seqs in acks.values() for seq in seqs)
                assert every == list(range(1, total + 1))  # gap-free, no number twice
                for user, seqs in acks.items():
                    assert seqs == sorted(seqs)  # one sender's messages keep its order
                for client, (user, _) in zip(clients, users):  # each member gets the others', in order, once
                    others = total - per_member
                    got = [await client.next("msg", conv=conv) for _ in range(others)]
                    assert [m["seq"] for m in got] == sorted(s for u, seqs in acks.items() if u != user for s in seqs)
                    assert [f for f in await client.quiet(0.2) if f["t"] == "msg"] == []
                history = await clients[1].ok("history", conv=conv, limit=200)
                assert [m["seq"] for m in history["messages"]] == list(range(1, total + 1))


class Member:
    """A client that survives its node's death: it reconnects to another node, resumes from the
    messages it holds, and sends again (same cmid) what was not acked."""

    def __init__(self, user: str, role: str, urls: list[str]) -> None:
        self.user, self.role, self.urls = user, role, list(urls)
        self.frames: list[int] = []  # seqs of the msg frames received, in arrival order
        self.acked: dict[str, int] = {}  # own cmid -> seq
        self.client = None
        self.conv = ""
        self.reconnects = 0
        self.retried = 0  # sends answered with a retryable error, sent again
        self.closes: list[int] = []  # close codes of the connections the server closed

    def held(self) -> set[int]:
        return set(self.frames) | set(self.acked.values())

    def cursor(self) -> int:
        """The highest seq up to which the client holds every message."""
        held, last = self.held(), 0
        while last + 1 in held:
            last += 1
        return last

    def take(self, frames) -> None:
        for f in frames:
            if f.get("t") == "msg" and f.get("conv") == self.conv:
                self.frames.append(f["seq"])

    async def run(self, conv: str, cmids: list[str], *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Send ``cmids`` one after another (each once acked), then keep receiving until cancelled."""
        self.conv = conv
        started = False
        pending = list(cmids)
        while True:
            try:
                async with connect(self.urls[0], token(self.user, self.role), resume={conv: self.cursor()}) as client:
                    if not started:
                        started = True
                        task_status.started()
                    while pending:
                        rid = await client.send("send", conv=conv, cmid=pending[0], body=TEXT)
                        reply = await client.next(id=rid)
                        if reply["t"] == "error" and reply["retryable"]:  # a client library retries these unseen
                            self.retried += 1
                            await trio.sleep(0.05)
                            continue
                        assert reply["t"] == "ack", reply
                        self.acked[pending.pop(0)] = reply["seq"]
                        self.take(client.buffer)
                        client.buffer.clear()
                        await trio.sleep(0.005)
                    self.take(client.buffer)
                    client.buffer.clear()
                    while True:
                        self.take([await client.recv()])
            except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError) as exc:
                if isinstance(exc, ConnectionClosed) and exc.reason is not None:
                    self.closes.append(exc.reason.code)
                self.reconnects += 1
                self.urls.append(self.urls.pop(0))  # the next node
                await trio.sleep(0.05)


async def test_sigkill_of_one_node_mid_traffic_loses_and_repeats_nothing(tmp_path):
    async with cluster(tmp_path, 3) as nodes:
        (_, url1, _), (victim, url2, _), (_, url3, _) = nodes
        with trio.fail_after(60):
            async with connect(url1, token("alice"), resume={}) as opener:
                conv = (await opener.ok("open"))["conv"]["id"]
            shopper = Member("alice", "shopper", [url1, url3])
            agent = Member("bob", "agent", [url2, url3])  # on the node that dies
            watcher = Member("carol", "supervisor", [url3, url1])
            async with connect(url2, token("bob", "agent"), resume={}) as joining:
                await joining.ok("join", conv=conv)
            async with connect(url3, token("carol", "supervisor"), resume={}) as joining:
                await joining.ok("join", conv=conv)
            async with trio.open_nursery() as nursery:
                await nursery.start(watcher.run, conv, [])
                nursery.start_soon(shopper.run, conv, [f"s{i}" for i in range(60)])
                nursery.start_soon(agent.run, conv, [f"a{i}" for i in range(60)])
                while len(shopper.acked) < 20 or len(agent.acked) < 10:
                    await trio.sleep(0.01)
                victim.send_signal(signal.SIGKILL)
                while len(shopper.acked) < 60 or len(agent.acked) < 60:
                    await trio.sleep(0.01)
                every = set(shopper.acked.values()) | set(agent.acked.values())
                while not all(every <= member.held() for member in (shopper, agent, watcher)):
                    await trio.sleep(0.01)
                await trio.sleep(0.3)  # and nothing more comes
                nursery.cancel_scope.cancel()
            assert agent.reconnects >= 1  # it did lose its node, and moved
            assert sorted(every) == list(range(1, 121))  # all acked, gap-free, each cmid once
            for member in (shopper, agent, watcher):
                assert len(member.frames) == len(set(member.frames)), f"{member.user} got a message twice"
                assert member.held() == every
            assert sorted(watcher.frames) == list(range(1, 121))  # the watcher got every one as a frame


async def test_a_draining_node_moves_its_clients_without_an_error_they_must_see(tmp_path):
    """SIGTERM to the node the agent is on: it closes its clients with 1012 (service restart), they
    reconnect to another node and resume; every message is delivered once and no send is refused
    with an error a client library would have to show."""
    async with cluster(tmp_path, 2) as nodes:
        (_, url1, _), (draining, url2, _) = nodes
        with trio.fail_after(60):
            async with connect(url1, token("alice"), resume={}) as opener:
                conv = (await opener.ok("open"))["conv"]["id"]
            async with connect(url2, token("bob", "agent"), resume={}) as joining:
                await joining.ok("join", conv=conv)
            shopper = Member("alice", "shopper", [url1])
            agent = Member("bob", "agent", [url2, url1])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(shopper.run, conv, [f"s{i}" for i in range(40)])
                nursery.start_soon(agent.run, conv, [f"a{i}" for i in range(40)])
                while len(agent.acked) < 10:
                    await trio.sleep(0.01)
                draining.send_signal(signal.SIGTERM)
                while len(shopper.acked) < 40 or len(agent.acked) < 40:
                    await trio.sleep(0.01)
                every = set(shopper.acked.values()) | set(agent.acked.values())
                while not all(every <= member.held() for member in (shopper, agent)):
                    await trio.sleep(0.01)
                await trio.sleep(0.3)
                nursery.cancel_scope.cancel()
            assert await draining.wait() == 0  # it drained and exited cleanly
            assert agent.closes == [1012] and agent.reconnects == 1
            assert sorted(every) == list(range(1, 81))
            for member in (shopper, agent):
                assert len(member.frames) == len(set(member.frames)) and member.held() == every


async def test_each_event_reaches_a_webhook_once_from_the_node_where_it_happened(tmp_path, receiver):  # noqa: F811
    """A webhook created through one node; a shopper on the other, an agent on the first: every
    event comes once (each node sends only its own), and all of them come. Deleted through the
    first node, it is no longer sent to from the second."""
    import httpx

    schema = fresh_schema()
    async with cluster(tmp_path, 2, "--webhooks-allow-private", "yes", schema=schema) as nodes:
        (_, url0, metrics0), (_, url1, _) = nodes
        secret = await trio.to_thread.run_sync(create_api_key, schema, "shop1")
        with trio.fail_after(60):
            async with httpx.AsyncClient(base_url=metrics0.removesuffix("/metrics"), headers={"authorization": f"Bearer {secret}"}) as http:
                created = await http.post("/v1/webhooks", json={"url": receiver.url + "/events", "events": ["*"]})
                assert created.status_code == 201, created.text
            async with connect(url1, token("s1"), resume={}) as shopper, connect(url0, token("a1", "agent"), resume={}) as agent:
                conv = (await shopper.ok("open"))["conv"]["id"]
                await agent.ok("join", conv=conv)
                await shopper.ok("send", conv=conv, cmid="m1", body=TEXT)
                await agent.next("msg", conv=conv)
                await agent.ok("send", conv=conv, cmid="r1", body={"kind": "text", "text": "在的，请讲"})
                await shopper.next("msg", conv=conv, seq=2)
                await shopper.ok("close", conv=conv)
            await receiver.wait_for(4)
            await trio.sleep(1.0)  # nothing comes twice
            assert sorted(receiver.events()) == ["conversation.closed", "conversation.opened", "message.created", "message.created"]
            async with httpx.AsyncClient(base_url=metrics0.removesuffix("/metrics"), headers={"authorization": f"Bearer {secret}"}) as http:
                assert (await http.delete(f"/v1/webhooks/{created.json()['id']}")).status_code == 204
            await trio.sleep(5.5)  # the other node reads the tenant's webhooks again within 5 s
            async with connect(url1, token("s2"), resume={}) as shopper:
                await shopper.ok("open")
            await trio.sleep(1.0)
    assert len(receiver.got) == 4  # deleted through one node, no longer sent from the other
    assert sorted(r.doc["data"]["message"]["from"] for r in receiver.got if r.doc["event"] == "message.created") == ["a1", "s1"]


async def test_a_recall_on_one_node_reaches_a_member_on_another(tmp_path):
    """The body is replaced in the shared store and the event crosses the bus: the agent on the
    other node is told, and reads the recalled body."""
    async with cluster(tmp_path, 2) as nodes:
        (_, url0, _), (_, url1, _) = nodes
        with trio.fail_after(30):
            async with connect(url1, token("s1"), resume={}) as shopper, connect(url0, token("a1", "agent"), resume={}) as agent:
                conv = (await shopper.ok("open"))["conv"]["id"]
                await agent.ok("join", conv=conv)
                await shopper.ok("send", conv=conv, cmid="m1", body={"kind": "text", "text": "我的身份证号是…"})
                assert (await agent.next("msg", conv=conv, seq=1))["cmid"] == "m1"
                await shopper.ok("recall", conv=conv, seq=1)
                event = (await agent.next("msg", conv=conv, seq=2))["body"]
                assert (event["event"], event["seq"]) == ("recalled", 1)
                history = await agent.ok("history", conv=conv)
                assert history["messages"][0]["body"]["kind"] == "recalled"
