"""The Grafana dashboard in ops/grafana: valid JSON, the panels the SREs asked for, and every
panel queries metrics the gateway really exports."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import kefu_metrics

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "ops" / "grafana").glob("*.json"))


def test_the_dashboard_has_the_panels_asked_for():
    [path] = DASHBOARDS
    titles = " | ".join(p["title"] for p in json.loads(path.read_text())["panels"]).lower()
    for topic in ("connections", "messages", "ack latency", "deliveries", "queues", "bot containment", "per node"):
        assert topic in titles, topic


async def test_every_panel_queries_exported_metrics(exported):
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            exprs = [t["expr"] for t in panel["targets"]]
            assert exprs, panel["title"]
            for expr in exprs:
                read = kefu_metrics(expr)
                assert read, f"{panel['title']}: {expr} reads no kefu metric"
                missing = read - exported
                assert not missing, f"panel {panel['title']!r} queries {sorted(missing)}, which the gateway does not export"
