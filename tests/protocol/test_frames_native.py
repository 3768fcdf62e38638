"""The native frame codec (gateway._frames_c, from native/frames.pyx) against its pure-Python twin.

* The extension is there when the build says it must be (``KEFU_EXPECT_NATIVE=1``), and it
  exposes the same API, constants and error class as the pure twin.
* Differential properties: the same arbitrary byte streams (random bytes, valid masked message
  streams, mostly-valid frames, streams with one byte flipped), split at arbitrary and different
  points, give identical messages, identical ``buffered`` counts and identical errors (code and
  reason) from both twins; the encoders agree on arbitrary inputs, errors included.
* The UTF-8 checker of the native twin agrees with CPython's decoder on every 1- and 2-byte
  sequence and on the 3- and 4-byte sequences at every boundary of the UTF-8 grammar.
* The switch in gateway.protocol.frames: ``KEFU_PUREPYTHON=1`` selects the pure twin, a built
  extension is used otherwise, and a broken extension raises instead of falling back.

tests/protocol/test_frames.py runs the behavioural suite against each twin separately.
"""

from __future__ import annotations

import inspect
import random
from types import ModuleType
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import _native
from gateway.protocol import _frames_py, frames
from gateway.protocol._frame_errors import FrameError
from gateway.protocol.frames import OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT

# The frame builder and the stream strategies of the behavioural suite.
from ..twins import EXPECT_NATIVE, check_built_when_expected, native_twin, run_python
from .test_frames import corrupted, frameish_streams, mask_frame, split_at, valid_streams

PY = _frames_py
ASCII = bytes(0x20 + i % 95 for i in range(256))  # translate table: any byte to printable ASCII

# Budgets that keep this file at ~20 s; raise max_examples (or use a hypothesis profile) to dig.
differential = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def c() -> ModuleType:
    return native_twin("frames")


# ------------------------------------------------------------------------------ the build itself


def test_native_extension_is_built_when_expected() -> None:
    check_built_when_expected("frames", frames.IMPLEMENTATION)


def test_same_public_api(c: ModuleType) -> None:
    assert sorted(c.__all__) == sorted(PY.__all__)
    for name in PY.__all__:
        assert hasattr(c, name), name
    for name in ["OP_CONT", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG"]:
        assert getattr(c, name) == getattr(PY, name), name
        assert type(getattr(c, name)) is int
    # One error class for both twins, defined once.
    assert c.FrameError is PY.FrameError is FrameError is frames.FrameError
    for name in ["encode_frame", "encode_close", "parse_close_payload"]:
        ours, theirs = inspect.signature(getattr(c, name)), inspect.signature(getattr(PY, name))
        assert [(p.name, p.default, p.kind) for p in ours.parameters.values()] == [
            (p.name, p.default, p.kind) for p in theirs.parameters.values()
        ], name
    feed_c = inspect.signature(c.FrameDecoder.feed).parameters
    feed_py = inspect.signature(PY.FrameDecoder.feed).parameters
    assert list(feed_c) == list(feed_py)
    # The constructor of a cdef class has no introspectable signature: call it every way.
    for cls in (c.FrameDecoder, PY.FrameDecoder):
        cls()
        cls(10, False)
        cls(max_message_size=10, require_mask=False)
        assert cls().buffered == 0


def test_switch_exports_the_selected_twin() -> None:
    expected = PY if frames.IMPLEMENTATION == "python" else _native.load("frames")
    assert expected is not None
    for name in PY.__all__:
        assert getattr(frames, name) is getattr(expected, name), name
    assert frames.IMPLEMENTATION in ("native", "python")


# ------------------------------------------------------------------------------ differential


def outcome_of(fn: Callable[[], Any]) -> tuple[str, Any]:
    """("ok", result), ("frame-error", (code, reason)), ("value-error", message) or, for any
    other exception (misuse: a TypeError whose text the interpreter words), ("raise", type)."""
    try:
        return "ok", fn()
    except FrameError as exc:
        return "frame-error", (exc.code, exc.reason)
    except ValueError as exc:  # ours: the twins word it the same way
        return "value-error", (type(exc), str(exc))
    except Exception as exc:
        return "raise", type(exc)


def wrap(chunk: bytes, how: int) -> object:
    """The same bytes as bytes, bytearray, memoryview or a non-contiguous memoryview."""
    if how == 1:
        return bytearray(chunk)
    if how == 2:
        return memoryview(chunk)
    if how == 3:
        spread = bytearray(2 * len(chunk))
        spread[0::2] = chunk
        return memoryview(spread)[0::2]
    return chunk


def trace(
    codec: ModuleType, chunks: list[bytes], wrappers: list[int], **kwargs: Any
) -> list[tuple[str, Any, int]]:
    """What each feed() returned or raised, and ``buffered`` after it; after an error, one more
    feed() must raise the very same error object."""
    decoder = codec.FrameDecoder(**kwargs)
    steps: list[tuple[str, Any, int]] = []
    for i, chunk in enumerate(chunks):
        try:
            got = decoder.feed(wrap(chunk, wrappers[i % len(wrappers)]))
            steps.append(("ok", got, (decoder.buffered, decoder.at_rest)))
        except FrameError as first:
            steps.append(("error", (first.code, first.reason), (decoder.buffered, decoder.at_rest)))
            with pytest.raises(FrameError) as again:
                decoder.feed(b"\x82\x80\x00\x00\x00\x00")
            assert again.value is first
            break
    return steps


def final(steps: list[tuple[str, Any, int]]) -> tuple[object, ...]:
    """Everything delivered, then the error (if any) and what was left buffered."""
    delivered = [message for kind, got, _ in steps if kind == "ok" for message in got]
    kind, got, buffered = steps[-1]
    return (delivered, got if kind == "error" else None, buffered)


streams = st.one_of(
    st.binary(max_size=300),
    valid_streams(),
    frameish_streams(),
    corrupted(valid_streams()),
    corrupted(frameish_streams()),
)
# Limits around the sizes the streams hold (most frames are short), and the extremes.
max_sizes = st.one_of(
    st.sampled_from([1 << 20, 64, 0, 125, 126, (1 << 63) - 1]),
    st.integers(0, 130),
    st.integers(0, 70_000),
)


@given(
    streams,
    st.lists(st.integers(0, 1 << 16), max_size=8),
    st.lists(st.integers(0, 1 << 16), max_size=8),
    st.lists(st.integers(0, 3), min_size=1, max_size=4),
    st.booleans(),
    max_sizes,
    st.one_of(st.just(1024), st.integers(1, 6)),
)
@differential
def test_twins_agree_on_arbitrary_streams(
    c: ModuleType,
    stream: bytes,
    points: list[int],
    other_points: list[int],
    wrappers: list[int],
    require_mask: bool,
    max_size: int,
    max_fragments: int,
) -> None:
    kwargs = {"require_mask": require_mask, "max_message_size": max_size, "max_fragments": max_fragments}
    chunks = split_at(stream, points)
    # Same split: every single feed() returns and raises the same, with the same buffered count.
    assert trace(c, chunks, wrappers, **kwargs) == trace(PY, chunks, [0], **kwargs)
    # Different splits (and byte by byte): the same messages, error and leftover in the end. On
    # an error the messages of the failing call are dropped, so only the error must agree then.
    whole = final(trace(PY, [stream], [0], **kwargs))
    splits = [split_at(stream, other_points)]
    if len(stream) <= 4096:  # byte by byte too, when that stays cheap
        splits.append([stream[i : i + 1] for i in range(len(stream))] or [b""])
    for split in splits:
        got = final(trace(c, split, wrappers, **kwargs))
        if whole[1] is None:
            assert got == whole
        else:
            assert got[1:] == whole[1:]


@given(valid_streams(), st.lists(st.integers(0, 1 << 20), max_size=12))
@differential
def test_twins_agree_on_valid_streams_any_split(
    c: ModuleType, stream: bytes, points: list[int]
) -> None:
    chunks = split_at(stream, points)
    ours = trace(c, chunks, [0])
    assert ours == trace(PY, chunks, [0])
    assert ours[-1][0] == "ok" and ours[-1][2] == (0, True)  # a whole stream leaves the decoder at rest


@given(valid_streams(), st.data())
@differential
def test_twins_agree_at_the_size_limit(c: ModuleType, stream: bytes, data: st.DataObject) -> None:
    # Put the limit right at (or one off) the size of one of the stream's messages or frames.
    messages = PY.FrameDecoder(max_message_size=(1 << 63) - 1).feed(stream)
    sizes = [len(payload) for _, payload in messages] or [0]
    limit = max(0, data.draw(st.sampled_from(sizes)) + data.draw(st.sampled_from([-1, 0, 1])))
    chunks = split_at(stream, data.draw(st.lists(st.integers(0, 1 << 20), max_size=4)))
    assert trace(c, chunks, [0], max_message_size=limit) == trace(
        PY, chunks, [0], max_message_size=limit
    )


def test_twins_agree_on_huge_announced_lengths(c: ModuleType) -> None:
    # Lengths near 2**63 with the largest limit: no overflow in the native size arithmetic.
    for length in [(1 << 63) - 1, (1 << 63) - 14, 1 << 62, 70_000]:
        header = mask_frame(OP_BINARY, b"", length=length)
        for codec in (c, PY):
            decoder = codec.FrameDecoder(max_message_size=(1 << 63) - 1)
            assert decoder.feed(header) == []
            assert decoder.feed(b"x" * 1000) == []
            assert decoder.buffered == len(header) + 1000
    # A fragment's length counts towards the message: the second one no longer fits.
    stream = mask_frame(OP_BINARY, b"abc", fin=False)
    stream += mask_frame(OP_CONT, b"", length=(1 << 63) - 3)
    for codec in (c, PY):
        with pytest.raises(FrameError) as info:
            codec.FrameDecoder(max_message_size=(1 << 63) - 1).feed(stream)
        assert (info.value.code, info.value.reason) == (1009, "message too big")


def test_large_messages_in_small_chunks_release_memory(c: ModuleType) -> None:
    payload = random.Random(1).randbytes(300_000)
    stream = mask_frame(OP_BINARY, payload, fin=False) + mask_frame(OP_CONT, b"end")
    stream += mask_frame(OP_TEXT, "好".encode() * 10)
    for codec in (c, PY):
        decoder = codec.FrameDecoder()
        got = []
        for i in range(0, len(stream), 4096):
            got.extend(decoder.feed(stream[i : i + 4096]))
            assert decoder.buffered <= 300_000 + 4096
        assert got == [(OP_BINARY, payload + b"end"), (OP_TEXT, "好".encode() * 10)]
        assert decoder.buffered == 0


@pytest.mark.parametrize("big", [70_000, 100_000, 300_000])
@pytest.mark.parametrize("rest", [1, 3000, 5000, 20_000])
def test_partial_frame_kept_when_buffer_shrinks(c: ModuleType, big: int, rest: int) -> None:
    # A big frame fills the native buffer well past 64 KiB; the chunk that completes it also
    # carries `rest` bytes of the next frame, which must survive the buffer giving memory back.
    rng = random.Random(big + rest)
    first, second = rng.randbytes(big), rng.randbytes(30_000)
    stream = mask_frame(OP_BINARY, first) + mask_frame(OP_BINARY, second)
    end_of_first = len(stream) - len(second) - 8
    cuts = [big // 2, end_of_first + rest, len(stream)]
    for codec in (c, PY):
        decoder = codec.FrameDecoder()
        got = []
        start = 0
        for cut in cuts:
            got.extend(decoder.feed(stream[start:cut]))
            start = cut
        assert got == [(OP_BINARY, first), (OP_BINARY, second)]


def test_twins_agree_on_misuse(c: ModuleType) -> None:
    cases: list[Callable[[ModuleType], object]] = [
        lambda m: m.FrameDecoder().feed("text"),
        lambda m: m.FrameDecoder().feed(None),
        lambda m: m.FrameDecoder().feed(3),  # bytes(3): three zero bytes, a partial frame
        lambda m: m.FrameDecoder(require_mask=False).feed([0x82, 0x01, 0x41]),
        lambda m: m.FrameDecoder(max_message_size=-1),
        lambda m: m.FrameDecoder(max_message_size=1 << 63),
        lambda m: m.FrameDecoder(max_message_size=True).feed(mask_frame(OP_BINARY, b"ab")),
        lambda m: m.FrameDecoder(max_fragments=0),
        lambda m: m.FrameDecoder(max_fragments=1 << 31),
        lambda m: m.FrameDecoder().set_limits(10, 0),
        lambda m: m.FrameDecoder().set_limits(-1, 5),
        lambda m: m.encode_frame(OP_BINARY, "text"),
        lambda m: m.encode_frame(99, "text"),
        lambda m: m.encode_frame(OP_BINARY, None),
        lambda m: m.encode_frame(True, b"x"),
        lambda m: m.encode_frame(None, b"x"),
        lambda m: m.encode_frame(1 << 80, b"x"),
        lambda m: m.encode_close("1000"),
        lambda m: m.encode_close(1000, b"bytes"),
        lambda m: m.encode_close(1000, "\ud800"),
        lambda m: m.encode_close(True),
        lambda m: m.parse_close_payload("ab"),
        lambda m: m.parse_close_payload(None),
        lambda m: m.parse_close_payload(""),
    ]
    for case in cases:
        assert outcome_of(lambda: case(c)) == outcome_of(lambda: case(PY))


# Payloads for the encoders: small, around the length-encoding thresholds, as any bytes-like type.
@st.composite
def payloads(draw: st.DrawFn) -> object:
    size = draw(
        st.one_of(st.integers(0, 300), st.sampled_from([125, 126, 127, 65535, 65536, 70_000]))
    )
    data = random.Random(draw(st.integers(0, 1000))).randbytes(size)
    return wrap(data, draw(st.integers(0, 2)))


opcodes = st.one_of(st.integers(-2, 20), st.integers(), st.booleans())


@given(opcodes, payloads())
@differential
def test_twins_agree_on_encode_frame(c: ModuleType, opcode: int, payload: object) -> None:
    ours = outcome_of(lambda: c.encode_frame(opcode, payload))
    assert ours == outcome_of(lambda: PY.encode_frame(opcode, payload))
    if ours[0] == "ok":
        assert type(ours[1]) is bytes


close_codes = st.one_of(
    st.integers(-5, 70_000),
    st.sampled_from([1000, 1004, 1005, 1006, 1014, 1015, 2999, 3000, 4999, 5000]),
    st.integers(),
)
reasons = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=60).map(lambda s: s * 3),
    st.text(max_size=20).map(lambda s: s + "\ud800"),  # a lone surrogate cannot be encoded
)


@given(close_codes, reasons)
@differential
def test_twins_agree_on_encode_close(c: ModuleType, code: int, reason: str) -> None:
    assert outcome_of(lambda: c.encode_close(code, reason)) == outcome_of(
        lambda: PY.encode_close(code, reason)
    )


close_payloads = st.one_of(
    st.binary(max_size=130),
    st.tuples(close_codes.filter(lambda n: 0 <= n < 65536), st.text(max_size=40)).map(
        lambda c: c[0].to_bytes(2, "big") + c[1].encode()
    ),
    st.tuples(st.sampled_from([1000, 3000, 4999]), st.binary(max_size=20)).map(
        lambda c: c[0].to_bytes(2, "big") + c[1]
    ),
)


@given(close_payloads, st.integers(0, 2))
@differential
def test_twins_agree_on_parse_close_payload(c: ModuleType, payload: bytes, how: int) -> None:
    assert outcome_of(lambda: c.parse_close_payload(wrap(payload, how))) == outcome_of(
        lambda: PY.parse_close_payload(wrap(payload, how))
    )


# ------------------------------------------------------------------------------ UTF-8


def utf8_candidates() -> list[bytes]:
    """Every 1- and 2-byte sequence, and the 3- and 4-byte sequences whose bytes sit on either
    side of every boundary of the UTF-8 grammar (lead ranges, narrowed second bytes, continuation
    range)."""
    edges = [0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xFF]
    out = [bytes([a]) for a in range(256)]
    out += [bytes([a, b]) for a in range(256) for b in range(256)]
    thirds = edges[:4] + edges[7:]
    out += [bytes([a, b, d]) for a in range(0xE0, 0x100) for b in range(256) for d in thirds]
    out += [
        bytes([a, b, d, e])
        for a in range(0xF0, 0xF8)
        for b in range(256)
        for d in (0x80, 0xBF, 0xC0)
        for e in (0x7F, 0x80, 0xBF, 0xC0)
    ]
    return out


def test_utf8_check_agrees_with_cpython(c: ModuleType) -> None:
    for i, seq in enumerate(utf8_candidates()):
        try:
            seq.decode("utf-8")
            valid = True
        except UnicodeDecodeError:
            valid = False
        # Between 0-9 ASCII bytes on either side, so that the sequence starts at every offset of
        # the checker's 8-byte ASCII fast path, and is followed by ASCII or not.
        text = b"abcdefghi"[: i % 10] + seq + b"jklmnopqr"[: i // 10 % 10]
        frame = bytes([0x81, len(text)]) + text
        try:
            got = c.FrameDecoder(require_mask=False).feed(frame) == [(OP_TEXT, text)]
        except FrameError as exc:
            assert (exc.code, exc.reason) == (1007, "text message is not valid UTF-8")
            got = False
        assert got is valid, seq


@given(
    st.lists(
        st.one_of(
            st.binary(max_size=12),
            st.text(max_size=12).map(str.encode),
            st.binary(min_size=1, max_size=16).map(lambda b: b.translate(ASCII)),
            st.sampled_from([b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\xe0\x80\xaf"]),
        ),
        max_size=12,
    )
)
@differential
def test_utf8_text_and_close_reasons_agree(c: ModuleType, pieces: list[bytes]) -> None:
    text = b"".join(pieces)[:125]
    frame = mask_frame(OP_TEXT, text)
    assert outcome_of(lambda: c.FrameDecoder().feed(frame)) == outcome_of(
        lambda: PY.FrameDecoder().feed(frame)
    )
    close = b"\x03\xe8" + text[:123]
    assert outcome_of(lambda: c.parse_close_payload(close)) == outcome_of(
        lambda: PY.parse_close_payload(close)
    )
    framed_close = mask_frame(OP_CLOSE, close)
    assert outcome_of(lambda: c.FrameDecoder().feed(framed_close)) == outcome_of(
        lambda: PY.FrameDecoder().feed(framed_close)
    )


# ------------------------------------------------------------------------------ the switch


PRINT_IMPLEMENTATION = "from gateway.protocol import frames; print(frames.IMPLEMENTATION)"


def test_pure_python_env_selects_the_python_twin() -> None:
    done = run_python(
        PRINT_IMPLEMENTATION + "; print(frames.FrameDecoder.__module__)", KEFU_PUREPYTHON="1"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["python", "gateway.protocol._frames_py"]


def test_native_twin_selected_when_built() -> None:
    built = _native.load("frames", honour_env=False) is not None
    for env in ({}, {"KEFU_PUREPYTHON": "0"}):
        done = run_python(PRINT_IMPLEMENTATION, **env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == ("native" if built else "python")
    if EXPECT_NATIVE:
        assert built


# A meta-path finder standing in for gateway._frames_c: raises the given exception on import.
FAKE_EXTENSION = """
import sys
class Finder:
    def find_spec(self, name, path=None, target=None):
        if name == "gateway._frames_c":
            raise {exc}
sys.meta_path.insert(0, Finder())
"""


def test_missing_extension_falls_back_to_python() -> None:
    code = FAKE_EXTENSION.format(exc="ModuleNotFoundError('absent', name=name)")
    done = run_python(code + PRINT_IMPLEMENTATION)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "python"


@pytest.mark.parametrize(
    "exc",
    [
        "ImportError('undefined symbol: __pyx_broken')",
        # A module the extension itself imports is missing: broken too, not "not built".
        "ModuleNotFoundError('No module named x', name='gateway.protocol._gone')",
    ],
)
def test_broken_extension_is_not_hidden(exc: str) -> None:
    done = run_python(FAKE_EXTENSION.format(exc=exc) + PRINT_IMPLEMENTATION)
    assert done.returncode != 0
    assert "ImportError" in done.stderr or "ModuleNotFoundError" in done.stderr, done.stderr
    assert done.stdout == ""
