"""The OpenAPI 3.1 document of REST API v1, generated from the operations themselves (their
paths, scopes and pydantic models), so it cannot leave a route out."""

from __future__ import annotations

from typing import Any, Iterable

from pydantic import BaseModel

from .. import __version__
from ..protocol.errors import ERRORS
from .operations import Operation
from .problems import TITLES

_COMMON_ERRORS = (401, 403, 413, 415, 422, 400, 503)


def _schema(model: type[BaseModel], components: dict[str, Any], mode: str) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = sub
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    components: dict[str, Any] = {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details; `code` is one of the protocol's error codes (docs/protocol.md §9).",
            "required": ["type", "title", "status", "detail", "code"],
            "properties": {
                "type": {"type": "string"},
                "title": {"type": "string"},
                "status": {"type": "integer"},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
                "code": {"type": "string", "enum": sorted(ERRORS)},
                "retryable": {"type": "boolean"},
                "errors": {"type": "array", "items": {"type": "object", "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
            },
        }
    }
    paths: dict[str, Any] = {}
    for op in operations:
        item: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "security": [{"apiKey": []}, *([{"clientToken": []}] if op.token_roles else [])],
            "x-kefu-scopes": ["admin", *sorted(op.scopes)],
            **({"x-kefu-token-roles": sorted(op.token_roles)} if op.token_roles else {}),
            "responses": {},
        }
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in _path_names(op.path)]
        params += [{"name": name, "in": "header", "required": False, "schema": {"type": "string", "maxLength": 128}, "description": text} for name, text in op.headers]
        if op.query is not None:
            schema = op.query.model_json_schema()
            required = set(schema.get("required", []))
            for name, prop in schema["properties"].items():
                params.append({"name": name, "in": "query", "required": name in required, "schema": prop, **({"description": prop["description"]} if "description" in prop else {})})
        if params:
            item["parameters"] = params
        if op.body is not None:
            item["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(op.body, components, "validation")}}}
        ok: dict[str, Any] = {"description": TITLES.get(op.status, "OK") if op.status >= 400 else "Success"}
        if op.response is not None:
            ok["content"] = {"application/json": {"schema": _schema(op.response, components, "serialization")}}
        item["responses"][str(op.status)] = ok
        for status in (*_COMMON_ERRORS, *op.errors):
            item["responses"][str(status)] = {"description": TITLES[status], "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        paths.setdefault(op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kefu REST API",
            "version": f"v1 (kefu {__version__})",
            "description": "A tenant's backend manages keys, agents and routing, mints client tokens and works on conversations. "
            "Every call is scoped to its API key's tenant. See docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key: `kefu_<id>_<secret>`."},
                "clientToken": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "A client token (the WebSocket's): the media endpoints, and operations naming its role in `x-kefu-token-roles`.",
                },
            },
        },
    }


def _path_names(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]
