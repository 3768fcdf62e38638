"""The in-memory backend: the reference implementation of the storage contract.

It keeps everything in dicts, so tests and single-process development need no database, and the
SQLite backend has a plain model to be checked against. Nothing survives the process.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable, Sequence

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
from .base import Conflict, NotFound, StaleFence, StoreError


class MemoryBackend:
    """A StoreBackend held in process memory.

    ``blocking`` is False: the Store calls it inline on the Trio thread, so it needs no locking and
    every applied op is at once "committed". Each op checks before it mutates, so a failing op
    leaves nothing behind.
    """

    blocking = False
    inline_commit = True
    durability = "none: kept in process memory, lost when the process exits"

    def __init__(self) -> None:
        self._opened = False
        self._closed = False
        # Conversations are kept with last_seq 0; the live value is len(self._messages[id]).
        self._conversations: dict[str, Conversation] = {}
        # Per conversation, participants by user in insertion order (the tie-break of join order).
        self._participants: dict[str, dict[str, Participant]] = {}
        # Per conversation, messages by position: message seq n is at index n - 1.
        self._messages: dict[str, list[StoredMessage]] = {}
        self._by_cmid: dict[tuple[str, str, str], StoredMessage] = {}
        self._receipts: dict[str, dict[tuple[str, str], Receipt]] = {}
        # Indexes for listing: a user's conversations, a tenant's (lists never scan everything).
        self._of_user: dict[str, set[str]] = {}
        self._of_tenant: dict[str, set[str]] = {}
        self._api_keys: dict[str, ApiKey] = {}
        self._agents: dict[tuple[str, str], AgentProfile] = {}
        self._settings: dict[str, TenantSettings] = {}
        self._attachments: dict[str, Attachment] = {}
        self._records: dict[tuple[str, str], dict[str, Record]] = {}  # (tenant, kind) -> key -> record
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
        self._tags: dict[str, tuple[str, ...]] = {}
        self._fence = 0  # the highest fence a Fenced op has carried

    def open(self) -> None:
        if self._closed:
            raise StoreError("store is closed")
        self._opened = True

    def close(self) -> None:
        self._closed = True

    # ---- writes ----------------------------------------------------------------------------------

    def apply_batch(self, ops: Sequence[WriteOp]) -> list[object]:
        self._check_open()
        results: list[object] = []
        for op in ops:
            handler = self._handlers.get(type(op))
            try:
                if handler is None:
                    raise StoreError(f"not a write op: {type(op).__name__}")
                results.append(handler(op))
            except StoreError as exc:
                results.append(exc)
        return results

    def _fenced(self, op: Fenced) -> object:
        if op.fence < self._fence:
            raise StaleFence(op.fence, self._fence)
        if type(op.op) is Fenced:
            raise StoreError("a Fenced op inside a Fenced op")
        result = None
        if op.op is not None:
            handler = self._handlers.get(type(op.op))
            if handler is None:
                raise StoreError(f"not a write op: {type(op.op).__name__}")
            result = handler(op.op)  # raises before mutating: a failing op raises no fence
        self._fence = op.fence
        return result

    def _create(self, op: CreateConversation) -> Conversation:
        conv = replace(op.conversation, last_seq=0)
        if conv.id in self._conversations:
            raise StoreError(f"conversation {conv.id!r} already exists")
        check_participants_belong(conv.id, op.participants)
        self._conversations[conv.id] = conv
        self._messages[conv.id] = []
        self._receipts[conv.id] = {}
        members = self._participants[conv.id] = {}
        self._of_tenant.setdefault(conv.tenant, set()).add(conv.id)
        for participant in op.participants:
            members.setdefault(participant.user, participant)
            self._of_user.setdefault(participant.user, set()).add(conv.id)
        return conv

    def _add_participant(self, op: AddParticipant) -> Participant:
        members = self._members(op.participant.conv_id)
        self._of_user.setdefault(op.participant.user, set()).add(op.participant.conv_id)
        return members.setdefault(op.participant.user, op.participant)

    def _remove_participant(self, op: RemoveParticipant) -> bool:
        self._of_user.get(op.user, set()).discard(op.conv_id)
        return self._members(op.conv_id).pop(op.user, None) is not None

    def _append(self, op: AppendMessage) -> Appended:
        messages = self._require(op.conv_id)
        key = (op.conv_id, op.sender, op.cmid)
        existing = self._by_cmid.get(key)
        if existing is not None:
            return Appended(existing, duplicate=True)
        message = StoredMessage(
            conv_id=op.conv_id,
            seq=len(messages) + 1,
            cmid=op.cmid,
            sender=op.sender,
            sender_role=op.sender_role,
            ts=int(time.time() * 1000),
            body=bytes(op.body),
        )
        messages.append(message)
        self._by_cmid[key] = message
        return Appended(message)

    def _recall(self, op: RecallMessage) -> StoredMessage:
        messages = self._require(op.conv_id)
        if not 1 <= op.seq <= len(messages):
            raise NotFound(f"conversation {op.conv_id!r} has no message {op.seq}")
        old = messages[op.seq - 1]
        new = StoredMessage(old.conv_id, old.seq, old.cmid, old.sender, old.sender_role, old.ts, bytes(op.body))
        messages[op.seq - 1] = self._by_cmid[(old.conv_id, old.sender, old.cmid)] = new
        return new

    def _set_receipt(self, op: SetReceipt) -> Receipt:
        new = op.receipt
        self._require(new.conv_id)
        stored = self._receipts[new.conv_id]
        old = stored.get((new.user, new.kind))
        if old is not None and old.seq >= new.seq:
            return old
        stored[(new.user, new.kind)] = new
        return new

    def _set_status(self, op: SetStatus) -> Conversation:
        self._require(op.conv_id)
        conv = self._conversations[op.conv_id] = replace(self._conversations[op.conv_id], **op.changes())
        return self._live(conv)

    def _create_api_key(self, op: CreateApiKey) -> ApiKey:
        if op.key.id in self._api_keys:
            raise Conflict(f"API key {op.key.id!r} exists")
        self._api_keys[op.key.id] = op.key
        return op.key

    def _revoke_api_key(self, op: RevokeApiKey) -> ApiKey:
        key = self._api_keys.get(op.key_id)
        if key is None or key.tenant != op.tenant:
            raise NotFound(f"API key {op.key_id!r} not found")
        if not key.revoked_at:
            key = self._api_keys[op.key_id] = replace(key, revoked_at=op.at)
        return key

    def _save_agent(self, op: SaveAgent) -> AgentProfile:
        key = (op.agent.tenant, op.agent.user)
        if op.create and key in self._agents:
            raise Conflict(f"agent {op.agent.user!r} exists")
        if not op.create and key not in self._agents:
            raise NotFound(f"agent {op.agent.user!r} not found")
        self._agents[key] = op.agent
        return op.agent

    def _save_settings(self, op: SaveTenantSettings) -> TenantSettings:
        self._settings[op.settings.tenant] = op.settings
        return op.settings
    def _set_tags(self, op: SetTags) -> tuple[str, ...]:
        self._require(op.conv_id)
        tags = self._tags[op.conv_id] = tuple(sorted(set(op.tags)))
        return tags
    def _add_attachment(self, op: AddAttachment) -> Attachment:
        attachment = op.attachment
        self._require(attachment.conv_id)
        if attachment.id in self._attachments:
            raise StoreError(f"attachment {attachment.id!r} already exists")
        self._attachments[attachment.id] = attachment
        return attachment

    def _delete_attachment(self, op: DeleteAttachment) -> bool:
        return self._attachments.pop(op.attachment_id, None) is not None

    def _mark_attachment_deleted(self, op: MarkAttachmentDeleted) -> Attachment | None:
        attachment = self._attachments.get(op.attachment_id)
        if attachment is not None and attachment.deleted_at is None:
            attachment = self._attachments[op.attachment_id] = replace(attachment, deleted_at=op.deleted_at)
        return attachment

    def _put_records(self, op: PutRecords) -> int:
        for r in op.records:  # check all before storing any
            if not isinstance(r, Record) or not all(type(v) is str for v in (r.tenant, r.kind, r.key, r.value)):
                raise StoreError(f"not a record: {r!r}"[:200])
        for r in op.records:
            self._records.setdefault((r.tenant, r.kind), {})[r.key] = r
        return len(op.records)

    def _delete_record(self, op: DeleteRecord) -> bool:
        return self._records.get((op.tenant, op.kind), {}).pop(op.key, None) is not None

    # ---- reads -----------------------------------------------------------------------------------

    def get_conversation(self, conv_id: str) -> Conversation | None:
        self._check_open()
        conv = self._conversations.get(conv_id)
        return None if conv is None else self._live(conv)

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
        self._check_open()
        check_limit(limit)
        ids = self._of_tenant.get(tenant, set()) if user is None else self._of_user.get(user, set())
        matching = [
            conv
            for conv in map(self._conversations.__getitem__, ids)
            if conv.tenant == tenant
            and (status is None or conv.status == status)
            and (stage is None or conv.stage == stage)
            and (assignee is None or conv.assignee == assignee)
            and (channel is None or conv.channel == channel)
            and (tag is None or tag in self._tags.get(conv.id, ()))
            and (since is None or conv.created_at >= since)
            and (
                before is None
                or conv.created_at < before
                or (before_id is not None and conv.created_at == before and conv.id < before_id)
            )
        ]
        matching.sort(key=lambda conv: (conv.created_at, conv.id), reverse=True)
        return [self._live(conv) for conv in matching[:limit]]

    def in_stages(self, stages: Sequence[str], *, limit: int = 10_000) -> list[Conversation]:
        self._check_open()
        check_limit(limit)
        matching = [c for c in self._conversations.values() if c.status == "open" and c.stage in stages]
        matching.sort(key=lambda conv: (conv.created_at, conv.id))
        return [self._live(conv) for conv in matching[:limit]]

    def participants(self, conv_id: str) -> list[Participant]:
        self._check_open()
        members = self._participants.get(conv_id, {})
        return sorted(members.values(), key=lambda p: p.joined_at)  # stable: ties keep insertion

    def read_messages(
        self, conv_id: str, *, after: int = 0, before: int | None = None, limit: int = 100
    ) -> Page:
        self._check_open()
        check_limit(limit)
        messages = self._messages.get(conv_id, [])
        # The range after < seq < before as list indices [lo, hi).
        lo = min(max(after, 0), len(messages))
        hi = len(messages) if before is None else min(max(before - 1, lo), len(messages))
        if before is None:
            end = min(lo + limit, hi)
            return Page(messages[lo:end], more=end < hi)
        start = max(hi - limit, lo)
        return Page(messages[start:hi], more=start > lo)

    def find_message(self, conv_id: str, sender: str, cmid: str) -> StoredMessage | None:
        self._check_open()
        return self._by_cmid.get((conv_id, sender, cmid))

    def receipts(self, conv_id: str) -> list[Receipt]:
        self._check_open()
        stored = self._receipts.get(conv_id, {})
        return [stored[key] for key in sorted(stored)]  # by (user, kind), as SQLite orders them

    def api_key(self, key_id: str) -> ApiKey | None:
        self._check_open()
        return self._api_keys.get(key_id)

    def api_keys(self, tenant: str) -> list[ApiKey]:
        self._check_open()
        return sorted((k for k in self._api_keys.values() if k.tenant == tenant), key=lambda k: (k.created_at, k.id))

    def agents(self, tenant: str | None = None) -> list[AgentProfile]:
        self._check_open()
        return [self._agents[key] for key in sorted(self._agents) if tenant is None or key[0] == tenant]

    def tenant_settings(self, tenant: str | None = None) -> list[TenantSettings]:
        self._check_open()
        return [self._settings[t] for t in sorted(self._settings) if tenant is None or t == tenant]
    def tags(self, conv_id: str) -> tuple[str, ...]:
        self._check_open()
        return self._tags.get(conv_id, ())
    def get_attachment(self, attachment_id: str) -> Attachment | None:
        self._check_open()
        return self._attachments.get(attachment_id)

    def record(self, tenant: str, kind: str, key: str) -> Record | None:
        self._check_open()
        return self._records.get((tenant, kind), {}).get(key)

    def records(self, tenant: str, kind: str, *, prefix: str = "", after: str = "", limit: int = 1000) -> list[Record]:
        self._check_open()
        check_limit(limit)
        stored = self._records.get((tenant, kind), {})
        keys = sorted(k for k in stored if k.startswith(prefix) and k > after)
        return [stored[k] for k in keys[:limit]]

    # ---- helpers ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed or not self._opened:
            raise StoreError("store is closed" if self._closed else "store is not open")

    def _require(self, conv_id: str) -> list[StoredMessage]:
        """The messages of an existing conversation; the NotFound check every write op makes."""
        try:
            return self._messages[conv_id]
        except KeyError:
            raise NotFound(f"conversation {conv_id!r} not found") from None

    def _members(self, conv_id: str) -> dict[str, Participant]:
        self._require(conv_id)
        return self._participants[conv_id]

    def _live(self, conv: Conversation) -> Conversation:
        return replace(conv, last_seq=len(self._messages[conv.id]))


def check_participants_belong(conv_id: str, participants: Sequence[Participant]) -> None:
    """CreateConversation must not slip participants into some other conversation."""
    for participant in participants:
        if participant.conv_id != conv_id:
            raise StoreError(
                f"participant {participant.user!r} names conversation {participant.conv_id!r}, "
                f"not {conv_id!r}"
            )


def check_limit(limit: int) -> None:
    """A negative limit is a caller's bug (and would mean "no limit" to SQLite): refuse it."""
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
