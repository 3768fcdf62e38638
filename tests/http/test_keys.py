"""API key format, hashing and scope rules (gateway/http/keys.py), without a server."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.http import keys


def test_a_new_key_is_shown_whole_once_and_stored_as_a_hash():
    record, secret = keys.new_key("shop1", "crm", ("read", "admin"))
    key_id, raw = keys.parse(secret)
    assert key_id == record.id and len(key_id) == 16 and len(raw) >= 43
    assert record.secret_hash == keys.digest(raw) and raw not in repr(record)
    assert record.scopes == ("admin", "read")  # in the documented order
    assert keys.matches(record, raw)
    assert not keys.matches(record, raw[:-1] + ("A" if raw[-1] != "A" else "B"))
    assert not keys.matches(replace(record, revoked_at=1), raw)
    assert not keys.matches(None, raw)


@pytest.mark.parametrize("presented", ["", "kefu_", "kefu_abc_def", "sk_0123456789abcdef_x", "kefu_0123456789abcdef_", "kefu_0123456789abcdef_" + "x" * 200])
def test_what_is_not_shaped_like_a_key_does_not_parse(presented):
    assert keys.parse(presented) is None


@pytest.mark.parametrize("scopes", [(), ("root",), ("read", "write")])
def test_scopes_must_be_known_and_present(scopes):
    with pytest.raises(ValueError):
        keys.new_key("shop1", "x", scopes)


def test_admin_may_do_everything_other_scopes_what_they_name():
    admin, _ = keys.new_key("t", "a", ("admin",))
    reader, _ = keys.new_key("t", "r", ("read",))
    assert keys.allows(admin, frozenset()) and keys.allows(admin, frozenset({"bot"}))
    assert keys.allows(reader, frozenset({"read", "bot"})) and not keys.allows(reader, frozenset({"ingest"}))
    assert not keys.allows(reader, frozenset())  # admin-only
