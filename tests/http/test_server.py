"""The HTTP listener (gateway/http/server.py): its read size, and what it does when file
descriptors run out: it pauses accepting and logs, rather than spinning on the failing accept as
the hand-written server did, and serves the waiting connections once descriptors are free again."""

from __future__ import annotations

import logging
import os
import resource

import trio

from gateway.http.server import READ_BYTES, read_size

CLIENTS = 3


def test_hypercorn_reads_bodies_in_large_pieces():
    # the constant gateway/http/server.py sets must still exist in this Hypercorn and be the one it reads
    from hypercorn.trio import tcp_server

    assert read_size() == READ_BYTES == tcp_server.MAX_RECV
    assert "MAX_RECV" in tcp_server.TCPServer._read_data.__code__.co_names


async def test_out_of_file_descriptors_pauses_accepting_and_recovers(start_gateway, caplog):
    gw = await start_gateway()
    caplog.set_level(logging.ERROR, logger="trio.serve_listeners")
    clients = [trio.socket.socket() for _ in range(CLIENTS)]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers: list[int] = []
    try:
        # Every descriptor number below the limit in use: the server's accept() has none left.
        highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
        while True:
            fd = os.open(os.devnull, os.O_RDONLY)
            if fd > highest:
                os.close(fd)
                break
            fillers.append(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
        with trio.fail_after(10):
            for sock in clients:
                await sock.connect(("127.0.0.1", gw.metrics_port))
            while not any("EMFILE" in r.getMessage() for r in caplog.records):
                await trio.sleep(0.01)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for fd in fillers:
            os.close(fd)
    with trio.fail_after(10):
        for sock in clients:
            stream = trio.SocketStream(sock)
            await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            response = b""
            while chunk := await stream.receive_some(4096):
                response += chunk
            assert response.startswith(b"HTTP/1.1 200"), response
            await stream.aclose()
    assert gw.node.ready
