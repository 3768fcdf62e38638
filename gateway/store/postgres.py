"""The PostgreSQL backend: the system of record when several gateway processes share one store.

It is driven exactly as the SQLite backend is: psycopg 3's *synchronous* API, one writer connection
used by the Store's writer thread (one transaction and one commit per ``apply_batch``: group
commit), and a small psycopg_pool pool for the reader threads. psycopg's async API is driven by
asyncio's event loop and has no Trio support (psycopg/psycopg issue 29), so it cannot run on Trio;
threads keep the event loop free the same way (docs/scaling.md).

Several processes may append to one conversation at once, so nothing about a conversation is
cached between batches. A batch first locks, in id order, the conversation rows its ops touch
(``SELECT … FOR NO KEY UPDATE``: sorted so two batches never deadlock, and weaker than FOR UPDATE so
foreign-key checks of other writers still pass) and reads their ``last_seq``; appends number from
there and the batch writes each conversation's new ``last_seq`` once before it commits. The row
lock is held until the commit, so another process's batch on the same conversation waits and then
reads the committed value: numbers stay gap-free and monotonic across processes. The database
enforces the (conv_id, sender, cmid) dedupe with a unique constraint; a duplicate (``ON CONFLICT DO
NOTHING`` returns no row) consumes no number.

A batch that carries a ``Fenced`` op (the routing leader's writes) then locks the one row of
``routing_fence`` too (``FOR UPDATE``, after the conversations, before anything else) and checks
each fenced op against the highest fence stored or applied so far in the batch: a leader of a
later term in another process that wrote first has committed its higher fence, and the stale
write is refused; one that writes after waits for this commit and is checked against it.

An unexpected database error in one op aborts a PostgreSQL transaction whole, so the batch is then
rolled back and applied again with a savepoint around each op: the failing op fails alone, as the
contract says. A lost connection (PostgreSQL down or restarting) fails the batch with a
``StoreUnavailable`` (answered as the retryable ``unavailable``), and the next batch reconnects: an
op is never reported durable unless its commit returned.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import astuple, replace
from typing import Any, Callable, Sequence

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from ..model import (
    AddAttachment,
    AddParticipant,
    AgentProfile,
    ApiKey,
    AppendMessage,
    Appended,
    Attachment,
    Conversation,
    CreateApiKey,
    CreateConversation,
    DeleteAttachment,
    DeleteRecord,
    Fenced,
    MarkAttachmentDeleted,
    Page,
    Participant,
    PutRecords,
    Receipt,
    Record,
    RemoveParticipant,
    RevokeApiKey,
    SaveAgent,
    SaveTenantSettings,
    SetReceipt,
    SetStatus,
    RecallMessage,
    SetTags,
    StoredMessage,
    TenantSettings,
    WriteOp,
)
from .base import Conflict, NotFound, StaleFence, StoreError
from .listing import conversation_filters
from .memory import check_limit, check_participants_belong

log = logging.getLogger("kefu.store.postgres")


class StoreUnavailable(StoreError):
    """PostgreSQL cannot be reached (down, restarting, refusing connections): retry later."""


# Text that is sorted or compared (ids, cursors) uses the "C" collation: byte order, as SQLite and
# the memory store sort, whatever the database's locale.
_T = 'TEXT COLLATE "C" NOT NULL'

#: Schema migrations in order; step n brings the schema from version n to n + 1, recorded in the
#: one-row table schema_version. Append steps, never edit them.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE conversations (
            id {_T} PRIMARY KEY,
            tenant {_T},
            customer {_T},
            channel {_T},
            status {_T},
            subject {_T},
            created_at BIGINT NOT NULL,
            last_seq BIGINT NOT NULL,
            stage {_T} DEFAULT 'opened',
            assignee {_T} DEFAULT '',
            skill_group {_T} DEFAULT ''
        )""",
        "CREATE INDEX conversations_by_tenant ON conversations (tenant, created_at, id)",
        "CREATE INDEX conversations_in_routing ON conversations (stage, created_at)"
        " WHERE status = 'open' AND stage IN ('bot', 'queued', 'assigned')",
        # n: insertion order, the tie-break of join order
        f"""CREATE TABLE participants (
            conv_id {_T} REFERENCES conversations (id),
            member {_T},
            role {_T},
            joined_at BIGINT NOT NULL,
            n BIGSERIAL NOT NULL,
            PRIMARY KEY (conv_id, member)
        )""",
        "CREATE INDEX participants_by_member ON participants (member, conv_id)",
        f"""CREATE TABLE conversation_tags (
            conv_id {_T} REFERENCES conversations (id),
            tag {_T},
            PRIMARY KEY (conv_id, tag)
        )""",
        "CREATE INDEX conversation_tags_by_tag ON conversation_tags (tag, conv_id)",
        f"""CREATE TABLE messages (
            conv_id {_T} REFERENCES conversations (id),
            seq BIGINT NOT NULL,
            cmid {_T},
            sender {_T},
            sender_role {_T},
            ts BIGINT NOT NULL,
            body BYTEA NOT NULL,
            PRIMARY KEY (conv_id, seq),
            UNIQUE (conv_id, sender, cmid)
        )""",
        f"""CREATE TABLE receipts (
            conv_id {_T} REFERENCES conversations (id),
            member {_T},
            kind {_T},
            seq BIGINT NOT NULL,
            PRIMARY KEY (conv_id, member, kind)
        )""",
        f"""CREATE TABLE api_keys (
            id {_T} PRIMARY KEY,
            tenant {_T},
            name {_T},
            scopes {_T},
            secret_hash {_T},
            created_at BIGINT NOT NULL,
            revoked_at BIGINT NOT NULL
        )""",
        "CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at, id)",
        f"""CREATE TABLE agents (
            tenant {_T},
            member {_T},
            name {_T},
            groups {_T},
            languages {_T},
            max_active INTEGER NOT NULL,
            disabled BOOLEAN NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (tenant, member)
        )""",
        f"""CREATE TABLE tenant_settings (
            tenant {_T} PRIMARY KEY,
            routing {_T},
            updated_at BIGINT NOT NULL
        )""",
        f"""CREATE TABLE attachments (
            id {_T} PRIMARY KEY,
            tenant {_T},
            conv_id {_T} REFERENCES conversations (id),
            uploader {_T},
            kind {_T},
            content_type {_T},
            size BIGINT NOT NULL,
            created_at BIGINT NOT NULL,
            name {_T},
            width INTEGER,
            height INTEGER,
            duration_ms BIGINT,
            thumbnail_size BIGINT
        )""",
    ),
    (
        # The workspace (gateway.customers): JSON records by tenant, kind and key.
        f"""CREATE TABLE workspace_records (
            tenant {_T},
            kind {_T},
            key {_T},
            value TEXT NOT NULL,
            updated_at BIGINT NOT NULL,
            PRIMARY KEY (tenant, kind, key)
        )""",
    ),
    (
        # Deleted attachments (gateway.media): the record stays, marked, so downloads answer 410.
        "ALTER TABLE attachments ADD COLUMN deleted_at BIGINT",
    ),
    (
        # Fencing (gateway.model.Fenced): the highest fence a routing leader's write has carried.
        "CREATE TABLE routing_fence (id INTEGER PRIMARY KEY CHECK (id = 1), fence BIGINT NOT NULL)",
        "INSERT INTO routing_fence (id, fence) VALUES (1, 0)",
    ),
)

_CONVERSATION_COLUMNS = "id, tenant, customer, channel, status, created_at, subject, last_seq, stage, assignee, skill_group"
_C_CONVERSATION_COLUMNS = ", ".join(f"c.{name}" for name in _CONVERSATION_COLUMNS.split(", "))
_COLUMN_OF = {"group": "skill_group"}
_MESSAGE_COLUMNS = "conv_id, seq, cmid, sender, sender_role, ts, body"
_ATTACHMENT_COLUMNS = (
    "id, tenant, conv_id, uploader, kind, content_type, size, created_at, name, width, height, duration_ms, thumbnail_size, deleted_at"
)
_SELECT_RECORDS = "SELECT tenant, kind, key, value, updated_at FROM workspace_records WHERE tenant = %s AND kind = %s"
_SELECT_API_KEYS = "SELECT id, tenant, name, scopes, secret_hash, created_at, revoked_at FROM api_keys"
_SELECT_MESSAGE_BY_CMID = f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv_id = %s AND sender = %s AND cmid = %s"
_INSERT_MESSAGE = f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
_INSERT_PARTICIPANT = "INSERT INTO participants (conv_id, member, role, joined_at) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
READERS = 4  # pool size: the Store's reader threads, plus the odd read from a worker thread
_CONNECT_TIMEOUT_S = 5

#: Per batch: the locked conversations' last_seq as the batch goes (None: not in the database).
_Seqs = dict[str, int]


def _conv_of(op: WriteOp) -> str | None:
    """The existing conversation an op writes to (its row is locked for the batch), if any."""
    kind = type(op)
    if kind is Fenced:
        return None if op.op is None else _conv_of(op.op)  # type: ignore[union-attr]
    if kind is AppendMessage or kind is SetStatus or kind is RemoveParticipant or kind is SetTags or kind is RecallMessage:
        return op.conv_id  # type: ignore[union-attr]
    if kind is AddParticipant:
        return op.participant.conv_id  # type: ignore[union-attr]
    if kind is SetReceipt:
        return op.receipt.conv_id  # type: ignore[union-attr]
    if kind is AddAttachment:
        return op.attachment.conv_id  # type: ignore[union-attr]
    return None


class PostgresBackend:
    """A StoreBackend on a PostgreSQL database (``url``: a libpq URL), in schema ``schema``."""

    blocking = True
    inline_commit = False  # a commit is a network round trip: never on the event loop
    durability = "postgresql: a commit is durable as the server's synchronous_commit says (default on: WAL flushed to disk)"

    def __init__(self, url: str, *, schema: str = "public", readers: int = READERS) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ValueError(f"schema must be a lower-case SQL identifier, got {schema!r}")
        self.url = url
        self.schema = schema
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": _CONNECT_TIMEOUT_S,
            "options": f"-c search_path={schema}",
            "application_name": "kefu",
        }
        self._readers = readers
        self._writer: psycopg.Connection | None = None
        self._pool: ConnectionPool | None = None
        self._opened = False
        self._closed = False
        self._lock = threading.Lock()
        self._handlers: dict[type, Callable[..., object]] = {
            CreateConversation: self._create,
            AddParticipant: self._add_participant,
            RemoveParticipant: self._remove_participant,
            AppendMessage: self._append,
            SetReceipt: self._set_receipt,
            SetStatus: self._set_status,
            SetTags: self._set_tags,
            RecallMessage: self._recall,
            CreateApiKey: self._create_api_key,
            RevokeApiKey: self._revoke_api_key,
            SaveAgent: self._save_agent,
            SaveTenantSettings: self._save_settings,
            AddAttachment: self._add_attachment,
            DeleteAttachment: self._delete_attachment,
            MarkAttachmentDeleted: self._mark_attachment_deleted,
            PutRecords: self._put_records,
            DeleteRecord: self._delete_record,
        }

    # ---- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        if self._opened:
            return
        try:
            conn = self._connect()
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL unreachable: {exc}") from exc
        try:
            migrate(conn, self.schema)
        finally:
            conn.close()
        self._pool = ConnectionPool(
            self.url, kwargs=self._kwargs, min_size=1, max_size=self._readers, open=False, timeout=_CONNECT_TIMEOUT_S,
            name="kefu-readers", reconnect_timeout=0,
        )
        self._pool.open(wait=False)
        self._opened = True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            writer, self._writer = self._writer, None
        if pool is not None:
            pool.close()
        if writer is not None:
            writer.close()

    def _connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, **self._kwargs)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        if not self._opened:
            raise StoreError("store is not open")

    def _writer_connection(self) -> psycopg.Connection:
        conn = self._writer
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            try:
                conn = self._writer = self._connect()
            except psycopg.OperationalError as exc:
                self._writer = None
                raise StoreUnavailable(f"PostgreSQL unreachable: {exc}") from exc
        return conn

    # ---- writes ----------------------------------------------------------------------------------

    def apply_batch(self, ops: Sequence[WriteOp]) -> list[object]:
        """One transaction for the batch (see the module docstring); a lost connection raises
        StoreUnavailable and nothing of the batch is reported durable."""
        self._check_open()
        if not ops:
            return []
        conn = self._writer_connection()
        try:
            try:
                return self._transaction(conn, ops, savepoints=False)
            except _OpFailed:
                return self._transaction(conn, ops, savepoints=True)
        except psycopg.OperationalError as exc:
            conn.close()
            raise StoreUnavailable(f"PostgreSQL write failed: {exc}") from exc

    def _transaction(self, conn: psycopg.Connection, ops: Sequence[WriteOp], *, savepoints: bool) -> list[object]:
        results: list[object] = []
        with conn.transaction():
            cur = conn.cursor()
            seqs, fence = self._lock_conversations(cur, ops)
            start = dict(seqs)
            # Without savepoints, appends are numbered here and inserted together at the end (one
            # pipelined executemany): the conversations are locked, so the messages stored already
            # — read once, up front — are all the duplicates there can be.
            appends = None if savepoints else _Appends(_stored_already(cur, ops))
            for op in ops:
                fenced = None
                if type(op) is Fenced:
                    fenced, op = op, op.op
                try:
                    if fenced is not None:
                        assert fence is not None
                        fence.check(fenced.fence)
                    if op is None:  # the fence alone
                        result: object = None
                    elif appends is not None and type(op) is AppendMessage:
                        result = appends.add(op, seqs)
                    else:
                        handler = self._handlers.get(type(op))
                        if handler is None or (fenced is not None and type(op) is Fenced):
                            raise StoreError(f"not a write op: {type(op).__name__}")
                        if savepoints:
                            with conn.transaction():
                                result = handler(cur, op, seqs)
                        else:
                            result = handler(cur, op, seqs)
                except StoreError as exc:
                    results.append(exc)
                    continue
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    if not savepoints:
                        raise _OpFailed() from exc
                    error = StoreError(f"{type(op).__name__} failed: {exc}")
                    error.__cause__ = exc
                    results.append(error)
                    continue
                if fenced is not None:
                    fence.passed(fenced.fence)  # type: ignore[union-attr]
                results.append(result)
            if appends is not None and appends.rows:
                try:
                    cur.executemany(_INSERT_MESSAGE, appends.rows)
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    raise _OpFailed() from exc
            changed = [(seq, conv_id) for conv_id, seq in seqs.items() if seq is not None and seq != start.get(conv_id)]
            if changed:
                cur.executemany("UPDATE conversations SET last_seq = %s WHERE id = %s", changed)
            if fence is not None:
                fence.store(cur)
        return results

    def _lock_conversations(self, cur: psycopg.Cursor, ops: Sequence[WriteOp]) -> tuple[_Seqs, _Fence | None]:
        """Lock the conversation rows the batch writes to, in id order, then — if it holds a
        Fenced op — the fence's row: every batch takes its locks in that order, before any other
        row lock, so two batches never wait for each other in a circle."""
        ids = set()
        fenced = False
        for op in ops:
            if type(op) is Fenced:
                fenced = True
            conv_id = _conv_of(op)
            if conv_id is not None:
                ids.add(conv_id)
        seqs: _Seqs = {}
        if ids:
            rows = cur.execute(
                "SELECT id, last_seq FROM conversations WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE", (sorted(ids),)
            ).fetchall()
            seqs = dict(rows)
        return seqs, _Fence(cur) if fenced else None

    @staticmethod
    def _require(seqs: _Seqs, conv_id: str) -> int:
        seq = seqs.get(conv_id)
        if seq is None:
            raise NotFound(f"conversation {conv_id!r} not found")
        return seq

    def _create(self, cur: psycopg.Cursor, op: CreateConversation, seqs: _Seqs) -> Conversation:
        conv = replace(op.conversation, last_seq=0)
        check_participants_belong(conv.id, op.participants)
        cur.execute(
            f"INSERT INTO conversations ({_CONVERSATION_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            astuple(conv),
        )
        if cur.fetchone() is None:
            raise StoreError(f"conversation {conv.id!r} already exists")
        if op.participants:
            cur.executemany(_INSERT_PARTICIPANT, [astuple(p) for p in op.participants])
        seqs[conv.id] = 0
        return conv

    def _add_participant(self, cur: psycopg.Cursor, op: AddParticipant, seqs: _Seqs) -> Participant:
        p = op.participant
        self._require(seqs, p.conv_id)
        cur.execute(_INSERT_PARTICIPANT + " RETURNING conv_id", astuple(p))
        if cur.fetchone() is not None:
            return p
        row = cur.execute(
            "SELECT conv_id, member, role, joined_at FROM participants WHERE conv_id = %s AND member = %s", (p.conv_id, p.user)
        ).fetchone()
        return Participant(*row)

    def _remove_participant(self, cur: psycopg.Cursor, op: RemoveParticipant, seqs: _Seqs) -> bool:
        self._require(seqs, op.conv_id)
        cur.execute("DELETE FROM participants WHERE conv_id = %s AND member = %s", (op.conv_id, op.user))
        return cur.rowcount > 0

    def _append(self, cur: psycopg.Cursor, op: AppendMessage, seqs: _Seqs) -> Appended:
        seq = self._require(seqs, op.conv_id) + 1
        row = (op.conv_id, seq, op.cmid, op.sender, op.sender_role, int(time.time() * 1000), bytes(op.body))
        cur.execute(
            f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (conv_id, sender, cmid) DO NOTHING RETURNING seq",
            row,
        )
        if cur.fetchone() is None:  # stored already (by this batch or any process): no number used
            stored = cur.execute(_SELECT_MESSAGE_BY_CMID, (op.conv_id, op.sender, op.cmid)).fetchone()
            return Appended(StoredMessage(*stored), duplicate=True)
        seqs[op.conv_id] = seq
        return Appended(StoredMessage(*row))

    def _set_receipt(self, cur: psycopg.Cursor, op: SetReceipt, seqs: _Seqs) -> Receipt:
        new = op.receipt
        self._require(seqs, new.conv_id)
        [seq] = cur.execute(
            "INSERT INTO receipts (conv_id, member, kind, seq) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (conv_id, member, kind) DO UPDATE SET seq = GREATEST(receipts.seq, excluded.seq) RETURNING seq",
            (new.conv_id, new.user, new.kind, new.seq),
        ).fetchone()
        return replace(new, seq=seq)

    def _set_status(self, cur: psycopg.Cursor, op: SetStatus, seqs: _Seqs) -> Conversation:
        last_seq = self._require(seqs, op.conv_id)
        changes = op.changes()
        if changes:
            columns = ", ".join(f"{_COLUMN_OF.get(k, k)} = %s" for k in changes)
            cur.execute(f"UPDATE conversations SET {columns} WHERE id = %s", (*changes.values(), op.conv_id))
        row = cur.execute(f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = %s", (op.conv_id,)).fetchone()
        return replace(Conversation(*row), last_seq=last_seq)

    def _recall(self, cur: psycopg.Cursor, op: RecallMessage, seqs: _Seqs) -> StoredMessage:
        self._require(seqs, op.conv_id)
        row = cur.execute(
            f"UPDATE messages SET body = %s WHERE conv_id = %s AND seq = %s RETURNING {_MESSAGE_COLUMNS}", (bytes(op.body), op.conv_id, op.seq)
        ).fetchone()
        if row is None:
            if 0 < op.seq <= (seqs.get(op.conv_id) or 0):  # appended by this batch, not inserted yet: again with savepoints
                raise _OpFailed()
            raise NotFound(f"conversation {op.conv_id!r} has no message {op.seq}")
        return StoredMessage(*row)

    def _set_tags(self, cur: psycopg.Cursor, op: SetTags, seqs: _Seqs) -> tuple[str, ...]:
        self._require(seqs, op.conv_id)
        tags = tuple(sorted(set(op.tags)))
        cur.execute("DELETE FROM conversation_tags WHERE conv_id = %s", (op.conv_id,))
        if tags:
            cur.executemany("INSERT INTO conversation_tags (conv_id, tag) VALUES (%s, %s)", [(op.conv_id, t) for t in tags])
        return tags

    def _create_api_key(self, cur: psycopg.Cursor, op: CreateApiKey, seqs: _Seqs) -> ApiKey:
        k = op.key
        cur.execute(
            "INSERT INTO api_keys (id, tenant, name, scopes, secret_hash, created_at, revoked_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
            (k.id, k.tenant, k.name, json.dumps(k.scopes), k.secret_hash, k.created_at, k.revoked_at),
        )
        if cur.fetchone() is None:
            raise Conflict(f"API key {k.id!r} exists")
        return k

    def _revoke_api_key(self, cur: psycopg.Cursor, op: RevokeApiKey, seqs: _Seqs) -> ApiKey:
        cur.execute(
            "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND tenant = %s AND revoked_at = 0", (op.at, op.key_id, op.tenant)
        )
        row = cur.execute(_SELECT_API_KEYS + " WHERE id = %s AND tenant = %s", (op.key_id, op.tenant)).fetchone()
        if row is None:
            raise NotFound(f"API key {op.key_id!r} not found")
        return _api_key(row)

    def _save_agent(self, cur: psycopg.Cursor, op: SaveAgent, seqs: _Seqs) -> AgentProfile:
        a = op.agent
        row = (a.name, json.dumps(a.groups), json.dumps(a.languages), a.max_active, a.disabled, a.created_at, a.updated_at, a.tenant, a.user)
        if op.create:
            cur.execute(
                "INSERT INTO agents (name, groups, languages, max_active, disabled, created_at, updated_at, tenant, member)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant, member) DO NOTHING RETURNING member",
                row,
            )
            if cur.fetchone() is None:
                raise Conflict(f"agent {a.user!r} exists")
        else:
            cur.execute(
                "UPDATE agents SET name = %s, groups = %s, languages = %s, max_active = %s, disabled = %s,"
                " created_at = %s, updated_at = %s WHERE tenant = %s AND member = %s",
                row,
            )
            if cur.rowcount == 0:
                raise NotFound(f"agent {a.user!r} not found")
        return a

    def _save_settings(self, cur: psycopg.Cursor, op: SaveTenantSettings, seqs: _Seqs) -> TenantSettings:
        t = op.settings
        cur.execute(
            "INSERT INTO tenant_settings (tenant, routing, updated_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (tenant) DO UPDATE SET routing = excluded.routing, updated_at = excluded.updated_at",
            (t.tenant, t.routing, t.updated_at),
        )
        return t

    def _add_attachment(self, cur: psycopg.Cursor, op: AddAttachment, seqs: _Seqs) -> Attachment:
        attachment = op.attachment
        self._require(seqs, attachment.conv_id)
        cur.execute(
            f"INSERT INTO attachments ({_ATTACHMENT_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING RETURNING id",
            astuple(attachment),
        )
        if cur.fetchone() is None:
            raise StoreError(f"attachment {attachment.id!r} already exists")
        return attachment

    def _delete_attachment(self, cur: psycopg.Cursor, op: DeleteAttachment, seqs: _Seqs) -> bool:
        cur.execute("DELETE FROM attachments WHERE id = %s", (op.attachment_id,))
        return cur.rowcount > 0

    def _mark_attachment_deleted(self, cur: psycopg.Cursor, op: MarkAttachmentDeleted, seqs: _Seqs) -> Attachment | None:
        cur.execute("UPDATE attachments SET deleted_at = %s WHERE id = %s AND deleted_at IS NULL", (op.deleted_at, op.attachment_id))
        rows = cur.execute(f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE id = %s", (op.attachment_id,)).fetchall()
        return Attachment(*rows[0]) if rows else None

    def _put_records(self, cur: psycopg.Cursor, op: PutRecords, seqs: _Seqs) -> int:
        if not all(type(r) is Record for r in op.records):
            raise StoreError("PutRecords holds something that is not a Record")
        cur.executemany(
            "INSERT INTO workspace_records (tenant, kind, key, value, updated_at) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (tenant, kind, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            [astuple(r) for r in op.records],
        )  # inside the batch's transaction (a savepoint per op on a retry): all rows or none
        return len(op.records)

    def _delete_record(self, cur: psycopg.Cursor, op: DeleteRecord, seqs: _Seqs) -> bool:
        cur.execute("DELETE FROM workspace_records WHERE tenant = %s AND kind = %s AND key = %s", (op.tenant, op.kind, op.key))
        return cur.rowcount > 0

    # ---- reads -----------------------------------------------------------------------------------

    def _read(self, query: str, params: Sequence[object]) -> list[tuple]:
        """One query on a pooled autocommit connection: it sees what is committed, nothing more."""
        self._check_open()
        pool = self._pool
        if pool is None:
            raise StoreError("store is closed")
        try:
            with pool.connection() as conn:
                return conn.execute(query, params).fetchall()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"PostgreSQL read failed: {exc}") from exc

    def get_conversation(self, conv_id: str) -> Conversation | None:
        rows = self._read(f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = %s", (conv_id,))
        return Conversation(*rows[0]) if rows else None

    def list_conversations(
        self,
        tenant: str,
        *,
        user: str | None = None,
        status: str | None = None,
        before: int | None = None,
        before_id: str | None = None,
        since: int | None = None,
        stage: str | None = None,
        assignee: str | None = None,
        channel: str | None = None,
        tag: str | None = None,
        limit: int = 100,
    ) -> list[Conversation]:
        check_limit(limit)
        if user is None:
            query = f"SELECT {_C_CONVERSATION_COLUMNS} FROM conversations AS c WHERE c.tenant = %s"
            params: list[object] = [tenant]
        else:
            query = (
                f"SELECT {_C_CONVERSATION_COLUMNS} FROM participants AS p JOIN conversations AS c ON c.id = p.conv_id"
                " WHERE p.member = %s AND c.tenant = %s"
            )
            params = [user, tenant]
        filters, more = conversation_filters(
            "%s", status=status, stage=stage, assignee=assignee, channel=channel, tag=tag, since=since,
            before=before, before_id=before_id, limit=limit,
        )
        return [Conversation(*row) for row in self._read(query + filters, params + more)]

    def in_stages(self, stages: Sequence[str], *, limit: int = 10_000) -> list[Conversation]:
        check_limit(limit)
        if not stages:
            return []
        rows = self._read(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE status = 'open' AND stage = ANY(%s)"
            " ORDER BY created_at, id LIMIT %s",
            (list(stages), limit),
        )
        return [Conversation(*row) for row in rows]

    def participants(self, conv_id: str) -> list[Participant]:
        rows = self._read(
            "SELECT conv_id, member, role, joined_at FROM participants WHERE conv_id = %s ORDER BY joined_at, n", (conv_id,)
        )
        return [Participant(*row) for row in rows]

    def read_messages(self, conv_id: str, *, after: int = 0, before: int | None = None, limit: int = 100) -> Page:
        check_limit(limit)
        if before is None:
            rows = self._read(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                (conv_id, after, limit + 1),
            )
            more = len(rows) > limit
            rows = rows[:limit]
        else:
            rows = self._read(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv_id = %s AND seq > %s AND seq < %s ORDER BY seq DESC LIMIT %s",
                (conv_id, after, before, limit + 1),
            )
            more = len(rows) > limit
            rows = rows[:limit][::-1]
        return Page([StoredMessage(*row) for row in rows], more=more)

    def find_message(self, conv_id: str, sender: str, cmid: str) -> StoredMessage | None:
        rows = self._read(_SELECT_MESSAGE_BY_CMID, (conv_id, sender, cmid))
        return StoredMessage(*rows[0]) if rows else None

    def tags(self, conv_id: str) -> tuple[str, ...]:
        return tuple(row[0] for row in self._read("SELECT tag FROM conversation_tags WHERE conv_id = %s ORDER BY tag", (conv_id,)))

    def receipts(self, conv_id: str) -> list[Receipt]:
        rows = self._read(
            "SELECT conv_id, member, kind, seq FROM receipts WHERE conv_id = %s ORDER BY member, kind", (conv_id,)
        )
        return [Receipt(*row) for row in rows]

    def get_attachment(self, attachment_id: str) -> Attachment | None:
        rows = self._read(f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE id = %s", (attachment_id,))
        return Attachment(*rows[0]) if rows else None

    def api_key(self, key_id: str) -> ApiKey | None:
        rows = self._read(_SELECT_API_KEYS + " WHERE id = %s", (key_id,))
        return _api_key(rows[0]) if rows else None

    def api_keys(self, tenant: str) -> list[ApiKey]:
        rows = self._read(_SELECT_API_KEYS + " WHERE tenant = %s ORDER BY created_at, id", (tenant,))
        return [_api_key(row) for row in rows]

    def agents(self, tenant: str | None = None) -> list[AgentProfile]:
        query = "SELECT tenant, member, name, groups, languages, max_active, disabled, created_at, updated_at FROM agents"
        rows = (
            self._read(query + " ORDER BY tenant, member", ())
            if tenant is None
            else self._read(query + " WHERE tenant = %s ORDER BY member", (tenant,))
        )
        return [
            AgentProfile(t, u, name, tuple(json.loads(groups)), tuple(json.loads(languages)), max_active, disabled, created, updated)
            for t, u, name, groups, languages, max_active, disabled, created, updated in rows
        ]

    def tenant_settings(self, tenant: str | None = None) -> list[TenantSettings]:
        query = "SELECT tenant, routing, updated_at FROM tenant_settings"
        rows = self._read(query + " ORDER BY tenant", ()) if tenant is None else self._read(query + " WHERE tenant = %s", (tenant,))
        return [TenantSettings(*row) for row in rows]

    def record(self, tenant: str, kind: str, key: str) -> Record | None:
        rows = self._read(_SELECT_RECORDS + " AND key = %s", (tenant, kind, key))
        return Record(*rows[0]) if rows else None

    def records(self, tenant: str, kind: str, *, prefix: str = "", after: str = "", limit: int = 1000) -> list[Record]:
        check_limit(limit)
        query = _SELECT_RECORDS + " AND key > %s"
        params: list[object] = [tenant, kind, after]
        if prefix:  # byte order ("C" collation): the keys that start with prefix
            query += " AND key >= %s AND left(key, %s) = %s"
            params += [prefix, len(prefix), prefix]
        return [Record(*row) for row in self._read(query + " ORDER BY key LIMIT %s", [*params, limit])]

    def ping(self) -> None:
        """One round trip on a reader connection; StoreUnavailable when PostgreSQL does not answer."""
        self._read("SELECT 1", ())


class _Appends:
    """The appends of one batch: numbered as they come, inserted together."""

    def __init__(self, stored: dict[tuple[str, str, str], StoredMessage]) -> None:
        self.stored = stored  # (conv_id, sender, cmid) -> the message stored, before or by this batch
        self.rows: list[tuple] = []

    def add(self, op: AppendMessage, seqs: _Seqs) -> Appended:
        key = (op.conv_id, op.sender, op.cmid)
        stored = self.stored.get(key)
        if stored is not None:
            return Appended(stored, duplicate=True)
        last = seqs.get(op.conv_id)
        if last is None:
            raise NotFound(f"conversation {op.conv_id!r} not found")
        row = (op.conv_id, last + 1, op.cmid, op.sender, op.sender_role, int(time.time() * 1000), bytes(op.body))
        message = self.stored[key] = StoredMessage(*row)
        self.rows.append(row)
        seqs[op.conv_id] = last + 1
        return Appended(message)


class _Fence:
    """The store's highest fence as one batch goes: its row is locked (FOR UPDATE) until the
    commit, so a batch of another process that carries a fence waits, then reads what this one
    stored. Ops are checked against the highest so far, the batch's own included."""

    def __init__(self, cur: psycopg.Cursor) -> None:
        [self.stored] = cur.execute("SELECT fence FROM routing_fence WHERE id = 1 FOR UPDATE").fetchone()
        self.highest: int = self.stored

    def check(self, fence: int) -> None:
        if fence < self.highest:
            raise StaleFence(fence, self.highest)

    def passed(self, fence: int) -> None:
        """An op with ``fence`` was applied."""
        self.highest = max(self.highest, fence)

    def store(self, cur: psycopg.Cursor) -> None:
        if self.highest != self.stored:
            cur.execute("UPDATE routing_fence SET fence = %s WHERE id = 1", (self.highest,))


def _stored_already(cur: psycopg.Cursor, ops: Sequence[WriteOp]) -> dict[tuple[str, str, str], StoredMessage]:
    """The stored messages whose (conv_id, sender, cmid) an append of ``ops`` (fenced or not) repeats."""
    appends = (op.op if type(op) is Fenced else op for op in ops)
    keys = {(op.conv_id, op.sender, op.cmid) for op in appends if type(op) is AppendMessage}
    if not keys:
        return {}
    convs, senders, cmids = (list(column) for column in zip(*keys))
    rows = cur.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE (conv_id, sender, cmid) IN"
        " (SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]))",
        (convs, senders, cmids),
    ).fetchall()
    return {(row[0], row[3], row[2]): StoredMessage(*row) for row in rows}


class _OpFailed(Exception):
    """An op hit a database error without savepoints: the batch is applied again with them."""


def _api_key(row: tuple) -> ApiKey:
    key_id, tenant, name, scopes, secret_hash, created_at, revoked_at = row
    return ApiKey(key_id, tenant, name, tuple(json.loads(scopes)), secret_hash, created_at, revoked_at)


def migrate(conn: psycopg.Connection, schema: str) -> int:
    """Bring ``schema`` to the current version, in one transaction under an advisory lock (several
    processes starting at once migrate once); returns the version. Idempotent."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"kefu-migrate-{schema}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(schema)))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else row[0]
        if row is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (0)")
        if version > len(MIGRATIONS):
            raise StoreError(f"database schema version {version} is newer than this code ({len(MIGRATIONS)})")
        for step in MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        conn.execute("UPDATE schema_version SET version = %s", (len(MIGRATIONS),))
    if version < len(MIGRATIONS):
        log.info("schema %s migrated from version %d to %d", schema, version, len(MIGRATIONS))
    return len(MIGRATIONS)
