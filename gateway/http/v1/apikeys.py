"""``/v1/apikeys``: a tenant's API keys, created (the secret shown once), listed and revoked."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, Field

from ...model import ApiKey, CreateApiKey, RevokeApiKey
from ...store import NotFound
from .. import keys
from ..operations import Body, Call, Operation
from ..problems import Problem

Scope = Literal["admin", "ingest", "bot", "read"]


class KeyCreate(Body):
    name: str = Field(min_length=1, max_length=100, description="What the key is for (shown in lists).")
    scopes: list[Scope] = Field(min_length=1, description="Any of admin, ingest, bot, read.")


class KeyOut(BaseModel):
    id: str
    name: str
    scopes: list[Scope]
    created_at: int = Field(description="Milliseconds since the epoch.")
    revoked_at: int | None = Field(description="When it was revoked; null while valid.")


class KeyCreated(KeyOut):
    key: str = Field(description="The whole key, shown this once: send it as `Authorization: Bearer <key>`.")


def key_map(key: ApiKey) -> dict:
    return {"id": key.id, "name": key.name, "scopes": list(key.scopes), "created_at": key.created_at, "revoked_at": key.revoked_at or None}


async def create_api_key(call: Call) -> tuple[int, dict]:
    record, secret = keys.new_key(call.tenant, call.body.name, tuple(call.body.scopes))
    record = await call.services.store.execute(CreateApiKey(record))
    return 201, {**key_map(record), "key": secret}


async def list_api_keys(call: Call) -> tuple[int, dict]:
    return 200, {"keys": [key_map(k) for k in await call.services.store.api_keys(call.tenant)]}


async def revoke_api_key(call: Call) -> tuple[int, dict]:
    try:
        record = await call.services.store.execute(RevokeApiKey(call.tenant, call.path["key_id"], int(time.time() * 1000)))
    except NotFound:
        raise Problem("not_found", "no such API key in this tenant") from None
    return 200, key_map(record)


class KeyList(BaseModel):
    keys: list[KeyOut]


OPERATIONS = (
    Operation("POST", "/v1/apikeys", create_api_key, "Create an API key of this tenant; the response shows its secret, once.", frozenset(), body=KeyCreate, response=KeyCreated, status=201, backend_only=True),
    Operation("GET", "/v1/apikeys", list_api_keys, "List this tenant's API keys (never their secrets).", frozenset(), response=KeyList, backend_only=True),
    Operation("DELETE", "/v1/apikeys/{key_id}", revoke_api_key, "Revoke an API key; it is refused from then on.", frozenset(), response=KeyOut, errors=(404,), backend_only=True),
)
