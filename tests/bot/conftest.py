from __future__ import annotations

import pytest

from gateway.bot import BotSession, FaqBot, load_default_bot

T0 = 1_795_600_000.0  # a fixed "now" in epoch seconds: the bot never reads a clock
ALICE = {"tenant": "shop1", "user": "alice", "channel": "app", "name": "王女士"}


@pytest.fixture(scope="session")
def shop_bot() -> FaqBot:
    """The bot of the shipped knowledge base, fitted once for the whole run."""
    return load_default_bot()


@pytest.fixture
def session(shop_bot) -> BotSession:
    return shop_bot.start(ALICE, now=T0)
