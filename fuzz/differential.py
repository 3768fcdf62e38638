"""Coverage-guided differential fuzzing of the native twins against their pure-Python twins.

Each target feeds the same fuzzer-made input to ``gateway._<stem>_c`` and to the pure twin and
fails (raises, so atheris reports a crash and saves the input) on any difference in results or
errors. Run a long session with (see docs/benchmarks.md, "Fuzzing"):

    .venv/bin/python -m fuzz.differential frames -atheris_runs=2000000
    .venv/bin/python -m fuzz.differential envelope -atheris_runs=2000000

The test suite runs each target for a few thousand inputs (tests/test_fuzz.py).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import atheris

with atheris.instrument_imports():
    from gateway import _native
    from gateway.protocol import _envelope_py, _frames_py
    from gateway.protocol._frame_errors import FrameError
    from gateway.protocol.errors import RequestError


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except (FrameError, RequestError) as exc:
        return "error", (type(exc).__name__, getattr(exc, "code", None), getattr(exc, "reason", None) or getattr(exc, "message", None))
    except Exception as exc:  # noqa: BLE001 - a TypeError/ValueError must match too
        return "error", (type(exc).__name__, str(exc))


def frames_target(native: Any) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        max_size = fdp.PickValueInList([0, 1, 125, 126, 200, 65_536, 1 << 20])
        max_fragments = fdp.PickValueInList([1, 2, 3, 8, 1024])
        require_mask = fdp.ConsumeBool()
        cuts = sorted(fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 6)))
        stream = fdp.ConsumeBytes(fdp.remaining_bytes())
        chunks, start = [], 0
        for cut in cuts:
            cut = min(cut, len(stream))
            chunks.append(stream[start:cut])
            start = max(start, cut)
        chunks.append(stream[start:])
        traces = []
        for codec in (native, _frames_py):
            decoder = codec.FrameDecoder(max_size, require_mask, max_fragments)
            trace = []
            for chunk in chunks:
                trace.append((outcome(lambda: decoder.feed(chunk)), decoder.buffered, decoder.at_rest))
            traces.append(trace)
        if traces[0] != traces[1]:
            raise AssertionError(f"frame twins differ:\nnative {traces[0]!r}\npython {traces[1]!r}")

    return run


def envelope_target(native: Any) -> Callable[[bytes], None]:
    def run(data: bytes) -> None:
        got, want = outcome(lambda: native.decode_request(data)), outcome(lambda: _envelope_py.decode_request(data))
        if got != want:
            raise AssertionError(f"envelope twins differ on {data!r}:\nnative {got!r}\npython {want!r}")

    return run


TARGETS = {"frames": frames_target, "envelope": envelope_target}


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        raise SystemExit(f"usage: python -m fuzz.differential {{{','.join(TARGETS)}}} [libFuzzer flags]")
    stem = argv[1]
    native = _native.load(stem, honour_env=False)
    if native is None:
        raise SystemExit(f"gateway._{stem}_c is not built: nothing to hold the pure twin against")
    flags = argv[2:]
    if not any(f.startswith("-max_len=") for f in flags):
        flags.append("-max_len=4096")  # frames need room: libFuzzer's default starts at a few bytes
    atheris.Setup([argv[0], *flags], TARGETS[stem](native))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
