"""API keys: how one is made, shown once, stored as a hash and checked.

A key reads ``kefu_<id>_<secret>``: the id (16 hex digits) finds the stored record, the secret
(43 URL-safe characters, 256 random bits) proves possession. Only SHA-256 of the secret is stored:
with that much entropy a fast hash is as safe as a slow one, and checking a key costs one store
read and one hash, however often a backend calls.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from ..model import API_SCOPES, ApiKey

PREFIX = "kefu_"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(tenant: str, name: str, scopes: tuple[str, ...]) -> tuple[ApiKey, str]:
    """A new key record and the full key to show once (it cannot be recovered later)."""
    unknown = set(scopes) - set(API_SCOPES)
    if unknown or not scopes:
        raise ValueError(f"scopes must be a non-empty list of {', '.join(API_SCOPES)}")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    ordered = tuple(s for s in API_SCOPES if s in scopes)
    record = ApiKey(key_id, tenant, name, ordered, digest(secret), int(time.time() * 1000))
    return record, f"{PREFIX}{key_id}_{secret}"


def parse(presented: str) -> tuple[str, str] | None:
    """(id, secret) of a presented key, or None when it does not have the shape of one."""
    if not presented.startswith(PREFIX):
        return None
    key_id, sep, secret = presented[len(PREFIX):].partition("_")
    if not sep or len(key_id) != 16 or not secret or len(secret) > 128:
        return None
    return key_id, secret


def matches(record: ApiKey | None, secret: str) -> bool:
    """Whether ``secret`` is the secret of ``record`` and the key is not revoked (constant time)."""
    if record is None:
        hmac.compare_digest(digest(secret), "0" * 64)  # the same work for an unknown id
        return False
    return hmac.compare_digest(digest(secret), record.secret_hash) and not record.revoked_at


def allows(record: ApiKey, scopes: frozenset[str]) -> bool:
    """``admin`` may do everything; otherwise the key needs one of ``scopes``."""
    return "admin" in record.scopes or bool(scopes.intersection(record.scopes))
