"""The OpenAPI document describes every route the application serves, and docs/api.md too."""

from __future__ import annotations

from pathlib import Path

import trio
from openapi_spec_validator import validate
from starlette.routing import Route

from gateway import web
from gateway.http.app import Services, build_app
from gateway.routing.config import RoutingConfig
from gateway.http.v1 import ALL
from gateway.http.v1.attachments import OPENAPI_PATHS as MEDIA_PATHS

from .conftest import client

OPERATIONS_ENDPOINTS = {"/metrics", "/healthz", "/readyz", "/v1/openapi.json"}
API_MD = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()


async def test_the_served_document_is_valid_openapi_and_lists_every_route(start_gateway):
    gateway = await start_gateway()
    with trio.fail_after(10):
        async with client(gateway) as anonymous:  # the document needs no key
            response = await anonymous.get("/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    validate(doc)
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    app = build_app(_services(gateway))
    routed = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.path not in OPERATIONS_ENDPOINTS and not route.path.startswith(tuple(page.prefix for page in web.PAGES))  # pages, not API
        for method in route.methods - {"HEAD"}
    }
    media = sum(len(item) for item in MEDIA_PATHS.values())
    assert routed == documented and len(documented) == len(ALL) + media
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert op["x-kefu-scopes"][0] == "admin" and op["summary"], (method, path)
            # The media endpoints stream bodies that are files, not JSON to validate (docs/media.md).
            assert {"401", "403", "404" if path in MEDIA_PATHS else "422"} <= set(op["responses"]), (method, path)


def test_docs_api_md_describes_every_operation():
    for op in ALL:
        assert f"`{op.method} {op.path}`" in API_MD, f"docs/api.md lacks {op.method} {op.path}"
        scopes = ", ".join(f"`{s}`" for s in ["admin", *sorted(op.scopes)])
        token = "a supervisor" if op.token_roles == {"supervisor"} else "—"
        assert f"| `{op.method} {op.path}` | {scopes} | {token} |" in API_MD, f"docs/api.md: scopes and client token of {op.method} {op.path}"


def _services(running) -> Services:
    return Services(running.node, running.node.handlers.auth, running.registry, RoutingConfig(), 1024)
