"""``kefu serve --workers N``: N processes on one port over PostgreSQL and Redis, and the refusal
to run several workers over a store or bus that belongs to one process."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import urllib.request

import pytest
import trio

from gateway.config import Config

from .postgres import PG_URL, drop_schema, fresh_schema
from .support import SECRET, connect, token

KEFU = [sys.executable, "-m", "gateway"]
TEXT = {"kind": "text", "text": "hi"}

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize(
    "settings",
    [{}, {"store": PG_URL}, {"bus": "redis://127.0.0.1:6379"}, {"store": "memory", "bus": "redis://127.0.0.1:6379"}],
    ids=["sqlite+local", "postgresql+local", "sqlite+redis", "memory+redis"],
)
def test_several_workers_need_a_shared_store_and_bus(settings):
    [problem] = Config(workers=2, routing="off", **settings).problems()
    assert "--workers 2 needs a store and a bus the processes share" in problem and "postgresql://" in problem and "redis://" in problem


def test_routing_across_processes_is_accepted_with_a_positive_lease():
    for config in (Config(bus="redis://127.0.0.1:6379", store=PG_URL), Config(workers=2, bus="redis://127.0.0.1:6379", store=PG_URL)):
        assert config.problems() == []  # one leader routes for the cluster (gateway.routing.cluster)
    [problem] = Config(bus="redis://127.0.0.1:6379", store=PG_URL, routing_lease_s=0).problems()
    assert "--routing-lease-s" in problem
    assert Config(store=PG_URL).problems() == []  # one process on PostgreSQL routes as it always did


def test_serve_refuses_a_bad_configuration_with_exit_2_naming_every_problem(tmp_path):
    proc = subprocess.run(
        [*KEFU, "serve", "--store", "mysql://x", "--bus", "nats://y", "--workers", "2", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("kefu serve: --store 'mysql://x'") and lines[1].startswith("kefu serve: --bus 'nats://y'")
    assert any("--workers 2 needs" in line for line in lines)


def metrics(url: str) -> str:
    return urllib.request.urlopen(url, timeout=5).read().decode()


async def test_two_workers_share_the_port_and_stop_on_sigterm(tmp_path):
    schema = fresh_schema()
    env = {**os.environ, "KEFU_JWT_SECRET": SECRET, "KEFU_ROUTING": "off", "KEFU_RATE_PER_SECOND": "100000", "KEFU_RATE_BURST": "100000"}
    args = [
        *KEFU, "serve", "--workers", "2", "--port", "0", "--metrics-port", "0", "--data-dir", str(tmp_path),
        "--store", PG_URL, "--store-schema", schema, "--bus", "redis://127.0.0.1:6379", "--bus-channel", f"kefu:test:{secrets.token_hex(6)}",
    ]
    proc = await trio.lowlevel.open_process(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        out = ""
        with trio.fail_after(30):
            while out.count("Metrics:") < 2:
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, "the supervisor exited before its workers listened"
                out += chunk.decode()
        nodes = re.findall(r"listening \(node (\S+)\)", out)
        sockets = set(re.findall(r"WebSocket: (\S+)", out))
        metrics_urls = re.findall(r"Metrics:\s+(\S+)", out)
        assert len(set(nodes)) == 2 and all(n.endswith(("-w0", "-w1")) for n in nodes)
        assert len(sockets) == 1 and len(set(metrics_urls)) == 2  # one shared port, an HTTP port each
        [url] = sockets
        with trio.fail_after(30):
            async with connect(url, token("alice"), resume={}) as shopper:
                conv = (await shopper.ok("open"))["conv"]["id"]
                for i in range(16):  # the kernel spreads these over both workers
                    async with connect(url, token("bob", "agent"), resume={}) as agent:
                        if i == 0:
                            await agent.ok("join", conv=conv)
                        seq = (await shopper.ok("send", conv=conv, cmid=f"m{i}", body=TEXT))["seq"]
                        assert (await agent.next("msg", conv=conv))["seq"] == seq
        bodies = [await trio.to_thread.run_sync(metrics, u) for u in metrics_urls]
        info = [re.search(r'^kefu_node_info\{bus="RedisBus",node="([^"]+)",store="PostgresBackend"\} 1.0$', b, re.M) for b in bodies]
        assert all(info) and {m.group(1) for m in info} == set(nodes)  # each worker reports its node id
        opened = [float(re.search(r"^kefu_connections_opened_total (\S+)", b, re.M).group(1)) for b in bodies]
        assert all(n >= 1 for n in opened) and sum(opened) == 17
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        drop_schema(schema)
