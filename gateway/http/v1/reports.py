"""``/v1/reports/summary``: this tenant's customer service over a period (hot topics, response
times, workload, satisfaction), computed from the stored conversations (gateway.reports)."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from ... import reports
from ..operations import SUPERVISOR, Call, Operation, Query
from ..problems import Problem

WEEK_MS = 7 * 24 * 3600 * 1000


class ReportQuery(Query):
    since: int | None = Field(default=None, ge=0, description="Conversations created at or after (ms since the epoch; default: a week before `until`).")
    until: int | None = Field(default=None, ge=0, description="Conversations created before (ms since the epoch; default: now).")
    utc_offset_min: int | None = Field(default=None, ge=-840, le=840, description="The time zone of `days` (default: the business hours', else UTC).")


class Report(BaseModel):
    since: int
    until: int
    conversations: int = Field(description=f"Conversations created in the period (at most the newest {reports.MAX_CONVERSATIONS} are read).")
    truncated: bool = Field(description="More conversations were created in the period than were read.")
    topics: list[dict] = Field(description="[{intent, count}]: the bot's answers by intent, most asked first.")
    products: list[dict] = Field(description="[{product, conversations}]: the products shoppers asked about, by conversations.")
    tags: list[dict] = Field(description="[{tag, count}]: the conversations' tags, most used first.")
    bot: dict = Field(description="{conversations: the bot answered in, contained: of those, never queued for a person}.")
    handoffs: dict = Field(description="Reason of each queueing for a person -> count.")
    first_response_ms: dict = Field(description="{count, p50, p90}: from queued to the first agent message.")
    wait_ms: dict = Field(description="{count, p50, p90}: from queued to assigned.")
    agents: list[dict] = Field(description="[{agent, assigned, messages, resolved, first_response_ms, satisfaction {responses, average}, conversion}].")
    conversion: dict = Field(description="{served, converted, rate}: conversations agents served followed by the customer's order within a day.")
    satisfaction: dict = Field(description="{responses, average, by_score {1..5}}.")
    days: list[dict] = Field(description="[{day, conversations, to_person, contained, first_response_ms, satisfaction}] per day of the tenant's calendar.")
    utc_offset_min: int = Field(description="The time zone of `days`.")


async def get_summary(call: Call) -> tuple[int, dict]:
    until = call.query.until if call.query.until is not None else int(time.time() * 1000)
    since = call.query.since if call.query.since is not None else max(0, until - WEEK_MS)
    if since >= until:
        raise Problem("bad_request", "`since` must be before `until`", status=422)
    workspace = getattr(call.services.node, "workspace", None)
    offset = call.query.utc_offset_min
    if offset is None:
        hours = await workspace.hours(call.tenant) if workspace is not None else None
        offset = hours["utc_offset_min"] if hours else 0
    return 200, await reports.report(call.services.store, workspace, call.tenant, since=since, until=until, utc_offset_min=offset)


OPERATIONS = (
    Operation("GET", "/v1/reports/summary", get_summary, "This tenant's customer service over a period: topics, response times, workload, satisfaction.",
              frozenset({"read"}), query=ReportQuery, response=Report, token_roles=SUPERVISOR),
)
