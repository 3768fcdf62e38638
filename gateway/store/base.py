"""The storage contract: a small blocking interface that every backend implements.

Backends are blocking on purpose (sqlite3 and psycopg's synchronous API are). They never see Trio:
``gateway.store.writer.Store`` owns one writer thread that drains a queue of write operations and
hands them to ``apply_batch`` many at a time — one transaction, one commit (group commit) — and runs
reads in worker threads. A backend therefore promises:

- ``apply_batch`` is only ever called from one thread at a time (the writer), applies every op of the
  batch in order inside a single transaction and commits once; when it returns, every result is
  durable in the backend's documented sense. One op's failure (e.g. unknown conversation) is returned
  as that op's exception and does not affect the others.
- reads may be called from any thread, concurrently with the writer, and see only committed data.
- sequence numbers are per conversation, start at 1 and are gap-free: ``AppendMessage`` takes
  ``last_seq + 1`` of its conversation; a duplicate (conv_id, sender, cmid) consumes no number.
- the store keeps the highest fence a ``Fenced`` op has carried; the check of an op's fence, its
  write and the new highest are one atomic step against every writer of the store (processes too).
"""

from __future__ import annotations

from typing import Protocol, Sequence

from ..model import (
    AgentProfile,
    ApiKey,
    Attachment,
    Conversation,
    Page,
    Participant,
    Receipt,
    Record,
    StoredMessage,
    TenantSettings,
    WriteOp,
)


class StoreError(Exception):
    """A write op that cannot be applied (its exception is that op's result)."""


class NotFound(StoreError):
    """The conversation (or key, or agent) an op refers to does not exist."""


class Conflict(StoreError):
    """An op that creates something that exists already."""


class StaleFence(StoreError):
    """A ``Fenced`` write whose fence is below the highest this store has seen: a routing leader of
    a later term has written since (this one was paused or cut off past its lease). Nothing of
    the write was applied; retrying it will not help, only stepping down will."""

    def __init__(self, fence: int, highest: int) -> None:
        super().__init__(f"fence {fence} is below the store's highest, {highest}: a later routing leader has written")
        self.fence = fence
        self.highest = highest


class StoreDamaged(StoreError):
    """The store's files are damaged (corrupt pages, a malformed database): retrying will not help
    until an operator repairs it (``kefu store check`` / ``kefu store repair``)."""


class StoreBackend(Protocol):
    #: True when calls block on I/O and must run off the Trio thread (SQLite, PostgreSQL);
    #: False for the memory backend, which the Store calls inline.
    blocking: bool
    #: True when a small commit is cheap enough to run on the Trio thread (no fsync, no network
    #: round trip: SQLite WAL with synchronous=NORMAL). While the writer thread is idle, the Store
    #: then commits small batches inline and saves the two thread hops a quiet message would pay.
    inline_commit: bool
    #: One line for logs and docs: what "durable" means for this backend.
    durability: str

    def open(self) -> None:
        """Connect and bring the schema to the current version (idempotent)."""

    def close(self) -> None:
        """Release connections; further calls are errors."""

    def apply_batch(self, ops: Sequence[WriteOp]) -> list[object]:
        """Apply ``ops`` in one transaction; return one result per op, in order.

        Results: CreateConversation -> Conversation; AddParticipant -> Participant (adding an existing
        participant returns the stored one); RemoveParticipant -> bool (was there);
        AppendMessage -> Appended; RecallMessage -> StoredMessage (as now stored); SetReceipt -> Receipt (as stored, the max of old and new);
        SetStatus -> Conversation (updated); SetTags -> the tags as stored (unique, sorted);
        CreateApiKey and RevokeApiKey -> ApiKey; SaveAgent -> AgentProfile; SaveTenantSettings ->
        TenantSettings; AddAttachment -> Attachment (an existing id is a StoreError);
        DeleteAttachment -> bool (was there); MarkAttachmentDeleted -> Attachment as marked, or None
        (no such attachment; an already deleted one keeps its first deleted_at); PutRecords -> int
        (records stored; all or none); DeleteRecord -> bool (was there); Fenced -> its op's result,
        or StaleFence when its fence is below the highest seen (checked and raised atomically with
        the write, against every writer of the store). A failing op's result is a StoreError instance.
        """

    def get_conversation(self, conv_id: str) -> Conversation | None: ...

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
        """Conversations of ``tenant``, newest first (by created_at, then id). With ``user``, only
        those where ``user`` is a participant; with ``before``, only those created before that time
        — or, with ``before_id`` too, at that time with a smaller id (a cursor that never skips
        conversations created in the same millisecond); with ``since``, only those created at or
        after it. ``status``, ``stage``, ``assignee`` and ``channel`` must equal the given value;
        ``tag`` must be one of the conversation's tags."""

    def in_stages(self, stages: Sequence[str], *, limit: int = 10_000) -> list[Conversation]:
        """Open conversations of every tenant whose routing stage is one of ``stages``, oldest
        first: what routing must pick up again after a restart."""

    def participants(self, conv_id: str) -> list[Participant]:
        """Participants in join order."""

    def read_messages(
        self, conv_id: str, *, after: int = 0, before: int | None = None, limit: int = 100
    ) -> Page:
        """Messages with after < seq < before, oldest first, at most ``limit``. When ``before`` is
        given the page holds the newest ``limit`` of that range (history paging backwards);
        ``more`` tells whether messages of the range were left out."""

    def find_message(self, conv_id: str, sender: str, cmid: str) -> StoredMessage | None: ...

    def tags(self, conv_id: str) -> tuple[str, ...]:
        """The conversation's tags, sorted (none: empty)."""

    def receipts(self, conv_id: str) -> list[Receipt]: ...

    def get_attachment(self, attachment_id: str) -> Attachment | None: ...
    # ---- tenant administration ------------------------------------------------------------------

    def api_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not, of any tenant (the caller checks the tenant)."""

    def api_keys(self, tenant: str) -> list[ApiKey]:
        """The tenant's keys, revoked ones too, oldest first (by created_at, then id)."""

    def agents(self, tenant: str | None = None) -> list[AgentProfile]:
        """The tenant's agent profiles (every tenant's with None), by tenant then user."""

    def tenant_settings(self, tenant: str | None = None) -> list[TenantSettings]:
        """The stored settings of ``tenant`` (zero or one), or of every tenant with None, by tenant."""

    # ---- workspace records (gateway.customers) ------------------------------------------------

    def record(self, tenant: str, kind: str, key: str) -> Record | None:
        """The record stored under (tenant, kind, key), or None."""

    def records(self, tenant: str, kind: str, *, prefix: str = "", after: str = "", limit: int = 1000) -> list[Record]:
        """The tenant's records of ``kind`` whose key starts with ``prefix`` and sorts after
        ``after``, by key (byte order of the UTF-8 text), at most ``limit``."""
