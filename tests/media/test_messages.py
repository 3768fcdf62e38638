"""Messages that carry attachments, over real WebSockets on a real gateway (both stores): the
server states the file's facts, and a body may only carry an attachment of its own conversation.
(The uploads here go through the gateway's media service directly; tests/http covers the HTTP way.)"""

from __future__ import annotations

from typing import AsyncIterator

import trio

from ..support import connect, token
from . import samples


async def body_of(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def upload(gateway, conv: str, user: str, kind: str, data: bytes, name: str = ""):
    role = "agent" if user == "bob" else "shopper"
    return await gateway.node.media.upload("shop1", user, role, conv, kind, body_of(data), name=name)


async def test_every_kind_is_sent_with_the_facts_of_its_file(gateway) -> None:
    with trio.fail_after(30):
        async with connect(gateway.url, token("alice"), resume={}) as shopper, connect(
            gateway.url, token("bob", "agent"), resume={}
        ) as agent:
            conv = (await shopper.ok("open"))["conv"]["id"]
            await agent.ok("join", conv=conv)
            image = await upload(gateway, conv, "alice", "image", samples.jpeg(800, 600), "颜色.jpg")
            video = await upload(gateway, conv, "bob", "video", samples.mp4(10_000))
            voice = await upload(gateway, conv, "alice", "voice", samples.wav(3.2))
            doc = await upload(gateway, conv, "bob", "file", samples.pdf(), "退货流程.pdf")

            # A sender's claims about the file are replaced by what its bytes said (and a URL beside it dropped).
            await shopper.ok("send", conv=conv, cmid="i", body={"kind": "image", "attachment": image.id, "w": 1, "size": 5, "url": "javascript:alert(1)"})
            got = (await agent.next("msg", conv=conv, cmid="i"))["body"]
            assert got == {"kind": "image", "attachment": image.id, "size": image.size, "type": "image/jpeg",
                           "w": 800, "h": 600, "thumbnail": True, "name": "颜色.jpg"}

            await agent.ok("send", conv=conv, cmid="v", body={"kind": "video", "attachment": video.id})
            got = (await shopper.next("msg", conv=conv, cmid="v"))["body"]
            assert (got["duration_ms"], got["type"], got["thumbnail"]) == (10_000, "video/mp4", False)

            await shopper.ok("send", conv=conv, cmid="a", body={"kind": "voice", "attachment": voice.id})
            assert (await agent.next("msg", conv=conv, cmid="a"))["body"]["duration_ms"] == 3_200

            await agent.ok("send", conv=conv, cmid="f", body={"kind": "file", "attachment": doc.id})
            got = (await shopper.next("msg", conv=conv, cmid="f"))["body"]
            assert (got["name"], got["type"], got["size"]) == ("退货流程.pdf", "application/pdf", doc.size)

            location = {"kind": "location", "lat": 31.2304, "lng": 121.4737, "name": "人民广场店", "address": "上海市黄浦区人民大道 120 号"}
            await agent.ok("send", conv=conv, cmid="l", body=location)
            assert (await shopper.next("msg", conv=conv, cmid="l"))["body"] == location

            # History holds the same facts.
            page = await shopper.ok("history", conv=conv, limit=10)
            assert [m["body"].get("duration_ms") for m in page["messages"]] == [None, 10_000, 3_200, None, None]


async def test_an_attachment_stays_in_its_conversation(gateway) -> None:
    with trio.fail_after(30):
        async with connect(gateway.url, token("alice"), resume={}) as alice, connect(
            gateway.url, token("carol"), resume={}
        ) as carol:
            mine = (await alice.ok("open"))["conv"]["id"]
            theirs = (await carol.ok("open"))["conv"]["id"]
            photo = await upload(gateway, mine, "alice", "image", samples.jpeg())
            # Carol cannot send Alice's photo in her own conversation, even knowing its id.
            refused = await carol.request("send", conv=theirs, cmid="x", body={"kind": "image", "attachment": photo.id})
            assert (refused["t"], refused["code"]) == ("error", "not_found")
            refused = await alice.request("send", conv=mine, cmid="y", body={"kind": "image", "attachment": "no-such-id"})
            assert refused["code"] == "not_found"
            # An image is not a voice message; a file message may carry anything.
            refused = await alice.request("send", conv=mine, cmid="z", body={"kind": "voice", "attachment": photo.id})
            assert (refused["code"], "image" in refused["message"]) == ("bad_request", True)
            await alice.ok("send", conv=mine, cmid="w", body={"kind": "file", "attachment": photo.id})
            assert [m["cmid"] for m in (await alice.ok("history", conv=mine))["messages"]] == ["w"]


async def test_a_resent_attachment_message_gets_its_original_ack(gateway) -> None:
    with trio.fail_after(30):
        async with connect(gateway.url, token("alice"), resume={}) as alice:
            conv = (await alice.ok("open"))["conv"]["id"]
            photo = await upload(gateway, conv, "alice", "image", samples.jpeg())
            body = {"kind": "image", "attachment": photo.id}
            first = await alice.ok("send", conv=conv, cmid="p", body=body)
            again = await alice.ok("send", conv=conv, cmid="p", body=body)
            assert (again["seq"], again["dup"]) == (first["seq"], True)
