"""The generator's worker processes: each runs one workload's share of connections on uvloop.

A worker is spawned by the coordinator (``bench.run``) with a spec dict, and talks to it over a pipe
in a fixed script: it sets up its connections and says ``ready``; waits for ``go`` (a plan of
absolute ``time.monotonic_ns()`` instants, one clock for every process); runs, sending ``progress``
every quarter second; and ends with ``done`` and its results (counts, latency samples, sequence
checks). A worker that fails sends ``failed`` with the traceback. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import resource
import time
import traceback
from collections import Counter
from typing import Any, Awaitable, Callable

import msgpack

from .client import Link, LinkClosed, ServerError, link_class
from .measure import Latencies, SeqTracker, Series, add_checks, empty_checks, monotonic_ns

TEXT = "您好，请问这件衣服什么时候发货？"  # a realistic short chat line (48 bytes of UTF-8)
PROGRESS_S = 0.25
DRAIN_TIMEOUT_S = 20.0

_packb = msgpack.packb


def raise_nofile() -> None:
    """Soft limit of open files up to the hard limit (every process of the bench does this)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def entry(pipe: Any, spec: dict[str, Any]) -> None:
    """Process entry point (multiprocessing, spawn)."""
    raise_nofile()
    import uvloop

    try:
        uvloop.run(_main(pipe, spec))
    except BaseException:
        try:
            pipe.send(("failed", traceback.format_exc()))
        except OSError:
            pass
        raise


async def _main(pipe: Any, spec: dict[str, Any]) -> None:
    channel = Channel(pipe)
    workload = WORKLOADS[spec["workload"]](spec, channel)
    try:
        await workload.run()
    finally:
        channel.close()
        await workload.close_all()


class Channel:
    """The pipe to the coordinator, readable from the event loop."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.queue: asyncio.Queue = asyncio.Queue()
        asyncio.get_running_loop().add_reader(pipe.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            while self.pipe.poll():
                self.queue.put_nowait(self.pipe.recv())
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())
            self.queue.put_nowait(("eof", None))

    async def recv(self, kind: str, timeout: float = 600.0) -> Any:
        msg, payload = await asyncio.wait_for(self.queue.get(), timeout)
        if msg == "eof":
            raise SystemExit("coordinator went away")
        if msg != kind:
            raise RuntimeError(f"expected {kind!r} from the coordinator, got {msg!r}")
        return payload

    def send(self, kind: str, payload: Any = None) -> None:
        # the event loop made the pipe non-blocking when it started watching it; a result bigger than
        # the pipe's buffer must be written whole, so write in blocking mode
        os.set_blocking(self.pipe.fileno(), True)
        self.pipe.send((kind, payload))

    def close(self) -> None:
        try:
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())
        except (ValueError, OSError):
            pass


async def sleep_until(t_ns: int) -> None:
    delay = (t_ns - monotonic_ns()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)


async def bounded(factories: list[Callable[[], Awaitable[Any]]], concurrency: int) -> list[Any]:
    """Run coroutine factories with at most ``concurrency`` at once; results (or exceptions) in order."""
    results: list[Any] = [None] * len(factories)
    it = iter(enumerate(factories))

    async def lane() -> None:
        for i, factory in it:
            try:
                results[i] = await factory()
            except Exception as exc:  # noqa: BLE001 - reported per item
                results[i] = exc

    await asyncio.gather(*(lane() for _ in range(max(1, min(concurrency, len(factories))))))
    return results


def error_name(exc: BaseException) -> str:
    if isinstance(exc, ServerError):
        return str(exc.code)
    if isinstance(exc, LinkClosed):
        return f"closed:{exc.code}" if exc.code else "closed"
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    return type(exc).__name__


class Workload:
    """What every worker workload shares: its spec, its links, tokens, progress reports."""

    def __init__(self, spec: dict[str, Any], channel: Channel) -> None:
        self.spec = spec
        self.channel = channel
        self.w = spec["worker"]
        self.links: list[Link] = []
        self.Link = link_class(spec["client"])
        self.checks = empty_checks()
        self.errors: Counter = Counter()
        self.expected_close = False
        self._progress: asyncio.Task | None = None

    def token(self, user: str, role: str, channel: str = "app") -> str:
        from gateway.auth import mint_token

        return mint_token(self.spec["secret"], tenant=self.spec["tenant"], user=user, role=role, channel=channel, ttl_s=6 * 3600)

    async def connect(self, user: str, role: str, *, token: str | None = None, link: Link | None = None) -> Link:
        link = link or self.Link()
        link.on_close = self._on_close
        await link.open(self.spec["url"], token or self.token(user, role), local_addr=self.spec.get("local_addr"))
        self.links.append(link)
        return link

    def _on_close(self, link: Link) -> None:
        if not self.expected_close and not getattr(link, "dropped", False):
            self.checks["closed"] += 1
            if link.close_code:
                self.errors[f"close:{link.close_code}"] += 1

    def on_error(self, frame: dict[str, Any]) -> None:
        self.errors[str(frame.get("code"))] += 1

    def progress(self) -> dict[str, Any]:
        return {}

    def start_progress(self) -> None:
        async def report() -> None:
            while True:
                await asyncio.sleep(PROGRESS_S)
                self.channel.send("progress", self.progress())

        self._progress = asyncio.get_running_loop().create_task(report())

    def stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.cancel()

    def final_checks(self) -> dict[str, Any]:
        checks = dict(self.checks)
        checks["errors"] = dict(self.errors)
        return checks

    async def close_all(self) -> None:
        self.expected_close = True
        self.stop_progress()
        links = [link for link in self.links if not link.closed]
        await bounded([lambda link=link: link.close() for link in links], 500)

    async def run(self) -> None:
        raise NotImplementedError


# ---- pairs ------------------------------------------------------------------------------------------


class Side:
    """One participant of a pair: sends with a window of K unacknowledged messages, checks the
    conversation's sequence on its connection (its acks and the other's messages together)."""

    __slots__ = ("pair", "link", "conv", "prefix", "sent_at", "ids", "tracker", "sends")

    def __init__(self, pair: Pairs, link: Link, conv: str, prefix: str, sends: bool) -> None:
        self.pair = pair
        self.link = link
        self.conv = conv
        self.prefix = prefix
        self.sent_at: dict[int, int] = {}
        self.ids = itertools.count(1)
        self.tracker = SeqTracker()
        self.sends = sends
        link.on_frame = self.on_frame

    def send_one(self, now: int) -> None:
        rid = next(self.ids)
        self.link.send_bytes(_packb({
            "t": "send", "id": rid, "conv": self.conv, "cmid": f"{self.prefix}{rid}",
            "body": {"kind": "text", "text": TEXT, "t0": now},
        }))
        self.sent_at[rid] = now

    def on_frame(self, f: dict[str, Any]) -> None:
        t = f["t"]
        now = monotonic_ns()
        pair = self.pair
        if t == "ack":
            t0 = self.sent_at.pop(f["id"], None)
            seq = f["seq"]
            self.tracker.see(seq)
            if seq > pair.last_seq[self.conv]:
                pair.last_seq[self.conv] = seq
            pair.acked += 1
            if pair.m0 <= now < pair.m1:
                pair.accepted += 1
                if t0 is not None:
                    pair.ack_lat.add_ns(now - t0)
            pair.acc_series.add(now)
            if now < pair.m1 and pair.sending:
                self.send_one(now)
        elif t == "msg":
            self.tracker.see(f["seq"])
            pair.received += 1
            if pair.m0 <= now < pair.m1:
                pair.delivered += 1
                pair.e2e_lat.add_ns(now - f["body"]["t0"])
            pair.del_series.add(now)
        elif t == "error":
            self.sent_at.pop(f.get("id"), None)
            pair.on_error(f)


class Pairs(Workload):
    """C conversations in this worker, each a shopper and an agent sending to each other."""

    def __init__(self, spec: dict[str, Any], channel: Channel) -> None:
        super().__init__(spec, channel)
        self.sides: list[Side] = []
        self.last_seq: dict[str, int] = {}
        self.sending = False
        self.acked = self.received = self.accepted = self.delivered = 0
        self.m0 = self.m1 = 0
        self.ack_lat = Latencies()
        self.e2e_lat = Latencies()
        self.acc_series = self.del_series = Series(0)

    async def setup_pair(self, i: int) -> None:
        w = self.w
        shopper = await self.connect(f"shopper-{w}-{i}", "shopper")
        agent = await self.connect(f"agent-{w}-{i}", "agent")
        await shopper.request("resume", convs={})
        await agent.request("resume", convs={})
        conv = (await shopper.request("open", subject=f"pair {w}-{i}"))["conv"]["id"]
        await agent.request("join", conv=conv)
        self.last_seq[conv] = 0
        both = self.spec["senders"] == "both"
        self.sides.append(Side(self, shopper, conv, "s", True))
        self.sides.append(Side(self, agent, conv, "a", both))

    def progress(self) -> dict[str, Any]:
        return {"acked": self.acked, "delivered": self.received, "errors": sum(self.errors.values())}

    async def run(self) -> None:
        results = await bounded([lambda i=i: self.setup_pair(i) for i in range(self.spec["convs"])], 32)
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            raise RuntimeError(f"{len(failures)} pairs failed to set up: {failures[0]!r}")
        self.channel.send("ready", {"links": len(self.links)})
        plan = await self.channel.recv("go")
        self.m0, self.m1 = plan["m0"], plan["m1"]
        self.acc_series = Series(plan["t_go"])
        self.del_series = Series(plan["t_go"])
        self.start_progress()
        await sleep_until(plan["t_go"])
        self.sending = True
        now = monotonic_ns()
        window = self.spec["window"]
        for _ in range(window):
            for side in self.sides:
                if side.sends:
                    side.send_one(now)
        await sleep_until(self.m0)
        cpu0 = time.process_time()
        await sleep_until(self.m1)
        cpu1 = time.process_time()
        self.sending = False
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            if all(not s.sent_at and s.tracker.last >= self.last_seq[s.conv] for s in self.sides):
                break
            await asyncio.sleep(0.02)
        self.stop_progress()
        checks = self.final_checks()
        for side in self.sides:
            add_checks(checks, side.tracker.finish(self.last_seq[side.conv]))
            checks["unanswered"] += len(side.sent_at)
        self.channel.send("done", {
            "accepted": self.accepted, "delivered": self.delivered, "acked_total": self.acked, "delivered_total": self.received,
            "client_cpu_s": cpu1 - cpu0, "ack_lat": self.ack_lat.dump(), "e2e_lat": self.e2e_lat.dump(),
            "series_accepted": self.acc_series.bins, "series_delivered": self.del_series.bins, "checks": checks,
        })


# ---- fanout -----------------------------------------------------------------------------------------


class Fanout(Workload):
    """Receivers of one conversation (this worker's users, several connections each); worker 0 also
    holds the sender. The sender keeps at most ``window`` messages not yet acked and not yet delivered
    to every receiver (receivers publish their progress in a shared array), so receivers that fall
    behind slow the sender instead of piling up in the server's outboxes."""

    def __init__(self, spec: dict[str, Any], channel: Channel) -> None:
        super().__init__(spec, channel)
        self.conv = spec["conv"]
        self.progress_arr = spec["progress_array"]  # shared: per worker, the seq every local receiver has
        self.final = spec["final_value"]  # shared: the sender's last acked seq once it has stopped
        self.trackers: list[SeqTracker] = []
        self.counts: dict[int, int] = {}
        self.low = 0
        self.received = self.delivered = 0
        self.m0 = self.m1 = 0
        self.lat = Latencies()
        self.series = Series(0)
        # sender
        self.sender: Link | None = None
        self.sent = self.acked = self.accepted = 0
        self.sent_at: dict[int, int] = {}
        self.send_tracker = SeqTracker()
        self.sending = False
        self.acc_series = Series(0)

    def receiver(self, link: Link) -> None:
        tracker = SeqTracker()
        self.trackers.append(tracker)

        def on_frame(f: dict[str, Any]) -> None:
            t = f["t"]
            if t == "msg":
                now = monotonic_ns()
                seq = f["seq"]
                tracker.see(seq)
                self.received += 1
                if self.m0 <= now < self.m1:
                    self.delivered += 1
                    self.lat.add_ns(now - f["body"]["t0"])
                self.series.add(now)
                counts = self.counts
                counts[seq] = counts.get(seq, 0) + 1
                n = len(self.trackers)
                low = self.low
                while counts.get(low + 1) == n:
                    del counts[low + 1]
                    low += 1
                if low != self.low:
                    self.low = low
                    self.progress_arr[self.w] = low
            elif t == "error":
                self.on_error(f)

        link.on_frame = on_frame

    async def setup_user(self, user: str, conns: int) -> None:
        first = await self.connect(user, "agent")
        await first.request("resume", convs={})
        await first.request("join", conv=self.conv)
        self.receiver(first)

        async def more() -> None:
            link = await self.connect(user, "agent")
            await link.request("resume", convs={})
            await link.request("join", conv=self.conv)
            self.receiver(link)

        results = await bounded([more for _ in range(conns - 1)], 16)
        for r in results:
            if isinstance(r, Exception):
                raise r

    # -- the sender (worker 0)

    def pump(self) -> None:
        if not self.sending:
            return
        now = monotonic_ns()
        if now >= self.m1:
            return
        window = self.spec["window"]
        floor = min(self.progress_arr[: self.spec["workers"]])
        link = self.sender
        while self.sent - floor < window and len(self.sent_at) < window:
            self.sent += 1
            rid = self.sent
            link.send_bytes(_packb({
                "t": "send", "id": rid, "conv": self.conv, "cmid": f"f{rid}", "body": {"kind": "text", "text": TEXT, "t0": now},
            }))
            self.sent_at[rid] = now

    def on_sender_frame(self, f: dict[str, Any]) -> None:
        t = f["t"]
        if t == "ack":
            now = monotonic_ns()
            self.sent_at.pop(f["id"], None)
            self.send_tracker.see(f["seq"])
            self.acked += 1
            if self.m0 <= now < self.m1:
                self.accepted += 1
            self.acc_series.add(now)
            self.pump()
        elif t == "error":
            self.sent_at.pop(f.get("id"), None)
            self.on_error(f)

    async def poll_progress(self) -> None:
        while self.sending:
            self.pump()
            await asyncio.sleep(0.0005)

    def progress(self) -> dict[str, Any]:
        return {"acked": self.acked, "delivered": self.received, "errors": sum(self.errors.values())}

    async def run(self) -> None:
        spec = self.spec
        users = spec["users"]  # [(user, connections)]
        results = await bounded([lambda u=u, n=n: self.setup_user(u, n) for u, n in users], 8)
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            raise RuntimeError(f"{len(failures)} members failed to set up: {failures[0]!r}")
        if spec["sender"]:
            self.sender = await self.connect(spec["sender_user"], "shopper")
            await self.sender.request("resume", convs={})
            self.sender.on_frame = self.on_sender_frame
        self.channel.send("ready", {"links": len(self.links)})
        plan = await self.channel.recv("go")
        self.m0, self.m1 = plan["m0"], plan["m1"]
        self.series = Series(plan["t_go"])
        self.acc_series = Series(plan["t_go"])
        self.start_progress()
        await sleep_until(plan["t_go"])
        poller = None
        if self.sender is not None:
            self.sending = True
            poller = asyncio.get_running_loop().create_task(self.poll_progress())
        await sleep_until(self.m1)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        if self.sender is not None:
            self.sending = False
            await poller
            while self.sent_at and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            self.final.value = self.send_tracker.last
        while time.monotonic() < deadline:
            final = self.final.value
            if final >= 0 and all(t.last >= final for t in self.trackers):
                break
            await asyncio.sleep(0.02)
        self.stop_progress()
        final = self.final.value
        checks = self.final_checks()
        for tracker in self.trackers:
            add_checks(checks, tracker.finish(final))
        if self.sender is not None:
            add_checks(checks, self.send_tracker.finish(self.sent - len(self.sent_at)))
            checks["unanswered"] += len(self.sent_at)
        self.channel.send("done", {
            "delivered": self.delivered, "delivered_total": self.received, "accepted": self.accepted,
            "sent_total": self.sent, "receivers": len(self.trackers), "final_seq": final,
            "lat": self.lat.dump(), "series_delivered": self.series.bins, "series_accepted": self.acc_series.bins,
            "checks": checks,
        })


# ---- idle and storm: many shoppers, each in its own conversation ------------------------------------


RECONNECT_ATTEMPTS = 12
RECONNECT_BACKOFF_S = 0.05
RECONNECT_BACKOFF_MAX_S = 2.0


class Shopper:
    """A connected shopper in its own conversation; keeps its sequence check across reconnects."""

    __slots__ = ("index", "user", "token", "link", "conv", "tracker", "workload")

    def __init__(self, workload: Workload, index: int) -> None:
        self.workload = workload
        self.index = index
        self.user = f"shopper-{workload.w}-{index}"
        self.token = workload.token(self.user, "shopper")
        self.link: Link | None = None
        self.conv = ""
        self.tracker = SeqTracker()

    def on_frame(self, f: dict[str, Any]) -> None:
        t = f["t"]
        if t == "msg":
            self.tracker.see(f["seq"])
            self.workload.received += 1
        elif t == "error":
            self.workload.on_error(f)

    async def start(self) -> float:
        """Connect, go live, open the conversation; returns when (monotonic seconds) it was done."""
        link = self.workload.Link()
        link.on_frame = self.on_frame
        await self.workload.connect(self.user, "shopper", token=self.token, link=link)
        self.link = link
        await link.request("resume", convs={})
        self.conv = (await link.request("open", subject="idle"))["conv"]["id"]
        return time.monotonic()

    async def reconnect(self) -> float:
        """Reconnect and resume as a real client does: a refused or failed attempt (503, 1013, a
        timeout, a reset) is retried with jittered exponential backoff; the retries are counted."""
        attempt = 0
        while True:
            try:
                return await self._reconnect_once()
            except (LinkClosed, OSError, asyncio.TimeoutError, ServerError) as exc:
                if isinstance(exc, ServerError) and exc.code not in ("unavailable", "rate_limited", "internal"):
                    raise
                attempt += 1
                if attempt > RECONNECT_ATTEMPTS:
                    raise
                self.workload.retries[error_name(exc)] += 1
                await asyncio.sleep(min(RECONNECT_BACKOFF_MAX_S, RECONNECT_BACKOFF_S * 2 ** attempt) * random.uniform(0.5, 1.5))

    async def _reconnect_once(self) -> float:
        link = self.workload.Link()
        link.on_frame = self.on_frame
        await self.workload.connect(self.user, "shopper", token=self.token, link=link)
        self.link = link
        reply = await link.request("resume", convs={self.conv: self.tracker.last})
        state = reply["resumed"].get(self.conv, {})
        self.workload.caught_up += state.get("sent", 0)
        if state.get("error") or state.get("complete") is False:
            self.workload.errors[f"resume:{state.get('error') or 'incomplete'}"] += 1
        return time.monotonic()


class Idle(Workload):
    """N shoppers connect (several processes, several source addresses), open their conversation and
    stay; then each proves it is still healthy by sending one message and getting its ack."""

    def __init__(self, spec: dict[str, Any], channel: Channel) -> None:
        super().__init__(spec, channel)
        self.shoppers = [Shopper(self, i) for i in range(spec["conns"])]
        self.received = 0
        self.opened = 0

    def progress(self) -> dict[str, Any]:
        return {"opened": self.opened, "errors": sum(self.errors.values())}

    async def open_one(self, shopper: Shopper) -> float:
        done = await shopper.start()
        self.opened += 1
        return done

    async def run(self) -> None:
        self.channel.send("ready", {"tokens": len(self.shoppers)})
        await self.channel.recv("go")
        self.start_progress()
        started = time.monotonic()
        cpu0 = time.process_time()
        results = await bounded([lambda s=s: self.open_one(s) for s in self.shoppers], self.spec["concurrency"])
        cpu = time.process_time() - cpu0
        times = [r for r in results if isinstance(r, float)]
        failures = Counter(error_name(r) for r in results if isinstance(r, Exception))
        self.channel.send("opened", {
            "started": started, "finished": max(times) if times else started, "opened": len(times),
            "failures": dict(failures), "times": times, "client_cpu_s": cpu,
        })
        await self.channel.recv("check")
        ok_before = sum(1 for s in self.shoppers if s.link is not None and not s.link.closed)

        async def probe(s: Shopper) -> bool:
            if s.link is None or s.link.closed:
                return False
            ack = await s.link.request("send", conv=s.conv, cmid="probe", body={"kind": "text", "text": "还在吗？"}, timeout=30)
            return ack.get("seq") == 1

        probes = await bounded([lambda s=s: probe(s) for s in self.shoppers], self.spec["concurrency"])
        healthy = sum(1 for p in probes if p is True)
        probe_failures = Counter(error_name(p) if isinstance(p, Exception) else "bad_ack" for p in probes if p is not True)
        self.stop_progress()
        checks = self.final_checks()
        checks["unanswered"] += len(self.shoppers) - healthy
        self.channel.send("done", {
            "conns": len(self.shoppers), "open_before_check": ok_before, "healthy": healthy,
            "probe_failures": dict(probe_failures), "open_failures": dict(failures), "checks": checks,
        })


class Storm(Workload):
    """N shoppers in their own conversations and one agent (per worker) writing into all of them at a
    steady rate; at ``t_drop`` every shopper's TCP connection is dropped at once and reconnected with
    ``resume`` from the last sequence number it holds. Nothing may be lost or repeated."""

    def __init__(self, spec: dict[str, Any], channel: Channel) -> None:
        super().__init__(spec, channel)
        self.shoppers = [Shopper(self, i) for i in range(spec["conns"])]
        self.received = 0
        self.opened = 0
        self.live_again = 0
        self.caught_up = 0
        self.agent: Link | None = None
        self.writing = False
        self.sent_at: dict[int, int] = {}
        self.ids = itertools.count(1)
        self.acked = 0
        self.last_seq: dict[str, int] = {}
        self.ack_trackers: dict[str, SeqTracker] = {}
        self.retries: Counter[str] = Counter()  # reconnect attempts refused or failed, then retried

    def progress(self) -> dict[str, Any]:
        return {"opened": self.opened, "live_again": self.live_again, "acked": self.acked, "delivered": self.received,
                "errors": sum(self.errors.values())}

    def on_agent_frame(self, f: dict[str, Any]) -> None:
        t = f["t"]
        if t == "ack":
            self.sent_at.pop(f["id"], None)
            conv = f["conv"]
            self.ack_trackers[conv].see(f["seq"])
            if f["seq"] > self.last_seq[conv]:
                self.last_seq[conv] = f["seq"]
            self.acked += 1
        elif t == "error":
            self.sent_at.pop(f.get("id"), None)
            self.on_error(f)

    async def write(self) -> None:
        """Round-robin over the conversations at ``rate`` messages per second (ticks of 10 ms),
        never more than ``window`` unacknowledged."""
        rate, window = self.spec["rate"], self.spec["window"]
        convs = [s.conv for s in self.shoppers]
        agent = self.agent
        i = 0
        due = 0.0
        tick = 0.01
        while self.writing:
            due += rate * tick
            while due >= 1 and len(self.sent_at) < window:
                due -= 1
                rid = next(self.ids)
                conv = convs[i % len(convs)]
                i += 1
                agent.send_bytes(_packb({"t": "send", "id": rid, "conv": conv, "cmid": f"w{rid}", "body": {"kind": "text", "text": TEXT}}))
                self.sent_at[rid] = monotonic_ns()
            due = min(due, rate * tick * 10)
            await asyncio.sleep(tick)

    async def open_one(self, shopper: Shopper) -> float:
        done = await shopper.start()
        self.opened += 1
        return done

    async def reconnect_one(self, shopper: Shopper) -> float:
        done = await shopper.reconnect()
        self.live_again += 1
        return done

    async def run(self) -> None:
        spec = self.spec
        concurrency = spec["concurrency"]
        results = await bounded([lambda s=s: self.open_one(s) for s in self.shoppers], concurrency)
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            raise RuntimeError(f"{len(failures)} shoppers failed to connect: {failures[0]!r}")
        self.agent = await self.connect(f"storm-agent-{self.w}", "agent")
        await self.agent.request("resume", convs={})
        joins = await bounded([lambda s=s: self.agent.request("join", conv=s.conv) for s in self.shoppers], 64)
        failures = [r for r in joins if isinstance(r, Exception)]
        if failures:
            raise RuntimeError(f"{len(failures)} joins failed: {failures[0]!r}")
        for s in self.shoppers:
            self.last_seq[s.conv] = 0
            self.ack_trackers[s.conv] = SeqTracker()
        self.agent.on_frame = self.on_agent_frame
        self.channel.send("ready", {"links": len(self.links)})
        plan = await self.channel.recv("go")
        self.start_progress()
        await sleep_until(plan["t_go"])
        self.writing = True
        writer = asyncio.get_running_loop().create_task(self.write())
        await sleep_until(plan["t_drop"])
        t_drop = time.monotonic()
        cpu0 = time.process_time()
        for s in self.shoppers:
            s.link.dropped = True  # type: ignore[union-attr]
            s.link.abort()
        results = await bounded([lambda s=s: self.reconnect_one(s) for s in self.shoppers], spec["reconnect_concurrency"])
        times = [r - t_drop for r in results if isinstance(r, float)]
        failures = Counter(error_name(r) for r in results if isinstance(r, Exception))
        cpu = time.process_time() - cpu0
        self.channel.send("live", {"t_drop": t_drop, "times": times, "failures": dict(failures), "live": len(times), "client_cpu_s": cpu})
        stop = await self.channel.recv("stop")
        await sleep_until(stop["t_stop"])
        self.writing = False
        await writer
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.sent_at and all(s.tracker.last >= self.last_seq[s.conv] for s in self.shoppers):
                break
            await asyncio.sleep(0.02)
        self.stop_progress()
        checks = self.final_checks()
        checks["unanswered"] += len(self.sent_at)
        for s in self.shoppers:
            add_checks(checks, s.tracker.finish(self.last_seq[s.conv]))
            add_checks(checks, self.ack_trackers[s.conv].finish(self.last_seq[s.conv]))
        for name, n in failures.items():
            checks["errors"][f"reconnect:{name}"] = checks["errors"].get(f"reconnect:{name}", 0) + n
        self.channel.send("done", {
            "conns": len(self.shoppers), "live_again": len(times), "acked_total": self.acked, "delivered_total": self.received,
            "caught_up": self.caught_up, "checks": checks, "retries": dict(self.retries),
        })


# ---- chat: many quiet conversations, Poisson arrivals ------------------------------------------------


class Talker:
    """One connection of the chat workload (a shopper in its conversation, or an agent in its 20): its
    sends in flight and, per conversation, the sequence check of its acks and the others' messages."""

    __slots__ = ("chat", "link", "prefix", "ids", "sent_at", "trackers", "answers")

    def __init__(self, chat: Chat, link: Link, prefix: str, answers: bool) -> None:
        self.chat = chat
        self.link = link
        self.prefix = prefix
        self.ids = itertools.count(1)
        self.sent_at: dict[int, int] = {}
        self.trackers: dict[str, SeqTracker] = {}
        self.answers = answers  # an agent: every message it receives is answered
        link.on_frame = self.on_frame

    def send_to(self, conv: str) -> None:
        if self.link.closed:
            return
        now = monotonic_ns()
        rid = next(self.ids)
        self.link.send_bytes(_packb({
            "t": "send", "id": rid, "conv": conv, "cmid": f"{self.prefix}{rid}",
            "body": {"kind": "text", "text": TEXT, "t0": now},
        }))
        self.sent_at[rid] = now

    def answer(self, conv: str) -> None:
        self.chat.owed -= 1
        self.send_to(conv)

    def on_frame(self, f: dict[str, Any]) -> None:
        t = f["t"]
        chat = self.chat
        if t == "ack":
            now = monotonic_ns()
            t0 = self.sent_at.pop(f["id"], None)
            conv, seq = f["conv"], f["seq"]
            self.trackers[conv].see(seq)
            if seq > chat.last_seq[conv]:
                chat.last_seq[conv] = seq
            chat.acked += 1
            if chat.m0 <= now < chat.m1:
                chat.accepted += 1
                if t0 is not None:
                    chat.ack_lat.add_ns(now - t0)
            chat.acc_series.add(now)
        elif t == "msg":
            now = monotonic_ns()
            conv = f["conv"]
            tracker = self.trackers.get(conv)
            if tracker is None:
                chat.checks["unexpected"] += 1
                return
            tracker.see(f["seq"])
            chat.received += 1
            if chat.m0 <= now < chat.m1:
                chat.delivered += 1
                chat.e2e_lat.add_ns(now - f["body"]["t0"])
            chat.del_series.add(now)
            if self.answers:
                chat.owed += 1
                chat.loop.call_later(chat.rng.expovariate(1.0 / chat.think_s) if chat.think_s > 0 else 0, self.answer, conv)
        elif t == "error":
            self.sent_at.pop(f.get("id"), None)
            chat.on_error(f)


class Chat(Workload):
    """This worker's agents, each with its shoppers (one conversation each). Shoppers send as a
    Poisson process at ``rate`` messages/s in total (a random shopper each time); an agent answers
    every message it receives after an exponential think time (mean ``think_s``), so about as many
    answers as questions flow. Every connection checks every conversation it is in, and every
    question must have been answered by the end."""

    def __init__(self, spec: dict[str, Any], channel: Channel) -> None:
        super().__init__(spec, channel)
        self.loop = asyncio.get_running_loop()
        self.rng = random.Random(spec["worker"])
        self.think_s = float(spec["think_s"])
        self.shoppers: list[tuple[Talker, str]] = []  # (talker, its conversation)
        self.agents: list[Talker] = []
        self.last_seq: dict[str, int] = {}
        self.acked = self.received = self.accepted = self.delivered = 0
        self.sent_questions = 0
        self.owed = 0  # messages received by an agent and not yet answered
        self.m0 = self.m1 = 0
        self.ack_lat = Latencies()
        self.e2e_lat = Latencies()
        self.acc_series = self.del_series = Series(0)

    def progress(self) -> dict[str, Any]:
        return {"connected": len(self.links), "acked": self.acked, "delivered": self.received, "errors": sum(self.errors.values())}

    async def open_shopper(self, a: int, i: int) -> tuple[Talker, str]:
        link = await self.connect(f"chat-shopper-{self.w}-{a}-{i}", "shopper")
        talker = Talker(self, link, "s", False)
        await link.request("resume", convs={})
        conv = (await link.request("open", subject="chat"))["conv"]["id"]
        talker.trackers[conv] = SeqTracker()
        self.last_seq[conv] = 0
        return talker, conv

    async def open_agent(self, a: int, convs: list[str]) -> Talker:
        link = await self.connect(f"chat-agent-{self.w}-{a}", "agent")
        talker = Talker(self, link, "a", True)
        await link.request("resume", convs={})
        for conv in convs:
            await link.request("join", conv=conv)
            talker.trackers[conv] = SeqTracker()
        return talker

    async def ask(self, rate: float, until: int) -> None:
        """Questions as a Poisson process: exponential gaps at ``rate``, each from a random shopper;
        arrivals that fall due while the loop was busy go out at once (none is skipped)."""
        rng = self.rng
        shoppers = self.shoppers
        due = monotonic_ns()
        while True:
            due += int(rng.expovariate(rate) * 1e9)
            if due >= until:
                break
            await sleep_until(due)
            talker, conv = shoppers[rng.randrange(len(shoppers))]
            talker.send_to(conv)
            self.sent_questions += 1

    async def run(self) -> None:
        spec = self.spec
        concurrency = spec["concurrency"]
        per_agent: list[int] = spec["shoppers_per_agent"]
        jobs = [(a, i) for a, n in enumerate(per_agent) for i in range(n)]
        opened = await bounded([lambda a=a, i=i: self.open_shopper(a, i) for a, i in jobs], concurrency)
        failures = [r for r in opened if isinstance(r, Exception)]
        if failures:
            raise RuntimeError(f"{len(failures)} shoppers failed to set up: {failures[0]!r}")
        self.shoppers = list(opened)
        convs_of: dict[int, list[str]] = {}
        for (a, _), (_, conv) in zip(jobs, opened):
            convs_of.setdefault(a, []).append(conv)
        agents = await bounded([lambda a=a: self.open_agent(a, convs_of.get(a, [])) for a in range(len(per_agent))], concurrency)
        failures = [r for r in agents if isinstance(r, Exception)]
        if failures:
            raise RuntimeError(f"{len(failures)} agents failed to set up: {failures[0]!r}")
        self.agents = list(agents)
        self.channel.send("ready", {"links": len(self.links)})
        plan = await self.channel.recv("go")
        self.m0, self.m1 = plan["m0"], plan["m1"]
        self.acc_series = Series(plan["t_go"])
        self.del_series = Series(plan["t_go"])
        self.start_progress()
        await sleep_until(plan["t_go"])
        asking = self.loop.create_task(self.ask(spec["rate"], self.m1))
        await sleep_until(self.m0)
        cpu0 = time.process_time()
        await sleep_until(self.m1)
        cpu1 = time.process_time()
        await asking
        talkers = [t for t, _ in self.shoppers] + self.agents
        deadline = time.monotonic() + DRAIN_TIMEOUT_S + 5 * self.think_s
        while time.monotonic() < deadline:
            if not self.owed and all(not t.sent_at and all(tr.last >= self.last_seq[c] for c, tr in t.trackers.items()) for t in talkers):
                break
            await asyncio.sleep(0.02)
        self.stop_progress()
        checks = self.final_checks()
        for talker in talkers:
            for conv, tracker in talker.trackers.items():
                add_checks(checks, tracker.finish(self.last_seq[conv]))
            checks["unanswered"] += len(talker.sent_at)
        checks["unanswered"] += self.owed  # questions an agent received and never answered
        self.channel.send("done", {
            "accepted": self.accepted, "delivered": self.delivered, "acked_total": self.acked, "delivered_total": self.received,
            "questions": self.sent_questions, "client_cpu_s": cpu1 - cpu0,
            "ack_lat": self.ack_lat.dump(), "e2e_lat": self.e2e_lat.dump(),
            "series_accepted": self.acc_series.bins, "series_delivered": self.del_series.bins, "checks": checks,
        })


WORKLOADS: dict[str, type[Workload]] = {"pairs": Pairs, "fanout": Fanout, "idle": Idle, "storm": Storm, "chat": Chat}
