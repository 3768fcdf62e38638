"""Malformed requests: each gets a problem document naming what is wrong, a log line and a metric,
and changes nothing."""

from __future__ import annotations

import logging

import trio

from .conftest import problem


async def test_malformed_bodies_are_refused_and_change_nothing(api, caplog):
    caplog.set_level(logging.INFO, logger="kefu.http")
    post = lambda content, **headers: api.post("/v1/agents", content=content, headers={"content-type": "application/json", **headers})  # noqa: E731
    with trio.fail_after(10):
        assert "not JSON" in problem(await post(b"{bad json"), 400, "bad_request")["detail"]
        assert "object" in problem(await post(b'["alice"]'), 400, "bad_request")["detail"]
        problem(await post(b"\xff\xfe"), 400, "bad_request")
        problem(await api.post("/v1/agents", content=b"user=alice", headers={"content-type": "application/x-www-form-urlencoded"}), 415, "bad_request")
        doc = problem(await api.post("/v1/agents", json={"user": "alice", "max_active": "3", "colour": "red"}), 422, "bad_request")
        assert {e["field"] for e in doc["errors"]} == {"max_active", "colour"} and "`colour`" in doc["detail"] and "`max_active`" in doc["detail"]
        doc = problem(await api.post("/v1/agents", json={"user": "alice", "max_active": True}), 422, "bad_request")
        assert doc["errors"][0]["field"] == "max_active"
        doc = problem(await api.post("/v1/agents", json={"user": "alice", "groups": ["default", 7]}), 422, "bad_request")
        assert doc["errors"][0]["field"] == "groups.1"
        problem(await api.post("/v1/agents", json={"user": "a" * 200}), 422, "bad_request")
        problem(await api.patch("/v1/agents/alice", json={"max_active": -1}), 422, "bad_request")
        assert (await api.get("/v1/agents")).json()["agents"] == []
        assert [k["name"] for k in (await api.get("/v1/apikeys")).json()["keys"]] == ["test"]
    value = api.gateway.registry.get_sample_value
    assert value("kefu_http_refusals_total", {"code": "bad_request", "status": "400"}) == 3
    assert value("kefu_http_refusals_total", {"code": "bad_request", "status": "415"}) == 1
    assert value("kefu_http_refusals_total", {"code": "bad_request", "status": "422"}) == 5
    assert sum("POST /v1/agents refused: 422 bad_request" in r.getMessage() for r in caplog.records) == 4


async def test_bodies_are_size_limited_whether_declared_or_streamed(api):
    limit = api.gateway.node.config.api_max_body_bytes
    big = b'{"user": "' + b"a" * limit + b'"}'

    async def chunks():
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    with trio.fail_after(10):
        problem(await api.post("/v1/agents", content=big, headers={"content-type": "application/json"}), 413, "too_large")
        problem(await api.post("/v1/agents", content=chunks(), headers={"content-type": "application/json"}), 413, "too_large")
        assert (await api.get("/v1/agents")).json()["agents"] == []
    assert api.gateway.registry.get_sample_value("kefu_http_refusals_total", {"code": "too_large", "status": "413"}) == 2


async def test_query_parameters_are_checked_too(api):
    with trio.fail_after(10):
        assert problem(await api.get("/v1/agents", params={"page": "2"}), 422, "bad_request")["detail"] == "unknown query parameter `page`"
        doc = problem(await api.get("/v1/conversations", params={"colour": "red"}), 422, "bad_request")
        assert doc["errors"][0]["field"] == "colour"
        doc = problem(await api.get("/v1/conversations", params={"limit": "many"}), 422, "bad_request")
        assert doc["errors"][0]["field"] == "limit"
        problem(await api.get("/v1/conversations", params={"limit": "1000"}), 422, "bad_request")
        problem(await api.get("/v1/conversations", params=[("stage", "bot"), ("stage", "queued")]), 422, "bad_request")
