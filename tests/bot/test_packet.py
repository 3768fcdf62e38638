"""The context packet the agent receives on a handoff."""

from __future__ import annotations

import msgpack

from gateway.bot import FRUSTRATED

from .conftest import T0


def assert_plain(value, where="packet"):
    """Only str/int/float/list/dict, all the way down (no None, bool, tuple or dataclass)."""
    assert type(value) in (str, int, float, list, dict), f"{where}: {type(value).__name__}"
    if type(value) is dict:
        for key, item in value.items():
            assert type(key) is str, f"{where}: key {key!r}"
            assert_plain(item, f"{where}.{key}")
    elif type(value) is list:
        for i, item in enumerate(value):
            assert_plain(item, f"{where}[{i}]")


def test_packet_after_a_handoff(shop_bot, session):
    shop_bot.greeting(session)
    shop_bot.handle(session, "退货寄回去了，退款什么时候到账", T0 + 10)
    shop_bot.handle(session, "怎么还没退款！！！垃圾", T0 + 70)
    packet = shop_bot.context_packet(session)

    assert packet["customer"] == {"tenant": "shop1", "user": "alice", "channel": "app", "name": "王女士"}
    assert packet["language"] == "zh"
    assert [(t["role"], t["ts"]) for t in packet["transcript"]] == [
        ("bot", 1_795_600_000_000),
        ("shopper", 1_795_600_010_000),
        ("bot", 1_795_600_010_000),
        ("shopper", 1_795_600_070_000),
        ("bot", 1_795_600_070_000),
    ]
    assert packet["transcript"][3]["text"] == "怎么还没退款！！！垃圾"
    assert packet["transcript"][4]["text"] == shop_bot.kb.handoff.zh
    first, second = packet["intents"]
    assert first["turn"] == 1 and first["intent"] == "refund_status"
    assert len(first["matches"]) == 3 and first["matches"][0] == {"intent": "refund_status", "score": first["matches"][0]["score"]}
    assert second["turn"] == 3
    assert (packet["intent"], packet["category"]) == ("refund_status", "after_sales")
    assert packet["frustration"]["score"] >= 0.6
    assert {r["code"] for r in packet["frustration"]["reasons"]} >= {"negative_words", "punctuation"}
    assert packet["handoff"]["reason"] == FRUSTRATED and packet["handoff"]["ts"] == 1_795_600_070_000
    assert packet["handoff"]["detail"] == session.handoff.detail


def test_packet_is_plain_and_survives_msgpack(shop_bot, session):
    shop_bot.greeting(session)
    shop_bot.handle(session, "how long does shipping take", T0 + 1)
    shop_bot.handle(session, "agent please", T0 + 2)
    packet = shop_bot.context_packet(session)
    assert_plain(packet)
    assert msgpack.unpackb(msgpack.packb(packet), raw=False) == packet
    assert packet["language"] == "en"


def test_packet_before_any_handoff(shop_bot):
    # routing's `handoff` request asks for the packet of a session the bot did not hand off
    session = shop_bot.start({"tenant": "shop1", "user": "carol", "channel": "web", "name": ""})
    shop_bot.greeting(session)  # no time given: the entry has no ts
    shop_bot.handle(session, "发票怎么开", T0)
    packet = shop_bot.context_packet(session)
    assert "handoff" not in packet and "ts" not in packet["transcript"][0]
    assert packet["frustration"] == {"score": 0.0, "reasons": []}
    assert_plain(packet)
