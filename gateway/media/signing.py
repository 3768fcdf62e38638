"""Short-lived signed download URLs, so a browser's ``<img>`` or ``<video>`` can fetch an
attachment without sending a token.

A signature is an HMAC-SHA256 over the attachment id, the variant (``original``, ``display``, ``thumbnail``)
and the expiry time, under a key only the gateway holds. Anyone holding the URL may fetch that one
variant until it expires; changing any part of it breaks the signature. Signatures are compared in
constant time, and checked before the expiry so that a forged expiry is reported as forged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Callable

from .errors import MediaError

VARIANTS = ("original", "thumbnail", "display")  # display: what a browser shows (downloads.plan_download)
_CONTEXT = b"kefu.v1 media url\n"


class UrlSigner:
    def __init__(self, key: bytes, *, ttl_s: int = 300, clock: Callable[[], float] = time.time) -> None:
        if len(key) < 16:
            raise ValueError("the signing key must be at least 16 bytes")
        self._key = key
        self.ttl_s = ttl_s
        self._clock = clock

    @classmethod
    def derived_from(cls, secret: str, **kwargs: object) -> UrlSigner:
        """A signer whose key is derived from the gateway's token secret: every node that shares
        the secret accepts the others' URLs, and the key is not the token secret itself."""
        key = hmac.new(secret.encode(), b"kefu media url key", hashlib.sha256).digest()
        return cls(key, **kwargs)  # type: ignore[arg-type]

    def _mac(self, attachment_id: str, variant: str, expires: int) -> str:
        message = _CONTEXT + f"{attachment_id}\n{variant}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, attachment_id: str, variant: str) -> tuple[int, str]:
        """The expiry (seconds since the epoch) and signature of a URL for one variant."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}")
        expires = int(self._clock()) + self.ttl_s
        return expires, self._mac(attachment_id, variant, expires)

    def query(self, attachment_id: str, variant: str) -> str:
        expires, sig = self.sign(attachment_id, variant)
        return f"variant={variant}&expires={expires}&sig={sig}"

    def verify(self, attachment_id: str, variant: str, expires: str, sig: str) -> None:
        """Raise MediaError (bad_signature, url_expired) unless the URL's parts are as signed."""
        if variant not in VARIANTS or not expires.isdigit() or len(expires) > 12:
            raise MediaError("bad_signature", "the signed URL is malformed")
        expected = self._mac(attachment_id, variant, int(expires))
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
            raise MediaError("bad_signature", "the URL's signature does not match")
        if int(expires) < self._clock():
            raise MediaError("url_expired", "the signed URL has expired")
