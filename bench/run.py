"""The coordinator: starts a server, spreads a workload over worker processes, measures the server
from outside, and turns the workers' reports into one result per (workload, target).

Timing is decided here: workers get absolute ``time.monotonic_ns()`` instants (start, measurement
window, drop, stop), and the server's CPU time is read at the same instants, so counts, latencies
and CPU all cover one window.
"""

from __future__ import annotations

from collections import Counter

import asyncio
import math
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from . import measure, worker
from .measure import add_checks, empty_checks, failed, merge_latencies, merge_series, percentiles
from .servers import LABELS, SECRET, TARGETS, TENANT, Server, backing_cpu_seconds, machine_steal_s

GO_DELAY_S = 0.3


@dataclass
class Options:
    """Every size and switch of a run (the CLI's flags)."""

    client: str = "picows"
    pin: bool = True
    server_cpus: set[int] | None = None
    client_cpus: set[int] | None = None
    # pairs
    convs: int = 16
    window: int = 8
    senders: str = "both"
    duration: float = 4.0
    warmup: float = 1.0
    pairs_procs: int = 2
    # latency (pairs with one conversation and one message in flight per sender)
    latency_duration: float = 3.0
    latency_senders: str = "both"
    # fanout
    members: int = 500
    fanout_users: int = 50
    fanout_window: int = 4
    fanout_procs: int = 2
    # idle
    idle_conns: int = 2000
    idle_hold: float = 2.0
    # storm
    storm_conns: int = 2000
    storm_rate: float = 2000.0
    storm_before: float = 1.0
    storm_after: float = 1.0
    reconnect_concurrency: int = 1000
    # chat
    chat_shoppers: int = 400
    chat_per_agent: int = 20
    chat_rate: float = 400.0
    chat_think_s: float = 0.2
    chat_duration: float = 4.0
    chat_procs: int = 2
    # idle, storm and chat
    conns_per_proc: int = 4000
    concurrency: int = 100
    # what else
    server_args: list[str] = field(default_factory=list)
    profile_dir: str | None = None
    quiet: bool = False


# ---- worker pool ------------------------------------------------------------------------------------


class WorkerFailed(RuntimeError):
    pass


class Progress:
    """The one-line progress report on stderr."""

    def __init__(self, label: str, quiet: bool) -> None:
        self.label = label
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.start = time.monotonic()
        self.phase = "starting"
        self.values: dict[int, dict[str, Any]] = {}
        self._shown = 0.0

    def update(self, i: int | None = None, values: dict[str, Any] | None = None, phase: str | None = None) -> None:
        if i is not None and values is not None:
            self.values[i] = values
        if phase is not None:
            self.phase = phase
        now = time.monotonic()
        if self.quiet or now - self._shown < (0.2 if self.tty else 5.0) and phase is None:
            return
        self._shown = now
        totals: dict[str, int] = {}
        for v in self.values.values():
            for k, n in v.items():
                totals[k] = totals.get(k, 0) + n
        parts = " · ".join(f"{k} {n:,}" for k, n in totals.items())
        line = f"  {self.label} · {self.phase} · {now - self.start:5.1f} s" + (f" · {parts}" if parts else "")
        sys.stderr.write("\r\x1b[2K" + line[:150] if self.tty else line[:150] + "\n")
        sys.stderr.flush()

    def done(self) -> None:
        if not self.quiet and self.tty:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


class Pool:
    """Worker processes (spawned, so nothing of the coordinator's state leaks into them), each with a pipe."""

    def __init__(self, specs: list[dict[str, Any]], progress: Progress, cpus: set[int] | None) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.specs = specs
        self.progress = progress
        self.cpus = cpus
        self.procs: list[Any] = []
        self.pipes: list[Any] = []
        self.pending: list[list[tuple[str, Any]]] = [[] for _ in specs]

    def __enter__(self) -> Pool:
        for spec in self.specs:
            parent, child = self.ctx.Pipe()
            proc = self.ctx.Process(target=worker.entry, args=(child, spec), daemon=True)
            proc.start()
            child.close()
            if self.cpus:
                try:
                    os.sched_setaffinity(proc.pid, self.cpus)
                except OSError:
                    pass
            self.procs.append(proc)
            self.pipes.append(parent)
        return self

    def __exit__(self, *exc: Any) -> None:
        for pipe in self.pipes:
            pipe.close()
        deadline = time.monotonic() + 15
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)

    def _handle(self, i: int, msg: tuple[str, Any]) -> None:
        kind, payload = msg
        if kind == "progress":
            self.progress.update(i, payload)
        elif kind == "failed":
            raise WorkerFailed(f"worker {i} failed:\n{payload}")
        else:
            self.pending[i].append(msg)

    def pump(self, until: float) -> None:
        """Read the workers' messages until monotonic time ``until``."""
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            for pipe in wait(self.pipes, timeout=min(left, 0.2)):
                i = self.pipes.index(pipe)
                try:
                    self._handle(i, pipe.recv())
                except EOFError:
                    self.procs[i].join(3)
                    raise WorkerFailed(f"worker {i}'s pipe closed (exit code {self.procs[i].exitcode})") from None
            self.progress.update()

    def expect(self, kind: str, timeout: float, phase: str | None = None) -> list[Any]:
        """The payload of message ``kind`` from every worker, in worker order."""
        if phase:
            self.progress.update(phase=phase)
        deadline = time.monotonic() + timeout
        results: list[Any] = [None] * len(self.pipes)
        have = [False] * len(self.pipes)
        while not all(have):
            for i in range(len(self.pipes)):
                if not have[i]:
                    for j, (k, payload) in enumerate(self.pending[i]):
                        if k == kind:
                            results[i] = payload
                            have[i] = True
                            del self.pending[i][j]
                            break
            if all(have):
                break
            if time.monotonic() > deadline:
                missing = [i for i, h in enumerate(have) if not h]
                raise WorkerFailed(f"no {kind!r} from workers {missing} within {timeout:.0f} s")
            # only the workers still owing the message: one that has sent its last message may
            # exit, and its pipe then reads as closed
            waiting = [p for p, h in zip(self.pipes, have) if not h]
            for pipe in wait(waiting, timeout=0.2):
                i = self.pipes.index(pipe)
                try:
                    self._handle(i, pipe.recv())
                except EOFError:
                    self.procs[i].join(3)
                    raise WorkerFailed(f"worker {i}'s pipe closed (exit code {self.procs[i].exitcode}) while waiting for {kind!r}") from None
            self.progress.update()
        return results

    def send_all(self, kind: str, payload: Any = None) -> None:
        for pipe in self.pipes:
            pipe.send((kind, payload))


def base_spec(server: Server, opts: Options, workload: str, worker_index: int) -> dict[str, Any]:
    return {
        "workload": workload, "worker": worker_index, "url": server.url, "secret": SECRET, "tenant": TENANT,
        "client": opts.client,
    }


def split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total)) if total else 1
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def source_address(i: int) -> str:
    """Worker i connects from 127.0.0.(2 + i): several source addresses, several port ranges."""
    return f"127.0.0.{2 + i % 250}"


_next_source = 0


def fresh_sources(n: int) -> list[str]:
    """``n`` source addresses no run of this invocation has used lately. A storm leaves each
    address's ports in TIME_WAIT for a minute; a next run from the same addresses makes the
    generator's kernel search for free ports (up to 3x its CPU per reconnect, measured), which
    slowed whichever target came third."""
    global _next_source
    first, _next_source = _next_source, _next_source + n
    return [source_address(first + i) for i in range(n)]


# ---- profiling --------------------------------------------------------------------------------------


class Profiler:
    """py-spy attached to the server for a window (non-blocking sampling: the server is not paused)."""

    def __init__(self, opts: Options, workload: str, target: str) -> None:
        self.path: Path | None = None
        self.proc: subprocess.Popen | None = None
        if opts.profile_dir and TARGETS[target][0] != "node":  # py-spy samples Python processes only
            Path(opts.profile_dir).mkdir(parents=True, exist_ok=True)
            self.path = Path(opts.profile_dir) / f"profile-{workload}-{target}.txt"

    def start(self, pid: int, seconds: float) -> None:
        if self.path is None:
            return
        spy = Path(sys.executable).with_name("py-spy")
        exe = str(spy) if spy.exists() else "py-spy"
        self.proc = subprocess.Popen(
            [exe, "record", "--pid", str(pid), "--duration", str(max(1, math.ceil(seconds))), "--rate", "250",
             "--format", "raw", "--output", str(self.path), "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def finish(self) -> dict[str, Any] | None:
        if self.proc is None or self.path is None:
            return None
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        from .profiling import summarize

        return summarize(self.path)


# ---- the workloads ----------------------------------------------------------------------------------


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (every core, every process), from /proc/stat."""
    from .servers import CLK_TCK

    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLK_TCK


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


@dataclass(frozen=True)
class Window:
    """What one measured window cost, in CPU seconds."""

    cpu: float  # the server's (user + system)
    busy: float  # the whole machine's busy core-seconds
    system: float  # the server's in the kernel
    backing: float | None  # PostgreSQL's and Redis's, for a postgres target (None otherwise)
    steal: float  # the hypervisor gave to other guests while this one wanted it (noise)


def _cpu_figures(window: Window, seconds: float, accepted: int, delivered: int) -> dict[str, Any]:
    cpu, backing = window.cpu, window.backing
    return {
        # PostgreSQL's and Redis's CPU in the window, for a postgres target (None otherwise)
        "backing_cpu_us_per_delivery": round(backing / delivered * 1e6, 2) if backing is not None and delivered else None,
        "server_sys_us_per_delivery": round(window.system / delivered * 1e6, 2) if delivered else None,
        "machine_busy_cores": round(window.busy / seconds, 2) if seconds else None,
        "machine_steal_s": round(window.steal, 2),  # read a noisy window's figures with care
        "server_cpu_s": round(cpu, 3),
        "server_cpu_util": round(cpu / seconds, 3) if seconds else None,
        "cpu_us_per_delivery": round(cpu / delivered * 1e6, 2) if delivered else None,
        "cpu_s_per_1k_messages": round(cpu / accepted * 1000, 5) if accepted else None,
    }


def measure_window(pool: Pool, server: Server, profiler: Profiler, opts: Options, progress: Progress, duration: float) -> Window:
    """Start the workers together, warm up, then measure ``duration`` seconds of CPU (the
    profiler samples the server meanwhile)."""
    t_go = time.monotonic() + GO_DELAY_S
    m0 = t_go + opts.warmup
    m1 = m0 + duration
    pool.send_all("go", {"t_go": int(t_go * 1e9), "m0": int(m0 * 1e9), "m1": int(m1 * 1e9)})
    progress.update(phase="running")
    pool.pump(m0)
    backing = server.schema != ""  # PostgreSQL and Redis do part of the work: count their CPU too
    backing0 = backing_cpu_seconds() if backing else 0.0
    (user0, sys0), busy0, steal0 = server.cpu_times(), machine_busy_s(), machine_steal_s()
    profiler.start(server.pid, duration)
    pool.pump(m1)
    (user1, sys1), busy1, steal1 = server.cpu_times(), machine_busy_s(), machine_steal_s()
    return Window(user1 + sys1 - user0 - sys0, busy1 - busy0, sys1 - sys0, backing_cpu_seconds() - backing0 if backing else None, steal1 - steal0)


def run_pairs(server: Server, opts: Options, progress: Progress, *, convs: int, window: int, senders: str,
              duration: float, name: str = "pairs") -> dict[str, Any]:
    procs = min(opts.pairs_procs, convs)
    specs = []
    for i, n in enumerate(split(convs, procs)):
        spec = base_spec(server, opts, "pairs", i)
        spec.update(convs=n, window=window, senders=senders)
        specs.append(spec)
    profiler = Profiler(opts, name, server.target)
    with Pool(specs, progress, opts.client_cpus) as pool:
        pool.expect("ready", 120, phase="connecting")
        measured = measure_window(pool, server, profiler, opts, progress, duration)
        done = pool.expect("done", 60, phase="draining")
    accepted = sum(d["accepted"] for d in done)
    delivered = sum(d["delivered"] for d in done)
    checks = empty_checks()
    for d in done:
        add_checks(checks, d["checks"])
    ack = merge_latencies([d["ack_lat"] for d in done])
    e2e = merge_latencies([d["e2e_lat"] for d in done])
    result = {
        "workload": name, "target": server.target,
        "params": {"convs": convs, "window": window, "senders": senders, "duration_s": duration, "warmup_s": opts.warmup, "procs": procs},
        "accepted_per_s": round(accepted / duration, 1),
        "delivered_per_s": round(delivered / duration, 1),
        **_cpu_figures(measured, duration, accepted, delivered),
        "generator_cpu_us_per_msg": round(sum(d["client_cpu_s"] for d in done) / accepted * 1e6, 2) if accepted else None,
        "ack_latency": percentiles(ack),
        "e2e_latency": percentiles(e2e),
        "checks": checks,
        "failed": failed(checks),
        "_samples": {"ack": ack, "e2e": e2e},
        "_series": {"accepted": merge_series([d["series_accepted"] for d in done]),
                    "delivered": merge_series([d["series_delivered"] for d in done])},
    }
    profile = profiler.finish()
    if profile:
        result["profile"] = profile
    return result


async def _open_conversation(url: str, user: str, client: str) -> str:
    from gateway.auth import mint_token

    from .client import link_class

    link = link_class(client)()
    await link.open(url, mint_token(SECRET, tenant=TENANT, user=user, role="shopper", channel="app", ttl_s=6 * 3600))
    try:
        await link.request("resume", convs={})
        return (await link.request("open", subject="fanout"))["conv"]["id"]
    finally:
        await link.close()


def run_fanout(server: Server, opts: Options, progress: Progress) -> dict[str, Any]:
    members = opts.members
    users = max(1, min(opts.fanout_users, members))
    procs = max(1, min(opts.fanout_procs, users))
    sender_user = "fan-shopper"
    conv = asyncio.run(_open_conversation(server.url, sender_user, opts.client))
    ctx = multiprocessing.get_context("spawn")
    progress_array = ctx.RawArray("q", procs)
    final_value = ctx.RawValue("q", -1)
    per_user = split(members, users)
    owned: list[list[tuple[str, int]]] = [[] for _ in range(procs)]
    for u, n in enumerate(per_user):
        owned[u % procs].append((f"fan-agent-{u}", n))
    specs = []
    for i, address in enumerate(fresh_sources(procs)):
        spec = base_spec(server, opts, "fanout", i)
        spec.update(conv=conv, users=owned[i], window=opts.fanout_window, workers=procs, sender=i == 0,
                    sender_user=sender_user, progress_array=progress_array, final_value=final_value,
                    local_addr=address)
        specs.append(spec)
    duration = opts.duration
    profiler = Profiler(opts, "fanout", server.target)
    with Pool(specs, progress, opts.client_cpus) as pool:
        setup_start = time.monotonic()
        pool.expect("ready", 600, phase="connecting members")
        setup_s = time.monotonic() - setup_start
        measured = measure_window(pool, server, profiler, opts, progress, duration)
        done = pool.expect("done", 120, phase="draining")
    delivered = sum(d["delivered"] for d in done)
    accepted = sum(d["accepted"] for d in done)
    receivers = sum(d["receivers"] for d in done)
    checks = empty_checks()
    for d in done:
        add_checks(checks, d["checks"])
    if receivers != members:
        checks["closed"] += members - receivers
    lat = merge_latencies([d["lat"] for d in done])
    result = {
        "workload": "fanout", "target": server.target,
        "params": {"members": members, "member_users": users, "window": opts.fanout_window, "duration_s": duration, "procs": procs},
        "setup_s": round(setup_s, 2),
        "messages_per_s": round(accepted / duration, 1),
        "deliveries_per_s": round(delivered / duration, 1),
        **_cpu_figures(measured, duration, accepted, delivered),
        "delivery_latency": percentiles(lat),
        "checks": checks,
        "failed": failed(checks),
        "_samples": {"delivery": lat},
        "_series": {"delivered": merge_series([d["series_delivered"] for d in done])},
    }
    profile = profiler.finish()
    if profile:
        result["profile"] = profile
    return result


def _conn_specs(server: Server, opts: Options, workload: str, conns: int) -> list[dict[str, Any]]:
    procs = max(2, math.ceil(conns / opts.conns_per_proc)) if conns >= 2 else 1
    specs = []
    for i, (n, address) in enumerate(zip(split(conns, procs), fresh_sources(procs))):
        spec = base_spec(server, opts, workload, i)
        spec.update(conns=n, local_addr=address, concurrency=max(1, math.ceil(opts.concurrency / procs)))
        specs.append(spec)
    return specs


def run_idle(server: Server, opts: Options, progress: Progress) -> dict[str, Any]:
    conns = opts.idle_conns
    specs = _conn_specs(server, opts, "idle", conns)
    profiler = Profiler(opts, "idle", server.target)
    with Pool(specs, progress, opts.client_cpus) as pool:
        pool.expect("ready", 120, phase="minting tokens")
        time.sleep(0.3)
        rss0 = server.rss_bytes()
        cpu0 = server.cpu_seconds()
        pool.send_all("go")
        profiler.start(server.pid, 5)
        opened = pool.expect("opened", 600, phase="opening")
        cpu1 = server.cpu_seconds()
        t_open = max(o["finished"] for o in opened) - min(o["started"] for o in opened)
        n_open = sum(o["opened"] for o in opened)
        progress.update(phase="holding")
        pool.pump(time.monotonic() + opts.idle_hold)
        rss1 = server.rss_bytes()
        pool.send_all("check")
        done = pool.expect("done", 300, phase="checking")
    checks = empty_checks()
    for d in done:
        add_checks(checks, d["checks"])
    open_failures: dict[str, int] = {}
    for o in opened:
        for k, n in o["failures"].items():
            open_failures[k] = open_failures.get(k, 0) + n
            checks["errors"][f"open:{k}"] = checks["errors"].get(f"open:{k}", 0) + n
    healthy = sum(d["healthy"] for d in done)
    times = sorted(t for o in opened for t in o["times"])
    t_start = min(o["started"] for o in opened)
    result = {
        "workload": "idle", "target": server.target,
        "params": {"conns": conns, "procs": len(specs), "source_addresses": [s["local_addr"] for s in specs],
                   "concurrency_per_proc": specs[0]["concurrency"], "hold_s": opts.idle_hold},
        "rss_before_bytes": rss0, "rss_after_bytes": rss1,
        "rss_per_conn_bytes": round((rss1 - rss0) / n_open) if n_open else None,
        "conns_per_s": round(n_open / t_open, 1) if t_open > 0 else None,
        "open_s": round(t_open, 3),
        "server_cpu_us_per_conn": round((cpu1 - cpu0) / n_open * 1e6, 1) if n_open else None,
        "generator_cpu_us_per_conn": round(sum(o["client_cpu_s"] for o in opened) / n_open * 1e6, 1) if n_open else None,
        "opened": n_open, "healthy": healthy, "all_healthy": healthy == conns,
        "checks": checks,
        "failed": failed(checks) or healthy != conns,
        "_series": {"opened_cumulative_s": [round(t - t_start, 4) for t in times]},
    }
    profile = profiler.finish()
    if profile:
        result["profile"] = profile
    return result


def run_storm(server: Server, opts: Options, progress: Progress) -> dict[str, Any]:
    conns = opts.storm_conns
    specs = _conn_specs(server, opts, "storm", conns)
    for spec, n in zip(specs, split(conns, len(specs))):
        spec.update(rate=opts.storm_rate * n / conns, window=256, reconnect_concurrency=max(1, opts.reconnect_concurrency // len(specs)))
    profiler = Profiler(opts, "storm", server.target)
    with Pool(specs, progress, opts.client_cpus) as pool:
        pool.expect("ready", 600, phase="connecting")
        t_go = time.monotonic() + GO_DELAY_S
        t_drop = t_go + opts.storm_before
        pool.send_all("go", {"t_go": int(t_go * 1e9), "t_drop": int(t_drop * 1e9)})
        progress.update(phase="writing")
        pool.pump(t_drop)
        cpu0 = server.cpu_seconds()
        profiler.start(server.pid, 5)
        progress.update(phase="storm")
        live = pool.expect("live", 300, phase="reconnecting")
        cpu1 = server.cpu_seconds()
        pool.send_all("stop", {"t_stop": int((time.monotonic() + opts.storm_after) * 1e9)})
        done = pool.expect("done", 120, phase="draining")
    checks = empty_checks()
    for d in done:
        add_checks(checks, d["checks"])
    n_live = sum(x["live"] for x in live)
    all_live_s = max((x["t_drop"] + max(x["times"]) if x["times"] else x["t_drop"]) for x in live) - t_drop
    times = sorted(x["t_drop"] - t_drop + t for x in live for t in x["times"])
    result = {
        "workload": "storm", "target": server.target,
        "params": {"conns": conns, "procs": len(specs), "write_rate_per_s": opts.storm_rate,
                   "reconnect_concurrency": opts.reconnect_concurrency},
        "all_live_s": round(all_live_s, 3),
        "live_again": n_live,
        "reconnects_per_s": round(n_live / all_live_s, 1) if all_live_s > 0 else None,
        "server_cpu_us_per_reconnect": round((cpu1 - cpu0) / n_live * 1e6, 1) if n_live else None,
        "generator_cpu_us_per_reconnect": round(sum(x["client_cpu_s"] for x in live) / n_live * 1e6, 1) if n_live else None,
        "messages_acked": sum(d["acked_total"] for d in done),
        "caught_up_by_resume": sum(d["caught_up"] for d in done),
        "reconnect_retries": dict(sum((Counter(d.get("retries", {})) for d in done), Counter())),
        "lost": checks["lost"], "duplicated": checks["duplicated"], "out_of_order": checks["out_of_order"],
        "checks": checks,
        "failed": failed(checks) or n_live != conns,
        "_series": {"live_cumulative_s": [round(t, 4) for t in times]},
    }
    profile = profiler.finish()
    if profile:
        result["profile"] = profile
    return result


def chat_plan(shoppers: int, per_agent: int, procs: int) -> list[list[int]]:
    """Per generator process, its agents' numbers of shoppers: ceil(N / per_agent) agents with
    ``per_agent`` shoppers each (the last one the rest), agents spread over the processes."""
    per_agent = max(1, per_agent)
    agents = [min(per_agent, shoppers - a * per_agent) for a in range(math.ceil(shoppers / per_agent))]
    plan, first = [], 0
    for n in split(len(agents), procs):
        plan.append(agents[first:first + n])
        first += n
    return plan


def run_chat(server: Server, opts: Options, progress: Progress) -> dict[str, Any]:
    shoppers = opts.chat_shoppers
    agents = math.ceil(shoppers / max(1, opts.chat_per_agent))
    conns = shoppers + agents
    procs = min(agents, max(opts.chat_procs, math.ceil(conns / opts.conns_per_proc)))
    plan = chat_plan(shoppers, opts.chat_per_agent, procs)
    specs = []
    for i, (per_agent, address) in enumerate(zip(plan, fresh_sources(len(plan)))):
        spec = base_spec(server, opts, "chat", i)
        # the total rate is questions and answers together: shoppers ask at half of it
        spec.update(shoppers_per_agent=per_agent, rate=opts.chat_rate / 2 * sum(per_agent) / shoppers, think_s=opts.chat_think_s,
                    local_addr=address, concurrency=max(1, math.ceil(opts.concurrency / len(plan))))
        specs.append(spec)
    duration = opts.chat_duration
    profiler = Profiler(opts, "chat", server.target)
    rss0 = server.rss_bytes()
    with Pool(specs, progress, opts.client_cpus) as pool:
        setup_start = time.monotonic()
        pool.expect("ready", 900, phase="connecting")
        setup_s = time.monotonic() - setup_start
        rss_ready = server.rss_bytes()
        measured = measure_window(pool, server, profiler, opts, progress, duration)
        rss_end = server.rss_bytes()
        done = pool.expect("done", 120 + 5 * opts.chat_think_s, phase="draining")
    accepted = sum(d["accepted"] for d in done)
    delivered = sum(d["delivered"] for d in done)
    checks = empty_checks()
    for d in done:
        add_checks(checks, d["checks"])
    ack = merge_latencies([d["ack_lat"] for d in done])
    e2e = merge_latencies([d["e2e_lat"] for d in done])
    result = {
        "workload": "chat", "target": server.target,
        "params": {"shoppers": shoppers, "agents": agents, "per_agent": opts.chat_per_agent, "conns": conns, "rate_per_s": opts.chat_rate,
                   "think_s": opts.chat_think_s, "duration_s": duration, "warmup_s": opts.warmup, "procs": len(specs),
                   "max_conns_per_proc": max(sum(p) + len(p) for p in plan)},
        "setup_s": round(setup_s, 2),
        "accepted_per_s": round(accepted / duration, 1),
        "delivered_per_s": round(delivered / duration, 1),
        **_cpu_figures(measured, duration, accepted, delivered),
        "generator_cpu_us_per_msg": round(sum(d["client_cpu_s"] for d in done) / accepted * 1e6, 2) if accepted else None,
        "ack_latency": percentiles(ack),
        "e2e_latency": percentiles(e2e),
        "rss_before_bytes": rss0, "rss_ready_bytes": rss_ready, "rss_end_bytes": rss_end,
        "rss_per_conn_bytes": round((rss_ready - rss0) / conns) if conns else None,
        "questions": sum(d["questions"] for d in done),
        "checks": checks,
        "failed": failed(checks),
        "_samples": {"ack": ack, "delivery": e2e},
        "_series": {"accepted": merge_series([d["series_accepted"] for d in done]),
                    "delivered": merge_series([d["series_delivered"] for d in done])},
    }
    profile = profiler.finish()
    if profile:
        result["profile"] = profile
    return result


# ---- the machine's own floor -------------------------------------------------------------------------


def _echo_server(pipe: Any, cpus: set[int] | None) -> None:
    import socket

    if cpus:
        os.sched_setaffinity(0, cpus)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    pipe.send(listener.getsockname()[1])
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.settimeout(30)
    while True:
        data = conn.recv(4096)
        if not data:
            break
        conn.sendall(data)


def loopback_floor(opts: Options, rounds: int = 3000) -> dict[str, Any]:
    """Round trips of a 100-byte TCP echo between a process on the server's core and one on the
    generator's: what the machine itself costs, below any server (a bound for latency targets)."""
    import socket

    import numpy as np

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_echo_server, args=(child, opts.server_cpus), daemon=True)
    proc.start()
    try:
        if not parent.poll(30):
            raise WorkerFailed("echo server did not start")
        port = parent.recv()
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = b"x" * 100
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            sock.sendall(payload)
            got = 0
            while got < len(payload):
                got += len(sock.recv(4096))
            samples.append((time.perf_counter_ns() - t0) // 1000)
        sock.close()
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.terminate()
    return percentiles(np.array(samples, dtype=np.uint32))


# ---- one (workload, target) -------------------------------------------------------------------------


WORKLOADS = ("pairs", "latency", "fanout", "idle", "storm", "chat")


def run_one(workload: str, target: str, opts: Options) -> dict[str, Any]:
    """Start ``target``'s server, run ``workload`` against it, stop it."""
    progress = Progress(f"{workload} · {LABELS[target]}", opts.quiet)
    server = Server(target, cpus=opts.server_cpus, extra_args=list(opts.server_args) if TARGETS[target][0] == "kefu" else [])
    try:
        load = loadavg()
        server.start()
        if workload == "pairs":
            result = run_pairs(server, opts, progress, convs=opts.convs, window=opts.window, senders=opts.senders, duration=opts.duration)
        elif workload == "latency":
            result = run_pairs(server, opts, progress, convs=1, window=1, senders=opts.latency_senders, duration=opts.latency_duration, name="latency")
            result["loopback_floor"] = loopback_floor(opts)
        elif workload == "fanout":
            result = run_fanout(server, opts, progress)
        elif workload == "idle":
            result = run_idle(server, opts, progress)
        elif workload == "storm":
            result = run_storm(server, opts, progress)
        elif workload == "chat":
            result = run_chat(server, opts, progress)
        else:
            raise ValueError(f"unknown workload {workload!r}")
        result["loadavg_before"] = load
        result["server_command"] = " ".join(server.command[1:])
        build = server.build()
        if build:
            result["server_build"] = build
        warnings = server.log_warnings()
        if warnings:
            result["server_warnings"] = warnings
        return result
    finally:
        progress.done()
        server.stop()
        server.cleanup()


__all__ = ["Options", "WORKLOADS", "run_one", "measure"]
