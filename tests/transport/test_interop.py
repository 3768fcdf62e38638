"""Interoperability: independent WebSocket clients against a real gateway and its frame decoder.

Two clients that share no code with Kefu speak kefu.v1 to a gateway started in the test:

* the Python ``websockets`` package (sync client, in a worker thread so the Trio loop keeps
  serving);
* Node's ``ws`` package, through tests/interop/node/client.mjs (run with ``node``). Its
  dependencies are installed with npm on first use; without npm the test is skipped and says why,
  and a failing install fails the test.

Each sends kefu.v1 requests as binary msgpack frames: a plain one, one fragmented into several
frames, a ~60 KB one, a text message (refused by the protocol, not the decoder), and finally one
over the size limit, which must close the connection with 1009. Both clients mask their frames and
offer permessage-deflate, which the gateway must decline.

The decoder under test is the one ``gateway.protocol.frames`` selected: the native twin whenever
it is built (the test checks that), the pure-Python one under ``KEFU_PUREPYTHON=1``; CI runs the
suite both ways.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from gateway import _native
from gateway.protocol import frames

from ..support import token

NODE_DIR = Path(__file__).resolve().parents[1] / "interop" / "node"
MAX_FRAME = 65_536
LARGE_PAD = 60_000


def expected_implementation() -> str:
    if _native.pure_python_forced():
        return "python"
    built = _native.load("frames", honour_env=False) is not None
    if os.environ.get("KEFU_EXPECT_NATIVE") == "1":
        assert built, "KEFU_EXPECT_NATIVE=1 but gateway._frames_c is not built"
    return "native" if built else "python"


def test_gateway_uses_the_expected_decoder() -> None:
    """The decoder these clients talk to is the native one unless it is not built or disabled."""
    assert frames.IMPLEMENTATION == expected_implementation()


def check_pongs(replies: list[dict[str, Any]]) -> None:
    """The replies to the pings with ids 1-3 (plain, fragmented, large), in order."""
    assert [r["t"] for r in replies] == ["pong", "pong", "pong"], replies
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert all(type(r["server_time"]) is int for r in replies)


# ------------------------------------------------------------------------------ websockets


def websockets_session(url: str) -> dict[str, Any]:
    """Blocking: run the websockets client's session and return what it saw."""
    from websockets.exceptions import ConnectionClosedError
    from websockets.sync.client import connect

    seen: dict[str, Any] = {"replies": []}
    with connect(
        url, subprotocols=["kefu.v1"], open_timeout=10, close_timeout=5, max_size=None
    ) as ws:
        seen["subprotocol"] = ws.subprotocol
        seen["extensions"] = ws.protocol.extensions
        seen["hello"] = msgpack.unpackb(ws.recv(timeout=10))

        def request(message: Any) -> None:
            ws.send(message)
            seen["replies"].append(msgpack.unpackb(ws.recv(timeout=10)))

        request(msgpack.packb({"t": "ping", "id": 1}))
        # An iterable is sent as a fragmented message: one frame per item.
        packed = msgpack.packb({"t": "ping", "id": 2, "pad": "f" * 300})
        request([packed[:5], packed[5:100], packed[100:200], packed[200:]])
        request(msgpack.packb({"t": "ping", "id": 3, "pad": "y" * LARGE_PAD}))
        request("not msgpack")  # a text message
        ws.send(b"x" * (MAX_FRAME + 1))
        try:
            ws.recv(timeout=10)
        except ConnectionClosedError as exc:
            assert exc.rcvd is not None
            seen["close"] = (exc.rcvd.code, exc.rcvd.reason)
    return seen


async def test_websockets_client(start_gateway) -> None:
    gw = await start_gateway(max_frame_bytes=MAX_FRAME)
    url = f"{gw.url}?token={token('ws-py')}"
    with trio.fail_after(30):
        seen = await trio.to_thread.run_sync(websockets_session, url)
    assert frames.IMPLEMENTATION == expected_implementation()
    assert seen["subprotocol"] == "kefu.v1"
    assert seen["extensions"] == []  # permessage-deflate offered, declined
    assert seen["hello"]["t"] == "hello"
    assert seen["hello"]["limits"]["max_frame_bytes"] == MAX_FRAME
    *pongs, refused = seen["replies"]
    check_pongs(pongs)
    assert refused["t"] == "error" and refused["code"] == "bad_frame", refused
    assert seen["close"] == (1009, "message too big")


# ------------------------------------------------------------------------------ node ws


def npm_install() -> None:
    """Install the Node client's dependencies once (node_modules is not committed)."""
    if (NODE_DIR / "node_modules" / "ws").is_dir() and (
        NODE_DIR / "node_modules" / "@msgpack" / "msgpack"
    ).is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: cannot install Node's ws for the interop test")
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund"],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=300,
    )
    # npm is here: a failed install is a failure, never a silent skip.
    assert done.returncode == 0, f"npm install failed in {NODE_DIR}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture
def node_client() -> list[str]:
    """The command that runs the Node client, its dependencies installed."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot run Node's ws for the interop test")
    npm_install()
    return [node, str(NODE_DIR / "client.mjs")]


async def test_node_ws_client(start_gateway, node_client: list[str]) -> None:
    gw = await start_gateway(max_frame_bytes=MAX_FRAME)
    with trio.fail_after(60):
        done = await trio.run_process(
            [*node_client, gw.url, token("ws-node")],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    assert frames.IMPLEMENTATION == expected_implementation()
    assert done.returncode == 0, (done.stdout, done.stderr)
    seen = json.loads(done.stdout)
    assert seen["errors"] == []
    assert seen["hello"]["t"] == "hello"
    *pongs, refused = seen["messages"]
    check_pongs(pongs)
    assert refused["t"] == "error" and refused["code"] == "bad_frame", refused
    # The control ping sent between two fragments was answered.
    assert seen["pongs"] == ["between"]
    assert seen["close"]["code"] == 1009
    assert seen["close"]["reason"] == "message too big"
    assert seen["close"]["protocol"] == "kefu.v1"
    assert seen["close"]["extensions"] == ""  # permessage-deflate offered, declined
