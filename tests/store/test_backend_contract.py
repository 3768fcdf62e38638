"""The StoreBackend contract (gateway/store/base.py), run against every backend through one factory.

A new backend joins by adding itself to BACKENDS; every test here then holds it to the same rules.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from gateway.model import (
    AddAttachment,
    Attachment,
    DeleteAttachment,
    MarkAttachmentDeleted,
    CLOSED,
    OPEN,
    AddParticipant,
    Appended,
    AppendMessage,
    Conversation,
    CreateConversation,
    Fenced,
    Participant,
    Receipt,
    RecallMessage,
    RemoveParticipant,
    SetReceipt,
    SetStatus,
    SetTags,
    StoredMessage,
    WriteOp,
)
from gateway.store import MemoryBackend, NotFound, PostgresBackend, SqliteBackend, StaleFence, StoreBackend, StoreError

from ..postgres import drop_schema, fresh_backend

BACKENDS: dict[str, Callable[[Path], StoreBackend]] = {
    "memory": lambda tmp_path: MemoryBackend(),
    "sqlite": lambda tmp_path: SqliteBackend(tmp_path / "kefu.db"),
    "postgresql": lambda tmp_path: fresh_backend(),  # a schema of its own, dropped afterwards
}


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreBackend]:
    store = BACKENDS[request.param](tmp_path)
    store.open()
    yield store
    store.close()
    if isinstance(store, PostgresBackend):
        drop_schema(store.schema)


def conversation(
    conv_id: str = "c1",
    *,
    tenant: str = "t1",
    created_at: int = 1_000,
    customer: str = "shopper1",
    status: str = OPEN,
) -> Conversation:
    return Conversation(conv_id, tenant, customer, "app", status, created_at, subject="order 42")


def member(conv_id: str, user: str, joined_at: int = 1_000, role: str = "agent") -> Participant:
    return Participant(conv_id, user, role, joined_at)


def append(conv_id: str, cmid: str, sender: str = "shopper1", body: bytes = b"hi") -> AppendMessage:
    return AppendMessage(conv_id, cmid, sender, "shopper", body)


def apply_one(backend: StoreBackend, op: WriteOp) -> object:
    [result] = backend.apply_batch([op])
    return result


def create(backend: StoreBackend, conv: Conversation, *users: str) -> Conversation:
    participants = tuple(member(conv.id, user, conv.created_at) for user in users)
    result = apply_one(backend, CreateConversation(conv, participants))
    assert isinstance(result, Conversation)
    return result


def appended(result: object) -> Appended:
    assert isinstance(result, Appended), result
    return result


def append_many(backend: StoreBackend, conv_id: str, count: int) -> list[StoredMessage]:
    results = backend.apply_batch([append(conv_id, f"m{n}") for n in range(count)])
    return [appended(result).message for result in results]


def last_seq(backend: StoreBackend, conv_id: str) -> int:
    conv = backend.get_conversation(conv_id)
    assert conv is not None
    return conv.last_seq


def seqs(messages: list[StoredMessage]) -> list[int]:
    return [message.seq for message in messages]


def test_backend_describes_itself(backend: StoreBackend) -> None:
    assert isinstance(backend.blocking, bool)
    assert backend.durability


# ---- conversations -------------------------------------------------------------------------------


def test_create_returns_and_stores_the_conversation(backend: StoreBackend) -> None:
    created = create(backend, conversation("c1"), "shopper1", "agent1")

    assert created == conversation("c1")
    assert created.last_seq == 0
    assert backend.get_conversation("c1") == created
    assert [p.user for p in backend.participants("c1")] == ["shopper1", "agent1"]


def test_create_starts_sequences_at_zero_whatever_last_seq_says(backend: StoreBackend) -> None:
    claimed = Conversation("c1", "t1", "s", "web", OPEN, 5, last_seq=9)

    result = apply_one(backend, CreateConversation(claimed))

    assert isinstance(result, Conversation) and result.last_seq == 0
    assert appended(apply_one(backend, append("c1", "m1"))).message.seq == 1


def test_create_existing_id_fails_and_keeps_the_original(backend: StoreBackend) -> None:
    create(backend, conversation("c1", tenant="t1"))

    result = apply_one(backend, CreateConversation(conversation("c1", tenant="t2")))

    assert isinstance(result, StoreError) and not isinstance(result, NotFound)
    assert backend.get_conversation("c1") == conversation("c1", tenant="t1")


def test_create_refuses_participants_of_another_conversation(backend: StoreBackend) -> None:
    op = CreateConversation(conversation("c1"), (member("c1", "a"), member("c2", "b")))

    assert isinstance(apply_one(backend, op), StoreError)
    assert backend.get_conversation("c1") is None
    assert backend.participants("c1") == []


def test_get_unknown_conversation_is_none(backend: StoreBackend) -> None:
    assert backend.get_conversation("nope") is None


def test_list_is_newest_first_with_id_breaking_ties(backend: StoreBackend) -> None:
    for conv_id, created_at in [("a", 10), ("b", 30), ("c", 20), ("d", 30)]:
        create(backend, conversation(conv_id, created_at=created_at))

    assert [c.id for c in backend.list_conversations("t1")] == ["d", "b", "c", "a"]


def test_list_shows_current_last_seq(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    append_many(backend, "c1", 3)

    assert [c.last_seq for c in backend.list_conversations("t1")] == [3]


def test_list_keeps_tenants_apart(backend: StoreBackend) -> None:
    create(backend, conversation("a", tenant="t1"))
    create(backend, conversation("b", tenant="t2"))

    assert [c.id for c in backend.list_conversations("t1")] == ["a"]
    assert [c.id for c in backend.list_conversations("t2")] == ["b"]
    assert backend.list_conversations("t3") == []


def test_list_filters_by_participant(backend: StoreBackend) -> None:
    create(backend, conversation("a", created_at=1), "shopper1", "agent1")
    create(backend, conversation("b", created_at=2), "shopper2")
    create(backend, conversation("c", created_at=3, tenant="t2"), "agent1")
    apply_one(backend, AddParticipant(member("b", "agent1")))
    apply_one(backend, RemoveParticipant("a", "agent1"))

    assert [c.id for c in backend.list_conversations("t1", user="agent1")] == ["b"]
    assert [c.id for c in backend.list_conversations("t1", user="shopper1")] == ["a"]


def test_list_filters_by_status(backend: StoreBackend) -> None:
    create(backend, conversation("a", created_at=1))
    create(backend, conversation("b", created_at=2, status=CLOSED))
    create(backend, conversation("c", created_at=3))

    assert [c.id for c in backend.list_conversations("t1", status=OPEN)] == ["c", "a"]
    assert [c.id for c in backend.list_conversations("t1", status=CLOSED)] == ["b"]


def test_list_pages_with_before_and_limit(backend: StoreBackend) -> None:
    for n in range(1, 8):
        create(backend, conversation(f"c{n}", created_at=n * 10))

    first = backend.list_conversations("t1", limit=3)
    second = backend.list_conversations("t1", before=first[-1].created_at, limit=3)
    last = backend.list_conversations("t1", before=second[-1].created_at, limit=3)

    assert [c.id for c in first] == ["c7", "c6", "c5"]
    assert [c.id for c in second] == ["c4", "c3", "c2"]
    assert [c.id for c in last] == ["c1"]
    assert backend.list_conversations("t1", limit=0) == []


def test_list_combines_filters(backend: StoreBackend) -> None:
    create(backend, conversation("a", created_at=1), "agent1")
    create(backend, conversation("b", created_at=2, status=CLOSED), "agent1")
    create(backend, conversation("c", created_at=3), "agent1")
    create(backend, conversation("d", created_at=4), "agent2")

    listed = backend.list_conversations("t1", user="agent1", status=OPEN, before=3)

    assert [c.id for c in listed] == ["a"]


def test_set_status_returns_the_updated_conversation(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))

    results = backend.apply_batch([append("c1", "m1"), SetStatus("c1", CLOSED)])

    assert results[1] == Conversation(
        "c1", "t1", "shopper1", "app", CLOSED, 1_000, subject="order 42", last_seq=1
    )
    assert backend.get_conversation("c1") == results[1]


# ---- participants --------------------------------------------------------------------------------


def test_add_participant_is_idempotent_and_returns_the_stored_one(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    first = member("c1", "agent1", joined_at=5, role="agent")

    assert apply_one(backend, AddParticipant(first)) == first
    assert apply_one(backend, AddParticipant(member("c1", "agent1", 9, "supervisor"))) == first
    assert backend.participants("c1") == [first]


def test_remove_participant_says_whether_it_was_there(backend: StoreBackend) -> None:
    create(backend, conversation("c1"), "shopper1", "agent1")

    assert apply_one(backend, RemoveParticipant("c1", "agent1")) is True
    assert apply_one(backend, RemoveParticipant("c1", "agent1")) is False
    assert [p.user for p in backend.participants("c1")] == ["shopper1"]


def test_participants_are_in_join_order(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    backend.apply_batch(
        [
            AddParticipant(member("c1", "zed", joined_at=20)),
            AddParticipant(member("c1", "amy", joined_at=10)),
            AddParticipant(member("c1", "bob", joined_at=20)),  # same time as zed: added after
        ]
    )

    assert [p.user for p in backend.participants("c1")] == ["amy", "zed", "bob"]


def test_participants_of_unknown_conversation_is_empty(backend: StoreBackend) -> None:
    assert backend.participants("nope") == []


# ---- appends -------------------------------------------------------------------------------------


def test_appends_get_gap_free_sequence_numbers(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))

    first = append_many(backend, "c1", 3)
    results = backend.apply_batch([append("c1", "later"), append("c1", "last", body=b"\x00\xff")])

    assert seqs(first) == [1, 2, 3]
    assert [(appended(r).message.seq, appended(r).duplicate) for r in results] == [
        (4, False),
        (5, False),
    ]
    assert last_seq(backend, "c1") == 5
    assert seqs(backend.read_messages("c1").messages) == [1, 2, 3, 4, 5]


def test_append_returns_the_message_as_stored(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    before = int(time.time() * 1000)

    result = appended(apply_one(backend, AppendMessage("c1", "m1", "agent1", "agent", b"\x81")))

    assert not result.duplicate
    message = result.message
    assert (message.conv_id, message.seq, message.cmid) == ("c1", 1, "m1")
    assert (message.sender, message.sender_role) == ("agent1", "agent")
    assert message.body == b"\x81" and type(message.body) is bytes
    assert before <= message.ts <= int(time.time() * 1000)
    assert backend.read_messages("c1").messages == [message]


def test_each_conversation_has_its_own_sequence(backend: StoreBackend) -> None:
    create(backend, conversation("a"))
    create(backend, conversation("b"))

    results = backend.apply_batch(
        [append("a", "1"), append("b", "1"), append("a", "2"), append("b", "2"), append("b", "3")]
    )

    numbered = [(appended(r).message.conv_id, appended(r).message.seq) for r in results]
    assert numbered == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("b", 3)]


def test_duplicate_returns_the_original_and_consumes_no_number(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    original = appended(apply_one(backend, append("c1", "m1", body=b"first")))
    time.sleep(0.002)  # a fresh ts would differ from the stored one

    again = apply_one(backend, append("c1", "m1", body=b"retry with other bytes"))
    following = appended(apply_one(backend, append("c1", "m2")))

    assert again == Appended(original.message, duplicate=True)
    assert following.message.seq == 2
    assert last_seq(backend, "c1") == 2


def test_duplicate_key_is_conversation_sender_and_cmid(backend: StoreBackend) -> None:
    create(backend, conversation("a"))
    create(backend, conversation("b"))
    apply_one(backend, append("a", "m1", sender="u1"))

    results = backend.apply_batch([append("a", "m1", sender="u2"), append("b", "m1", sender="u1")])

    assert [(appended(r).message.seq, appended(r).duplicate) for r in results] == [
        (2, False),
        (1, False),
    ]


def test_duplicate_within_one_batch(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))

    results = backend.apply_batch([append("c1", "m1"), append("c1", "m1"), append("c1", "m2")])

    first, again, other = (appended(r) for r in results)
    assert again == Appended(first.message, duplicate=True)
    assert other.message.seq == 2
    assert seqs(backend.read_messages("c1").messages) == [1, 2]


def test_append_to_conversation_created_in_the_same_batch(backend: StoreBackend) -> None:
    results = backend.apply_batch([CreateConversation(conversation("c1")), append("c1", "m1")])

    assert appended(results[1]).message.seq == 1
    assert last_seq(backend, "c1") == 1


# ---- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "op",
    [
        AddParticipant(member("nope", "agent1")),
        RemoveParticipant("nope", "agent1"),
        append("nope", "m1"),
        SetReceipt(Receipt("nope", "agent1", "read", 1)),
        SetStatus("nope", CLOSED),
        SetTags("nope", ("vip",)),
        RecallMessage("nope", 1, b"gone"),
    ],
    ids=lambda op: type(op).__name__,
)
def test_ops_on_unknown_conversation_are_not_found(backend: StoreBackend, op: WriteOp) -> None:
    assert isinstance(apply_one(backend, op), NotFound)
    assert backend.get_conversation("nope") is None
    assert backend.read_messages("nope").messages == []
    assert backend.receipts("nope") == []


def test_a_failing_op_does_not_disturb_the_rest_of_its_batch(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))

    results = backend.apply_batch(
        [
            append("c1", "m1"),
            append("nope", "m1"),
            CreateConversation(conversation("c1")),  # exists already
            "not an op",  # type: ignore[list-item]
            append("c1", "m2"),
            SetStatus("c1", CLOSED),
        ]
    )

    assert isinstance(results[1], NotFound)
    assert isinstance(results[2], StoreError) and isinstance(results[3], StoreError)
    assert [appended(r).message.seq for r in (results[0], results[4])] == [1, 2]
    closed = results[5]
    assert isinstance(closed, Conversation) and (closed.status, closed.last_seq) == (CLOSED, 2)
    assert backend.get_conversation("c1") == closed


def test_empty_batch(backend: StoreBackend) -> None:
    assert backend.apply_batch([]) == []


def test_closed_backend_refuses_calls(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    backend.close()

    with pytest.raises(StoreError):
        backend.apply_batch([append("c1", "m1")])
    with pytest.raises(StoreError):
        backend.get_conversation("c1")


# ---- reading messages ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected", "more"),
    [
        ({}, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], False),
        ({"limit": 3}, [1, 2, 3], True),
        ({"limit": 10}, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], False),
        ({"after": 7}, [8, 9, 10], False),
        ({"after": 7, "limit": 3}, [8, 9, 10], False),
        ({"after": 6, "limit": 3}, [7, 8, 9], True),
        ({"after": 10}, [], False),
        ({"before": 5}, [1, 2, 3, 4], False),
        ({"before": 8, "limit": 3}, [5, 6, 7], True),
        ({"before": 4, "limit": 3}, [1, 2, 3], False),
        ({"after": 2, "before": 8, "limit": 3}, [5, 6, 7], True),
        ({"after": 4, "before": 8, "limit": 3}, [5, 6, 7], False),
        ({"after": 5, "before": 6}, [], False),
        ({"before": 1}, [], False),
        ({"before": 99, "limit": 2}, [9, 10], True),
        ({"limit": 0}, [], True),
    ],
)
def test_read_messages_range_and_paging(
    backend: StoreBackend, kwargs: dict[str, int], expected: list[int], more: bool
) -> None:
    create(backend, conversation("c1"))
    append_many(backend, "c1", 10)

    page = backend.read_messages("c1", **kwargs)

    assert (seqs(page.messages), page.more) == (expected, more)


def test_history_pages_backwards_to_the_start(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    append_many(backend, "c1", 7)

    page = backend.read_messages("c1", before=8, limit=3)
    pages = [seqs(page.messages)]
    while page.more:
        page = backend.read_messages("c1", before=page.messages[0].seq, limit=3)
        pages.append(seqs(page.messages))

    assert pages == [[5, 6, 7], [2, 3, 4], [1]]


def test_read_messages_of_unknown_conversation_is_an_empty_page(backend: StoreBackend) -> None:
    page = backend.read_messages("nope")

    assert (page.messages, page.more) == ([], False)


def test_find_message(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    stored = appended(apply_one(backend, append("c1", "m1", sender="u1"))).message

    assert backend.find_message("c1", "u1", "m1") == stored
    assert backend.find_message("c1", "u2", "m1") is None
    assert backend.find_message("c1", "u1", "m2") is None
    assert backend.find_message("nope", "u1", "m1") is None


def test_a_recall_replaces_the_body_and_keeps_everything_else(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    first = appended(apply_one(backend, append("c1", "m1", sender="u1", body=b"my phone is 138..."))).message
    apply_one(backend, append("c1", "m2", sender="u2"))
    recalled = apply_one(backend, RecallMessage("c1", 1, b"recalled"))
    assert recalled == StoredMessage("c1", 1, "m1", "u1", "shopper", first.ts, b"recalled")
    assert backend.read_messages("c1").messages[0] == recalled
    assert backend.read_messages("c1").messages[1].body == b"hi"
    assert backend.find_message("c1", "u1", "m1") == recalled
    assert appended(apply_one(backend, append("c1", "m1", sender="u1"))).duplicate  # a resend finds the recalled one
    assert backend.get_conversation("c1").last_seq == 2  # nothing renumbered
    assert isinstance(apply_one(backend, RecallMessage("c1", 3, b"x")), NotFound)
    assert isinstance(apply_one(backend, RecallMessage("c1", 0, b"x")), NotFound)


def test_a_recall_in_the_batch_that_appended_the_message(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    results = backend.apply_batch([append("c1", "m1", body=b"oops"), RecallMessage("c1", 1, b"recalled"), append("c1", "m2")])
    assert [type(r) for r in results] == [Appended, StoredMessage, Appended]
    assert [m.body for m in backend.read_messages("c1").messages] == [b"recalled", b"hi"]


# ---- receipts ------------------------------------------------------------------------------------


def test_receipts_are_cumulative(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    append_many(backend, "c1", 9)

    results = backend.apply_batch(
        [
            SetReceipt(Receipt("c1", "agent1", "read", 5)),
            SetReceipt(Receipt("c1", "agent1", "read", 3)),  # lower: no change
            SetReceipt(Receipt("c1", "agent1", "read", 5)),  # equal: no change
        ]
    )
    raised = apply_one(backend, SetReceipt(Receipt("c1", "agent1", "read", 7)))

    assert results == [Receipt("c1", "agent1", "read", 5)] * 3
    assert raised == Receipt("c1", "agent1", "read", 7)
    assert backend.receipts("c1") == [Receipt("c1", "agent1", "read", 7)]


def test_receipts_are_kept_per_user_and_kind(backend: StoreBackend) -> None:
    create(backend, conversation("c1"))
    create(backend, conversation("c2"))
    backend.apply_batch(
        [
            SetReceipt(Receipt("c1", "shopper1", "read", 2)),
            SetReceipt(Receipt("c1", "agent1", "read", 4)),
            SetReceipt(Receipt("c1", "agent1", "delivered", 6)),
            SetReceipt(Receipt("c2", "agent1", "read", 1)),
        ]
    )

    assert backend.receipts("c1") == [
        Receipt("c1", "agent1", "delivered", 6),
        Receipt("c1", "agent1", "read", 4),
        Receipt("c1", "shopper1", "read", 2),
    ]
    assert backend.receipts("c2") == [Receipt("c2", "agent1", "read", 1)]


def test_routing_fields_and_the_routing_backlog(backend: StoreBackend) -> None:
    for i, tenant in enumerate(["t1", "t2", "t1", "t1"]):
        backend.apply_batch([CreateConversation(conversation(f"c{i}", tenant=tenant, created_at=1_000 + i))])
    [moved] = backend.apply_batch([SetStatus("c0", stage="queued", group="after_sales")])
    assert (moved.stage, moved.group, moved.assignee, moved.status) == ("queued", "after_sales", "", OPEN)
    backend.apply_batch([SetStatus("c1", stage="assigned", assignee="ann"), SetStatus("c2", stage="bot"), SetStatus("c3", CLOSED, stage="queued")])
    got = backend.get_conversation("c1")
    assert (got.stage, got.assignee) == ("assigned", "ann")
    # every tenant, oldest first, open ones only
    assert [c.id for c in backend.in_stages(("queued", "assigned"))] == ["c0", "c1"]
    assert [c.id for c in backend.in_stages(("bot",))] == ["c2"]
    assert backend.in_stages(()) == []


def test_the_list_cursor_never_skips_conversations_of_the_same_millisecond(backend: StoreBackend) -> None:
    for i in range(5):
        backend.apply_batch([CreateConversation(conversation(f"c{i}", created_at=2_000))])
    seen, before, before_id = [], None, None
    while True:
        page = backend.list_conversations("t1", before=before, before_id=before_id, limit=2)
        seen += [c.id for c in page]
        if len(page) < 2:
            break
        before, before_id = page[-1].created_at, page[-1].id
    assert seen == ["c4", "c3", "c2", "c1", "c0"]


def test_tags_are_replaced_whole_unique_and_sorted(backend: StoreBackend) -> None:
    apply_one(backend, CreateConversation(conversation("c1")))
    apply_one(backend, CreateConversation(conversation("c2")))
    assert backend.tags("c1") == ()
    assert apply_one(backend, SetTags("c1", ("vip", "退货", "vip"))) == ("vip", "退货")
    assert backend.apply_batch([SetTags("c2", ("a",)), SetTags("c1", ("b",))]) == [("a",), ("b",)]
    assert (backend.tags("c1"), backend.tags("c2")) == (("b",), ("a",))
    assert apply_one(backend, SetTags("c1", ())) == ()
    assert backend.tags("c1") == () and backend.tags("nope") == ()
# ---- attachments ---------------------------------------------------------------------------------


def attachment(att_id: str = "a1", conv_id: str = "c1", **kw: object) -> Attachment:
    fields: dict = dict(tenant="t1", conv_id=conv_id, uploader="shopper1", kind="image", content_type="image/jpeg",
                        size=48213, created_at=2_000, name="照片.jpg", width=800, height=600, thumbnail_size=5120)
    fields.update(kw)
    return Attachment(att_id, **fields)


def test_an_attachment_is_recorded_and_read_back_with_every_fact(backend: StoreBackend) -> None:
    create(backend, conversation("c1"), "shopper1")
    image = attachment("a1")
    voice = attachment("a2", kind="voice", content_type="audio/mp4", width=None, height=None, duration_ms=3200, thumbnail_size=None, name="")
    assert backend.apply_batch([AddAttachment(image), AddAttachment(voice)]) == [image, voice]
    assert backend.get_attachment("a1") == image
    assert backend.get_attachment("a2") == voice
    assert backend.get_attachment("a3") is None


def test_an_attachment_needs_its_conversation(backend: StoreBackend) -> None:
    result = apply_one(backend, AddAttachment(attachment("a1", conv_id="nope")))
    assert isinstance(result, NotFound)
    assert backend.get_attachment("a1") is None


def test_an_attachment_id_is_recorded_once(backend: StoreBackend) -> None:
    create(backend, conversation("c1"), "shopper1")
    first = attachment("a1")
    apply_one(backend, AddAttachment(first))
    result = apply_one(backend, AddAttachment(attachment("a1", size=1)))
    assert isinstance(result, StoreError)
    assert backend.get_attachment("a1") == first


def test_an_attachment_record_is_deleted(backend: StoreBackend) -> None:
    create(backend, conversation("c1"), "shopper1")
    apply_one(backend, AddAttachment(attachment("a1")))
    assert apply_one(backend, DeleteAttachment("a1")) is True
    assert apply_one(backend, DeleteAttachment("a1")) is False
    assert backend.get_attachment("a1") is None


def test_an_attachment_is_marked_deleted_once_and_its_record_stays(backend: StoreBackend) -> None:
    create(backend, conversation("c1"), "shopper1")
    apply_one(backend, AddAttachment(attachment("a1")))
    apply_one(backend, AddAttachment(attachment("a2")))
    marked = apply_one(backend, MarkAttachmentDeleted("a1", 5_000))
    assert marked == attachment("a1", deleted_at=5_000)
    assert apply_one(backend, MarkAttachmentDeleted("a1", 6_000)) == marked  # the first deletion's time stays
    assert backend.get_attachment("a1") == marked
    assert backend.get_attachment("a2") == attachment("a2")  # only the one named
    assert apply_one(backend, MarkAttachmentDeleted("nope", 5_000)) is None


def test_a_conversation_created_in_the_same_batch_takes_its_attachment(backend: StoreBackend) -> None:
    results = backend.apply_batch([CreateConversation(conversation("c9")), AddAttachment(attachment("a9", conv_id="c9"))])
    assert results[1] == attachment("a9", conv_id="c9")


# ---- fencing: the routing leader's writes carry its term's number --------------------------------


def refused(result: object, fence: int, highest: int) -> bool:
    return isinstance(result, StaleFence) and (result.fence, result.highest) == (fence, highest)


def snapshot(backend: StoreBackend, conv_id: str) -> tuple:
    """Everything a routing write could change in a conversation."""
    return backend.get_conversation(conv_id), backend.participants(conv_id), backend.read_messages(conv_id).messages


@pytest.mark.parametrize(
    "op",
    [
        SetStatus("c1", stage="queued", assignee=""),
        AddParticipant(member("c1", "ann")),
        RemoveParticipant("c1", "ben"),
        AppendMessage("c1", "srv-1", "system", "system", b"ann serves you"),
        None,  # the fence alone
    ],
    ids=lambda op: type(op).__name__,
)
def test_a_fenced_write_below_the_highest_fence_is_refused_and_changes_nothing(backend: StoreBackend, op: WriteOp | None) -> None:
    create(backend, conversation("c1"), "shopper1")
    assert apply_one(backend, Fenced(5, AddParticipant(member("c1", "ben")))) == member("c1", "ben")
    assert apply_one(backend, Fenced(5, SetStatus("c1", stage="assigned", assignee="ben"))).assignee == "ben"
    before = snapshot(backend, "c1")

    assert refused(apply_one(backend, Fenced(4, op)), 4, 5)

    assert snapshot(backend, "c1") == before
    assert refused(apply_one(backend, Fenced(4)), 4, 5)  # the refused write left the highest at 5


def test_an_equal_or_higher_fence_goes_through_and_becomes_the_highest(backend: StoreBackend) -> None:
    create(backend, conversation("c1"), "shopper1")
    assert apply_one(backend, Fenced(3, SetStatus("c1", stage="queued"))).stage == "queued"
    assert apply_one(backend, Fenced(3, SetStatus("c1", stage="assigned", assignee="ann"))).assignee == "ann"  # the same term again
    assert apply_one(backend, Fenced(7)) is None  # a new term claims its number
    assert refused(apply_one(backend, Fenced(3, SetStatus("c1", stage="queued"))), 3, 7)
    assert refused(apply_one(backend, Fenced(6)), 6, 7)
    assert apply_one(backend, Fenced(7, SetStatus("c1", stage="assigned", assignee="ben"))).assignee == "ben"
    assert apply_one(backend, Fenced(8, append("c1", "m1"))).message.seq == 1


def test_unfenced_writes_are_unaffected_by_the_fence(backend: StoreBackend) -> None:
    create(backend, conversation("c1"), "shopper1")
    apply_one(backend, Fenced(9))
    results = backend.apply_batch([
        append("c1", "m1"), SetStatus("c1", stage="queued"), AddParticipant(member("c1", "ann")), SetReceipt(Receipt("c1", "ann", "read", 1)),
    ])
    assert not any(isinstance(r, Exception) for r in results), results
    assert backend.get_conversation("c1").stage == "queued"
    assert refused(apply_one(backend, Fenced(8)), 8, 9)  # and they did not touch it


def test_a_fenced_op_that_fails_raises_no_fence(backend: StoreBackend) -> None:
    create(backend, conversation("c1"), "shopper1")
    apply_one(backend, Fenced(2))
    assert isinstance(apply_one(backend, Fenced(5, SetStatus("nope", stage="queued"))), NotFound)
    assert isinstance(apply_one(backend, Fenced(6, Fenced(6))), StoreError)  # not an op to fence
    assert apply_one(backend, Fenced(3, SetStatus("c1", stage="queued"))).stage == "queued"


def test_within_a_batch_each_fenced_op_is_checked_against_those_before_it(backend: StoreBackend) -> None:
    create(backend, conversation("c1"), "shopper1")
    results = backend.apply_batch([
        append("c1", "m1"),
        Fenced(4, SetStatus("c1", stage="queued")),
        Fenced(5, append("c1", "srv-1", sender="system")),  # numbered in line with the unfenced appends
        Fenced(4, SetStatus("c1", stage="assigned", assignee="ann")),
        append("c1", "m2"),
        Fenced(5, AddParticipant(member("c1", "ben"))),
    ])
    assert appended(results[0]).message.seq == 1
    assert results[1].stage == "queued"
    assert appended(results[2]).message.seq == 2
    assert refused(results[3], 4, 5)
    assert appended(results[4]).message.seq == 3
    assert results[5] == member("c1", "ben")
    conv = backend.get_conversation("c1")
    assert (conv.stage, conv.assignee, conv.last_seq) == ("queued", "", 3)
    assert [m.cmid for m in backend.read_messages("c1").messages] == ["m1", "srv-1", "m2"]
    assert refused(apply_one(backend, Fenced(4)), 4, 5)
