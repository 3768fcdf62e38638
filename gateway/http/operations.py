"""REST operations as data: each names its method, path, scopes and request models, and one
wrapper turns it into a Starlette endpoint. The OpenAPI document is generated from the same list,
so every route is described and every described route exists.

The wrapper does, in order, for every call: authenticate the API key (401; or, on the operations
that name its role, a client token: a supervisor's console manages the shop with its own token, so
no API key ever reaches a browser), check the scope (403), validate the query and the JSON body
(400 for bodies that are not JSON objects or too large, 415 for other media types, 422 naming the
field for unknown fields and wrong types), and only then run the handler: a refused request has
changed nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..auth import Identity
from ..model import ApiKey
from ..protocol.errors import AuthError, RequestError
from ..store import StoreDamaged, StoreError
from . import keys
from .problems import Problem, log, respond

#: ``token_roles`` of the operations a supervisor's console calls with the supervisor's own token.
SUPERVISOR = frozenset({"supervisor"})
#: The roles whose client tokens an operation may take at all: a supervisor manages their own shop
#: from the console. An agent's, a shopper's or a bot's token has the WebSocket's rights only.
TOKEN_ROLES = SUPERVISOR


class Body(BaseModel):
    """Base of request bodies: unknown fields and wrong types are errors (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Query(BaseModel):
    """Base of query parameters: unknown ones are errors; numbers are parsed from their text."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Call:
    """One authenticated, validated request, as a handler sees it."""

    services: Any  # gateway.http.app.Services
    key: ApiKey  # for a client token, a key of the token's tenant with the operation's own scope
    path: dict[str, str]
    headers: Any  # the request's headers (case-insensitive)
    query: Any = None
    body: Any = None

    @property
    def tenant(self) -> str:
        return self.key.tenant


Handler = Callable[[Call], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # Starlette path syntax: /v1/agents/{user}
    handler: Handler
    summary: str
    scopes: frozenset[str]  # any of these (``admin`` may do everything)
    body: type[Body] | None = None
    query: type[Query] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    errors: tuple[int, ...] = field(default=())
    headers: tuple[tuple[str, str], ...] = ()  # request headers it reads: (name, description)  # statuses beyond the ones every call may get
    max_body_bytes: int | None = None  # a body limit of its own (default: the gateway's --api-max-body-bytes)
    # Client tokens of these roles (of TOKEN_ROLES) may call it too, as a key of the token's tenant
    # with the operation's own scope (``token_scope``): what a supervisor's console shows and changes
    # (docs/console.md) without an API key ever reaching a browser.
    token_roles: frozenset[str] = frozenset()
    # It makes, shows or redirects credentials or the tenant's events (API keys, tokens, webhooks):
    # a backend's API key only, never a browser's token.
    backend_only: bool = False

    def __post_init__(self) -> None:
        if not self.token_roles:
            return
        where = f"{self.method} {self.path}"
        if not self.token_roles <= TOKEN_ROLES:
            raise ValueError(f"{where}: client tokens of roles {sorted(self.token_roles - TOKEN_ROLES)} never stand for an API key")
        if self.backend_only:
            raise ValueError(f"{where}: it makes or shows credentials, so it takes API keys only")
        if self.scopes not in (frozenset(), frozenset({"read"})):
            raise ValueError(f"{where}: a client token acts with the operation's own scope, read or admin; this one takes {sorted(self.scopes)}")

    @property
    def token_scope(self) -> str:
        """The scope a client token's holder acts with here: ``read`` on what read keys may call,
        ``admin`` on what only admin keys may (and only on this operation)."""
        return "read" if "read" in self.scopes else "admin"

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as ``{field, message}``, the field a dotted path (``groups.0``)."""
    errors = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "(body)"
        if error["type"] == "extra_forbidden":
            message = f"unknown field `{name}`"
        elif error["type"] == "missing":
            message = f"field `{name}` is required"
        else:
            message = f"field `{name}`: {error['msg']}"
        errors.append({"field": name, "message": message})
    return errors


def _validate(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        raise Problem("bad_request", "; ".join(e["message"] for e in errors), status=422, errors=errors) from None


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, at most ``limit`` bytes (read no further than that)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise Problem("bad_request", "the body must be application/json", status=415)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Problem("too_large", f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Problem("too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    try:
        data = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem("bad_request", f"the body is not JSON: {exc}", status=400) from None
    if type(data) is not dict:
        raise Problem("bad_request", "the body must be a JSON object", status=400)
    return data


async def authenticate(request: Request, services: Any, op: Operation) -> tuple[ApiKey, Identity | None]:
    """The API key of the request; or, on an operation that takes them, the client token's holder
    as a key of the token's tenant with the operation's own scope (id ``token:<tenant>/<user>``,
    rate-limited as one), and the holder."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    challenge = {"www-authenticate": 'Bearer realm="kefu"'}
    if scheme.lower() != "bearer" or not presented.strip():
        raise Problem("unauthenticated", "send the API key as `Authorization: Bearer <key>`", headers=challenge)
    parsed = keys.parse(presented.strip())
    if parsed is None and op.token_roles:
        try:
            identity = services.auth.verify(presented.strip())
        except AuthError as exc:
            raise Problem("unauthenticated", f"neither an API key nor a valid client token ({exc.code}: {exc.message})", headers=challenge) from None
        if identity.role not in op.token_roles:
            raise Problem("forbidden", f"a client token of role {identity.role} may not call this (roles: {', '.join(sorted(op.token_roles))})")
        return ApiKey(f"token:{identity.tenant}/{identity.user}", identity.tenant, identity.user, (op.token_scope,), "", 0), identity
    store = services.store
    record = None
    if parsed is not None:
        record = await store.api_key(parsed[0])
    if parsed is None or not keys.matches(record, parsed[1]):
        raise Problem("unauthenticated", "unknown or revoked API key", headers=challenge)
    assert record is not None
    return record, None


def changes(body: Body | None) -> str:
    """What a request's body set, for the log: each field given, with its value when it is short."""
    if body is None:
        return ""
    said = []
    for name in sorted(body.model_fields_set):
        value = getattr(body, name)
        shown = repr(value)
        said.append(f"{name}={shown}" if isinstance(value, (str, int, float, bool)) and len(shown) <= 80 else name)
    return ", ".join(said)


def endpoint(op: Operation, services: Any) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint that runs ``op`` for ``services``."""

    async def run(request: Request) -> Response:
        try:
            key, holder = await authenticate(request, services, op)
            wait_ms = services.rates.admit(key.id)
            if wait_ms is not None:
                raise Problem("rate_limited", f"over this API key's rate: retry in {wait_ms} ms",
                              headers={"retry-after": str(-(-wait_ms // 1000))}, extra={"retry_after_ms": wait_ms})
            if not keys.allows(key, op.scopes):
                raise Problem("forbidden", f"this API key lacks a scope for this call (one of: {', '.join(['admin', *sorted(op.scopes)])})")
            query = _validate(op.query, dict(request.query_params)) if op.query else None
            if len(request.query_params.keys()) != len(request.query_params.multi_items()):
                raise Problem("bad_request", "a query parameter is given more than once", status=422)
            if op.query is None and request.query_params:
                raise Problem("bad_request", f"unknown query parameter `{next(iter(request.query_params))}`", status=422)
            body = _validate(op.body, await read_json(request, op.max_body_bytes or services.max_body_bytes)) if op.body else None
            status, payload = await op.handler(Call(services, key, dict(request.path_params), request.headers, query, body))
            if holder is not None and op.token_scope == "admin":  # a change: an operator will ask which supervisor made it
                said = changes(body)
                log.info("%s %s by %s %s of tenant %s%s: %d", request.method, request.url.path, holder.role, holder.user, holder.tenant, f" ({said})" if said else "", status)
        except Problem as problem:
            return respond(problem, request.method, request.url.path, services.stats.http_refusals, services.refusal_log)
        except RequestError as exc:
            return respond(Problem.of(exc), request.method, request.url.path, services.stats.http_refusals, services.refusal_log)
        except StoreDamaged as exc:
            log.error("%s %s: %s", request.method, request.url.path, exc)
            problem = Problem("storage_damaged", "the store is damaged: an operator must repair it")
            return respond(problem, request.method, request.url.path, services.stats.http_refusals, services.refusal_log)
        except StoreError as exc:  # closed while shutting down, or a failed commit: nothing was applied
            log.warning("%s %s: %s", request.method, request.url.path, exc)
            problem = Problem("unavailable", "storage unavailable: retry")
            return respond(problem, request.method, request.url.path, services.stats.http_refusals, services.refusal_log)
        if status == 204:
            return Response(status_code=204)
        return JSONResponse(payload, status_code=status)

    run.__name__ = op.operation_id
    return run
