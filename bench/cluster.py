"""The scale-out run of issue 13: several ``kefu serve`` processes over PostgreSQL and Redis carry
shoppers and agents spread across them; one node is killed with SIGKILL during the run.

    python -m bench.cluster [--nodes 3] [--pairs 30] [--duration 10] [--kill-at 4] [--out FILE]

Each pair is one conversation: its shopper on node i, its agent on node i+1 (mod N). Both send
(one message in flight each, acked before the next) for ``--duration`` seconds. At ``--kill-at``
node 1 is killed (SIGKILL); its clients reconnect to the next node, ``resume`` from the messages
they hold, and send again (same cmid) what was not acked. The report counts, over every member:

- ``lost``: acked messages (either side's) a member never received nor sent itself: must be 0;
- ``duplicated``: message frames a member received twice: must be 0;
- ``live_again_s``: from the kill to each moved client's ``resume`` answered (max and median);
- acked messages per second (a throughput figure of this machine, not a test outcome).

The smoke test (tests/bench/test_cluster_bench.py) runs it at a tiny size and checks only the
counters. Run it on a quiet machine for figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import msgpack
import psycopg
import trio
from psycopg import sql
from trio_websocket import ConnectionClosed, HandshakeError, open_websocket_url

from gateway.auth import mint_token

SECRET = "kefu-bench-secret-0123456789abcdef-0123456789"
TENANT = "bench"
TEXT = {"kind": "text", "text": "在吗？我的快递到哪了"}


async def start_node(store: str, schema: str, bus: str, channel: str, data_dir: str) -> tuple[trio.Process, str]:
    env = {**os.environ, "KEFU_JWT_SECRET": SECRET, "KEFU_ROUTING": "off", "KEFU_RATE_PER_SECOND": "0"}
    args = [
        sys.executable, "-m", "gateway", "serve", "--port", "0", "--metrics-port", "-1", "--data-dir", data_dir,
        "--store", store, "--store-schema", schema, "--bus", bus, "--bus-channel", channel, "--log-level", "info",
    ]
    os.makedirs(data_dir, exist_ok=True)
    log = open(os.path.join(data_dir, "kefu.log"), "wb")  # noqa: SIM115 (the node writes it until it exits)
    proc = await trio.lowlevel.open_process(args, stdout=subprocess.PIPE, stderr=log, env=env)
    out = b""
    with trio.fail_after(30):
        while b"WebSocket:" not in out:
            chunk = await proc.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError("a node exited before it listened")
            out += chunk
    return proc, re.search(rb"WebSocket:\s+(\S+)", out).group(1).decode()


class Client:
    """One member of a conversation, moving to the next node when its node dies."""

    def __init__(self, user: str, role: str, urls: list[str], conv: str) -> None:
        self.user, self.role, self.urls, self.conv = user, role, urls, conv
        self.frames: list[int] = []
        self.acked: list[int] = []
        self.sent = 0
        self.moved_at: float | None = None  # when its connection was lost (after the kill)
        self.live_again_s: float | None = None
        self.errors = 0
        self.done = False
        self.events: list[str] = []  # what happened to its connections (for a report that finds a loss)

    def held(self) -> set[int]:
        return set(self.frames) | set(self.acked)

    def cursor(self) -> int:
        held, last = self.held(), 0
        while last + 1 in held:
            last += 1
        return last

    async def run(self, stop_sending: trio.Event, converged: trio.Event) -> None:
        rid = 0
        while not converged.is_set():
            try:
                target = f"{self.urls[0]}?token={mint_token(SECRET, tenant=TENANT, user=self.user, role=self.role, channel='app')}"
                async with open_websocket_url(target, subprotocols=["kefu.v1"]) as ws:
                    await ws.get_message()  # hello
                    rid += 1
                    await ws.send_message(msgpack.packb({"t": "resume", "id": rid, "convs": {self.conv: self.cursor()}}))
                    resumed_id = rid
                    self.events.append(f"{time.monotonic():.3f} resume {self.urls[0]} from {self.cursor()} (held {len(self.held())}, max {max(self.held(), default=0)})")
                    waiting: int | None = None
                    while not converged.is_set():
                        self.done = waiting is None and stop_sending.is_set()  # nothing in flight any more
                        if waiting is None and not stop_sending.is_set():
                            rid += 1
                            waiting = rid
                            await ws.send_message(msgpack.packb({"t": "send", "id": rid, "conv": self.conv, "cmid": f"{self.user}-{self.sent}", "body": TEXT}))
                        with trio.move_on_after(0.2):
                            frame = msgpack.unpackb(await ws.get_message(), raw=False)
                            t = frame.get("t")
                            if t == "msg" and frame.get("conv") == self.conv:
                                self.frames.append(frame["seq"])
                            elif frame.get("id") == resumed_id and self.moved_at is not None and self.live_again_s is None:
                                self.live_again_s = time.monotonic() - self.moved_at
                            elif frame.get("id") == waiting:
                                if t == "ack":
                                    self.acked.append(frame["seq"])
                                    self.sent += 1
                                else:
                                    self.errors += 1  # retryable (unavailable): the same cmid again
                                waiting = None
                return
            except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError) as exc:
                self.events.append(f"{time.monotonic():.3f} lost {self.urls[0]}: {type(exc).__name__} {getattr(exc, 'reason', '')}")
                if self.moved_at is None:
                    self.moved_at = time.monotonic()
                self.urls.append(self.urls.pop(0))
                await trio.sleep(0.05)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    schema, channel = f"bench_{secrets.token_hex(4)}", f"kefu:bench:{secrets.token_hex(4)}"
    nodes: list[tuple[trio.Process, str]] = []
    data = tempfile.mkdtemp(prefix="kefu-cluster-")
    print(f"node logs: {data}/node*/kefu.log", file=sys.stderr)
    try:
        for i in range(args.nodes):
            nodes.append(await start_node(args.store, schema, args.bus, channel, os.path.join(data, f"node{i}")))
        urls = [url for _, url in nodes]
        clients: list[Client] = []
        for p in range(args.pairs):
            shopper_node, agent_node = p % args.nodes, (p + 1) % args.nodes
            target = f"{urls[shopper_node]}?token={mint_token(SECRET, tenant=TENANT, user=f'shopper{p}', role='shopper', channel='app')}"
            async with open_websocket_url(target, subprotocols=["kefu.v1"]) as ws:
                await ws.get_message()
                await ws.send_message(msgpack.packb({"t": "open", "id": 1}))
                conv = msgpack.unpackb(await ws.get_message(), raw=False)["conv"]["id"]
            target = f"{urls[agent_node]}?token={mint_token(SECRET, tenant=TENANT, user=f'agent{p}', role='agent', channel='web')}"
            async with open_websocket_url(target, subprotocols=["kefu.v1"]) as ws:
                await ws.get_message()
                await ws.send_message(msgpack.packb({"t": "join", "id": 1, "conv": conv}))
                await ws.get_message()
            rotate = lambda start: urls[start:] + urls[:start]  # noqa: E731
            clients.append(Client(f"shopper{p}", "shopper", rotate(shopper_node), conv))
            clients.append(Client(f"agent{p}", "agent", rotate(agent_node), conv))
        stop_sending, converged = trio.Event(), trio.Event()
        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(client.run, stop_sending, converged)
            await trio.sleep(args.kill_at)
            victim = nodes[1 % args.nodes][0]
            victim.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await trio.sleep(max(0.0, args.duration - args.kill_at))
            stop_sending.set()
            sending_s = time.monotonic() - started
            by_conv: dict[str, list[Client]] = {}
            for client in clients:
                by_conv.setdefault(client.conv, []).append(client)
            with trio.move_on_after(args.settle):
                while not all(c.done for c in clients) or not all(
                    set(a for c in members for a in c.acked) <= m.held() for members in by_conv.values() for m in members
                ):
                    await trio.sleep(0.05)
            converged.set()
        missing = {
            m.user: sorted(set(a for c in members for a in c.acked) - m.held())[:20]
            for members in by_conv.values() for m in members if set(a for c in members for a in c.acked) - m.held()
        }
        acked = sum(len(c.acked) for c in clients)
        lost = sum(len(set(a for c in members for a in c.acked) - m.held()) for members in by_conv.values() for m in members)
        duplicated = sum(len(c.frames) - len(set(c.frames)) for c in clients)
        moved = [c for c in clients if c.moved_at is not None and c.moved_at >= killed_at]
        live = [c.live_again_s for c in moved if c.live_again_s is not None]
        return {
            "nodes": args.nodes, "pairs": args.pairs, "clients": len(clients),
            "acked": acked, "acked_per_s": round(acked / sending_s), "lost": lost, "duplicated": duplicated,
            "retryable_errors": sum(c.errors for c in clients),
            "missing": missing,
            "events_of_the_missing": {c.user: c.events + [f"frames tail {c.frames[-5:]}, acked tail {c.acked[-3:]}"] for c in clients if c.user in missing},
            "moved_clients": len(moved), "moved_live_again": len(live),
            "live_again_s": {"max": round(max(live), 3), "p50": round(sorted(live)[len(live) // 2], 3)} if live else None,
            "options": {k: v for k, v in vars(args).items() if k != "out"},
        }
    finally:
        for proc, _ in nodes:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
        with psycopg.connect(args.store, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--kill-at", type=float, default=4.0, help="seconds into the run when node 1 is killed")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds to wait for every member to hold every acked message")
    parser.add_argument("--store", default="postgresql://127.0.0.1:5432/test")
    parser.add_argument("--bus", default="redis://127.0.0.1:6379")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    report = trio.run(run, args)
    print(json.dumps(report, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0 if report["lost"] == 0 and report["duplicated"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
