"""The webhook client (gateway.webhooks.client) against real sockets: kept-alive connections, a
receiver that closed one meanwhile, TLS checked against a CA, timeouts, odd and oversized answers."""

from __future__ import annotations

import ssl
from functools import partial

import pytest
import trio
import trustme

from gateway.webhooks.client import Client, Unreachable

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def read_request(stream: trio.abc.Stream) -> bytes | None:
    """One whole request (head and content-length body), or None at the end of the connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += await stream.receive_some(65536)
    return head


class Scripted:
    """A server that answers each request on each connection with the next scripted answer;
    ``close_after`` answers it closes the connection."""

    def __init__(self, answers: list[bytes], close_after: int = 1000, tls: ssl.SSLContext | None = None) -> None:
        self.answers, self.close_after, self.tls = answers, close_after, tls
        self.connections = 0
        self.heads: list[bytes] = []

    async def handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        if self.tls is not None:
            stream = trio.SSLStream(stream, self.tls, server_side=True)
        try:
            for _ in range(self.close_after):
                head = await read_request(stream)
                if head is None:
                    return
                self.heads.append(head)
                answer = self.answers.pop(0) if self.answers else OK
                if answer:
                    await stream.send_all(answer)
                else:
                    await trio.sleep_forever()  # never answers
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)


async def serve(nursery, server: Scripted) -> int:
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    return listeners[0].socket.getsockname()[1]


async def test_connections_are_kept_alive_and_one_the_receiver_closed_is_replaced(nursery):
    server = Scripted([], close_after=2)
    port = await serve(nursery, server)
    client = Client()
    for _ in range(5):
        assert await client.post(f"http://127.0.0.1:{port}/hook?x=1", b'{"a":1}', {"kefu-event": "ping"}, 5) == 200
    assert server.connections == 3  # two requests a connection, then the server closed it: a new one each time
    assert server.heads[0].startswith(b"POST /hook?x=1 HTTP/1.1\r\n") and b"kefu-event: ping" in server.heads[0]
    await client.aclose()


async def test_tls_is_checked_against_the_authority(nursery):
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(tls)
    port = await serve(nursery, Scripted([], tls=tls))
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    assert await Client(ssl_context=trusting).post(f"https://localhost:{port}/hook", b"{}", {}, 5) == 200
    with pytest.raises(Unreachable, match="TLS"):
        await Client().post(f"https://localhost:{port}/hook", b"{}", {}, 5)  # the system's CAs do not know it


async def test_a_receiver_that_does_not_answer_times_out(nursery):
    port = await serve(nursery, Scripted([b""]))
    with pytest.raises(trio.TooSlowError):
        await Client().post(f"http://127.0.0.1:{port}/", b"{}", {}, 0.2)


async def test_chunked_large_and_malformed_answers(nursery):
    chunked = b"HTTP/1.1 202 Accepted\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    large = b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000
    server = Scripted([chunked, large, b"SMTP ready\r\n\r\n"])
    port = await serve(nursery, server)
    client = Client(max_answer_bytes=1000)
    assert await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, 5) == 202
    assert await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, 5) == 200  # read up to the limit, then dropped
    with pytest.raises(Unreachable):
        await client.post(f"http://127.0.0.1:{port}/", b"{}", {}, 5)
    assert server.connections == 2  # the oversized answer's connection was not kept


async def test_nobody_listening_is_unreachable():
    with trio.socket.socket() as s:
        await s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unreachable, match="cannot connect"):
        await Client().post(f"http://127.0.0.1:{port}/", b"{}", {}, 5)


async def test_a_checked_address_is_where_it_connects_whatever_the_name(nursery):
    """The sender resolves and checks a receiver's name, then has the client connect to that very
    address: the name is only the Host header (and TLS's), so resolving it again cannot redirect."""
    server = Scripted([])
    port = await serve(nursery, server)
    status = await Client().post(f"http://receiver.shop.invalid:{port}/hook", b"{}", {}, 5, address="127.0.0.1")
    assert status == 200 and f"host: receiver.shop.invalid:{port}".encode() in server.heads[0]
    with pytest.raises(Unreachable):  # without the address the name is resolved, and .invalid never is
        await Client().post(f"http://receiver.shop.invalid:{port}/hook", b"{}", {}, 5)


async def test_a_chinese_path_is_sent_percent_encoded(nursery):
    server = Scripted([])
    port = await serve(nursery, server)
    assert await Client().post(f"http://127.0.0.1:{port}/钩子/事件?店=一号&x=1%202", b"{}", {}, 5) == 200
    assert server.heads[0].startswith(b"POST /%E9%92%A9%E5%AD%90/%E4%BA%8B%E4%BB%B6?%E5%BA%97=%E4%B8%80%E5%8F%B7&x=1%202 HTTP/1.1")
