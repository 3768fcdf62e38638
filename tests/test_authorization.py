"""Who may do what, over real sockets: roles and tenant isolation."""

from __future__ import annotations

from .support import connect, token

TEXT = {"kind": "text", "text": "在吗"}


async def test_authorization_matrix(gateway):
    url = gateway.url
    async with connect(url, token("alice"), resume={}) as alice, connect(url, token("mallory"), resume={}) as mallory, connect(
        url, token("bob", "agent"), resume={}
    ) as bob, connect(url, token("dan", "agent"), resume={}) as dan, connect(
        url, token("sue", "supervisor"), resume={}
    ) as sue, connect(url, token("eve", "agent", tenant="shop2"), resume={}) as eve, connect(
        url, token("zed", "supervisor", tenant="shop2"), resume={}
    ) as zed, connect(url, token("robot", "bot"), resume={}) as robot:
        conv = (await alice.ok("open"))["conv"]["id"]
        await alice.ok("send", conv=conv, cmid="1", body=TEXT)

        # only shoppers open conversations
        assert (await bob.request("open"))["code"] == "forbidden"
        # another shopper cannot see, join, read or write alice's conversation: it does not exist for them
        for request in (("join", {}), ("history", {}), ("send", {"cmid": "x", "body": TEXT}), ("typing", {"on": True})):
            assert (await mallory.request(request[0], conv=conv, **request[1]))["code"] == "not_found", request
        assert (await mallory.ok("list"))["convs"] == []
        # other tenants see nothing, whatever their role
        for other in (eve, zed):
            for t in ("join", "history", "close"):
                assert (await other.request(t, conv=conv))["code"] == "not_found"
            assert conv not in [c["id"] for c in (await other.ok("list"))["convs"]]
        # an agent of the tenant must join before reading or writing; then may do both
        assert (await bob.request("history", conv=conv))["code"] == "forbidden"
        assert (await bob.request("send", conv=conv, cmid="b", body=TEXT))["code"] == "forbidden"
        assert (await bob.request("receipt", conv=conv, kind="read", seq=1))["code"] == "forbidden"
        await bob.ok("join", conv=conv)
        assert [m["seq"] for m in (await bob.ok("history", conv=conv))["messages"]] == [1]
        await bob.ok("send", conv=conv, cmid="b", body=TEXT)
        # agents list only their own conversations; a supervisor sees every one of the tenant
        assert [c["id"] for c in (await bob.ok("list"))["convs"]] == [conv]
        assert (await dan.ok("list"))["convs"] == []
        assert conv in [c["id"] for c in (await sue.ok("list"))["convs"]]
        assert [m["seq"] for m in (await sue.ok("history", conv=conv))["messages"]] == [1, 2]
        assert (await sue.request("send", conv=conv, cmid="s", body=TEXT))["code"] == "forbidden"  # join first
        # a bot joins and answers like an agent
        await robot.ok("join", conv=conv)
        assert (await robot.ok("send", conv=conv, cmid="r", body=TEXT))["seq"] == 3
        # a supervisor may close any conversation of the tenant
        assert (await sue.ok("close", conv=conv))["conv"]["status"] == "closed"
