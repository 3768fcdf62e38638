"""Serving the pages' files from memory, with their security headers and ETags."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Iterable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


@dataclass(frozen=True)
class Page:
    prefix: str  # where it is served: /console/
    html: str  # its document in static/
    embeddable: bool  # another site may frame it (the chat, in a shop's pages)
    cross_origin: frozenset[str] = frozenset()  # its files other sites load themselves (the widget's script)


SELF = "'self'"
SOURCE = re.compile(r"\*|'self'|https?://[A-Za-z0-9.*:\[\]-]+")  # what an origin list may give (no ; or quotes: no other directive)

PAGES = (
    Page("/console", "console.html", embeddable=False),
    Page("/chat", "chat.html", embeddable=True, cross_origin=frozenset({"widget.js"})),
)

# A shop's page runs the widget's script with <script src> from its own origin: a page that isolates
# itself (Cross-Origin-Embedder-Policy) loads a file only if the file says other sites may
# (Cross-Origin-Resource-Policy), and a <script crossorigin> (for Subresource Integrity, or to see
# its errors) only with CORS. The file is public, the same for every shop, and sent without cookies.
CROSS_ORIGIN = {"cross-origin-resource-policy": "cross-origin", "access-control-allow-origin": "*"}


def content_security_policy(page: Page, frame_ancestors: str = "*") -> str:
    """Scripts and styles from the gateway only (no inline script, no eval); images and media from
    the gateway, where signed attachment URLs point, and blob: for a picked file's preview; ws: and
    wss: for the WebSocket, which listens on another port than the page (any host: the page cannot
    know which name a proxy gives it). The console is framed only by its own origin; the chat by
    ``frame_ancestors`` (the shop's sites)."""
    sources = " ".join(source for source in frame_ancestors.split() if SOURCE.fullmatch(source)) or "'none'"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob:; connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; "
        f"frame-ancestors {sources if page.embeddable else SELF}"
    )


class Asset:
    """One file of the pages, held in memory with its validator."""

    def __init__(self, name: str, body: bytes) -> None:
        self.name = name
        self.body = body
        self.content_type = CONTENT_TYPES[name[name.rindex("."):]]
        self.etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'


def load_assets() -> dict[str, Asset]:
    """Every servable file under ``static/`` (vendored libraries included), by its path there."""
    root = resources.files("gateway.web") / "static"
    found: dict[str, Asset] = {}

    def walk(folder, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name[entry.name.rfind("."):] in CONTENT_TYPES:
                found[prefix + entry.name] = Asset(prefix + entry.name, entry.read_bytes())

    walk(root, "")
    return found


def routes(ws_port: int, ws_url: str = "", frame_ancestors: str = "*") -> Iterable[Route]:
    """Each page's routes: its document at ``<prefix>/``, the shared files under it, and
    ``<prefix>/config.json``, which says where the WebSocket is (``ws_url``: ``--web-ws-url``, or
    empty: the page's own host at ``ws_port``) and who may send the page tokens (``parents``).
    ``frame_ancestors``: who may frame the chat."""
    assets = load_assets()
    documents = {page.html for page in PAGES}
    found: list[Route] = []
    for page in PAGES:
        settings = json.dumps({"ws_url": ws_url or None, "ws_port": ws_port, "ws_path": "/ws", "parents": parents(page, frame_ancestors)})
        found += page_routes(page, assets, documents, settings.encode(), content_security_policy(page, frame_ancestors))
    return found


def parents(page: Page, frame_ancestors: str = "*") -> list[str] | None:
    """The origins a page may take a new token from, posted by the window that frames it
    (renewal.js): the ones that may frame it, None for any."""
    if not page.embeddable:
        return [SELF]
    sources = [source for source in frame_ancestors.split() if SOURCE.fullmatch(source)]
    return None if "*" in sources else sources


def page_routes(page: Page, assets: dict[str, Asset], documents: set[str], settings: bytes, policy: str) -> list[Route]:
    def headers(asset: Asset | None = None) -> dict[str, str]:
        found = {"content-security-policy": policy, "x-content-type-options": "nosniff", "referrer-policy": "no-referrer", "cache-control": "no-cache"}
        if asset is not None:
            found["etag"] = asset.etag
            if asset.name in page.cross_origin:
                found.update(CROSS_ORIGIN)
        return found

    def serve(request: Request, asset: Asset) -> Response:
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers(asset))
        return Response(asset.body, media_type=asset.content_type, headers=headers(asset))

    async def document(request: Request) -> Response:
        return serve(request, assets[page.html])

    async def asset(request: Request) -> Response:
        wanted = assets.get(request.path_params["path"])
        if wanted is None or wanted.name in documents:  # a document only at its own address
            # the HTTP side's own 404: problem+json, counted and logged as every refusal is
            raise HTTPException(status_code=404)
        return serve(request, wanted)

    async def config(request: Request) -> Response:
        return JSONResponse(json.loads(settings), headers=headers())

    async def bare(request: Request) -> Response:
        return RedirectResponse(f"{page.prefix}/", status_code=308)

    return [
        Route(page.prefix, bare, methods=["GET"]),
        Route(f"{page.prefix}/", document, methods=["GET", "HEAD"]),
        Route(f"{page.prefix}/config.json", config, methods=["GET"]),
        Route(page.prefix + "/{path:path}", asset, methods=["GET", "HEAD"]),
    ]
