"""``/v1/conversations``: a tenant's backend lists and reads conversations, tags them, posts
into them as the system or as a bot, and resolves or transfers them.

Every call goes through the conversation service (gateway/conversations/service.py) as the
tenant's ``system`` principal, or as the named bot, so the authorization table decides it and a
posted message takes the same durable, sequenced path as a WebSocket ``send``: WebSocket clients
receive it with the conversation's next seq. Resolve and transfer run routing's own handlers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from ...conversations.service import system
from ...model import CLOSED, OPEN, Principal
from ...protocol import envelope as env
from ...protocol.errors import RequestError
from ..operations import Body, Call, Operation, Query
from ..problems import Problem

STAGES = Literal["opened", "bot", "queued", "assigned", "resolved", "closed"]


class ConversationOut(BaseModel):
    id: str
    tenant: str
    customer: str
    channel: str
    status: str
    subject: str
    created_at: int
    last_seq: int
    stage: str
    assignee: str
    group: str


class ConversationList(BaseModel):
    conversations: list[ConversationOut]
    next: str | None = Field(description="Pass as `cursor` for the next page; null on the last page.")


class Participant(BaseModel):
    user: str
    role: str
    joined_at: int


class ConversationDetail(ConversationOut):
    participants: list[Participant]
    tags: list[str]


class TagsIn(Body):
    tags: list[str] = Field(description="The conversation's tags, replacing those it has (unique; at most 20 of 1..64 characters).")


class TagsOut(BaseModel):
    tags: list[str]


class MessageOut(BaseModel):
    duplicate: bool = Field(default=False, description="True when an earlier post with the same Idempotency-Key is answered.")
    conv: str
    seq: int
    cmid: str
    sender: str = Field(alias="from")
    role: str
    ts: int
    body: dict[str, Any]


class Transcript(BaseModel):
    messages: list[MessageOut]
    more: bool = Field(description="Whether the range goes on past this page.")


class ListQuery(Query):
    status: Literal["open", "closed"] | None = None
    stage: STAGES | None = None
    assignee: str | None = Field(default=None, max_length=128)
    channel: Literal["app", "miniprogram", "web"] | None = None
    tag: str | None = Field(default=None, min_length=1, max_length=64, description="Conversations carrying this tag.")
    since: int | None = Field(default=None, ge=0, description="Created at or after (ms since the epoch).")
    until: int | None = Field(default=None, ge=0, description="Created before (ms since the epoch).")
    cursor: str | None = Field(default=None, max_length=200, description="`next` of the previous page.")
    limit: int = Field(default=50, ge=1, le=100)


class TranscriptQuery(Query):
    after: int = Field(default=0, ge=0, description="Messages with a seq above this.")
    before: int | None = Field(default=None, ge=1, description="Messages with a seq below this (the newest of them).")
    limit: int = Field(default=100, ge=1, le=200)


class Sender(Body):
    role: Literal["system", "bot"]
    user: str | None = Field(default=None, min_length=1, max_length=128, description="The bot's user id (role bot; it joins if need be).")
    name: str | None = Field(default=None, max_length=100, description="The bot's display name, shown when it joins.")


class MessageIn(Body):
    sender: Sender
    body: dict[str, Any] = Field(description="A message body as in the WebSocket `send` (docs/protocol.md §7): kind text, image, ….")


class TransferIn(Body):
    to_agent: str | None = Field(default=None, min_length=1, max_length=128)
    to_group: str | None = Field(default=None, min_length=1, max_length=64)
    note: str = Field(default="", max_length=1000, description="For the next agent.")


class HandoffIn(Body):
    bot: str = Field(min_length=1, max_length=128, description="The bot user handing over (the tenant's `bot_user`, a participant).")
    reason: str = Field(default="", max_length=200, description="Why, for the agent (stored with the handoff).")
    context: dict[str, Any] | None = Field(default=None, description="What the bot learnt, shown to the agent with the transcript.")


async def list_conversations(call: Call) -> tuple[int, dict]:
    q = call.query
    if q.status is not None and q.status not in (OPEN, CLOSED):  # the model allows only these
        raise Problem("bad_request", "field `status` must be open or closed")
    listing = await call.services.conversations.list(
        system(call.tenant), status=q.status, cursor=q.cursor, limit=q.limit, before=q.until,
        stage=q.stage, assignee=q.assignee, channel=q.channel, since=q.since, tag=q.tag,
    )
    return 200, {"conversations": [env.conversation_map(c) for c in listing.convs], "next": listing.next}


async def get_conversation(call: Call) -> tuple[int, dict]:
    service = call.services.conversations
    state = await service.access(system(call.tenant), call.path["conv_id"], "history")
    participants = await service.store.participants(state.conv.id)
    conv = env.conversation_map(state.conv) | {"last_seq": state.last_seq}
    tags = await service.tags(system(call.tenant), state)
    return 200, conv | {"participants": [env.participant_map(p) for p in participants], "tags": list(tags)}


async def set_tags(call: Call) -> tuple[int, dict]:
    tags = await call.services.conversations.set_tags(system(call.tenant), call.path["conv_id"], call.body.tags)
    return 200, {"tags": list(tags)}


async def transcript(call: Call) -> tuple[int, dict]:
    q = call.query
    history = await call.services.conversations.history(system(call.tenant), call.path["conv_id"], after=q.after, before=q.before, limit=q.limit)
    return 200, {"messages": [env.jsonable(env.message_map(m)) for m in history.messages], "more": history.more}


async def post_message(call: Call) -> tuple[int, dict]:
    sender, service = call.body.sender, call.services.conversations
    if sender.role == "system":
        if sender.user is not None or sender.name is not None:
            raise Problem("bad_request", "field `sender.user`: the system sender has no user or name", status=422)
        if not {"admin", "ingest"} & set(call.key.scopes):
            raise Problem("forbidden", "posting as the system needs an ingest or admin key")
        who = system(call.tenant)
    else:
        if sender.user is None:
            raise Problem("bad_request", "field `sender.user` is required for a bot sender", status=422,
                          errors=[{"field": "sender.user", "message": "field `sender.user` is required for a bot sender"}])
        if not {"admin", "bot"} & set(call.key.scopes):
            raise Problem("forbidden", "posting as a bot needs a bot or admin key")
        who = Principal(call.tenant, sender.user, "bot", "", sender.name or sender.user)
    cmid = call.headers.get("idempotency-key")
    if cmid is not None and not (0 < len(cmid) <= env.ID_CHARS and cmid.isascii() and cmid.isprintable()):
        raise Problem("bad_request", f"header `Idempotency-Key` must be 1..{env.ID_CHARS} printable ASCII characters", status=422)
    try:  # the service checks it again; checked here first so that a bot does not join for nothing
        env.validate_body(call.body.body, call.services.node.config.limits)
    except RequestError as exc:
        raise Problem(exc.code, f"body: {exc.message}", status=422 if exc.code == "bad_request" else None) from None
    conv_id = call.path["conv_id"]
    if who.role == "bot":
        state = await service.access(system(call.tenant), conv_id, "history")  # not_found before anything changes
        if state.conv.status != OPEN and cmid is None:
            raise RequestError("conversation_closed", "the conversation is closed")
        if who.user not in state.members and state.conv.status == OPEN:
            await service.join(who, state)
    appended = await service.post(who, conv_id, call.body.body, cmid)
    return (200 if appended.duplicate else 201), env.jsonable(env.message_map(appended.message)) | {"duplicate": appended.duplicate}


async def resolve(call: Call) -> tuple[int, dict]:
    reply = await _routing(call).request(system(call.tenant), "resolve", {"conv": call.path["conv_id"]})
    return 200, reply["conv"]


async def transfer(call: Call) -> tuple[int, dict]:
    body = call.body
    if (body.to_agent is None) == (body.to_group is None):
        raise Problem("bad_request", "give exactly one of `to_agent` and `to_group`", status=422)
    fields = {"conv": call.path["conv_id"], "note": body.note, **({"to_agent": body.to_agent} if body.to_agent else {"to_group": body.to_group})}
    routing = _routing(call)
    await routing.request(system(call.tenant), "transfer", fields)
    state = await call.services.conversations.access(system(call.tenant), call.path["conv_id"], "history")
    return 200, env.conversation_map(state.conv) | {"last_seq": state.last_seq}


async def recall_message(call: Call) -> tuple[int, dict]:
    """Moderation by the tenant's backend: any message taken back, whoever sent it and whenever."""
    seq = call.path["seq"]
    if not (seq.isascii() and seq.isdigit()) or len(seq) > 18:
        raise Problem("bad_request", "the seq in the path must be a positive integer", status=422)
    m = await call.services.conversations.recall(system(call.tenant), call.path["conv_id"], int(seq))
    return 200, env.jsonable(env.message_map(m)) | {"duplicate": False}


async def handoff(call: Call) -> tuple[int, dict]:
    """What an external bot's WebSocket ``handoff`` does, for a bot that works over HTTP (webhooks in,
    REST out): the conversation leaves the bot for the queue, with the bot's context."""
    body = call.body
    bot = Principal(call.tenant, body.bot, "bot", "", body.bot)
    fields: dict[str, Any] = {"conv": call.path["conv_id"], "reason": body.reason}
    if body.context is not None:
        fields["context"] = body.context
    await _routing(call).request(bot, "handoff", fields)
    state = await call.services.conversations.access(system(call.tenant), call.path["conv_id"], "history")
    return 200, env.conversation_map(state.conv) | {"last_seq": state.last_seq}


def _routing(call: Call) -> Any:
    if call.services.routing is None:
        raise Problem("forbidden", "routing is off on this gateway (--routing off): nothing to resolve, transfer or hand off")
    return call.services.routing


READ = frozenset({"read", "bot"})
OPERATIONS = (
    Operation("GET", "/v1/conversations", list_conversations, "List this tenant's conversations, newest first, with filters and cursor paging.", READ, query=ListQuery, response=ConversationList),
    Operation("GET", "/v1/conversations/{conv_id}", get_conversation, "One conversation with its participants.", READ, response=ConversationDetail, errors=(404,)),
    Operation("PUT", "/v1/conversations/{conv_id}/tags", set_tags, "Replace the conversation's tags.", frozenset({"bot"}), body=TagsIn, response=TagsOut, errors=(404,)),
    Operation("GET", "/v1/conversations/{conv_id}/messages", transcript, "The transcript, a page at a time.", READ, query=TranscriptQuery, response=Transcript, errors=(404,)),
    Operation("POST", "/v1/conversations/{conv_id}/messages", post_message, "Post a message as the system (ingest) or as a bot (bot); delivered with the next seq.", frozenset({"ingest", "bot"}), body=MessageIn, response=MessageOut, status=201, errors=(404, 409),
              headers=(("Idempotency-Key", "Posting again with the same key answers the stored message (200, `duplicate`) instead of posting twice."),)),
    Operation("POST", "/v1/conversations/{conv_id}/messages/{seq}/recall", recall_message,
              "Recall a message (moderation): its body becomes `recalled`, and a `recalled` event tells the members.", frozenset(), response=MessageOut, errors=(404,)),
    Operation("POST", "/v1/conversations/{conv_id}/resolve", resolve, "Resolve: the service ends; the shopper's next message reopens it.", frozenset({"bot"}), response=ConversationOut, errors=(404,)),
    Operation("POST", "/v1/conversations/{conv_id}/handoff", handoff, "As the conversation's bot, hand it to a person: it joins the queue with the bot's context.", frozenset({"bot"}), body=HandoffIn, response=ConversationOut, errors=(404,)),
    Operation("POST", "/v1/conversations/{conv_id}/transfer", transfer, "Transfer to an agent (online, with room) or to a skill group's queue.", frozenset({"bot"}), body=TransferIn, response=ConversationOut, errors=(404,)),
)
