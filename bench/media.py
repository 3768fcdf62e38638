"""The media benchmark of issue 12: upload throughput and the gateway's CPU per MB for images, and
the latency of a text message on the same gateway while uploads run (which should stay within 2x
of its latency with no uploads).

    python -m bench.media [--target sqlite] [--duration 10] [--rounds 3] [--uploaders 4] [--rate 50] [--out FILE]

Phases on one gateway (a subprocess, as bench/servers.py starts it, with its HTTP side on), its
processes placed by ``--placement`` (unless ``--no-pin``: uploaders on the gateway's own core
would measure this 2-core machine's scheduler, not the gateway):

- ``shared``: the gateway and its inspection workers on the first core, the clients (the text
  probe and the upload load) on the others;
- ``split``: the gateway and the text probe on the first core, its inspection workers
  (``--media-cpus``) and the upload load on the others: the deployment that gives the workers
  cores of their own.

1. ``uploads``: ``--uploaders`` clients upload a ``--width`` x ``--height`` JPEG (noise, so it
   does not compress away) back to back; uploads/s, MB/s and the gateway's CPU seconds per MB:
   its own process (``server_cpu_s_per_mb``: the event loop and its threads) and its media
   inspection workers (``workers_cpu_s_per_mb``: the processes below it, with
   ``--inspection processes``, the gateway's default).
2. ``--rounds`` rounds of two windows, ``idle`` and ``mixed``, in the order idle-mixed, then
   mixed-idle, and so on (so a drift of the machine over the run weighs on both alike). In
   ``idle`` a shopper sends ``--rate`` text messages per second to an agent, and ack and
   end-to-end latencies are recorded; in ``mixed`` the uploads of phase 1 run meanwhile. The
   ratio of the pooled mixed latencies to the pooled idle ones is the figure; each round's ratio
   is beside it, and so is ``idle_p99_spread``, the largest idle window's p99 over the smallest:
   what the same load gives twice on this machine, the noise any ratio is read against. Each
   window also records the machine's steal time (``steal_s``: CPU time the hypervisor gave to
   others while this guest wanted it), the other source of such noise on a virtual machine.

Timings are results, never test outcomes: the smoke test (tests/bench/test_media_bench.py) runs
this at tiny sizes and checks only counters and the JSON's shape.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgpack
import trio
from PIL import Image
from trio_websocket import open_websocket_url

from gateway.auth import mint_token

from .measure import percentiles
from .servers import SECRET, TENANT, Server, machine, machine_steal_s, proc_cpu

ROOT = Path(__file__).resolve().parents[1]


def gateway_cpu_s(server: Server) -> float:
    """utime + stime of the gateway process itself (the event loop and its threads)."""
    return sum(proc_cpu(server.pid))


def workers_cpu_s(server: Server) -> float:
    """utime + stime of every live process below the gateway: its media inspection workers and
    the fork server they come from (a worker that has ended is no longer counted)."""
    return sum(sum(proc_cpu(pid)) for pid in server.tree()[1:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photo(width: int, height: int) -> bytes:
    """A JPEG of noise: as large as a real photo of its size, unlike a flat colour."""
    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(out, "JPEG", quality=85)
    return out.getvalue()


def token(user: str, role: str) -> str:
    return mint_token(SECRET, tenant=TENANT, user=user, role=role, channel="app", ttl_s=24 * 3600)


class Link:
    """One kefu.v1 WebSocket, live after ``resume``; replies are matched to requests by id."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.ids = 0
        self.waiting: dict[int, trio.Event] = {}
        self.replies: dict[int, dict[str, Any]] = {}

    async def send(self, t: str, **fields: Any) -> int:
        self.ids += 1
        await self.ws.send_message(msgpack.packb({"t": t, "id": self.ids, **fields}))
        return self.ids

    async def call(self, t: str, **fields: Any) -> dict[str, Any]:
        rid = await self.send(t, **fields)
        while True:
            frame = msgpack.unpackb(await self.ws.get_message(), raw=False)
            if frame.get("id") == rid:
                if frame["t"] == "error":
                    raise RuntimeError(frame)
                return frame


async def live(url: str, user: str, role: str, stack) -> Link:
    ws = await stack.enter_async_context(open_websocket_url(f"{url}?token={token(user, role)}", subprotocols=["kefu.v1"]))
    link = Link(ws)
    hello = msgpack.unpackb(await ws.get_message(), raw=False)
    assert hello["t"] == "hello", hello
    await link.call("resume", convs={})
    return link


async def text_latency(shopper: Link, agent: Link, conv: str, duration: float, rate: float) -> dict[str, Any]:
    """Send ``rate`` texts per second for ``duration``; ack latency (send -> durable ack) and
    end-to-end latency (send -> the agent's ``msg``), as percentiles; the samples themselves (in
    seconds) under ``samples``, for pooling windows (not written to the JSON)."""
    sent: dict[str, float] = {}
    acks: list[float] = []
    e2e: list[float] = []
    errors = 0
    expected = int(duration * rate)

    async def read_shopper() -> None:
        nonlocal errors
        while len(acks) + errors < expected:
            frame = msgpack.unpackb(await shopper.ws.get_message(), raw=False)
            if frame.get("t") == "ack":
                acks.append(time.perf_counter() - sent[frame["cmid"]])
            elif frame.get("t") == "error":
                errors += 1

    async def read_agent() -> None:
        while len(e2e) < expected:
            frame = msgpack.unpackb(await agent.ws.get_message(), raw=False)
            if frame.get("t") == "msg" and frame.get("cmid") in sent:
                e2e.append(time.perf_counter() - sent[frame["cmid"]])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_shopper)
        nursery.start_soon(read_agent)
        start = time.perf_counter()
        for n in range(expected):
            await trio.sleep_until(trio.current_time() + max(0.0, start + n / rate - time.perf_counter()))
            cmid = f"{conv[-6:]}-{time.monotonic_ns()}-{n}"
            sent[cmid] = time.perf_counter()
            await shopper.send("send", conv=conv, cmid=cmid, body={"kind": "text", "text": f"还在吗 {n}"})
        with trio.move_on_after(10):  # the last answers
            while len(acks) + errors < expected or len(e2e) < len(acks):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    return {"sent": expected, "acked": len(acks), "delivered": len(e2e), "errors": errors,
            "ack_latency": _ms(acks), "e2e_latency": _ms(e2e), "samples": {"ack": acks, "e2e": e2e}}


def pooled(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """One latency record for several windows of text_latency: counts summed, percentiles over
    every sample; each window's own figures (without samples) under ``windows``."""
    total: dict[str, Any] = {key: sum(w[key] for w in windows) for key in ("sent", "acked", "delivered", "errors")}
    for key in ("ack", "e2e"):
        total[f"{key}_latency"] = _ms([x for w in windows for x in w["samples"][key]])
    total["windows"] = [{k: v for k, v in w.items() if k != "samples"} for w in windows]
    return total


def _ms(seconds: list[float]) -> dict[str, Any]:
    import numpy as np

    return percentiles(np.asarray(seconds, dtype=float) * 1e6)  # it takes microseconds


async def upload_loop(http_url: str, conv: str, data: bytes, stop: trio.Event, counts: dict[str, int]) -> None:
    headers = {"authorization": f"Bearer {token('shopper-0', 'shopper')}"}
    async with httpx.AsyncClient(base_url=http_url, headers=headers, timeout=60) as client:
        while not stop.is_set():
            r = await client.post(f"/v1/conversations/{conv}/attachments", params={"kind": "image"}, content=data)
            if r.status_code == 201:
                counts["stored"] += 1
                counts["bytes"] += len(data)
            else:
                counts[f"refused_{r.status_code}"] = counts.get(f"refused_{r.status_code}", 0) + 1


async def upload_load(http_url: str, conv: str, image: str, uploaders: int) -> dict[str, int]:
    """The upload load as its own process runs it (``--load``): ``uploaders`` clients upload
    ``image`` back to back until stdin closes; returns the counts."""
    with open(image, "rb") as f:
        data = f.read()
    counts = {"stored": 0, "bytes": 0}
    stop = trio.Event()

    async def until_stdin_closes() -> None:
        await trio.to_thread.run_sync(sys.stdin.buffer.read)
        stop.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(until_stdin_closes)
        print("ready", flush=True)  # the phase's clock starts now, not while this process starts up
        for _ in range(uploaders):
            nursery.start_soon(upload_loop, http_url, conv, data, stop, counts)
    return counts


def load_placement(priority: str, cpus: set[int] | None):
    """What the upload load process does before it starts: its scheduling policy and its CPUs."""

    def place() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if priority == "idle":
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))

    return place


async def uploads(
    server: Server, http_url: str, conv: str, image: str, uploaders: int, duration: float, during=None, *, priority: str = "idle",
    cpus: set[int] | None = None,
) -> dict[str, Any]:
    """Run the upload load for ``duration`` (or while ``during()`` runs) in a process of its own:
    the text latency probe, in this process, then measures the gateway, not the wait for its own
    event loop behind the uploaders' (in one process, the probe's p99 grew with the load generator's
    work, not the gateway's). With ``priority`` "idle" the load runs under SCHED_IDLE, so that on
    the clients' core the probe is never kept waiting behind it either; "normal" to compare. With
    ``cpus`` it runs there rather than where this process does."""
    load = subprocess.Popen(
        [sys.executable, "-m", "bench.media", "--load", http_url, conv, image, str(uploaders)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=load_placement(priority, cpus),
    )
    other: dict[str, Any] = {}
    try:
        assert load.stdin is not None and load.stdout is not None
        ready = await trio.to_thread.run_sync(load.stdout.readline)
        if ready.strip() != b"ready":
            raise RuntimeError(f"the upload load process did not start: {ready!r}")
        cpu0, workers0, steal0, t0 = gateway_cpu_s(server), workers_cpu_s(server), machine_steal_s(), time.perf_counter()
        if during is None:
            await trio.sleep(duration)
        else:
            other = await during()
        cpu, seconds = gateway_cpu_s(server) - cpu0, time.perf_counter() - t0
        workers, steal = workers_cpu_s(server) - workers0, machine_steal_s() - steal0
        load.stdin.close()  # the load stops: its counts come back on stdout
        out = await trio.to_thread.run_sync(load.stdout.read)
        await trio.to_thread.run_sync(partial(load.wait, 120))
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    if load.returncode != 0:
        raise RuntimeError(f"the upload load process exited with {load.returncode}")
    counts = json.loads(out)
    mb = counts["bytes"] / 1e6
    return {
        **counts, "seconds": seconds, "uploads_per_s": counts["stored"] / seconds, "mb_per_s": mb / seconds,
        "server_cpu_s": cpu, "server_cpu_s_per_mb": cpu / mb if mb else None,
        "workers_cpu_s": workers, "workers_cpu_s_per_mb": workers / mb if mb else None, "steal_s": round(steal, 2),
        **({"latency": other} if other else {}),
    }


async def idle_window(measure) -> dict[str, Any]:
    """A window of text messages with no uploads, with the machine's steal time meanwhile."""
    steal0 = machine_steal_s()
    latency = await measure()
    return {**latency, "steal_s": round(machine_steal_s() - steal0, 2)}


def summed(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mixed windows' upload figures as one (counts, seconds and CPU summed; rates from the
    sums), with their text latencies pooled under ``latency``."""
    total: dict[str, Any] = {key: sum(w.get(key, 0) for w in windows) for key in {k for w in windows for k in w if k.startswith("refused")}}
    for key in ("stored", "bytes", "seconds", "server_cpu_s", "workers_cpu_s", "steal_s"):
        total[key] = sum(w[key] for w in windows)
    mb = total["bytes"] / 1e6
    total.update(
        uploads_per_s=total["stored"] / total["seconds"], mb_per_s=mb / total["seconds"],
        server_cpu_s_per_mb=total["server_cpu_s"] / mb if mb else None, workers_cpu_s_per_mb=total["workers_cpu_s"] / mb if mb else None,
        steal_s=round(total["steal_s"], 2), latency=pooled([w["latency"] for w in windows]),
        windows=[{k: v for k, v in w.items() if k != "latency"} for w in windows],
    )
    return total


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    cores = sorted(os.sched_getaffinity(0))
    pinned = args.pin and len(cores) >= 2
    split = pinned and args.placement == "split"
    others = set(cores[1:])
    server = Server(
        args.target, cpus={cores[0]} if pinned else None,  # its inspection workers inherit the core, unless split
        extra_args=["--metrics-port", str(port), "--media-workers", str(args.workers), "--media-inspection", args.inspection,
                    *(["--media-dir", args.media_dir] if args.media_dir else []),
                    *(["--media-cpus", ",".join(map(str, sorted(others)))] if split else [])],
    )
    if split:  # the text probe beside the gateway, the upload load beside the workers
        os.sched_setaffinity(0, {cores[0]})
    elif pinned:  # the clients (uploaders, text senders) on the other cores, as the other benchmarks do
        os.sched_setaffinity(0, others)
    load_cpus = others if split else None
    data = photo(args.width, args.height)
    image = tempfile.NamedTemporaryFile(prefix="kefu-bench-photo-", suffix=".jpg")
    image.write(data)
    image.flush()
    with server, image:
        http_url = f"http://127.0.0.1:{port}"
        async with AsyncExitStack() as stack:
            shopper = await live(server.url, "shopper-0", "shopper", stack)
            agent = await live(server.url, "agent-0", "agent", stack)
            conv = (await shopper.call("open"))["conv"]["id"]
            await agent.call("join", conv=conv)
            await text_latency(shopper, agent, conv, min(1.0, args.duration), args.rate)  # warm-up
            async with httpx.AsyncClient(base_url=http_url, headers={"authorization": f"Bearer {token('shopper-0', 'shopper')}"}, timeout=60) as client:
                warm = await client.post(f"/v1/conversations/{conv}/attachments", params={"kind": "image"}, content=data)
                assert warm.status_code == 201, warm.text  # the inspection workers have started
            alone = await uploads(server, http_url, conv, image.name, args.uploaders, args.duration, priority=args.load_priority, cpus=load_cpus)

            def measure():
                return text_latency(shopper, agent, conv, args.duration, args.rate)

            idles, mixeds = [], []
            for round_ in range(args.rounds):
                for window in (("idle", "mixed") if round_ % 2 == 0 else ("mixed", "idle")):
                    if window == "idle":
                        idles.append(await idle_window(measure))
                    else:
                        mixeds.append(await uploads(server, http_url, conv, image.name, args.uploaders, args.duration,
                                                    during=measure, priority=args.load_priority, cpus=load_cpus))
        build = server.build()
    idle, mixed = pooled(idles), summed(mixeds)
    ratio, by_round = {}, []
    for key in ("p50_ms", "p99_ms"):
        ratio[key] = latency_ratio(idle["ack_latency"], mixed["latency"]["ack_latency"], key)
    for quiet, loaded in zip(idle["windows"], mixed["latency"]["windows"]):
        by_round.append({key: latency_ratio(quiet["ack_latency"], loaded["ack_latency"], key) for key in ("p50_ms", "p99_ms")})
    idle_p99 = [w["ack_latency"]["p99_ms"] for w in idle["windows"] if w["ack_latency"]["p99_ms"]]
    return {
        "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine(),
        "target": args.target, "build": build,
        "options": {"duration": args.duration, "rounds": args.rounds, "uploaders": args.uploaders, "rate": args.rate, "workers": args.workers, "inspection": args.inspection,
                    "load_priority": args.load_priority, "placement": args.placement if pinned else "unpinned", "media_dir": args.media_dir or "(data dir)",
                    "image": f"{args.width}x{args.height}", "image_bytes": len(data)},
        "idle": idle, "uploads": alone, "mixed": mixed, "ack_latency_ratio": ratio, "ack_latency_ratio_by_round": by_round,
        "idle_p99_spread": max(idle_p99) / min(idle_p99) if idle_p99 else None,
        "within_2x": all(r is not None and r <= 2 for r in ratio.values()),
    }


def latency_ratio(base: dict[str, Any], loaded: dict[str, Any], key: str) -> float | None:
    quiet, busy = base.get(key), loaded.get(key)
    return busy / quiet if quiet and busy else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.media", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="sqlite", choices=("memory", "sqlite", "memory-pure", "sqlite-pure"))
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each phase and window")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of an idle and a mixed window (alternating which comes first)")
    parser.add_argument("--uploaders", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="the gateway's --media-workers")
    parser.add_argument("--inspection", default="processes", choices=("processes", "threads"), help="the gateway's --media-inspection")
    parser.add_argument("--rate", type=float, default=50.0, help="text messages per second")
    parser.add_argument("--width", type=int, default=2000)
    parser.add_argument("--height", type=int, default=1500)
    parser.add_argument("--out", help="write the results here (JSON)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="do not pin the gateway (and its inspection workers) to one core and the clients to the others")
    parser.add_argument("--placement", default="shared", choices=("shared", "split"),
                        help="shared: the inspection workers on the gateway's core; split: on the clients' cores, the text probe on the gateway's (see above)")
    parser.add_argument("--load-priority", default="idle", choices=("idle", "normal"),
                        help="the upload load process's CPU scheduling: idle (SCHED_IDLE, the default: it never delays the latency probe) or normal")
    parser.add_argument("--media-dir", default="", help="the gateway's --media-dir (default: in its data directory, on the store's disk)")
    parser.add_argument("--load", nargs=4, metavar=("HTTP_URL", "CONV", "IMAGE", "UPLOADERS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:  # the upload load's own process (see uploads()): counts as JSON on stdout
        http_url, conv, image, uploaders = args.load
        print(json.dumps(trio.run(upload_load, http_url, conv, image, int(uploaders))))
        return 0
    result = trio.run(run, args)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
