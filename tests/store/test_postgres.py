"""What the PostgreSQL backend promises beyond the shared contract: one conversation's numbers stay
gap-free when several writers (processes, each with its own connection) append at once; a routing
leader's stale fenced write is refused whichever process wrote the higher fence, even while that
one's commit is on its way; versioned migrations; a lost or unreachable server is a retryable
StoreUnavailable, never a silent success."""

from __future__ import annotations

import threading

import psycopg
import pytest
import trio

from gateway.metrics import Stats
from gateway.model import AddParticipant, AppendMessage, Appended, Conversation, CreateConversation, Fenced, Participant, SetStatus
from gateway.store import PostgresBackend, StaleFence, StoreError, StoreUnavailable
from gateway.store.postgres import MIGRATIONS
from gateway.store.writer import Store

from ..postgres import PG_URL, drop_schema, fresh_schema

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def schema():
    name = fresh_schema()
    yield name
    drop_schema(name)


def opened(schema: str) -> PostgresBackend:
    backend = PostgresBackend(PG_URL, schema=schema)
    backend.open()
    return backend


def create(backend: PostgresBackend, conv_id: str = "c1") -> None:
    conv = Conversation(conv_id, "t1", "alice", "app", "open", 1)
    [result] = backend.apply_batch([CreateConversation(conv, (Participant(conv_id, "alice", "shopper", 1),))])
    assert isinstance(result, Conversation)


def test_writers_on_separate_connections_append_to_one_conversation_gap_free(schema):
    """Four writers (as four gateway processes would be), each with its own connection, append
    batches to one conversation at once, resending some messages: every message is stored once,
    and the numbers are 1..N with no gap and no repeat."""
    writers = [opened(schema) for _ in range(4)]
    create(writers[0])
    results: dict[int, list[Appended]] = {i: [] for i in range(len(writers))}
    failures: list[BaseException] = []
    barrier = threading.Barrier(len(writers))

    def write(i: int, backend: PostgresBackend) -> None:
        try:
            barrier.wait(10)
            for batch in range(15):
                ops = [AppendMessage("c1", f"w{i}-{batch}-{k}", f"user{i}", "shopper", b"x") for k in range(1 + batch % 5)]
                if batch:  # a resend of the previous batch's first message rides along
                    ops.append(AppendMessage("c1", f"w{i}-{batch - 1}-0", f"user{i}", "shopper", b"x"))
                for result in backend.apply_batch(ops):
                    assert isinstance(result, Appended), result
                    results[i].append(result)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(i, b)) for i, b in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    try:
        assert not failures, failures
        fresh = [r.message for rs in results.values() for r in rs if not r.duplicate]
        resent = [r for rs in results.values() for r in rs if r.duplicate]
        expected = sum(1 + batch % 5 for batch in range(15)) * len(writers)
        assert len(fresh) == expected
        assert len(resent) == 14 * len(writers)
        assert sorted(m.seq for m in fresh) == list(range(1, expected + 1))  # gap-free, no repeat
        for i, rs in results.items():  # each writer's own messages in the order it sent them
            own = [r.message.seq for r in rs if not r.duplicate]
            assert own == sorted(own)
        for r in resent:  # a resend answers with the original number
            assert r.message.cmid.startswith("w") and r.message.seq in {m.seq for m in fresh if m.cmid == r.message.cmid}
        page = writers[1].read_messages("c1", limit=10_000)
        assert [m.seq for m in page.messages] == list(range(1, expected + 1))
        assert len({(m.sender, m.cmid) for m in page.messages}) == expected
        assert writers[2].get_conversation("c1").last_seq == expected
    finally:
        for backend in writers:
            backend.close()


def test_a_stale_leaders_write_is_refused_after_the_new_leaders_from_another_process(schema):
    """Two processes share the store: the old leader (term 5) wrote, the new one (term 6) claimed
    its number and assigned; the old one's delayed write then arrives and changes nothing."""
    old, new = opened(schema), opened(schema)
    try:
        create(old)
        [queued] = old.apply_batch([Fenced(5, SetStatus("c1", stage="queued"))])
        assert queued.stage == "queued"
        assert new.apply_batch([Fenced(6)]) == [None]
        [assigned] = new.apply_batch([Fenced(6, SetStatus("c1", stage="assigned", assignee="ben"))])
        assert assigned.assignee == "ben"

        [stale, message] = old.apply_batch([Fenced(5, SetStatus("c1", stage="assigned", assignee="ann")), AppendMessage("c1", "m1", "alice", "shopper", b"x")])

        assert isinstance(stale, StaleFence) and (stale.fence, stale.highest) == (5, 6)
        assert isinstance(message, Appended)  # the unfenced write of the same batch is not refused
        assert new.get_conversation("c1").assignee == "ben"
    finally:
        old.close()
        new.close()


def test_a_stale_write_racing_the_new_leaders_commit_waits_for_it_and_is_refused(schema):
    """The new leader's transaction holds the fence's row (its write, to another conversation, is
    on its way) when the old leader's write arrives: the old one waits for that commit, then reads
    the higher fence and is refused; it cannot slip in between the check and the write."""
    old = opened(schema)
    try:
        create(old, "c1")
        create(old, "c2")
        old.apply_batch([Fenced(5)])
        done = threading.Event()
        results: list[object] = []

        def write() -> None:
            results.extend(old.apply_batch([Fenced(5, SetStatus("c1", stage="assigned", assignee="ann"))]))
            done.set()

        with psycopg.connect(PG_URL, options=f"-c search_path={schema}") as new:  # the new leader's transaction
            new.execute("SELECT fence FROM routing_fence WHERE id = 1 FOR UPDATE")
            new.execute("UPDATE conversations SET stage = 'assigned', assignee = 'ben' WHERE id = 'c2'")
            new.execute("UPDATE routing_fence SET fence = 6 WHERE id = 1")
            writer = threading.Thread(target=write)
            writer.start()
            assert not done.wait(0.5)  # held at the fence's row
            new.commit()
        writer.join(10)
        assert done.is_set()
        assert isinstance(results[0], StaleFence) and results[0].highest == 6
        assert (old.get_conversation("c1").assignee, old.get_conversation("c2").assignee) == ("", "ben")
    finally:
        old.close()


def test_a_schema_of_version_3_is_upgraded_in_place_and_takes_fenced_writes(schema):
    with psycopg.connect(PG_URL, autocommit=True) as conn:  # what the code of schema version 3 left
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path = {schema}")
        for step in MIGRATIONS[:3]:
            for statement in step:
                conn.execute(statement)
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version (version) VALUES (3)")
        conn.execute(
            "INSERT INTO conversations (id, tenant, customer, channel, status, subject, created_at, last_seq, stage)"
            " VALUES ('c1', 't1', 'alice', 'app', 'open', '', 1, 0, 'queued')"
        )
    backend = opened(schema)
    try:
        [moved] = backend.apply_batch([Fenced(1, SetStatus("c1", stage="assigned", assignee="ann"))])
        assert (moved.tenant, moved.stage, moved.assignee) == ("t1", "assigned", "ann")
        [stale] = backend.apply_batch([Fenced(0)])
        assert isinstance(stale, StaleFence) and stale.highest == 1
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            assert conn.execute(f"SELECT version FROM {schema}.schema_version").fetchall() == [(len(MIGRATIONS),)]
    finally:
        backend.close()


def test_migrations_are_recorded_and_run_once(schema):
    first, second = opened(schema), opened(schema)  # a second process finds the schema current
    try:
        create(first)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            rows = conn.execute(f"SELECT version FROM {schema}.schema_version").fetchall()
        assert rows == [(len(MIGRATIONS),)]
        assert second.get_conversation("c1") is not None
    finally:
        first.close()
        second.close()


def test_a_newer_schema_is_refused(schema):
    opened(schema).close()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.schema_version SET version = version + 1")
    with pytest.raises(StoreError, match="newer"):
        opened(schema)


def test_an_unreachable_server_is_unavailable():
    backend = PostgresBackend("postgresql://127.0.0.1:1/test", schema="nowhere")
    with pytest.raises(StoreUnavailable):
        backend.open()


def test_a_lost_connection_fails_the_batch_retryably_and_the_next_one_reconnects(schema):
    backend = opened(schema)
    try:
        create(backend)
        [first] = backend.apply_batch([AppendMessage("c1", "m1", "alice", "shopper", b"x")])
        pid = backend._writer.info.backend_pid  # noqa: SLF001 (the test ends exactly this session)
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreUnavailable):
            backend.apply_batch([AppendMessage("c1", "m2", "alice", "shopper", b"x")])
        assert backend.find_message("c1", "alice", "m2") is None  # refused, and indeed not stored
        [again] = backend.apply_batch([AppendMessage("c1", "m2", "alice", "shopper", b"x")])  # the client's retry
        assert (first.message.seq, again.message.seq, again.duplicate) == (1, 2, False)
    finally:
        backend.close()


async def test_through_the_store_a_lost_connection_is_an_error_result_not_an_ack(schema):
    backend = PostgresBackend(PG_URL, schema=schema)
    store = Store(backend, Stats())
    async with trio.open_nursery() as nursery:
        with trio.fail_after(30):
            await nursery.start(store.run)
            await store.execute(CreateConversation(Conversation("c1", "t1", "alice", "app", "open", 1), (Participant("c1", "alice", "shopper", 1),)))
            pid = backend._writer.info.backend_pid  # noqa: SLF001
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
            with pytest.raises(StoreUnavailable):
                await store.execute(AppendMessage("c1", "m1", "alice", "shopper", b"x"))
            stored = await store.execute(AppendMessage("c1", "m1", "alice", "shopper", b"x"))
            assert (stored.message.seq, stored.duplicate) == (1, False)
            await store.ping()
        nursery.cancel_scope.cancel()


def test_an_op_the_database_refuses_fails_alone_and_the_batch_is_applied_again(schema):
    """PostgreSQL aborts a transaction whole on a failed statement: the batch is then applied again
    with a savepoint per op, so only the bad op fails (a NUL byte is not valid PostgreSQL text)."""
    backend = opened(schema)
    try:
        create(backend)
        results = backend.apply_batch([
            AppendMessage("c1", "m1", "alice", "shopper", b"x"),
            AddParticipant(Participant("c1", "bad\x00user", "agent", 2)),
            AppendMessage("c1", "m2", "alice", "shopper", b"x"),
            AppendMessage("c1", "m1", "alice", "shopper", b"x"),
        ])
        assert [type(r).__name__ for r in results] == ["Appended", "StoreError", "Appended", "Appended"]
        assert (results[0].message.seq, results[2].message.seq) == (1, 2)
        assert (results[3].duplicate, results[3].message.seq) == (True, 1)
        assert [m.seq for m in backend.read_messages("c1").messages] == [1, 2]
        assert [p.user for p in backend.participants("c1")] == ["alice"]
    finally:
        backend.close()
