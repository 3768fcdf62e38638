from __future__ import annotations

import httpx
import trio
import pytest

from gateway.app import Running
from gateway.http import keys
from gateway.model import CreateApiKey


async def new_key(running: Running, tenant: str = "shop1", scopes: tuple[str, ...] = ("admin",)) -> str:
    """Bootstrap a key as ``kefu apikey create`` does: straight into the store."""
    record, secret = keys.new_key(tenant, "test", scopes)
    await running.node.store.execute(CreateApiKey(record))
    return secret


def client(running: Running, key: str | None = None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=running.http_url, headers=headers, timeout=10)


@pytest.fixture
async def api(gateway):
    """An httpx client with an admin key of tenant shop1, against a served gateway (both stores)."""
    async with client(gateway, await new_key(gateway)) as http:
        http.gateway = gateway
        yield http


async def stop(running: Running) -> None:
    running.node.stop()
    with trio.fail_after(10):
        await running.node.stopped()


def problem(response: httpx.Response, status: int, code: str) -> dict:
    """The response's problem document, checked to be one with this status and code."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json", response.headers
    doc = response.json()
    assert doc["status"] == status and doc["code"] == code and doc["type"] == f"urn:kefu:error:{code}", doc
    return doc
