"""The console's files as the HTTP side serves them: what a browser is allowed to do with them, and
nothing beyond the files that make it."""

from __future__ import annotations

from pathlib import Path

import gateway.console
from gateway.console import CONTENT_SECURITY_POLICY

from ..http.conftest import client

STATIC = Path(gateway.console.__file__).parent / "static"


async def test_the_page_and_its_scripts_are_served_under_a_policy_that_runs_only_the_consoles_own_scripts(start_gateway):
    gw = await start_gateway()
    async with client(gw) as http:
        page = await http.get("/console/")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert '<script type="module" src="console.js"></script>' in page.text
        for name in ("console.js", "client.js", "i18n.js", "console.css", "vendor/msgpack.min.js"):
            asset = await http.get(f"/console/{name}")
            assert asset.status_code == 200 and asset.content == (STATIC / name).read_bytes(), name
            assert asset.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert asset.headers["x-content-type-options"] == "nosniff"
        policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
        assert policy["script-src"] == "'self'" and "unsafe" not in page.headers["content-security-policy"]
        assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'self'"
        assert page.headers["referrer-policy"] == "no-referrer"


async def test_only_the_consoles_files_are_served(start_gateway):
    gw = await start_gateway()
    async with client(gw) as http:
        for path in ("/console/nope.js", "/console/vendor/README", "/console/vendor/msgpack.LICENSE", "/console/index.html",
                     "/console/../pyproject.toml", "/console/%2e%2e/%2e%2e/pyproject.toml", "/console/vendor/../../__init__.py"):
            answer = await http.get(path)
            assert answer.status_code == 404, (path, answer.status_code)
        bare = await http.get("/console")
        assert bare.status_code == 308 and bare.headers["location"] == "/console/"


async def test_the_console_is_told_where_the_websocket_listens(start_gateway):
    gw = await start_gateway()
    async with client(gw) as http:
        assert (await http.get("/console/config.json")).json() == {"ws_url": None, "ws_port": gw.port, "ws_path": "/ws"}
    proxied = await start_gateway(console_ws_url="wss://kefu.example.com/ws")
    async with client(proxied) as http:
        assert (await http.get("/console/config.json")).json()["ws_url"] == "wss://kefu.example.com/ws"


async def test_an_unchanged_file_is_not_sent_again(start_gateway):
    gw = await start_gateway()
    async with client(gw) as http:
        first = await http.get("/console/console.js")
        again = await http.get("/console/console.js", headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == first.headers["etag"]
        changed = await http.get("/console/console.js", headers={"if-none-match": '"stale"'})
        assert changed.status_code == 200 and changed.content == first.content
