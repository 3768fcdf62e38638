"""The pages' files as the HTTP side serves them: what a browser is allowed to do with them, and
nothing beyond the files that make them."""

from __future__ import annotations

from pathlib import Path

import gateway.web
from gateway.web import PAGES, content_security_policy

from ..http.conftest import client

STATIC = Path(gateway.web.__file__).parent / "static"
CONSOLE, CHAT = PAGES


async def test_the_page_and_its_scripts_are_served_under_a_policy_that_runs_only_the_consoles_own_scripts(start_gateway):
    gw = await start_gateway()
    async with client(gw) as http:
        page = await http.get("/console/")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.content == (STATIC / "console.html").read_bytes()
        assert '<script type="module" src="console.js"></script>' in page.text
        for name in ("console.js", "client.js", "i18n.js", "settings.js", "api.js", "console.css", "vendor/msgpack.min.js"):
            asset = await http.get(f"/console/{name}")
            assert asset.status_code == 200 and asset.content == (STATIC / name).read_bytes(), name
            assert asset.headers["content-security-policy"] == content_security_policy(CONSOLE)
            assert asset.headers["x-content-type-options"] == "nosniff"
        policy = dict(part.strip().split(" ", 1) for part in page.headers["content-security-policy"].split(";"))
        assert policy["script-src"] == "'self'" and "unsafe" not in page.headers["content-security-policy"]
        assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'self'"
        assert page.headers["referrer-policy"] == "no-referrer"


async def test_only_the_consoles_files_are_served(start_gateway):
    gw = await start_gateway()
    async with client(gw) as http:
        for path in ("/console/nope.js", "/console/vendor/README", "/console/vendor/msgpack.LICENSE", "/console/console.html", "/console/chat.html",
                     "/chat/chat.html", "/chat/nope.js",
                     "/console/../pyproject.toml", "/console/%2e%2e/%2e%2e/pyproject.toml", "/console/vendor/../../__init__.py"):
            answer = await http.get(path)
            assert answer.status_code == 404, (path, answer.status_code)
            assert answer.headers["content-type"] == "application/problem+json" and answer.json()["code"] == "not_found", path
        # refused as every HTTP refusal is: counted, each of the ten
        assert gw.registry.get_sample_value("kefu_http_refusals_total", {"code": "not_found", "status": "404"}) == 10
        for page in PAGES:
            bare = await http.get(page.prefix)
            assert bare.status_code == 308 and bare.headers["location"] == f"{page.prefix}/"


async def test_the_console_is_told_where_the_websocket_listens(start_gateway):
    gw = await start_gateway()
    async with client(gw) as http:
        for page in PAGES:
            said = (await http.get(f"{page.prefix}/config.json")).json()
            assert said == {"ws_url": None, "ws_port": gw.port, "ws_path": "/ws", "parents": None if page.embeddable else ["'self'"]}
    proxied = await start_gateway(web_ws_url="wss://kefu.example.com/ws")
    async with client(proxied) as http:
        assert (await http.get("/chat/config.json")).json()["ws_url"] == "wss://kefu.example.com/ws"


async def test_an_unchanged_file_is_not_sent_again(start_gateway):
    gw = await start_gateway()
    async with client(gw) as http:
        first = await http.get("/console/console.js")
        again = await http.get("/console/console.js", headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == first.headers["etag"]
        changed = await http.get("/console/console.js", headers={"if-none-match": '"stale"'})
        assert changed.status_code == 200 and changed.content == first.content


async def test_the_chat_may_be_framed_by_the_shops_sites_and_the_console_only_by_its_own(start_gateway):
    def ancestors(response) -> str:
        return dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))["frame-ancestors"]

    gw = await start_gateway()
    async with client(gw) as http:
        chat = await http.get("/chat/")
        assert chat.status_code == 200 and chat.content == (STATIC / "chat.html").read_bytes()
        assert ancestors(chat) == "*" and ancestors(await http.get("/console/")) == "'self'"  # no list of sites: any may embed the chat
        assert (await http.get("/chat/client.js")).content == (STATIC / "client.js").read_bytes()  # the files are shared
    shop = await start_gateway(allowed_origins="https://shop.example,https://m.shop.example")
    async with client(shop) as http:
        assert ancestors(await http.get("/chat/")) == "https://m.shop.example https://shop.example"
        assert ancestors(await http.get("/console/")) == "'self'"
        # the pages take new tokens from the windows that may frame them, and from no other
        assert (await http.get("/chat/config.json")).json()["parents"] == ["https://m.shop.example", "https://shop.example"]
        assert (await http.get("/console/config.json")).json()["parents"] == ["'self'"]


def test_an_origin_list_cannot_add_a_directive_to_the_policy():
    policy = content_security_policy(CHAT, "https://shop.example;script-src * 'unsafe-inline'")
    assert policy.count("script-src") == 1 and "unsafe-inline" not in policy and "example;" not in policy


async def test_the_widgets_script_may_be_loaded_by_a_shops_page_and_only_it_says_so(start_gateway):
    gw = await start_gateway()
    async with client(gw) as http:
        widget = await http.get("/chat/widget.js")
        assert widget.status_code == 200 and widget.content == (STATIC / "widget.js").read_bytes()
        assert widget.headers["content-type"] == "text/javascript; charset=utf-8" and widget.headers["x-content-type-options"] == "nosniff"
        # a shop's page that isolates itself (COEP) may load it, and a <script crossorigin> (SRI) too
        assert widget.headers["cross-origin-resource-policy"] == "cross-origin" and widget.headers["access-control-allow-origin"] == "*"
        again = await http.get("/chat/widget.js", headers={"if-none-match": widget.headers["etag"]})
        assert again.status_code == 304 and again.headers["cross-origin-resource-policy"] == "cross-origin"

        module = await http.get("/chat/chat.js")
        varying = {"etag", "content-length", "date"}
        assert set(widget.headers) - set(module.headers) == {"cross-origin-resource-policy", "access-control-allow-origin"}
        assert {k: v for k, v in module.headers.items() if k not in varying} == {k: v for k, v in widget.headers.items() if k in module.headers and k not in varying}
        for path in ("/chat/", "/chat/chat.js", "/chat/embedder.js", "/chat/client.js", "/chat/chat.css", "/chat/config.json", "/console/", "/console/console.js",
                     "/console/widget.js"):  # (the console's address serves the shared files, but says nothing more)
            answer = await http.get(path)
            assert answer.status_code == 200 and answer.headers["x-content-type-options"] == "nosniff", path
            assert "cross-origin-resource-policy" not in answer.headers and "access-control-allow-origin" not in answer.headers, path
