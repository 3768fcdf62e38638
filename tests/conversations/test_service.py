"""The conversation service's API, without sockets: records in, records or typed errors out."""

from __future__ import annotations

import msgpack
import pytest

from gateway.bus import BusError
from gateway.conversations.service import system
from gateway.model import Appended, Principal, Receipt
from gateway.protocol.errors import RequestError

from .conftest import completed, settle

ALICE = Principal("t1", "alice", "shopper", "app", "Alice")
BOB = Principal("t1", "bob", "agent", "web", "Bob")
SUE = Principal("t1", "sue", "supervisor", "web", "Sue")


def text(s: str) -> bytes:
    return msgpack.packb({"kind": "text", "text": s})


async def send(svc, who, conv, cmid, body=None, origin=None):
    return await completed(lambda done: svc.send(who, conv, cmid, body or text(cmid), done, origin))


async def test_open_makes_the_shopper_the_customer_and_tells_the_bus_with_the_node_id(service):
    opened = await service.open(ALICE, "退货")
    assert (opened.conv.customer, opened.conv.subject, opened.conv.status) == ("alice", "退货", "open")
    assert [(p.user, p.role) for p in opened.participants] == [("alice", "shopper")]
    assert service.recorder.of("membership") == [("node-a", opened.conv.id, "t1", "alice", "shopper", True)]


async def test_send_on_a_cached_conversation_is_synchronous_and_acked_through_the_callback(service):
    conv = (await service.open(ALICE)).conv.id
    results = []
    assert service.send(ALICE, conv, "m1", text("hi"), results.append, "sess-1") is None  # no await on the hot path
    await service.store.drained()  # durable at once (memory, quiet) or by the store's completion
    ack = await send(service, ALICE, conv, "m2")
    assert type(results[0]) is Appended and results[0].message.seq == 1
    assert (ack.message.seq, ack.duplicate) == (2, False)
    node, conv_id, seq, frame, origin = service.recorder.of("message")[0]
    assert (node, conv_id, seq, origin) == ("node-a", conv, 1, "sess-1")
    assert isinstance(frame, bytes)


async def test_a_resend_gets_the_original_seq_even_after_the_conversation_closed(service):
    conv = (await service.open(ALICE)).conv.id
    first = await send(service, ALICE, conv, "m1")
    again = await send(service, ALICE, conv, "m1")
    assert (again.message.seq, again.duplicate) == (first.message.seq, True)
    await service.close(ALICE, conv)
    late = await send(service, ALICE, conv, "m1")
    assert (late.message.seq, late.duplicate) == (1, True)
    with pytest.raises(RequestError) as closed:
        await send(service, ALICE, conv, "m2")
    assert closed.value.code == "conversation_closed"
    assert len(service.recorder.of("message")) == 1  # duplicates are not delivered again


async def test_an_uncached_conversation_is_loaded_first(service):
    conv = (await service.open(ALICE)).conv.id
    service.hub.release(service.cached(conv))
    assert service.cached(conv) is None
    results: list = []
    pending = service.send(ALICE, conv, "m1", text("x"), results.append)
    assert pending is not None  # the load is awaited
    await settle(pending)
    await service.store.drained()
    assert type(results[0]) is Appended and results[0].message.seq == 1


async def test_post_takes_the_next_seq_and_refuses_a_closed_conversation(service):
    conv = (await service.open(ALICE)).conv.id
    await send(service, ALICE, conv, "m1")
    posted = await service.post(system("t1"), conv, {"kind": "event", "event": "queued", "text": "稍等"})
    m = posted.message
    assert (m.seq, m.sender, m.sender_role, posted.duplicate) == (2, "system", "system", False)
    backend = Principal("t1", "order-service", "system")  # a tenant's backend, idempotent by cmid
    first = await service.post(backend, conv, {"kind": "text", "text": "已发货"}, cmid="ship-1")
    again = await service.post(backend, conv, {"kind": "text", "text": "已发货"}, cmid="ship-1")
    assert (first.message.seq, again.message.seq, again.duplicate) == (3, 3, True)
    assert [e[2] for e in service.recorder.of("message")] == [1, 2, 3]  # the duplicate is not delivered again
    with pytest.raises(RequestError) as bad:
        await service.post(Principal("t1", "robot", "bot"), conv, {"kind": "event", "event": "x"})  # lifecycle events are the system's
    assert bad.value.code == "bad_request"
    await service.close(ALICE, conv)
    assert (await service.post(backend, conv, {"kind": "text", "text": "已发货"}, cmid="ship-1")).duplicate
    with pytest.raises(RequestError) as closed:
        await service.post(system("t1"), conv, {"kind": "text", "text": "x"})
    assert closed.value.code == "conversation_closed"


async def test_join_leave_and_who_may_read(service):
    conv = (await service.open(ALICE)).conv.id
    subscribed = []
    joined = await service.join(BOB, conv, on_member=subscribed.append)
    assert subscribed == [joined.handle] and {p.user for p in joined.participants} == {"alice", "bob"}
    await send(service, BOB, conv, "b1")
    await service.leave(BOB, conv)
    with pytest.raises(RequestError) as refused:
        await send(service, BOB, conv, "b2")
    assert refused.value.code == "forbidden"
    page = await service.history(SUE, conv)  # a supervisor reads without joining
    assert [m.cmid for m in page.messages] == ["b1"]


async def test_receipts_are_cumulative_and_checked_against_the_last_seq(service):
    conv = (await service.open(ALICE)).conv.id
    await send(service, ALICE, conv, "m1")
    with pytest.raises(RequestError) as past:
        await settle(service.receipt(ALICE, conv, "read", 2, lambda r: None))
    assert past.value.code == "bad_request"
    stored = await completed(lambda done: service.receipt(ALICE, conv, "read", 1, done))
    assert type(stored) is Receipt and stored.seq == 1
    assert len([e for e in service.recorder.of("event") if b"receipt" in e[2]]) == 1


async def test_list_pages_with_a_cursor(service):
    convs = [(await service.open(ALICE)).conv.id for _ in range(5)]
    first = await service.list(ALICE, limit=2)
    assert [c.id for c in first.convs] == convs[::-1][:2] and first.more
    second = await service.list(ALICE, limit=2, cursor=first.next)
    assert [c.id for c in second.convs] == convs[::-1][2:4]
    assert (await service.list(BOB)).convs == []  # agents list their own
    assert len((await service.list(SUE)).convs) == 5  # a supervisor the tenant's
    with pytest.raises(RequestError) as bad:
        await service.list(ALICE, cursor="nonsense")
    assert bad.value.code == "bad_request"


async def test_history_stops_at_the_reply_budget_and_catch_up_pages(service):
    service.reply_bytes = 3 * (128 + len(text("x" * 10)))  # three messages' worth
    conv = (await service.open(ALICE)).conv.id
    for i in range(6):
        await send(service, ALICE, conv, f"m{i}", text("x" * 10))
    page = await service.history(ALICE, conv)
    assert [m.seq for m in page.messages] == [1, 2, 3] and page.more
    newest = await service.history(ALICE, conv, before=7)
    assert [m.seq for m in newest.messages] == [4, 5, 6]
    caught = await service.catch_up(ALICE, conv, 4, limit=1)
    assert [m.seq for m in caught.messages] == [5] and caught.more


async def test_update_stores_the_fields_and_tells_who_did_it(service):
    conv = (await service.open(ALICE)).conv.id
    changed = await service.update(system("t1"), conv, by="routing", stage="queued", group="vip", assignee="")
    assert (changed.stage, changed.group) == ("queued", "vip")
    assert service.cached(conv) is None or service.cached(conv).conv.stage == "queued"
    conv_events = [e for e in service.recorder.of("conversation")]
    assert conv_events[-1][0] == "node-a" and conv_events[-1][1].stage == "queued"
    assert any(b"routing" in e[2] for e in service.recorder.of("event"))


async def test_a_draining_service_refuses_new_writes_as_unavailable(service):
    conv = (await service.open(ALICE)).conv.id
    service.accepting = False
    for attempt in (lambda: service.open(ALICE), lambda: send(service, ALICE, conv, "m1")):
        with pytest.raises(RequestError) as refused:
            await attempt()
        assert refused.value.code == "unavailable" and refused.value.retryable


class Broken:
    """A bus handler that fails on every event."""

    def __getattr__(self, name):
        def fail(*args):
            raise RuntimeError("handler down")

        return fail


async def test_a_failed_publish_is_counted_and_the_message_stays_durable(service, nursery):
    conv = (await service.open(ALICE)).conv.id
    await nursery.start(service.bus.run, Broken())
    ack = await send(service, ALICE, conv, "m1")
    assert ack.message.seq == 1
    assert service.stats.bus_publish_failures == 1
    assert [m.seq for m in (await service.history(ALICE, conv)).messages] == [1]
    assert service.recorder.of("message")[-1][2] == 1  # the healthy handler got it all the same
    service.bus.close()
    with pytest.raises(BusError):
        service.bus.publish_event("node-a", conv, b"", None)


async def test_tags_are_replaced_checked_and_read_by_who_may_read(service):
    conv = (await service.open(ALICE)).conv.id
    assert await service.tags(ALICE, conv) == ()
    assert await service.set_tags(SUE, conv, ["vip", "退货", "vip"]) == ("vip", "退货")
    assert await service.tags(ALICE, conv) == ("vip", "退货")
    assert await service.set_tags(system("t1"), conv, []) == ()
    for bad, code in (("vip", "bad_request"), ([""], "bad_request"), (["a\nb"], "bad_request"), ([1], "bad_request"), ([f"t{i}" for i in range(21)], "too_large")):
        with pytest.raises(RequestError) as refused:
            await service.set_tags(SUE, conv, bad)
        assert refused.value.code == code, bad
    with pytest.raises(RequestError) as refused:
        await service.set_tags(ALICE, conv, ["mine"])  # a shopper does not file conversations
    assert refused.value.code == "forbidden"
    with pytest.raises(RequestError) as refused:
        await service.tags(Principal("t2", "eve", "supervisor"), conv)
    assert refused.value.code == "not_found"


async def test_open_checks_the_subject_for_callers_that_did_not(service):
    with pytest.raises(RequestError) as long:
        await service.open(ALICE, "x" * 201)
    assert long.value.code == "too_large"
    assert (await service.list(ALICE)).convs == []  # nothing half-made


async def test_sequence_cursors_past_int64_are_bad_requests(service):
    conv = (await service.open(ALICE)).conv.id
    for call in (lambda: service.history(ALICE, conv, after=2**63), lambda: service.history(ALICE, conv, before=-1), lambda: service.catch_up(ALICE, conv, 2**64)):
        with pytest.raises(RequestError) as bad:
            await call()
        assert bad.value.code == "bad_request"
