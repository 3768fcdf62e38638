"""Routing across gateway processes: one leader decides, the others forward to it.

Only the node holding the routing lease (gateway.routing.lease) runs the ``RoutingEngine``: one
queue, one count of each agent's conversations, one bot per conversation, for the whole cluster.
Every other node forwards what routing must hear, in the order it happened there, to a Redis list
(the leader's inbox, ``<channel>:routing:inbox``):

- conversations opened, shopper messages that may need the bot or reopen a conversation, closes;
- agents' connections coming and going (``presence``), and a full ``snapshot`` of them whenever
  the node sees a new leader and every 30 s;
- agents' and supervisors' requests (``status``, ``take``, ``transfer``, ``resolve``, ``handoff``,
  ``queues``, and the REST API's), answered on the node's own reply list, correlated by id; no
  answer within ``reply_timeout_s`` is the retryable error ``unavailable``.

The leader's decisions are stored on the conversation and published on the bus like any other
change, so every node tells its own participants. Inputs wait in the list while no node leads; the
leader moves them to a processing list while it carries them out, and a new leader puts back what
a dead one left there: each input is carried out at least once.

Each node also writes a heartbeat key with a time to live; the leader counts the agents connected
through each node, and when a node's key expires (the node died) its agents' connections are
dropped: their grace period runs, then their conversations go back to the queue. A new leader
restores queues and assignments from the store (as one process does at start), agents' statuses
from a Redis hash the leader keeps, and connections from the snapshots every node sends it.

Each term has a number, its fence (gateway.routing.lease), which the leader claims in the store
before it restores and which every routing write of the term carries. A write the store refuses
(a later leader has written: this node was paused or cut off past its lease, its write on the way)
ends the term at once, and the next heartbeat steps aside: the fence counter is raised past what
the store has seen (in case Redis lost it) and the lease given back if this node still holds it.

The leader's own connections and requests go straight to its engine: no round trip. The single
process gateway (SQLite, in-process bus) has no ``Cluster`` at all.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from ..model import Principal, StoredMessage
from ..protocol.errors import RequestError
from ..store.base import StaleFence
from .engine import RoutingError
from .lease import Lease
from .redis_client import RedisClient, RedisUnavailable

if TYPE_CHECKING:
    from ..metrics import Stats
    from .service import RoutingService

log = logging.getLogger("kefu.routing.cluster")

TICK_S = 1.0
MAX_OUTBOX = 100_000  # inputs waiting for Redis; past it the oldest are dropped (logged, counted)
INBOX_BATCH = 100
BLOCK_S = 1  # how long one BLPOP waits in Redis for the inbox or replies
SNAPSHOT_S = 30.0  # how often a node restates its agents' connections to the leader
REPLY_TTL_MS = 60_000  # a reply list nobody reads (its node died) expires
PRESENCE_ROLES = ("agent", "supervisor")
# Up to ARGV[1] inputs from the inbox (KEYS[1]) to the end of the processing list (KEYS[2]), in one step
TAKE = """local items = redis.call('lpop', KEYS[1], ARGV[1])
if items then for _, item in ipairs(items) do redis.call('rpush', KEYS[2], item) end end
return items"""
# Everything in the processing list (KEYS[1]) back to the head of the inbox (KEYS[2]), in order
RETURN = """local n = 0
while redis.call('rpoplpush', KEYS[1], KEYS[2]) do n = n + 1 end
return n"""

PresenceKey = tuple[str, str, str]  # tenant, user, role


class Cluster:
    def __init__(
        self, url: str, node_id: str, *, prefix: str, lease_s: float = 10.0, reply_timeout_s: float = 5.0, stats: Stats | None = None
    ) -> None:
        """``prefix``: of every Redis key (the bus channel's name: clusters sharing a Redis use
        different ones); ``lease_s``: the lease's and the heartbeats' time to live."""
        self.url = url
        self.node_id = node_id
        self.prefix = prefix
        self.lease_s = lease_s
        self.reply_timeout_s = reply_timeout_s
        self.stats = stats
        # answers within a third of the lease: a step never outlasts the time the lease allows
        self.commands = RedisClient(url, f"kefu-{node_id}-routing", timeout_s=min(2.0, lease_s / 3))
        self.lease = Lease(self.commands, f"{prefix}:leader", node_id, lease_s)
        self.leading = False  # this node decides (its term restored): hooks go straight to the engine
        self.leader_term: str | None = None  # the term this node last saw holding the lease
        self.local: Counter[PresenceKey] = Counter()  # agents' and supervisors' connections to this node
        self.nodes: dict[str, Counter[PresenceKey]] = {}  # while leading: connections through each node
        self.forward_timeouts = 0
        self.forward_dropped = 0
        self.routing: RoutingService | None = None
        self._outbox: deque[bytes] = deque()
        self._wake = trio.Event()
        self._waiting: dict[str, tuple[trio.Event, list]] = {}  # request id -> (answered, [answer])
        self._nursery: trio.Nursery | None = None
        self._term: trio.Nursery | None = None
        self._term_scope: trio.CancelScope | None = None
        self._term_over = trio.Event()  # set once the last term's task has finished (cancelled terms wait for their store calls)
        self._term_over.set()
        self._next_snapshot = 0.0
        self._acks: deque[bytes] = deque()  # inputs carried out, to take off the processing list
        self._acks_wake = trio.Event()
        self._fence_seen = 0  # a fence above this node's term that the store refused a write for: step aside

    # ---- keys ---------------------------------------------------------------------------------

    @property
    def inbox(self) -> str:
        return f"{self.prefix}:inbox"

    @property
    def processing(self) -> str:
        return f"{self.prefix}:processing"

    @property
    def statuses(self) -> str:
        return f"{self.prefix}:agents"

    def reply_key(self, node: str) -> str:
        return f"{self.prefix}:reply:{node}"

    def node_key(self, node: str) -> str:
        return f"{self.prefix}:node:{node}"

    # ---- running ------------------------------------------------------------------------------

    async def run(self, routing: RoutingService, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Heartbeat, contend for the lease, lead while holding it; forward and answer always."""
        self.routing = routing
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._send_outbox)
                nursery.start_soon(self._receive_replies)
                await self._step()  # the first node of a cluster takes the lease before it accepts anyone
                task_status.started()
                while True:  # at least once a second: a lease given back is taken at once
                    await trio.sleep(min(self.lease_s / 3, 1.0))
                    await self._step()
        finally:
            self._step_down("stopping")
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                try:
                    await self.lease.release()  # a graceful stop: another node leads at once
                    await self.commands.call("DEL", self.node_key(self.node_id))
                except RedisUnavailable:
                    pass
            await self.commands.aclose()

    async def _step(self) -> None:
        """One heartbeat: renew or contend for the lease; a follower sees who leads."""
        try:
            await self.commands.call("SET", self.node_key(self.node_id), "1", "PX", int(self.lease_s * 1000))
            if self._fence_seen and self._term_scope is None:
                await self.lease.step_aside(self._fence_seen)
                self._fence_seen = 0
            if self.leading or self._term_scope is not None:
                if not await self.lease.renew():
                    self._step_down("lease lost")
            elif not self._term_over.is_set():
                pass  # the last term, cancelled, still ends (a store read is not cancellable): its cleanup would undo a new one
            elif await self.lease.acquire():
                assert self._nursery is not None
                await self._nursery.start(self._lead)
            else:
                holder = await self.lease.holder()
                if holder != self.leader_term:
                    self.leader_term = holder
                    if holder is not None:
                        log.info("routing leader is %s", holder)
                        self._send_snapshot()
                elif holder is not None and time.monotonic() >= self._next_snapshot:
                    self._send_snapshot()  # now and then anyway: a delta sent twice (a Redis blip) is forgotten
        except RedisUnavailable as exc:
            log.warning("routing: %s", exc)
        if self._term_scope is not None and not self.lease.held:
            self._step_down("lease not renewed in time")

    def fenced_out(self, refused: StaleFence) -> None:
        """The store refused a write of this node's term: a later leader has written. The term
        ends now; the next heartbeat steps aside. A refusal for an earlier term changes nothing."""
        if refused.fence != self.lease.fence:
            return
        self._fence_seen = max(self._fence_seen, refused.highest)
        self._step_down(f"the store has seen fence {refused.highest}, above this term's {refused.fence}: a later leader has written")

    def _step_down(self, why: str) -> None:
        if self._term_scope is None:
            return
        log.warning("this node stops leading routing: %s", why)
        self.leading = False
        self._term_scope.cancel()
        self._term_scope = None
        if self.routing is not None:
            self.routing.serial.abandon()

    async def _lead(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """One term: restore routing from the store, then decide until the lease is lost. Inputs
        that arrive while it restores (this node's own too) wait in the inbox."""
        routing = self.routing
        assert routing is not None
        over = self._term_over = trio.Event()
        with trio.CancelScope() as scope:
            self._term_scope = scope
            task_status.started()  # the lease keeps being renewed while the store is read
            try:
                async with trio.open_nursery() as term:
                    self._term = term
                    routing.serial.nursery = term
                    routing.reset()
                    self.nodes = {}
                    if not await routing.begin_term(self.lease.fence):  # the store has seen a later term's
                        return
                    await routing.restore()
                    if routing.bots is not None:  # knowledge bases stored through the API, fitted in the background
                        term.start_soon(routing.bots.prefit_stored)
                    await self._restore_statuses()
                    self.leader_term = self.lease.term
                    self.leading = True
                    self._apply_snapshot(self.node_id, Counter(self.local))
                    log.info("this node leads routing (term %s, fence %d)", self.lease.term, self.lease.fence)
                    self._acks.clear()  # a previous term's: their inputs come back from the processing list
                    term.start_soon(self._send_acks)
                    term.start_soon(self._tick)
                    term.start_soon(self._serve_inbox)
            except Exception:  # the store or Redis failed mid-term: give the lease back, contend again
                log.exception("routing term ended by an error; the lease is given back")
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    try:
                        await self.lease.release()
                    except RedisUnavailable:
                        pass
            finally:
                self.leading = False
                self._term = None
                if self._term_scope is scope:
                    self._term_scope = None
                routing.serial.abandon()
                routing.reset()  # a node that does not lead holds no routing state
                over.set()  # (an error above ends the whole cluster task: nothing would contend anyway)

    # ---- what the routing service calls -------------------------------------------------------

    def forward(self, kind: str, *args: Any) -> None:
        """Hand an input to the leader (in order; sent by a task, many per round trip)."""
        if len(self._outbox) >= MAX_OUTBOX:
            self._outbox.popleft()
            self.forward_dropped += 1
            log.error("routing inputs waiting for Redis past %d: the oldest dropped", MAX_OUTBOX)
        self._outbox.append(msgpack.packb([kind, self.node_id, *args], use_bin_type=True))
        self._wake.set()

    async def request(self, t: str, who: Principal, fields: dict[str, Any]) -> dict[str, Any]:
        """A routing request served by the leader; ``unavailable`` when it does not answer in time."""
        rid = secrets.token_hex(8)
        answered, answer = self._waiting[rid] = (trio.Event(), [])
        principal = [who.tenant, who.user, who.role, who.channel, who.name]
        self.forward("request", rid, time.time() + self.reply_timeout_s, t, principal, fields)
        try:
            with trio.move_on_after(self.reply_timeout_s):
                await answered.wait()
        finally:
            self._waiting.pop(rid, None)
        if not answer:
            self.forward_timeouts += 1
            log.warning("routing request %s not answered within %g s (leader %s)", t, self.reply_timeout_s, self.leader_term)
            raise RequestError("unavailable", "routing did not answer in time (its leader may be changing): retry")
        ok, *rest = answer[0]
        if ok:
            return rest[0]
        raise RequestError(rest[0], rest[1])

    def presence(self, who: Principal, delta: int) -> None:
        """An agent's (or supervisor's) connection to this node opened (+1) or closed (-1)."""
        if who.role not in PRESENCE_ROLES:
            return
        key = (who.tenant, who.user, who.role)
        self.local[key] += delta
        if self.local[key] <= 0:
            del self.local[key]
        if self.leading:
            self._apply_presence(self.node_id, key, delta)
        else:
            self.forward("presence", *key, delta)

    def remember_status(self, tenant: str, user: str, status: str, max_active: int, groups: list[str], name: str) -> None:
        """The leader keeps agents' statuses in Redis: the next leader starts from them."""
        if self._term is None:
            return
        field = msgpack.packb([tenant, user], use_bin_type=True)
        value = msgpack.packb([status, max_active, groups, name], use_bin_type=True)
        self._term.start_soon(self._quietly, ("HSET", self.statuses, field, value))

    async def _quietly(self, cmd: tuple) -> None:
        try:
            await self.commands.call(*cmd)
        except RedisUnavailable as exc:
            log.warning("routing: %s", exc)

    # ---- the follower's side ------------------------------------------------------------------

    def _send_snapshot(self) -> None:
        self._next_snapshot = time.monotonic() + SNAPSHOT_S
        self.forward("snapshot", [[*key, count] for key, count in self.local.items()])

    async def _send_outbox(self) -> None:
        failures = 0
        while True:
            if not self._outbox:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            batch = list(self._outbox)
            try:
                await self.commands.call("RPUSH", self.inbox, *batch)
            except RedisUnavailable as exc:
                failures += 1
                log.warning("routing inputs not sent (%s); retrying", exc)
                await trio.sleep(min(0.05 * 2**failures, 1.0))
                continue
            failures = 0
            for _ in batch:
                self._outbox.popleft()

    async def _receive_replies(self) -> None:
        client = RedisClient(self.url, f"kefu-{self.node_id}-replies", timeout_s=BLOCK_S + 2.0)
        try:
            while True:
                try:
                    got = await client.call("BLPOP", self.reply_key(self.node_id), BLOCK_S)
                except RedisUnavailable:
                    await trio.sleep(0.5)
                    continue
                if not isinstance(got, list):
                    continue
                rid, *answer = msgpack.unpackb(got[1], raw=False)
                waiting = self._waiting.get(rid)
                if waiting is not None:
                    waiting[1].append(answer)
                    waiting[0].set()
        finally:
            await client.aclose()

    # ---- the leader's side --------------------------------------------------------------------

    async def _restore_statuses(self) -> None:
        routing = self.routing
        assert routing is not None
        try:
            flat = await self.commands.call("HGETALL", self.statuses)
        except RedisUnavailable as exc:
            log.warning("agents' statuses not restored: %s", exc)
            flat = []
        now = time.time()
        assignments = []
        for field, value in zip(flat[::2], flat[1::2]):
            tenant, user = msgpack.unpackb(field, raw=False)
            status, max_active, groups, name = msgpack.unpackb(value, raw=False)
            try:
                assignments += routing.engine.set_status(tenant, user, status, now, name=name, max_active=max_active, groups=frozenset(groups))
            except RoutingError as exc:
                log.info("status of %s/%s not restored: %s", tenant, user, exc.message)
        routing.engine.start_grace(now)  # nobody is known connected until the nodes say so
        routing.carry_out(assignments)

    async def _tick(self) -> None:
        routing = self.routing
        assert routing is not None
        while True:
            await trio.sleep(TICK_S)
            routing.tick(time.time())
            for node in [n for n in self.nodes if n != self.node_id]:
                try:
                    alive = await self.commands.call("EXISTS", self.node_key(node))
                except RedisUnavailable:
                    break
                if alive == 0 and node in self.nodes:
                    log.warning("node %s stopped heartbeating: its agents' connections are dropped", node)
                    self._apply_snapshot(node, Counter())
                    del self.nodes[node]

    async def _serve_inbox(self) -> None:
        """Take inputs from the inbox into the processing list, atomically, and carry them out;
        each leaves the processing list once carried out (``_ack``). A term begins by putting back
        at the head of the inbox what a previous leader took and did not finish: every input is
        carried out at least once (and the inputs are idempotent enough, docs/scaling.md)."""
        client = RedisClient(self.url, f"kefu-{self.node_id}-inbox", timeout_s=BLOCK_S + 2.0)
        returned = False
        try:
            while True:
                try:
                    if not returned:
                        back = await client.call("EVAL", RETURN, 2, self.processing, self.inbox)
                        returned = True
                        if back:
                            log.warning("%d routing inputs a previous leader had not finished are carried out again", back)
                    got = await client.call("BLMOVE", self.inbox, self.processing, "LEFT", "RIGHT", BLOCK_S)
                    if not isinstance(got, bytes):
                        continue
                    self._handle(got)
                    more = await client.call("EVAL", TAKE, 2, self.inbox, self.processing, INBOX_BATCH)
                except RedisUnavailable as exc:
                    log.warning("routing inbox: %s", exc)
                    await trio.sleep(0.5)
                    continue
                for raw in more if isinstance(more, list) else ():
                    self._handle(raw)
        finally:
            await client.aclose()

    def _handle(self, raw: bytes) -> None:
        try:
            kind, node, *args = msgpack.unpackb(raw, raw=False)
            finished = self._carry(kind, node, args, raw)
        except Exception:  # one bad input must not stop routing
            log.exception("routing input could not be handled")
            finished = True
        if finished:
            self._ack(raw)

    def _carry(self, kind: str, node: str, args: list, raw: bytes) -> bool:
        """Carry out one input; True if done already, else ``_ack`` follows when it is."""
        routing = self.routing
        assert routing is not None and self._term is not None
        if kind == "opened":
            conv_id, principal = args
            routing.opened_elsewhere(conv_id, Principal(*principal))
            routing.serial.submit(conv_id, self._acked, raw)  # after the step above, in the conversation's turn
            return False
        if kind == "message":
            conv_id, seq, cmid, sender, role, ts, body = args
            routing.message_elsewhere(StoredMessage(conv_id, seq, cmid, sender, role, ts, body))
            routing.serial.submit(conv_id, self._acked, raw)
            return False
        if kind == "closed":
            routing.closed_elsewhere(args[0])
        elif kind == "presence":
            if node != self.node_id:  # this node's own count is kept directly
                tenant, user, role, delta = args
                self._apply_presence(node, (tenant, user, role), delta)
        elif kind == "snapshot":
            if node != self.node_id:
                self._apply_snapshot(node, Counter({(t, u, r): c for t, u, r, c in args[0]}))
        elif kind == "request":
            rid, deadline, t, principal, fields = args
            if time.time() > deadline:  # its sender has answered `unavailable` already
                return True
            self._term.start_soon(self._answer, node, rid, t, Principal(*principal), fields, raw)
            return False
        elif kind == "configure":
            self._term.start_soon(self._reload, raw, routing.reload_tenant, args[0])
            return False
        elif kind == "agent":
            self._term.start_soon(self._reload, raw, routing.reload_agent, args[0], args[1])
            return False
        elif kind == "knowledge_base":
            self._term.start_soon(self._reload, raw, routing.use_knowledge_base, args[0])
            return False
        else:
            log.error("unknown routing input %r from %s", kind, node)
        return True

    async def _acked(self, raw: bytes) -> None:
        self._ack(raw)

    def _ack(self, raw: bytes) -> None:
        """``raw`` is carried out: off the processing list (by a task, many per round trip)."""
        self._acks.append(raw)
        self._acks_wake.set()

    async def _send_acks(self) -> None:
        while True:
            if not self._acks:
                self._acks_wake = trio.Event()
                await self._acks_wake.wait()
                continue
            batch = list(self._acks)
            try:
                await self.commands.pipeline([("LREM", self.processing, 1, raw) for raw in batch])
            except RedisUnavailable as exc:
                log.warning("routing inputs not yet marked done: %s", exc)
                await trio.sleep(0.5)
                continue
            for _ in batch:
                self._acks.popleft()

    async def _reload(self, raw: bytes, fn: Any, *args: str) -> None:
        try:
            await fn(*args)
        finally:
            self._ack(raw)

    async def _answer(self, node: str, rid: str, t: str, who: Principal, fields: dict[str, Any], raw: bytes) -> None:
        assert self.routing is not None
        try:
            answer = [rid, True, await self.routing.request(who, t, fields)]
        except RequestError as exc:
            answer = [rid, False, exc.code, exc.message]
        except Exception:
            log.exception("routing request %s failed", t)
            answer = [rid, False, "internal", "routing failed on this request"]
        key = self.reply_key(node)
        try:
            await self.commands.pipeline([("RPUSH", key, msgpack.packb(answer, use_bin_type=True)), ("PEXPIRE", key, REPLY_TTL_MS)])
        except RedisUnavailable as exc:
            log.warning("routing reply to %s lost: %s", node, exc)
        self._ack(raw)

    def _apply_presence(self, node: str, key: PresenceKey, delta: int) -> None:
        counts = self.nodes.setdefault(node, Counter())
        if delta < 0 and counts[key] <= 0:  # sent before this node's snapshot reached this term
            return
        counts[key] += delta
        if counts[key] <= 0:
            del counts[key]
        self._tell(key, delta)

    def _apply_snapshot(self, node: str, now_there: Counter[PresenceKey]) -> None:
        """``node`` holds exactly these connections: apply the difference from what was known."""
        before = self.nodes.get(node, Counter())
        for key in set(before) | set(now_there):
            self._tell(key, now_there[key] - before[key])
        self.nodes[node] = Counter({k: c for k, c in now_there.items() if c > 0})

    def _tell(self, key: PresenceKey, delta: int) -> None:
        routing = self.routing
        assert routing is not None
        who = Principal(key[0], key[1], key[2])
        for _ in range(abs(delta)):
            if delta > 0:
                routing.agent_connected(who)
            else:
                routing.agent_disconnected(who)
