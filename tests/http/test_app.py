"""/metrics, /healthz and /readyz over real HTTP, and the WebSocket port's health answers."""

from __future__ import annotations

import trio

from gateway.build import health_line

from .conftest import client, problem


async def http_get(port: int, path: str) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := await stream.receive_some(4096):  # the WebSocket port closes after a plain answer
            data += chunk
        return data


async def test_health_ready_and_metrics_over_http(gateway):
    with trio.fail_after(10):
        async with client(gateway) as http:
            health = await http.get("/healthz")
            assert health.status_code == 200 and health.text == health_line() + "\n"
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.text == "ready\n"
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
            assert "kefu_build_info{" in metrics.text
            assert (await http.head("/healthz")).status_code == 200


async def test_the_websocket_port_answers_health_with_the_same_text(gateway):
    with trio.fail_after(10):
        raw = await http_get(gateway.port, "/healthz")
        assert raw.startswith(b"HTTP/1.1 200") and raw.endswith((health_line() + "\n").encode())
        assert (await http_get(gateway.port, "/readyz")).startswith(b"HTTP/1.1 200")


async def test_unknown_paths_and_methods_are_problems_and_counted(gateway):
    with trio.fail_after(10):
        async with client(gateway) as http:
            problem(await http.get("/nope"), 404, "not_found")
            doc = problem(await http.post("/healthz"), 405, "bad_request")
            assert "POST" in doc["detail"]
    value = gateway.registry.get_sample_value
    assert value("kefu_http_refusals_total", {"code": "not_found", "status": "404"}) == 1
    assert value("kefu_http_refusals_total", {"code": "bad_request", "status": "405"}) == 1

