"""One Redis connection for request/reply commands (the routing lease, its inbox and replies).

The bus (gateway.bus.redis) only publishes and subscribes; routing across processes also needs
commands whose answers it reads: SET NX, EVAL, RPUSH, BLPOP. Like the bus, this speaks RESP over a
plain Trio TCP stream parsed by ``hiredis.Reader`` (redis-py does not run on Trio). Commands are
sent one pipeline at a time under a lock; a lost connection, an answer that takes longer than
``timeout_s``, or a command cancelled before its answer was read closes the connection, and the
next call opens a fresh one.
"""

from __future__ import annotations

from typing import Any

import hiredis
import trio

from ..bus.base import BusError
from ..bus.redis import RedisAddress, command, read_reply


class RedisUnavailable(Exception):
    """Redis did not answer a command (connection refused or lost)."""


def _part(value: bytes | str | int | float) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode()


class RedisClient:
    def __init__(self, url: str, name: str, *, timeout_s: float = 2.0) -> None:
        self.address = RedisAddress(url)
        self.name = name  # CLIENT SETNAME: who is who in CLIENT LIST
        self.timeout_s = timeout_s  # connecting, sending and reading every answer (a BLPOP's wait included)
        self._stream: trio.SocketStream | None = None
        self._reader: hiredis.Reader | None = None
        self._lock = trio.Lock()

    async def call(self, *parts: bytes | str | int | float) -> Any:
        """One command's answer (a ``hiredis.ReplyError`` is returned, not raised)."""
        return (await self.pipeline([parts]))[0]

    async def pipeline(self, commands: list[tuple[bytes | str | int | float, ...]]) -> list[Any]:
        """Send every command in one write, then read their answers in order."""
        async with self._lock:
            try:
                with trio.fail_after(self.timeout_s):
                    if self._stream is None:
                        self._stream = await self.address.connect(self.name)
                        self._reader = hiredis.Reader()
                    await self._stream.send_all(b"".join(command(*map(_part, c)) for c in commands))
                    return [await read_reply(self._stream, self._reader) for _ in commands]
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, BusError, trio.TooSlowError) as exc:
                await self.aclose()
                why = str(exc) or f"no answer within {self.timeout_s:g} s"
                raise RedisUnavailable(f"redis {self.address.host}:{self.address.port}: {why}") from None
            except BaseException:  # cancelled mid-command: its answer would be read as the next one's
                await self.aclose()
                raise

    async def aclose(self) -> None:
        stream, self._stream, self._reader = self._stream, None, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()
