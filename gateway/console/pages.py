"""Serving the console's files from memory, with their security headers and ETags."""


from __future__ import annotations

import hashlib
import json
from importlib import resources
from typing import Iterable

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

PREFIX = "/console"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}

# ws: and wss: for the WebSocket, which listens on another port than the page (any host: the page
# cannot know which name a proxy gives it); img and media from the page's origin, where signed
# attachment URLs point, and blob: for a picked file's preview.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'"
)


class Asset:
    """One file of the console, held in memory with its validator."""

    def __init__(self, name: str, body: bytes) -> None:
        self.name = name
        self.body = body
        self.content_type = CONTENT_TYPES[name[name.rindex("."):]]
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


def load_assets() -> dict[str, Asset]:
    """Every servable file under ``static/`` (vendored libraries included), by its path there."""
    root = resources.files("gateway.console") / "static"
    found: dict[str, Asset] = {}

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name[entry.name.rfind("."):] in CONTENT_TYPES:
                found[prefix + entry.name] = Asset(prefix + entry.name, entry.read_bytes())

    walk(root, "")
    return found


def routes(ws_port: int, ws_url: str = "") -> Iterable[Route]:
    """The console's routes. ``ws_url`` is where browsers reach the WebSocket (``--console-ws-url``);
    empty: the page's host at ``ws_port``."""
    assets = load_assets()
    settings = json.dumps({"ws_url": ws_url or None, "ws_port": ws_port, "ws_path": "/ws"}).encode()

    def headers(asset: Asset | None = None) -> dict[str, str]:
        found = {
            "content-security-policy": CONTENT_SECURITY_POLICY,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "cache-control": "no-cache",
        }
        if asset is not None:
            found["etag"] = asset.etag
        return found

    async def index(request: Request) -> Response:
        return serve(request, assets["index.html"])

    async def asset(request: Request) -> Response:
        found = assets.get(request.path_params["path"])
        if found is None or found.name == "index.html":
            return Response(b"not found\n", status_code=404, media_type="text/plain", headers=headers())
        return serve(request, found)

    def serve(request: Request, found: Asset) -> Response:
        if request.headers.get("if-none-match") == found.etag:
            return Response(status_code=304, headers=headers(found))
        return Response(found.body, media_type=found.content_type, headers=headers(found))

    async def config(request: Request) -> Response:
        return JSONResponse(json.loads(settings), headers=headers())

    async def bare(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=308)

    return [
        Route(PREFIX, bare, methods=["GET"]),
        Route(f"{PREFIX}/", index, methods=["GET", "HEAD"]),
        Route(f"{PREFIX}/config.json", config, methods=["GET"]),
        Route(PREFIX + "/{path:path}", asset, methods=["GET", "HEAD"]),
    ]
