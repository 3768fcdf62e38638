"""JWT authentication: who is on a connection, checked once per connection with PyJWT.

Tokens are HS256 only. A tenant may have its own secret (so one tenant's key cannot mint tokens for
another); otherwise the gateway-wide secret signs. The tenant is read from the unverified claims only
to pick the key; nothing is trusted until the signature and the claims are verified.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from .model import CHANNELS, ROLES
from .protocol.errors import AuthError

ALGORITHM = "HS256"
_REQUIRED = ["exp", "sub", "tenant", "role", "channel"]


@dataclass(frozen=True, slots=True)
class Identity:
    tenant: str
    user: str
    role: str
    channel: str
    name: str
    expires_at: int  # seconds since the epoch


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

    def verify(self, token: object) -> Identity:
        if type(token) is not str or not token:
            raise AuthError("token_missing", "no token given")
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError as exc:
            raise AuthError("token_invalid", f"malformed token: {exc}") from None
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


def _identity(claims: dict) -> Identity:
    sub, role, channel = claims["sub"], claims["role"], claims["channel"]
    if type(sub) is not str or not sub or len(sub) > 128:
        raise AuthError("token_invalid", "claim `sub` must be a string of 1..128 characters")
    if role not in ROLES:
        raise AuthError("token_invalid", f"claim `role` must be one of {', '.join(ROLES)}")
    if channel not in CHANNELS:
        raise AuthError("token_invalid", f"claim `channel` must be one of {', '.join(CHANNELS)}")
    name = claims.get("name", sub)
    return Identity(
        tenant=claims["tenant"],
        user=sub,
        role=role,
        channel=channel,
        name=name if type(name) is str else sub,
        expires_at=int(claims["exp"]),
    )


def mint_token(
    secret: str, *, tenant: str, user: str, role: str, channel: str, ttl_s: int = 3600, name: str | None = None
) -> str:
    """A token for development and tests (production tokens come from the tenant's own backend)."""
    now = int(time.time())
    claims = {"sub": user, "tenant": tenant, "role": role, "channel": channel, "iat": now, "exp": now + ttl_s}
    if name:
        claims["name"] = name
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
