"""JWT authentication: who is on a connection, checked once per connection with PyJWT.

Tokens are HS256 only. A tenant may have its own secret (so one tenant's key cannot mint tokens for
another); otherwise the gateway-wide secret signs. The tenant is read from the unverified claims only
to pick the key; nothing is trusted until the signature and the claims are verified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import sys
import time
from dataclasses import dataclass

import jwt

from .model import CHANNELS, ROLES, Principal
from .protocol.errors import AuthError

ALGORITHM = "HS256"
_REQUIRED = ["exp", "sub", "tenant", "role", "channel"]
VERIFIED_CACHE = 50_000


@dataclass(frozen=True, slots=True)
class Identity(Principal):
    """A verified token's holder: a principal until ``expires_at``."""

    expires_at: int = 0  # seconds since the epoch
    customer: str = ""  # claim `customer`: the shop's customer id this identity belongs to (gateway.customers)


class Authenticator:
    def __init__(
        self,
        secret: str,
        *,
        tenant_secrets: dict[str, str] | None = None,
        tenants: frozenset[str] | None = None,
        leeway_s: float = 5.0,
    ) -> None:
        """``tenants``: when given, the only tenants served; ``tenant_secrets`` are per-tenant keys
        (those tenants are served too). ``leeway_s`` tolerates small clock skew on ``exp``."""
        self._secret = secret
        self._tenant_secrets = dict(tenant_secrets or {})
        self._tenants = None if tenants is None else frozenset(tenants) | frozenset(self._tenant_secrets)
        self._leeway = leeway_s
        # Tokens whose signature and claims passed, until they expire: a reconnect storm re-presents
        # the same tokens, and each PyJWT verification costs far more than a dict lookup.
        self._verified: dict[bytes, Identity] = {}

    def verify(self, token: object) -> Identity:
        if type(token) is not str or not token:
            raise AuthError("token_missing", "no token given")
        key = hashlib.sha256(token.encode()).digest()  # 32 bytes kept, not the whole token
        cached = self._verified.get(key)
        if cached is not None:
            if cached.expires_at + self._leeway >= time.time():
                return cached  # a reconnecting client: its signature was checked already
            del self._verified[key]
        identity = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.pop(next(iter(self._verified)))  # the oldest entry
        self._verified[key] = identity
        return identity

    def serves(self, tenant: str) -> bool:
        """Whether tokens of ``tenant`` are accepted here."""
        return self._tenants is None or tenant in self._tenants

    def mint(self, *, tenant: str, user: str, role: str, channel: str, ttl_s: int, name: str | None = None, customer: str | None = None) -> str:
        """A token this gateway accepts, signed with the tenant's key (``POST /v1/tokens``)."""
        if not self.serves(tenant):
            raise AuthError("tenant_unknown", f"tenant {tenant!r} is not served here")
        return mint_token(self._tenant_secrets.get(tenant, self._secret), tenant=tenant, user=user, role=role, channel=channel, ttl_s=ttl_s, name=name, customer=customer)

    def _verify(self, token: str) -> Identity:
        header, unverified = _peek(token)
        if header.get("alg") != ALGORITHM:
            raise AuthError("token_algorithm", f"tokens must be signed with {ALGORITHM}, not {header.get('alg')!r}")
        tenant = unverified.get("tenant")
        if type(tenant) is not str or not tenant:
            raise AuthError("token_invalid", "claim `tenant` must be a non-empty string")
        if self._tenants is not None and tenant not in self._tenants:
            raise AuthError("tenant_unknown", f"tenant {tenant!r} is not served here")
        key = self._tenant_secrets.get(tenant, self._secret)
        try:
            claims = jwt.decode(
                token, key, algorithms=[ALGORITHM], leeway=self._leeway, options={"require": _REQUIRED}
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("token_invalid", f"token rejected: {exc}") from None
        return _identity(claims)


def _peek(token: str) -> tuple[dict, dict]:
    """Header and claims, unverified, to choose the key: stdlib decoding, so PyJWT's thorough (and
    slow) parse runs once, in the verification that follows."""
    try:
        head, body, _ = token.split(".")
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise AuthError("token_invalid", f"malformed token: {exc.__class__.__name__}") from None
    if type(header) is not dict or type(claims) is not dict:
        raise AuthError("token_invalid", "malformed token: header and claims must be JSON objects")
    return header, claims


def _identity(claims: dict) -> Identity:
    sub, role, channel = claims["sub"], claims["role"], claims["channel"]
    if type(sub) is not str or not sub or len(sub) > 128 or not sub.isprintable():
        raise AuthError("token_invalid", "claim `sub` must be a string of 1..128 printable characters")
    tenant = claims["tenant"]
    if type(tenant) is not str or not tenant or len(tenant) > 128 or not tenant.isprintable():
        raise AuthError("token_invalid", "claim `tenant` must be a string of 1..128 printable characters")
    if role not in ROLES:
        raise AuthError("token_invalid", f"claim `role` must be one of {', '.join(ROLES)}")
    if channel not in CHANNELS:
        raise AuthError("token_invalid", f"claim `channel` must be one of {', '.join(CHANNELS)}")
    name = claims.get("name", sub)
    customer = claims.get("customer", "")
    if type(customer) is not str or len(customer) > 128 or not customer.isprintable() or ":" in customer:
        raise AuthError("token_invalid", "claim `customer` must be a string of at most 128 printable characters without `:`")
    return Identity(  # shared strings for the few distinct values: memory per idle connection
        tenant=sys.intern(tenant),
        user=sub,
        role=ROLES[ROLES.index(role)],
        channel=CHANNELS[CHANNELS.index(channel)],
        name=name if type(name) is str else sub,
        expires_at=int(claims["exp"]),
        customer=customer,
    )


def mint_token(
    secret: str, *, tenant: str, user: str, role: str, channel: str, ttl_s: int = 3600, name: str | None = None, customer: str | None = None
) -> str:
    """A token for development and tests (production tokens come from the tenant's own backend)."""
    now = int(time.time())
    claims = {"sub": user, "tenant": tenant, "role": role, "channel": channel, "iat": now, "exp": now + ttl_s}
    if name:
        claims["name"] = name
    if customer:
        claims["customer"] = customer
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
