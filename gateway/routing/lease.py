"""The routing lease: which gateway process of a cluster decides assignments.

A Redis key holds the leader's term (``node-id/random``) with a time to live: taken with
``SET key term NX PX ttl``, kept by the holder with a compare-and-renew script, given back with a
compare-and-delete one. Nobody else can take it until it expires, so a dead leader is replaced
``ttl`` after its last renewal. The holder steps down by itself once it has not renewed for two
thirds of the ttl (Redis away, a long pause), before anyone else can take the key: two nodes never
both believe they lead while their clocks run at the same rate.

A paused process's clock does not run, though: a write it sent before the pause can still reach
the store after its successor's. So each term also gets a number, its **fence**, from a counter
(``<key>:fence``) incremented in the same script that takes the key: the numbers follow the order
in which the lease was taken, and a later holder's is always higher. (Incremented after the
``SET``, in a second round trip, a holder paused in between would get its number after its
successor's, a higher one.) The leader's store writes carry it (``gateway.model.Fenced``) and the
store refuses a number below the highest it has seen. The counter never expires; should Redis
lose it, the store's refusal says the highest seen and ``step_aside`` raises the counter past it.
"""

from __future__ import annotations

import secrets
import time

from .redis_client import RedisClient

# Take the lease (KEYS[1]) if nobody holds it and, in the same step, the next fence (KEYS[2]); 0: taken
ACQUIRE = """if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return redis.call('incr', KEYS[2]) end
return 0"""
RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# The fence counter (KEYS[2]) to at least ARGV[2], then the lease (KEYS[1]) given back if ARGV[1] holds it
STEP_ASIDE = """if tonumber(redis.call('get', KEYS[2]) or '0') < tonumber(ARGV[2]) then redis.call('set', KEYS[2], ARGV[2]) end
if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('del', KEYS[1]) end
return 1"""


class Lease:
    def __init__(self, client: RedisClient, key: str, node_id: str, ttl_s: float) -> None:
        self.client = client
        self.key = key
        self.counter = f"{key}:fence"  # the last fence handed out: only grows
        self.term = f"{node_id}/{secrets.token_hex(4)}"  # unique per process run: a restarted node is a new term
        self.fence = 0  # the number of this node's last term (0: it has not led); a new one at each acquire
        self.ttl_s = ttl_s
        self.valid_until = 0.0  # monotonic time until which this node may act as the holder

    @property
    def held(self) -> bool:
        return time.monotonic() < self.valid_until

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it, with the next fence."""
        sent = time.monotonic()
        fence = await self.client.call("EVAL", ACQUIRE, 2, self.key, self.counter, self.term, int(self.ttl_s * 1000))
        if type(fence) is int and fence > 0:
            self.fence = fence
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

    async def step_aside(self, fence_seen: int) -> None:
        """The store has seen ``fence_seen``, above this term's: make the next fence handed out
        higher still (Redis may have lost the counter), and give the lease back if this node holds
        it, so that the next holder, perhaps this node again, gets that number."""
        self.valid_until = 0.0
        await self.client.call("EVAL", STEP_ASIDE, 2, self.key, self.counter, self.term, fence_seen)

    async def holder(self) -> str | None:
        """The term holding the lease now, or None."""
        value = await self.client.call("GET", self.key)
        return value.decode() if isinstance(value, bytes) else None
