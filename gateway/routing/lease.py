"""The routing lease: which gateway process of a cluster decides assignments.

A Redis key holds the leader's term (``node-id/random``) with a time to live: taken with
``SET key term NX PX ttl``, kept by the holder with a compare-and-renew script, given back with a
compare-and-delete one. Nobody else can take it until it expires, so a dead leader is replaced
``ttl`` after its last renewal. The holder steps down by itself once it has not renewed for two
thirds of the ttl (Redis away, a long pause), before anyone else can take the key: two nodes never
both believe they lead while their clocks run at the same rate.
"""

from __future__ import annotations

import secrets
import time

from .redis_client import RedisClient

RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


class Lease:
    def __init__(self, client: RedisClient, key: str, node_id: str, ttl_s: float) -> None:
        self.client = client
        self.key = key
        self.term = f"{node_id}/{secrets.token_hex(4)}"  # unique per process run: a restarted node is a new term
        self.ttl_s = ttl_s
        self.valid_until = 0.0  # monotonic time until which this node may act as the holder

    @property
    def held(self) -> bool:
        return time.monotonic() < self.valid_until

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it."""
        sent = time.monotonic()
        got = await self.client.call("SET", self.key, self.term, "NX", "PX", int(self.ttl_s * 1000))
        if got == b"OK":
            self.valid_until = sent + self.ttl_s * 2 / 3
            return True
        return False

    async def renew(self) -> bool:
        """Extend the lease while this term holds it; False: it was lost (expired, taken)."""
        sent = time.monotonic()
        renewed = await self.client.call("EVAL", RENEW, 1, self.key, self.term, int(self.ttl_s * 1000))
        if renewed == 1:
            self.valid_until = sent + self.ttl_s * 2 / 3
            return True
        self.valid_until = 0.0
        return False

    async def release(self) -> None:
        """Give the lease back (a graceful stop): another node takes it at once."""
        self.valid_until = 0.0
        await self.client.call("EVAL", RELEASE, 1, self.key, self.term)

    async def holder(self) -> str | None:
        """The term holding the lease now, or None."""
        value = await self.client.call("GET", self.key)
        return value.decode() if isinstance(value, bytes) else None
