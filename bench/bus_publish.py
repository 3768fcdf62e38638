"""How fast a Trio process can publish bus events to Redis: the choice of the Redis bus's client.

    python -m bench.bus_publish [--url redis://127.0.0.1:6379] [--events 100000] [--out FILE]

Three publishers send the same events (msgpack ``[kind, node, conv, seq, frame, origin]`` with a
~200-byte frame, as the bus sends a message) to one channel nobody listens to, and wait until Redis
has answered every PUBLISH:

- ``coredis_awaited``: coredis (on Trio through anyio), one awaited ``publish`` per event, as a
  node would publish from each completion if it awaited;
- ``coredis_pipelined``: coredis pipelines of ``--batch`` publishes (transaction off);
- ``kefu_redis_bus``: ``gateway.bus.redis.RedisBus``: a buffer drained by one writer task, answers
  parsed by ``hiredis.Reader``, on a plain Trio socket.

It reports events/s and the publisher's CPU seconds per 1,000 events. Figures depend on the machine:
run it on a quiet one. The smoke test (tests/bench/test_bus_publish_bench.py) only checks the shape.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time

import msgpack
import trio

from gateway.bus.redis import RedisAddress, RedisBus


def event(seq: int) -> bytes:
    return msgpack.packb([0, "node-1", "conv-0001", seq, b"\x85" + b"m" * 200, None], use_bin_type=True)


async def coredis_awaited(url: str, channel: str, n: int, batch: int) -> None:
    import coredis

    address = RedisAddress(url)
    client = coredis.Redis(address.host, address.port, db=address.db, password=address.password)
    async with client:
        for seq in range(n):
            await client.publish(channel, event(seq))


async def coredis_pipelined(url: str, channel: str, n: int, batch: int) -> None:
    import coredis

    address = RedisAddress(url)
    client = coredis.Redis(address.host, address.port, db=address.db, password=address.password)
    async with client:
        for start in range(0, n, batch):
            async with client.pipeline(transaction=False) as pipe:
                for seq in range(start, min(n, start + batch)):
                    pipe.publish(channel, event(seq))


class Silent:
    """A node that ignores what it hears (nothing is published to its channel but by itself)."""

    def __getattr__(self, name):
        return lambda *args: None


async def kefu_redis_bus(url: str, channel: str, n: int, batch: int) -> None:
    bus = RedisBus(url, channel=channel + ":bus", max_buffer=1 << 30)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run, Silent())
        payload = b"\x85" + b"m" * 200
        for seq in range(n):
            bus.publish_message("node-1", "conv-0001", seq, payload, None)
            if seq % batch == batch - 1:
                await trio.sleep(0)  # as the gateway does: publishes come from many completions
        while bus.buffered_bytes:
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()


PUBLISHERS = {"coredis_awaited": coredis_awaited, "coredis_pipelined": coredis_pipelined, "kefu_redis_bus": kefu_redis_bus}


def measure(name: str, url: str, n: int, batch: int) -> dict:
    channel = f"kefu:bench:{secrets.token_hex(4)}"
    cpu, wall = time.process_time(), time.perf_counter()
    trio.run(PUBLISHERS[name], url, channel, n, batch)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"publisher": name, "events": n, "seconds": round(wall, 3), "events_per_s": round(n / wall), "cpu_ms_per_1000": round(1e6 * cpu / n, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="redis://127.0.0.1:6379")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--awaited-events", type=int, default=10_000, help="events for coredis_awaited (one round trip each)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    results = []
    for name in PUBLISHERS:
        n = args.awaited_events if name == "coredis_awaited" else args.events
        results.append(measure(name, args.url, n, args.batch))
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"results": results, "options": vars(args)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
