"""The SQLite backend: one database file in WAL mode, one writer connection, a reader per thread.

WAL lets readers in worker threads see the last committed state while the writer thread appends,
and group commit (one transaction per ``apply_batch``) pays the commit cost once per batch instead
of once per message. This process must be the only writer of the file: the writer caches each
conversation's last sequence number.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import astuple, replace
from typing import Callable, Iterator, Sequence

from ..model import (
    AddAttachment,
    Attachment,
    DeleteAttachment,
    MarkAttachmentDeleted,
    AddParticipant,
    AgentProfile,
    ApiKey,
    CreateApiKey,
    RevokeApiKey,
    SaveAgent,
    SaveTenantSettings,
    TenantSettings,
    Appended,
    AppendMessage,
    Conversation,
    CreateConversation,
    Page,
    Participant,
    PutRecords,
    DeleteRecord,
    Fenced,
    Receipt,
    Record,
    RemoveParticipant,
    SetReceipt,
    SetStatus,
    RecallMessage,
    SetTags,
    StoredMessage,
    WriteOp,
)
from .base import Conflict, NotFound, StaleFence, StoreDamaged, StoreError
from .listing import conversation_filters
from .memory import check_limit, check_participants_belong

log = logging.getLogger("kefu.store.sqlite")

#: Schema migrations in order; step n brings the schema from version n to n + 1, and
#: ``PRAGMA user_version`` records how many have been applied. Append steps, never edit them.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # Small rows under a text key: WITHOUT ROWID keeps them in the key's B-tree alone.
        """CREATE TABLE conversations (
            id TEXT NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL,
            customer TEXT NOT NULL,
            channel TEXT NOT NULL,
            status TEXT NOT NULL,
            subject TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            last_seq INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX conversations_by_tenant ON conversations (tenant, created_at, id)",
        # A rowid table: join order is joined_at, then insertion (rowid) for equal times.
        """CREATE TABLE participants (
            conv_id TEXT NOT NULL REFERENCES conversations (id),
            user TEXT NOT NULL,
            role TEXT NOT NULL,
            joined_at INTEGER NOT NULL,
            PRIMARY KEY (conv_id, user)
        )""",
        "CREATE INDEX participants_by_user ON participants (user, conv_id)",
        # A rowid table, not WITHOUT ROWID: rows land at the table's tail in arrival order, so a
        # batch spread over many conversations dirties two small index leaves per conversation
        # rather than a leaf of full rows (measured: up to 2.5x the appends/s at 1000 conversations
        # with 300-byte bodies; history reads cost ~20% more).
        """CREATE TABLE messages (
            conv_id TEXT NOT NULL REFERENCES conversations (id),
            seq INTEGER NOT NULL,
            cmid TEXT NOT NULL,
            sender TEXT NOT NULL,
            sender_role TEXT NOT NULL,
            ts INTEGER NOT NULL,
            body BLOB NOT NULL,
            PRIMARY KEY (conv_id, seq),
            UNIQUE (conv_id, sender, cmid)
        )""",
        """CREATE TABLE receipts (
            conv_id TEXT NOT NULL REFERENCES conversations (id),
            user TEXT NOT NULL,
            kind TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (conv_id, user, kind)
        ) WITHOUT ROWID""",
    ),
    (
        # Routing: the lifecycle stage, the agent serving, the skill group.
        "ALTER TABLE conversations ADD COLUMN stage TEXT NOT NULL DEFAULT 'opened'",
        "ALTER TABLE conversations ADD COLUMN assignee TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE conversations ADD COLUMN skill_group TEXT NOT NULL DEFAULT ''",
        # What routing picks up after a restart; the partial index stays as small as the backlog.
        "CREATE INDEX conversations_in_routing ON conversations (stage, created_at)"
        " WHERE status = 'open' AND stage IN ('bot', 'queued', 'assigned')",
    ),
    (
        # Tags of a conversation, one row each; by tag too, for lists filtered by a tag.
        """CREATE TABLE conversation_tags (
            conv_id TEXT NOT NULL REFERENCES conversations (id),
            tag TEXT NOT NULL,
            PRIMARY KEY (conv_id, tag)
        ) WITHOUT ROWID""",
        "CREATE INDEX conversation_tags_by_tag ON conversation_tags (tag, conv_id)",
    ),
    (
        # Tenant administration (the REST API). Lists are JSON arrays of strings.
        """CREATE TABLE api_keys (
            id TEXT NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL,
            name TEXT NOT NULL,
            scopes TEXT NOT NULL,
            secret_hash TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            revoked_at INTEGER NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX api_keys_by_tenant ON api_keys (tenant, created_at, id)",
        """CREATE TABLE agents (
            tenant TEXT NOT NULL,
            user TEXT NOT NULL,
            name TEXT NOT NULL,
            groups TEXT NOT NULL,
            languages TEXT NOT NULL,
            max_active INTEGER NOT NULL,
            disabled INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (tenant, user)
        ) WITHOUT ROWID""",
        """CREATE TABLE tenant_settings (
            tenant TEXT NOT NULL PRIMARY KEY,
            routing TEXT NOT NULL,
            updated_at INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ),
    (
        # Media: the facts of each uploaded file (its bytes are in the blob store).
        """CREATE TABLE attachments (
            id TEXT NOT NULL PRIMARY KEY,
            tenant TEXT NOT NULL,
            conv_id TEXT NOT NULL REFERENCES conversations (id),
            uploader TEXT NOT NULL,
            kind TEXT NOT NULL,
            content_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            name TEXT NOT NULL,
            width INTEGER,
            height INTEGER,
            duration_ms INTEGER,
            thumbnail_size INTEGER
        ) WITHOUT ROWID""",
    ),
    (
        # The agent workspace (gateway.customers): JSON records by tenant, kind and key.
        """CREATE TABLE workspace_records (
            tenant TEXT NOT NULL,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at INTEGER NOT NULL,
            PRIMARY KEY (tenant, kind, key)
        ) WITHOUT ROWID""",
    ),
    (
        # Deleted attachments (gateway.media): the record stays, marked, so downloads answer 410.
        "ALTER TABLE attachments ADD COLUMN deleted_at INTEGER",
    ),
    (
        # A conversation's last seq is its highest stored message's (one seek in the messages'
        # primary key), not a counter: a commit no longer rewrites the conversation's row, one
        # WAL frame (two writes) and ~8 µs less per commit, and no counter can fall behind.
        "ALTER TABLE conversations DROP COLUMN last_seq",
    ),
    (
        # Fencing (gateway.model.Fenced): the highest fence a routing leader's write has carried.
        "CREATE TABLE routing_fence (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1), fence INTEGER NOT NULL)",
        "INSERT INTO routing_fence (id, fence) VALUES (1, 0)",
    ),
)

_DURABILITY = {
    "NORMAL": "sqlite WAL, synchronous=NORMAL: a commit survives a process crash (kill -9), "
    "not an OS crash or power loss",
    "FULL": "sqlite WAL, synchronous=FULL: a commit is fsynced, so it survives power loss too",
}
_BUSY_TIMEOUT_S = 5.0
# Writer tuning, measured with batches of a few hundred appends: checkpointing every 10k pages
# (~40 MB of WAL) instead of SQLite's 1k writes each hot page once per many commits, not once per
# few; a 64 MB page cache keeps the tails of many conversations' B-trees in memory.
_WAL_AUTOCHECKPOINT_PAGES = 10_000
_WRITER_CACHE_KIB = 64 * 1024
# A checkpoint copies the WAL's pages into the database. Done by the writer (autocheckpoint) it
# stalls every commit behind it: at 45k messages/s that was the ack p99 (43 ms instead of 11 ms).
# A checkpointer thread of its own copies them PASSIVEly (never blocking the writer) this often,
# so the writer's own autocheckpoint finds almost nothing left to copy and the WAL still restarts.
_CHECKPOINT_INTERVAL_S = 0.1
# ...but only once this many ops were committed since the last (or _CHECKPOINT_MAX_AGE_S passed
# with any). A checkpoint that copies the whole WAL makes the next commit start the WAL again, and
# that commit fsyncs the new WAL header (even with synchronous=NORMAL): checkpointing every 0.1 s
# at a few messages a second put an fdatasync on most inline commits (measured with perf: 1-6 ms
# each on the event loop's thread while uploads kept the disk busy). Under load the ops come
# faster than this, and checkpoints run every interval as before.
_CHECKPOINT_MIN_OPS = 1000
_CHECKPOINT_MAX_AGE_S = 30.0
#: Bound on the writer's last_seq cache; past it the cache restarts empty and refills lazily.
_SEQ_CACHE_LIMIT = 100_000

#: last_seq of the conversations an apply_batch has created or appended to, until it commits.
_Pending = dict[str, int]

# Columns in the field order of the model records: rows and records convert with * and astuple().
# A conversation's last_seq is not stored: it is read as its highest message's seq.
_STORED_CONVERSATION_COLUMNS = ("id", "tenant", "customer", "channel", "status", "created_at", "subject", "stage", "assignee", "skill_group")
_LAST_SEQ_OF_C = "(SELECT coalesce(max(m.seq), 0) FROM messages AS m WHERE m.conv_id = c.id)"
_C_CONVERSATION_COLUMNS = (
    "c.id, c.tenant, c.customer, c.channel, c.status, c.created_at, c.subject, "
    f"{_LAST_SEQ_OF_C}, c.stage, c.assignee, c.skill_group"
)
_COLUMN_OF = {"group": "skill_group"}  # model field -> column, where they differ (GROUP is an SQL keyword)
_FIELD_OF = {column: field for field, column in _COLUMN_OF.items()}
_MESSAGE_COLUMNS = "conv_id, seq, cmid, sender, sender_role, ts, body"
_ATTACHMENT_COLUMNS = (
    "id, tenant, conv_id, uploader, kind, content_type, size, created_at, name, width, height, duration_ms, thumbnail_size, deleted_at"
)
# Statements are built once: the sqlite3 statement cache is keyed by the SQL string.
_SELECT_CONVERSATION = f"SELECT {_C_CONVERSATION_COLUMNS} FROM conversations AS c WHERE c.id = ?"
_SELECT_LAST_SEQ = f"SELECT {_LAST_SEQ_OF_C} FROM conversations AS c WHERE c.id = ?"
_INSERT_CONVERSATION = (
    f"INSERT INTO conversations ({', '.join(_STORED_CONVERSATION_COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in _STORED_CONVERSATION_COLUMNS)})"
    " ON CONFLICT (id) DO NOTHING"
)
_LIST_CONVERSATIONS = f"SELECT {_C_CONVERSATION_COLUMNS} FROM conversations AS c WHERE c.tenant = ?"
# CROSS JOIN fixes the join order: from the user's few participations (participants_by_user) to
# their conversations, rather than through a whole tenant's history looking for the user.
_LIST_CONVERSATIONS_OF_USER = (
    f"SELECT {_C_CONVERSATION_COLUMNS} FROM participants AS p"
    " CROSS JOIN conversations AS c ON c.id = p.conv_id WHERE p.user = ? AND c.tenant = ?"
)
_SELECT_PARTICIPANT = (
    "SELECT conv_id, user, role, joined_at FROM participants WHERE conv_id = ? AND user = ?"
)
_INSERT_PARTICIPANT = (
    "INSERT INTO participants (conv_id, user, role, joined_at) VALUES (?, ?, ?, ?)"
)
_INSERT_MESSAGE = (
    f"INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (conv_id, sender, cmid) DO NOTHING"
)
_SELECT_MESSAGE_BY_CMID = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv_id = ? AND sender = ? AND cmid = ?"
)
_SELECT_MESSAGES_AFTER = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv_id = ? AND seq > ? ORDER BY seq LIMIT ?"
)
_SELECT_MESSAGES_BETWEEN = (
    f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv_id = ? AND seq > ? AND seq < ?"
    " ORDER BY seq DESC LIMIT ?"
)


class SqliteBackend:
    """A StoreBackend on one SQLite file; ``synchronous`` (NORMAL or FULL) picks the durability."""

    blocking = True

    def __init__(self, path: str | os.PathLike[str], synchronous: str = "NORMAL") -> None:
        level = synchronous.upper()
        if level not in _DURABILITY:
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = os.fspath(path)
        self.synchronous = level
        self.durability = _DURABILITY[level]
        # NORMAL commits write the WAL without an fsync (tens of microseconds): cheap enough for
        # the event loop when nothing is batching. FULL commits fsync: always on the writer thread.
        self.inline_commit = level == "NORMAL"
        self._writer: sqlite3.Connection | None = None
        self._checkpointer: threading.Thread | None = None
        self.ops_since_checkpoint = 0  # write ops committed since the checkpointer last ran (approximate: two threads count)
        self.checkpoints = 0  # background checkpoints run
        self._cur: sqlite3.Cursor | None = None  # the writer's one cursor, reused for speed
        self._closed = False
        # Committed last_seq of conversations the writer has touched (the hot path's only read).
        self._last_seq: dict[str, int] = {}
        self._local = threading.local()
        self._readers: dict[threading.Thread, sqlite3.Connection] = {}
        self._readers_lock = threading.Lock()
        self._handlers: dict[type, Callable[..., object]] = {
            CreateConversation: self._create,
            AddParticipant: self._add_participant,
            RemoveParticipant: self._remove_participant,
            AppendMessage: self._append,
            SetReceipt: self._set_receipt,
            SetStatus: self._set_status,
            CreateApiKey: self._create_api_key,
            RevokeApiKey: self._revoke_api_key,
            SaveAgent: self._save_agent,
            SaveTenantSettings: self._save_settings,
            SetTags: self._set_tags,
            RecallMessage: self._recall,
            AddAttachment: self._add_attachment,
            DeleteAttachment: self._delete_attachment,
            MarkAttachmentDeleted: self._mark_attachment_deleted,
            PutRecords: self._put_records,
            DeleteRecord: self._delete_record,
            Fenced: self._fenced,
        }

    # ---- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        if self._writer is not None:
            return
        conn = self._connect()
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.path}: WAL journal unavailable (got {mode!r})")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
            _migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._writer = conn
        self._cur = conn.cursor()
        self._checkpoints = threading.Event()  # set: stop
        self._checkpointer = threading.Thread(target=self._checkpoint_main, name="kefu-sqlite-checkpointer", daemon=True)
        self._checkpointer.start()

    def _checkpoint_main(self) -> None:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:  # the writer's autocheckpoint remains
            log.warning("no background checkpoints: %s", exc)
            return
        last = time.monotonic()
        try:
            while not self._checkpoints.wait(_CHECKPOINT_INTERVAL_S):
                ops = self.ops_since_checkpoint
                if ops < _CHECKPOINT_MIN_OPS and not (ops and time.monotonic() - last >= _CHECKPOINT_MAX_AGE_S):
                    continue
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # busy or I/O trouble: the writer's autocheckpoint remains
                    log.warning("background checkpoint failed: %s", exc)
                self.ops_since_checkpoint -= ops
                self.checkpoints += 1
                last = time.monotonic()
        finally:
            conn.close()

    def close(self) -> None:
        """Close every reader, then the writer, which as the last connection checkpoints the WAL."""
        with self._readers_lock:
            self._closed = True
            readers, self._readers = list(self._readers.values()), {}
        for conn in readers:
            conn.close()
        if self._checkpointer is not None:
            self._checkpoints.set()
            self._checkpointer.join()
            self._checkpointer = None
        if self._writer is not None:
            self._writer.close()
            self._writer = self._cur = None

    def _unavailable(self) -> StoreError:
        return StoreError("store is closed" if self._closed else "store is not open")

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions, apply_batch says BEGIN and COMMIT itself.
        # check_same_thread=False: the writer is opened on one thread and used on another, and
        # close() closes the readers of every thread.
        return sqlite3.connect(
            self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )

    # ---- writes ----------------------------------------------------------------------------------

    def apply_batch(self, ops: Sequence[WriteOp]) -> list[object]:
        """One IMMEDIATE transaction for the batch; each op either applies whole or fails alone.

        Every op but CreateConversation makes at most one write, as its last statement, so a
        failing op leaves nothing behind (SQLite undoes a failed statement); CreateConversation,
        which writes several rows, and a Fenced op that raises the fence run inside a savepoint.
        """
        conn, cur = self._writer, self._cur
        if conn is None or cur is None or self._closed:
            raise self._unavailable()
        pending: _Pending = {}
        results: list[object] = []
        self.ops_since_checkpoint += len(ops)
        cur.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                handler = self._handlers.get(type(op))
                try:
                    if handler is None:
                        raise StoreError(f"not a write op: {type(op).__name__}")
                    results.append(handler(cur, op, pending))
                except StoreError as exc:
                    results.append(exc)
                except sqlite3.Error as exc:
                    if not conn.in_transaction:
                        raise damage_or(exc) from exc  # SQLite rolled the whole transaction back (I/O error, disk full, corruption)
                    error = StoreError(f"{type(op).__name__} failed: {exc}")
                    error.__cause__ = exc
                    results.append(error)
            self._commit(cur)
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise
        if len(self._last_seq) + len(pending) > _SEQ_CACHE_LIMIT:
            self._last_seq.clear()
        self._last_seq.update(pending)
        return results

    @staticmethod
    def _commit(cur: sqlite3.Cursor) -> None:
        cur.execute("COMMIT")

    def _last_seq_of(self, cur: sqlite3.Cursor, conv_id: str, pending: _Pending) -> int:
        """The conversation's last_seq at this point of the batch; NotFound if there is none."""
        seq = pending.get(conv_id)
        if seq is None:
            seq = self._last_seq.get(conv_id)
        if seq is None:
            row = cur.execute(_SELECT_LAST_SEQ, (conv_id,)).fetchone()
            if row is None:
                raise NotFound(f"conversation {conv_id!r} not found")
            # Not created in this batch (else it would be pending): the stored value is committed.
            seq = self._last_seq[conv_id] = row[0]
        return seq

    def _fenced(self, cur: sqlite3.Cursor, op: Fenced, pending: _Pending) -> object:
        """The check is one read inside the batch's IMMEDIATE transaction, which no other writer
        of the file can interleave with; a higher fence is stored with the op, in a savepoint."""
        [highest] = cur.execute("SELECT fence FROM routing_fence WHERE id = 1").fetchone()
        if op.fence < highest:
            raise StaleFence(op.fence, highest)
        inner = op.op
        handler = None
        if inner is not None:
            handler = self._handlers.get(type(inner))
            if handler is None or type(inner) is Fenced:
                raise StoreError(f"not a write op to fence: {type(inner).__name__}")
        if op.fence == highest:  # this term's writes after its first: one read, nothing more
            return None if handler is None else handler(cur, inner, pending)
        with _savepoint(cur):  # a failing op raises no fence
            cur.execute("UPDATE routing_fence SET fence = ? WHERE id = 1", (op.fence,))
            return None if handler is None else handler(cur, inner, pending)

    def _create(
        self, cur: sqlite3.Cursor, op: CreateConversation, pending: _Pending
    ) -> Conversation:
        conv = replace(op.conversation, last_seq=0)
        check_participants_belong(conv.id, op.participants)
        with _savepoint(cur):
            cur.execute(_INSERT_CONVERSATION, [getattr(conv, _FIELD_OF.get(column, column)) for column in _STORED_CONVERSATION_COLUMNS])
            if cur.rowcount == 0:
                raise StoreError(f"conversation {conv.id!r} already exists")
            cur.executemany(
                _INSERT_PARTICIPANT + " ON CONFLICT (conv_id, user) DO NOTHING",
                [astuple(p) for p in op.participants],
            )
        pending[conv.id] = 0
        return conv

    def _add_participant(
        self, cur: sqlite3.Cursor, op: AddParticipant, pending: _Pending
    ) -> Participant:
        p = op.participant
        self._last_seq_of(cur, p.conv_id, pending)
        row = cur.execute(_SELECT_PARTICIPANT, (p.conv_id, p.user)).fetchone()
        if row is not None:
            return Participant(*row)
        cur.execute(_INSERT_PARTICIPANT, astuple(p))
        return p

    def _remove_participant(
        self, cur: sqlite3.Cursor, op: RemoveParticipant, pending: _Pending
    ) -> bool:
        self._last_seq_of(cur, op.conv_id, pending)
        cur.execute(
            "DELETE FROM participants WHERE conv_id = ? AND user = ?", (op.conv_id, op.user)
        )
        return cur.rowcount > 0

    def _append(self, cur: sqlite3.Cursor, op: AppendMessage, pending: _Pending) -> Appended:
        seq = self._last_seq_of(cur, op.conv_id, pending) + 1
        ts = int(time.time() * 1000)
        body = bytes(op.body)
        row = (op.conv_id, seq, op.cmid, op.sender, op.sender_role, ts, body)
        cur.execute(_INSERT_MESSAGE, row)
        if cur.rowcount == 0:  # (conv_id, sender, cmid) is stored already: seq stays unused
            stored = cur.execute(_SELECT_MESSAGE_BY_CMID, (op.conv_id, op.sender, op.cmid))
            return Appended(StoredMessage(*stored.fetchone()), duplicate=True)
        pending[op.conv_id] = seq
        return Appended(StoredMessage(*row))

    def _recall(self, cur: sqlite3.Cursor, op: RecallMessage, pending: _Pending) -> StoredMessage:
        cur.execute("UPDATE messages SET body = ? WHERE conv_id = ? AND seq = ?", (bytes(op.body), op.conv_id, op.seq))
        if cur.rowcount == 0:
            raise NotFound(f"conversation {op.conv_id!r} has no message {op.seq}")
        row = cur.execute(f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conv_id = ? AND seq = ?", (op.conv_id, op.seq)).fetchone()
        return StoredMessage(*row)

    def _set_receipt(self, cur: sqlite3.Cursor, op: SetReceipt, pending: _Pending) -> Receipt:
        new = op.receipt
        self._last_seq_of(cur, new.conv_id, pending)
        row = cur.execute(
            "SELECT seq FROM receipts WHERE conv_id = ? AND user = ? AND kind = ?",
            (new.conv_id, new.user, new.kind),
        ).fetchone()
        if row is not None and row[0] >= new.seq:
            return replace(new, seq=row[0])
        cur.execute(
            "INSERT INTO receipts (conv_id, user, kind, seq) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (conv_id, user, kind) DO UPDATE SET seq = excluded.seq",
            (new.conv_id, new.user, new.kind, new.seq),
        )
        return new

    def _set_status(self, cur: sqlite3.Cursor, op: SetStatus, pending: _Pending) -> Conversation:
        row = cur.execute(_SELECT_CONVERSATION, (op.conv_id,)).fetchone()
        if row is None:
            raise NotFound(f"conversation {op.conv_id!r} not found")
        changes = op.changes()
        if changes:
            columns = ", ".join(f"{_COLUMN_OF.get(k, k)} = ?" for k in changes)
            cur.execute(f"UPDATE conversations SET {columns} WHERE id = ?", (*changes.values(), op.conv_id))
        conv = Conversation(*row)
        return replace(conv, **changes, last_seq=pending.get(conv.id, conv.last_seq))

    def _create_api_key(self, cur: sqlite3.Cursor, op: CreateApiKey, pending: _Pending) -> ApiKey:
        cur.execute(
            "INSERT INTO api_keys (id, tenant, name, scopes, secret_hash, created_at, revoked_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            _api_key_row(op.key),
        )
        if cur.rowcount == 0:
            raise Conflict(f"API key {op.key.id!r} exists")
        return op.key

    def _revoke_api_key(self, cur: sqlite3.Cursor, op: RevokeApiKey, pending: _Pending) -> ApiKey:
        cur.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND tenant = ? AND revoked_at = 0",
            (op.at, op.key_id, op.tenant),
        )
        rows = cur.execute(_SELECT_API_KEYS + " WHERE id = ? AND tenant = ?", (op.key_id, op.tenant)).fetchall()
        if not rows:
            raise NotFound(f"API key {op.key_id!r} not found")
        return _api_key(rows[0])

    def _save_agent(self, cur: sqlite3.Cursor, op: SaveAgent, pending: _Pending) -> AgentProfile:
        a = op.agent
        row = (a.name, json.dumps(a.groups), json.dumps(a.languages), a.max_active, int(a.disabled), a.created_at, a.updated_at, a.tenant, a.user)
        if op.create:
            cur.execute(
                "INSERT INTO agents (name, groups, languages, max_active, disabled, created_at, updated_at, tenant, user)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, user) DO NOTHING",
                row,
            )
            if cur.rowcount == 0:
                raise Conflict(f"agent {a.user!r} exists")
        else:
            cur.execute(
                "UPDATE agents SET name = ?, groups = ?, languages = ?, max_active = ?, disabled = ?,"
                " created_at = ?, updated_at = ? WHERE tenant = ? AND user = ?",
                row,
            )
            if cur.rowcount == 0:
                raise NotFound(f"agent {a.user!r} not found")
        return a

    def _save_settings(self, cur: sqlite3.Cursor, op: SaveTenantSettings, pending: _Pending) -> TenantSettings:
        t = op.settings
        cur.execute(
            "INSERT INTO tenant_settings (tenant, routing, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (tenant) DO UPDATE SET routing = excluded.routing, updated_at = excluded.updated_at",
            (t.tenant, t.routing, t.updated_at),
        )
        return t

    def _set_tags(self, cur: sqlite3.Cursor, op: SetTags, pending: _Pending) -> tuple[str, ...]:
        if cur.execute("SELECT 1 FROM conversations WHERE id = ?", (op.conv_id,)).fetchone() is None:
            raise NotFound(f"conversation {op.conv_id!r} not found")
        tags = tuple(sorted(set(op.tags)))
        cur.execute("DELETE FROM conversation_tags WHERE conv_id = ?", (op.conv_id,))
        cur.executemany("INSERT INTO conversation_tags (conv_id, tag) VALUES (?, ?)", [(op.conv_id, t) for t in tags])
        return tags

    # ---- reads -----------------------------------------------------------------------------------

    def _add_attachment(self, cur: sqlite3.Cursor, op: AddAttachment, pending: _Pending) -> Attachment:
        attachment = op.attachment
        if cur.execute("SELECT 1 FROM conversations WHERE id = ?", (attachment.conv_id,)).fetchone() is None:
            raise NotFound(f"conversation {attachment.conv_id!r} not found")
        cur.execute(
            f"INSERT INTO attachments ({_ATTACHMENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            astuple(attachment),
        )
        if cur.rowcount == 0:
            raise StoreError(f"attachment {attachment.id!r} already exists")
        return attachment

    def _delete_attachment(self, cur: sqlite3.Cursor, op: DeleteAttachment, pending: _Pending) -> bool:
        cur.execute("DELETE FROM attachments WHERE id = ?", (op.attachment_id,))
        return cur.rowcount > 0

    def _mark_attachment_deleted(self, cur: sqlite3.Cursor, op: MarkAttachmentDeleted, pending: _Pending) -> Attachment | None:
        cur.execute("UPDATE attachments SET deleted_at = ? WHERE id = ? AND deleted_at IS NULL", (op.deleted_at, op.attachment_id))
        rows = cur.execute(f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE id = ?", (op.attachment_id,)).fetchall()
        return Attachment(*rows[0]) if rows else None

    def _put_records(self, cur: sqlite3.Cursor, op: PutRecords, pending: _Pending) -> int:
        for r in op.records:  # check all before storing any
            if not isinstance(r, Record) or not all(type(v) is str for v in (r.tenant, r.kind, r.key, r.value)):
                raise StoreError(f"not a record: {r!r}"[:200])
        cur.executemany(
            "INSERT INTO workspace_records (tenant, kind, key, value, updated_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (tenant, kind, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            [astuple(r) for r in op.records],
        )  # one statement: all rows or none
        return len(op.records)

    def _delete_record(self, cur: sqlite3.Cursor, op: DeleteRecord, pending: _Pending) -> bool:
        cur.execute("DELETE FROM workspace_records WHERE tenant = ? AND kind = ? AND key = ?", (op.tenant, op.kind, op.key))
        return cur.rowcount > 0

    def get_conversation(self, conv_id: str) -> Conversation | None:
        rows = self._read(_SELECT_CONVERSATION, (conv_id,))
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
        sql = _LIST_CONVERSATIONS if user is None else _LIST_CONVERSATIONS_OF_USER
        params: list[object] = [tenant] if user is None else [user, tenant]
        filters, more = conversation_filters(
            "?", status=status, stage=stage, assignee=assignee, channel=channel, tag=tag, since=since,
            before=before, before_id=before_id, limit=limit,
        )
        return [Conversation(*row) for row in self._read(sql + filters, params + more)]

    def in_stages(self, stages: Sequence[str], *, limit: int = 10_000) -> list[Conversation]:
        check_limit(limit)
        marks = ", ".join("?" for _ in stages)
        sql = (
            f"SELECT {_C_CONVERSATION_COLUMNS} FROM conversations AS c WHERE c.status = 'open' AND c.stage IN ({marks})"
            " ORDER BY c.created_at, c.id LIMIT ?"
        )
        return [Conversation(*row) for row in self._read(sql, [*stages, limit])] if stages else []

    def participants(self, conv_id: str) -> list[Participant]:
        rows = self._read(
            "SELECT conv_id, user, role, joined_at FROM participants WHERE conv_id = ?"
            " ORDER BY joined_at, rowid",
            (conv_id,),
        )
        return [Participant(*row) for row in rows]

    def read_messages(
        self, conv_id: str, *, after: int = 0, before: int | None = None, limit: int = 100
    ) -> Page:
        check_limit(limit)
        # One row past the limit tells whether the range goes on.
        if before is None:
            rows = self._read(_SELECT_MESSAGES_AFTER, (conv_id, after, limit + 1))
            more = len(rows) > limit
            rows = rows[:limit]
        else:
            rows = self._read(_SELECT_MESSAGES_BETWEEN, (conv_id, after, before, limit + 1))
            more = len(rows) > limit
            rows = rows[:limit][::-1]
        return Page([StoredMessage(*row) for row in rows], more=more)

    def find_message(self, conv_id: str, sender: str, cmid: str) -> StoredMessage | None:
        rows = self._read(_SELECT_MESSAGE_BY_CMID, (conv_id, sender, cmid))
        return StoredMessage(*rows[0]) if rows else None

    def receipts(self, conv_id: str) -> list[Receipt]:
        rows = self._read(
            "SELECT conv_id, user, kind, seq FROM receipts WHERE conv_id = ? ORDER BY user, kind",
            (conv_id,),
        )
        return [Receipt(*row) for row in rows]

    def api_key(self, key_id: str) -> ApiKey | None:
        rows = self._read(_SELECT_API_KEYS + " WHERE id = ?", (key_id,))
        return _api_key(rows[0]) if rows else None

    def api_keys(self, tenant: str) -> list[ApiKey]:
        rows = self._read(_SELECT_API_KEYS + " WHERE tenant = ? ORDER BY created_at, id", (tenant,))
        return [_api_key(row) for row in rows]

    def agents(self, tenant: str | None = None) -> list[AgentProfile]:
        sql = "SELECT tenant, user, name, groups, languages, max_active, disabled, created_at, updated_at FROM agents"
        rows = self._read(sql + " ORDER BY tenant, user", ()) if tenant is None else self._read(sql + " WHERE tenant = ? ORDER BY user", (tenant,))
        return [
            AgentProfile(t, u, name, tuple(json.loads(groups)), tuple(json.loads(languages)), max_active, bool(disabled), created, updated)
            for t, u, name, groups, languages, max_active, disabled, created, updated in rows
        ]

    def tenant_settings(self, tenant: str | None = None) -> list[TenantSettings]:
        sql = "SELECT tenant, routing, updated_at FROM tenant_settings"
        rows = self._read(sql + " ORDER BY tenant", ()) if tenant is None else self._read(sql + " WHERE tenant = ?", (tenant,))
        return [TenantSettings(*row) for row in rows]
    def get_attachment(self, attachment_id: str) -> Attachment | None:
        rows = self._read(f"SELECT {_ATTACHMENT_COLUMNS} FROM attachments WHERE id = ?", (attachment_id,))
        return Attachment(*rows[0]) if rows else None

    def tags(self, conv_id: str) -> tuple[str, ...]:
        return tuple(row[0] for row in self._read("SELECT tag FROM conversation_tags WHERE conv_id = ? ORDER BY tag", (conv_id,)))

    def record(self, tenant: str, kind: str, key: str) -> Record | None:
        rows = self._read(_SELECT_RECORDS + " AND key = ?", (tenant, kind, key))
        return Record(*rows[0]) if rows else None

    def records(self, tenant: str, kind: str, *, prefix: str = "", after: str = "", limit: int = 1000) -> list[Record]:
        check_limit(limit)
        sql = _SELECT_RECORDS + " AND key > ?"
        params: list[object] = [tenant, kind, after]
        if prefix:
            sql += " AND key >= ? AND substr(key, 1, ?) = ?"
            params += [prefix, len(prefix), prefix]
        rows = self._read(sql + " ORDER BY key LIMIT ?", [*params, limit])
        return [Record(*row) for row in rows]

    def _read(self, sql: str, params: Sequence[object]) -> list[tuple]:
        """Run one query on this thread's reader. fetchall() ends the statement at once, so no read
        transaction stays open to pin an old WAL snapshot and stall checkpoints."""
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise damage_or(exc) from exc

    def _reader(self) -> sqlite3.Connection:
        """This thread's read-only connection, opened on first use."""
        if self._closed or self._writer is None:
            raise self._unavailable()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        with self._readers_lock:
            if self._closed:
                conn.close()
                raise self._unavailable()
            # Worker threads come and go (Trio's thread cache retires idle ones): close the
            # readers of threads that have ended.
            for thread in [t for t in self._readers if not t.is_alive()]:
                self._readers.pop(thread).close()
            self._readers[threading.current_thread()] = conn
        self._local.conn = conn
        return conn


_SELECT_RECORDS = "SELECT tenant, kind, key, value, updated_at FROM workspace_records WHERE tenant = ? AND kind = ?"
_SELECT_API_KEYS = "SELECT id, tenant, name, scopes, secret_hash, created_at, revoked_at FROM api_keys"


def _api_key_row(key: ApiKey) -> tuple:
    return (key.id, key.tenant, key.name, json.dumps(key.scopes), key.secret_hash, key.created_at, key.revoked_at)


def _api_key(row: tuple) -> ApiKey:
    key_id, tenant, name, scopes, secret_hash, created_at, revoked_at = row
    return ApiKey(key_id, tenant, name, tuple(json.loads(scopes)), secret_hash, created_at, revoked_at)


_DAMAGE_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary codes)


def damage_or(exc: sqlite3.Error) -> Exception:
    """A corrupt database becomes StoreDamaged (not retryable); anything else stays as it is."""
    code = getattr(exc, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF in _DAMAGE_CODES) or "malformed" in str(exc):
        return StoreDamaged(f"the database is damaged: {exc}; run `kefu store check`")
    return exc


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations the file lacks, all in one transaction (so idempotent on reopen)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {version} is newer than this code ({len(MIGRATIONS)})"
            )
        for step in MIGRATIONS[version:]:
            for statement in step:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


@contextmanager
def _savepoint(cur: sqlite3.Cursor) -> Iterator[None]:
    """Make a multi-statement op all-or-nothing inside the batch's transaction."""
    cur.execute("SAVEPOINT op")
    try:
        yield
    except BaseException:
        cur.execute("ROLLBACK TO op")
        cur.execute("RELEASE op")
        raise
    cur.execute("RELEASE op")
