"""The peer relays of bench/baseline/ (websockets, picows, Node ws) speak Kefu's kefu.v1 subset.

Two kinds of test:

* the protocol, frame by frame, over a real socket with an independent client (the ``websockets``
  sync client), against each relay and against Kefu itself (so the test says what Kefu does, and
  the relays are held to it): tokens refused (wrong key, expired, tampered), the subprotocol,
  ``resume``/``open``/``join`` with the ``joined`` notice, ``send`` -> ``ack`` with gap-free ``seq``,
  a repeated ``cmid`` acked as ``dup`` and not delivered again, ``resume`` from a cursor;
* the benchmark's workloads at tiny sizes against picows and Node ws (one ``python -m bench`` run):
  correctness counters and the JSON's shape, never timings.

The Node relay's dependencies are installed with npm on first use (``bench.servers``); without node
or npm its cases are skipped and say why.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

for name in ("uvloop", "picows", "websockets", "numpy"):
    pytest.importorskip(name, reason="the bench extra is not installed: pip install -e '.[bench]'")

from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from bench.report import ratio_rows  # noqa: E402
from bench.servers import SECRET, TENANT, Server, node_available  # noqa: E402
from gateway.auth import mint_token  # noqa: E402

from ..support import once_per_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RECV_S = 10


def needs(target: str) -> None:
    if target == "node" and not node_available():
        pytest.skip("node or npm is not installed: the Node ws relay cannot run")


@pytest.fixture(params=["baseline", "picows", "node", "memory"])
def server(request):
    needs(request.param)
    with Server(request.param) as running:
        yield running


def token(user: str, role: str, *, secret: str = SECRET, ttl_s: int = 600) -> str:
    return mint_token(secret, tenant=TENANT, user=user, role=role, channel="app", ttl_s=ttl_s)


def recv(ws) -> dict:
    return msgpack.unpackb(ws.recv(timeout=RECV_S))


def request(ws, t: str, rid: int, **fields) -> dict:
    """Send a request and read frames until its reply (``ok``, ``ack`` or ``error`` with its id)."""
    ws.send(msgpack.packb({"t": t, "id": rid, **fields}))
    while True:
        frame = recv(ws)
        if frame.get("id") == rid and frame["t"] in ("ok", "ack", "error"):
            return frame


def refused(url: str, bad: str) -> tuple[dict, int]:
    """The first frame and the close code of a connection made with a bad token."""
    with connect(f"{url}?token={bad}", subprotocols=["kefu.v1"], open_timeout=RECV_S) as ws:
        first = recv(ws)
        with pytest.raises(ConnectionClosed) as closed:
            recv(ws)
    return first, closed.value.rcvd.code


@pytest.mark.timeout(60)
def test_a_bad_token_is_refused_with_an_error_and_4001(server):
    good = token("s-1", "shopper")
    header, payload, signature = good.split(".")
    tampered = f"{header}.{payload}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"
    for bad, expected in ((token("s-1", "shopper", secret="another-secret-0123456789abcdef-0123456789"), "token_invalid"),
                          (token("s-1", "shopper", ttl_s=-60), "token_expired"), (tampered, "token_invalid"), ("not-a-jwt", "token_invalid")):
        first, code = refused(server.url, bad)
        assert (first["t"], first["code"], code) == ("error", expected, 4001), (bad, first, code)


@pytest.mark.timeout(60)
def test_a_conversation_frame_by_frame(server):
    url = server.url
    with connect(f"{url}?token={token('s-1', 'shopper')}", subprotocols=["kefu.v1"], open_timeout=RECV_S) as shopper, \
            connect(f"{url}?token={token('a-1', 'agent')}", subprotocols=["kefu.v1"], open_timeout=RECV_S) as agent:
        assert shopper.subprotocol == "kefu.v1"
        hello = recv(shopper)
        assert hello["t"] == "hello" and hello["protocol"] == "kefu.v1"
        assert hello["user"]["id"] == "s-1" and hello["user"]["role"] == "shopper"
        assert recv(agent)["t"] == "hello"
        assert request(shopper, "resume", 1, convs={})["t"] == "ok"
        assert request(agent, "resume", 1, convs={})["t"] == "ok"
        opened = request(shopper, "open", 2, subject="where is my parcel")
        conv = opened["conv"]["id"]
        assert opened["conv"]["last_seq"] == 0
        joined = request(agent, "join", 2, conv=conv)
        assert {p["user"] for p in joined["participants"]} == {"s-1", "a-1"}
        notice = recv(shopper)
        assert (notice["t"], notice["conv"], notice["user"]) == ("joined", conv, "a-1")

        ack = request(shopper, "send", 3, conv=conv, cmid="c-1", body={"kind": "text", "text": "你好", "t0": 2**60})
        assert (ack["t"], ack["seq"], ack["dup"]) == ("ack", 1, False)
        msg = recv(agent)
        assert (msg["t"], msg["seq"], msg["cmid"], msg["from"]) == ("msg", 1, "c-1", "s-1")
        assert msg["body"]["text"] == "你好" and msg["body"]["t0"] == 2**60  # a 64-bit integer comes back unchanged

        again = request(shopper, "send", 4, conv=conv, cmid="c-1", body={"kind": "text", "text": "你好"})
        assert (again["t"], again["seq"], again["dup"]) == ("ack", 1, True)
        answer = request(agent, "send", 3, conv=conv, cmid="a-1", body={"kind": "text", "text": "稍等"})
        assert (answer["t"], answer["seq"]) == ("ack", 2)  # the agent's next frame: the repeat was not delivered
        delivered = recv(shopper)
        assert (delivered["t"], delivered["seq"], delivered["from"]) == ("msg", 2, "a-1")

        assert request(agent, "nonsense", 4)["code"] == "unknown_type"
        assert request(agent, "send", 5, conv="no-such-conversation", cmid="x", body={"kind": "text", "text": "?"})["code"] == "not_found"

        # a second connection of the shopper resumes from seq 1: it gets seq 2, then the reply
        with connect(f"{url}?token={token('s-1', 'shopper')}", subprotocols=["kefu.v1"], open_timeout=RECV_S) as again_shopper:
            assert recv(again_shopper)["t"] == "hello"
            again_shopper.send(msgpack.packb({"t": "resume", "id": 1, "convs": {conv: 1}}))
            caught_up = recv(again_shopper)
            assert (caught_up["t"], caught_up["seq"], caught_up["cmid"]) == ("msg", 2, "a-1")
            reply = recv(again_shopper)
            assert reply["t"] == "ok" and reply["resumed"][conv]["sent"] == 1 and reply["resumed"][conv]["complete"] is True


TINY = [
    "--convs", "2", "--window", "2", "--duration", "0.5", "--warmup", "0.2", "--latency-duration", "0.5",
    "--members", "12", "--fanout-users", "3", "--fanout-window", "2",
    "--storm-conns", "24", "--storm-rate", "300", "--storm-before", "0.4", "--storm-after", "0.3",
    "--conns-per-proc", "12", "--concurrency", "16",
    "--chat-shoppers", "40", "--chat-per-agent", "20", "--chat-rate", "100", "--chat-duration", "0.5", "--chat-think-s", "0.05",
]
WORKLOADS = ("latency", "fanout", "storm", "chat")


def run_peers(out) -> dict:
    targets = ["picows", "node"] if node_available() else ["picows"]
    cmd = [sys.executable, "-m", "bench", ",".join(WORKLOADS), "--targets", ",".join(targets), "--no-pin", "--quiet", "--no-plots",
           "--out", str(out), *TINY]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "peer: picows" in proc.stdout  # the table names the peers
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def peers_run(tmp_path_factory) -> dict:
    return once_per_run(tmp_path_factory, "peers-run", run_peers)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("target", ["picows", "node"])
@pytest.mark.parametrize("workload", WORKLOADS)
def test_peer_relay_passes_the_workloads_checks(peers_run, workload, target):
    needs(target)
    assert peers_run["workloads"] == list(WORKLOADS)
    r = peers_run["results"][workload][target]
    checks = r["checks"]
    assert (checks["lost"], checks["duplicated"], checks["out_of_order"], checks["unexpected"]) == (0, 0, 0, 0), checks
    assert checks["errors"] == {} and checks["closed"] == 0 and checks["unanswered"] == 0, checks
    assert r["failed"] is False
    if workload in ("latency", "chat"):
        assert r["delivered_per_s"] > 0 and r["cpu_us_per_delivery"] is not None
        for key in ("ack_latency", "e2e_latency"):
            assert r[key]["count"] > 0 and all(k in r[key] for k in ("p50_ms", "p99_ms", "p999_ms"))
    if workload == "chat":
        assert r["params"]["conns"] == 42 and r["rss_end_bytes"] > 0
    if workload == "storm":
        assert r["live_again"] == 24


def test_ratios_are_taken_against_every_peer_and_targets_against_the_one_named():
    results = {"chat": {
        "baseline": {"cpu_us_per_delivery": 200.0}, "picows": {"cpu_us_per_delivery": 100.0}, "node": {"cpu_us_per_delivery": 150.0},
        "memory": {"cpu_us_per_delivery": 60.0}, "sqlite": {"cpu_us_per_delivery": 120.0},
    }}
    rows = ratio_rows(results, ["baseline", "picows", "node", "memory", "sqlite"])
    cpu = next(row for row in rows if row["figure"] == "chat: server CPU per message")
    assert cpu["ratios"] == {"picows": 0.5, "node": 0.75, "memory": 0.3, "sqlite": 0.6}
    assert cpu["peer_ratios"]["picows"] == {"memory": 0.6, "sqlite": 1.2}
    assert cpu["peer_ratios"]["node"] == {"memory": 0.4, "sqlite": 0.8}
    assert cpu["targets"]["memory"] == {"kind": "ratio", "bound": 0.7, "at": None, "value": 0.6, "met": True, "against": "picows"}
    assert cpu["targets"]["sqlite"]["met"] is False and cpu["targets"]["sqlite"]["value"] == 1.2
