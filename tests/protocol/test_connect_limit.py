"""The per-address limit on new connections, sans-IO: buckets, strikes, grouping, bounded memory."""

from __future__ import annotations

from gateway.protocol.connect_limit import MAX_STRIKES, STRIKE_FORGIVEN_AFTER_S, ConnectLimit, address_key, retry_after_s


def test_ipv6_addresses_are_grouped_by_their_64():
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff:eeee:dddd:cccc")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("fe80::1%eth0") == address_key("fe80::2")
    assert len(address_key("2001:db8::1")) == 8


def test_ipv4_addresses_stand_alone_also_when_mapped_into_ipv6():
    assert address_key("192.0.2.1") != address_key("192.0.2.2")
    assert address_key("::ffff:192.0.2.1") == address_key("192.0.2.1") == "192.0.2.1"


def test_one_address_spends_its_burst_then_its_rate():
    limit = ConnectLimit(rate=10.0, burst=3, max_addresses=100)
    assert [limit.admit("192.0.2.1", 0.0) for _ in range(3)] == [0.0] * 3
    wait = limit.admit("192.0.2.1", 0.0)
    assert abs(wait - 0.1) < 1e-9
    assert limit.admit("192.0.2.2", 0.0) == 0.0  # another address: its own bucket
    assert limit.admit("192.0.2.1", 0.1) == 0.0  # a token came back
    assert limit.admit("192.0.2.1", 0.1) > 0.0
    assert limit.admit("2001:db8::1", 0.0) == 0.0 and limit.admit("2001:db8::2", 0.0) == 0.0
    assert limit.admit("2001:db8::3", 0.0) == 0.0 and limit.admit("2001:db8::4", 0.0) > 0.0  # one /64, one bucket


def test_strikes_halve_the_bucket_and_are_forgiven_with_time():
    limit = ConnectLimit(rate=64.0, burst=64, max_addresses=100)
    for n in range(1, MAX_STRIKES + 3):
        assert limit.strike("192.0.2.1", 0.0) == min(n, MAX_STRIKES)
    admitted = 0
    while limit.admit("192.0.2.1", 0.0) == 0.0:
        admitted += 1
    assert admitted == 1  # 64 / 2**6
    wait = limit.admit("192.0.2.1", 0.0)
    assert abs(wait - 1.0) < 1e-9  # at 1/64 of the rate
    limit.admit("192.0.2.1", STRIKE_FORGIVEN_AFTER_S * 2 + 0.01)
    assert limit.strikes("192.0.2.1") == MAX_STRIKES - 2
    limit.admit("192.0.2.1", STRIKE_FORGIVEN_AFTER_S * 100)
    assert limit.strikes("192.0.2.1") == 0
    assert limit.strikes("192.0.2.9") == 0


def test_the_table_forgets_the_least_recently_seen():
    limit = ConnectLimit(rate=1.0, burst=1, max_addresses=2)
    limit.admit("192.0.2.1", 0.0)
    limit.strike("192.0.2.1", 0.0)
    limit.admit("192.0.2.2", 0.0)
    limit.admit("192.0.2.1", 0.0)  # seen again: now the most recent
    limit.admit("192.0.2.3", 0.0)
    assert list(limit.table) == ["192.0.2.1", "192.0.2.3"]
    assert limit.strikes("192.0.2.1") == 1
    for i in range(4, 1000):
        limit.admit(f"192.0.2.{i % 250}", 0.0)
        assert len(limit.table) <= 2
    assert "192.0.2.1" not in limit.table


def test_zero_rate_admits_all_and_remembers_nothing():
    limit = ConnectLimit(rate=0.0, burst=1, max_addresses=10)
    assert all(limit.admit("192.0.2.1", 0.0) == 0.0 for _ in range(100))
    assert limit.strike("192.0.2.1", 0.0) == 0
    assert not limit.table


def test_retry_after_is_whole_seconds_at_least_one():
    assert retry_after_s(0.01) == 1
    assert retry_after_s(1.2) == 2
