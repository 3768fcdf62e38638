"""The gateway as a process: the CLI, SIGTERM, and kill -9 durability on the SQLite store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
from contextlib import asynccontextmanager

import pytest
import trio

from gateway.auth import Authenticator
from gateway.build import IMPLEMENTATIONS

from .support import SECRET, connect, token

KEFU = [sys.executable, "-m", "gateway"]


@asynccontextmanager
async def gateway_process(data_dir, *extra: str):
    """``kefu serve`` in a subprocess; yields (process, websocket url, metrics url) once it prints them."""
    # routing off: these tests count the client's own messages (the bot would answer them)
    env = {**os.environ, "KEFU_JWT_SECRET": SECRET, "KEFU_RATE_PER_SECOND": "100000", "KEFU_RATE_BURST": "100000", "KEFU_ROUTING": "off"}
    args = [*KEFU, "serve", "--port", "0", "--metrics-port", "0", "--data-dir", str(data_dir), *extra]
    proc = await trio.lowlevel.open_process(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        urls: dict[str, str] = {}
        buffered = b""
        with trio.fail_after(20):
            while "Metrics" not in urls:
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, "the gateway exited before printing its URLs"
                buffered += chunk
                for line in buffered.decode().splitlines():
                    name, _, rest = line.strip().partition(":")
                    if name in ("WebSocket", "Metrics"):
                        urls[name] = rest.split()[0]
        yield proc, urls["WebSocket"], urls["Metrics"]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def test_the_cli_and_the_config_load_none_of_the_gateway_until_a_command_needs_it():
    """``kefu --version`` and ``kefu token`` answer at once: building the parser (every option of
    serve) imports neither Trio, the store, the HTTP app nor the media decoders."""
    probe = (
        "import sys, gateway.cli; gateway.cli.build_parser(); "
        "print(sorted(m for m in ('trio', 'PIL', 'av', 'sqlite3', 'starlette', 'gateway.app', 'gateway.store', 'gateway.media.service') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_media_package_resolves_every_name_it_exports():
    import gateway.media as media

    assert media.Media.__module__ == "gateway.media.service"
    for name in media.__all__:
        getattr(media, name)  # AttributeError if a name is exported but not mapped to its module
    with pytest.raises(AttributeError):
        media.no_such_name


async def test_version_and_token():
    out = subprocess.run([*KEFU, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.startswith("kefu 0.") and all(f"{name}: {impl}" in out for name, impl in IMPLEMENTATIONS.items())
    minted = subprocess.run(
        [*KEFU, "token", "--jwt-secret", SECRET, "--tenant", "t9", "--user", "王丽", "--role", "agent", "--channel", "web"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    identity = Authenticator(SECRET).verify(minted)
    assert (identity.tenant, identity.user, identity.role, identity.channel) == ("t9", "王丽", "agent", "web")
    minted = subprocess.run(
        [*KEFU, "token", "--jwt-secret", SECRET, "--tenant", "t9", "--user", "v-7", "--role", "shopper", "--customer", "c42"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Authenticator(SECRET).verify(minted).customer == "c42"
    address = subprocess.run(
        [*KEFU, "token", "--jwt-secret", SECRET, "--tenant", "t9", "--user", "wl", "--role", "agent", "--page", "http://127.0.0.1:9999/"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    base, _, minted = address.partition("#token=")
    assert base == "http://127.0.0.1:9999/console/" and Authenticator(SECRET).verify(minted).user == "wl"
    address = subprocess.run(
        [*KEFU, "token", "--jwt-secret", SECRET, "--tenant", "t9", "--user", "v-1", "--role", "shopper", "--page"], capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert address.startswith("http://127.0.0.1:8701/chat/#token=")  # a shopper's page is the chat


async def test_serve_prints_urls_serves_metrics_and_exits_0_on_sigterm(tmp_path):
    async with gateway_process(tmp_path) as (proc, url, metrics_url):
        async with connect(url, token("alice"), resume={}) as client:
            conv = (await client.ok("open"))["conv"]["id"]
            await client.ok("send", conv=conv, cmid="m", body={"kind": "text", "text": "hi"})
        body = await trio.to_thread.run_sync(lambda: urllib.request.urlopen(metrics_url, timeout=5).read().decode())
        assert "kefu_messages_accepted_total 1.0" in body
        assert 'kefu_build_info{' in body and "kefu_ack_latency_seconds_bucket" in body
        assert "kefu_connections_parked " in body
        health = metrics_url.replace("/metrics", "/healthz")
        answer = await trio.to_thread.run_sync(lambda: urllib.request.urlopen(health, timeout=5).read().decode())
        assert answer.split() == ["ok", *(f"{name}={impl}" for name, impl in IMPLEMENTATIONS.items())]
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await proc.wait() == 0
        log = (await proc.stderr.receive_some(1 << 20)).decode()
        assert SECRET not in log and "eyJ" not in log  # secrets and tokens are never logged


async def test_kill_9_loses_no_acknowledged_message(tmp_path):
    """Acked messages survive SIGKILL: restart on the same data directory finds each once, in order."""
    acked: list[tuple[int, str]] = []
    async with gateway_process(tmp_path) as (proc, url, _):
        async with connect(url, token("alice"), resume={}) as client:
            conv = (await client.ok("open"))["conv"]["id"]
            total = 2000
            for i in range(total):
                await client.send("send", conv=conv, cmid=f"k{i}", body={"kind": "text", "text": f"消息 {i}"})
            while len(acked) < total // 2:  # kill in mid-stream, with sends still in flight
                ack = await client.next("ack")
                acked.append((ack["seq"], ack["cmid"]))
            proc.kill()
            with trio.fail_after(10):
                await proc.wait()
            assert proc.returncode == -signal.SIGKILL
    assert [seq for seq, _ in acked] == list(range(1, len(acked) + 1))
    async with gateway_process(tmp_path) as (proc, url, _):
        async with connect(url, token("alice"), resume={}) as client:
            stored = []
            while True:
                page = await client.ok("history", conv=conv, after=len(stored), limit=200)
                stored += [(m["seq"], m["cmid"]) for m in page["messages"]]
                if not page["more"]:
                    break
            assert stored[: len(acked)] == acked  # every acked message, once, in order
            assert [seq for seq, _ in stored] == list(range(1, len(stored) + 1))  # gap-free
            assert len({cmid for _, cmid in stored}) == len(stored)  # nothing twice
            # resending everything (as a client does after a crash) duplicates nothing
            for i in range(total):
                await client.send("send", conv=conv, cmid=f"k{i}", body={"kind": "text", "text": f"消息 {i}"})
            acks = [await client.next("ack") for _ in range(total)]
            assert sorted(a["seq"] for a in acks) == list(range(1, total + 1))
            assert [a["dup"] for a in acks] == [i < len(stored) for i in range(total)]
