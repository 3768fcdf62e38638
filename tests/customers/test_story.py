"""The workspace issue's "done when" story, as one test over real sockets and HTTP (docs/workspace.md):

1. A shop pushes a customer, two orders and a product over REST.
2. The shopper opens a chat from the product page in the app, asks the bot, and asks for a human.
3. The agent gets the conversation with the customer's orders, the product and the bot's context.
4. The agent answers with a quick reply that names the customer, and writes a private note that
   the shopper never sees.
5. The next day the same shopper writes from the web after logging in, and the agent sees one
   history.
6. The shopper rates the conversation 5.
"""

from __future__ import annotations

import trio

from ..http.conftest import client, new_key
from ..support import connect
from .conftest import events

DAY_S = 24 * 3600


async def test_the_workspace_story(start_gateway):
    gw = await start_gateway(routing="on", store="sqlite")  # the built-in bot answers first
    now = [1_765_000_000.0]  # the workspace's clock, moved by the test
    gw.node.workspace.clock = lambda: now[0]
    with trio.fail_after(30):
        async with client(gw, await new_key(gw, scopes=("ingest", "read"))) as shop, client(gw, await new_key(gw)) as admin:
            # 1. the shop pushes a customer, two orders and a product
            assert (await shop.put("/v1/ingest/customers/c42", json={"name": "王女士", "tier": "金卡", "tags": ["老客户"]})).status_code == 200
            coat = {"title": "蓝色羊毛外套", "price": 899.0, "image": "https://shop.example/coat.jpg", "attributes": {"material": "80%羊毛 20%聚酯纤维"},
                    "sizes": ["S", "M", "L"], "size_chart": {"M": {"胸围": "96cm", "衣长": "68cm"}}, "stock": {"S": 0, "M": 3, "L": 5}}
            assert (await shop.put("/v1/ingest/products/coat-blue", json=coat)).status_code == 200
            for order_id, status, at in (("A1001", "delivered", 1_700_000_000_000), ("A1002", "shipped", 1_760_000_000_000)):
                order = {"customer": "c42", "items": [{"product": "coat-blue", "title": "蓝色羊毛外套", "quantity": 1, "size": "M"}], "status": status, "created_at": at}
                assert (await shop.put(f"/v1/ingest/orders/{order_id}", json=order)).status_code == 200

            # 2. the shopper opens a chat from the product page in the app, asks the bot, asks for a human
            minted = (await shop.post("/v1/tokens", json={"user": "u42", "role": "shopper", "channel": "app", "name": "王女士", "customer": "c42"})).json()
            async with connect(gw.url, minted["token"], resume={}) as app:
                opened = await app.ok("open", subject="外套咨询", product="coat-blue")
                conv1, customer = opened["conv"]["id"], opened["customer"]
                assert customer == "c42" and opened["product"] == "coat-blue"
                await app.next("msg", conv=conv1, role="bot")  # the greeting
                await app.ok("send", conv=conv1, cmid="q1", body={"kind": "text", "text": "什么时候发货?"})
                assert (await app.next("msg", conv=conv1, role="bot"))["body"]["intent"] == "shipping_time"
                await app.ok("send", conv=conv1, cmid="q2", body={"kind": "text", "text": "转人工"})
                await events(app, conv1, "queued")

                # 3. the agent gets the conversation with the orders, the product and the bot's context
                agent_token = (await admin.post("/v1/tokens", json={"user": "wangli", "role": "agent", "name": "王丽"})).json()["token"]
                async with connect(gw.url, agent_token, resume={}) as agent:
                    await agent.ok("status", status="online", max=5)
                    offer = await agent.next("assigned")
                    assert offer["conv"]["id"] == conv1
                    assert any(i.get("intent") == "shipping_time" for i in offer["context"]["intents"])  # the bot's context
                    known = offer["customer"]
                    assert known["status"] == "ok" and known["customer"]["id"] == "c42"
                    assert known["product"]["title"] == "蓝色羊毛外套" and known["product"]["attributes"]["material"].startswith("80%羊毛")
                    assert known["context"]["profile"] == {"name": "王女士", "tier": "金卡", "tags": ["老客户"]}
                    assert [o["id"] for o in known["context"]["orders"]] == ["A1002", "A1001"]

                    # 4. a quick reply that names the customer, and a private note
                    reply = {"shortcut": "/hi", "title": "问候", "text": "{customer.name}，您好！看到您上次购买的{product.title}，订单 {order.id} 已{order.status}。"}
                    assert (await admin.put("/v1/quick-replies", json=reply)).status_code == 200
                    found = (await agent.ok("replies", q="/h"))["replies"]
                    assert [r["shortcut"] for r in found] == ["/hi"]
                    filled = await agent.ok("reply_fill", conv=conv1, shortcut="/hi")
                    assert filled["missing"] == [] and filled["text"] == "王女士，您好！看到您上次购买的蓝色羊毛外套，订单 A1002 已shipped。"
                    await agent.ok("send", conv=conv1, cmid="a1", body={"kind": "text", "text": filled["text"]})
                    assert (await app.next("msg", conv=conv1, role="agent"))["body"]["text"].startswith("王女士，您好！")
                    note = (await agent.ok("note", conv=conv1, text="老客户，上次的外套尺码偏小，推荐 L 码"))["note"]
                    assert (await agent.next("note"))["id"] == note["id"]  # the staff's own connections hear it
                    await agent.ok("tags", conv=conv1, tags=["尺码", "发货"])
                    await agent.request("ping")
                    assert all(f["t"] != "note" and "推荐 L 码" not in repr(f) for f in await app.quiet(0.3))
                    history = await app.ok("history", conv=conv1)
                    assert all("推荐 L 码" not in repr(m) for m in history["messages"])
                    await agent.ok("resolve", conv=conv1)

                    # 5. the next day, from the web: browsing anonymously, then logged in
                    now[0] += DAY_S
                    viewed = {"channel": "web", "user": "v-77", "product": "coat-blue", "ts": int(now[0] * 1000)}
                    assert (await shop.post("/v1/ingest/events", json=viewed)).status_code == 201
                    web_token = (await shop.post("/v1/tokens", json={"user": "v-77", "role": "shopper", "channel": "web", "customer": "c42"})).json()["token"]
                    async with connect(gw.url, web_token, resume={}) as web:
                        conv2 = (await web.ok("open", subject="再问一下"))["conv"]["id"]
                        await web.next("msg", conv=conv2, role="bot")
                        await web.ok("send", conv=conv2, cmid="w1", body={"kind": "text", "text": "转人工"})
                        offer = await agent.next("assigned")
                        assert offer["conv"]["id"] == conv2 and offer["conv"]["channel"] == "web"
                        known = offer["customer"]
                        assert known["customer"]["id"] == "c42" and set(known["customer"]["links"]) == {"app:u42", "web:v-77"}
                        past = {c["id"]: c for c in known["context"]["conversations"]}
                        assert set(past) == {conv1, conv2}  # one history: the app's and the web's
                        assert past[conv1]["tags"] == ["发货", "尺码"] and past[conv1]["summary"] == "什么时候发货?"
                        assert [v["product"] for v in known["context"]["viewed"]] == ["coat-blue"]  # browsed before logging in
                        merges = (await admin.get("/v1/customers/c42/merges")).json()["merges"]
                        assert [(m["from"], m["into"]) for m in merges] == [("web:v-77", "c42")]
                        listed = (await shop.get("/v1/customers/c42/conversations")).json()["conversations"]
                        assert {(c["id"], c["channel"]) for c in listed} == {(conv1, "app"), (conv2, "web")}

                        # 6. the shopper rates the conversation 5
                        await agent.ok("resolve", conv=conv2)
                        survey = (await events(web, conv2, "survey"))[0]
                        assert survey["scale"] == 5
                        assert (await web.ok("rate", conv=conv2, score=5, comment="很专业"))["csat"]["score"] == 5
                        rated = await agent.next("rated")
                        assert (rated["conv"], rated["score"]) == (conv2, 5)
                        facts = (await shop.get(f"/v1/conversations/{conv2}/workspace")).json()
                        assert facts["satisfaction"]["score"] == 5 and facts["customer"] == "c42"
                        context = (await shop.get("/v1/customers/c42/context")).json()["context"]
                        assert {c["id"]: (c["satisfaction"] or {}).get("score") for c in context["conversations"]}[conv2] == 5
