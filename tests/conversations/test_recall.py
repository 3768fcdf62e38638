"""Recalling a message (撤回) over real sockets and REST: the sender within the window, a supervisor
or the tenant's backend any time; the body is replaced in the store, and a `recalled` event in
the sequence tells every member, live or on resume."""

from __future__ import annotations

import trio

from ..http.conftest import client, new_key, problem
from ..support import connect, token
from ..webhooks.conftest import receiver  # noqa: F401  (the fixture)

PHONE = {"kind": "text", "text": "我的手机号是13800138000"}


async def test_the_sender_recalls_a_message_and_everyone_learns_of_it_in_order(gateway):
    async with connect(gateway.url, token("s1"), resume={}) as shopper, connect(gateway.url, token("a1", "agent"), resume={}) as agent:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        await shopper.ok("send", conv=conv, cmid="m1", body=PHONE)
        assert (await agent.next("msg", conv=conv))["body"] == PHONE
        assert await shopper.ok("recall", conv=conv, seq=1) == {"t": "ok", "id": 4, "conv": conv, "seq": 1}
        event = await agent.next("msg", conv=conv, seq=2)
        assert event["role"] == "system" and event["body"]["event"] == "recalled" and event["body"]["seq"] == 1 and event["body"]["by"] == "s1"
        again = await shopper.ok("recall", conv=conv, seq=1)  # a second recall changes nothing
        assert again["seq"] == 1
        assert [f for f in await agent.quiet(0.2) if f["t"] == "msg"] == []
        history = await agent.ok("history", conv=conv)
        assert [m["body"]["kind"] for m in history["messages"]] == ["recalled", "event"]
        assert history["messages"][0]["body"]["by"] == "s1" and "13800138000" not in str(history)
    async with connect(gateway.url, token("a1", "agent"), resume={conv: 0}) as later:  # on resume too
        got = [await later.next("msg", conv=conv) for _ in range(2)]
        assert [m["body"]["kind"] for m in got] == ["recalled", "event"]


async def test_what_may_not_be_recalled(gateway):
    async with connect(gateway.url, token("s1"), resume={}) as shopper, connect(gateway.url, token("a1", "agent"), resume={}) as agent:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        await shopper.ok("send", conv=conv, cmid="m1", body=PHONE)
        refused = await agent.request("recall", conv=conv, seq=1)  # not theirs
        assert (refused["t"], refused["code"]) == ("error", "forbidden"), refused
        assert (await shopper.request("recall", conv=conv, seq=9))["code"] == "not_found"
        assert (await shopper.request("recall", conv=conv, seq=0))["code"] == "bad_request"
        assert (await shopper.request("recall", conv=conv))["code"] == "bad_request"
        gateway.node.service.recall_window_ms = 0  # the window has passed
        await trio.sleep(0.01)
        late = await shopper.request("recall", conv=conv, seq=1)
        assert (late["code"], late["message"]) == ("forbidden", "a message can be recalled within 0 minutes of sending")
        await shopper.ok("close", conv=conv)
    async with connect(gateway.url, token("s2"), resume={}) as other:  # another shopper: not a participant
        assert (await other.request("recall", conv=conv, seq=1))["code"] in ("forbidden", "not_found")
    async with connect(gateway.url, token("boss", "supervisor"), resume={}) as boss:  # moderation: any time
        assert (await boss.ok("recall", conv=conv, seq=1))["seq"] == 1
        history = await boss.ok("history", conv=conv)
        assert history["messages"][0]["body"]["kind"] == "recalled"
        event = history["messages"][-1]["body"]
        assert (event["event"], event["seq"], event["role"]) == ("recalled", 1, "supervisor")
        assert (await boss.request("recall", conv=conv, seq=len(history["messages"])))["code"] == "bad_request"  # an event


async def test_the_tenants_backend_recalls_over_rest_and_a_webhook_is_told(start_gateway, receiver):  # noqa: F811
    gw = await start_gateway(store="sqlite", webhooks_allow_private="yes")
    async with client(gw, await new_key(gw)) as api, client(gw, await new_key(gw, scopes=("read",))) as reader:
        created = await api.post("/v1/webhooks", json={"url": receiver.url + "/recalls", "events": ["message.recalled"]})
        assert created.status_code == 201
        async with connect(gw.url, token("s1"), resume={}) as shopper:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await shopper.ok("send", conv=conv, cmid="m1", body=PHONE)
            recalled = await api.post(f"/v1/conversations/{conv}/messages/1/recall")
            assert recalled.status_code == 200, recalled.text
            assert recalled.json()["body"]["kind"] == "recalled" and recalled.json()["from"] == "s1" and recalled.json()["cmid"] == "m1"
            assert (await shopper.next("msg", conv=conv, seq=2))["body"]["event"] == "recalled"
        problem(await api.post(f"/v1/conversations/{conv}/messages/7/recall"), 404, "not_found")
        problem(await api.post(f"/v1/conversations/{conv}/messages/x1/recall"), 422, "bad_request")
        problem(await reader.post(f"/v1/conversations/{conv}/messages/1/recall"), 403, "forbidden")
        transcript = (await api.get(f"/v1/conversations/{conv}/messages")).json()["messages"]
        assert [m["body"]["kind"] for m in transcript] == ["recalled", "event"]
        (told,) = await receiver.wait_for(1)
    assert told.doc["event"] == "message.recalled" and told.doc["data"]["message"]["body"]["seq"] == 1


async def test_a_recall_retried_after_only_its_first_write_adds_the_missing_event_once(gateway):
    """The gateway stopped between replacing the body and appending the event: the retried recall
    finds the body recalled and appends the event, once."""
    from gateway.model import RecallMessage
    from gateway.protocol import envelope as env

    async with connect(gateway.url, token("s1"), resume={}) as shopper, connect(gateway.url, token("a1", "agent"), resume={}) as agent:
        conv = (await shopper.ok("open"))["conv"]["id"]
        await agent.ok("join", conv=conv)
        await shopper.ok("send", conv=conv, cmid="m1", body=PHONE)
        await agent.next("msg", conv=conv, seq=1)
        await gateway.node.store.execute(RecallMessage(conv, 1, env.pack({"kind": "recalled", "by": "s1", "role": "shopper", "at": 1})))
        assert [f for f in await agent.quiet(0.2) if f["t"] == "msg"] == []  # nobody was told
        await shopper.ok("recall", conv=conv, seq=1)
        event = (await agent.next("msg", conv=conv, seq=2))["body"]
        assert (event["event"], event["seq"], event["by"], event["role"]) == ("recalled", 1, "s1", "shopper")
        await shopper.ok("recall", conv=conv, seq=1)
        assert [f for f in await agent.quiet(0.2) if f["t"] == "msg"] == []  # once
