"""The ASGI application: operations endpoints and REST API v1, built from a running node."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .. import web
from ..auth import Authenticator
from ..routing.config import RoutingConfig, TenantRouting, parse_tenant
from .health import probe
from .limits import KeyRates
from .openapi import document
from .operations import endpoint
from .problems import Problem, RefusalLog, respond
from .v1 import ALL, attachments

log = logging.getLogger("kefu.http")


@dataclass
class Services:
    """What the HTTP side reaches of a gateway."""

    node: Any  # gateway.node.Node
    auth: Authenticator
    registry: CollectorRegistry
    routing_file: RoutingConfig  # what --routing-file says (empty when none)
    max_body_bytes: int
    rates: KeyRates = field(default_factory=lambda: KeyRates(0, 0))
    ws_port: int = 0  # the WebSocket listener's port, for the console's browsers
    web_ws_url: str = ""  # --web-ws-url
    frame_ancestors: str = "*"  # who may frame the chat page: the shop's sites (--allowed-origins)

    def __post_init__(self) -> None:
        self.store = self.node.store
        self.stats = self.node.stats
        self.conversations = self.node.service  # gateway.conversations.service.ConversationService
        self.refusal_log = RefusalLog()

    @property
    def routing(self) -> Any:
        """The routing service, or None when routing is off."""
        return self.node.routing

    async def routing_settings(self, tenant: str) -> TenantRouting:
        """The tenant's routing settings in force: routing's own, or (routing off, or a cluster,
        where another node may have stored newer ones) the stored ones, else the file's."""
        if self.routing is not None and self.routing.cluster is None:
            return self.routing.config.for_tenant(tenant)
        stored = await self.store.tenant_settings(tenant)
        if stored:
            return parse_tenant(json.loads(stored[0].routing), f"stored settings of {tenant}")
        return self.routing_file.for_tenant(tenant)

    def routing_from_file(self, tenant: str) -> bool:
        return tenant in self.routing_file.tenants

    async def use_knowledge_base(self, tenant: str) -> None:
        """A tenant's stored bot knowledge base changed: routing (when on) answers from it once fitted."""
        if self.routing is not None:
            await self.routing.use_knowledge_base(tenant)

    def configure_routing(self, tenant: str, routing: TenantRouting) -> None:
        """Stored settings changed: routing (when on) uses them at once."""
        if self.routing is not None:
            self.routing.configure(tenant, routing)


def build_app(services: Services) -> Starlette:
    node = services.node

    async def health(request: Request) -> Response:
        status, text = probe(request.url.path, bool(node.ready), node.server.checks)
        return PlainTextResponse(text + "\n", status_code=status)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(services.registry), media_type=CONTENT_TYPE_LATEST)

    spec = document(ALL)
    spec["paths"].update(attachments.OPENAPI_PATHS)
    spec["components"]["schemas"].update(attachments.openapi_schemas(spec["components"]["schemas"]["Problem"]))

    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    async def refused(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        if status == 404:
            problem = Problem("not_found", f"no such resource: {request.url.path}")
        elif status == 405:
            allow = (getattr(exc, "headers", None) or {}).get("Allow", "")
            problem = Problem("bad_request", f"method {request.method} not allowed here (allowed: {allow})", status=405, headers={"allow": allow})
        elif isinstance(exc, HTTPException) and status < 500:
            problem = Problem("bad_request", str(exc.detail), status=status)
        else:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
            problem = Problem("internal", "unexpected server error")
        return respond(problem, request.method, request.url.path, services.stats.http_refusals, services.refusal_log)

    routes = [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/readyz", health, methods=["GET"]),
        Route("/v1/openapi.json", openapi, methods=["GET"]),
        *(Route(op.path, endpoint(op, services), methods=[op.method]) for op in ALL),
        *attachments.routes(services),
        *web.routes(services.ws_port, services.web_ws_url, services.frame_ancestors),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: refused, Exception: refused})
