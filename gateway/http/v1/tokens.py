"""``/v1/tokens``: a shop's backend mints a client token for its logged-in shopper or agent."""

from __future__ import annotations

from typing import Literal

import jwt

from pydantic import BaseModel, Field

from ...protocol.errors import AuthError
from ..operations import Body, Call, Operation
from ..problems import Problem

#: Roles a key with ``ingest`` (not ``admin``) may mint: the shop's customers and its bots.
INGEST_ROLES = ("shopper", "bot")


class TokenRequest(Body):
    user: str = Field(min_length=1, max_length=128, description="The user id, as the shop knows it.")
    role: Literal["shopper", "agent", "supervisor", "bot"]
    channel: Literal["app", "miniprogram", "web"] = "web"
    name: str | None = Field(default=None, max_length=100, description="Display name shown to other participants.")
    customer: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[^:]+$", description="The shop's customer id (shoppers): the token's identity is linked to that customer (docs/workspace.md).")
    ttl_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600, description="Seconds until the token expires.")


class TokenOut(BaseModel):
    token: str = Field(description="Pass it at the WebSocket handshake (`?token=` or `Authorization: Bearer`) or in `auth`.")
    expires_at: int = Field(description="Seconds since the epoch.")
    tenant: str
    user: str
    role: str
    channel: str
    customer: str | None = None


async def mint_token(call: Call) -> tuple[int, dict]:
    body = call.body
    if body.role not in INGEST_ROLES and "admin" not in call.key.scopes:
        raise Problem("forbidden", f"tokens of role {body.role} need an admin key; an ingest key mints {', '.join(INGEST_ROLES)} tokens")
    if body.customer is not None and body.role != "shopper":
        raise Problem("bad_request", "field `customer`: only shoppers' tokens name a customer", status=422)
    try:
        token = call.services.auth.mint(tenant=call.tenant, user=body.user, role=body.role, channel=body.channel, ttl_s=body.ttl_s, name=body.name, customer=body.customer)
    except AuthError as exc:
        raise Problem("forbidden", exc.message) from None
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    return 201, {"token": token, "expires_at": expires_at, "tenant": call.tenant, "user": body.user, "role": body.role, "channel": body.channel, "customer": body.customer}


OPERATIONS = (
    Operation("POST", "/v1/tokens", mint_token, "Mint a client token for a user of this tenant.", frozenset({"ingest"}), body=TokenRequest, response=TokenOut, status=201, backend_only=True),
)
