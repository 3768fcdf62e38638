"""The PostgreSQL the tests use (127.0.0.1:5432, trust auth, database ``test``): each test gets a
schema of its own, named at random and dropped afterwards, so tests are isolated and need no
database to be created."""

from __future__ import annotations

import os
import secrets

import psycopg
from psycopg import sql

from gateway.store.postgres import PostgresBackend

PG_URL = os.environ.get("KEFU_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test")


def fresh_schema() -> str:
    return "t_" + secrets.token_hex(6)


def fresh_backend(**kwargs) -> PostgresBackend:
    return PostgresBackend(PG_URL, schema=fresh_schema(), **kwargs)


def drop_schema(schema: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def create_api_key(schema: str, tenant: str, scopes: tuple[str, ...] = ("admin",)) -> str:
    """An API key of ``tenant`` written into the store in ``schema``, as ``kefu apikey create``
    does for a cluster's shared store (blocking); returns its secret."""
    from gateway.http.keys import new_key
    from gateway.model import CreateApiKey

    record, secret = new_key(tenant, "test", scopes)
    backend = PostgresBackend(PG_URL, schema=schema)
    backend.open()
    try:
        backend.apply_batch([CreateApiKey(record)])
    finally:
        backend.close()
    return secret
