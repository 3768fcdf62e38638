from __future__ import annotations

import re
import secrets

import httpx
import pytest
import trio

from gateway.app import serve
from gateway.bus.redis import RedisBus

from ..conftest import make_config

REDIS_URL = "redis://127.0.0.1:6379"


@pytest.fixture
async def exported(nursery, tmp_path) -> set[str]:
    """The sample names a gateway exports on /metrics, with the Redis bus, as a cluster node runs
    (routing's and the bot's families are exported with routing off too)."""
    bus = RedisBus(REDIS_URL, channel=f"kefu:test:{secrets.token_hex(6)}")
    running = await nursery.start(lambda task_status: serve(make_config(tmp_path), bus=bus, task_status=task_status))
    with trio.fail_after(30):
        async with httpx.AsyncClient() as http:
            text = (await http.get(running.metrics_url)).text
    running.node.stop()
    names = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, re.M))
    # a labelled family with no sample yet (no handoff so far) is declared all the same
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "info": ("_info",)}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names |= {name} | {name + suffix for suffix in suffixes.get(kind, ())}
    return names


def kefu_metrics(promql: str) -> set[str]:
    """The kefu_ metric names a PromQL expression reads."""
    return set(re.findall(r"\bkefu_[a-z0-9_]+\b", promql))
