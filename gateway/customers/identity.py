"""One customer across channels: a customer per tenant links the shopper's channel identities.

An identity is a channel and the user id a token carries there (``app:u1``, ``miniprogram:o-7f``,
``web:v-3a``). An identity first seen unlinked becomes a customer of its own, whose id is the identity.
A token's ``customer`` claim (or ``POST /v1/customers/{id}/links``) links the identity to the shop's
customer id; when the identity belonged to another customer (an anonymous web visitor who logs
in), that customer is merged in: its identities move, both histories stay, and the merge is
recorded so that an admin can undo it.

Records (kind → key → value):
- ``customer`` → id → ``{id, links: [identity], absorbed: [customer ids merged in], merged_into, created_at}``
- ``link`` → identity → ``{customer, at, via}``
- ``merge`` → merge id → ``{id, into, from, links, by, at, undone_at, undone_by}``
"""

from __future__ import annotations

import secrets
from typing import Any

from ..model import CHANNELS, Conversation
from ..protocol.errors import RequestError
from .book import RecordBook

MAX_LINKS = 50  # identities per customer: a customer is a person, not a segment
HISTORY_LIMIT = 100  # conversations per identity read for one history


def identity_key(channel: str, user: str) -> str:
    return f"{channel}:{user}"


def split_identity(identity: str) -> tuple[str, str]:
    channel, _, user = identity.partition(":")
    return channel, user


class CustomerDirectory:
    def __init__(self, book: RecordBook) -> None:
        self.book = book

    async def get(self, tenant: str, customer_id: str) -> dict[str, Any] | None:
        return await self.book.get(tenant, "customer", customer_id)

    async def ensure(self, tenant: str, customer_id: str) -> dict[str, Any]:
        """The customer, created (with no identities yet) if new: the shop pushed their profile."""
        customer = await self.get(tenant, customer_id)
        if customer is None:
            customer = self._new(customer_id, [])
            await self.book.put(tenant, "customer", customer_id, customer)
        return customer

    async def customer_of(self, tenant: str, channel: str, user: str) -> dict[str, Any]:
        """The customer an identity belongs to; an identity seen for the first time becomes a
        customer of its own (stored, so that a later login merges it, recorded)."""
        identity = identity_key(channel, user)
        link = await self.book.get(tenant, "link", identity)
        if link is not None:
            customer = await self.get(tenant, link["customer"])
            if customer is not None:
                return customer
        customer = self._new(identity, [identity])
        await self.book.put_many(tenant, [("customer", identity, customer), ("link", identity, {"customer": identity, "at": self.book.now_ms(), "via": "first seen"})])
        return customer

    async def resolve(self, tenant: str, channel: str, user: str, claimed: str = "", by: str = "token") -> dict[str, Any]:
        """The customer of a shopper's identity; with ``claimed`` (the token's ``customer``), the
        identity is linked to that customer first, merging the one it belonged to."""
        if not claimed:
            return await self.customer_of(tenant, channel, user)
        return await self.link(tenant, claimed, channel, user, by=by)

    async def link(self, tenant: str, customer_id: str, channel: str, user: str, by: str) -> dict[str, Any]:
        """Link an identity to ``customer_id`` (created if new). An identity of another customer
        brings that whole customer along: a recorded merge, both histories kept."""
        if channel not in CHANNELS:
            raise RequestError("bad_request", f"field `channel` must be one of {', '.join(CHANNELS)}")
        identity = identity_key(channel, user)
        customer = await self.get(tenant, customer_id) or self._new(customer_id, [])
        if customer.get("merged_into"):
            return await self.link(tenant, customer["merged_into"], channel, user, by)
        if identity in customer["links"]:
            return customer
        link = await self.book.get(tenant, "link", identity)
        other = await self.get(tenant, link["customer"]) if link is not None else None
        if other is not None and link is not None and link.get("held") and by == "token":
            return other  # an admin undid the merge: a token's claim does not redo it (the API's link does)
        if other is not None and other["id"] != customer_id:
            return await self._merge(tenant, other, customer, by)
        if len(customer["links"]) >= MAX_LINKS:
            raise RequestError("too_large", f"a customer has at most {MAX_LINKS} linked identities")
        customer["links"].append(identity)
        now = self.book.now_ms()
        await self.book.put_many(tenant, [("customer", customer_id, customer), ("link", identity, {"customer": customer_id, "at": now, "via": by})])
        return customer

    async def _merge(self, tenant: str, source: dict[str, Any], into: dict[str, Any], by: str) -> dict[str, Any]:
        if len(into["links"]) + len(source["links"]) > MAX_LINKS:
            raise RequestError("too_large", f"a customer has at most {MAX_LINKS} linked identities")
        now = self.book.now_ms()
        merge_id = f"{now:013d}-{secrets.token_hex(4)}"
        moved = list(source["links"])
        into["links"] += moved
        into["absorbed"] = [*into.get("absorbed", []), source["id"], *source.get("absorbed", [])]
        source.update(links=[], merged_into=into["id"])
        merge = {"id": merge_id, "into": into["id"], "from": source["id"], "links": moved, "by": by, "at": now, "undone_at": 0, "undone_by": ""}
        items = [("customer", into["id"], into), ("customer", source["id"], source), ("merge", merge_id, merge)]
        items += [("link", identity, {"customer": into["id"], "at": now, "via": f"merge {merge_id}"}) for identity in moved]
        await self.book.put_many(tenant, items)
        return into

    async def undo_merge(self, tenant: str, merge_id: str, by: str) -> dict[str, Any]:
        """Give the merged customer its identities back (those still with the customer merged into).
        They are held there: a token claiming them for the other customer does not merge again;
        linking them over the API does."""
        merge = await self.book.get(tenant, "merge", merge_id)
        if merge is None:
            raise RequestError("not_found", f"no merge {merge_id!r}")
        if merge["undone_at"]:
            raise RequestError("conflict", f"merge {merge_id!r} was undone already")
        into = await self.get(tenant, merge["into"])
        source = await self.get(tenant, merge["from"])
        assert into is not None and source is not None, "a merge names stored customers"
        back = [identity for identity in merge["links"] if identity in into["links"]]
        into["links"] = [identity for identity in into["links"] if identity not in back]
        gone = {source["id"], *source.get("absorbed", [])}
        into["absorbed"] = [c for c in into.get("absorbed", []) if c not in gone]
        source.update(links=back, merged_into="")
        now = self.book.now_ms()
        merge.update(undone_at=now, undone_by=by)
        items = [("customer", into["id"], into), ("customer", source["id"], source), ("merge", merge_id, merge)]
        items += [("link", identity, {"customer": source["id"], "at": now, "via": f"undo {merge_id}", "held": True}) for identity in back]
        await self.book.put_many(tenant, items)
        return merge

    async def merges(self, tenant: str, customer_id: str | None = None) -> list[dict[str, Any]]:
        """Merges, oldest first; with ``customer_id``, those it took part in."""
        merges = [m for _, m in await self.book.list(tenant, "merge")]
        return [m for m in merges if customer_id is None or customer_id in (m["into"], m["from"])]

    async def conversations(self, tenant: str, customer: dict[str, Any]) -> list[Conversation]:
        """The customer's conversations on every linked channel, newest first: one history."""
        store = self.book.store
        found: dict[str, Conversation] = {}
        for identity in customer["links"]:
            channel, user = split_identity(identity)
            for conv in await store.list_conversations(tenant, user=user, channel=channel, limit=HISTORY_LIMIT):
                if conv.customer == user:
                    found[conv.id] = conv
        return sorted(found.values(), key=lambda c: (c.created_at, c.id), reverse=True)

    def _new(self, customer_id: str, links: list[str]) -> dict[str, Any]:
        return {"id": customer_id, "links": links, "absorbed": [], "merged_into": "", "created_at": self.book.now_ms()}
