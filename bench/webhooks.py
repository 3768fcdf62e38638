"""What webhooks cost a gateway: CPU per message with and without a webhook on every message, the
deliveries a second one node keeps up with, and how long an event takes to reach its receiver.

    python -m bench.webhooks [--rates 200,1000] [--duration 10] [--shoppers 20] [--out FILE]
    python -m bench.webhooks --compare-clients     # CPU per POST: httpx on Trio against gateway.webhooks.client

For each rate: a window of shoppers' messages with no webhook, then the same with a webhook
subscribed to ``message.created`` (in that order, so the tenant's subscriptions are cached in the
second). The gateway (SQLite: the default store, and the one ``kefu apikey create`` writes) runs
on one core; the senders and the receiver on the other. The receiver is a minimal keep-alive
HTTP/1.1 server of its own process, so that what is measured is the gateway's side. Ratios within
one run are the figures to read (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx
import numpy as np
import trio

from .media import free_port, gateway_cpu_s, live, token
from .measure import percentiles
from .servers import TENANT, Server, machine, machine_steal_s

TEXT = {"kind": "text", "text": "你好，请问这件外套还有L码吗？"}


# ---- the receiver (its own process: python -m bench.webhooks --receive) -----------------------

def receive(port: int) -> None:
    """Answer every POST 200 at once; on stdin's end print how many came and their delays (ms from
    the message's store time to arrival) as JSON."""
    delays: list[float] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                body = await reader.readexactly(length)
                now_ms = time.time() * 1000
                doc = json.loads(body)
                message = doc.get("data", {}).get("message")
                if message:
                    delays.append(now_ms - message["ts"])
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port)
        print("ready", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.buffer.read)
        server.close()
        print(json.dumps({"received": len(delays), "delays_ms": delays}), flush=True)

    asyncio.run(main())


# ---- the run ----------------------------------------------------------------------------------

def api_key(server: Server) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "gateway", "apikey", "create", "--tenant", TENANT, "--name", "bench", "--scopes", "admin", "--data-dir", server.data_dir],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    if not out:
        raise RuntimeError("kefu apikey create printed no key")
    return out.splitlines()[-1]


async def window(server: Server, shoppers: list[tuple[Any, str]], rate: float, duration: float) -> dict[str, Any]:
    """Send ``rate`` messages a second for ``duration`` seconds, spread over the shoppers; every ack
    is awaited before the window ends."""
    acked = 0
    sent = 0

    async def read(link: Any) -> None:
        nonlocal acked
        while True:
            frame = await link.ws.get_message()
            if b"ack" in frame[:12]:
                acked += 1

    cpu0, steal0, t0 = gateway_cpu_s(server), machine_steal_s(), time.perf_counter()
    async with trio.open_nursery() as readers:
        for link, _ in shoppers:
            readers.start_soon(read, link)
        start = time.perf_counter()
        n = int(rate * duration)
        for i in range(n):
            await trio.sleep_until(trio.current_time() + max(0.0, start + i / rate - time.perf_counter()))
            link, conv = shoppers[i % len(shoppers)]
            await link.send("send", conv=conv, cmid=f"w{time.monotonic_ns()}-{i}", body=TEXT)
            sent += 1
        with trio.fail_after(30):
            while acked < sent:
                await trio.sleep(0.01)
        readers.cancel_scope.cancel()
    seconds = time.perf_counter() - t0
    return {"sent": sent, "seconds": seconds, "cpu_s": gateway_cpu_s(server) - cpu0, "steal_s": round(machine_steal_s() - steal0, 2)}


async def metric(http_url: str, name: str, **labels: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(http_url + "/metrics")).text
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(want + " "))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0))
    pinned = len(cores) >= 2
    http_port, receiver_port = free_port(), free_port()
    server = Server("sqlite", cpus={cores[0]} if pinned else None, extra_args=["--metrics-port", str(http_port), "--webhooks-allow-private", "yes"])
    if pinned:
        os.sched_setaffinity(0, set(cores[1:]))
    results: dict[str, Any] = {"rates": []}
    with server:
        http_url = f"http://127.0.0.1:{http_port}"
        key = await trio.to_thread.run_sync(api_key, server)
        async with AsyncExitStack() as stack:
            shoppers = []
            for i in range(args.shoppers):
                link = await live(server.url, f"shopper-{i}", "shopper", stack)
                shoppers.append((link, (await link.call("open"))["conv"]["id"]))
            async with httpx.AsyncClient(base_url=http_url, headers={"authorization": f"Bearer {key}"}) as api:
                for rate in args.rates:
                    plain = await window(server, shoppers, rate, args.duration)
                    receiver = subprocess.Popen([sys.executable, "-m", "bench.webhooks", "--receive", str(receiver_port)],
                                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                    try:
                        assert receiver.stdout is not None and receiver.stdin is not None
                        assert (await trio.to_thread.run_sync(receiver.stdout.readline)).strip() == "ready"
                        created = await api.post("/v1/webhooks", json={"url": f"http://127.0.0.1:{receiver_port}/hook", "events": ["message.created"]})
                        assert created.status_code == 201, created.text
                        delivered0 = await metric(http_url, "kefu_webhook_deliveries_total", outcome="delivered")
                        hooked = await window(server, shoppers, rate, args.duration)
                        cpu0, t0 = gateway_cpu_s(server), time.perf_counter()
                        with trio.move_on_after(60):  # what still waits is delivered
                            while await metric(http_url, "kefu_webhook_pending") > 0:
                                await trio.sleep(0.05)
                        hooked["cpu_s"] += gateway_cpu_s(server) - cpu0
                        drain_s = time.perf_counter() - t0
                        delivered = await metric(http_url, "kefu_webhook_deliveries_total", outcome="delivered") - delivered0
                        assert (await api.delete(f"/v1/webhooks/{created.json()['id']}")).status_code == 204
                        receiver.stdin.close()
                        got = json.loads(await trio.to_thread.run_sync(receiver.stdout.read))
                    finally:
                        receiver.kill()
                        receiver.wait()
                    await trio.sleep(6)  # the gateway's cache of the tenant's webhooks expires (5 s)
                    plain_us = plain["cpu_s"] / plain["sent"] * 1e6
                    hooked_us = hooked["cpu_s"] / hooked["sent"] * 1e6
                    results["rates"].append({
                        "rate": rate, "plain": plain, "webhook": hooked, "drain_s": round(drain_s, 2),
                        "delivered": delivered, "received": got["received"],
                        "dropped": await metric(http_url, "kefu_webhook_deliveries_total", outcome="dropped"),
                        "failed": await metric(http_url, "kefu_webhook_deliveries_total", outcome="failed"),
                        "cpu_us_per_message": {"plain": round(plain_us, 1), "webhook": round(hooked_us, 1), "ratio": round(hooked_us / plain_us, 2)},
                        "delivery_ms": percentiles(np.array(got["delays_ms"]) * 1000),  # it takes microseconds
                    })
    return results


async def compare_clients(requests: int = 2000) -> dict[str, float]:
    """CPU (this process's) per sequential POST to a local receiver, kept-alive connections: httpx
    (on Trio, through anyio) and the gateway's own webhook client."""
    from gateway.webhooks.client import Client

    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "bench.webhooks", "--receive", str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}/hook"
    body = json.dumps({"id": "evt_1", "event": "message.created", "data": {"message": {"ts": 0, "body": TEXT}}}, ensure_ascii=False).encode()
    figures = {}
    try:
        assert receiver.stdout is not None and receiver.stdin is not None
        assert (await trio.to_thread.run_sync(receiver.stdout.readline)).strip() == "ready"
        async with httpx.AsyncClient() as http:
            for round_ in range(2):  # the first warms up
                t0 = time.process_time()
                for _ in range(requests):
                    assert (await http.post(url, content=body, headers={"content-type": "application/json"})).status_code == 200
                figures["httpx"] = (time.process_time() - t0) / requests * 1e6
        client = Client()
        for round_ in range(2):
            t0 = time.process_time()
            for _ in range(requests):
                assert await client.post(url, body, {"content-type": "application/json"}, 5) == 200
            figures["kefu"] = (time.process_time() - t0) / requests * 1e6
        await client.aclose()
        receiver.stdin.close()
    finally:
        receiver.kill()
        receiver.wait()
    return {k: round(v, 1) for k, v in figures.items()}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| messages/s | CPU per message, no webhook | with a webhook on each | ratio | delivered / sent | drain after the window | delivery p50 / p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rates"]:
        c, d = r["cpu_us_per_message"], r["delivery_ms"]
        lines.append(
            f"| {r['rate']:g} | {c['plain']} µs | {c['webhook']} µs | {c['ratio']}x | {r['delivered']:.0f} / {r['webhook']['sent']} | {r['drain_s']} s "
            f"| {d['p50_ms']:.1f} / {d['p99_ms']:.1f} ms |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="200,1000", help="messages per second, comma-separated")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--shoppers", type=int, default=20)
    parser.add_argument("--out", help="write the results here (JSON)")
    parser.add_argument("--compare-clients", action="store_true", help="CPU per POST of httpx and of the gateway's webhook client, one core")
    parser.add_argument("--receive", type=int, help=argparse.SUPPRESS)  # the receiver process
    args = parser.parse_args(argv)
    if args.receive:
        receive(args.receive)
        return 0
    if args.compare_clients:
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[-1]})  # the receiver (started after) on the same core: fine, its CPU is not counted
        figures = trio.run(compare_clients)
        print(f"| client | CPU per POST |\n|---|---|\n| httpx {httpx.__version__} on Trio | {figures['httpx']} µs |\n| gateway.webhooks.client (h11) | {figures['kefu']} µs |")
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"command": "python -m bench.webhooks --compare-clients", "machine": machine(), "cpu_us_per_post": figures}, f, indent=1)
        return 0
    args.rates = [float(r) for r in args.rates.split(",")]
    results = trio.run(run, args)
    results.update(command=" ".join(["python -m bench.webhooks", *(argv if argv is not None else sys.argv[1:])]), machine=machine(),
                   date=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()))
    print(table(results))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
