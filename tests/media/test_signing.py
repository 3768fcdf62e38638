"""Signed download URLs: they open one variant of one attachment until they expire."""

from __future__ import annotations

import pytest

from gateway.media.errors import MediaError
from gateway.media.signing import UrlSigner


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signer(clock: Clock, key: bytes = b"k" * 32) -> UrlSigner:
    return UrlSigner(key, ttl_s=60, clock=clock)


def refused(s: UrlSigner, *args: str) -> str:
    with pytest.raises(MediaError) as info:
        s.verify(*args)
    return info.value.code


def test_a_signed_url_verifies_until_it_expires() -> None:
    clock = Clock(1_000_000)
    s = signer(clock)
    expires, sig = s.sign("a1", "original")
    assert expires == 1_000_060
    s.verify("a1", "original", str(expires), sig)
    clock.now = 1_000_060
    s.verify("a1", "original", str(expires), sig)
    clock.now = 1_000_061
    assert refused(s, "a1", "original", str(expires), sig) == "url_expired"


def test_any_change_breaks_the_signature() -> None:
    s = signer(Clock(1_000_000))
    expires, sig = s.sign("a1", "thumbnail")
    e = str(expires)
    assert refused(s, "a2", "thumbnail", e, sig) == "bad_signature"  # another attachment
    assert refused(s, "a1", "original", e, sig) == "bad_signature"  # the full image with a thumbnail's URL
    assert refused(s, "a1", "thumbnail", str(expires + 3600), sig) == "bad_signature"  # a longer life
    assert refused(s, "a1", "thumbnail", e, sig[:-1] + ("A" if sig[-1] != "A" else "B")) == "bad_signature"
    assert refused(s, "a1", "thumbnail", e, "") == "bad_signature"
    assert refused(s, "a1", "thumbnail", e, "签名") == "bad_signature"
    assert refused(s, "a1", "thumbnail", "-5", sig) == "bad_signature"
    assert refused(s, "a1", "movie", e, sig) == "bad_signature"
    assert refused(signer(Clock(1_000_000), key=b"q" * 32), "a1", "thumbnail", e, sig) == "bad_signature"


def test_a_forged_expiry_is_reported_as_forged_even_when_past() -> None:
    clock = Clock(1_000_000)
    s = signer(clock)
    expires, sig = s.sign("a1", "original")
    clock.now = 2_000_000
    assert refused(s, "a1", "original", str(expires + 1), sig) == "bad_signature"


def test_keys_derived_from_one_secret_agree_and_differ_from_others() -> None:
    clock = Clock(1_000_000)
    one, two = UrlSigner.derived_from("secret-1", clock=clock), UrlSigner.derived_from("secret-1", clock=clock)
    expires, sig = one.sign("a1", "original")
    two.verify("a1", "original", str(expires), sig)
    assert refused(UrlSigner.derived_from("secret-2", clock=clock), "a1", "original", str(expires), sig) == "bad_signature"


def test_query_carries_variant_expiry_and_signature() -> None:
    s = signer(Clock(1_000_000))
    q = dict(part.split("=", 1) for part in s.query("a1", "thumbnail").split("&"))
    assert q["variant"] == "thumbnail" and q["expires"] == "1000060"
    s.verify("a1", q["variant"], q["expires"], q["sig"])


def test_short_keys_are_refused() -> None:
    with pytest.raises(ValueError):
        UrlSigner(b"short")
