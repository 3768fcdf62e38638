"""The Prometheus files in ops/prometheus: every rule file passes `promtool check rules`, the alert
unit tests pass `promtool test rules`, and every metric an alert reads is one the gateway exports."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import kefu_metrics

OPS = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
RULE_FILES = sorted(p for p in OPS.glob("*.yml") if "groups" in (yaml.safe_load(p.read_text()) or {}))
TEST_FILES = sorted(OPS.glob("*.test.yml"))


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: apt-get install -y prometheus (.ci/run does)")
    return path


def test_there_are_rule_files_and_alert_tests():
    assert [p.name for p in RULE_FILES] == ["kefu-alerts.yml"] and [p.name for p in TEST_FILES] == ["kefu-alerts.test.yml"]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_checks_every_rule_file(path):
    proc = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_the_main_alerts_fire_as_their_unit_tests_say(path):
    proc = subprocess.run([promtool(), "test", "rules", path.name], cwd=OPS, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_alert_tests_cover_the_scale_out_alerts():
    tested = {case["alertname"] for f in TEST_FILES for t in yaml.safe_load(f.read_text())["tests"] for case in t["alert_rule_test"]}
    assert {"KefuNodeDown", "KefuBusDown", "KefuBusLagging", "KefuStoreDown", "KefuStoreRefusing", "KefuQueueWaitingLong"} <= tested


async def test_every_metric_an_alert_reads_is_exported(exported):
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                missing = kefu_metrics(rule["expr"]) - exported
                assert not missing, f"{rule['alert']} reads {sorted(missing)}, which the gateway does not export"


def test_every_alert_has_a_runbook_entry():
    runbook = (OPS.parents[1] / "docs" / "operations.md").read_text().split("## Runbook", 1)[1]
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                assert f"\n### {rule['alert']}\n" in runbook, rule["alert"]
