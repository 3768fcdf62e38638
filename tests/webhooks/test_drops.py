"""What the sender does when it cannot read a tenant's webhooks (the store away): each event is
dropped and counted, one log line says so, and nothing stays held."""

from __future__ import annotations

import logging

import trio

from gateway.hub import ConvState
from gateway.model import OPEN, Conversation
from gateway.store import StoreError
from gateway.webhooks import Webhooks


class StoreAway:
    """A store whose reads fail, as a PostgreSQL that is down answers."""

    async def records(self, tenant: str, kind: str, **kwargs: object) -> list:
        raise StoreError("PostgreSQL is unavailable")


async def test_events_of_a_tenant_whose_webhooks_cannot_be_read_are_dropped_with_one_log_line(nursery, caplog):
    webhooks = Webhooks(StoreAway())
    await nursery.start(webhooks.run)
    state = ConvState(Conversation("c1", "shop1", "s1", "app", OPEN, 1), [])
    with caplog.at_level(logging.WARNING, logger="kefu.webhooks"):
        for _ in range(5):
            webhooks.on_opened(state)
        with trio.fail_after(5):
            while webhooks.stats.deliveries["dropped"] < 5:
                await trio.sleep(0.01)
    assert webhooks.stats.pending == 0 and webhooks.stats.pending_bytes == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "kefu.webhooks" and "dropped" in r.getMessage()]
    assert len(lines) == 1 and "could not be read (PostgreSQL is unavailable)" in lines[0], lines
    # (the deliveries a last shutdown saved could not be read at the start either: said once, apart)
    assert [r.getMessage() for r in caplog.records if "saved at the last shutdown" in r.getMessage()] == [
        "webhook deliveries saved at the last shutdown could not be read: PostgreSQL is unavailable"]
