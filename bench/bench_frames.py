"""Micro-benchmark: Kefu's frame codec (gateway.protocol.frames) against wsproto's FrameProtocol.

Cases (N frames of --size bytes each, binary):

* parse, one chunk: N masked client frames fed as one large chunk, parsed and unmasked.
* parse, 4 KiB chunks: the same stream fed in 4 KiB pieces, as a socket would deliver it.
* build: N unmasked server frames.
* parse, 64 B frames: N small masked frames in one chunk (chat-sized messages; per-frame overhead).

Each case runs --repeat times and the best time counts. Prints a table of frames per second and the
ratio ours / wsproto (above 1 means we are faster), and writes the numbers as JSON.

    .venv/bin/python bench/bench_frames.py [--n 20000] [--size 1024] [--json bench/results/frames.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wsproto  # noqa: E402
from wsproto.frame_protocol import FrameProtocol  # noqa: E402

from gateway.protocol.frames import OP_BINARY, FrameDecoder, encode_frame  # noqa: E402

CHUNK = 4096


def client_stream(n: int, size: int) -> bytes:
    """N masked client frames with random payloads and masks, built by wsproto (independent)."""
    client = FrameProtocol(client=True, extensions=[])
    return b"".join(bytes(client.send_data(os.urandom(size))) for _ in range(n))


def chunks_of(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def ours_parse(chunks: list[bytes], n: int) -> Callable[[], None]:
    def run() -> None:
        decoder = FrameDecoder(max_message_size=1 << 30)
        count = 0
        for chunk in chunks:
            count += len(decoder.feed(chunk))
        assert count == n, count

    return run


def wsproto_parse(chunks: list[bytes], n: int) -> Callable[[], None]:
    def run() -> None:
        protocol = FrameProtocol(client=False, extensions=[])
        count = 0
        for chunk in chunks:
            protocol.receive_bytes(chunk)
            for frame in protocol.received_frames():
                if frame.message_finished:
                    count += 1
        assert count == n, count

    return run


def ours_build(payload: bytes, n: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(n):
            encode_frame(OP_BINARY, payload)

    return run


def wsproto_build(payload: bytes, n: int) -> Callable[[], None]:
    def run() -> None:
        protocol = FrameProtocol(client=False, extensions=[])
        for _ in range(n):
            protocol.send_data(payload)

    return run


def best_time(fn: Callable[[], None], repeat: int) -> float:
    fn()  # warm up (and check the count once)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20000, help="frames per case (default 20000)")
    parser.add_argument("--size", type=int, default=1024, help="payload bytes (default 1024)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per case, best counts")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bench" / "results" / "frames.json",
        help="write results here (default bench/results/frames.json)",
    )
    args = parser.parse_args(argv)
    n, size = args.n, args.size

    stream = client_stream(n, size)
    small = client_stream(n, 64)
    payload = os.urandom(size)
    # Sanity: both decoders agree on the frames before anything is timed.
    assert FrameDecoder(max_message_size=1 << 30).feed(stream[: 3 * (size + 14)])[0][0] == OP_BINARY

    cases = [
        (f"parse {size} B, one chunk", ours_parse([stream], n), wsproto_parse([stream], n)),
        (
            f"parse {size} B, {CHUNK // 1024} KiB chunks",
            ours_parse(chunks_of(stream, CHUNK), n),
            wsproto_parse(chunks_of(stream, CHUNK), n),
        ),
        (f"build {size} B server frames", ours_build(payload, n), wsproto_build(payload, n)),
        ("parse 64 B, one chunk", ours_parse([small], n), wsproto_parse([small], n)),
    ]

    results = []
    header = f"{'case':<28} {'ours ops/s':>13} {'wsproto ops/s':>14} {'ours/wsproto':>13}"
    print(f"N={n} frames, {platform.python_implementation()} {platform.python_version()}, "
          f"wsproto {wsproto.__version__}, best of {args.repeat}")
    print(header)
    print("-" * len(header))
    for name, ours, theirs in cases:
        ours_rate = n / best_time(ours, args.repeat)
        theirs_rate = n / best_time(theirs, args.repeat)
        ratio = ours_rate / theirs_rate
        print(f"{name:<28} {ours_rate:>13,.0f} {theirs_rate:>14,.0f} {ratio:>12.2f}x")
        results.append(
            {
                "case": name,
                "ours_ops_per_s": round(ours_rate, 1),
                "wsproto_ops_per_s": round(theirs_rate, 1),
                "ratio_ours_over_wsproto": round(ratio, 3),
            }
        )

    args.json.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "frames",
        "n": n,
        "payload_size": size,
        "chunk_size": CHUNK,
        "repeat": args.repeat,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "wsproto": wsproto.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": results,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
