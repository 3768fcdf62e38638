"""``/v1/webhooks``: where a tenant's events are POSTed (docs/api.md#webhooks).

A webhook is a URL and the events it wants, changed with PATCH. Its signing secret is shown once,
at creation; to change it, create a new webhook and delete the old one. ``ping`` sends one signed test event at
once and says what the receiver answered, so a shop can check its endpoint while setting it up.
"""

from __future__ import annotations

import json
import secrets
import time

from pydantic import BaseModel, Field

from ...model import DeleteRecord, PutRecords, Record
from ...webhooks import EVENTS, RECORD_KIND, STATUS_KIND, Subscription, WebhookError, check_events, check_url, new_secret
from ..operations import Body, Call, Operation
from ..problems import Problem

MAX_WEBHOOKS = 20  # per tenant


class WebhookIn(Body):
    url: str = Field(min_length=1, max_length=2000, description="http:// or https:// URL the events are POSTed to.")
    events: list[str] = Field(min_length=1, max_length=len(EVENTS) + 1, description=f"Any of {', '.join(EVENTS)}; or `*` for all.")
    description: str = Field(default="", max_length=200)


class WebhookChange(Body):
    url: str | None = Field(default=None, min_length=1, max_length=2000)
    events: list[str] | None = Field(default=None, min_length=1, max_length=len(EVENTS) + 1)
    description: str | None = Field(default=None, max_length=200)


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    created_at: int = Field(description="Milliseconds since the epoch.")


class WebhookState(BaseModel):
    state: str = Field(description="`failing` once a delivery did not go through; `ok` again once one does.")
    since: int = Field(description="When it became so (ms since the epoch).")
    last_error: dict | None = Field(default=None, description="While failing: {at, event, reason, detail} of the attempt that made it so.")


class WebhookListed(WebhookOut):
    status: WebhookState | None = Field(description="How its deliveries go (null: none has failed yet).")


class WebhookCreated(WebhookOut):
    secret: str = Field(description="Signs every delivery (`kefu-signature`); shown this once.")


class WebhookList(BaseModel):
    webhooks: list[WebhookListed]


class PingOut(BaseModel):
    delivered: bool = Field(description="The receiver answered 2xx.")
    status: int | None = Field(description="The receiver's HTTP status (null: no answer).")
    reason: str | None = Field(description="Why it was not delivered: timeout, unreachable, status_3xx, status_4xx, status_5xx, private_address, unresolvable.")
    detail: str


def webhook_map(key: str, doc: dict) -> dict:
    return {"id": key, "url": doc["url"], "events": doc["events"], "description": doc.get("description", ""), "created_at": doc["created_at"]}


def sender(call: Call):
    webhooks = call.services.node.webhooks
    if webhooks is None:
        raise Problem("unavailable", "webhooks are not running on this gateway")
    return webhooks


async def create_webhook(call: Call) -> tuple[int, dict]:
    webhooks = sender(call)
    try:
        url = check_url(call.body.url, allow_private=webhooks.allow_private)
        events = check_events(call.body.events)
    except WebhookError as exc:
        raise Problem("bad_request", str(exc), status=422) from None
    if len(await call.services.store.records(call.tenant, RECORD_KIND)) >= MAX_WEBHOOKS:
        raise Problem("conflict", f"a tenant has at most {MAX_WEBHOOKS} webhooks; delete one first", status=409)
    key = "wh_" + secrets.token_hex(8)
    doc = {"url": url, "events": list(events), "description": call.body.description, "created_at": int(time.time() * 1000), "secret": new_secret()}
    await call.services.store.execute(PutRecords((Record(call.tenant, RECORD_KIND, key, json.dumps(doc, ensure_ascii=False), doc["created_at"]),)))
    webhooks.forget(call.tenant)
    return 201, {**webhook_map(key, doc), "secret": doc["secret"]}


async def list_webhooks(call: Call) -> tuple[int, dict]:
    records = await call.services.store.records(call.tenant, RECORD_KIND)
    states = {r.key: json.loads(r.value) for r in await call.services.store.records(call.tenant, STATUS_KIND)}
    return 200, {"webhooks": [webhook_map(r.key, json.loads(r.value)) | {"status": states.get(r.key)} for r in records]}


async def change_webhook(call: Call) -> tuple[int, dict]:
    """Change a webhook's URL, events or description; its secret and id stay."""
    webhooks = sender(call)
    record = await call.services.store.record(call.tenant, RECORD_KIND, call.path["webhook_id"])
    if record is None:
        raise Problem("not_found", "no such webhook in this tenant")
    doc = json.loads(record.value)
    body = call.body
    try:
        if body.url is not None:
            doc["url"] = check_url(body.url, allow_private=webhooks.allow_private)
        if body.events is not None:
            doc["events"] = list(check_events(body.events))
    except WebhookError as exc:
        raise Problem("bad_request", str(exc), status=422) from None
    if body.description is not None:
        doc["description"] = body.description
    await call.services.store.execute(PutRecords((Record(call.tenant, RECORD_KIND, record.key, json.dumps(doc, ensure_ascii=False), int(time.time() * 1000)),)))
    webhooks.forget(call.tenant)
    return 200, webhook_map(record.key, doc)


async def delete_webhook(call: Call) -> tuple[int, None]:
    if not await call.services.store.execute(DeleteRecord(call.tenant, RECORD_KIND, call.path["webhook_id"])):
        raise Problem("not_found", "no such webhook in this tenant")
    await call.services.store.execute(DeleteRecord(call.tenant, STATUS_KIND, call.path["webhook_id"]))
    sender(call).forget(call.tenant)
    return 204, None


async def ping_webhook(call: Call) -> tuple[int, dict]:
    webhooks = sender(call)
    record = await call.services.store.record(call.tenant, RECORD_KIND, call.path["webhook_id"])
    if record is None:
        raise Problem("not_found", "no such webhook in this tenant")
    outcome = await webhooks.attempt(webhooks.ping(call.tenant, Subscription.from_record(record.key, record.value)))
    return 200, {"delivered": outcome.delivered, "status": outcome.status, "reason": outcome.reason, "detail": outcome.detail}


OPERATIONS = (
    Operation("POST", "/v1/webhooks", create_webhook, "Subscribe a URL to this tenant's events; the response shows its signing secret, once.", frozenset(),
              body=WebhookIn, response=WebhookCreated, status=201, errors=(409,), backend_only=True),
    Operation("GET", "/v1/webhooks", list_webhooks, "List this tenant's webhooks (never their secrets), each with how its deliveries go.", frozenset(), response=WebhookList, backend_only=True),
    Operation("PATCH", "/v1/webhooks/{webhook_id}", change_webhook, "Change a webhook's URL, events or description (its secret stays).", frozenset(),
              body=WebhookChange, response=WebhookOut, errors=(404,), backend_only=True),
    Operation("DELETE", "/v1/webhooks/{webhook_id}", delete_webhook, "Delete a webhook: no more events are sent to it.", frozenset(), status=204, errors=(404,), backend_only=True),
    Operation("POST", "/v1/webhooks/{webhook_id}/ping", ping_webhook, "Send one signed `ping` event to the webhook now and say what its receiver answered.",
              frozenset(), response=PingOut, errors=(404,), backend_only=True),
)
