"""The context from the shop's CRM: ``GET {url}/customers/{customer id}/context?tenant=…`` answers
``{"profile": …, "orders": […], "viewed": […]}``; past conversations come from this gateway.

Each call has a deadline (``timeout_s``); answers are cached for ``ttl_s`` (``MAX_CACHED`` entries,
the oldest dropped first), so a shopper who opens several chats costs the CRM one call. A timeout,
an error status or a malformed answer raises ContextUnavailable and is not cached.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx
import trio

from .book import RecordBook
from .context import ContextUnavailable, past_conversations
from .identity import CustomerDirectory

MAX_CACHED = 10_000
MAX_ANSWER_BYTES = 1 << 20


class HttpProvider:
    def __init__(self, url: str, book: RecordBook, directory: CustomerDirectory, *, timeout_s: float = 2.0, ttl_s: float = 60.0, token: str = "") -> None:
        self.url = url.rstrip("/")
        self.book = book
        self.directory = directory
        self.timeout_s = timeout_s
        self.ttl_s = ttl_s
        self.headers = {"authorization": f"Bearer {token}"} if token else {}
        self.calls = 0  # requests made to the CRM (the cache's effect shows here)
        self._cache: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}

    async def context(self, tenant: str, customer: dict[str, Any]) -> dict[str, Any]:
        crm = await self._crm(tenant, customer["id"])
        return {**crm, "conversations": await past_conversations(self.book, self.directory, tenant, customer)}

    def forget(self, tenant: str, customer_id: str) -> None:
        """Drop a cached answer (the shop said the customer changed)."""
        self._cache.pop((tenant, customer_id), None)

    async def _crm(self, tenant: str, customer_id: str) -> dict[str, Any]:
        key = (tenant, customer_id)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        self.calls += 1
        url = f"{self.url}/customers/{quote(customer_id, safe='')}/context"
        try:
            with trio.fail_after(self.timeout_s):
                async with httpx.AsyncClient(timeout=self.timeout_s, headers=self.headers) as client:
                    response = await client.get(url, params={"tenant": tenant})
        except trio.TooSlowError:
            raise ContextUnavailable(f"the CRM did not answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise ContextUnavailable(f"the CRM could not be reached: {type(exc).__name__}") from None
        if response.status_code != 200:
            raise ContextUnavailable(f"the CRM answered {response.status_code}")
        if len(response.content) > MAX_ANSWER_BYTES:
            raise ContextUnavailable("the CRM's answer is too large")
        try:
            data = response.json()
        except ValueError:
            raise ContextUnavailable("the CRM's answer is not JSON") from None
        if type(data) is not dict:
            raise ContextUnavailable("the CRM's answer is not a JSON object")
        answer = {
            "profile": data.get("profile") if type(data.get("profile")) is dict else {},
            "orders": data.get("orders") if type(data.get("orders")) is list else [],
            "viewed": data.get("viewed") if type(data.get("viewed")) is list else [],
        }
        if len(self._cache) >= MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (time.monotonic() + self.ttl_s, answer)
        return answer
