"""Tests for the sans-IO WebSocket frame codec (gateway.protocol.frames), run against both twins.

Every test takes the ``codec`` fixture and runs once with each twin: the pure-Python one
(``py-codec``, gateway.protocol._frames_py) and the Cython one (``c-codec``, gateway._frames_c,
built from native/frames.pyx), imported directly, so ``KEFU_PUREPYTHON`` (which only steers the
switch in gateway.protocol.frames) does not matter here. The c-codec tests are skipped only when the
extension is not built and ``KEFU_EXPECT_NATIVE`` is not set; with ``KEFU_EXPECT_NATIVE=1`` a
missing extension is an error. Everything here goes through the public API only. wsproto serves as
the independent reference implementation of RFC 6455 framing; test_frames_native.py compares the
twins with each other.
"""

from __future__ import annotations

import itertools
import operator
import os
import random
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from gateway import _native
from gateway.protocol import _frames_py

# The constants and the error class are shared by both twins (test_frames_native.py checks that).
from gateway.protocol.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameError,
)

Message = tuple[int, bytes]

MASK = b"\x37\xfa\x21\x3d"
LETTERS = bytes(0x61 + i % 26 for i in range(256))  # translate table: any byte to a-z

# Modest budgets keep the file at a few seconds; run with --hypothesis-seed / a profile for more.
fuzz_settings = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
fuzz_settings_more = settings(fuzz_settings, max_examples=200)


# --------------------------------------------------------------------------------------- codecs


def native_codec() -> ModuleType:
    """gateway._frames_c, whatever KEFU_PUREPYTHON says.

    Skips when the extension is not built, or fails when KEFU_EXPECT_NATIVE=1. A built but broken
    extension raises ImportError: an error, never a skip.
    """
    native = _native.load("frames", honour_env=False)
    if native is None:
        if os.environ.get("KEFU_EXPECT_NATIVE") == "1":
            pytest.fail("KEFU_EXPECT_NATIVE=1 but gateway._frames_c is not built")
        pytest.skip("gateway._frames_c is not built (`pip install -e .` builds it)")
    return native


# Module scope: the codec is a stateless module, and hypothesis accepts non-function fixtures.
@pytest.fixture(scope="module", params=["py-codec", "c-codec"])
def codec(request: pytest.FixtureRequest) -> ModuleType:
    """One twin of the codec; every test of this file runs once with each."""
    if request.param == "py-codec":
        return _frames_py
    return native_codec()


# --------------------------------------------------------------------------------------- helpers


def mask_frame(
    opcode: int,
    payload: bytes,
    *,
    mask: bytes | None = MASK,
    fin: bool = True,
    rsv: int = 0,
    length_bytes: int | None = None,
    length: int | None = None,
) -> bytes:
    """Build one client frame by hand, independently of the code under test.

    Args:
        mask: 4-byte masking key, or None for an unmasked frame.
        rsv: the three RSV bits as an int 0-7.
        length_bytes: force the length encoding: 0 (7-bit), 2 (16-bit) or 8 (64-bit); None picks
            the minimal one.
        length: announce this payload length instead of len(payload) (to lie, or to send a header
            alone).
    """
    n = len(payload) if length is None else length
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 65536 else 8
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask is not None else 0
    if length_bytes == 0:
        header = bytes([b0, mask_bit | n])
    elif length_bytes == 2:
        header = bytes([b0, mask_bit | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([b0, mask_bit | 127]) + n.to_bytes(8, "big")
    if mask is None:
        return header + payload
    return header + mask + bytes(map(operator.xor, payload, itertools.cycle(mask)))


def feed_all(codec: ModuleType, chunks: list[bytes], **kwargs: int) -> list[Message]:
    decoder = codec.FrameDecoder(**kwargs)
    out: list[Message] = []
    for chunk in chunks:
        out.extend(decoder.feed(chunk))
    return out


def error_code(codec: ModuleType, stream: bytes, **kwargs: int) -> int:
    with pytest.raises(FrameError) as info:
        codec.FrameDecoder(**kwargs).feed(stream)
    return info.value.code


def split_at(stream: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(stream) + 1) for p in points})
    bounds = [0, *cuts, len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:])]


def outcome(
    codec: ModuleType, chunks: list[bytes], **kwargs: int
) -> tuple[tuple[str, object], list[Message], int]:
    """Feed chunks; return (result, messages delivered, buffered at the end).

    result is ("ok", messages) or ("error", (code, reason)).
    """
    decoder = codec.FrameDecoder(**kwargs)
    out: list[Message] = []
    for chunk in chunks:
        try:
            out.extend(decoder.feed(chunk))
        except FrameError as exc:
            return ("error", (exc.code, exc.reason)), out, decoder.buffered
    return ("ok", out), out, decoder.buffered


# ----------------------------------------------------------------------------- lengths and masks


@pytest.mark.parametrize("n", [0, 1, 125, 126, 127, 1000, 1024, 4096, 65535, 65536, 70000])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_single_frame_lengths(codec: ModuleType, opcode: int, n: int) -> None:
    payload = random.Random(n).randbytes(n).translate(LETTERS)
    frame = mask_frame(opcode, payload)
    expected_header = 6 if n < 126 else 8 if n < 65536 else 14
    assert len(frame) == expected_header + n
    assert codec.FrameDecoder().feed(frame) == [(opcode, payload)]


def test_at_rest_only_between_messages(codec: ModuleType) -> None:
    """``at_rest``: no partial frame and no unfinished message, even an empty one (the gateway
    drops a decoder at rest when it parks an idle connection)."""
    decoder = codec.FrameDecoder()
    assert decoder.at_rest
    whole = mask_frame(OP_BINARY, b"abc")
    decoder.feed(whole[:3])
    assert not decoder.at_rest and decoder.buffered == 3
    assert decoder.feed(whole[3:]) == [(OP_BINARY, b"abc")]
    assert decoder.at_rest
    decoder.feed(mask_frame(OP_BINARY, b"", fin=False))  # an empty first fragment holds no bytes
    assert decoder.buffered == 0 and not decoder.at_rest
    assert decoder.feed(mask_frame(OP_CONT, b"x")) == [(OP_BINARY, b"x")]
    assert decoder.at_rest


@pytest.mark.parametrize("length_bytes", [2, 8])
def test_non_minimal_length_encodings_accepted(codec: ModuleType, length_bytes: int) -> None:
    frame = mask_frame(OP_BINARY, b"tiny", length_bytes=length_bytes)
    assert codec.FrameDecoder().feed(frame) == [(OP_BINARY, b"tiny")]


def test_control_frame_with_extended_length_rejected(codec: ModuleType) -> None:
    # A control frame's 7-bit length field may not exceed 125, even if the 16-bit length is small.
    frame = mask_frame(OP_PING, b"x", length_bytes=2)
    assert error_code(codec, frame) == 1002


def test_unmask_with_every_mask_byte_and_offset(codec: ModuleType) -> None:
    rng = random.Random(6455)
    for n in [1, 2, 3, 4, 5, 7, 8, 1023, 1024, 1025, 5000]:
        payload = rng.randbytes(n)
        mask = rng.randbytes(4)
        assert codec.FrameDecoder().feed(mask_frame(OP_BINARY, payload, mask=mask)) == [
            (OP_BINARY, payload)
        ]


def test_unmasked_frame_rejected_when_mask_required(codec: ModuleType) -> None:
    assert error_code(codec, mask_frame(OP_BINARY, b"hi", mask=None)) == 1002
    assert error_code(codec, mask_frame(OP_PING, b"", mask=None)) == 1002


def test_unmasked_and_masked_frames_accepted_when_mask_not_required(codec: ModuleType) -> None:
    stream = mask_frame(OP_TEXT, b"a", mask=None) + mask_frame(OP_TEXT, b"b")
    assert feed_all(codec, [stream], require_mask=False) == [(OP_TEXT, b"a"), (OP_TEXT, b"b")]


def test_unmasked_frame_detected_from_two_header_bytes(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder()
    assert decoder.feed(b"\x82") == []
    with pytest.raises(FrameError) as info:
        decoder.feed(b"\x05")
    assert info.value.code == 1002


def test_empty_feed_and_bytes_like_input(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder()
    assert decoder.feed(b"") == []
    frame = mask_frame(OP_BINARY, b"payload")
    assert decoder.feed(bytearray(frame[:3])) == []
    assert decoder.feed(bytearray(frame[3:])) == [(OP_BINARY, b"payload")]
    assert decoder.feed(bytearray(frame)) == [(OP_BINARY, b"payload")]
    assert decoder.feed(memoryview(frame)) == [(OP_BINARY, b"payload")]
    assert decoder.feed(memoryview(frame)[:4]) == []
    assert decoder.feed(memoryview(frame)[4:]) == [(OP_BINARY, b"payload")]


def test_payloads_are_bytes(codec: ModuleType) -> None:
    stream = mask_frame(OP_TEXT, b"x" * 2000) + mask_frame(OP_TEXT, b"y", mask=None)
    decoder = codec.FrameDecoder(require_mask=False)
    decoder.feed(stream[:10])
    for _, payload in decoder.feed(stream[10:]):
        assert type(payload) is bytes


def test_many_frames_in_one_chunk_and_byte_by_byte(codec: ModuleType) -> None:
    messages = [(OP_BINARY, bytes([i % 256]) * i) for i in range(300)]
    stream = b"".join(
        mask_frame(op, p, mask=bytes([i % 256, 1, 2, 3])) for i, (op, p) in enumerate(messages)
    )
    assert feed_all(codec, [stream]) == messages
    assert feed_all(codec, [stream[i : i + 1] for i in range(len(stream))]) == messages


# ----------------------------------------------------------------------------- protocol rules


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY, OP_PING, OP_CLOSE])
def test_rsv_bits_rejected(codec: ModuleType, opcode: int, rsv: int) -> None:
    assert error_code(codec, mask_frame(opcode, b"", rsv=rsv)) == 1002


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])
def test_unknown_opcodes_rejected(codec: ModuleType, opcode: int) -> None:
    assert error_code(codec, mask_frame(opcode, b"")) == 1002


@pytest.mark.parametrize("opcode", [OP_CLOSE, OP_PING, OP_PONG])
def test_fragmented_control_frame_rejected(codec: ModuleType, opcode: int) -> None:
    assert error_code(codec, mask_frame(opcode, b"", fin=False)) == 1002


@pytest.mark.parametrize("opcode", [OP_CLOSE, OP_PING, OP_PONG])
def test_control_frame_payload_limit(codec: ModuleType, opcode: int) -> None:
    assert codec.FrameDecoder().feed(mask_frame(opcode, b"p" * 125)) == [(opcode, b"p" * 125)]
    assert error_code(codec, mask_frame(opcode, b"p" * 126)) == 1002
    # Rejected from the header alone.
    assert error_code(codec, mask_frame(opcode, b"", length=126)[:4]) == 1002


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_without_message_rejected(codec: ModuleType, fin: bool) -> None:
    assert error_code(codec, mask_frame(OP_CONT, b"x", fin=fin)) == 1002


def test_continuation_after_finished_message_rejected(codec: ModuleType) -> None:
    stream = mask_frame(OP_TEXT, b"a", fin=False) + mask_frame(OP_CONT, b"b")
    stream += mask_frame(OP_CONT, b"c")
    assert error_code(codec, stream) == 1002


@pytest.mark.parametrize("first", [OP_TEXT, OP_BINARY])
@pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY])
def test_new_data_frame_inside_fragmented_message_rejected(
    codec: ModuleType, first: int, second: int
) -> None:
    stream = mask_frame(first, b"a", fin=False) + mask_frame(second, b"b")
    assert error_code(codec, stream) == 1002


def test_64_bit_length_with_high_bit_rejected_from_header(codec: ModuleType) -> None:
    header = mask_frame(OP_BINARY, b"", length=1 << 63)
    assert len(header) == 14
    assert error_code(codec, header, max_message_size=(1 << 63) - 1) == 1002
    assert error_code(codec, mask_frame(OP_BINARY, b"", length=(1 << 64) - 1)) == 1002


def test_frame_too_big_detected_from_header(codec: ModuleType) -> None:
    # A peer announcing a 2 GB frame costs nothing: the 14-byte header is enough.
    decoder = codec.FrameDecoder(max_message_size=1 << 20)
    header = mask_frame(OP_BINARY, b"", length=2 << 30)
    assert decoder.feed(header[:9]) == []
    with pytest.raises(FrameError) as info:
        decoder.feed(header[9:] + b"\x00" * 100)
    assert info.value.code == 1009
    assert decoder.buffered == 0


def test_frame_size_limit_is_inclusive(codec: ModuleType) -> None:
    assert feed_all(codec, [mask_frame(OP_BINARY, b"x" * 100)], max_message_size=100) == [
        (OP_BINARY, b"x" * 100)
    ]
    assert error_code(codec, mask_frame(OP_BINARY, b"x" * 101), max_message_size=100) == 1009
    assert error_code(codec, mask_frame(OP_TEXT, b"", length=101)[:8], max_message_size=100) == 1009


def test_message_too_big_detected_at_fragment_header(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder(max_message_size=100)
    assert decoder.feed(mask_frame(OP_TEXT, b"x" * 60, fin=False)) == []
    assert decoder.feed(mask_frame(OP_CONT, b"x" * 40, fin=False)) == []
    assert decoder.buffered == 100
    assert decoder.feed(mask_frame(OP_PING, b"ping")) == [(OP_PING, b"ping")]
    assert decoder.feed(mask_frame(OP_CONT, b"")) == [(OP_TEXT, b"x" * 100)]
    assert decoder.feed(mask_frame(OP_BINARY, b"x" * 60, fin=False)) == []
    with pytest.raises(FrameError) as info:
        decoder.feed(mask_frame(OP_CONT, b"", length=41)[:8])
    assert info.value.code == 1009


def test_too_many_fragments_is_a_policy_violation(codec: ModuleType) -> None:
    # Empty fragments cost no payload but still work and memory: they are counted too.
    decoder = codec.FrameDecoder(max_fragments=3)
    assert decoder.feed(mask_frame(OP_BINARY, b"a", fin=False)) == []
    assert decoder.feed(mask_frame(OP_CONT, b"", fin=False)) == []
    assert decoder.feed(mask_frame(OP_PING, b"")) == [(OP_PING, b"")]  # control frames do not count
    assert decoder.feed(mask_frame(OP_CONT, b"b")) == [(OP_BINARY, b"ab")]
    assert decoder.feed(mask_frame(OP_BINARY, b"a", fin=False) + mask_frame(OP_CONT, b"", fin=False) * 2) == []
    with pytest.raises(FrameError) as info:
        decoder.feed(mask_frame(OP_CONT, b"", length=0)[:2])  # decided from the first two bytes
    assert (info.value.code, info.value.reason) == (1008, "too many fragments")
    assert decoder.buffered == 0


def test_fragments_are_held_as_their_payload_bytes(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder(max_fragments=100_000)
    decoder.feed(mask_frame(OP_BINARY, b"x", fin=False))
    decoder.feed(b"".join(mask_frame(OP_CONT, b"y", fin=False) for _ in range(9_999)))
    assert decoder.buffered == 10_000
    assert decoder.feed(mask_frame(OP_CONT, b"")) == [(OP_BINARY, b"x" + b"y" * 9_999)]
    assert decoder.buffered == 0 and decoder.at_rest


def test_limits_raised_for_frames_still_to_come(codec: ModuleType) -> None:
    # A server starts a connection with small limits and raises them once it authenticates.
    decoder = codec.FrameDecoder(max_message_size=10, max_fragments=2)
    assert decoder.feed(mask_frame(OP_BINARY, b"x" * 10)) == [(OP_BINARY, b"x" * 10)]
    decoder.set_limits(1000, 50)
    assert decoder.feed(mask_frame(OP_BINARY, b"x" * 500, fin=False)) == []
    for _ in range(48):
        assert decoder.feed(mask_frame(OP_CONT, b"", fin=False)) == []
    assert decoder.feed(mask_frame(OP_CONT, b"y" * 500)) == [(OP_BINARY, b"x" * 500 + b"y" * 500)]
    decoder.set_limits(10, 2)
    assert error_code(codec, mask_frame(OP_BINARY, b"x" * 11), max_message_size=10) == 1009
    with pytest.raises(FrameError) as info:
        decoder.feed(mask_frame(OP_BINARY, b"x" * 11))
    assert info.value.code == 1009


def test_control_frame_above_max_message_size_is_too_big(codec: ModuleType) -> None:
    assert error_code(codec, mask_frame(OP_PING, b"x" * 20), max_message_size=10) == 1009
    # The limit is inclusive for control frames too.
    assert feed_all(codec, [mask_frame(OP_PONG, b"x" * 10)], max_message_size=10) == [
        (OP_PONG, b"x" * 10)
    ]
    assert feed_all(codec, [mask_frame(OP_PING, b"")], max_message_size=0) == [(OP_PING, b"")]
    assert error_code(codec, mask_frame(OP_CLOSE, b"\x03\xe8"), max_message_size=1) == 1009


def test_invalid_utf8_text_rejected(codec: ModuleType) -> None:
    assert error_code(codec, mask_frame(OP_TEXT, b"\xff")) == 1007
    assert error_code(codec, mask_frame(OP_TEXT, "caf\u00e9".encode()[:-1])) == 1007
    assert error_code(codec, mask_frame(OP_TEXT, b"\xed\xa0\x80")) == 1007  # UTF-8 encoded surrogate


def test_invalid_utf8_binary_accepted(codec: ModuleType) -> None:
    assert codec.FrameDecoder().feed(mask_frame(OP_BINARY, b"\xff")) == [(OP_BINARY, b"\xff")]


def test_utf8_checked_on_complete_message(codec: ModuleType) -> None:
    text = "你好，世界".encode()
    decoder = codec.FrameDecoder()
    # Fragments split a character in the middle; only the whole message must be valid.
    assert decoder.feed(mask_frame(OP_TEXT, text[:4], fin=False)) == []
    assert decoder.feed(mask_frame(OP_CONT, text[4:8], fin=False)) == []
    assert decoder.feed(mask_frame(OP_CONT, text[8:])) == [(OP_TEXT, text)]
    decoder = codec.FrameDecoder()
    assert decoder.feed(mask_frame(OP_TEXT, text[:4], fin=False)) == []
    with pytest.raises(FrameError) as info:
        decoder.feed(mask_frame(OP_CONT, b""))
    assert info.value.code == 1007


def test_fragmentation_with_interleaved_control_frames(codec: ModuleType) -> None:
    stream = b"".join(
        [
            mask_frame(OP_BINARY, b"one ", fin=False),
            mask_frame(OP_PING, b"p1"),
            mask_frame(OP_CONT, b"", fin=False),
            mask_frame(OP_CONT, b"two ", fin=False),
            mask_frame(OP_PONG, b""),
            mask_frame(OP_PING, b"p2"),
            mask_frame(OP_CONT, b"three"),
            mask_frame(OP_TEXT, b"next"),
        ]
    )
    expected = [
        (OP_PING, b"p1"),
        (OP_PONG, b""),
        (OP_PING, b"p2"),
        (OP_BINARY, b"one two three"),
        (OP_TEXT, b"next"),
    ]
    assert feed_all(codec, [stream]) == expected
    assert feed_all(codec, [stream[i : i + 3] for i in range(0, len(stream), 3)]) == expected


def test_buffered_counts_partial_frame_and_partial_message(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder()
    first = mask_frame(OP_BINARY, b"a" * 300, fin=False)
    assert decoder.feed(first) == []
    assert decoder.buffered == 300
    second = mask_frame(OP_CONT, b"b" * 200)
    assert decoder.feed(second[:50]) == []
    assert decoder.buffered == 350
    assert decoder.feed(second[50:]) == [(OP_BINARY, b"a" * 300 + b"b" * 200)]
    assert decoder.buffered == 0


def test_error_is_final(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder()
    with pytest.raises(FrameError) as first:
        decoder.feed(mask_frame(OP_TEXT, b"ok") + mask_frame(OP_CONT, b"x"))
    assert (first.value.code, first.value.reason) == (1002, "continuation without a message")
    for data in [b"", mask_frame(OP_TEXT, b"fine")]:
        with pytest.raises(FrameError) as again:
            decoder.feed(data)
        assert again.value is first.value


def test_error_carries_printable_reason(codec: ModuleType) -> None:
    assert codec.FrameError is FrameError  # one class for both twins
    err = codec.FrameError(1009, "message too big")
    assert (err.code, err.reason) == (1009, "message too big")
    assert "1009" in str(err) and "message too big" in str(err)
    assert isinstance(err, Exception)


def test_close_frame_returned_raw_and_ends_input(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder()
    stream = (
        mask_frame(OP_TEXT, b"bye")
        + mask_frame(OP_CLOSE, b"\x03\xe8done")
        + mask_frame(OP_TEXT, b"after close")
        + b"\xff\xff garbage"
    )
    assert decoder.feed(stream) == [(OP_TEXT, b"bye"), (OP_CLOSE, b"\x03\xe8done")]
    assert decoder.buffered == 0
    assert decoder.feed(mask_frame(OP_TEXT, b"later")) == []
    # Close payload validity is parse_close_payload's job, not feed's.
    assert codec.FrameDecoder().feed(mask_frame(OP_CLOSE, b"\x00")) == [(OP_CLOSE, b"\x00")]


def test_close_inside_fragmented_message(codec: ModuleType) -> None:
    decoder = codec.FrameDecoder()
    stream = mask_frame(OP_TEXT, b"half", fin=False) + mask_frame(OP_CLOSE, b"")
    assert decoder.feed(stream) == [(OP_CLOSE, b"")]
    assert decoder.buffered == 0


def test_invalid_max_message_size(codec: ModuleType) -> None:
    with pytest.raises(ValueError):
        codec.FrameDecoder(max_message_size=-1)
    with pytest.raises(ValueError):
        codec.FrameDecoder(max_message_size=1 << 63)


# ----------------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    ("opcode", "payload", "expected_header"),
    [
        (OP_TEXT, b"hi", b"\x81\x02"),
        (OP_BINARY, b"", b"\x82\x00"),
        (OP_BINARY, b"x" * 125, b"\x82\x7d"),
        (OP_BINARY, b"x" * 126, b"\x82\x7e\x00\x7e"),
        (OP_TEXT, b"x" * 65535, b"\x81\x7e\xff\xff"),
        (OP_BINARY, b"x" * 65536, b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (OP_PING, b"p", b"\x89\x01"),
        (OP_PONG, b"", b"\x8a\x00"),
        (OP_CLOSE, b"\x03\xe8", b"\x88\x02"),
    ],
)
def test_encode_frame(
    codec: ModuleType, opcode: int, payload: bytes, expected_header: bytes
) -> None:
    frame = codec.encode_frame(opcode, payload)
    assert frame == expected_header + payload
    assert type(frame) is bytes
    assert feed_all(codec, [frame], require_mask=False) == [(opcode, payload)]


def test_encode_frame_accepts_bytearray_and_memoryview(codec: ModuleType) -> None:
    assert codec.encode_frame(OP_BINARY, bytearray(b"ab")) == b"\x82\x02ab"
    assert codec.encode_frame(OP_BINARY, memoryview(b"ab")) == b"\x82\x02ab"


@pytest.mark.parametrize("opcode", [OP_CLOSE, OP_PING, OP_PONG])
def test_encode_control_frame_too_long(codec: ModuleType, opcode: int) -> None:
    with pytest.raises(ValueError):
        codec.encode_frame(opcode, b"x" * 126)


@pytest.mark.parametrize("opcode", [OP_CONT, 3, 7, 0xB, 0xF, 16, -1])
def test_encode_frame_bad_opcode(codec: ModuleType, opcode: int) -> None:
    with pytest.raises(ValueError):
        codec.encode_frame(opcode, b"")


def test_encode_close(codec: ModuleType) -> None:
    assert codec.encode_close(1000) == b"\x88\x02\x03\xe8"
    assert codec.encode_close(4001, "idle") == b"\x88\x06\x0f\xa1idle"
    assert codec.parse_close_payload(codec.encode_close(1001, "重启中")[2:]) == (1001, "重启中")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("服务器关闭" * 10, "服务器关闭" * 8 + "服"),  # 41 characters of 3 bytes = 123 bytes
        ("a" + "会话已结束" * 10, "a" + "会话已结束" * 8),  # 1 + 40 * 3 = 121: no half character
        ("ab" + "会话已结束" * 10, "ab" + "会话已结束" * 8),  # 2 + 120 = 122
        ("abc" + "会话已结束" * 10, "abc" + "会话已结束" * 8),  # 3 + 120 = 123 exactly
        ("x" * 122 + "客服", "x" * 122),
        ("x" * 123, "x" * 123),
        ("x" * 200, "x" * 123),
        ("😀" * 40, "😀" * 30),  # 4-byte characters: 120 bytes
    ],
)
def test_encode_close_truncates_at_character_boundary(
    codec: ModuleType, reason: str, expected: str
) -> None:
    frame = codec.encode_close(1000, reason)
    assert frame[1] == len(frame) - 2 <= 125
    assert codec.parse_close_payload(frame[2:]) == (1000, expected)


@given(st.text(max_size=200), st.sampled_from([1000, 1001, 1008, 1011, 3000, 4999]))
@fuzz_settings
def test_encode_close_longest_valid_prefix(codec: ModuleType, reason: str, code: int) -> None:
    frame = codec.encode_close(code, reason)
    got_code, got_reason = codec.parse_close_payload(frame[2:])
    assert got_code == code
    assert reason.startswith(got_reason)
    assert len(got_reason.encode()) <= 123
    if got_reason != reason:
        assert len(reason[: len(got_reason) + 1].encode()) > 123


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_encode_close_rejects_codes_that_may_not_be_sent(codec: ModuleType, code: int) -> None:
    with pytest.raises(ValueError):
        codec.encode_close(code)


# ----------------------------------------------------------------------------- close payloads


def test_parse_close_payload_empty(codec: ModuleType) -> None:
    assert codec.parse_close_payload(b"") == (1005, "")


def test_parse_close_payload_one_byte(codec: ModuleType) -> None:
    with pytest.raises(FrameError) as info:
        codec.parse_close_payload(b"\x03")
    assert info.value.code == 1002


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
             4000, 4999]
)
def test_parse_close_payload_valid_codes(codec: ModuleType, code: int) -> None:
    assert codec.parse_close_payload(code.to_bytes(2, "big")) == (code, "")
    assert codec.parse_close_payload(code.to_bytes(2, "big") + "再见".encode()) == (code, "再见")


@pytest.mark.parametrize(
    "code", [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
)
def test_parse_close_payload_invalid_codes(codec: ModuleType, code: int) -> None:
    with pytest.raises(FrameError) as info:
        codec.parse_close_payload(code.to_bytes(2, "big") + b"reason")
    assert info.value.code == 1002


@pytest.mark.parametrize("reason", [b"\xff", b"ok\xe4\xb8", b"\xed\xa0\x80", b"\xc0\xaf"])
def test_parse_close_payload_invalid_utf8(codec: ModuleType, reason: bytes) -> None:
    with pytest.raises(FrameError) as info:
        codec.parse_close_payload(b"\x03\xe8" + reason)
    assert info.value.code == 1007


def test_parse_close_payload_accepts_bytearray(codec: ModuleType) -> None:
    assert codec.parse_close_payload(bytearray(b"\x03\xe8ok")) == (1000, "ok")


# ----------------------------------------------------------------------------- strategies

masks = st.binary(min_size=4, max_size=4)


@st.composite
def payloads(draw: st.DrawFn, opcode: int) -> bytes:
    if opcode == OP_TEXT:
        return draw(st.text(max_size=40)).encode()
    # Now and then a payload needing the 16-bit or the 64-bit length, made from a seed (cheap).
    size = draw(st.one_of(st.just(-1), st.sampled_from([126, 300, 65535, 65536, 70001])))
    if size < 0 or draw(st.integers(0, 9)) != 0:
        return draw(st.binary(max_size=40))
    return random.Random(draw(st.integers(0, 1000))).randbytes(size)


@st.composite
def client_frame(
    draw: st.DrawFn, opcode: int, payload: bytes, fin: bool, minimal: bool = False
) -> bytes:
    """A masked client frame with a random mask and, for data frames unless minimal, a random
    (possibly non-minimal) length encoding."""
    length_bytes = None
    if opcode < OP_CLOSE and not minimal:
        length_bytes = draw(st.sampled_from([None, None, 2, 8]))
        if length_bytes == 2 and len(payload) > 65535:
            length_bytes = 8
    return mask_frame(opcode, payload, mask=draw(masks), fin=fin, length_bytes=length_bytes)


@st.composite
def control_frames(draw: st.DrawFn) -> tuple[bytes, Message]:
    opcode = draw(st.sampled_from([OP_PING, OP_PONG]))
    payload = draw(st.binary(max_size=125))
    return draw(client_frame(opcode, payload, True)), (opcode, payload)


@st.composite
def message_streams(draw: st.DrawFn, minimal: bool = False) -> tuple[bytes, list[Message]]:
    """Messages, fragmented at random points, with control frames in between; maybe a close.

    With minimal=True every length is in its minimal encoding (wsproto insists on that).
    """
    frames: list[bytes] = []
    expected: list[Message] = []
    for _ in range(draw(st.integers(0, 4))):
        for frame, message in draw(st.lists(control_frames(), max_size=2)):
            frames.append(frame)
            expected.append(message)
        opcode = draw(st.sampled_from([OP_TEXT, OP_BINARY]))
        payload = draw(payloads(opcode))
        # Cut points may fall inside a UTF-8 character: only the whole message must be valid.
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        bounds = [0, *cuts, len(payload)]
        pieces = [payload[a:b] for a, b in zip(bounds, bounds[1:])]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            first_opcode = opcode if i == 0 else OP_CONT
            frames.append(draw(client_frame(first_opcode, piece, last, minimal)))
            if not last:
                for frame, message in draw(st.lists(control_frames(), max_size=2)):
                    frames.append(frame)
                    expected.append(message)
        expected.append((opcode, payload))
    if draw(st.booleans()):
        close = draw(
            st.one_of(
                st.binary(max_size=125),
                # A valid close payload, built by hand (at most 2 + 80 bytes: never truncated).
                st.tuples(st.sampled_from([1000, 1001, 4000]), st.text(max_size=20)).map(
                    lambda c: c[0].to_bytes(2, "big") + c[1].encode()
                ),
            )
        )
        frames.append(draw(client_frame(OP_CLOSE, close, True)))
        expected.append((OP_CLOSE, close))
    return b"".join(frames), expected


def corrupted(streams: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Streams with one byte XORed with a random non-zero value."""

    def flip(args: tuple[bytes, int, int]) -> bytes:
        stream, where, bits = args
        if not stream:
            return stream
        where %= len(stream)
        return stream[:where] + bytes([stream[where] ^ bits]) + stream[where + 1 :]

    return st.tuples(streams, st.integers(0, 1 << 20), st.integers(1, 255)).map(flip)


def valid_streams(minimal: bool = False) -> st.SearchStrategy[bytes]:
    return message_streams(minimal).map(lambda stream_and_expected: stream_and_expected[0])


@st.composite
def frameish_streams(draw: st.DrawFn, complete: bool = False) -> bytes:
    """Frames that are mostly well-formed, with every header field now and then wrong.

    With complete=True every frame carries exactly the payload its minimal header announces
    (the frames may still break any rule); otherwise lengths may lie and junk may follow.
    """
    frames: list[bytes] = []
    for _ in range(draw(st.integers(0, 6))):
        # One frame in ten has an arbitrary first byte; the others a plausible one (which may
        # still break the fragmentation rules).
        if draw(st.integers(0, 9)) == 0:
            b0 = draw(st.integers(0, 255))
        else:
            b0 = draw(st.sampled_from([0x81, 0x82, 0x81, 0x82, 0x01, 0x02, 0x00, 0x80, 0x88, 0x89]))
        opcode = b0 & 0x0F
        payload = draw(
            st.one_of(
                st.binary(max_size=30),
                st.text(max_size=10).map(str.encode),
                st.binary(min_size=120, max_size=130),
            )
        )
        if opcode == OP_CLOSE and draw(st.booleans()):
            payload = draw(st.sampled_from([1000, 1001, 3000, 1005, 999])).to_bytes(2, "big")
            payload += draw(st.text(max_size=5)).encode()
        mask = None if draw(st.integers(0, 9)) == 0 else draw(masks)
        length = None
        length_bytes = None
        if not complete and draw(st.integers(0, 9)) == 0:
            length_bytes = draw(st.sampled_from([0, 2, 8]))
            length = draw(st.integers(0, {0: 125, 2: 65535, 8: (1 << 64) - 1}[length_bytes]))
        frames.append(
            mask_frame(
                opcode,
                payload,
                mask=mask,
                fin=bool(b0 & 0x80),
                rsv=(b0 >> 4) & 7,
                length_bytes=length_bytes,
                length=length,
            )
        )
    if not complete and draw(st.booleans()):
        frames.append(draw(st.binary(max_size=20)))
    return b"".join(frames)


# ----------------------------------------------------------------------------- properties


@given(message_streams(), st.data())
@fuzz_settings
def test_round_trip_any_split(
    codec: ModuleType,
    stream_and_expected: tuple[bytes, list[Message]], data: st.DataObject
) -> None:
    stream, expected = stream_and_expected
    points = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    decoder = codec.FrameDecoder()
    got: list[Message] = []
    for chunk in split_at(stream, points):
        got.extend(decoder.feed(chunk))
    assert got == expected
    assert decoder.buffered == 0
    assert codec.FrameDecoder().feed(stream) == expected


@given(
    st.one_of(
        st.binary(max_size=200),
        frameish_streams(),
        valid_streams(),
        corrupted(valid_streams()),
        corrupted(frameish_streams()),
    ),
    st.lists(st.integers(0, 1 << 16), max_size=8),
    st.booleans(),
    st.sampled_from([1 << 20, 64, 0]),
)
@fuzz_settings_more
def test_arbitrary_bytes_split_independent(
    codec: ModuleType,
    stream: bytes, points: list[int], require_mask: bool, max_size: int
) -> None:
    kwargs = {"require_mask": require_mask, "max_message_size": max_size}
    # Any exception other than FrameError fails the test by propagating.
    whole, _, whole_buffered = outcome(codec, [stream], **kwargs)
    split, split_delivered, split_buffered = outcome(codec, split_at(stream, points), **kwargs)
    bytewise = [stream[i : i + 1] for i in range(len(stream))]
    _, finest_delivered, _ = outcome(codec, bytewise, **kwargs)
    assert split == whole
    if whole[0] == "ok":
        assert split_buffered == whole_buffered
    # Messages delivered before an error are the same messages, only cut off earlier or later.
    assert finest_delivered[: len(split_delivered)] == split_delivered


# ----------------------------------------------------------------------------- wsproto differential


def wsproto_parse(stream: bytes, *, client: bool) -> list[tuple[int, object]]:
    """Messages wsproto reads from stream, as (opcode, payload); a close as (OP_CLOSE, (code,
    reason)). ``client`` picks the side that reads: True reads a server's (unmasked) frames.

    Raises:
        ParseFailed: wsproto found a protocol error.
    """
    protocol = FrameProtocol(client=client, extensions=[])
    protocol.receive_bytes(stream)
    messages: list[tuple[int, object]] = []
    parts: list[bytes] = []
    for frame in protocol.received_frames():
        payload = frame.payload
        if frame.opcode is Opcode.CLOSE:
            assert isinstance(payload, tuple)
            messages.append((OP_CLOSE, (int(payload[0]), payload[1])))
        elif frame.opcode is Opcode.PING or frame.opcode is Opcode.PONG:
            assert isinstance(payload, (bytes, bytearray))
            messages.append((int(frame.opcode), bytes(payload)))
        else:
            assert isinstance(payload, (str, bytes, bytearray))
            parts.append(payload.encode() if isinstance(payload, str) else bytes(payload))
            if frame.message_finished:
                messages.append((int(frame.opcode), b"".join(parts)))
                parts = []
    return messages


def wsproto_server_parse(stream: bytes) -> tuple[str, object]:
    """What wsproto's server side reads from stream: ("ok", messages) or ("error", code)."""
    try:
        return "ok", wsproto_parse(stream, client=False)
    except ParseFailed as exc:
        return "error", int(exc.code)


# Only streams of complete frames: wsproto checks some rules later than we do (the mask after
# the extended length, fragmentation after the first payload byte), so on a stream that ends
# inside a broken frame we may already reject what wsproto is still waiting on.
@given(st.one_of(frameish_streams(complete=True), valid_streams(minimal=True)))
@fuzz_settings
def test_differential_arbitrary_frames_against_wsproto(codec: ModuleType, stream: bytes) -> None:
    ours, _, _ = outcome(codec, [stream], max_message_size=1 << 62)
    theirs = wsproto_server_parse(stream)
    if theirs[0] == "ok":
        # Everything wsproto accepts, we accept, with the same messages (close payload parsed).
        assert ours[0] == "ok"
        ours_messages: list[Message] = ours[1]  # type: ignore[assignment]
        assert [
            (op, codec.parse_close_payload(p) if op == OP_CLOSE else p) for op, p in ours_messages
        ] == theirs[1]
    if ours[0] == "error":
        # Everything we reject, wsproto rejects. wsproto checks UTF-8 incrementally, so it may
        # report 1007 for a message we never finish because a later frame is a 1002.
        assert theirs[0] == "error"
        our_code = ours[1][0]  # type: ignore[index]
        assert theirs[1] == our_code or (our_code == 1002 and theirs[1] == 1007)


# A message for wsproto to send: text as str pieces or binary as bytes pieces (wsproto picks the
# opcode from the type), plus pings to send after each piece but the last.
wsproto_messages = st.lists(
    st.one_of(
        st.lists(st.text(max_size=30), min_size=1, max_size=4),
        st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    ).flatmap(
        lambda pieces: st.tuples(
            st.just(pieces),
            st.lists(st.lists(st.binary(max_size=125), max_size=2), min_size=len(pieces),
                     max_size=len(pieces)),
        )
    ),
    max_size=5,
)


@given(wsproto_messages, st.one_of(st.none(), st.tuples(st.sampled_from([1000, 1001, 4000]),
                                                       st.text(max_size=20))))
@fuzz_settings
def test_decodes_frames_built_by_wsproto_client(
    codec: ModuleType,
    messages: list[tuple[list[object], list[list[bytes]]]], close: tuple[int, str] | None
) -> None:
    client = FrameProtocol(client=True, extensions=[])
    stream = bytearray()
    expected: list[Message] = []
    for pieces, pings in messages:
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            stream += client.send_data(piece, fin=last)  # type: ignore[arg-type]
            if not last:
                for ping in pings[i]:
                    stream += client.ping(ping)
                    expected.append((OP_PING, ping))
        if isinstance(pieces[0], str):
            expected.append((OP_TEXT, "".join(pieces).encode()))  # type: ignore[arg-type]
        else:
            expected.append((OP_BINARY, b"".join(pieces)))  # type: ignore[arg-type]
    if close is not None:
        stream += client.close(*close)
    decoder = codec.FrameDecoder()
    got = decoder.feed(bytes(stream))
    if close is not None:
        op, payload = got.pop()
        assert op == OP_CLOSE
        assert codec.parse_close_payload(payload) == close
    assert got == expected


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just(OP_TEXT), st.text(max_size=200).map(str.encode)),
            st.tuples(st.just(OP_BINARY), st.binary(max_size=300)),
            st.tuples(st.sampled_from([OP_PING, OP_PONG]), st.binary(max_size=125)),
        ),
        max_size=8,
    ),
    st.tuples(st.sampled_from([1000, 1001, 1011, 4000]), st.text(max_size=80)),
)
@fuzz_settings
def test_wsproto_client_reads_our_frames(
    codec: ModuleType, messages: list[Message], close: tuple[int, str]
) -> None:
    stream = b"".join(codec.encode_frame(op, payload) for op, payload in messages)
    stream += codec.encode_close(*close)
    got = wsproto_parse(stream, client=True)
    code, reason = close
    truncated = reason.encode()[:123].decode(errors="ignore")
    assert got == [*messages, (OP_CLOSE, (code, truncated))]


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536, 200_000])
def test_wsproto_client_reads_our_frame_lengths(codec: ModuleType, n: int) -> None:
    payload = random.Random(n).randbytes(n)
    frame = codec.encode_frame(OP_BINARY, payload)
    assert wsproto_parse(frame, client=True) == [(OP_BINARY, payload)]


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536, 200_000])
def test_decodes_wsproto_frame_lengths(codec: ModuleType, n: int) -> None:
    payload = random.Random(n).randbytes(n)
    frame = FrameProtocol(client=True, extensions=[]).send_data(payload)
    assert codec.FrameDecoder().feed(bytes(frame)) == [(OP_BINARY, payload)]


def test_decodes_wsproto_client_connection_after_handshake(codec: ModuleType) -> None:
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="kefu.example", target="/ws")))
    request = next(server.events())
    assert isinstance(request, Request)
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)

    stream = b"".join(
        [
            client.send(TextMessage(data="你好", message_finished=False)),
            client.send(Ping(payload=b"alive?")),
            client.send(TextMessage(data="，客服")),
            client.send(BytesMessage(data=b"\x81\xa3msg")),
            client.send(CloseConnection(code=1000, reason="再见")),
        ]
    )
    decoder = codec.FrameDecoder()
    got = [decoder.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)]
    messages = [message for batch in got for message in batch]
    assert messages == [
        (OP_PING, b"alive?"),
        (OP_TEXT, "你好，客服".encode()),
        (OP_BINARY, b"\x81\xa3msg"),
        (OP_CLOSE, b"\x03\xe8" + "再见".encode()),
    ]
    assert codec.parse_close_payload(messages[-1][1]) == (1000, "再见")
