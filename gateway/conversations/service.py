"""The conversation service: every conversation action, for every caller, in one place.

WebSocket handlers, the REST API, routing and the bots all call this; it knows nothing of sockets.
Each call takes a ``Principal`` (tenant, user, role, channel: ``auth.Identity`` is one), is
authorised by the one table in :mod:`gateway.conversations.authz`, and returns records of
:mod:`gateway.model` or raises ``RequestError`` carrying the protocol's error code (docs/protocol.md).
``conv`` is a conversation id, or the live handle (``hub.ConvState``) that hooks and results carry.

Public API (``svc = ConversationService(store, hub, bus, stats, node_id=...)``)::

    await svc.open(who, subject="", on_member=None)            -> Opened(conv, participants, handle)
    await svc.join(who, conv, on_member=None)                  -> Joined(conv, participants, handle)
    await svc.leave(who, conv)                                 -> None
    await svc.close(who, conv)                                 -> Conversation
    svc.send(who, conv_id, cmid, body, done, origin=None)      -> None | Awaitable[None]
    await svc.send_attachment(who, conv_id, cmid, body, done, origin=None)   (send of an uploaded file)
    await svc.post(who, conv, body, cmid=None, fence=None)     -> Appended(message, duplicate)
    await svc.recall(who, conv, seq)                           -> StoredMessage (as now stored)
    svc.receipt(who, conv_id, kind, seq, done)                 -> None | Awaitable[None]
    svc.typing(who, conv_id, on)                               -> None | Awaitable[None]
    await svc.list(who, status=None, cursor=None, limit=50, mine=False, before=None, **filters) -> Listing
    await svc.history(who, conv, after=0, before=None, limit=None) -> History
    await svc.access(who, conv, action)                        -> ConvState (checked handle)
    await svc.catch_up(who, conv, after, limit=CATCHUP_PAGE)   -> Page
    await svc.active(who)                                      -> list[Conversation]  (to resume)
    await svc.update(who, conv, by=None, fence=None, status=/stage=/assignee=/group=) -> Conversation
    await svc.set_tags(who, conv, tags) / await svc.tags(who, conv) -> tuple[str, ...]
    await svc.add_participant(who, conv, user, role, name, fence=None) -> None
    await svc.remove_participant(who, conv, user, role, fence=None)    -> None
    svc.notify(conv_id, payload) / svc.notify_user(tenant, user, payload) / svc.presence(who, conv_ids, online)

The hot path stays synchronous: ``send``, ``receipt`` and ``typing`` on a cached conversation
submit to the store and return None (no task switch, no await); the store's commit calls ``done``
later, in commit order, with an ``Appended``/``Receipt`` or a ``RequestError``. They return an
awaitable only when the conversation must first be loaded, a resend must be looked up, or the store
is overloaded (the caller awaits it before reading on: backpressure).

``fence``: the routing leader's writes in a cluster carry its term's number (gateway.routing.lease)
and are stored as ``Fenced`` ops; a refusal (``StaleFence``: a later leader has written) is raised
and told to the hooks' ``fenced_out``. Without one (everyone else, and routing in one process) the
ops are stored as they are.

Durable results are published on the bus (gateway.bus) with this node's id; a publish that fails
is logged and counted (``kefu_bus_publish_failures_total``); the message stays durable and clients
get it on resume.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import time
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Awaitable, Callable, Iterable, Protocol

import msgpack

from ..bus import Bus, BusError
from ..hub import ConvState, Hub, SentHere
from ..metrics import Stats
from ..model import (
    CLOSED,
    OPEN,
    RECEIPT_KINDS,
    SYSTEM,
    AddParticipant,
    Appended,
    AppendMessage,
    Conversation,
    CreateConversation,
    Fenced,
    Page,
    Participant,
    Principal,
    Receipt,
    RecallMessage,
    RemoveParticipant,
    SetReceipt,
    SetStatus,
    SetTags,
    StoredMessage,
    WriteOp,
)
from ..media import bodies as media_bodies
from ..protocol import envelope as env
from ..protocol.errors import RequestError
from ..protocol.fields import MAX_INT, Limits
from ..store.base import NotFound, StaleFence, StoreDamaged
from ..store.writer import Store
from . import authz

log = logging.getLogger("kefu.conversations")

CATCHUP_PAGE = 500
MAX_LIST = 100
MAX_ACTIVE = 1000  # open conversations one resume subscribes
MAX_TAGS = 20
MAX_SUBJECT_CHARS = 200
MAX_TAG_CHARS = 64

Conv = str | ConvState


MAX_ORIGINS = 100_000  # sent messages whose echo is awaited, across processes (Hub.origins)
RECALL_WINDOW_MS = 2 * 60 * 1000  # how long after sending its sender may recall a message (as WeChat allows)
RECALLED = "recalled"  # the kind of a recalled message's body


def now_ms() -> int:
    return int(time.time() * 1000)


_conversation_counter = itertools.count()


def new_conversation_id() -> str:
    """Time-ordered (also within one millisecond, in this process) and unguessable: 12 hex digits
    of milliseconds, 4 of a counter, 12 of randomness."""
    return f"{now_ms():012x}{next(_conversation_counter) & 0xFFFF:04x}{secrets.token_hex(6)}"


def system(tenant: str) -> Principal:
    """The server itself acting in ``tenant`` (routing, lifecycle notices)."""
    return Principal(tenant, SYSTEM, SYSTEM)


@dataclass(frozen=True, slots=True)
class Opened:
    conv: Conversation
    participants: list[Participant]
    handle: ConvState  # the live state, for the transport to subscribe connections to


@dataclass(frozen=True, slots=True)
class Joined:
    conv: Conversation  # with the last_seq known here
    participants: list[Participant]
    handle: ConvState


@dataclass(frozen=True, slots=True)
class Listing:
    convs: list[Conversation]
    more: bool
    next: str | None  # cursor of the next page


@dataclass(frozen=True, slots=True)
class History:
    conv_id: str
    messages: list[StoredMessage]
    more: bool
    receipts: list[Receipt]


class Hooks(Protocol):
    """What routing (gateway.routing.service) is told; every method is optional to do nothing."""

    def on_opened(self, state: ConvState, who: Principal) -> None: ...

    def on_message(self, state: ConvState, m: StoredMessage) -> None: ...

    def closing(self, state: ConvState, who: Principal) -> str | None:
        """The conversation is about to close: leave routing; returns the stage to store."""

    def on_closed(self, state: ConvState) -> None: ...

    def fenced_out(self, op: WriteOp | None, refused: StaleFence) -> None:
        """The store refused a write made with a fence (``op``: the write fenced); told even when
        the caller that waited for it has been cancelled since."""


class Watcher:
    """What else is told of a conversation's life (the workspace's inbox, webhooks): called on the
    node where it happened, once, after it is durable; must not block. Override what you need."""

    def on_opened(self, state: ConvState) -> None: ...

    def on_message(self, state: ConvState, m: StoredMessage) -> None: ...

    def on_receipt(self, state: ConvState, user: str, kind: str, seq: int) -> None: ...

    def on_closed(self, state: ConvState) -> None: ...

    def on_rated(self, state: ConvState, csat: dict[str, Any]) -> None: ...

    def on_recalled(self, state: ConvState, m: StoredMessage, body: dict[str, Any]) -> None:
        """Message ``m`` was taken back; ``body`` is what it held before."""


Done = Callable[[Any], None]


class ConversationService:
    def __init__(
        self, store: Store, hub: Hub, bus: Bus, stats: Stats, *, node_id: str, limits: Limits | None = None, reply_bytes: int = 1 << 20
    ) -> None:
        """``limits``: what a body may hold and the most messages per history reply;
        ``reply_bytes``: past this many bytes of bodies a history reply stops early (one reply
        must not make its reader a slow consumer)."""
        self.store = store
        self.hub = hub
        self.bus = bus
        self.stats = stats
        self.node_id = node_id
        self.limits = limits or Limits()
        self.history_page = self.limits.history_page
        self.reply_bytes = reply_bytes
        self.hooks: Hooks | None = None
        self.recall_window_ms = RECALL_WINDOW_MS
        self.watchers: list[Watcher] = []  # the workspace's inbox, webhooks
        self.accepting = True  # False while the node drains: writes are refused as unavailable
        self.ordered = bool(getattr(bus, "crosses_processes", False))  # the node orders deliveries (Node.on_message)

    # ---- looking conversations up -------------------------------------------------------------

    async def _fetch(self, conv_id: str) -> tuple[Conversation, list[Participant]] | None:
        conv = await self.store.get_conversation(conv_id)
        if conv is None:
            return None
        return conv, await self.store.participants(conv_id)

    def cached(self, conv_id: str) -> ConvState | None:
        """The live handle of a conversation in use here, or None (no check: server-side callers)."""
        return self.hub.get(conv_id)

    async def load(self, conv_id: str) -> ConvState | None:
        """The live handle of a conversation, loaded if need be; None if there is none."""
        return self.hub.get(conv_id) or await self.hub.load(conv_id, self._fetch)

    async def _in_tenant(self, who: Principal, conv_id: str, action: str) -> ConvState:
        """The conversation if it is in ``who``'s tenant; else the table's answer for another
        tenant's (the caller checks the rest once it has the state)."""
        state = await self.load(conv_id)
        if state is None or state.conv.tenant != who.tenant:
            authz.check(action, who, None if state is None else state.conv.tenant)
            raise AssertionError(f"the authz table allows {action!r} on another tenant's conversation")
        return state

    async def access(self, who: Principal, conv: Conv, action: str) -> ConvState:
        """The conversation's handle, if ``who`` may do ``action`` to it (authz table)."""
        state = conv if type(conv) is ConvState else await self.load(conv)  # type: ignore[arg-type]
        if state is None:
            authz.check(action, who, None)  # none: answered as another tenant's would be
            raise AssertionError(f"the authz table allows {action!r} on a missing conversation")
        authz.check(action, who, state.conv.tenant, state.members)
        return state

    # ---- open, join, leave, close -------------------------------------------------------------

    async def open(self, who: Principal, subject: str = "", on_member: Callable[[ConvState], None] | None = None) -> Opened:
        """A new conversation with ``who`` as its customer. ``on_member(handle)`` runs once it
        exists, before anyone is told (the transport subscribes the opener's connection there)."""
        authz.check("open", who, who.tenant)
        if type(subject) is not str or len(subject) > MAX_SUBJECT_CHARS:
            raise RequestError("too_large" if type(subject) is str else "bad_request", f"field `subject` must be a string of at most {MAX_SUBJECT_CHARS} characters")
        if not self.accepting:
            raise RequestError("unavailable", "server restarting")
        now = now_ms()
        conv = Conversation(new_conversation_id(), who.tenant, who.user, who.channel, OPEN, now, subject)
        me = Participant(conv.id, who.user, who.role, now)
        conv = await self.store.execute(CreateConversation(conv, (me,)))
        state = self.hub.add(conv, [me])
        if on_member is not None:
            on_member(state)
        self._publish_membership(conv.id, who.tenant, who.user, who.role, True)  # every live device of the opener
        log.info("conversation %s opened", conv.id, extra={"tenant": who.tenant, "user": who.user})
        if self.hooks is not None:
            self.hooks.on_opened(state, who)
        for watcher in self.watchers:
            watcher.on_opened(state)
        return Opened(conv, [me], state)

    async def join(self, who: Principal, conv: Conv, on_member: Callable[[ConvState], None] | None = None) -> Joined:
        """Become a participant (a participant re-joining changes nothing). ``on_member(handle)``
        runs once ``who`` is a member, before the participants are read (nothing is missed)."""
        state = await self.access(who, conv, "join")
        if who.user not in state.members:
            if state.conv.status != OPEN:
                raise RequestError("conversation_closed", "the conversation is closed")
            await self._add_member(state, who.user, who.role, who.name)
        if on_member is not None:
            on_member(state)
        participants = await self.store.participants(state.conv.id)
        return Joined(replace(state.conv, last_seq=state.last_seq), participants, state)

    async def leave(self, who: Principal, conv: Conv) -> None:
        state = await self.access(who, conv, "leave")
        await self._remove_member(state, who.user, who.role)

    async def close(self, who: Principal, conv: Conv) -> Conversation:
        """Close for good (routing, when on, lets go of it first); closing a closed one is a no-op."""
        state = await self.access(who, conv, "close")
        if state.conv.status != CLOSED:
            stage = self.hooks.closing(state, who) if self.hooks is not None else None
            await self._update(state, who.user, status=CLOSED, stage=stage)
            if self.hooks is not None:
                self.hooks.on_closed(state)
        return state.conv

    async def add_participant(self, who: Principal, conv: Conv, user: str, role: str, name: str, *, fence: int | None = None) -> None:
        """Make ``user`` a participant (routing's assignments: action ``assign``)."""
        await self._add_member(await self.access(who, conv, "assign"), user, role, name, fence)

    async def remove_participant(self, who: Principal, conv: Conv, user: str, role: str, *, fence: int | None = None) -> None:
        await self._remove_member(await self.access(who, conv, "assign"), user, role, fence)

    async def update(self, who: Principal, conv: Conv, *, by: str | None = None, fence: int | None = None, **changes: str | None) -> Conversation:
        """Store status/stage/assignee/group changes (None: unchanged) and tell the participants
        (a ``conv`` frame naming ``by``, default ``who.user``)."""
        state = await self.access(who, conv, "update")
        return await self._update(state, by or who.user, fence, **changes)

    async def set_tags(self, who: Principal, conv: Conv, tags: Iterable[str]) -> tuple[str, ...]:
        """Replace the conversation's tags (action ``update``); returns them as stored (unique,
        sorted). Not announced over WebSocket: kefu.v1 has no frame for tags."""
        checked = check_tags(tags)
        state = await self.access(who, conv, "update")
        state.inflight += 1
        try:
            stored = await self.store.execute(SetTags(state.conv.id, checked))
        finally:
            state.inflight -= 1
        self.hub.release(state)
        return stored

    async def tags(self, who: Principal, conv: Conv) -> tuple[str, ...]:
        """The conversation's tags (for whoever may read it: action ``history``)."""
        state = await self.access(who, conv, "history")
        return await self.store.tags(state.conv.id)

    async def _add_member(self, state: ConvState, user: str, role: str, name: str, fence: int | None = None) -> None:
        if user in state.members:
            return
        state.inflight += 1
        try:
            p = await self._write(AddParticipant(Participant(state.conv.id, user, role, now_ms())), fence)
        finally:
            state.inflight -= 1
        state.members[user] = role  # here at once; other nodes (and this one's subscriptions) by the bus
        self._publish_membership(state.conv.id, state.conv.tenant, user, role, True)
        notice = {"t": "joined", "conv": state.conv.id, "user": user, "role": role, "name": name, "ts": p.joined_at}
        self._publish_event(state.conv.id, env.event_frame(notice), user)

    async def _remove_member(self, state: ConvState, user: str, role: str, fence: int | None = None) -> None:
        if user not in state.members:
            return
        state.inflight += 1
        try:
            await self._write(RemoveParticipant(state.conv.id, user), fence)
        finally:
            state.inflight -= 1
        notice = {"t": "left", "conv": state.conv.id, "user": user, "role": role, "ts": now_ms()}
        self._publish_event(state.conv.id, env.event_frame(notice), None)
        state.members.pop(user, None)
        self._publish_membership(state.conv.id, state.conv.tenant, user, role, False)

    async def _update(self, state: ConvState, by: str, fence: int | None = None, **changes: str | None) -> Conversation:
        state.inflight += 1
        try:
            conv = await self._write(SetStatus(state.conv.id, **changes), fence)
        finally:
            state.inflight -= 1
        was = state.conv.status
        state.conv = conv
        self._publish(self.bus.publish_conversation, self.node_id, conv)
        self._publish_event(conv.id, env.event_frame({"t": "conv", "conv": env.conversation_map(conv), "by": by}), None)
        if conv.status == CLOSED and was != CLOSED:  # by its people, or by routing once a resolved one stays quiet
            for watcher in self.watchers:
                watcher.on_closed(state)
        self.hub.release(state)
        return conv

    async def _write(self, op: WriteOp, fence: int | None) -> Any:
        """Store ``op``, as ``Fenced(fence, op)`` when a fence is given. A refusal is told to the
        hooks from the store's completion, so it is heard even if the step that wrote was cancelled
        meanwhile (its node stopped leading routing while the write was on its way)."""
        if fence is None:
            return await self.store.execute(op)

        def refused(result: object) -> None:
            if isinstance(result, StaleFence) and self.hooks is not None:
                self.hooks.fenced_out(op, result)

        return await self.store.execute(Fenced(fence, op), refused)

    # ---- messages -----------------------------------------------------------------------------

    def send(self, who: Principal, conv_id: str, cmid: str, body: bytes, done: Done, origin: str | None = None) -> Awaitable[None] | None:
        """The durable, sequenced, idempotent send of a checked body (packed msgpack). ``done``
        gets the ``Appended`` (``duplicate`` for a resent cmid: the original seq) or a
        RequestError. ``origin``: the sender's session id, which does not get the message echoed."""
        if not self.accepting:
            raise RequestError("unavailable", "server restarting: resend after reconnecting")
        state = self.hub.get(conv_id)
        if state is None:
            return self._send_after_load(who, conv_id, cmid, body, done, origin)
        return self._submit_send(who, state, cmid, body, done, origin)

    async def send_attachment(self, who: Principal, conv_id: str, cmid: str, body: dict[str, Any], done: Done, origin: str | None = None) -> None:
        """``send`` of a checked body that carries an uploaded file (``media_bodies.attachment_id``):
        the file's facts, from its record, replace the sender's before the body is packed."""
        if not self.accepting:
            raise RequestError("unavailable", "server restarting: resend after reconnecting")
        attachment = await self.store.get_attachment(media_bodies.attachment_id(body))
        state = await self._in_tenant(who, conv_id, "send")
        try:
            packed = env.pack(media_bodies.with_facts(body, attachment, state.conv))
        except RequestError:
            # the resend of a message stored before its file was deleted still gets its ack
            stored = await self.store.find_message(state.conv.id, who.user, cmid)
            if stored is None:
                raise
            self.stats.messages_duplicate += 1
            done(Appended(stored, True))
            return
        pending = self._submit_send(who, state, cmid, packed, done, origin)
        if pending is not None:
            await pending

    async def _send_after_load(self, who: Principal, conv_id: str, cmid: str, body: bytes, done: Done, origin: str | None) -> None:
        state = await self._in_tenant(who, conv_id, "send")
        pending = self._submit_send(who, state, cmid, body, done, origin)
        if pending is not None:
            await pending

    def _submit_send(self, who: Principal, state: ConvState, cmid: str, body: bytes, done: Done, origin: str | None) -> Awaitable[None] | None:
        if state.conv.tenant != who.tenant:
            authz.check("send", who, state.conv.tenant)  # refused: another tenant's
        if who.user not in state.members or state.conv.status != OPEN:
            return self._resend_or_refuse(who, state, cmid, done)
        received = time.perf_counter()
        stats = self.stats
        conv_id = state.conv.id

        def durable(result: object) -> None:
            state.inflight -= 1
            if type(result) is not Appended:
                done(_store_failure(result))
                self.hub.release(state)
                return
            ack_later = self.ordered and origin is not None and not result.duplicate
            if not ack_later:
                done(result)
            stats.ack_latency.observe(time.perf_counter() - received)
            if result.duplicate:
                stats.messages_duplicate += 1
                m = result.message
                if self.ordered:  # the process that stored it may have died before publishing it
                    self._publish_message(state, m, origin)
                elif m.seq > state.last_seq:
                    # Past everything delivered here: its first commit went through but its answer
                    # was lost (the database dropped the connection after committing), so it was
                    # refused as retryable and never announced. Announce it now, once.
                    self._announce(state, m, origin)
            else:
                m = result.message
                stats.messages_accepted += 1
                if ack_later:  # acked when delivered here in order, after every earlier seq (Node)
                    origins = self.hub.origins
                    if len(origins) >= MAX_ORIGINS:  # echoes never came back (the bus was away): ack now
                        waiting = list(origins.values())
                        origins.clear()
                        for sent in waiting:
                            sent.ack()
                    origins[(conv_id, m.seq)] = SentHere(origin, partial(done, result), time.monotonic())  # type: ignore[arg-type]
                self._announce(state, m, origin)
            self.hub.release(state)

        state.inflight += 1
        self.store.submit(AppendMessage(conv_id, cmid, who.user, who.role, body), durable)
        if self.store.overloaded:
            return self.store.wait_capacity()
        return None

    def _publish_message(self, state: ConvState, m: StoredMessage, origin: str | None) -> None:
        self._publish(self.bus.publish_message, self.node_id, state.conv.id, m.seq, env.message_frame(m), origin)

    def _announce(self, state: ConvState, m: StoredMessage, origin: str | None) -> None:
        """A message newly stored: to its subscribers (through the bus), routing and the watchers."""
        self._publish_message(state, m, origin)
        if self.hooks is not None:
            self.hooks.on_message(state, m)
        for watcher in self.watchers:
            watcher.on_message(state, m)

    async def _resend_or_refuse(self, who: Principal, state: ConvState, cmid: str, done: Done) -> None:
        """A send the conversation no longer takes (closed, or the sender left) may still be the
        resend of one stored before: that gets its original ack, as every resend does."""
        stored = await self.store.find_message(state.conv.id, who.user, cmid)
        if stored is not None:
            self.stats.messages_duplicate += 1
            done(Appended(stored, True))
            return
        authz.check("send", who, state.conv.tenant, state.members)
        raise RequestError("conversation_closed", "the conversation is closed")

    async def post(self, who: Principal, conv: Conv, body: dict[str, Any], cmid: str | None = None, *, fence: int | None = None) -> Appended:
        """A message written on the server's side (bot answers, lifecycle notices, REST) as
        ``who`` (sender ``who.user``, role ``who.role``): durable first, then delivered like any
        other, with the conversation's next seq. ``body`` is checked as a client's would be, but
        for the system's lifecycle ``event`` bodies. ``cmid``: an idempotency key; posting it
        again returns the stored message (``duplicate``); ``fence``: see the module's docstring."""
        if who.role != SYSTEM or body.get("kind") != "event":
            env.validate_body(body, self.limits)
        state = await self.access(who, conv, "post")
        if state.conv.status != OPEN:
            if cmid is not None:
                stored = await self.store.find_message(state.conv.id, who.user, cmid)
                if stored is not None:
                    return Appended(stored, True)
            raise RequestError("conversation_closed", "the conversation is closed")
        attachment_id = media_bodies.attachment_id(body)
        if attachment_id is not None:
            body = media_bodies.with_facts(body, await self.store.get_attachment(attachment_id), state.conv)
        return await self._post(state, who.user, who.role, body, cmid or f"srv-{secrets.token_hex(8)}", fence)

    async def _post(self, state: ConvState, sender: str, role: str, body: dict[str, Any], cmid: str, fence: int | None = None) -> Appended:
        state.inflight += 1
        try:
            result = await self._write(AppendMessage(state.conv.id, cmid, sender, role, env.pack(body)), fence)
        finally:
            state.inflight -= 1
        m = result.message
        if result.duplicate:
            self.stats.messages_duplicate += 1
            if self.ordered or m.seq > state.last_seq:  # stored by a commit whose answer was lost: as in send
                self._publish_message(state, m, None)
                if not self.ordered:
                    for watcher in self.watchers:
                        watcher.on_message(state, m)
            self.hub.release(state)
            return result
        self.stats.messages_accepted += 1
        self._publish_message(state, m, None)
        for watcher in self.watchers:
            watcher.on_message(state, m)
        self.hub.release(state)
        return result

    async def recall(self, who: Principal, conv: Conv, seq: int) -> StoredMessage:
        """Take message ``seq`` back: its body is replaced by ``{"kind": "recalled", "by", "at"}``
        in the store (seq, sender and time stay), and a system event ``recalled`` naming the seq is
        appended, so every member learns of it live or on resume. Its sender may recall it within
        ``recall_window_ms``; a supervisor or the tenant's backend any message. Recalling a
        recalled message changes nothing."""
        _seq_field("seq", seq)
        state = await self.access(who, conv, "recall")
        page = await self.store.read_messages(state.conv.id, after=seq - 1, limit=1) if seq > 0 else None
        if page is None or not page.messages or page.messages[0].seq != seq:
            raise RequestError("not_found", f"conversation {state.conv.id} has no message {seq}")
        m = page.messages[0]
        body = msgpack.unpackb(m.body, raw=False)
        if type(body) is not dict:
            body = {}
        if body.get("kind") == RECALLED:  # again: its event too (idempotent), in case the first stopped between the two writes
            await self._post(state, SYSTEM, SYSTEM, recalled_event(seq, str(body.get("by", "")), str(body.get("role", ""))), f"recall-{seq}")
            return m
        if body.get("kind") == "event" and m.sender_role == SYSTEM:
            raise RequestError("bad_request", "a conversation's events cannot be recalled")
        if who.role not in ("supervisor", SYSTEM):
            if m.sender != who.user:
                raise RequestError("forbidden", "you can recall only your own messages")
            if now_ms() - m.ts > self.recall_window_ms:
                raise RequestError("forbidden", f"a message can be recalled within {self.recall_window_ms // 60_000} minutes of sending")
        if not self.accepting:
            raise RequestError("unavailable", "server restarting")
        at = now_ms()
        state.inflight += 1
        try:
            recalled = await self.store.execute(RecallMessage(state.conv.id, seq, env.pack({"kind": RECALLED, "by": who.user, "role": who.role, "at": at})))
        finally:
            state.inflight -= 1
        self.hub.release(state)
        log.info("message %d of %s recalled by %s (%s)", seq, state.conv.id, who.user, who.role, extra={"tenant": state.conv.tenant})
        for watcher in self.watchers:
            watcher.on_recalled(state, m, body)
        await self._post(state, SYSTEM, SYSTEM, recalled_event(seq, who.user, who.role), f"recall-{seq}")
        return recalled

    def receipt(self, who: Principal, conv_id: str, kind: str, seq: int, done: Done) -> Awaitable[None] | None:
        """Raise ``who``'s cumulative receipt; ``done`` gets the stored ``Receipt`` or a
        RequestError. A raised receipt is told to every participant (the user's devices too)."""
        if kind not in RECEIPT_KINDS:
            raise RequestError("bad_request", f"field `kind` must be one of {', '.join(RECEIPT_KINDS)}")
        state = self.hub.get(conv_id)
        if state is None or seq > state.last_seq:  # past what was delivered here: the store says
            return self._receipt_after_load(who, conv_id, kind, seq, done)
        self._submit_receipt(who, state, kind, seq, done)
        return None

    async def _receipt_after_load(self, who: Principal, conv_id: str, kind: str, seq: int, done: Done) -> None:
        state = await self._in_tenant(who, conv_id, "receipt")
        self._submit_receipt(who, state, kind, seq, done, await self.stored_last_seq(state, seq))

    async def stored_last_seq(self, state: ConvState, seq: int) -> int:
        """The conversation's last seq, at least ``seq`` if the store has that many: the node's own
        ``state.last_seq`` counts what was delivered here, which lags the store while messages
        committed by other processes are still on the bus."""
        if seq <= state.last_seq:
            return state.last_seq
        stored = await self.store.get_conversation(state.conv.id)
        return max(state.last_seq, stored.last_seq if stored is not None else 0)

    def _submit_receipt(self, who: Principal, state: ConvState, kind: str, seq: int, done: Done, last_seq: int = 0) -> None:
        authz.check("receipt", who, state.conv.tenant, state.members)
        last_seq = max(last_seq, state.last_seq)
        if seq > last_seq:
            raise RequestError("bad_request", f"field `seq` is past the conversation's last message ({last_seq})")
        user = who.user
        conv_id = state.conv.id

        def durable(result: object) -> None:
            state.inflight -= 1
            if type(result) is not Receipt:
                done(_store_failure(result))
            else:
                if state.receipts is None:
                    state.receipts = {}
                if result.seq == seq and state.receipts.get((user, kind), 0) < seq:  # raised: tell everybody, own devices too
                    state.receipts[(user, kind)] = seq
                    payload = {"t": "receipt", "conv": conv_id, "user": user, "kind": kind, "seq": seq}
                    self._publish_event(conv_id, env.event_frame(payload), None)
                    for watcher in self.watchers:
                        watcher.on_receipt(state, user, kind, seq)
                done(result)
            self.hub.release(state)

        state.inflight += 1
        self.store.submit(SetReceipt(Receipt(conv_id, user, kind, seq)), durable)

    def typing(self, who: Principal, conv_id: str, on: bool) -> Awaitable[None] | None:
        """Tell the other participants ``who`` is (or stopped) typing; not stored."""
        state = self.hub.get(conv_id)
        if state is None:
            return self._typing_after_load(who, conv_id, on)
        self._announce_typing(who, state, on)
        return None

    async def _typing_after_load(self, who: Principal, conv_id: str, on: bool) -> None:
        self._announce_typing(who, await self._in_tenant(who, conv_id, "typing"), on)

    def _announce_typing(self, who: Principal, state: ConvState, on: bool) -> None:
        authz.check("typing", who, state.conv.tenant, state.members)
        conv_id = state.conv.id
        self._publish_event(conv_id, env.event_frame({"t": "typing", "conv": conv_id, "user": who.user, "on": on}), who.user)

    # ---- reading ------------------------------------------------------------------------------

    async def list(
        self,
        who: Principal,
        *,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = 50,
        mine: bool = False,
        before: int | None = None,
        **filters: Any,
    ) -> Listing:
        """Conversations of ``who``'s tenant, newest first: their own, or (a supervisor or the
        system, unless ``mine``) all of them. ``cursor``: ``next`` of the previous page.
        ``filters``: passed to the store's ``list_conversations`` (stage, assignee, channel, …)."""
        authz.check("list", who, who.tenant)
        limit = min(max(limit, 1), MAX_LIST)
        before_id = None
        if cursor is not None:  # "<created_at>.<id>" of the last conversation of the previous page
            at, _, before_id = cursor.partition(".")
            if not at.isdigit() or not before_id:
                raise RequestError("bad_request", "field `cursor` must be a `next` value from a previous `list` reply")
            before = int(at)
        if status is not None and status not in (OPEN, CLOSED):
            raise RequestError("bad_request", "field `status` must be one of open, closed")
        everyone = who.role in ("supervisor", SYSTEM) and not mine
        convs = await self.store.list_conversations(
            who.tenant, user=None if everyone else who.user, status=status, before=before, before_id=before_id, limit=limit + 1, **filters
        )
        page, more = convs[:limit], len(convs) > limit
        return Listing(page, more, f"{page[-1].created_at}.{page[-1].id}" if more else None)

    async def active(self, who: Principal) -> list[Conversation]:
        """The open conversations ``who`` participates in (what going live subscribes)."""
        return await self.store.list_conversations(who.tenant, user=who.user, status=OPEN, limit=MAX_ACTIVE)

    async def history(self, who: Principal, conv: Conv, *, after: int = 0, before: int | None = None, limit: int | None = None) -> History:
        """A page of messages (after ``after``, or before ``before``: the newest ones) with the
        conversation's receipts. Past ``reply_bytes`` it keeps the messages nearest the cursor
        the client pages from and says there is more."""
        _seq_field("after", after)
        _seq_field("before", before)
        state = await self.access(who, conv, "history")
        limit = min(limit or self.history_page, self.history_page)
        page = await self.store.read_messages(state.conv.id, after=after, before=before, limit=limit)
        backwards = before is not None and not after
        kept: list[StoredMessage] = []
        more, size, budget = page.more, 0, self.reply_bytes
        for m in reversed(page.messages) if backwards else page.messages:
            size += len(m.body) + 128
            if size > budget and kept:
                more = True
                break
            kept.append(m)
        messages = kept[::-1] if backwards else kept
        receipts = await self.store.receipts(state.conv.id)
        return History(state.conv.id, messages, more, receipts)

    async def catch_up(self, who: Principal, conv: Conv, after: int, limit: int = CATCHUP_PAGE) -> Page:
        """The stored messages after seq ``after``, a page at a time (resume)."""
        _seq_field("after", after)
        state = await self.access(who, conv, "catch_up")
        return await self.store.read_messages(state.conv.id, after=after, limit=limit)

    # ---- unstored events ----------------------------------------------------------------------

    def notify(self, conv_id: str, payload: dict[str, Any]) -> None:
        """An unstored event to the conversation's live participants (queue positions)."""
        self._publish_event(conv_id, env.event_frame(payload), None)

    def notify_user(self, tenant: str, user: str, payload: dict[str, Any]) -> None:
        """An unstored frame to every live connection of a user, on every node (assignment offers)."""
        self._publish(self.bus.publish_user, self.node_id, tenant, user, env.event_frame(payload))

    def presence(self, who: Principal, conv_ids: list[str], online: bool) -> None:
        """``who`` came online or went offline: tell the conversations they are live in as a
        participant (a supervisor following one without joining it is heard of by nobody)."""
        for conv_id in conv_ids:
            state = self.hub.get(conv_id)
            if state is not None and who.user not in state.members:
                continue
            payload = {"t": "presence", "conv": conv_id, "user": who.user, "role": who.role, "online": online}
            self._publish_event(conv_id, env.event_frame(payload), who.user)

    # ---- publishing ---------------------------------------------------------------------------

    def _publish_event(self, conv_id: str, frame: bytes, skip_user: str | None) -> None:
        try:
            self.bus.publish_event(self.node_id, conv_id, frame, skip_user)
        except BusError as exc:
            self._publish_failed(exc)

    def _publish_membership(self, conv_id: str, tenant: str, user: str, role: str, joined: bool) -> None:
        self._publish(self.bus.publish_membership, self.node_id, conv_id, tenant, user, role, joined)

    def _publish(self, publish: Callable[..., None], *args: Any) -> None:
        try:
            publish(*args)
        except BusError as exc:
            self._publish_failed(exc)

    def _publish_failed(self, exc: BusError) -> None:
        """Durable already: clients get it on resume. Other nodes' caches may lag until reloaded."""
        self.stats.bus_publish_failures += 1
        log.error("bus publish failed: %s", exc)


def recalled_event(seq: int, by: str, role: str) -> dict[str, Any]:
    """The system event that tells a conversation's members that message ``seq`` was taken back."""
    return {"kind": "event", "event": RECALLED, "seq": seq, "by": by, "role": role, "text": "一条消息已撤回"}


def _seq_field(name: str, value: int | None) -> None:
    """A sequence number a caller gives (REST parses JSON, not kefu.v1 fields): 0..MAX_INT."""
    if value is not None and (type(value) is not int or not 0 <= value <= MAX_INT):
        raise RequestError("bad_request", f"field `{name}` must be an integer from 0 to {MAX_INT}")


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Tags as a request may give them: at most MAX_TAGS strings of 1..MAX_TAG_CHARS printable
    characters (else bad_request naming the field)."""
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise RequestError("bad_request", "field `tags` must be a list of strings")
    checked = tuple(tags)
    if len(checked) > MAX_TAGS:
        raise RequestError("too_large", f"field `tags` holds at most {MAX_TAGS} tags")
    for tag in checked:
        if type(tag) is not str or not tag or len(tag) > MAX_TAG_CHARS or not tag.isprintable():
            raise RequestError("bad_request", f"field `tags` must hold strings of 1..{MAX_TAG_CHARS} printable characters")
    return checked


def _store_failure(result: object) -> RequestError:
    if isinstance(result, NotFound):
        return RequestError("not_found", "no such conversation")
    if isinstance(result, StoreDamaged):
        log.error("store damaged: %s", result)
        return RequestError("storage_damaged", "the server's storage is damaged; an operator has been alerted")
    log.warning("store failure: %s", result)
    return RequestError("unavailable", "storage unavailable: retry with the same cmid")
