"""A sample of the authorization table over real WebSockets: every cell of the actions a client
can request, for every role a token can carry, each on a fresh conversation."""

from __future__ import annotations

import json

import trio

from gateway.conversations import authz

from ..support import connect, token

TEXT = {"kind": "text", "text": "在吗"}
ROLES = ("shopper", "agent", "supervisor", "bot")  # `system` is no token's role
ACTIONS = ("join", "leave", "close", "send", "receipt", "typing", "history", "catch_up")


def _request(action: str, conv: str) -> tuple[str, dict]:
    return {
        "join": ("join", {"conv": conv}),
        "leave": ("leave", {"conv": conv}),
        "close": ("close", {"conv": conv}),
        "send": ("send", {"conv": conv, "cmid": "x1", "body": TEXT}),
        "receipt": ("receipt", {"conv": conv, "kind": "read", "seq": 1}),
        "typing": ("typing", {"conv": conv, "on": True}),
        "history": ("history", {"conv": conv}),
        "catch_up": ("resume", {"convs": {conv: 0}}),
    }[action]


async def _outcome(client, action: str, conv: str) -> str:
    t, fields = _request(action, conv)
    if action == "typing":  # no reply when allowed: a ping after it answers in order
        rid = await client.send(t, **fields)
        pong = await client.send("ping")
        while True:
            frame = await client.next()
            if frame.get("id") == rid:
                return frame["code"]
            if frame.get("id") == pong:
                return authz.ALLOW
    reply = await client.request(t, **fields)
    if action == "catch_up":
        assert reply["t"] == "ok", reply
        return reply["resumed"][conv].get("error", authz.ALLOW)
    return authz.ALLOW if reply["t"] in ("ok", "ack") else reply["code"]


async def test_a_sample_of_cells_over_websocket(gateway):
    url = gateway.url
    checked = 0
    with trio.fail_after(60):
        async with connect(url, token("alice"), resume={}) as alice:
            for role in ROLES:
                for rel in authz.RELATIONS:
                    if rel == authz.PARTICIPANT and role == "shopper":
                        who = token("alice")  # the customer, on a second device
                    elif rel == authz.OTHER_TENANT:
                        who = token(f"o-{role}", role, tenant="shop2")
                    else:
                        who = token(f"{rel[0]}-{role}", role)
                    async with connect(url, who, resume={}) as client:
                        for action in ACTIONS:
                            expected = authz.TABLE[action][role][authz.RELATIONS.index(rel)]
                            conv = (await alice.ok("open"))["conv"]["id"]
                            await alice.ok("send", conv=conv, cmid="m1", body=TEXT)
                            if rel == authz.PARTICIPANT and role != "shopper":
                                await client.ok("join", conv=conv)
                            got = await _outcome(client, action, conv)
                            assert got == expected, (action, role, rel, got)
                            checked += 1
    assert checked == len(ROLES) * len(authz.RELATIONS) * len(ACTIONS)


async def test_routings_requests_over_websocket_follow_the_table(start_gateway, tmp_path):
    """A sample of routing's cells, with routing on (the bot off, so conversations queue)."""
    settings = tmp_path / "routing.json"
    settings.write_text(json.dumps({"default": {"bot": "none"}}))
    gw = await start_gateway(routing="on", routing_file=str(settings))
    url = gw.url
    with trio.fail_after(30):
        async with connect(url, token("alice"), resume={}) as alice, connect(url, token("mallory"), resume={}) as mallory, connect(
            url, token("bob", "agent"), resume={}
        ) as bob, connect(url, token("eve", "supervisor", tenant="shop2"), resume={}) as eve, connect(url, token("robot", "bot"), resume={}) as robot:
            conv = (await alice.ok("open"))["conv"]["id"]
            cases = [
                (mallory, "take", "shopper", authz.SAME_TENANT),
                (alice, "take", "shopper", authz.PARTICIPANT),
                (mallory, "resolve", "shopper", authz.SAME_TENANT),
                (mallory, "transfer", "shopper", authz.SAME_TENANT),
                (robot, "transfer", "bot", authz.SAME_TENANT),
                (eve, "resolve", "supervisor", authz.OTHER_TENANT),
                (eve, "take", "supervisor", authz.OTHER_TENANT),
                (bob, "queues", "agent", authz.SAME_TENANT),
                (alice, "status", "shopper", authz.SAME_TENANT),
                (mallory, "handoff", "shopper", authz.SAME_TENANT),
                (bob, "handoff", "agent", authz.SAME_TENANT),
            ]
            for client, t, role, rel in cases:
                expected = authz.decide(t, role, rel)
                assert expected != authz.ALLOW
                fields = {"queues": {}, "status": {"status": "online"}}.get(t, {"conv": conv, **({"to_group": "default"} if t == "transfer" else {})})
                reply = await client.request(t, **fields)
                assert reply.get("code") == expected, (t, role, rel, reply)
            assert (await alice.request("handoff", conv=conv))["t"] == "ok"  # the customer's own: allowed
