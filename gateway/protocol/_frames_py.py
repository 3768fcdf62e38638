"""Sans-IO WebSocket frame codec, server side (RFC 6455 section 5).

Bytes from the client go into :meth:`FrameDecoder.feed`, which returns complete messages; messages for
the client go through :func:`encode_frame` / :func:`encode_close`, which return bytes. No sockets, no
event loop, no handshake (that is HTTP's business), no extensions (none are ever negotiated, so every
RSV bit is a protocol error).

This module is the pure-Python twin of ``native/frames.pyx`` (built as ``gateway._frames_c``);
import the codec from :mod:`gateway.protocol.frames`, which picks one of the two. Both must keep
exactly the same API, the same results and the same errors (the shared
:class:`~gateway.protocol._frame_errors.FrameError`, same ``code`` and ``reason``) for the same input
however it is split into chunks; tests/protocol/test_frames_native.py checks that differentially.
The code is therefore written in a deliberately plain style, which the Cython twin follows line for
line: ints, bytes and lists only, every attribute declared in ``__init__``, no generators, no
closures, no per-frame objects except the ``(opcode, payload)`` result tuple.

Close codes a :class:`FrameError` carries (RFC 6455 section 7.4.1):

* 1002 protocol error: unmasked client frame, RSV bit set, unknown opcode, fragmented or oversized
  (> 125 bytes) control frame, continuation without a message, new data frame inside a fragmented
  message, 64-bit length with the most significant bit set, bad close payload.
* 1007 invalid payload data: a text message (checked once complete) or a close reason that is not
  UTF-8.
* 1008 policy violation: a message in more frames than ``max_fragments`` (each frame, even an
  empty one, costs the server work and memory; decided from the frame's first two bytes).
* 1009 message too big: a frame, or the sum of a message's fragments, above ``max_message_size``;
  decided from the frame header, before any of the payload is buffered.

The fragments of an unfinished message are unmasked into one growing buffer, so holding a message
costs its payload bytes (not an object per fragment) and assembling it costs one allocation.
"""

from __future__ import annotations

import struct

from ._frame_errors import FrameError

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "FrameDecoder",
    "FrameError",
    "encode_close",
    "encode_frame",
    "parse_close_payload",
]

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_CLOSE_PROTOCOL_ERROR = 1002
_CLOSE_INVALID_DATA = 1007
_CLOSE_POLICY_VIOLATION = 1008
_CLOSE_TOO_BIG = 1009

# Largest payload of a control frame (RFC 6455 section 5.5).
_MAX_CONTROL_PAYLOAD = 125
# Largest close reason, in bytes of UTF-8: a control payload minus the 2-byte code.
_MAX_CLOSE_REASON = _MAX_CONTROL_PAYLOAD - 2

# Payloads from this size up are unmasked with bytes.translate over the four byte lanes; below it,
# one XOR of two big ints is cheaper. Both are exact; the threshold only moves cost (measured on
# CPython 3.11: the int path wins under ~1 KiB, translate is ~2.5x faster at 1 MiB).
_TRANSLATE_MIN = 1024
# _XOR_TABLES[k] maps every byte b to b ^ k.
_XOR_TABLES = [bytes([b ^ k for b in range(256)]) for k in range(256)]

_HEADER_SHORT = struct.Struct("!BB")
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")


def _unmask(mask: bytes, data: bytes) -> bytes:
    """Return ``data`` XORed with the 4-byte ``mask`` repeated (RFC 6455 section 5.3)."""
    n = len(data)
    if n < _TRANSLATE_MIN:
        key = (mask * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
    out = bytearray(data)
    out[0::4] = out[0::4].translate(_XOR_TABLES[mask[0]])
    out[1::4] = out[1::4].translate(_XOR_TABLES[mask[1]])
    out[2::4] = out[2::4].translate(_XOR_TABLES[mask[2]])
    out[3::4] = out[3::4].translate(_XOR_TABLES[mask[3]])
    return bytes(out)


class FrameDecoder:
    """Reassemble the messages of one client connection from the bytes it sends.

    State: unparsed bytes (at most one partial frame once :meth:`feed` returns), the payload so far
    of an unfinished data message (one buffer), and two terminal flags: after a close frame the decoder ignores
    all further input (RFC 6455 section 1.4: nothing may follow a close), and after a
    :class:`FrameError` it raises that error again on every call.

    Args:
        max_message_size: largest data message (sum of its fragments) and largest single frame, in
            payload bytes, from 0 to 2**63 - 1 (a C int64 in the native twin). Anything bigger is
            a 1009 error as soon as its header is parsed.
        require_mask: insist that every frame is masked, as RFC 6455 demands of clients (1002
            otherwise). When off, masked and unmasked frames are both accepted; only tests and
            trusted internal peers should turn it off.
        max_fragments: most frames one data message may come in, from 1 to 2**31 - 1 (1008
            beyond it, decided from the frame's first two bytes). Control frames between the
            fragments do not count.
    """

    def __init__(self, max_message_size: int = 1 << 20, require_mask: bool = True, max_fragments: int = 1024) -> None:
        self._max_size: int = 0
        self._max_fragments: int = 1
        self.set_limits(max_message_size, max_fragments)
        self._require_mask: bool = require_mask
        # Bytes received but not yet consumed (a partial frame, between calls).
        self._buf: bytearray = bytearray()
        # Do not parse again until _buf holds this many bytes (the partial frame's known size).
        self._want: int = 0
        # The open fragmented message: first opcode (0 when none), its payload so far, its frames.
        self._msg_opcode: int = 0
        self._message: bytearray = bytearray()
        self._msg_frames: int = 0
        self._closed: bool = False
        self._error: FrameError | None = None

    def set_limits(self, max_message_size: int, max_fragments: int) -> None:
        """Change the limits for the frames still to come (a server raises them once the peer has
        authenticated). A lower limit applies to the next frame header, not to what is held."""
        if not 0 <= max_message_size < 1 << 63:
            raise ValueError("max_message_size must be in [0, 2**63)")
        if not 1 <= max_fragments < 1 << 31:
            raise ValueError("max_fragments must be in [1, 2**31)")
        self._max_size = max_message_size
        self._max_fragments = max_fragments

    @property
    def buffered(self) -> int:
        """Bytes held: the partial frame plus the payload so far of an unfinished message."""
        return len(self._buf) + len(self._message)

    @property
    def at_rest(self) -> bool:
        """Between messages: no partial frame, no unfinished message (even an empty one). A
        decoder at rest can be dropped and replaced by a new one without changing anything."""
        return not self._buf and self._msg_opcode == 0

    def _fail(self, code: int, reason: str) -> FrameError:
        """Record the error that ends this decoder and return it for the caller to raise."""
        self._buf = bytearray()
        self._want = 0
        self._message = bytearray()
        self._msg_frames = 0
        self._error = FrameError(code, reason)
        return self._error

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Append ``data`` and return every message it completes, in order.

        Args:
            data: the next bytes from the client, any amount; bytes or bytearray (any other
                bytes-like object is copied to bytes first).

        Returns:
            A list of ``(opcode, payload)``: ``OP_TEXT`` / ``OP_BINARY`` for data messages (fragments
            joined, the opcode is the first fragment's; text is checked but returned as UTF-8 bytes)
            and ``OP_PING`` / ``OP_PONG`` / ``OP_CLOSE`` for control frames, which may come between
            the fragments of a data message. A close payload is returned raw; see
            :func:`parse_close_payload`. After a close frame the list ends and later calls return
            ``[]``. Often empty: the bytes so far end inside a frame.

        Raises:
            FrameError: the client broke the protocol. Messages completed earlier in the same call
                are dropped with it (the connection is being failed), and every later call raises
                the same error again.
        """
        if self._error is not None:
            raise self._error.with_traceback(None)
        if self._closed:
            return []
        if type(data) is not bytes and type(data) is not bytearray:
            data = bytes(data)
        buf = self._buf
        src: bytes | bytearray
        if buf:
            buf += data
            if len(buf) < self._want:
                return []
            src = buf
        else:
            src = data
        end = len(src)
        pos = 0
        want = 0
        max_size = self._max_size
        messages: list[tuple[int, bytes]] = []

        while True:
            avail = end - pos
            if avail < 2:
                want = 2
                break
            b0 = src[pos]
            b1 = src[pos + 1]
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            # Every check on the first two bytes runs as soon as both are here, in a fixed order,
            # so the error does not depend on how the stream was split into chunks.
            if b0 & 0x70:
                raise self._fail(_CLOSE_PROTOCOL_ERROR, "reserved bits set")
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    raise self._fail(_CLOSE_PROTOCOL_ERROR, "unknown opcode")
                if not b0 & 0x80:
                    raise self._fail(_CLOSE_PROTOCOL_ERROR, "fragmented control frame")
                if length > _MAX_CONTROL_PAYLOAD:
                    raise self._fail(_CLOSE_PROTOCOL_ERROR, "control frame too long")
            elif opcode == OP_CONT:
                if self._msg_opcode == 0:
                    raise self._fail(_CLOSE_PROTOCOL_ERROR, "continuation without a message")
                if self._msg_frames >= self._max_fragments:
                    raise self._fail(_CLOSE_POLICY_VIOLATION, "too many fragments")
            elif opcode > OP_BINARY:
                raise self._fail(_CLOSE_PROTOCOL_ERROR, "unknown opcode")
            elif self._msg_opcode != 0:
                raise self._fail(_CLOSE_PROTOCOL_ERROR, "data frame inside a fragmented message")
            masked = b1 & 0x80
            if not masked and self._require_mask:
                raise self._fail(_CLOSE_PROTOCOL_ERROR, "unmasked client frame")

            if length == 126:
                header = 4
            elif length == 127:
                header = 10
            else:
                header = 2
            if masked:
                header += 4
            if avail < header:
                want = header
                break
            if length == 126:
                length = (src[pos + 2] << 8) | src[pos + 3]
            elif length == 127:
                length = int.from_bytes(src[pos + 2 : pos + 10], "big")
                if length >> 63:
                    raise self._fail(_CLOSE_PROTOCOL_ERROR, "64-bit length with high bit set")
            # Both limits are checked before the payload is buffered. Control frames are capped
            # at 125 bytes above and never count towards the message they interrupt.
            if opcode >= OP_CLOSE:
                if length > max_size:
                    raise self._fail(_CLOSE_TOO_BIG, "frame too big")
            elif length > max_size - len(self._message):
                raise self._fail(_CLOSE_TOO_BIG, "message too big")
            if avail < header + length:
                want = header + length
                break

            start = pos + header
            pos = start + length
            if masked:
                payload = _unmask(src[start - 4 : start], src[start:pos])
            else:
                payload = bytes(src[start:pos])

            if opcode >= OP_CLOSE:
                messages.append((opcode, payload))
                if opcode == OP_CLOSE:
                    self._closed = True
                    break
                continue
            if not b0 & 0x80:
                if opcode != OP_CONT:
                    self._msg_opcode = opcode
                self._message += payload
                self._msg_frames += 1
                continue
            if opcode == OP_CONT:
                self._message += payload
                payload = bytes(self._message)
                opcode = self._msg_opcode
                self._msg_opcode = 0
                self._message = bytearray()
                self._msg_frames = 0
            if opcode == OP_TEXT and not payload.isascii():
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise self._fail(_CLOSE_INVALID_DATA, "text message is not valid UTF-8") from None
            messages.append((opcode, payload))

        if self._closed:
            # Nothing after a close is read: drop the rest and any unfinished message.
            self._buf = bytearray()
            self._want = 0
            self._msg_opcode = 0
            self._message = bytearray()
            self._msg_frames = 0
        elif src is buf:
            del buf[:pos]
            self._want = want
        else:
            # First unconsumed byte of a caller's chunk: copy only the partial frame.
            self._buf = bytearray(src[pos:])
            self._want = want
        return messages


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """Return one unmasked, final (FIN) frame, as a server sends it.

    Args:
        opcode: ``OP_TEXT``, ``OP_BINARY``, ``OP_CLOSE``, ``OP_PING`` or ``OP_PONG``. The caller is
            responsible for a text payload being UTF-8 and a close payload being valid (prefer
            :func:`encode_close`).
        payload: the payload, bytes-like; at most 125 bytes for a control frame.

    Returns:
        The frame's bytes.

    Raises:
        ValueError: unknown opcode, or a control payload over 125 bytes (a local bug, not the peer's).
    """
    n = len(payload)
    if opcode == OP_TEXT or opcode == OP_BINARY:
        if n < 126:
            header = _HEADER_SHORT.pack(0x80 | opcode, n)
        elif n < 65536:
            header = _HEADER_16.pack(0x80 | opcode, 126, n)
        else:
            header = _HEADER_64.pack(0x80 | opcode, 127, n)
    elif opcode == OP_CLOSE or opcode == OP_PING or opcode == OP_PONG:
        if n > _MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control frame payload of {n} bytes (max {_MAX_CONTROL_PAYLOAD})")
        header = _HEADER_SHORT.pack(0x80 | opcode, n)
    else:
        raise ValueError(f"cannot encode opcode {opcode!r} as a single frame")
    return header + payload


def _valid_close_code(code: int) -> bool:
    """Whether ``code`` may appear in a close frame on the wire (RFC 6455 section 7.4, IANA).

    1000-1003 and 1007-1014 are defined; 1004 is reserved; 1005, 1006 and 1015 are local-only;
    the rest of 1000-2999 is reserved for future RFCs; 3000-4999 belong to libraries and
    applications.
    """
    if 3000 <= code <= 4999:
        return True
    return 1000 <= code <= 1014 and code != 1004 and code != 1005 and code != 1006


def encode_close(code: int, reason: str = "") -> bytes:
    """Return a close frame carrying ``code`` and ``reason``.

    Args:
        code: the close code; must be valid on the wire (not 1004-1006, 1015 or reserved).
        reason: human-readable reason; its UTF-8 is cut to at most 123 bytes, at a character
            boundary, so the frame stays a legal control frame.

    Returns:
        The frame's bytes.

    Raises:
        ValueError: ``code`` may not be sent.
        UnicodeEncodeError: ``reason`` holds a lone surrogate.
    """
    if not _valid_close_code(code):
        raise ValueError(f"close code {code!r} may not be sent")
    raw = reason.encode("utf-8")
    if len(raw) > _MAX_CLOSE_REASON:
        cut = _MAX_CLOSE_REASON
        # Back up over continuation bytes (0b10xxxxxx) to the first byte of the split character.
        while raw[cut] & 0xC0 == 0x80:
            cut -= 1
        raw = raw[:cut]
    return encode_frame(OP_CLOSE, code.to_bytes(2, "big") + raw)


def parse_close_payload(payload: bytes) -> tuple[int, str]:
    """Return ``(code, reason)`` from the payload of a received close frame.

    Args:
        payload: the raw close payload, as :meth:`FrameDecoder.feed` returned it.

    Returns:
        ``(1005, "")`` for an empty payload (RFC 6455 section 7.1.5: no status received),
        otherwise the code and the decoded reason.

    Raises:
        FrameError: 1002 for a 1-byte payload or a code that may not be sent; 1007 for a reason
            that is not UTF-8.
    """
    n = len(payload)
    if n == 0:
        return 1005, ""
    if n == 1:
        raise FrameError(_CLOSE_PROTOCOL_ERROR, "close payload of 1 byte")
    code = (payload[0] << 8) | payload[1]
    if not _valid_close_code(code):
        raise FrameError(_CLOSE_PROTOCOL_ERROR, "invalid close code")
    try:
        reason = bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(_CLOSE_INVALID_DATA, "close reason is not valid UTF-8") from None
    return code, reason
