from __future__ import annotations

import json

import pytest

from ..http.conftest import client, new_key


@pytest.fixture
async def desk(start_gateway, tmp_path, store_kind):
    """A gateway with routing on (no bot: conversations queue at once), on each store kind, and an
    httpx client with an admin key of tenant shop1 (``desk.gateway`` is the running gateway)."""
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"default": {"bot": "none", "grace_s": 30.0}}))
    gateway = await start_gateway(routing="on", routing_file=str(path), store=store_kind)
    async with client(gateway, await new_key(gateway)) as http:
        http.gateway = gateway
        yield http


async def events(client, conv, *names):
    """The next lifecycle events of a conversation with these names, in order (others skipped)."""
    got = []
    for name in names:
        while True:
            body = (await client.next("msg", conv=conv, role="system"))["body"]
            if body.get("event") == name:
                got.append(body)
                break
    return got
