"""Results of a run: the median round per (workload, target), the ratio table, JSON and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from .servers import LABELS, PEERS, pure_twin_of

# Each row of the ratio table: (workload, label, getter, unit, lower_is_better, target)
# target: (kind, value, at, against) where kind "ratio" compares with another target of the same
# run (``against``: the baseline unless named, e.g. "picows" or "memory") and "abs" is an absolute
# bound, "pure" compares a native target with its pure-Python twin in the same run (memory with
# memory-pure); ``at`` is the size the target is defined at (None: any size).
# Besides the ratios to the baseline, every Kefu target's value is divided by every peer's (the
# relays of bench/baseline/: websockets, picows, Node ws) in ``peer_ratios``.


def _get(*keys: str) -> Callable[[dict[str, Any]], Any]:
    def get(result: dict[str, Any]) -> Any:
        value: Any = result
        for key in keys:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    return get


ROWS: list[dict[str, Any]] = [
    {"workload": "pairs", "label": "pairs: server CPU per message", "get": _get("cpu_us_per_delivery"), "unit": "µs", "lower": True,
     "target": {"memory": ("ratio", 0.15), "sqlite": ("ratio", 0.20)}, "pure_target": 0.6},
    {"workload": "pairs", "label": "pairs: PostgreSQL + Redis CPU per message", "get": _get("backing_cpu_us_per_delivery"), "unit": "µs",
     "lower": True},
    {"workload": "pairs", "label": "pairs: delivered messages/s", "get": _get("delivered_per_s"), "unit": "/s", "lower": False},
    {"workload": "pairs", "label": "pairs: ack p99", "get": _get("ack_latency", "p99_ms"), "unit": "ms", "lower": True},
    {"workload": "pairs", "label": "pairs: end-to-end p99", "get": _get("e2e_latency", "p99_ms"), "unit": "ms", "lower": True},
    {"workload": "latency", "label": "1 conv, 1 in flight each: server CPU per message", "get": _get("cpu_us_per_delivery"), "unit": "µs",
     "lower": True, "target": {"memory": ("ratio", 1.0, None, "picows"), "sqlite": ("ratio", 2.0, None, "memory")}},
    {"workload": "latency", "label": "1 conv, 1 in flight each: ack p99", "get": _get("ack_latency", "p99_ms"), "unit": "ms", "lower": True,
     "target": {"memory": ("abs", 0.3), "sqlite": ("abs", 1.0)}},
    {"workload": "latency", "label": "1 conv, 1 in flight each: ack p50", "get": _get("ack_latency", "p50_ms"), "unit": "ms", "lower": True,
     "target": {"memory": ("ratio", 1.2, None, "picows")}},
    {"workload": "latency", "label": "1 conv, 1 in flight each: delivery p99", "get": _get("e2e_latency", "p99_ms"), "unit": "ms", "lower": True},
    {"workload": "latency", "label": "machine floor: TCP echo p99", "get": _get("loopback_floor", "p99_ms"), "unit": "ms", "lower": True},
    {"workload": "fanout", "label": "fanout: server CPU per delivery", "get": _get("cpu_us_per_delivery"), "unit": "µs", "lower": True,
     "target": {"memory": ("ratio", 0.25, ("members", 5000)), "sqlite": ("ratio", 0.25, ("members", 5000))}, "pure_target": 0.4},
    {"workload": "fanout", "label": "fanout: deliveries/s", "get": _get("deliveries_per_s"), "unit": "/s", "lower": False},
    {"workload": "fanout", "label": "fanout: delivery p99", "get": _get("delivery_latency", "p99_ms"), "unit": "ms", "lower": True},
    {"workload": "idle", "label": "idle: server memory per connection", "get": _get("rss_per_conn_bytes"), "unit": "B", "lower": True,
     "target": {"memory": ("abs", 6144, ("conns", 15000)), "sqlite": ("abs", 6144, ("conns", 15000))}, "pure_target": 1.0},
    {"workload": "idle", "label": "idle: connections opened/s", "get": _get("conns_per_s"), "unit": "/s", "lower": False},
    {"workload": "storm", "label": "storm: time until all live again", "get": _get("all_live_s"), "unit": "s", "lower": True,
     "target": {"memory": ("abs", 5.0, ("conns", 10000)), "sqlite": ("abs", 5.0, ("conns", 10000))}},
    {"workload": "storm", "label": "storm: lost + duplicated", "get": lambda r: (r.get("lost", 0) + r.get("duplicated", 0)) if r else None,
     "unit": "", "lower": True, "target": {"memory": ("abs", 0), "sqlite": ("abs", 0), "baseline": ("abs", 0)}},
    {"workload": "chat", "label": "chat: server CPU per message", "get": _get("cpu_us_per_delivery"), "unit": "µs", "lower": True,
     "target": {"memory": ("ratio", 0.7, None, "picows"), "sqlite": ("ratio", 1.0, None, "picows")}},
    {"workload": "chat", "label": "chat: delivered messages/s", "get": _get("delivered_per_s"), "unit": "/s", "lower": False},
    {"workload": "chat", "label": "chat: ack p50", "get": _get("ack_latency", "p50_ms"), "unit": "ms", "lower": True},
    {"workload": "chat", "label": "chat: ack p99", "get": _get("ack_latency", "p99_ms"), "unit": "ms", "lower": True},
    {"workload": "chat", "label": "chat: ack p99.9", "get": _get("ack_latency", "p999_ms"), "unit": "ms", "lower": True},
    {"workload": "chat", "label": "chat: delivery p50", "get": _get("e2e_latency", "p50_ms"), "unit": "ms", "lower": True,
     "target": {"memory": ("ratio", 1.0, None, "picows"), "sqlite": ("ratio", 1.0, None, "picows")}},
    {"workload": "chat", "label": "chat: delivery p99", "get": _get("e2e_latency", "p99_ms"), "unit": "ms", "lower": True,
     "target": {"memory": ("ratio", 1.0, None, "picows"), "sqlite": ("ratio", 1.0, None, "picows")}},
    {"workload": "chat", "label": "chat: delivery p99.9", "get": _get("e2e_latency", "p999_ms"), "unit": "ms", "lower": True},
    {"workload": "chat", "label": "chat: server RSS at the end", "get": _get("rss_end_bytes"), "unit": "MB", "lower": True},
    {"workload": "chat", "label": "chat: server memory per connection", "get": _get("rss_per_conn_bytes"), "unit": "B", "lower": True},
]

HEADLINE = {
    "pairs": _get("cpu_us_per_delivery"),
    "latency": _get("ack_latency", "p99_ms"),
    "fanout": _get("cpu_us_per_delivery"),
    "idle": _get("rss_per_conn_bytes"),
    "storm": _get("all_live_s"),
    "chat": _get("cpu_us_per_delivery"),
}


def median_round(rounds: list[dict[str, Any]], workload: str) -> dict[str, Any] | None:
    """The round whose headline figure is the median (a whole round, so its figures agree)."""
    rounds = [r for r in rounds if r is not None]
    if not rounds:
        return None
    get = HEADLINE[workload]
    ranked = sorted(rounds, key=lambda r: (get(r) is None, get(r) if get(r) is not None else 0))
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    if len(rounds) > 1:
        chosen["rounds"] = [get(r) for r in rounds]
    chosen["failed"] = any(r.get("failed") for r in rounds)
    return chosen


def _fmt(value: Any, unit: str) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):
        return "—"
    if unit == "B":
        return f"{value / 1024:,.1f} KB"
    if unit == "MB":
        return f"{value / 2**20:,.1f} MB"
    if unit == "/s":
        return f"{value:,.0f}"
    if unit == "µs":
        return f"{value:,.1f} µs"
    if unit == "ms":
        return f"{value:,.3f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    return f"{value:,}"


def ratio_rows(results: dict[str, dict[str, dict[str, Any]]], targets: list[str]) -> list[dict[str, Any]]:
    rows = []
    for row in ROWS:
        by_target = results.get(row["workload"])
        if not by_target:
            continue
        values = {t: (row["get"](by_target[t]) if by_target.get(t) else None) for t in targets}
        base = values.get("baseline")
        out = {"figure": row["label"], "unit": row["unit"], "lower_is_better": row["lower"], "values": values, "ratios": {},
               "peer_ratios": {}, "pure_ratios": {}, "targets": {}}
        for t in targets:
            if t == "baseline":
                continue
            v = values.get(t)
            if v is not None and base:
                out["ratios"][t] = round(v / base, 3)
            if t not in PEERS:
                for peer in (p for p in targets if p in PEERS):
                    if v is not None and values.get(peer):
                        out["peer_ratios"].setdefault(peer, {})[t] = round(v / values[peer], 3)
            twin = pure_twin_of(t)
            pure = values.get(twin) if twin else None
            if v is not None and pure:
                out["pure_ratios"][t] = round(v / pure, 3)
        if row.get("pure_target") is not None:
            for t, value in out["pure_ratios"].items():
                out["targets"][f"{t}/pure"] = {"kind": "pure", "bound": row["pure_target"], "at": None, "value": value,
                                               "met": value <= row["pure_target"]}
        for t, spec in (row.get("target") or {}).items():
            if t not in targets:
                continue
            kind, bound = spec[0], spec[1]
            at = spec[2] if len(spec) > 2 else None
            against = spec[3] if len(spec) > 3 else "baseline"
            result = by_target.get(t) or {}
            size_ok = at is None or (result.get("params") or {}).get(at[0]) == at[1]
            if kind == "ratio":
                other = values.get(against)
                value = round(values[t] / other, 3) if values.get(t) is not None and other else None
            else:
                value = values.get(t)
            met = None if value is None or not size_ok else (value <= bound)
            out["targets"][t] = {"kind": kind, "bound": bound, "at": at, "value": value, "met": met,
                                 **({"against": against} if kind == "ratio" else {})}
        rows.append(out)
    return rows


def _target_text(row: dict[str, Any]) -> str:
    parts = []
    for t, tgt in row["targets"].items():
        bound = tgt["bound"]
        if tgt["kind"] == "ratio" and tgt.get("against", "baseline") != "baseline":
            text = f"{t} ≤{bound}x {tgt['against']}"
        elif tgt["kind"] in ("ratio", "pure"):
            text = f"{t} ≤{bound}x"
        elif row["unit"] == "B":
            text = f"{t} ≤{bound / 1024:.0f} KB"
        else:
            text = f"{t} ≤{bound}{(' ' + row['unit']) if row['unit'] else ''}"
        if tgt["at"]:
            text += f" @{tgt['at'][1]:,}"
        mark = {True: "✓", False: "✗", None: "n/a"}[tgt["met"]]
        parts.append(f"{text} {mark}")
    return "; ".join(parts)


def table(rows: list[dict[str, Any]], targets: list[str], results: dict[str, Any]) -> str:
    natives = [t for t in targets if pure_twin_of(t) in targets]
    others = [p for p in targets if p in PEERS and p != "baseline"]  # peers beside the baseline: picows, node
    kefus = [t for t in targets if t not in PEERS]
    header = ["figure", *[LABELS[t] for t in targets], *[f"{t}/base" for t in targets if t != "baseline" and "baseline" in targets],
              *[f"{t}/{p}" for p in others for t in kefus], *[f"{t}/pure" for t in natives], "target"]
    body = []
    for row in rows:
        cells = [row["figure"]]
        cells += [_fmt(row["values"].get(t), row["unit"]) for t in targets]
        if "baseline" in targets:
            cells += [f"{row['ratios'][t]:.2f}x" if t in row["ratios"] else "—" for t in targets if t != "baseline"]
        for p in others:
            by = row["peer_ratios"].get(p, {})
            cells += [f"{by[t]:.2f}x" if t in by else "—" for t in kefus]
        cells += [f"{row['pure_ratios'][t]:.2f}x" if t in row["pure_ratios"] else "—" for t in natives]
        cells.append(_target_text(row))
        body.append(cells)
    verdicts = ["correctness (lost/dup/order/errors)"]
    for t in targets:
        runs = [r[t] for r in results.values() if r.get(t)]
        verdicts.append("FAILED" if any(r.get("failed") for r in runs) else "ok")
    if "baseline" in targets:
        verdicts += [""] * (len(targets) - 1)
    verdicts += [""] * (len(others) * len(kefus))
    verdicts += [""] * len(natives)
    verdicts.append("")
    body.append(verdicts)
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def details(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Per run: the correctness counters and the server warnings, when there are any."""
    lines = []
    for workload, by_target in results.items():
        for target, r in by_target.items():
            if not r:
                continue
            c = r.get("checks", {})
            bad = {k: v for k, v in c.items() if v and k != "errors"}
            if c.get("errors"):
                bad["errors"] = c["errors"]
            if bad or r.get("failed"):
                lines.append(f"  {workload}/{target}: FAILED {bad}")
            for w in r.get("server_warnings", [])[:3]:
                lines.append(f"  {workload}/{target} server log: {w[:160]}")
    return "\n".join(lines)


def strip_private(result: Any) -> Any:
    """The result without the raw samples (``_``-prefixed keys), for JSON."""
    if isinstance(result, dict):
        return {k: strip_private(v) for k, v in result.items() if not k.startswith("_")}
    if isinstance(result, list):
        return [strip_private(v) for v in result]
    return result


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(strip_private(document), indent=2, ensure_ascii=False, default=str) + "\n")


# ---- plots -------------------------------------------------------------------------------------------

COLORS = {"baseline": "#888888", "picows": "#2ca02c", "node": "#ff7f0e", "memory": "#1f77b4", "sqlite": "#d62728", "memory-pure": "#9ecae1", "sqlite-pure": "#fc9272"}


def plots(out: Path, results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """One PNG per workload: latency distribution and throughput over time (or, for idle and storm,
    connections opened / live again over time). Returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from .measure import BIN_S

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for workload, by_target in results.items():
        runs = {t: r for t, r in by_target.items() if r}
        if not runs:
            continue
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
        fig.suptitle(f"kefu bench · {workload}")
        if workload in ("pairs", "latency", "fanout", "chat"):
            for t, r in runs.items():
                for kind, samples in (r.get("_samples") or {}).items():
                    if len(samples) == 0:
                        continue
                    s = np.sort(samples) / 1000.0
                    p = (np.arange(1, len(s) + 1) - 0.5) / len(s)
                    nines = -np.log10(1 - p)
                    style = "-" if kind in ("ack", "delivery") else "--"
                    left.plot(nines, s, style, color=COLORS.get(t), label=f"{LABELS[t]} {kind}")
            ticks = [0, 1, 2, 3, 4]
            left.set_xticks(ticks, ["p0", "p90", "p99", "p99.9", "p99.99"])
            left.set_yscale("log")
            left.set_ylabel("latency (ms)")
            left.set_title("latency distribution")
            left.grid(True, which="both", alpha=0.3)
            left.legend(fontsize=7)
            for t, r in runs.items():
                series = r.get("_series") or {}
                key = "delivered" if "delivered" in series else next(iter(series), None)
                if key is None:
                    continue
                bins = np.array(series[key], dtype=float) / BIN_S
                right.plot(np.arange(len(bins)) * BIN_S, bins, color=COLORS.get(t), label=f"{LABELS[t]} {key}")
            right.set_xlabel("time since start (s)")
            right.set_ylabel(("deliveries" if workload == "fanout" else "messages") + " per second")
            right.set_title("throughput over time")
        else:
            key = "opened_cumulative_s" if workload == "idle" else "live_cumulative_s"
            for t, r in runs.items():
                times = (r.get("_series") or {}).get(key) or []
                if times:
                    right.plot(times, np.arange(1, len(times) + 1), color=COLORS.get(t), label=LABELS[t])
                    width = 0.25
                    counts, edges = np.histogram(times, bins=np.arange(0, max(times) + width, width))
                    left.step(edges[:-1], counts / width, where="post", color=COLORS.get(t), label=LABELS[t])
            left.set_title("connections per second (0.25 s bins)")
            left.set_xlabel("time (s)")
            right.set_title("connections opened" if workload == "idle" else "connections live again after the drop")
            right.set_xlabel("time since start (s)" if workload == "idle" else "time since the drop (s)")
            left.legend(fontsize=7)
        right.grid(True, alpha=0.3)
        right.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"{workload}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(str(path))
    return written
