"""``/v1/agents``: a tenant's agents, persisted, and the defaults routing uses for them.

An agent's profile (display name, skill groups, languages, maximum concurrent conversations,
disabled) is stored; routing takes it as the agent's settings, so they no longer come only from
``status`` requests. Presence (online, away, offline) stays the agent's own, set over the WebSocket;
the API reports it.
"""

from __future__ import annotations

import time
from dataclasses import replace

from pydantic import BaseModel, Field

from ...conversations.service import system
from ...model import AgentProfile, SaveAgent
from ...store import Conflict, NotFound
from ..operations import SUPERVISOR, Body, Call, Operation
from ..problems import Problem

Name = Field(default=None, max_length=100, description="Display name shown to shoppers.")
Groups = Field(default=None, min_length=1, max_length=50, description="Skill groups of this tenant's routing settings.")
Languages = Field(default=None, max_length=20, description="Languages the agent serves, e.g. zh, en.")
MaxActive = Field(default=None, ge=0, le=1000, description="Conversations the agent serves at once.")


class AgentCreate(Body):
    user: str = Field(min_length=1, max_length=128, description="The agent's user id (the `sub` of their tokens).")
    name: str | None = Name
    groups: list[str] | None = Groups
    languages: list[str] | None = Languages
    max_active: int | None = MaxActive


class AgentUpdate(Body):
    name: str | None = Name
    groups: list[str] | None = Groups
    languages: list[str] | None = Languages
    max_active: int | None = MaxActive
    disabled: bool | None = Field(default=None, description="A disabled agent is never routed to.")


class Presence(BaseModel):
    status: str = Field(description="online, away or offline: as the agent set it over the WebSocket.")
    connections: int
    active: int = Field(description="Conversations assigned to the agent now.")


class AgentOut(BaseModel):
    user: str
    name: str
    groups: list[str]
    languages: list[str]
    max_active: int
    disabled: bool
    created_at: int
    updated_at: int
    presence: Presence


class AgentList(BaseModel):
    agents: list[AgentOut]


OFFLINE = {"status": "offline", "connections": 0, "active": 0}


async def presences(call: Call) -> dict[str, dict]:
    """The tenant's agents as routing sees them now: user -> status, connections, active. In a
    cluster only the routing leader knows: a node that does not lead asks it (``queues``)."""
    routing = call.services.routing
    if routing is None:
        return {}
    cluster = routing.cluster
    if cluster is not None and not cluster.leading:
        snapshot = await routing.request(system(call.tenant), "queues", {})
        return {a["user"]: {"status": a["status"], "connections": a["connections"], "active": len(a["active"])} for a in snapshot["agents"]}
    return {
        user: {"status": live.status, "connections": live.connections, "active": len(live.active)}
        for (tenant, user), live in routing.engine.agents.items()
        if tenant == call.tenant
    }


def agent_map(a: AgentProfile, live: dict[str, dict]) -> dict:
    return {
        "user": a.user, "name": a.name, "groups": list(a.groups), "languages": list(a.languages), "max_active": a.max_active,
        "disabled": a.disabled, "created_at": a.created_at, "updated_at": a.updated_at, "presence": live.get(a.user, OFFLINE),
    }


async def _check_groups(call: Call, groups: list[str] | None) -> None:
    if groups is None:
        return
    known = {g.name for g in (await call.services.routing_settings(call.tenant)).groups}
    unknown = sorted(set(groups) - known)
    if unknown:
        raise Problem("bad_request", f"field `groups`: unknown skill groups {unknown}; this tenant has {sorted(known)}",
                      status=422, errors=[{"field": "groups", "message": f"unknown skill groups {unknown}"}])


async def _saved(call: Call, profile: AgentProfile, create: bool) -> AgentProfile:
    profile = await call.services.store.execute(SaveAgent(profile, create=create))
    if call.services.routing is not None:
        call.services.routing.apply_agent(profile)
    return profile


async def create_agent(call: Call) -> tuple[int, dict]:
    body = call.body
    await _check_groups(call, body.groups)
    now = int(time.time() * 1000)
    profile = AgentProfile(call.tenant, body.user, created_at=now, updated_at=now,
                           max_active=(await call.services.routing_settings(call.tenant)).default_max_active)
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in body.model_dump(exclude={"user"}, exclude_none=True).items()}
    try:
        profile = await _saved(call, replace(profile, **changes), create=True)
    except Conflict:
        raise Problem("conflict", f"agent {body.user!r} exists: update it with PATCH /v1/agents/{{user}}") from None
    return 201, agent_map(profile, await presences(call))


async def _find(call: Call) -> AgentProfile:
    user = call.path["user"]
    for profile in await call.services.store.agents(call.tenant):
        if profile.user == user:
            return profile
    raise Problem("not_found", f"no agent {user!r} in this tenant")


async def get_agent(call: Call) -> tuple[int, dict]:
    return 200, agent_map(await _find(call), await presences(call))


async def update_agent(call: Call) -> tuple[int, dict]:
    await _check_groups(call, call.body.groups)
    profile = await _find(call)
    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in call.body.model_dump(exclude_none=True).items()}
    try:
        profile = await _saved(call, replace(profile, **changes, updated_at=int(time.time() * 1000)), create=False)
    except NotFound:
        raise Problem("not_found", f"no agent {profile.user!r} in this tenant") from None
    return 200, agent_map(profile, await presences(call))


async def list_agents(call: Call) -> tuple[int, dict]:
    live = await presences(call)
    return 200, {"agents": [agent_map(a, live) for a in await call.services.store.agents(call.tenant)]}


OPERATIONS = (
    Operation("POST", "/v1/agents", create_agent, "Create an agent of this tenant.", frozenset(), body=AgentCreate, response=AgentOut, status=201, errors=(409,), token_roles=SUPERVISOR),
    Operation("GET", "/v1/agents", list_agents, "List this tenant's agents with their presence.", frozenset({"read"}), response=AgentList, token_roles=SUPERVISOR),
    Operation("GET", "/v1/agents/{user}", get_agent, "One agent.", frozenset({"read"}), response=AgentOut, errors=(404,), token_roles=SUPERVISOR),
    Operation("PATCH", "/v1/agents/{user}", update_agent, "Change an agent's settings, or disable (and re-enable) them.", frozenset(), body=AgentUpdate, response=AgentOut, errors=(404,), token_roles=SUPERVISOR),
)
