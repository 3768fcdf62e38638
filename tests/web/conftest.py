"""The browser pages (the agent console, the shopper's chat) in a real browser: Debian's Chromium driven by Playwright, against a gateway
process (``kefu serve``), with shoppers on real WebSockets and the shop's backend on real HTTP.

These tests are synchronous: Playwright's sync API runs its own event loop, so the gateway runs in a
process of its own rather than in the test's Trio loop.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import msgpack
import pytest
from websockets.sync.client import connect

from ..support import SECRET

STATIC = Path(__file__).resolve().parents[2] / "gateway" / "web" / "static"

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps trying to reach Google's hosts, which this
# closed network refuses; --no-sandbox because CI runs as root; the fake media device stands in for a
# microphone.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",  # a microphone that plays a tone, for voice messages
]


def run_node(module: Path, script: str) -> object:
    """What ``script`` prints as JSON, run by Node with ``module`` (one of the pages' ES modules)
    imported as ``module``: the pages' own rules, tested without a browser."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (it also runs the benchmark's Node relay)")
    done = subprocess.run([node, "--input-type=module", "-e", f"import * as module from {json.dumps(module.as_uri())};\n{script}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess:
    """``kefu serve`` on fixed ports (a restarted one comes back where the browser looks for it)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.options: tuple[str, ...] = ()  # more for ``kefu serve`` (``--allowed-origins …``), set before start
        self.ws_port = free_port()
        self.http_port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def create_key(self, tenant: str) -> str:
        """An admin key of ``tenant``, made as an operator does: ``kefu apikey create`` on the data
        directory (beside a running gateway: SQLite's WAL lets both write)."""
        args = [sys.executable, "-m", "gateway", "apikey", "create", "--tenant", tenant, "--name", "web-test", "--scopes", "admin", "--data-dir", str(self.data_dir)]
        return subprocess.run(args, capture_output=True, text=True, check=True, timeout=30).stdout.strip()

    def start(self) -> None:
        env = {**os.environ, "KEFU_JWT_SECRET": SECRET}
        args = [
            sys.executable, "-m", "gateway", "serve", "--data-dir", str(self.data_dir),
            "--port", str(self.ws_port), "--metrics-port", str(self.http_port), "--media-inspection", "threads", *self.options,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        deadline = time.monotonic() + 30
        for line in self.proc.stdout:  # the gateway prints its addresses once it serves them
            if line.strip().startswith("Console:"):
                break
            assert time.monotonic() < deadline, "the gateway did not start in 30 s"
        else:
            raise AssertionError(f"the gateway exited ({self.proc.wait()}) before serving")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None



class Shop:
    """One tenant of a gateway process, as a test sees it: tests that share a process (its start
    costs seconds: the bot is fitted) each get a tenant of their own, so their agents, queues,
    quick replies and reports never meet."""

    def __init__(self, process: GatewayProcess) -> None:
        self.process = process
        self.tenant = "shop-" + secrets.token_hex(4)
        self.admin_key = process.create_key(self.tenant)

    @property
    def ws_url(self) -> str:
        return self.process.ws_url

    @property
    def http_url(self) -> str:
        return self.process.http_url

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.http_url, headers={"authorization": f"Bearer {self.admin_key}"}, timeout=10)

    def token(self, user: str, role: str, **claims: Any) -> str:
        with self.api() as api:
            answer = api.post("/v1/tokens", json={"user": user, "role": role, "channel": claims.pop("channel", "app"), **claims})
            assert answer.status_code == 201, answer.text
            return answer.json()["token"]


class Peer:
    """A shopper's app or an agent's desk other than the page under test: kefu.v1 over a real
    WebSocket, frames not asked for yet kept in ``buffer``."""

    def __init__(self, gateway: Shop, user: str, role: str = "shopper", **claims: Any) -> None:
        self.gateway = gateway
        self.token = gateway.token(user, role, **claims)
        self.stack = ExitStack()
        self.ws = self.stack.enter_context(connect(gateway.ws_url, subprotocols=["kefu.v1"]))
        self.buffer: list[dict[str, Any]] = []
        self.ids = 0
        self.request("auth", token=self.token, resume={})
        self.next("ok")  # resumed

    def close(self) -> None:
        self.stack.close()

    def request(self, t: str, **fields: Any) -> dict[str, Any]:
        self.ids += 1
        self.ws.send(msgpack.packb({"t": t, "id": self.ids, **fields}))
        if t == "auth":
            return self.next("hello")
        return self.next(id=self.ids)

    def tell(self, t: str, **fields: Any) -> None:
        """A request that has no answer when it succeeds (``typing``)."""
        self.ids += 1
        self.ws.send(msgpack.packb({"t": t, "id": self.ids, **fields}))

    def ok(self, t: str, **fields: Any) -> dict[str, Any]:
        answer = self.request(t, **fields)
        assert answer["t"] in ("ok", "ack"), answer
        return answer

    def next(self, t: str | None = None, timeout: float = 15, **match: Any) -> dict[str, Any]:
        """The first frame of type ``t`` whose fields equal ``match``; others stay buffered."""
        for i, frame in enumerate(self.buffer):
            if (t is None or frame.get("t") == t) and all(frame.get(k) == v for k, v in match.items()):
                return self.buffer.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            frame = msgpack.unpackb(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if (t is None or frame.get("t") == t) and all(frame.get(k) == v for k, v in match.items()):
                return frame
            self.buffer.append(frame)

    def event(self, conv: str, event: str) -> dict[str, Any]:
        """The next system event of this kind in the conversation."""
        while True:
            frame = self.next("msg", conv=conv, role="system")
            if frame["body"].get("event") == event:
                return frame

    def upload(self, conv: str, kind: str, name: str, data: bytes) -> dict[str, Any]:
        answer = httpx.post(
            f"{self.gateway.http_url}/v1/conversations/{conv}/attachments", params={"kind": kind, "name": name},
            content=data, headers={"authorization": f"Bearer {self.token}"}, timeout=30,
        )
        assert answer.status_code == 201, answer.text
        return answer.json()


@contextmanager
def shop_site(document: str, post: dict[str, Callable[[], tuple[int, str]]] | None = None) -> Iterator[str]:
    """The shop's own site on a loopback port of its own (another origin than the gateway's): it
    serves ``document`` to a GET of any path, and answers a POST to a path of ``post`` with what
    its function returns (status, JSON text), as the shop's backend would."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.answer(200, "text/html; charset=utf-8", document)

        def do_POST(self) -> None:
            found = (post or {}).get(self.path)
            if found is None:
                self.answer(404, "text/plain", "not found")
                return
            status, text = found()
            self.answer(status, "application/json", text)

        def answer(self, status: int, content_type: str, text: str) -> None:
            body = text.encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def shared_process(tmp_path_factory) -> Iterator[GatewayProcess]:
    running = GatewayProcess(tmp_path_factory.mktemp("data"))
    running.start()
    yield running
    running.stop()


@pytest.fixture
def gateway(shared_process) -> Shop:
    """A tenant of its own on the module's gateway process."""
    return Shop(shared_process)


@pytest.fixture
def own_gateway(tmp_path) -> Iterator[Shop]:
    """A gateway process of its own, for a test that stops and starts it."""
    running = GatewayProcess(tmp_path / "data")
    running.start()
    yield Shop(running)
    running.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is not installed: apt-get install -y chromium (.ci/run does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh tab (its own sessionStorage) in Chinese, with the page's script errors collected; it
    may use the microphone and knows where it is (People's Square, Shanghai)."""
    context = browser.new_context(
        locale="zh-CN", viewport={"width": 1400, "height": 900}, permissions=["geolocation", "microphone"],
        geolocation={"latitude": 31.2304, "longitude": 121.4737},
    )
    opened = context.new_page()
    opened.errors = []
    opened.on("pageerror", lambda error: opened.errors.append(str(error)))
    yield opened
    context.close()


def shown_seqs(page) -> list[int]:
    """The seqs of the messages the page shows, top to bottom (a transcript with no gap or repeat
    equals the stored one's)."""
    return [int(s) for s in page.locator("#message-list li[data-seq]").evaluate_all("(items) => items.map((li) => li.dataset.seq)")]
