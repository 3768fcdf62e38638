"""A customer's personal information, exported and erased on request: the rights of access and of
deletion (PIPL arts. 45 and 47, GDPR arts. 15 and 17), which a shop honours from its backend with
an admin API key (``GET /v1/customers/{id}/export``, ``POST /v1/customers/{id}/erase``).

What is personal is what the shopper said, showed and did: message bodies, attachments, the
profile, orders and browsing events the shop pushed, staff notes about them and a survey comment.
What is not is what the shop's reports and the store's invariants stand on: conversation ids,
times, stages and assignees, message sequence numbers, senders, roles and times, bare identity ids
and merges. Erasure therefore replaces bodies (as a recall does: ``RecallMessage``, so every
member's history stays gap-free) and deletes the rest, and it is idempotent: a second call, or a
retry after a cut-off first one, finishes the work and counts only what it changed.

An export is bounded: at most ``MAX_EXPORT_MESSAGES`` message maps in one document; past that the
document says ``truncated`` and each conversation left short names the transcript page to read on.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, AsyncIterator

import msgpack
import trio

from ..media.bodies import attachment_id
from ..model import SYSTEM, Conversation, DeleteRecord, RecallMessage, WriteOp
from ..protocol import envelope as env
from ..store.base import StoreError
from .identity import split_identity

if TYPE_CHECKING:
    from ..media.service import Media
    from .workspace import WorkspaceService

log = logging.getLogger("kefu.privacy")

ERASED = "erased"  # the kind of an erased message's body
MAX_EXPORT_MESSAGES = 10_000  # message maps in one export document, over all its conversations
PAGE = 500  # messages read, or records listed, at a time
CONVERSATION_PAGE = 100  # conversations listed at a time, per identity
ERASED_BODY = env.pack({"kind": ERASED})
COUNTS = ("conversations", "messages", "attachments", "notes", "comments", "summaries", "profile", "orders", "views")


class PersonalData:
    """Export and erasure of one customer of a tenant, over the workspace's records, the
    conversation store and the media store."""

    def __init__(self, workspace: WorkspaceService, media: Media | None) -> None:
        self.workspace = workspace
        self.book = workspace.book
        self.directory = workspace.directory
        self.service = workspace.service
        self.store = workspace.service.store
        self.media = media

    # ---- what is read for both --------------------------------------------------------------

    @staticmethod
    def customer_ids(customer: dict[str, Any]) -> list[str]:
        """The customer and every customer merged into it: a visitor's browsing before login is
        the same person's."""
        return [customer["id"], *customer.get("absorbed", [])]

    async def conversations(self, tenant: str, customer: dict[str, Any]) -> AsyncIterator[Conversation]:
        """Every conversation of every linked identity, each once, newest first per identity (all
        of them, paged: not the one history's 100 per identity)."""
        seen: set[str] = set()
        for identity in customer["links"]:
            channel, user = split_identity(identity)
            before: int | None = None
            before_id: str | None = None
            while True:
                page = await self.store.list_conversations(tenant, user=user, channel=channel, before=before, before_id=before_id, limit=CONVERSATION_PAGE)
                for conv in page:
                    if conv.customer == user and conv.id not in seen:
                        seen.add(conv.id)
                        yield conv
                if len(page) < CONVERSATION_PAGE:
                    break
                before, before_id = page[-1].created_at, page[-1].id

    async def all_records(self, tenant: str, kind: str, prefix: str) -> list[tuple[str, dict[str, Any]]]:
        found: list[tuple[str, dict[str, Any]]] = []
        after = ""
        while True:
            page = await self.store.records(tenant, kind, prefix=prefix, after=after, limit=PAGE)
            found += [(r.key, json.loads(r.value)) for r in page]
            if len(page) < PAGE:
                return found
            after = page[-1].key

    # ---- export -------------------------------------------------------------------------------

    async def export(self, tenant: str, customer: dict[str, Any]) -> dict[str, Any]:
        """Everything kept about the customer, as one JSON document (attachments as their
        metadata, never their bytes)."""
        ids = self.customer_ids(customer)
        identities = []
        for identity in customer["links"]:
            channel, user = split_identity(identity)
            link = await self.book.get(tenant, "link", identity) or {}
            identities.append({"identity": identity, "channel": channel, "user": user, "linked_at": link.get("at"), "via": link.get("via")})
        profiles = {cid: profile for cid in ids if (profile := await self.book.get(tenant, "profile", cid)) is not None}
        orders, views = [], []
        for cid in ids:
            orders += [order for _, order in await self.all_records(tenant, "order", cid + "/")]
            views += [{"customer": cid, **view} for _, view in await self.all_records(tenant, "view", cid + "/")]
        budget = MAX_EXPORT_MESSAGES
        conversations = []
        async for conv in self.conversations(tenant, customer):
            exported, budget = await self.export_conversation(conv, budget)
            conversations.append(exported)
        truncated = any(not c["messages_complete"] for c in conversations)
        return {
            "customer": customer,
            "profile": profiles.get(customer["id"]),
            "profiles": profiles,
            "identities": identities,
            "orders": orders,
            "viewed": views,
            "merges": await self.directory.merges(tenant, customer["id"]),
            "conversations": conversations,
            "truncated": truncated,
            "rest": (f"at most {MAX_EXPORT_MESSAGES} messages are exported at once: read each conversation whose `messages_complete` is false "
                     "on from its `next` (GET /v1/conversations/{conv_id}/messages?after=<seq>)") if truncated else "",
            "exported_at": self.book.now_ms(),
        }

    async def export_conversation(self, conv: Conversation, budget: int) -> tuple[dict[str, Any], int]:
        """One conversation with its messages while ``budget`` lasts; returns the budget left."""
        messages: list[dict[str, Any]] = []
        attachments: list[dict[str, Any]] = []
        after, complete = 0, True
        while True:
            if budget <= 0:
                complete = False
                break
            page = await self.store.read_messages(conv.id, after=after, limit=min(PAGE, budget))
            for m in page.messages:
                messages.append(env.jsonable(env.message_map(m)))
                found = await self.attachment_of(conv, msgpack.unpackb(m.body, raw=False))
                if found is not None:
                    attachments.append({"id": found.id, "seq": m.seq, "kind": found.kind, "name": found.name, "size": found.size,
                                        "content_type": found.content_type, "created_at": found.created_at, "deleted_at": found.deleted_at})
                after = m.seq
            budget -= len(page.messages)
            if not page.more:
                break
        facts = await self.workspace.facts(conv.tenant, conv.id)
        exported = {
            "conversation": env.conversation_map(conv),
            "participants": [{"user": p.user, "role": p.role, "joined_at": p.joined_at} for p in await self.store.participants(conv.id)],
            "tags": list(await self.store.tags(conv.id)),
            "product": facts.get("product") or None,
            "summary": facts.get("summary", ""),
            "survey": facts.get("survey"),
            "satisfaction": facts.get("csat"),
            "messages": messages,
            "attachments": attachments,
            "messages_complete": complete,
            "next": "" if complete else f"/v1/conversations/{conv.id}/messages?after={after}",
        }
        return exported, budget

    async def attachment_of(self, conv: Conversation, body: Any) -> Any:
        """The attachment a message body of ``conv`` carries, if it is one of this conversation's
        (bodies pass through: a forged id of another tenant's file is not followed)."""
        found = attachment_id(body) if type(body) is dict else None
        if type(found) is not str or not found:
            return None
        attachment = await self.store.get_attachment(found)
        if attachment is None or attachment.tenant != conv.tenant or attachment.conv_id != conv.id:
            return None
        return attachment

    # ---- erasure ------------------------------------------------------------------------------

    async def erase(self, tenant: str, customer: dict[str, Any], by: str) -> dict[str, int]:
        """Erase the customer's personal information (module docstring); returns what was
        erased, by kind (all zero when done already). Logged as an audit line without any of the
        erased content, and counted (``kefu_customer_erasures_total``)."""
        counts = dict.fromkeys(COUNTS, 0)
        async for conv in self.conversations(tenant, customer):
            if await self.erase_conversation(conv, counts):
                counts["conversations"] += 1
        for cid in self.customer_ids(customer):
            if await self.book.delete(tenant, "profile", cid):
                counts["profile"] += 1
            for kind, name in (("order", "orders"), ("view", "views")):
                keys = [key for key, _ in await self.all_records(tenant, kind, cid + "/")]
                counts[name] += await self.apply_all([DeleteRecord(tenant, kind, key) for key in keys])
        self.workspace.provider.forget(tenant, customer["id"])
        self.service.stats.customer_erasures += 1
        said = " ".join(f"{name}={n}" for name, n in counts.items())
        log.info("customer %s of tenant %s erased by %s: %s", customer["id"], tenant, by, said, extra={"tenant": tenant})
        return counts

    async def erase_conversation(self, conv: Conversation, counts: dict[str, int]) -> bool:
        """Attachments first (their ids are read from the bodies about to go), then notes, facts
        and bodies; members connected live are sent an ``erased`` event. True if anything changed."""
        before = sum(counts.values())
        after, bodies = 0, []
        while True:
            page = await self.store.read_messages(conv.id, after=after, limit=PAGE)
            for m in page.messages:
                body = msgpack.unpackb(m.body, raw=False)
                after = m.seq
                if type(body) is dict and body.get("kind") == ERASED:
                    continue
                attachment = await self.attachment_of(conv, body)
                if attachment is not None and self.media is not None:
                    await self.media.delete(conv.tenant, SYSTEM, SYSTEM, attachment.id)
                    counts["attachments"] += int(attachment.deleted_at is None)
                bodies.append(RecallMessage(conv.id, m.seq, ERASED_BODY))
            if len(bodies) >= PAGE or not page.more:
                counts["messages"] += await self.apply_all(bodies)
                bodies = []
            if not page.more:
                break
        notes = [key for key, _ in await self.all_records(conv.tenant, "note", conv.id + "/")]
        counts["notes"] += await self.apply_all([DeleteRecord(conv.tenant, "note", key) for key in notes])
        comments, summaries = await self.workspace.erase_facts(conv.tenant, conv.id)
        counts["comments"] += comments
        counts["summaries"] += summaries
        if sum(counts.values()) == before:
            return False
        self.service.notify(conv.id, {"t": ERASED, "conv": conv.id, "through": after})
        return True

    async def apply_all(self, ops: list[WriteOp]) -> int:
        """Submit ``ops`` together (the writer commits them in few transactions) and wait for
        them all; returns how many changed something. The first failure is raised."""
        if not ops:
            return 0
        results: list[object] = []
        done = trio.Event()

        def finished(result: object) -> None:
            results.append(result)
            if len(results) == len(ops):
                done.set()

        await self.store.wait_capacity()
        for op in ops:
            self.store.submit(op, finished)
        await done.wait()
        for result in results:
            if isinstance(result, StoreError):
                raise result
        return sum(1 for result in results if result is not False)
