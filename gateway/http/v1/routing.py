"""``/v1/routing``: this tenant's routing settings (what ``--routing-file`` sets), persisted.

A PUT replaces the tenant's settings whole (settings left out take their defaults), is stored, and
routing uses it at once; stored settings win over ``--routing-file`` after a restart too. The bot's
knowledge base is a path on the server and stays the file's to set.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Literal

from pydantic import BaseModel, Field

from ...model import SaveTenantSettings, TenantSettings
from ...routing.config import TenantRouting, parse_tenant
from ..operations import SUPERVISOR, Body, Call, Operation
from ..problems import Problem

Strategy = Literal["least_loaded", "round_robin", "sticky", "manual"]
MatchKey = Literal["channel", "language", "category", "intent"]


class GroupIn(Body):
    name: str = Field(min_length=1, max_length=64)
    match: dict[MatchKey, list[str]] = Field(default_factory=dict, description="Accepted values per fact; no rules: matches everything.")


class RoutingSettings(Body):
    """Every setting of ``TenantRouting`` but the knowledge base (docs/routing.md)."""

    strategy: Strategy = "least_loaded"
    fallback: Literal["least_loaded", "round_robin", "manual"] = "least_loaded"
    sticky_wait_s: float = Field(default=60.0, ge=0)
    groups: list[GroupIn] = Field(default_factory=lambda: [GroupIn(name="default")], min_length=1, max_length=100)
    default_max_active: int = Field(default=5, ge=0, le=1000)
    grace_s: float = Field(default=30.0, ge=0)
    reopen_window_s: float = Field(default=24 * 3600.0, ge=0)
    average_handle_s: float = Field(default=180.0, gt=0)
    bot: Literal["builtin", "external", "none"] = "builtin"
    bot_user: str = Field(default="kefu-bot", min_length=1, max_length=128)
    bot_name: str = Field(default="小客", max_length=100)

    model_config = {**Body.model_config, "json_schema_extra": {"description": "Per-tenant routing settings."}}


class RoutingOut(BaseModel):
    settings: dict = Field(description="The settings in force (RoutingSettings).")
    source: Literal["api", "file", "default"] = Field(description="Where they come from.")
    updated_at: int | None


def settings_map(routing: TenantRouting) -> dict:
    out = asdict(routing)
    out.pop("knowledge_base")
    out["groups"] = [{"name": g.name, "match": {k: list(v) for k, v in g.match.items()}} for g in routing.groups]
    return out


async def get_routing(call: Call) -> tuple[int, dict]:
    stored = await call.services.store.tenant_settings(call.tenant)
    source = "api" if stored else ("file" if call.services.routing_from_file(call.tenant) else "default")
    return 200, {"settings": settings_map(await call.services.routing_settings(call.tenant)), "source": source, "updated_at": stored[0].updated_at if stored else None}


async def put_routing(call: Call) -> tuple[int, dict]:
    raw = call.body.model_dump()
    groups = [g["name"] for g in raw["groups"]]
    if len(set(groups)) != len(groups):
        raise Problem("bad_request", "field `groups`: group names must be unique", status=422, errors=[{"field": "groups", "message": "group names must be unique"}])
    if raw["strategy"] == "sticky" and raw["fallback"] == "sticky":
        raise Problem("bad_request", "field `fallback` cannot be sticky", status=422)
    try:
        routing = parse_tenant(raw, "settings")
    except (ValueError, TypeError) as exc:
        raise Problem("bad_request", str(exc), status=422) from None
    stored = await call.services.store.execute(SaveTenantSettings(TenantSettings(call.tenant, json.dumps(raw, ensure_ascii=False), int(time.time() * 1000))))
    call.services.configure_routing(call.tenant, routing)
    return 200, {"settings": settings_map(await call.services.routing_settings(call.tenant)), "source": "api", "updated_at": stored.updated_at}


OPERATIONS = (
    Operation("GET", "/v1/routing", get_routing, "This tenant's routing settings in force.", frozenset({"read"}), response=RoutingOut, token_roles=SUPERVISOR),
    Operation("PUT", "/v1/routing", put_routing, "Replace this tenant's routing settings (stored; in force at once).", frozenset(), body=RoutingSettings, response=RoutingOut, token_roles=SUPERVISOR),
)
