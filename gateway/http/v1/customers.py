"""``/v1/customers`` and ``/v1/merges``: one customer across channels, their one history and
context; merges, visible and undoable (admin). The rules are gateway/customers/identity.py's."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ...customers.privacy import PersonalData
from ...protocol import envelope as env
from ..operations import Body, Call, Operation
from ..problems import Problem

CUSTOMER_ID = r"^[^:]{1,128}$"


class CustomerOut(BaseModel):
    id: str
    links: list[str] = Field(description="Linked identities, `channel:user` (app:u1, miniprogram:o-7f, web:v-3a).")
    absorbed: list[str] = Field(description="Customers merged into this one (their history is this one's).")
    merged_into: str = Field(description="Set when this customer was merged into another.")
    created_at: int


class LinkIn(Body):
    channel: Literal["app", "miniprogram", "web"]
    user: str = Field(min_length=1, max_length=128, description="The user id the channel's tokens carry (`sub`).")


class Merge(BaseModel):
    id: str
    into: str
    from_: str = Field(alias="from")
    links: list[str]
    by: str
    at: int
    undone_at: int
    undone_by: str


class MergeList(BaseModel):
    merges: list[Merge]


class History(BaseModel):
    customer: CustomerOut
    conversations: list[dict[str, Any]] = Field(description="Conversations of every linked channel, newest first.")


def _workspace(call: Call) -> Any:
    return call.services.node.workspace


async def _customer(call: Call) -> dict[str, Any]:
    customer_id = call.path["customer_id"]
    customer = await _workspace(call).directory.get(call.tenant, customer_id)
    if customer is None:
        raise Problem("not_found", f"no customer {customer_id!r}")
    return customer


async def get_customer(call: Call) -> tuple[int, dict]:
    return 200, await _customer(call)


async def link_identity(call: Call) -> tuple[int, dict]:
    customer_id = call.path["customer_id"]
    if ":" in customer_id or not 0 < len(customer_id) <= 128:
        raise Problem("bad_request", "a customer id has 1..128 characters and no `:`", status=422)
    customer = await _workspace(call).directory.link(call.tenant, customer_id, call.body.channel, call.body.user, by="api")
    return 200, customer


async def customer_history(call: Call) -> tuple[int, dict]:
    customer = await _customer(call)
    convs = await _workspace(call).directory.conversations(call.tenant, customer)
    return 200, {"customer": customer, "conversations": [env.conversation_map(c) for c in convs]}


async def customer_context(call: Call) -> tuple[int, dict]:
    customer = await _customer(call)
    return 200, {"customer": customer["id"], **await _workspace(call).customer_context(call.tenant, customer)}


async def customer_merges(call: Call) -> tuple[int, dict]:
    customer = await _customer(call)
    return 200, {"merges": await _workspace(call).directory.merges(call.tenant, customer["id"])}


async def list_merges(call: Call) -> tuple[int, dict]:
    return 200, {"merges": await _workspace(call).directory.merges(call.tenant)}


async def undo_merge(call: Call) -> tuple[int, dict]:
    merge = await _workspace(call).directory.undo_merge(call.tenant, call.path["merge_id"], by=f"apikey:{call.key.id}")
    return 200, merge


class EraseIn(Body):
    confirm: str = Field(description="The customer's id again: erasing is irreversible.")


class Erased(BaseModel):
    customer: str
    erased: dict[str, int] = Field(description="What was erased, by kind: conversations, messages, attachments, notes, comments, summaries, profile, orders, views (all 0 when done already).")


def _personal_data(call: Call) -> PersonalData:
    return PersonalData(_workspace(call), call.services.node.media)


async def export_customer(call: Call) -> tuple[int, dict]:
    customer = await _customer(call)
    return 200, await _personal_data(call).export(call.tenant, customer)


async def erase_customer(call: Call) -> tuple[int, dict]:
    if call.body.confirm != call.path["customer_id"]:
        raise Problem("bad_request", "field `confirm` must repeat the customer's id: erasing is irreversible", status=422,
                      errors=[{"field": "confirm", "message": "must equal the customer id in the path"}])
    customer = await _customer(call)
    erased = await _personal_data(call).erase(call.tenant, customer, by=f"apikey:{call.key.id}")
    return 200, {"customer": customer["id"], "erased": erased}


READ = frozenset({"read"})
OPERATIONS = (
    Operation("GET", "/v1/customers/{customer_id}", get_customer, "One customer with their linked channel identities.", READ, response=CustomerOut, errors=(404,)),
    Operation("POST", "/v1/customers/{customer_id}/links", link_identity, "Link a channel identity to the customer (created if new); the identity's former customer is merged in, recorded.", frozenset({"ingest"}), body=LinkIn, response=CustomerOut),
    Operation("GET", "/v1/customers/{customer_id}/conversations", customer_history, "The customer's one history: conversations of every linked channel, newest first.", READ, response=History, errors=(404,)),
    Operation("GET", "/v1/customers/{customer_id}/context", customer_context, "The customer context an agent sees (profile, orders, viewed products, past conversations), or `unavailable`.", READ, errors=(404,)),
    Operation("GET", "/v1/customers/{customer_id}/merges", customer_merges, "The merges the customer took part in, oldest first.", READ, response=MergeList, errors=(404,)),
    Operation("GET", "/v1/customers/{customer_id}/export", export_customer, "Everything kept about the customer (profile, identities, orders, browsing, merges, every conversation with its messages and attachments' metadata): the right of access.", frozenset(), errors=(404,), backend_only=True),
    Operation("POST", "/v1/customers/{customer_id}/erase", erase_customer, "Erase the customer's personal information (bodies, attachments, notes, comments, profile, orders, browsing), irreversibly and idempotently: the right of deletion.", frozenset(), body=EraseIn, response=Erased, errors=(404,), backend_only=True),
    Operation("GET", "/v1/merges", list_merges, "Every merge of this tenant, oldest first.", READ, response=MergeList),
    Operation("POST", "/v1/merges/{merge_id}/undo", undo_merge, "Undo a merge: the merged customer gets its identities back.", frozenset(), response=Merge, errors=(404, 409)),
)
