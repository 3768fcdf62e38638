"""The agent's desk over REST: quick replies, private notes, a conversation's workspace
facts (product, tags, summary, satisfaction) and business hours. The tenant's backend acts as
the ``system`` principal; the rules are gateway/customers/workspace.py's."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ...conversations.service import system
from ...customers import replies as quick
from ..operations import SUPERVISOR, Body, Call, Operation, Query


class ReplyIn(Body):
    shortcut: str = Field(min_length=2, max_length=32, pattern=r"^/\S+$", description="What the agent types: `/ship`.")
    title: str = Field(default="", max_length=100)
    text: str = Field(min_length=1, max_length=2000, description="May hold {customer.name}, {order.id}, {product.title}, ….")
    attachments: list[dict[str, Any]] = Field(default_factory=list, max_length=10)
    owner: str = Field(default="*", min_length=1, max_length=128, description="`*`: the whole tenant; else the agent's user id.")


class Reply(BaseModel):
    shortcut: str
    title: str
    text: str
    attachments: list[dict[str, Any]]
    owner: str
    updated_at: int


class ReplyList(BaseModel):
    replies: list[Reply]


class ReplyQuery(Query):
    q: str = Field(default="", max_length=100, description="A shortcut prefix (`/sh`) or words of the title or text (中文 too).")
    owner: str = Field(default="*", min_length=1, max_length=128)


class ReplyKey(Query):
    shortcut: str = Field(min_length=2, max_length=32)
    owner: str = Field(default="*", min_length=1, max_length=128)


class NoteIn(Body):
    text: str = Field(min_length=1, max_length=2000)


class Note(BaseModel):
    id: str
    conv: str
    author: str
    role: str
    name: str
    text: str
    ts: int


class NoteList(BaseModel):
    notes: list[Note]


class SpanIn(Body):
    open: str = Field(pattern=r"^\d\d:\d\d$")
    close: str = Field(pattern=r"^\d\d:\d\d$")


class WindowIn(SpanIn):
    days: list[int] = Field(min_length=1, max_length=7, description="Weekdays, 0 = Monday.")


class HoursIn(Body):
    """One window on some weekdays (``days``, ``open``, ``close``), or several (``windows``: a lunch
    break, other weekend hours); ``dates`` replace a weekday's windows on a date (holidays: [])."""

    utc_offset_min: int = Field(default=0, ge=-840, le=840, description="The tenant's time zone (Beijing: 480).")
    days: list[int] = Field(default=[0, 1, 2, 3, 4], min_length=1, max_length=7, description="Working weekdays, 0 = Monday.")
    open: str = Field(default="09:00", pattern=r"^\d\d:\d\d$")
    close: str = Field(default="18:00", pattern=r"^\d\d:\d\d$")
    windows: list[WindowIn] | None = Field(default=None, min_length=1, max_length=20, description="Instead of days/open/close: several weekly windows.")
    dates: dict[str, list[SpanIn]] | None = Field(
        default=None, max_length=400, description="YYYY-MM-DD -> that date's windows, replacing its weekday's ([]: closed; a working weekend: its hours)."
    )


class Hours(BaseModel):
    hours: dict[str, Any] | None = Field(description="null: no business hours (agents are always expected).")
    open_now: bool
    back_at: int | None = Field(description="When agents are back (ms), outside hours.")


def _workspace(call: Call) -> Any:
    return call.services.node.workspace


async def list_replies(call: Call) -> tuple[int, dict]:
    prefix = "*/" if call.query.owner == "*" else f"@{call.query.owner}/"
    stored = [r for _, r in await _workspace(call).book.list(call.tenant, "reply", prefix=prefix)]
    return 200, {"replies": quick.search(stored, call.query.q)}


async def save_reply(call: Call) -> tuple[int, dict]:
    body = call.body.model_dump()
    owner = body.pop("owner")
    return 200, await _workspace(call).save_reply(system(call.tenant), body, owner=owner)


async def delete_reply(call: Call) -> tuple[int, dict]:
    await _workspace(call).delete_reply(system(call.tenant), call.query.shortcut, owner=call.query.owner)
    return 200, {}


async def list_notes(call: Call) -> tuple[int, dict]:
    return 200, {"notes": await _workspace(call).notes(system(call.tenant), call.path["conv_id"])}


async def add_note(call: Call) -> tuple[int, dict]:
    return 201, await _workspace(call).add_note(system(call.tenant), call.path["conv_id"], call.body.text)


async def conversation_facts(call: Call) -> tuple[int, dict]:
    workspace = _workspace(call)
    state = await call.services.conversations.access(system(call.tenant), call.path["conv_id"], "history")
    facts = await workspace.facts(call.tenant, state.conv.id)
    tags = await call.services.conversations.tags(system(call.tenant), state)
    return 200, {
        "conv": state.conv.id, "customer": facts.get("customer", ""), "product": facts.get("product", ""), "tags": list(tags),
        "summary": facts.get("summary", ""), "survey": facts.get("survey"), "satisfaction": facts.get("csat"),
    }


async def _hours_reply(call: Call) -> dict[str, Any]:
    workspace = _workspace(call)
    back = await workspace.back_at(call.tenant)
    return {"hours": await workspace.hours(call.tenant), "open_now": back is None, "back_at": None if back is None else int(back * 1000)}


async def get_hours(call: Call) -> tuple[int, dict]:
    return 200, await _hours_reply(call)


async def put_hours(call: Call) -> tuple[int, dict]:
    await _workspace(call).set_hours(call.tenant, call.body.model_dump(exclude_unset=True))
    return 200, await _hours_reply(call)


async def delete_hours(call: Call) -> tuple[int, dict]:
    await _workspace(call).set_hours(call.tenant, None)
    return 200, await _hours_reply(call)


READ = frozenset({"read"})
OPERATIONS = (
    Operation("GET", "/v1/quick-replies", list_replies, "Search quick replies (the tenant's, or one agent's) by shortcut prefix or by text.", READ, query=ReplyQuery, response=ReplyList),
    Operation("PUT", "/v1/quick-replies", save_reply, "Create or replace a quick reply of the tenant (`owner` *) or of one agent.", frozenset(), body=ReplyIn, response=Reply),
    Operation("DELETE", "/v1/quick-replies", delete_reply, "Delete a quick reply.", frozenset(), query=ReplyKey, errors=(404,)),
    Operation("GET", "/v1/conversations/{conv_id}/notes", list_notes, "The conversation's private notes (never shown to the shopper), oldest first.", READ, response=NoteList, errors=(404,)),
    Operation("POST", "/v1/conversations/{conv_id}/notes", add_note, "Add a private note as the system; the staff serving the conversation are told.", frozenset({"ingest"}), body=NoteIn, response=Note, status=201, errors=(404,)),
    Operation("GET", "/v1/conversations/{conv_id}/workspace", conversation_facts, "The conversation's customer, product, tags, summary, survey and satisfaction.", READ, errors=(404,)),
    Operation("GET", "/v1/business-hours", get_hours, "The tenant's business hours and whether agents are at work now.", READ, response=Hours, token_roles=SUPERVISOR),
    Operation("PUT", "/v1/business-hours", put_hours, "Set the tenant's business hours.", frozenset(), body=HoursIn, response=Hours, token_roles=SUPERVISOR),
    Operation("DELETE", "/v1/business-hours", delete_hours, "Remove the business hours (agents always expected).", frozenset(), response=Hours, token_roles=SUPERVISOR),
)
