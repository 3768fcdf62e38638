"""The deployment files in ops/: they parse, the compose file has the cluster the issue asks for,
the Kubernetes pods have probes on the gateway's real health paths and a preStop drain, and every
setting they pass is one the gateway has."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import yaml

from gateway.config import Config
from gateway.http.health import HEALTH_PATHS

OPS = Path(__file__).resolve().parents[2] / "ops"
SETTINGS = {"KEFU_" + f.name.upper() for f in fields(Config)}


def test_the_compose_file_runs_postgresql_redis_three_gateways_prometheus_and_grafana():
    compose = yaml.safe_load((OPS / "compose" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "prometheus", "grafana"} <= set(services)
    gateways = [s for s in services.values() if s.get("image") == "kefu:latest"]
    assert len(gateways) == 3
    for gateway in gateways:
        env = gateway["environment"]
        assert set(env) <= SETTINGS
        assert env["KEFU_STORE"].startswith("postgresql://") and env["KEFU_BUS"].startswith("redis://") and env["KEFU_ROUTING"] == "on"  # one leader routes for all (docs/scaling.md)
    scrape = yaml.safe_load((OPS / "compose" / "prometheus.yml").read_text())
    assert sorted(scrape["scrape_configs"][0]["static_configs"][0]["targets"]) == ["kefu1:8701", "kefu2:8701", "kefu3:8701"]


def test_kubernetes_pods_have_probes_and_a_prestop_drain():
    docs = list(yaml.safe_load_all((OPS / "kubernetes" / "kefu.yaml").read_text()))
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz" and container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz"} == set(HEALTH_PATHS)
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert {e["name"] for e in container["env"]} <= SETTINGS
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown = float(container["args"][container["args"].index("--shutdown-timeout-s") + 1])
    assert grace >= int(container["lifecycle"]["preStop"]["exec"]["command"][1]) + shutdown


def test_the_containerfile_serves_on_every_interface_and_exposes_both_ports():
    text = (OPS / "Containerfile").read_text()
    assert "KEFU_HOST=0.0.0.0" in text and "KEFU_METRICS_HOST=0.0.0.0" in text
    assert re.search(r"^EXPOSE 8700 8701$", text, re.M) and "/healthz" in text
