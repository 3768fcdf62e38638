"""``python -m bench.flood``: well-behaved clients' latency while peers flood the gateway.

Two phases of the same well-behaved workload (shopper/agent pairs, each shopper sending at a steady
rate under the rate limit, the ack latency of every send recorded): first alone, then while an
attacker process floods the gateway with

* ``garbage``: authenticated connections sending undecodable binary frames and text frames as fast
  as they can;
* ``unauth``: connections that never authenticate, sending requests as fast as they can;
* ``fragments``: connections that never authenticate, sending one-byte continuation frames
  (the attack of issue 9: 200 connections x 65,535 fragments).

Every attacker reconnects when the gateway closes or refuses it, at once. The attackers connect
from 127.0.0.2, the well-behaved clients from 127.0.0.1: the gateway's per-address limit on new
connections (``--connect-rate-per-address``, at its default) halves an address's rate for every
connection it closes for abuse, so a shared address would share the penalty, as shoppers behind an
attacker's NAT do. The gateway runs with its default limits (rate limit on), pinned to one core; the generator runs on the other, the attacker process at the
lowest priority so that it does not delay the well-behaved clients it shares the core with. The
table compares the phases (ratios in one run) and reports the gateway's resident memory: its peak
(VmHWM) and its RSS before and during the flood.

    python -m bench.flood                      # 8 s per phase, memory store
    python -m bench.flood --store sqlite --duration 20 --fragment-conns 200
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing
import os
import random
import time
from pathlib import Path
from typing import Any

import msgpack

from .client import link_class
from .measure import Latencies, monotonic_ns, percentiles
from .servers import SECRET, TENANT, Server, machine

ROOT = Path(__file__).resolve().parent.parent
ATTACKER_ADDRESS = "127.0.0.2"  # the well-behaved clients connect from 127.0.0.1
UPGRADE = (
    "GET /ws{query} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: kefu.v1\r\n\r\n"
)


def token(user: str, role: str) -> str:
    from gateway.auth import mint_token

    return mint_token(SECRET, tenant=TENANT, user=user, role=role, channel="app", ttl_s=3600)


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head + b"\x00\x00\x00\x00" + payload  # an all-zero mask leaves the payload as it is


# ---- the attackers (their own process) ----------------------------------------------------------


async def attacker(kind: str, host: str, port: int, path_query: str, stop: float, counts: dict[str, int]) -> None:
    """One attacking connection, reconnecting whenever the gateway closes it, until ``stop``."""
    garbage = (masked(0x2, b"\xc1") + masked(0x1, b"text")) * 256
    requests = b"".join(masked(0x2, msgpack.packb({"t": "ping", "id": i})) for i in range(256))
    fragments = masked(0x2, b"a", fin=False) + masked(0x0, b"b", fin=False) * 9000
    burst = {"garbage": garbage, "unauth": requests, "fragments": fragments}[kind]
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection(host, port, local_addr=(ATTACKER_ADDRESS, 0))
        except OSError:
            counts["connect_failed"] = counts.get("connect_failed", 0) + 1
            await asyncio.sleep(0.05)
            continue
        counts["connections"] = counts.get("connections", 0) + 1
        drain = None
        try:
            writer.write(UPGRADE.format(query=path_query).encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            if not head.startswith(b"HTTP/1.1 101"):
                counts["refused_" + head[9:12].decode()] = counts.get("refused_" + head[9:12].decode(), 0) + 1
                continue
            drain = asyncio.get_running_loop().create_task(reader.read(1 << 30))  # whatever the server says
            while time.monotonic() < stop and not drain.done():
                writer.write(burst)
                counts["bytes"] = counts.get("bytes", 0) + len(burst)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError):
            counts["closed"] = counts.get("closed", 0) + 1
        finally:
            if drain is not None:  # its error (the gateway closed the socket) is expected: retrieve it
                drain.cancel()
                drain.add_done_callback(lambda task: task.cancelled() or task.exception())
            writer.close()


def attack_main(url: str, plan: dict[str, int], seconds: float, queue: Any) -> None:
    os.nice(19)  # below the well-behaved clients on the generator's core
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    counts: dict[str, int] = {}

    async def run() -> None:
        stop = time.monotonic() + seconds
        tasks = []
        for kind, n in plan.items():
            for i in range(n):
                query = f"?token={token(f'attacker-{kind}-{i}', 'shopper')}" if kind == "garbage" else ""
                tasks.append(attacker(kind, host, int(port), query, stop, counts))
        await asyncio.gather(*tasks)

    asyncio.run(run())
    queue.put(counts)


# ---- the well-behaved workload (the coordinator process) ----------------------------------------


async def behave(url: str, pairs: int, rate: float, seconds: float, Link: Any) -> dict[str, Any]:
    """``pairs`` shoppers, each with an agent, each shopper sending ``rate`` messages a second."""
    latencies = Latencies()
    sent_at: dict[tuple[int, int], int] = {}
    errors: dict[str, int] = {}
    links = []

    async def pair(i: int) -> None:
        shopper, agent = Link(), Link()
        await shopper.open(url, token(f"good-shopper-{i}", "shopper"))
        await agent.open(url, token(f"good-agent-{i}", "agent"))
        links.extend((shopper, agent))
        await shopper.request("resume", convs={})
        await agent.request("resume", convs={})
        conv = (await shopper.request("open", subject="flood"))["conv"]["id"]
        await agent.request("join", conv=conv)

        def on_frame(f: dict[str, Any]) -> None:
            if f.get("t") == "ack":
                t0 = sent_at.pop((i, f["id"]), None)
                if t0 is not None:
                    latencies.add_ns(monotonic_ns() - t0)
            elif f.get("t") == "error":
                errors[str(f.get("code"))] = errors.get(str(f.get("code")), 0) + 1

        shopper.on_frame = on_frame
        await asyncio.sleep(random.random() / rate)
        stop = time.monotonic() + seconds
        n = 0
        while time.monotonic() < stop:
            n += 1
            sent_at[(i, n)] = monotonic_ns()
            shopper.send({"t": "send", "id": n, "conv": conv, "cmid": f"m{n}", "body": {"kind": "text", "text": "在吗？这件衣服什么时候发货"}})
            await asyncio.sleep(1 / rate)
        await asyncio.sleep(0.5)

    await asyncio.gather(*(pair(i) for i in range(pairs)))
    for link in links:
        link.abort()
    import numpy as np

    summary = percentiles(np.asarray(latencies.samples, dtype=np.uint32))
    return {"acked": summary["count"], "unanswered": len(sent_at), "errors": errors, "ack_latency": summary}


def rss_sampler(pid: int, samples: list[int], stop: list[bool]) -> None:
    while not stop[0]:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    samples.append(int(line.split()[1]) * 1024)
        time.sleep(0.05)


def vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default="memory", choices=("memory", "sqlite"))
    p.add_argument("--duration", type=float, default=8.0, help="seconds per phase")
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--rate", type=float, default=10.0, help="messages per second per well-behaved shopper (under the 50/s limit)")
    p.add_argument("--garbage-conns", type=int, default=20)
    p.add_argument("--unauth-conns", type=int, default=50)
    p.add_argument("--fragment-conns", type=int, default=200)
    p.add_argument("--client", default="picows")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "flood-latest.json"))
    args = p.parse_args(argv)
    cores = sorted(os.sched_getaffinity(0))
    server_cpus = {cores[0]} if len(cores) >= 2 else None
    client_cpus = set(cores[1:]) if len(cores) >= 2 else None
    # The gateway's defaults: rate limit, pre-auth budget, fragment limits (the bench relay flags of
    # bench.servers turn the rate limit off; put the defaults back).
    server = Server("memory" if args.store == "memory" else "sqlite", cpus=server_cpus, extra_args=["--rate-per-second", "50", "--max-connections-per-user", "20"])
    server.start()
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    Link = link_class(args.client)
    plan = {"garbage": args.garbage_conns, "unauth": args.unauth_conns, "fragments": args.fragment_conns}
    phases: dict[str, Any] = {}
    try:
        for phase in ("quiet", "flood"):
            samples: list[int] = []
            stop = [False]
            import threading

            sampler = threading.Thread(target=rss_sampler, args=(server.pid, samples, stop), daemon=True)
            sampler.start()
            cpu0 = server.cpu_seconds()
            attack = None
            queue: Any = None
            if phase == "flood":
                queue = multiprocessing.get_context("spawn").Queue()
                attack = multiprocessing.get_context("spawn").Process(target=attack_main, args=(server.url, plan, args.duration + 2.0, queue))
                attack.start()
                time.sleep(1.0)  # the flood is under way before the measurement starts
            result = asyncio.run(behave(server.url, args.pairs, args.rate, args.duration, Link))
            result["server_cpu_s"] = round(server.cpu_seconds() - cpu0, 2)
            if attack is not None:
                result["attack"] = queue.get(timeout=60)
                attack.join(30)
            stop[0] = True
            sampler.join()
            result["rss_max_mb"] = round(max(samples) / 2**20, 1) if samples else None
            result["rss_start_mb"] = round(samples[0] / 2**20, 1) if samples else None
            phases[phase] = result
        peak = vm_hwm(server.pid)
    finally:
        server.stop()
        server.cleanup()
    quiet, flood = phases["quiet"]["ack_latency"], phases["flood"]["ack_latency"]
    ratio = round(flood["p99_ms"] / quiet["p99_ms"], 2) if quiet["p99_ms"] else None
    print(f"kefu flood · {dt.datetime.now():%Y-%m-%d %H:%M} · store {args.store} · {args.pairs} pairs x {args.rate:g} msg/s · attackers {plan}")
    print(f"{'phase':8} {'acked':>7} {'ack p50 ms':>11} {'p99 ms':>8} {'p99.9 ms':>9} {'gateway CPU s':>14} {'RSS start/max MB':>17}")
    for name, r in phases.items():
        a = r["ack_latency"]
        print(f"{name:8} {r['acked']:>7} {a['p50_ms']:>11} {a['p99_ms']:>8} {a['p999_ms']:>9} {r['server_cpu_s']:>14} {r['rss_start_mb']!s:>8}/{r['rss_max_mb']!s:<8}")
    print(f"ack p99 flood/quiet: {ratio}x · gateway peak RSS (VmHWM) {peak / 2**20:.1f} MB · attack: {phases['flood'].get('attack')}")
    lost = sum(r["unanswered"] for r in phases.values())
    doc = {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(), "args": vars(args), "phases": phases,
           "p99_ratio": ratio, "peak_rss_bytes": peak, "unanswered": lost}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    print(f"written: {args.out}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
