"""What only the SQLite backend promises: persistence across reopen, a versioned schema, reads
from other threads that see only committed batches, a last_seq cache that survives a failed commit,
and agreement with the memory backend on arbitrary op sequences."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule

from gateway.model import (
    AddAttachment,
    Attachment,
    CLOSED,
    OPEN,
    RECEIPT_KINDS,
    AddParticipant,
    Appended,
    AppendMessage,
    Conversation,
    CreateConversation,
    Fenced,
    Page,
    Participant,
    Receipt,
    RemoveParticipant,
    SetReceipt,
    SetStatus,
    StoredMessage,
    WriteOp,
)
from gateway.store import MemoryBackend, SqliteBackend, StaleFence, StoreError
from gateway.store import sqlite as sqlite_module
from gateway.store.sqlite import MIGRATIONS


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "kefu.db"


@pytest.fixture
def backend(path: Path) -> Iterator[SqliteBackend]:
    store = SqliteBackend(path)
    store.open()
    yield store
    store.close()


def create(backend: SqliteBackend, conv_id: str) -> None:
    conv = Conversation(conv_id, "t1", "shopper1", "app", OPEN, 1_000)
    participant = Participant(conv_id, "shopper1", "shopper", 1_000)
    [result] = backend.apply_batch([CreateConversation(conv, (participant,))])
    assert result == conv


def append_seqs(backend: SqliteBackend, conv_id: str, cmids: list[str]) -> list[int]:
    ops = [AppendMessage(conv_id, cmid, "shopper1", "shopper", b"x") for cmid in cmids]
    seqs = []
    for result in backend.apply_batch(ops):
        assert isinstance(result, Appended), result
        seqs.append(result.message.seq)
    return seqs


def last_seq(backend: SqliteBackend, conv_id: str) -> int:
    conv = backend.get_conversation(conv_id)
    assert conv is not None
    return conv.last_seq


def test_data_survives_reopen_and_numbering_continues(path: Path) -> None:
    first = SqliteBackend(path)
    first.open()
    create(first, "c1")
    append_seqs(first, "c1", ["m1", "m2", "m3"])
    first.apply_batch([SetReceipt(Receipt("c1", "shopper1", "read", 2))])
    stored = first.read_messages("c1").messages
    first.close()

    second = SqliteBackend(path)
    second.open()
    try:
        assert last_seq(second, "c1") == 3
        assert second.read_messages("c1").messages == stored
        assert second.receipts("c1") == [Receipt("c1", "shopper1", "read", 2)]
        assert append_seqs(second, "c1", ["m2", "m4"]) == [2, 4]  # m2 is a duplicate
        assert second.find_message("c1", "shopper1", "m2") == stored[1]
    finally:
        second.close()


def test_migrations_are_recorded_and_idempotent(path: Path) -> None:
    for _ in range(2):
        store = SqliteBackend(path)
        store.open()
        store.close()

    with sqlite3.connect(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        listed = db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
        tables = {name for (name,) in listed}
        journal = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert version == len(MIGRATIONS)
    assert tables == {"conversations", "participants", "messages", "receipts", "conversation_tags", "api_keys", "agents", "tenant_settings", "attachments", "workspace_records", "routing_fence"}
    assert journal == "wal"


def test_a_database_of_an_older_schema_is_migrated_keeping_its_data(path: Path) -> None:
    with sqlite3.connect(path) as db:  # what the code of schema version 2 left
        for step in MIGRATIONS[:2]:
            for statement in step:
                db.execute(statement)
        db.execute("INSERT INTO conversations (id, tenant, customer, channel, status, subject, created_at, last_seq) VALUES ('c1', 't1', 'u', 'app', 'open', '', 1, 0)")
        db.execute("PRAGMA user_version = 2")
    store = SqliteBackend(path)
    store.open()
    try:
        assert store.get_conversation("c1").tenant == "t1"
        assert store.agents() == [] and store.api_keys("t1") == []
        att = Attachment("a1", "t1", "c1", "u", "image", "image/png", 10, 6)
        assert store.apply_batch([AddAttachment(att)]) == [att]
        assert store.get_attachment("a1") == att
    finally:
        store.close()


def test_a_store_of_the_counter_schema_numbers_on_from_its_highest_stored_seq(path: Path) -> None:
    """Before schema 8 a conversation kept its last seq in a counter column, which damage could
    leave behind its messages; now the highest stored message says it, whatever the counter said."""
    with sqlite3.connect(path) as db:
        for step in MIGRATIONS[:7]:
            for statement in step:
                db.execute(statement)
        db.execute("INSERT INTO conversations (id, tenant, customer, channel, status, subject, created_at, last_seq) VALUES ('c1', 't1', 'u', 'app', 'open', '', 1, 1)")
        db.executemany(
            "INSERT INTO messages (conv_id, seq, cmid, sender, sender_role, ts, body) VALUES ('c1', ?, ?, 'u', 'shopper', 1, x'00')",
            [(seq, f"m{seq}") for seq in (1, 2, 3)],
        )
        db.execute("PRAGMA user_version = 7")
    store = SqliteBackend(path)
    store.open()
    try:
        assert last_seq(store, "c1") == 3
        assert append_seqs(store, "c1", ["m4"]) == [4]
        assert [c.last_seq for c in store.list_conversations("t1")] == [4]
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(conversations)")]
    assert "last_seq" not in columns and "stage" in columns


def test_a_store_of_schema_8_takes_fenced_writes_after_the_upgrade(path: Path) -> None:
    """Schema 9 adds the routing fence: an existing store keeps its conversations and starts at
    fence 0, so the first leader's number passes; the highest fence then survives a reopen."""
    with sqlite3.connect(path) as db:
        for step in MIGRATIONS[:8]:
            for statement in step:
                db.execute(statement)
        db.execute("INSERT INTO conversations (id, tenant, customer, channel, status, subject, created_at, stage) VALUES ('c1', 't1', 'u', 'app', 'open', '', 1, 'queued')")
        db.execute("PRAGMA user_version = 8")
    store = SqliteBackend(path)
    store.open()
    try:
        [moved] = store.apply_batch([Fenced(1, SetStatus("c1", stage="assigned", assignee="ann"))])
        assert (moved.stage, moved.assignee) == ("assigned", "ann")
        assert store.apply_batch([Fenced(4)]) == [None]
    finally:
        store.close()
    store = SqliteBackend(path)
    store.open()
    try:
        [stale] = store.apply_batch([Fenced(3, SetStatus("c1", stage="queued", assignee=""))])
        assert isinstance(stale, StaleFence) and stale.highest == 4
        assert store.get_conversation("c1").assignee == "ann"
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_a_newer_schema_is_refused(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")

    with pytest.raises(StoreError, match="newer"):
        SqliteBackend(path).open()


def test_body_is_stored_as_a_blob(backend: SqliteBackend, path: Path) -> None:
    create(backend, "c1")
    append_seqs(backend, "c1", ["m1"])

    with sqlite3.connect(path) as db:
        assert db.execute("SELECT typeof(body) FROM messages").fetchone() == ("blob",)


def test_synchronous_sets_durability(path: Path) -> None:
    assert "kill -9" in SqliteBackend(path).durability
    assert "power loss too" in SqliteBackend(path, synchronous="full").durability
    with pytest.raises(ValueError):
        SqliteBackend(path, synchronous="OFF")


def test_failed_commit_leaves_nothing_and_numbering_intact(
    backend: SqliteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(backend, "c1")
    append_seqs(backend, "c1", ["m1", "m2"])

    def fail_to_commit(cur: sqlite3.Cursor) -> None:  # the batch's statements ran; the commit fails
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(backend, "_commit", fail_to_commit)
    with pytest.raises(sqlite3.OperationalError):
        backend.apply_batch([AppendMessage("c1", "m3", "shopper1", "shopper", b"x")])
    monkeypatch.undo()

    assert last_seq(backend, "c1") == 2
    assert backend.find_message("c1", "shopper1", "m3") is None
    assert append_seqs(backend, "c1", ["m3"]) == [3]


def test_readers_in_other_threads_see_only_whole_committed_batches(backend: SqliteBackend) -> None:
    batch_size, batches, reader_count = 25, 40, 4
    create(backend, "c1")
    done = threading.Event()
    failures: list[str] = []

    def write() -> None:
        try:
            for n in range(batches):
                append_seqs(backend, "c1", [f"m{n}-{i}" for i in range(batch_size)])
        finally:
            done.set()

    def read() -> None:
        seen = 0
        while not done.is_set():
            conv = backend.get_conversation("c1")
            numbers = [m.seq for m in backend.read_messages("c1", limit=10_000).messages]
            if conv is None or conv.last_seq % batch_size or conv.last_seq > len(numbers):
                failures.append(f"last_seq {conv and conv.last_seq} with {len(numbers)} messages")
            if numbers != list(range(1, len(numbers) + 1)) or len(numbers) % batch_size:
                failures.append(f"not a committed gap-free prefix: {numbers}")
            if len(numbers) < seen:
                failures.append(f"went back from {seen} to {len(numbers)} messages")
            seen = len(numbers)

    threads = [threading.Thread(target=read) for _ in range(reader_count)]
    threads.append(threading.Thread(target=write))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert failures == []
    assert last_seq(backend, "c1") == batch_size * batches


def test_close_closes_every_reader(backend: SqliteBackend) -> None:
    create(backend, "c1")
    worker = threading.Thread(target=backend.participants, args=("c1",))
    worker.start()
    worker.join()
    backend.participants("c1")

    backend.close()

    with pytest.raises(StoreError):
        backend.participants("c1")
    assert backend._readers == {}


def test_the_wal_is_checkpointed_in_the_background(backend: SqliteBackend, path: Path) -> None:
    """Committed pages reach the database file long before the writer's own autocheckpoint
    (10,000 pages) would copy them: the checkpointer thread does it, without stalling the writer."""
    create(backend, "c1")
    size = path.stat().st_size
    ops = [AppendMessage("c1", f"m{i}", "shopper1", "shopper", bytes(1000)) for i in range(sqlite_module._CHECKPOINT_MIN_OPS)]
    assert all(isinstance(r, Appended) for r in backend.apply_batch(ops))
    deadline = time.monotonic() + 5
    while path.stat().st_size <= size:
        assert time.monotonic() < deadline, "nothing was checkpointed into the database file"
        time.sleep(0.02)
    checkpointer = backend._checkpointer
    assert checkpointer is not None and checkpointer.is_alive()
    backend.close()
    assert not checkpointer.is_alive()


def test_a_quiet_wal_is_not_checkpointed_every_interval(backend: SqliteBackend, path: Path) -> None:
    """A few ops wait for more (or for _CHECKPOINT_MAX_AGE_S): each checkpoint that empties the
    WAL costs the next commit an fsync of the new WAL header, on the event loop when it is quiet."""
    create(backend, "c1")
    for i in range(20):
        assert isinstance(backend.apply_batch([AppendMessage("c1", f"q{i}", "shopper1", "shopper", b"x")])[0], Appended)
    time.sleep(10 * sqlite_module._CHECKPOINT_INTERVAL_S)
    assert backend.checkpoints == 0
    ops = [AppendMessage("c1", f"m{i}", "shopper1", "shopper", b"y") for i in range(sqlite_module._CHECKPOINT_MIN_OPS)]
    backend.apply_batch(ops)
    deadline = time.monotonic() + 5
    while backend.checkpoints == 0:
        assert time.monotonic() < deadline, "no checkpoint after enough ops"
        time.sleep(0.02)
    assert backend.ops_since_checkpoint < sqlite_module._CHECKPOINT_MIN_OPS


# ---- SqliteBackend and MemoryBackend agree on arbitrary op sequences ----------------------------

CONV_IDS = st.sampled_from(["c1", "c2", "c3"])
USERS = st.sampled_from(["u1", "u2", "u3"])
TENANTS = st.sampled_from(["t1", "t2"])
STATUSES = st.sampled_from([OPEN, CLOSED])
SMALL = st.integers(min_value=0, max_value=4)


@st.composite
def create_ops(draw: st.DrawFn) -> CreateConversation:
    conv_id = draw(CONV_IDS)
    tenant, customer, status = draw(TENANTS), draw(USERS), draw(STATUSES)
    conv = Conversation(conv_id, tenant, customer, "app", status, draw(SMALL), last_seq=draw(SMALL))
    members = st.builds(Participant, st.just(conv_id), USERS, st.just("agent"), SMALL)
    return CreateConversation(conv, tuple(draw(st.lists(members, max_size=3))))


KINDS = st.sampled_from(RECEIPT_KINDS)
CMIDS = st.sampled_from(["m1", "m2", "m3"])  # few, so that duplicates are common
UNFENCED_OPS = st.one_of(
    create_ops(),
    st.builds(AddParticipant, st.builds(Participant, CONV_IDS, USERS, st.just("agent"), SMALL)),
    st.builds(RemoveParticipant, CONV_IDS, USERS),
    st.builds(AppendMessage, CONV_IDS, CMIDS, USERS, st.just("shopper"), st.binary(max_size=4)),
    st.builds(AppendMessage, CONV_IDS, st.uuids().map(str), USERS, st.just("agent"), st.just(b"")),
    st.builds(SetReceipt, st.builds(Receipt, CONV_IDS, USERS, KINDS, SMALL)),
    st.builds(SetStatus, CONV_IDS, STATUSES),
)
WRITE_OPS = UNFENCED_OPS | st.builds(Fenced, SMALL, st.none() | UNFENCED_OPS)  # the fence survives reopening, too
MAYBE_SMALL = st.none() | SMALL


def comparable(value: object) -> object:
    """Results with the clock-dependent ts blanked and errors reduced to their type."""
    if isinstance(value, StoredMessage):  # not a dataclass in its native twin: no dataclasses.replace
        return StoredMessage(value.conv_id, value.seq, value.cmid, value.sender, value.sender_role, 0, value.body)
    if isinstance(value, Appended):
        return Appended(comparable(value.message), value.duplicate)
    if isinstance(value, Page):
        return ([comparable(m) for m in value.messages], value.more)
    if isinstance(value, list):
        return [comparable(item) for item in value]
    if isinstance(value, BaseException):
        return type(value)
    return value


class SqliteMatchesMemory(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="kefu-store-")
        self.memory = MemoryBackend()
        self.sqlite = SqliteBackend(Path(self.directory) / "kefu.db")
        self.memory.open()
        self.sqlite.open()

    def teardown(self) -> None:
        self.sqlite.close()
        self.memory.close()
        shutil.rmtree(self.directory)

    def same(self, method: str, *args: object, **kwargs: object) -> None:
        expected = comparable(getattr(self.memory, method)(*args, **kwargs))
        assert comparable(getattr(self.sqlite, method)(*args, **kwargs)) == expected

    @initialize(ops=st.lists(create_ops(), min_size=1, max_size=3))
    def create_conversations(self, ops: list[CreateConversation]) -> None:
        self.same("apply_batch", ops)

    @rule(ops=st.lists(WRITE_OPS, max_size=8))
    def apply_batch(self, ops: list[WriteOp]) -> None:
        self.same("apply_batch", ops)

    @rule()
    def reopen_sqlite(self) -> None:
        self.sqlite.close()
        self.sqlite = SqliteBackend(self.sqlite.path)
        self.sqlite.open()

    @rule(conv_id=CONV_IDS)
    def read_conversation(self, conv_id: str) -> None:
        self.same("get_conversation", conv_id)
        self.same("participants", conv_id)
        self.same("receipts", conv_id)

    @rule(
        tenant=TENANTS,
        user=st.none() | USERS,
        status=st.none() | STATUSES,
        before=MAYBE_SMALL,
        limit=SMALL,
    )
    def list_conversations(
        self, tenant: str, user: str | None, status: str | None, before: int | None, limit: int
    ) -> None:
        filters = {"user": user, "status": status, "before": before, "limit": limit}
        self.same("list_conversations", tenant, **filters)

    @rule(conv_id=CONV_IDS, after=SMALL, before=MAYBE_SMALL, limit=SMALL)
    def read_messages(self, conv_id: str, after: int, before: int | None, limit: int) -> None:
        self.same("read_messages", conv_id, after=after, before=before, limit=limit)

    @rule(conv_id=CONV_IDS, sender=USERS, cmid=CMIDS)
    def find_message(self, conv_id: str, sender: str, cmid: str) -> None:
        self.same("find_message", conv_id, sender, cmid)


SqliteMatchesMemory.TestCase.settings = settings(
    max_examples=50, stateful_step_count=20, deadline=None
)
test_sqlite_matches_memory = SqliteMatchesMemory.TestCase
