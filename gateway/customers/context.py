"""What the agent knows about a shopper: profile, recent orders, recently viewed products, past
conversations with their summaries, tags and satisfaction.

A ``ContextProvider`` supplies it. The built-in one reads what the shop pushed over the REST
ingest endpoints (``gateway/http/v1/ingest.py``); ``gateway.customers.crm.HttpProvider`` asks the
shop's CRM. Either may be slow or fail: ``gateway.customers.workspace`` never lets that delay a
conversation.
"""

from __future__ import annotations

from typing import Any, Protocol

from .book import RecordBook
from .catalog import CatalogStore
from .identity import CustomerDirectory

RECENT_ORDERS = 5
RECENT_VIEWS = 10
PAST_CONVERSATIONS = 10
MAX_EPOCH_MS = 10**13  # view keys count down from here: the newest sort first


class ContextUnavailable(Exception):
    """The provider could not give the context (timeout, refusal, bad answer); says why."""


class ContextProvider(Protocol):
    async def context(self, tenant: str, customer: dict[str, Any]) -> dict[str, Any]:
        """``{"profile": {name, tier, tags}, "orders": [...], "viewed": [...], "conversations": [...]}``
        for a customer record of gateway.customers.identity; raise ContextUnavailable."""

    def forget(self, tenant: str, customer_id: str) -> None:
        """The shop said something about the customer changed: drop what is cached of them."""


def view_key(customer_id: str, ts: int) -> str:
    return f"{customer_id}/{MAX_EPOCH_MS - ts:013d}"


def order_key(customer_id: str, order_id: str) -> str:
    return f"{customer_id}/{order_id}"


class BuiltinProvider:
    """The context from the records the shop pushed, over the customer and every customer merged
    into it (an anonymous visitor's browsing counts after login)."""

    def __init__(self, book: RecordBook, directory: CustomerDirectory, catalog: CatalogStore) -> None:
        self.book = book
        self.directory = directory
        self.catalog = catalog

    def forget(self, tenant: str, customer_id: str) -> None:
        """Nothing is cached: every context is read afresh."""

    async def context(self, tenant: str, customer: dict[str, Any]) -> dict[str, Any]:
        ids = [customer["id"], *customer.get("absorbed", [])]
        profile = await self.book.get(tenant, "profile", customer["id"]) or {}
        orders: list[dict[str, Any]] = []
        viewed: list[dict[str, Any]] = []
        for cid in ids:
            orders += [order for _, order in await self.book.list(tenant, "order", prefix=cid + "/")]
            viewed += [view for _, view in await self.book.list(tenant, "view", prefix=cid + "/", limit=RECENT_VIEWS)]
        orders.sort(key=lambda o: o.get("created_at", 0), reverse=True)
        viewed.sort(key=lambda v: v["ts"], reverse=True)
        for view in viewed:
            product = await self.catalog.find(tenant, view["product"])
            if product is not None:
                view["title"], view["image"], view["price"] = product.title, product.image, product.price
        return {
            "profile": {"name": profile.get("name", ""), "tier": profile.get("tier", ""), "tags": profile.get("tags", [])},
            "orders": orders[:RECENT_ORDERS],
            "viewed": viewed[:RECENT_VIEWS],
            "conversations": await past_conversations(self.book, self.directory, tenant, customer),
        }


async def past_conversations(book: RecordBook, directory: CustomerDirectory, tenant: str, customer: dict[str, Any]) -> list[dict[str, Any]]:
    """The customer's conversations on every channel, newest first, with the workspace's facts."""
    past = []
    for conv in (await directory.conversations(tenant, customer))[:PAST_CONVERSATIONS]:
        facts = await book.get(tenant, "conv", conv.id) or {}
        past.append({
            "id": conv.id, "channel": conv.channel, "status": conv.status, "stage": conv.stage, "created_at": conv.created_at,
            "summary": facts.get("summary") or conv.subject, "tags": list(await book.store.tags(conv.id)), "satisfaction": facts.get("csat"),
            "product": facts.get("product"),
        })
    return past
