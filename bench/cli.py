"""``python -m bench``: run workloads against the peer relays and Kefu, print the ratio table.

    python -m bench all                                  # every workload, the peers (websockets, picows, node ws) + kefu memory + kefu sqlite
    python -m bench latency,chat --targets picows,node,memory,sqlite   # some workloads, some targets
    python -m bench pairs --targets memory --convs 64    # one workload, one target, other sizes
    python -m bench all --full --rounds 3 --profile      # the full-size figures of docs/benchmarks.md
    python -m bench clients                              # picows against websockets as the generator's client

Exit status 0 when every run passed its correctness checks, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from . import report
from .awake import keep_awake
from .client import CLIENTS
from .run import WORKLOADS, Options, WorkerFailed, run_one
from .servers import LABELS, TARGETS, gateway_tree, machine, node_available
from .worker import raise_nofile

ROOT = Path(__file__).resolve().parent.parent
FULL = {"members": 5000, "idle_conns": 15000, "storm_conns": 10000, "chat_shoppers": 10000, "chat_rate": 2000.0}
DEFAULT_TARGETS = "baseline,picows,node,memory,sqlite"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description="Kefu's high-rate generator: workloads against the baseline relay and Kefu.")
    p.add_argument("workload", nargs="?", default="all", type=workload_list,
                   help=f"all: {', '.join(WORKLOADS)}; or some of them, comma-separated; clients: compare the generator's WebSocket clients")
    p.add_argument("--targets", default=None, help=f"comma-separated (default {DEFAULT_TARGETS}; node is left out, with a note, where node "
                   "and npm are missing): baseline (the websockets relay), picows (the picows relay), node (the Node ws relay), "
                   "memory (Kefu memory store), sqlite (Kefu SQLite store), "
                   "memory-pure and sqlite-pure (the same with KEFU_PUREPYTHON=1: native/pure ratios)")
    p.add_argument("--rounds", type=int, default=1, help="run everything this many times; the median round is reported")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "latest"), help="directory for results.json and the PNG plots")
    p.add_argument("--client", default="picows", choices=CLIENTS, help="the generator's WebSocket client")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin the server and the generator to different cores")
    p.add_argument("--server-cpu", type=int, default=0, help="the server's core when pinning")
    p.add_argument("--full", action="store_true", help=f"full sizes: {FULL}")
    p.add_argument("--profile", action="store_true", help="attach py-spy to Kefu during each measurement (figures of profiled runs are distorted)")
    p.add_argument("--awake", action="store_true", help="a SCHED_IDLE spinner per core keeps idle cores from halting (see bench/awake.py)")
    p.add_argument("--no-plots", dest="plots", action="store_false")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG", help="extra flag for kefu serve (repeat), e.g. --server-arg=--max-outbox-bytes=16777216")
    g = p.add_argument_group("pairs and latency")
    g.add_argument("--convs", type=int, default=Options.convs, help="conversations (C), each a shopper and an agent")
    g.add_argument("--window", type=int, default=Options.window, help="unacknowledged messages per sender (K)")
    g.add_argument("--senders", default=Options.senders, choices=("both", "shopper"))
    g.add_argument("--duration", type=float, default=Options.duration, help="measurement window in seconds (pairs, fanout)")
    g.add_argument("--warmup", type=float, default=Options.warmup, help="seconds of load before the window")
    g.add_argument("--pairs-procs", type=int, default=Options.pairs_procs, help="generator processes for pairs")
    g.add_argument("--latency-duration", type=float, default=Options.latency_duration)
    g.add_argument("--latency-senders", default=Options.latency_senders, choices=("both", "shopper"),
                   help="latency: both sides send, one message in flight each (default), or only the shopper (the figures before issue 15)")
    g = p.add_argument_group("chat")
    g.add_argument("--chat-shoppers", type=int, default=Options.chat_shoppers, help="shoppers (N), each in its own conversation (10,000 with --full)")
    g.add_argument("--chat-per-agent", type=int, default=Options.chat_per_agent, help="conversations per agent (N / this many agents)")
    g.add_argument("--chat-rate", type=float, default=Options.chat_rate, help="messages per second in total, questions and answers (2,000 with --full)")
    g.add_argument("--chat-think-s", type=float, default=Options.chat_think_s, help="an agent's mean time to answer (exponential)")
    g.add_argument("--chat-duration", type=float, default=Options.chat_duration, help="measurement window in seconds")
    g.add_argument("--chat-procs", type=int, default=Options.chat_procs, help="generator processes at least (more when --conns-per-proc requires)")
    g = p.add_argument_group("fanout")
    g.add_argument("--members", type=int, default=Options.members, help="receiving connections (S) of the conversation")
    g.add_argument("--fanout-users", type=int, default=Options.fanout_users, help="distinct agent users the members are spread over")
    g.add_argument("--fanout-window", type=int, default=Options.fanout_window, help="messages in flight (not yet delivered to every member)")
    g.add_argument("--fanout-procs", type=int, default=Options.fanout_procs)
    g = p.add_argument_group("idle, storm and chat")
    g.add_argument("--idle-conns", type=int, default=Options.idle_conns)
    g.add_argument("--idle-hold", type=float, default=Options.idle_hold, help="seconds the connections stay idle before the memory reading")
    g.add_argument("--storm-conns", type=int, default=Options.storm_conns)
    g.add_argument("--storm-rate", type=float, default=Options.storm_rate, help="messages per second written into the conversations throughout")
    g.add_argument("--storm-before", type=float, default=Options.storm_before, help="seconds of writing before the drop")
    g.add_argument("--storm-after", type=float, default=Options.storm_after, help="seconds of writing after everyone is live again")
    g.add_argument("--reconnect-concurrency", type=int, default=Options.reconnect_concurrency, help="reconnects in progress at once (all processes)")
    g.add_argument("--conns-per-proc", type=int, default=Options.conns_per_proc, help="connections per generator process (< 20000 open files each)")
    g.add_argument("--concurrency", type=int, default=Options.concurrency, help="connection opens in progress at once (all processes)")
    return p


def workload_list(text: str) -> list[str]:
    """``all``, ``clients`` or comma-separated workloads, in the order given."""
    if text in ("all", "clients"):
        return [text]
    names = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in names if w not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown workload {', '.join(unknown) or text!r}: all, clients or some of {', '.join(WORKLOADS)}")
    return names


def choose_targets(text: str | None) -> list[str]:
    """The targets asked for; by default every peer and both Kefu stores, less the Node relay where
    node cannot run (said on stderr; asked for by name, it is an error)."""
    targets = [t.strip() for t in (text or DEFAULT_TARGETS).split(",") if t.strip()]
    for t in targets:
        if t not in TARGETS:
            raise SystemExit(f"unknown target {t!r}: one of {', '.join(TARGETS)}")
    if "node" in targets and not node_available():
        if text is not None:
            raise SystemExit("target node: node (and npm, to install its ws package) are not installed")
        print("note: node or npm is not installed: the Node ws relay is left out", file=sys.stderr)
        targets.remove("node")
    return targets


def options_from(args: argparse.Namespace) -> Options:
    opts = Options()
    for f in fields(Options):
        if hasattr(args, f.name):
            setattr(opts, f.name, getattr(args, f.name))
    if args.full:
        for k, v in FULL.items():
            setattr(opts, k, v)
    opts.server_args = list(args.server_arg)
    cores = sorted(os.sched_getaffinity(0))
    if args.pin and len(cores) >= 2:
        opts.server_cpus = {args.server_cpu}
        opts.client_cpus = {c for c in cores if c != args.server_cpu}
    opts.profile_dir = args.out if args.profile else None
    return opts


def summary_line(r: dict[str, Any]) -> str:
    w = r["workload"]
    status = "FAILED" if r.get("failed") else "ok"
    if w == "chat":
        text = (f"{r['delivered_per_s']:,.0f} msg/s delivered over {r['params']['conns']:,} connections, server {r['cpu_us_per_delivery'] or 0:.1f} µs/msg "
                f"({r['server_cpu_util']:.2f} cores), ack p50/p99/p99.9 {r['ack_latency']['p50_ms']}/{r['ack_latency']['p99_ms']}/"
                f"{r['ack_latency']['p999_ms']} ms, delivery p50/p99/p99.9 {r['e2e_latency']['p50_ms']}/{r['e2e_latency']['p99_ms']}/"
                f"{r['e2e_latency']['p999_ms']} ms, RSS {r['rss_end_bytes'] / 2**20:,.1f} MB ({(r['rss_per_conn_bytes'] or 0) / 1024:.1f} KB/conn), setup {r['setup_s']} s")
    elif w in ("pairs", "latency"):
        text = (f"{r['delivered_per_s']:,.0f} msg/s delivered, server {r['cpu_us_per_delivery'] or 0:.1f} µs/msg "
                f"({r['server_cpu_util']:.2f} cores), ack p50/p99/p99.9 {r['ack_latency']['p50_ms']}/{r['ack_latency']['p99_ms']}/"
                f"{r['ack_latency']['p999_ms']} ms, e2e p99 {r['e2e_latency']['p99_ms']} ms")
        if r.get("loopback_floor"):
            text += f"; TCP echo floor p50/p99 {r['loopback_floor']['p50_ms']}/{r['loopback_floor']['p99_ms']} ms"
    elif w == "fanout":
        text = (f"{r['deliveries_per_s']:,.0f} deliveries/s ({r['messages_per_s']:,.1f} msg/s to {r['params']['members']:,}), "
                f"server {r['cpu_us_per_delivery'] or 0:.2f} µs/delivery, p99 {r['delivery_latency']['p99_ms']} ms, setup {r['setup_s']} s")
    elif w == "idle":
        text = (f"{r['opened']:,} connections, {(r['rss_per_conn_bytes'] or 0) / 1024:.2f} KB each, {r['conns_per_s']:,.0f}/s opened "
                f"(server {r['server_cpu_us_per_conn']:,.0f} µs, generator {r['generator_cpu_us_per_conn']:,.0f} µs CPU each), "
                f"healthy {r['healthy']:,}/{r['params']['conns']:,}")
    else:
        all_live = "never all" if r.get("all_live_s") is None else f"all in {r['all_live_s']:.2f} s"
        text = (f"{r['live_again']:,}/{r['params']['conns']:,} live again, {all_live} "
                f"({r['caught_up_by_resume']:,} messages caught up by resume; server {r['server_cpu_us_per_reconnect'] or 0:,.0f} µs, "
                f"generator {r['generator_cpu_us_per_reconnect'] or 0:,.0f} µs CPU per reconnect), lost {r['lost']}, "
                f"duplicated {r['duplicated']}, out of order {r['out_of_order']}, reconnect retries {sum((r.get('reconnect_retries') or {}).values())}")
    return f"  {w} · {LABELS[r['target']]}: {text} — {status}"


def run_clients(opts: Options, out: Path) -> int:
    """The generator's client libraries on the same pairs workload against Kefu (memory store)."""
    rows = []
    for client in CLIENTS:
        opts.client = client
        r = run_one("pairs", "memory", opts)
        rows.append(r)
        print(f"  {client}: {r['delivered_per_s']:,.0f} msg/s, generator {r['generator_cpu_us_per_msg']} µs CPU per message, "
              f"server {r['cpu_us_per_delivery']} µs/msg, ack p99 {r['ack_latency']['p99_ms']} ms — {'FAILED' if r['failed'] else 'ok'}")
    report.write_json(out / "clients.json", {"date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(), "runs": rows})
    return 1 if any(r["failed"] for r in rows) else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    raise_nofile()
    cores = sorted(os.sched_getaffinity(0))
    with keep_awake(args.awake, cores):
        return _main(args, argv)


def _main(args: argparse.Namespace, argv: list[str] | None) -> int:
    opts = options_from(args)
    if opts.client_cpus:
        os.sched_setaffinity(0, opts.client_cpus)  # the coordinator and every worker it spawns
    out = Path(args.out)
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    print(f"kefu bench · {dt.datetime.now():%Y-%m-%d %H:%M} · {machine()['cpu']} · {os.cpu_count()} cores · "
          f"server on cpu {sorted(opts.server_cpus) if opts.server_cpus else 'any'}, generator on cpu {sorted(opts.client_cpus) if opts.client_cpus else 'any'} · client {opts.client}"
          f"{' · cores kept awake' if args.awake else ''} · load {os.getloadavg()[0]:.2f}")
    if args.workload == ["clients"]:
        return run_clients(opts, out)
    workloads = list(WORKLOADS) if args.workload == ["all"] else args.workload
    targets = choose_targets(args.targets)
    rounds: list[dict[str, dict[str, Any]]] = []
    broken = False
    for n in range(args.rounds):
        this: dict[str, dict[str, Any]] = {}
        for w in workloads:
            for t in targets:
                try:
                    r = run_one(w, t, opts)
                except WorkerFailed as exc:
                    print(f"  {w} · {LABELS[t]}: generator failed: {exc}", file=sys.stderr)
                    r = {"workload": w, "target": t, "failed": True, "error": str(exc)[:2000], "checks": {}}
                    broken = True
                this.setdefault(w, {})[t] = r
                if "error" not in r:
                    print(summary_line(r) + (f" (round {n + 1})" if args.rounds > 1 else ""), flush=True)
        rounds.append(this)
    results = {w: {t: report.median_round([rd[w][t] for rd in rounds if "error" not in rd[w][t]], w) or rounds[-1][w][t] for t in targets} for w in workloads}
    rows = report.ratio_rows(results, targets)
    print()
    print(report.table(rows, targets, results))
    detail = report.details(results)
    if detail:
        print(detail)
    any_failed = broken or any(r.get("failed") for by in results.values() for r in by.values() if r)
    document = {
        "command": command, "date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(), "gateway": gateway_tree(),
        "pinning": {"server_cpus": sorted(opts.server_cpus or []), "generator_cpus": sorted(opts.client_cpus or [])},
        "awake": args.awake,
        "client": opts.client, "options": {f.name: getattr(opts, f.name) for f in fields(Options) if f.name not in ("server_cpus", "client_cpus")},
        "targets": targets, "workloads": workloads, "rounds_run": args.rounds,
        "ratios": rows, "results": results, "failed": any_failed,
    }
    if args.rounds > 1:
        document["all_rounds"] = rounds
    report.write_json(out / "results.json", document)
    written = [str(out / "results.json")]
    if args.plots:
        written += report.plots(out, results)
    print(f"\nwritten: {', '.join(written)}")
    if args.profile:
        from .profiling import render

        for by in results.values():
            for r in by.values():
                if r and r.get("profile"):
                    print(render(r["profile"]))
    return 1 if any_failed else 0
