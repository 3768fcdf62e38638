"""The routing service: the conversation lifecycle carried out over the conversation service.

It owns the ``RoutingEngine`` (who serves what), the built-in bot's sessions, and the protocol
requests agents and supervisors use (``status``, ``take``, ``transfer``, ``resolve``, ``handoff``,
``queues``). Every lifecycle move is stored on the conversation (stage, assignee, group) and told
to its participants as a system message, so reports can be built from the conversation log.

Work on one conversation runs strictly in order (a per-conversation serial queue): a shopper's
second question is answered after the first, and a handoff never overtakes the answer before it.

In a cluster every store write routing makes (stages, assignees, participants, lifecycle events,
the bot's answers) carries the fence of the leader's term (gateway.routing.lease); a write the
store refuses because a later leader has written (``StaleFence``) ends this node's term: counted,
logged, never retried. In one process there is no fence and the writes are stored as they are.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import msgpack
import trio

from ..conversations import authz
from ..conversations.service import ConversationService, system
from ..model import CLOSED, OPEN, SYSTEM, AddParticipant, AgentProfile, AppendMessage, Conversation, Fenced, Principal, RemoveParticipant, SetStatus, StoredMessage, WriteOp
from ..protocol import envelope as env
from ..protocol.errors import RequestError
from ..store.base import StaleFence
from .. import variables
from .config import RoutingConfig, TenantRouting, parse_tenant
from .engine import Assignment, RoutingEngine, RoutingError
from .lifecycle import ASSIGNED, BOT, OPENED, QUEUED, RESOLVED, IllegalTransition, next_stage

if TYPE_CHECKING:
    from ..auth import Identity
    from ..hub import ConvState
    from .cluster import Cluster

log = logging.getLogger("kefu.routing")

TICK_S = 1.0
TRANSCRIPT_LIMIT = 50
# The label of a fenced write in kefu_routing_stale_writes_total (gateway.metrics.STALE_WRITE_OPS)
_STALE_WRITE_OP = {SetStatus: "set_status", AddParticipant: "add_participant", RemoveParticipant: "remove_participant", AppendMessage: "append_message"}


def _queue_text(place: int, eta: int | None, language: str) -> str:
    """What a waiting shopper reads: their place and the estimated wait, in their language."""
    minutes = None if eta is None else max(1, round(eta / 60))
    if language == "en":
        ahead = f"{place - 1} {'person' if place == 2 else 'people'} ahead of you. " if place > 1 else "You are next. "
        wait = "An agent will be with you as soon as one is online." if minutes is None else f"Estimated wait: about {minutes} min."
        return ahead + wait
    ahead = f"您前面还有 {place - 1} 位，" if place > 1 else "您是下一位，"
    wait = "客服上线后会马上为您服务" if minutes is None else f"预计等待约 {minutes} 分钟"
    return "正在为您转接人工客服。" + ahead + wait


def _minutes_until(at: float, now: float) -> int:
    """Seconds from ``now`` to ``at``, in whole minutes (a wait estimate that moves once a minute)."""
    return max(0, int(at - now) // 60 * 60)


def _shopper_text(m: StoredMessage) -> tuple[str, str | None] | None:
    """(text, product in view) of a shopper's text message; None for other kinds."""
    body = msgpack.unpackb(m.body, raw=False)
    if body.get("kind") != "text":
        return None
    meta = body.get("meta")  # the shopper's app names the product in view: meta.product
    product = meta.get("product") if type(meta) is dict and type(meta.get("product")) is str else None
    return body["text"], product if product and len(product) <= 200 else None


class SerialQueues:
    """Run coroutines one after another per key, each key on its own task while it has work."""

    def __init__(self) -> None:
        self._queues: dict[str, deque[tuple[Callable[..., Awaitable[None]], tuple]]] = {}
        self._calls: set[trio.Event] = set()
        self.nursery: trio.Nursery | None = None

    def submit(self, key: str, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = deque()
            assert self.nursery is not None
            self.nursery.start_soon(self._drain, key, queue)
        queue.append((fn, args))

    async def call(self, key: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``fn`` in ``key``'s turn and wait for it; its result or exception comes back here
        (``unavailable`` if the queues are abandoned first: this node stopped leading routing)."""
        done = trio.Event()
        outcome: list[Any] = []

        async def step() -> None:
            try:
                outcome.append((True, await fn(*args)))
            except StaleFence:  # a later leader has written: this node's term is over
                outcome.append((False, RequestError("unavailable", "routing changed hands while this request was carried out: retry")))
            except Exception as exc:
                outcome.append((False, exc))
            finally:
                done.set()

        self.submit(key, step)
        self._calls.add(done)
        try:
            await done.wait()
        finally:
            self._calls.discard(done)
        if not outcome:
            raise RequestError("unavailable", "routing changed hands while this request waited: retry")
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def abandon(self) -> None:
        """The nursery running the queues ends: wake every caller still waiting for its turn."""
        for done in list(self._calls):
            done.set()
        self._queues.clear()

    async def _drain(self, key: str, queue: deque) -> None:
        try:
            while queue:
                fn, args = queue.popleft()
                try:
                    await fn(*args)
                except StaleFence:  # told to routing already (fenced_out): its term is over
                    pass
                except Exception:  # one failed step must not stop the conversation's later ones
                    log.exception("routing step %s failed for %s", getattr(fn, "__name__", fn), key)
        finally:
            if self._queues.get(key) is queue:
                del self._queues[key]


class RoutingService:
    def __init__(self, service: ConversationService, config: RoutingConfig, bots: Any = None) -> None:
        """``bots``: an object with ``for_tenant(tenant, routing) -> bot`` (see gateway.bot), used
        for tenants whose routing says ``bot: builtin``."""
        self.service = service
        self.config = config
        self.engine = RoutingEngine(config)
        self.bots = bots
        self.sessions: dict[str, Any] = {}  # conv -> bot session
        self.heard: dict[str, int] = {}  # conv -> seq of the shopper's message the bot last took (a resent input is not answered twice)
        self.contexts: dict[str, dict[str, Any]] = {}  # conv -> context packet for the next agent
        self.resolved_at: dict[str, float] = {}
        self.announced: dict[str, tuple[int, int | None]] = {}  # conv -> queue position last told
        self.serial = SerialQueues()
        self._closing: dict[str, list[Assignment]] = {}  # conv -> assignments freed by its close
        # The agent workspace (gateway.customers.WorkspaceService), when the node has one: the
        # customer context of ``assigned``, business hours, the survey after ``resolve``.
        self.workspace: Any = None
        self.left_messages: dict[str, float] = {}  # conv -> when agents are back (a message left outside hours)
        self.unqueued_reasons: dict[str, str] = {}  # conv -> why it went to a person, when it was assigned without queueing
        # Across processes (gateway.routing.cluster): the node holding the routing lease decides,
        # the others forward to it. None in one process: nothing below consults it then.
        self.cluster: Cluster | None = None
        # The fence every store write carries: the number of this node's last term as the cluster's
        # leader (kept after it, so that a late write is refused). None in one process: unfenced.
        self.fence: int | None = None

    def reset(self) -> None:
        """Forget every decision (a new term of leadership restores them from the store)."""
        self.engine = RoutingEngine(self.config)
        for held in (self.sessions, self.heard, self.contexts, self.resolved_at, self.announced, self._closing, self.left_messages, self.unqueued_reasons):
            held.clear()
        if self.bots is not None:  # knowledge bases stored while another node decided: read again
            self.bots.forget_stored()

    async def begin_term(self, fence: int) -> bool:
        """This node begins to lead the cluster with term number ``fence``, which its writes carry
        from now on. The number is claimed in the store before anything is read from it, so no
        write of an earlier leader can land after this term has read the store; False: the store
        has seen a higher number (told to ``fenced_out``), this term does not begin."""
        self.fence = fence
        try:
            await self.service.store.execute(Fenced(fence))
        except StaleFence as exc:
            self.fenced_out(None, exc)
            return False
        return True

    def fenced_out(self, op: WriteOp | None, refused: StaleFence) -> None:
        """The store refused a routing write of this node's (``op``; None: a term's claim): a
        leader of a later term has written, and this node was paused or cut off past its lease.
        Counted and logged; the cluster stops this node's term if it is still on. Not retried."""
        kind = "claim" if op is None else _STALE_WRITE_OP.get(type(op), "other")
        self.service.stats.routing_stale_writes[kind] += 1
        log.warning("routing write refused (%s): %s", kind, refused)
        if self.cluster is not None:
            self.cluster.fenced_out(refused)

    def _forwarding(self) -> bool:
        """Another node decides: hand inputs to it."""
        return self.cluster is not None and not self.cluster.leading

    def requests(self) -> dict[str, Callable[[Identity, dict[str, Any]], Any]]:
        """The request types routing serves: (principal, request) -> the ``ok`` reply's fields."""
        handlers = {
            "status": self._status,
            "take": self._in_turn(self._take),
            "transfer": self._transfer_request,
            "resolve": self._resolve_request,
            "handoff": self._in_turn(self._handoff_request),
            "queues": self._queues,
        }
        if self.cluster is None:
            return handlers
        return {t: self._led(t, handler) for t, handler in handlers.items()}

    def _led(self, t: str, handler: Callable[[Identity, dict[str, Any]], Any]) -> Callable[[Identity, dict[str, Any]], Any]:
        """A request handler that runs here while this node leads, else on the leader."""
        cluster = self.cluster
        assert cluster is not None

        def led(who: Identity, req: dict[str, Any]) -> Any:
            if cluster.leading:
                return handler(who, req)
            return cluster.request(t, who, {k: v for k, v in req.items() if k not in ("t", "id")})

        return led

    async def request(self, who: Principal, t: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Serve routing request ``t`` for any interface (the REST API's resolve and transfer go
        through the same handlers, in the conversation's turn, as the WebSocket's)."""
        reply = self.requests()[t](who, fields)
        return await reply if not isinstance(reply, dict) else reply

    def _in_turn(self, handler: Callable[[Identity, dict[str, Any]], Awaitable[dict[str, Any]]]) -> Callable[[Identity, dict[str, Any]], Awaitable[dict[str, Any]]]:
        """A request handler that runs in its conversation's turn, after the steps queued before it."""

        async def in_turn(who: Identity, req: dict[str, Any]) -> dict[str, Any]:
            conv_id = env.need_str(req, "conv", env.ID_CHARS)
            return await self.serial.call(conv_id, handler, who, req)

        return in_turn

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.cluster is not None:  # routing while this node holds the lease (gateway.routing.cluster)
            if self.bots is not None:
                await self.bots.preload(self.config)
            await self.cluster.run(self, task_status=task_status)
            return
        async with trio.open_nursery() as nursery:
            self.serial.nursery = nursery
            if self.bots is not None:
                await self.bots.preload(self.config)
            await self.restore()
            if self.bots is not None:  # in the background: the gateway serves meanwhile
                nursery.start_soon(self.bots.prefit_stored)
            task_status.started()
            while True:
                await trio.sleep(TICK_S)
                self.tick(time.time())

    def configure(self, tenant: str, routing: TenantRouting) -> None:
        """Replace a tenant's routing settings while running (the REST API, after storing them). The
        knowledge base stays as ``--routing-file`` set it: a path on this server is not the API's."""
        routing = replace(routing, knowledge_base=self.config.for_tenant(tenant).knowledge_base)
        self.config = self.config.with_tenant(tenant, routing)
        self.engine.reconfigure(self.config)
        if self._forwarding():
            self.cluster.forward("configure", tenant)

    def apply_agent(self, profile: AgentProfile) -> None:
        """An agent's persisted settings changed (the REST API, after storing them)."""
        if self._forwarding():
            self.cluster.forward("agent", profile.tenant, profile.user)
            return
        self._carry_out(self.engine.apply_profile(profile, time.time()))

    async def reload_tenant(self, tenant: str) -> None:
        """Another node stored new routing settings of ``tenant``: read them."""
        for stored in await self.service.store.tenant_settings(tenant):
            self.configure(stored.tenant, parse_tenant(json.loads(stored.routing), f"stored settings of {stored.tenant}"))

    async def use_knowledge_base(self, tenant: str) -> None:
        """A tenant stored or removed its bot's knowledge base (the REST API, after storing it):
        its bot answers from it once fitted, here or on the node that decides."""
        if self._forwarding():
            self.cluster.forward("knowledge_base", tenant)
        elif self.bots is not None:
            await self.bots.use_stored(tenant)

    async def reload_agent(self, tenant: str, user: str) -> None:
        """Another node stored an agent's settings: read them."""
        for profile in await self.service.store.agents(tenant):
            if profile.user == user:
                self.apply_agent(profile)

    async def restore(self) -> None:
        """Pick up what a previous run left queued or assigned (stages are stored; queues are not),
        after the stored routing settings and agent profiles (they win over ``--routing-file``)."""
        for stored in await self.service.store.tenant_settings():
            self.configure(stored.tenant, parse_tenant(json.loads(stored.routing), f"stored settings of {stored.tenant}"))
        for profile in await self.service.store.agents():
            self.engine.apply_profile(profile, time.time())
        now = time.time()
        backlog = await self.service.store.in_stages((QUEUED, ASSIGNED))
        for conv in backlog:
            group = conv.group or self.config.for_tenant(conv.tenant).groups[-1].name
            if conv.stage == QUEUED:
                self.engine.enqueue(conv.id, conv.tenant, conv.customer, group, now)
            elif conv.assignee:
                self.engine.restore(conv.id, conv.tenant, conv.customer, group, conv.assignee, now)
        if backlog:
            log.info("routing restored %d queued or assigned conversations", len(backlog))

    # ---- hooks the conversation service and the request handlers call --------------------------

    def on_opened(self, state: ConvState, identity: Identity) -> None:
        if self._forwarding():
            who = [identity.tenant, identity.user, identity.role, identity.channel, identity.name]
            self.cluster.forward("opened", state.conv.id, who)
            return
        self.serial.submit(state.conv.id, self._start, state, identity)

    def opened_elsewhere(self, conv_id: str, who: Principal) -> None:
        """A conversation opened on another node (the leader hears it through the cluster)."""
        self.serial.submit(conv_id, self._start_loaded, conv_id, who)

    async def _start_loaded(self, conv_id: str, who: Principal) -> None:
        state = await self.service.load(conv_id)
        if state is not None and state.conv.stage == OPENED:
            await self._start(state, who)

    def on_message(self, state: ConvState, m: StoredMessage) -> None:
        """A message became durable; the shopper's may need the bot or reopen the conversation."""
        conv = state.conv
        if m.sender != conv.customer or m.sender_role != "shopper":
            return
        if self.cluster is not None and not self.cluster.leading:
            if conv.stage in (OPENED, BOT, RESOLVED):  # the leader looks again in the conversation's turn
                self.cluster.forward("message", conv.id, m.seq, m.cmid, m.sender, m.sender_role, m.ts, m.body)
            return
        if conv.stage == BOT and self.config.for_tenant(conv.tenant).bot == "builtin" and self.bots is not None:
            said = _shopper_text(m)
            if said is not None:
                self.serial.submit(conv.id, self._bot_turn, state, said[0], m.ts / 1000, said[1], m.seq)
        elif conv.stage == RESOLVED:
            self.serial.submit(conv.id, self._reopen, state)

    def message_elsewhere(self, m: StoredMessage) -> None:
        """A shopper's message stored on another node, in its conversation's turn here."""
        self.serial.submit(m.conv_id, self._message_loaded, m)

    async def _message_loaded(self, m: StoredMessage) -> None:
        """In the turn itself (the state loaded here is fresh now; a later step may not find it so).

        A conversation still ``opened`` here was never started by routing: its ``opened`` input
        was lost with a leader that died holding it, or is behind this message. It starts now, as
        its customer opened it, so the shopper is greeted and answered rather than ignored (a
        later ``opened`` finds it started and does nothing)."""
        state = await self.service.load(m.conv_id)
        if state is None:
            return
        conv = state.conv
        if conv.stage == OPENED and conv.status == OPEN:
            await self._start(state, Principal(conv.tenant, conv.customer, "shopper", conv.channel))
            conv = state.conv  # now in the stage _start moved it to
        if conv.stage == BOT and self.config.for_tenant(conv.tenant).bot == "builtin" and self.bots is not None:
            said = _shopper_text(m)
            if said is not None:
                await self._bot_turn(state, said[0], m.ts / 1000, said[1], m.seq)
        elif conv.stage == RESOLVED:
            await self._reopen(state)

    def closed_elsewhere(self, conv_id: str) -> None:
        """A conversation closed on another node: it leaves routing here too."""
        for held in (self.sessions, self.heard, self.contexts, self.resolved_at, self.announced, self.left_messages):
            held.pop(conv_id, None)
        waiting, agent = self.engine.waiting.get(conv_id), self.engine.assignee(conv_id)
        tenant = waiting.tenant if waiting is not None else agent.tenant if agent is not None else None
        self._carry_out(self.engine.finish(conv_id, time.time()))
        if tenant is not None:
            self._announce_positions(tenant)

    def _serves(self, identity: Identity) -> bool:
        """Agents always; supervisors once they have set a status (they may take conversations too)."""
        return identity.role == "agent" or (identity.role == "supervisor" and (identity.tenant, identity.user) in self.engine.agents)

    def on_connected(self, identity: Identity) -> None:
        if self.cluster is not None:  # the leader counts every node's connections
            self.cluster.presence(identity, 1)
        else:
            self.agent_connected(identity)

    def on_disconnected(self, identity: Identity) -> None:
        if self.cluster is not None:
            self.cluster.presence(identity, -1)
        else:
            self.agent_disconnected(identity)

    def agent_connected(self, who: Principal) -> None:
        if self._serves(who):
            self.engine.connected(who.tenant, who.user)

    def agent_disconnected(self, who: Principal) -> None:
        if self._serves(who):
            self.engine.disconnected(who.tenant, who.user, time.time())

    def closing(self, state: ConvState, who: Principal) -> str:
        """A ``close``: the conversation leaves routing for good; returns the stage to store."""
        conv_id = state.conv.id
        if self._forwarding():  # the leader lets go of it once it is closed (``on_closed``)
            if state.conv.stage == BOT:
                self.service.stats.bot_conversations["contained"] += 1
            return next_stage(state.conv.stage, "close")
        self.sessions.pop(conv_id, None)
        self.heard.pop(conv_id, None)
        if state.conv.stage == BOT:
            self.service.stats.bot_conversations["contained"] += 1
        self.contexts.pop(conv_id, None)
        self.resolved_at.pop(conv_id, None)
        self.announced.pop(conv_id, None)
        self.left_messages.pop(conv_id, None)
        self._closing[conv_id] = self.engine.finish(conv_id, time.time())
        return next_stage(state.conv.stage, "close")

    def on_closed(self, state: ConvState) -> None:
        if self._forwarding():
            self.cluster.forward("closed", state.conv.id)
            return
        if state.conv.id not in self._closing:  # this node began to lead between closing and closed
            self.closed_elsewhere(state.conv.id)
            return
        self._carry_out(self._closing.pop(state.conv.id, []))
        self._announce_positions(state.conv.tenant)

    # ---- the lifecycle ------------------------------------------------------------------------

    async def _start(self, state: ConvState, identity: Identity) -> None:
        routing = self.config.for_tenant(state.conv.tenant)
        if routing.bot == "none":
            await self._enqueue(state, "enqueue", {"reason": "no_bot"}, routing.group_for(self._facts(state, {})))
            return
        await self.service.add_participant(system(state.conv.tenant), state, routing.bot_user, "bot", routing.bot_name, fence=self.fence)
        await self._move(state, "bot", routing.bot_user)
        if routing.bot == "builtin" and self.bots is not None:
            await self.bots.ready_for(state.conv.tenant)
            bot = self.bots.for_tenant(state.conv.tenant, routing)
            customer = {"tenant": identity.tenant, "user": identity.user, "channel": identity.channel, "name": identity.name}
            now = time.time()
            product = await self.workspace.product_of(state.conv) if self.workspace is not None else None  # the chat opened from it
            session = self.sessions[state.conv.id] = bot.start(customer, now=now, product=product)
            await self._post_bot(state, routing.bot_user, bot.greeting(session, now=now))
            away = await self.workspace.away_text(state.conv.tenant) if self.workspace is not None else None
            if away is not None:  # outside business hours: the bot says when agents are back
                await self.service.post(Principal(state.conv.tenant, routing.bot_user, "bot"), state, {"kind": "text", "text": away}, fence=self.fence)

    async def _bot_turn(self, state: ConvState, text: str, at: float, product: str | None = None, seq: int = 0) -> None:
        if state.conv.stage != BOT or (seq and self.heard.get(state.conv.id, 0) >= seq):
            return
        if seq:
            self.heard[state.conv.id] = seq
        routing = self.config.for_tenant(state.conv.tenant)
        await self.bots.ready_for(state.conv.tenant)
        bot = self.bots.for_tenant(state.conv.tenant, routing)
        session = self.sessions.get(state.conv.id)
        if session is None:  # started by a process gone since (a restart, another leader): replayed
            session, answered = await self._replayed_session(state, bot, seq, at)
            self.sessions[state.conv.id] = session
            if answered:  # that process answered this message before it went: not twice
                return
        values = await self._answer_values(state.conv) if bot.kb.uses_context else None
        reply = bot.handle(session, text, at, product=product, context=values)
        # the answer to message `seq` is stored under one cmid: carried out twice, it is stored once
        await self._post_bot(state, routing.bot_user, reply, f"re-{seq}" if seq else None)
        if reply.handoff is not None:  # the bot's notice (in the shopper's language) is posted above
            packet = bot.context_packet(session)
            self.sessions.pop(state.conv.id, None)
            self.heard.pop(state.conv.id, None)
            facts = {key: str(packet.get(key) or "") for key in ("language", "intent", "category")}
            await self._handoff(state, {"reason": reply.handoff.code, "detail": reply.handoff.detail}, packet, facts)

    async def _answer_values(self, conv: Conversation) -> dict[str, dict[str, Any]] | None:
        """What fills the variables of the bot's answers ({order.status}, …): the customer's
        context (profile, newest order) and the product in view, from the workspace; None when
        there is none (the bot then says each answer's version for no context)."""
        if self.workspace is None:
            return None
        about = await self.workspace.context(conv)
        return variables.values_from(about.get("context"), about.get("product"))

    async def _replayed_session(self, state: ConvState, bot: Any, seq: int, at: float) -> tuple[Any, bool]:
        """The bot's session as the shopper's stored messages before ``seq`` left it (and whether
        the bot answered message ``seq`` already: a routing input carried out again after its
        leader died; the session then includes it). The bot is deterministic, so reading them again
        rebuilds what the process that answered them held."""
        conv = state.conv
        customer = {"tenant": conv.tenant, "user": conv.customer, "channel": conv.channel, "name": conv.customer}
        started = conv.created_at / 1000 if conv.created_at else at
        session = bot.start(customer, now=started)
        bot.greeting(session, now=started)
        bot_user = self.config.for_tenant(conv.tenant).bot_user
        answered = bool(seq) and await self.service.store.find_message(conv.id, bot_user, f"re-{seq}") is not None
        if seq > 1 or answered:
            page = await self.service.store.read_messages(conv.id, before=seq + 1 if answered else seq, limit=TRANSCRIPT_LIMIT)
            for m in page.messages:
                if m.sender != conv.customer or m.sender_role != "shopper":
                    continue
                said = _shopper_text(m)
                if said is not None:
                    bot.handle(session, said[0], m.ts / 1000, product=said[1])
        log.info("bot session of %s replayed from %d stored turns", conv.id, len(session.turns))
        return session, answered

    async def _post_bot(self, state: ConvState, bot_user: str, reply: Any, cmid: str | None = None) -> None:
        if not reply.answer:
            return
        body: dict[str, Any] = {"kind": "text", "text": reply.answer}
        if reply.quick_replies:
            body["quick_replies"] = list(reply.quick_replies)
        if reply.intent:
            body["intent"] = reply.intent
            body["confidence"] = round(float(reply.confidence), 3)
        if getattr(reply, "product", None):
            body["product"] = reply.product  # answered from this product's catalog entry
        await self.service.post(Principal(state.conv.tenant, bot_user, "bot"), state, body, cmid, fence=self.fence)

    async def _handoff(self, state: ConvState, why: dict[str, Any], packet: dict[str, Any] | None, facts: dict[str, str]) -> None:
        """Bot → queue, with the context the agent will receive."""
        routing = self.config.for_tenant(state.conv.tenant)
        self.service.stats.bot_handoffs[str(why.get("reason") or "unknown")] += 1
        self.service.stats.bot_conversations["handed_off"] += 1
        self.contexts[state.conv.id] = packet or await self._plain_context(state, why)
        self.contexts[state.conv.id]["handoff"] = why
        await self._enqueue(state, "handoff", why, routing.group_for(self._facts(state, facts)))

    async def _enqueue(self, state: ConvState, event: str, why: dict[str, Any], group: str, *, front: bool = False) -> None:
        """Queue the conversation. Outside business hours a shopper's request for a human is a
        message left: served first when agents are back, which the wait estimate and the
        shopper's notice say."""
        conv = state.conv
        back_at = None
        if event in ("handoff", "enqueue") and self.workspace is not None:
            back_at = await self.workspace.back_at(conv.tenant)
            if back_at is not None:
                why = {**why, "leave_message": True, "back_at": int(back_at * 1000)}
                front = True
                if conv.id in self.contexts:
                    self.contexts[conv.id]["handoff"] = why
        if not await self._move(state, event, SYSTEM, group=group, assignee=""):
            return
        now = time.time()
        language = self.contexts.get(conv.id, {}).get("language") or ""
        assignments = self.engine.enqueue(conv.id, conv.tenant, conv.customer, group, now, front=front, language=language)
        if any(a.conv_id == conv.id for a in assignments) and type(why.get("reason")) is str:
            self.unqueued_reasons[conv.id] = why["reason"]  # no `queued` event says why: `assigned` will
        if not assignments:
            place, eta = self.engine.position(conv.id) or (1, None)
            language = self.contexts.get(conv.id, {}).get("language", "zh")
            text = _queue_text(place, eta, language)
            if back_at is not None:
                self.left_messages[conv.id] = back_at
                eta = max(eta or 0, _minutes_until(back_at, self.workspace.clock()))
                text = await self.workspace.away_text(conv.tenant, language) or text
            self.announced[conv.id] = (place, eta)
            await self._event(state, "queued", text, position=place, eta_s=eta, group=group, **why)
        self._carry_out(assignments)

    async def _reopen(self, state: ConvState) -> None:
        if state.conv.stage != RESOLVED:
            return
        self.resolved_at.pop(state.conv.id, None)
        self.contexts[state.conv.id] = await self._plain_context(state, {"reason": "reopened"})
        await self._enqueue(state, "reopen", {"reason": "reopened"}, state.conv.group or "default")

    def carry_out(self, assignments: list[Assignment]) -> None:
        """Carry out the engine's decisions (assign each conversation, in its turn)."""
        self._carry_out(assignments)

    def _carry_out(self, assignments: list[Assignment]) -> None:
        for a in assignments:
            self.announced.pop(a.conv_id, None)
            self.left_messages.pop(a.conv_id, None)
            self.serial.submit(a.conv_id, self._assign, a)
        if assignments:
            for tenant in {a.tenant for a in assignments}:
                self._announce_positions(tenant)

    async def _assign(self, a: Assignment) -> None:
        state = await self.service.load(a.conv_id)
        if state is None or self.engine.assignee(a.conv_id) is None or self.engine.assignee(a.conv_id).user != a.agent:
            return  # closed or moved on while this waited its turn
        previous = state.conv.assignee
        event = {"take": "take", "transfer": "transfer_to_agent"}.get(a.how, "assign")
        await self.service.add_participant(system(a.tenant), state, a.agent, "agent", a.agent_name, fence=self.fence)
        await self._move(state, event, SYSTEM, assignee=a.agent, group=a.group)
        if previous and previous != a.agent:
            await self.service.remove_participant(system(a.tenant), state, previous, "agent", fence=self.fence)
        reason = self.unqueued_reasons.pop(a.conv_id, None)
        await self._event(
            state, "assigned", f"您好，客服{a.agent_name}为您服务", agent=a.agent, agent_name=a.agent_name, waited_s=round(a.waited_s, 1),
            **({"reason": reason} if reason else {}),
        )
        context = self.contexts.get(a.conv_id) or await self._plain_context(state, {"reason": a.how})
        offer = {"t": "assigned", "conv": env.conversation_map(state.conv), "context": context, "how": a.how, "waited_ms": int(a.waited_s * 1000)}
        if self.workspace is not None:  # what the shop knows of the customer (or "pending": it follows)
            offer["customer"] = await self.workspace.assigned_context(state, a.agent)
        self.service.notify_user(a.tenant, a.agent, offer)
        log.info("conversation %s assigned to %s (%s, waited %.1f s)", a.conv_id, a.agent, a.how, a.waited_s)

    async def _move(self, state: ConvState, event: str, by: str, **fields: str) -> bool:
        try:
            stage = next_stage(state.conv.stage, event)
        except IllegalTransition as exc:
            log.warning("conversation %s: %s", state.conv.id, exc)
            return False
        await self.service.update(system(state.conv.tenant), state, by=by, fence=self.fence, stage=stage, **fields)
        return True

    async def _event(self, state: ConvState, event: str, text: str, **fields: Any) -> None:
        """A lifecycle event, stored in the conversation as a system message."""
        await self.service.post(system(state.conv.tenant), state, {"kind": "event", "event": event, "text": text, **fields}, fence=self.fence)

    def _facts(self, state: ConvState, extra: dict[str, str]) -> dict[str, str]:
        return {"channel": state.conv.channel, **{k: v for k, v in extra.items() if v}}

    async def _plain_context(self, state: ConvState, why: dict[str, Any]) -> dict[str, Any]:
        """A context packet from the stored transcript (no bot session to draw on)."""
        page = await self.service.store.read_messages(state.conv.id, before=state.last_seq + 1, limit=TRANSCRIPT_LIMIT)
        transcript = []
        for m in page.messages:
            body = msgpack.unpackb(m.body, raw=False)
            transcript.append({"role": m.sender_role, "from": m.sender, "ts": m.ts, "text": body.get("text", f"[{body.get('kind')}]")})
        conv = state.conv
        return {"customer": {"tenant": conv.tenant, "user": conv.customer, "channel": conv.channel}, "transcript": transcript, "handoff": why}

    def _announce_positions(self, tenant: str) -> None:
        """Tell every waiting shopper of ``tenant`` whose place or estimate moved (not stored)."""
        for waiting in self.engine.queued(tenant):
            where = self.engine.position(waiting.conv_id)
            back_at = self.left_messages.get(waiting.conv_id)
            if where is not None and back_at is not None:  # the wait lasts until agents are back
                where = (where[0], max(where[1] or 0, _minutes_until(back_at, self.workspace.clock())))
            if where is None or self.announced.get(waiting.conv_id) == where:
                continue
            self.announced[waiting.conv_id] = where
            payload = {"t": "queue", "conv": waiting.conv_id, "position": where[0], "eta_s": where[1]}
            self.service.notify(waiting.conv_id, payload)

    def tick(self, now: float) -> None:
        """Once a second: grace periods, queues, reopen windows."""
        for requeue in self.engine.expire(now):
            self.serial.submit(requeue.conv_id, self._requeue, requeue.conv_id, requeue.agent)
        for tenant in {w.tenant for w in self.engine.waiting.values()}:
            self._carry_out(self.engine.dispatch(tenant, now))
            self._announce_positions(tenant)
        for conv_id, resolved in list(self.resolved_at.items()):
            routing_window = self._window_of(conv_id)
            if routing_window is not None and now - resolved > routing_window:
                del self.resolved_at[conv_id]
                self.serial.submit(conv_id, self._expire_resolved, conv_id)

    def _window_of(self, conv_id: str) -> float | None:
        state = self.service.cached(conv_id)
        tenant = state.conv.tenant if state is not None else None
        return self.config.for_tenant(tenant).reopen_window_s if tenant else self.config.default.reopen_window_s

    async def _expire_resolved(self, conv_id: str) -> None:
        state = await self.service.load(conv_id)
        if state is not None and state.conv.stage == RESOLVED:
            await self.service.update(system(state.conv.tenant), state, fence=self.fence, status=CLOSED, stage=next_stage(RESOLVED, "close"))

    async def _requeue(self, conv_id: str, agent: str) -> None:
        """The agent's grace period ran out: first in line again, with the context kept."""
        state = await self.service.load(conv_id)
        if state is None or state.conv.stage != ASSIGNED:
            return
        self.contexts[conv_id] = await self._plain_context(state, {"reason": "agent_left", "agent": agent})
        await self._event(state, "requeued", "客服暂时离开，正在为您重新安排客服", agent=agent)
        await self._enqueue(state, "requeue", {"reason": "agent_left"}, state.conv.group or "default", front=True)

    # ---- requests -----------------------------------------------------------------------------

    def _status(self, identity: Identity, req: dict[str, Any]) -> dict[str, Any]:
        authz.check("status", identity, identity.tenant)
        status = env.need_choice(req, "status", ("online", "away", "offline"))
        max_active = env.need_int(req, "max", optional=True, minimum=0)
        groups = req.get("groups")
        if groups is not None and (type(groups) is not list or not all(type(g) is str for g in groups)):
            raise RequestError("bad_request", "field `groups` must be a list of skill group names")
        if (identity.tenant, identity.user) not in self.engine.agents:
            self.engine.connected(identity.tenant, identity.user)  # a supervisor's first status
        try:
            assignments = self.engine.set_status(
                identity.tenant, identity.user, status, time.time(), name=identity.name, max_active=max_active,
                groups=frozenset(groups) if groups is not None else None,
            )
        except RoutingError as exc:
            raise RequestError(exc.code, exc.message) from None
        agent = self.engine.agent(identity.tenant, identity.user)
        self._carry_out(assignments)
        if self.cluster is not None:  # the next leader starts from it
            self.cluster.remember_status(identity.tenant, identity.user, agent.status, agent.max_active, sorted(agent.groups), agent.name)
        return dict(status=agent.status, max=agent.max_active, groups=sorted(agent.groups), active=sorted(agent.active))

    async def _take(self, identity: Identity, req: dict[str, Any]) -> dict[str, Any]:
        state = await self.service.access(identity, env.need_str(req, "conv", env.ID_CHARS), "take")
        try:
            assignment = self.engine.take(identity.tenant, identity.user, state.conv.id, time.time())
        except RoutingError as exc:
            raise RequestError(exc.code if exc.code != "conflict" else "forbidden", exc.message) from None
        self._carry_out([assignment])
        return dict(conv=state.conv.id)

    async def _transfer_request(self, identity: Identity, req: dict[str, Any]) -> dict[str, Any]:
        conv_id = env.need_str(req, "conv", env.ID_CHARS)
        to_agent = env.need_str(req, "to_agent", 128, optional=True)
        to_group = env.need_str(req, "to_group", 64, optional=True)
        note = env.need_str(req, "note", 1000, optional=True, empty=True) or ""
        await self.transfer(identity, conv_id, to_agent=to_agent, to_group=to_group, note=note)
        return dict(conv=conv_id)

    async def transfer(self, who: Principal, conv_id: str, *, to_agent: str | None = None, to_group: str | None = None, note: str = "") -> None:
        """Hand a conversation to one agent or back to a group's queue (the ``transfer`` request;
        REST), in the conversation's turn."""
        await self.serial.call(conv_id, self._transfer, who, conv_id, to_agent, to_group, note)

    async def _transfer(self, identity: Principal, conv_id: str, to_agent: str | None, to_group: str | None, note: str) -> None:
        state = await self.service.access(identity, conv_id, "transfer")
        if (to_agent is None) == (to_group is None):
            raise RequestError("bad_request", "give exactly one of `to_agent` and `to_group`")
        if identity.role == "agent" and state.conv.assignee != identity.user:
            raise RequestError("forbidden", "only the assigned agent or a supervisor transfers a conversation")
        if state.conv.stage not in (ASSIGNED, QUEUED):
            raise RequestError("forbidden", f"a conversation that is {state.conv.stage} cannot be transferred")
        routing = self.config.for_tenant(state.conv.tenant)
        if to_group is not None and to_group not in {g.name for g in routing.groups}:
            raise RequestError("bad_request", f"unknown skill group {to_group!r}")
        context = self.contexts.get(state.conv.id) or await self._plain_context(state, {})
        context["transfer"] = {"from": identity.user, "note": note, "to_agent": to_agent, "to_group": to_group}
        self.contexts[state.conv.id] = context
        now = time.time()
        if to_agent is not None:
            try:
                assignment = self.engine.transfer_to_agent(state.conv.id, state.conv.tenant, state.conv.customer, state.conv.group, to_agent, now)
            except RoutingError as exc:
                raise RequestError("forbidden", exc.message) from None
            await self._event(state, "transferred", "正在为您转接其他客服", by=identity.user, to_agent=to_agent)
            self._carry_out([assignment])
        else:
            previous = state.conv.assignee
            await self._event(state, "transferred", "正在为您转接其他客服", by=identity.user, to_group=to_group)
            await self._enqueue(state, "transfer", {"reason": "transfer"}, to_group)
            if previous:
                await self.service.remove_participant(system(state.conv.tenant), state, previous, "agent", fence=self.fence)

    async def _resolve_request(self, identity: Identity, req: dict[str, Any]) -> dict[str, Any]:
        conv = await self.resolve(identity, env.need_str(req, "conv", env.ID_CHARS))
        return dict(conv=env.conversation_map(conv))

    async def resolve(self, who: Principal, conv_id: str) -> Conversation:
        """End the service (the ``resolve`` request; REST), in the conversation's turn; the
        shopper's next message reopens it within the reopen window."""
        return await self.serial.call(conv_id, self._resolve, who, conv_id)

    async def _resolve(self, identity: Principal, conv_id: str) -> Conversation:
        state = await self.service.access(identity, conv_id, "resolve")
        # then: an agent only if assigned, a bot only while it serves
        if (identity.role == "agent" and state.conv.assignee != identity.user) or (identity.role == "bot" and state.conv.stage != BOT):
            raise RequestError("forbidden", "only the assigned agent, the bot, the customer or a supervisor resolves a conversation")
        if state.conv.stage not in (BOT, ASSIGNED):
            raise RequestError("forbidden", f"a conversation that is {state.conv.stage} cannot be resolved")
        self.sessions.pop(state.conv.id, None)
        self.heard.pop(state.conv.id, None)
        if state.conv.stage == BOT:
            self.service.stats.bot_conversations["contained"] += 1  # the bot finished it, no person needed
        await self._move(state, "resolve", identity.user)
        self.resolved_at[state.conv.id] = time.time()
        self._carry_out(self.engine.finish(state.conv.id, time.time()))
        await self._event(state, "resolved", "本次服务已结束，感谢您的咨询。如还有问题，直接回复即可", by=identity.user)
        if self.workspace is not None:
            await self.workspace.resolved(state)
        return state.conv

    async def _handoff_request(self, identity: Identity, req: dict[str, Any]) -> dict[str, Any]:
        """The shopper asks for a human, or an external bot hands over."""
        state = await self.service.access(identity, env.need_str(req, "conv", env.ID_CHARS), "handoff")
        if state.conv.stage != BOT:
            return dict(stage=state.conv.stage)  # already with (or waiting for) a human
        reason = env.need_str(req, "reason", 200, optional=True, empty=True) or ""
        why = {"reason": "asked_for_human" if identity.role == "shopper" else "bot_request", "detail": reason}
        packet = req.get("context") if identity.role == "bot" and type(req.get("context")) is dict else None
        session = self.sessions.pop(state.conv.id, None)
        self.heard.pop(state.conv.id, None)
        if session is not None and packet is None:
            routing = self.config.for_tenant(state.conv.tenant)
            packet = self.bots.for_tenant(state.conv.tenant, routing).context_packet(session)
        await self._handoff(state, why, packet, {})
        return dict(stage=state.conv.stage)

    async def _queues(self, identity: Identity, req: dict[str, Any]) -> dict[str, Any]:
        authz.check("queues", identity, identity.tenant)
        snapshot = self.engine.snapshot(identity.tenant, time.time())
        return dict(**snapshot)

