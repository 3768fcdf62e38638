"""Micro-benchmark: Kefu's two frame codecs against each other and against wsproto's FrameProtocol.

Columns: the pure-Python twin (gateway.protocol._frames_py), the native twin (gateway._frames_c,
built from native/frames.pyx; "n/a" when it is not built) and wsproto, then the ratios native / pure
and native / wsproto (above 1 means native is faster). KEFU_PUREPYTHON does not matter here: both
twins are imported directly.

Cases (N frames of --size bytes each, binary):

* parse, one chunk: N masked client frames fed as one large chunk, parsed and unmasked. All N
  payloads (20 MB by default) are alive at once, and glibc hands that memory back to the kernel
  after each run, so every run pays thousands of page faults: for the native twin this case
  measures the allocator more than the codec (compare with MALLOC_TOP_PAD_=268435456).
* parse, 4 KiB chunks: the same stream fed in 4 KiB pieces, as a socket would deliver it.
* build: N unmasked server frames.
* parse, 64 B frames: N small masked frames in one chunk (chat-sized messages; per-frame overhead).

Each case runs --repeat times and the best time counts. Prints a table of frames per second and
writes the numbers as JSON.

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
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import wsproto  # noqa: E402
from wsproto.frame_protocol import FrameProtocol  # noqa: E402

from gateway import _native  # noqa: E402
from gateway.protocol import _frames_py  # noqa: E402

CODECS: dict[str, ModuleType | None] = {
    "pure": _frames_py,
    "native": _native.load("frames", honour_env=False),
}

CHUNK = 4096


def client_stream(n: int, size: int) -> bytes:
    """N masked client frames with random payloads and masks, built by wsproto (independent)."""
    client = FrameProtocol(client=True, extensions=[])
    return b"".join(bytes(client.send_data(os.urandom(size))) for _ in range(n))


def chunks_of(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def ours_parse(codec: ModuleType, chunks: list[bytes], n: int) -> Callable[[], None]:
    FrameDecoder = codec.FrameDecoder

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


def ours_build(codec: ModuleType, payload: bytes, n: int) -> Callable[[], None]:
    encode_frame, OP_BINARY = codec.encode_frame, codec.OP_BINARY

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


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a / b


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
    codecs = {name: codec for name, codec in CODECS.items() if codec is not None}

    stream = client_stream(n, size)
    small = client_stream(n, 64)
    payload = os.urandom(size)
    # Sanity: every codec decodes the same first frames before anything is timed.
    first = [
        codec.FrameDecoder(max_message_size=1 << 30).feed(stream[: 3 * (size + 14)])
        for codec in codecs.values()
    ]
    assert first[0] and first[0][0][0] == 2 and all(got == first[0] for got in first), "codecs disagree"

    # name -> (codec -> runner, wsproto runner)
    cases: list[tuple[str, Callable[[ModuleType], Callable[[], None]], Callable[[], None]]] = [
        (
            f"parse {size} B, one chunk",
            lambda codec: ours_parse(codec, [stream], n),
            wsproto_parse([stream], n),
        ),
        (
            f"parse {size} B, {CHUNK // 1024} KiB chunks",
            lambda codec: ours_parse(codec, chunks_of(stream, CHUNK), n),
            wsproto_parse(chunks_of(stream, CHUNK), n),
        ),
        (
            f"build {size} B server frames",
            lambda codec: ours_build(codec, payload, n),
            wsproto_build(payload, n),
        ),
        ("parse 64 B, one chunk", lambda codec: ours_parse(codec, [small], n), wsproto_parse([small], n)),
    ]

    def rate(x: float | None) -> str:
        return "n/a" if x is None else f"{x:,.0f}"

    def times(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f}x"

    results = []
    header = (
        f"{'case':<28} {'pure ops/s':>12} {'native ops/s':>13} {'wsproto ops/s':>14}"
        f" {'native/pure':>12} {'native/wsproto':>15}"
    )
    print(f"N={n} frames, {platform.python_implementation()} {platform.python_version()}, "
          f"wsproto {wsproto.__version__}, best of {args.repeat}")
    if CODECS["native"] is None:
        print("native codec not built (gateway._frames_c missing): pip install -e . builds it")
    print(header)
    print("-" * len(header))
    for name, ours, theirs in cases:
        rates: dict[str, float | None] = {
            codec_name: (n / best_time(ours(codec), args.repeat) if codec is not None else None)
            for codec_name, codec in CODECS.items()
        }
        rates["wsproto"] = n / best_time(theirs, args.repeat)
        native_over_pure = ratio(rates["native"], rates["pure"])
        native_over_wsproto = ratio(rates["native"], rates["wsproto"])
        print(
            f"{name:<28} {rate(rates['pure']):>12} {rate(rates['native']):>13}"
            f" {rate(rates['wsproto']):>14} {times(native_over_pure):>12}"
            f" {times(native_over_wsproto):>15}"
        )
        results.append(
            {
                "case": name,
                "pure_ops_per_s": None if rates["pure"] is None else round(rates["pure"], 1),
                "native_ops_per_s": None if rates["native"] is None else round(rates["native"], 1),
                "wsproto_ops_per_s": round(rates["wsproto"], 1),
                "ratio_native_over_pure": None if native_over_pure is None else round(native_over_pure, 3),
                "ratio_native_over_wsproto": (
                    None if native_over_wsproto is None else round(native_over_wsproto, 3)
                ),
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
        "native_built": CODECS["native"] is not None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": results,
    }
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
