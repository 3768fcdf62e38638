# Cython twin of gateway/protocol/_frames_py.py, built by setup.py as ``gateway._frames_c`` with the
# compiler directives listed there (language_level 3, boundscheck/wraparound off, cdivision...).
"""Sans-IO WebSocket frame codec, server side (RFC 6455 section 5): the native twin.

Same public API, same results and same errors as :mod:`gateway.protocol._frames_py`, which holds the
full documentation of every function; import the codec from :mod:`gateway.protocol.frames`. What
differs is only how the work is done:

* the decoder parses straight from the caller's chunk and keeps only the partial frame a chunk
  ends with, in a C buffer it owns; the next chunks give that frame just the bytes it lacks, then
  parsing goes on in the chunk itself (the pure twin appends every chunk to its buffer);
* payloads are unmasked in C, 8 bytes at a time with a 64-bit XOR, straight into the ``bytes``
  object that is returned;
* text messages are validated by a UTF-8 checker that accepts exactly what CPython's strict
  ``bytes.decode("utf-8")`` accepts (RFC 3629: no overlongs, no surrogates, nothing above
  U+10FFFF), without building the ``str``.

The parse loop follows the pure twin statement by statement, so that every check runs in the same
order and a stream gives the same messages and the same :class:`FrameError` (``code`` and
``reason``) whatever the chunking: keep them in step when changing either one.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

from gateway.protocol._frame_errors import FrameError

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

# The same numbers as C constants, for the parse loop.
cdef enum:
    _OP_CONT = 0x0
    _OP_TEXT = 0x1
    _OP_BINARY = 0x2
    _OP_CLOSE = 0x8
    _OP_PING = 0x9
    _OP_PONG = 0xA

    _CLOSE_PROTOCOL_ERROR = 1002
    _CLOSE_INVALID_DATA = 1007
    _CLOSE_POLICY_VIOLATION = 1008
    _CLOSE_TOO_BIG = 1009

    # Largest payload of a control frame (RFC 6455 section 5.5), and of a close reason.
    _MAX_CONTROL_PAYLOAD = 125
    _MAX_CLOSE_REASON = _MAX_CONTROL_PAYLOAD - 2

    # The decoder's buffer (one partial frame) is allocated with at least _MIN_CAPACITY bytes and
    # grows geometrically with the bytes actually received, never with the length a header merely
    # announces. It is freed whenever it empties, and shrunk when a big frame left a block past
    # _SHRINK_CAPACITY holding little, so an idle connection holds no more than its partial frame.
    _MIN_CAPACITY = 4096
    _SHRINK_CAPACITY = 16 * 1024

# Upper bound (exclusive) of max_message_size: the decoder's sizes are C int64.
_MAX_SIZE_BOUND = 0x8000000000000000


# ------------------------------------------------------------------------------------- C helpers


cdef inline void _unmask_into(
    unsigned char* dst, const unsigned char* src, Py_ssize_t n, const unsigned char* mask
) noexcept nogil:
    """dst[i] = src[i] ^ mask[i % 4] for i < n (RFC 6455 section 5.3). dst and src do not overlap.

    The mask repeated twice is one 64-bit word (its two halves are equal, so this holds on either
    byte order); memcpy keeps the 8-byte loads and stores legal at any alignment, and compilers turn
    them into plain (often vector) moves.
    """
    cdef uint32_t m32
    cdef uint64_t m64, word
    cdef Py_ssize_t i = 0
    memcpy(&m32, mask, 4)
    m64 = (<uint64_t>m32 << 32) | m32
    while i + 8 <= n:
        memcpy(&word, src + i, 8)
        word ^= m64
        memcpy(dst + i, &word, 8)
        i += 8
    # i is a multiple of 8 here, so the mask lines up again from its first byte.
    while i < n:
        dst[i] = src[i] ^ mask[i & 3]
        i += 1


cdef bint _valid_utf8(const unsigned char* s, Py_ssize_t n) noexcept nogil:
    """Whether s[:n] is well-formed UTF-8 (Unicode table 3-7), as CPython's strict decoder judges.

    ASCII is skipped 8 bytes at a time. Lead bytes C0, C1 and F5-FF never occur; after E0, ED, F0
    and F4 the second byte's range is narrowed to exclude overlongs, surrogates and code points
    above U+10FFFF.
    """
    cdef Py_ssize_t i = 0
    cdef uint64_t word
    cdef unsigned char c, c1
    while i < n:
        if i + 8 <= n:
            memcpy(&word, s + i, 8)
            if not (word & 0x8080808080808080ULL):
                i += 8
                continue
        c = s[i]
        if c < 0x80:
            i += 1
        elif c < 0xC2:  # a continuation byte, or the lead of an overlong 2-byte form
            return False
        elif c < 0xE0:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return False
            i += 2
        elif c < 0xF0:
            if i + 2 >= n:
                return False
            c1 = s[i + 1]
            if c == 0xE0:
                if c1 < 0xA0 or c1 > 0xBF:  # overlong
                    return False
            elif c == 0xED:
                if c1 < 0x80 or c1 > 0x9F:  # UTF-16 surrogates
                    return False
            elif (c1 & 0xC0) != 0x80:
                return False
            if (s[i + 2] & 0xC0) != 0x80:
                return False
            i += 3
        elif c < 0xF5:
            if i + 3 >= n:
                return False
            c1 = s[i + 1]
            if c == 0xF0:
                if c1 < 0x90 or c1 > 0xBF:  # overlong
                    return False
            elif c == 0xF4:
                if c1 < 0x80 or c1 > 0x8F:  # above U+10FFFF
                    return False
            elif (c1 & 0xC0) != 0x80:
                return False
            if (s[i + 2] & 0xC0) != 0x80 or (s[i + 3] & 0xC0) != 0x80:
                return False
            i += 4
        else:
            return False
    return True


cdef inline bint _valid_close_code(object code):
    """Whether ``code`` may appear in a close frame on the wire (see the pure twin).

    Compared as Python objects, exactly like the pure twin: ``code`` comes from the caller.
    """
    if 3000 <= code <= 4999:
        return True
    return 1000 <= code <= 1014 and code != 1004 and code != 1005 and code != 1006


# ------------------------------------------------------------------------------------- decoder


@cython.final
cdef class FrameDecoder:
    """Reassemble the messages of one client connection from the bytes it sends.

    See :class:`gateway.protocol._frames_py.FrameDecoder` for the full contract; this twin behaves
    identically. ``max_message_size`` must be an int in [0, 2**63).
    """

    cdef int64_t _max_size
    cdef bint _require_mask
    # Bytes received but not yet consumed: _buf[:_buf_len], in a PyMem block of _buf_cap bytes
    # (NULL when 0). It only ever holds the start of one frame: the partial frame a chunk ended
    # with, which the next chunks complete before parsing goes on straight from them.
    cdef unsigned char* _buf
    cdef Py_ssize_t _buf_len
    cdef Py_ssize_t _buf_cap
    # The partial frame's known size: 2, then its header's size, then header + payload. _buf is
    # parsed again once it holds this many bytes. Up to 14 + (2**63 - 1): unsigned.
    cdef uint64_t _want
    # The open fragmented message: first opcode (0 when none), its payload so far unmasked into
    # _msg[:_msg_size] (a PyMem block of _msg_cap bytes, NULL when 0), and its frames so far.
    cdef int _msg_opcode
    cdef unsigned char* _msg
    cdef int64_t _msg_size
    cdef int64_t _msg_cap
    cdef int64_t _msg_frames
    cdef int64_t _max_fragments
    cdef bint _closed
    cdef object _error
    # Set while feed() runs. feed() holds raw pointers into _buf, so a re-entrant call (only
    # conceivable from a finalizer run by the garbage collector) must not reallocate it.
    cdef bint _feeding

    def __cinit__(self):
        self._buf = NULL
        self._buf_len = 0
        self._buf_cap = 0
        self._msg = NULL
        self._msg_size = 0
        self._msg_cap = 0

    def __dealloc__(self):
        PyMem_Free(self._buf)
        PyMem_Free(self._msg)

    def __init__(self, max_message_size=1 << 20, require_mask=True, max_fragments=1024):
        if self._feeding:
            raise RuntimeError("FrameDecoder re-initialised during feed()")
        self.set_limits(max_message_size, max_fragments)
        self._require_mask = require_mask
        self._release()
        self._want = 0
        self._msg_opcode = 0
        self._drop_message()
        self._closed = False
        self._error = None

    def set_limits(self, max_message_size, max_fragments):
        """Change the limits for the frames still to come (see the pure twin)."""
        if not 0 <= max_message_size < _MAX_SIZE_BOUND:
            raise ValueError("max_message_size must be in [0, 2**63)")
        if not 1 <= max_fragments < 0x80000000:
            raise ValueError("max_fragments must be in [1, 2**31)")
        self._max_size = max_message_size
        self._max_fragments = max_fragments

    @property
    def buffered(self):
        """Bytes held: the partial frame plus the payload so far of an unfinished message."""
        return self._buf_len + self._msg_size

    @property
    def at_rest(self):
        """Between messages: no partial frame, no unfinished message (even an empty one)."""
        return self._buf_len == 0 and self._msg_opcode == 0

    # ---- the C buffer

    cdef void _release(self) noexcept:
        PyMem_Free(self._buf)
        self._buf = NULL
        self._buf_len = 0
        self._buf_cap = 0

    cdef void _drop_message(self) noexcept:
        PyMem_Free(self._msg)
        self._msg = NULL
        self._msg_size = 0
        self._msg_cap = 0
        self._msg_frames = 0

    cdef unsigned char* _message_room(self, int64_t n) except NULL:
        """Grow the message buffer (geometrically) to take n more bytes; return where they go."""
        cdef int64_t need = self._msg_size + n
        cdef int64_t cap
        cdef unsigned char* grown
        if need > self._msg_cap or self._msg == NULL:
            cap = self._msg_cap * 2
            if cap < need:
                cap = need
            if cap < _MIN_CAPACITY:
                cap = _MIN_CAPACITY
            grown = <unsigned char*>PyMem_Realloc(self._msg, <size_t>cap)
            if grown == NULL:
                raise MemoryError()
            self._msg = grown
            self._msg_cap = cap
        return self._msg + self._msg_size

    cdef int _append(self, const unsigned char* data, Py_ssize_t n) except -1:
        """Append data[:n] to the buffer, growing it geometrically."""
        cdef Py_ssize_t need = self._buf_len + n
        cdef Py_ssize_t cap
        cdef unsigned char* grown
        if need > self._buf_cap:
            cap = self._buf_cap * 2
            if cap < need:
                cap = need
            if cap < _MIN_CAPACITY:
                cap = _MIN_CAPACITY
            grown = <unsigned char*>PyMem_Realloc(self._buf, cap)
            if grown == NULL:
                raise MemoryError()
            self._buf = grown
            self._buf_cap = cap
        if n:
            memcpy(self._buf + self._buf_len, data, n)
        self._buf_len = need
        return 0

    cdef void _drop_front(self, Py_ssize_t n) noexcept:
        """Forget the first n buffered bytes (consumed frames)."""
        memmove(self._buf, self._buf + n, self._buf_len - n)
        self._buf_len -= n

    cdef void _trim(self) noexcept:
        """Give back memory: all of it when the buffer is empty, most of it when a big frame
        left a big block behind a small partial frame."""
        cdef Py_ssize_t cap
        cdef unsigned char* smaller
        if self._buf_len == 0:
            self._release()
        elif self._buf_cap > _SHRINK_CAPACITY and self._buf_len <= self._buf_cap // 4:
            cap = self._buf_len if self._buf_len > _MIN_CAPACITY else _MIN_CAPACITY
            smaller = <unsigned char*>PyMem_Realloc(self._buf, cap)
            if smaller != NULL:  # else the bigger block is still valid: keep it
                self._buf = smaller
                self._buf_cap = cap

    cdef object _fail(self, int code, str reason):
        """Record the error that ends this decoder and return it for the caller to raise."""
        self._release()
        self._want = 0
        self._drop_message()
        self._error = FrameError(code, reason)
        return self._error

    cdef void _after_close(self) noexcept:
        """Nothing after a close is read: drop the rest and any unfinished message."""
        self._release()
        self._want = 0
        self._msg_opcode = 0
        self._drop_message()

    # ---- parsing

    def feed(self, data):
        """Append ``data`` and return every message it completes, in order.

        Same contract as :meth:`gateway.protocol._frames_py.FrameDecoder.feed`.
        """
        cdef Py_buffer view
        if self._error is not None:
            raise self._error.with_traceback(None)
        if self._closed:
            return []
        if type(data) is not bytes and type(data) is not bytearray:
            data = bytes(data)
        if self._feeding:
            raise RuntimeError("FrameDecoder.feed() is not re-entrant")
        # A buffer export pins a bytearray's memory (it cannot be resized while we read it).
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        self._feeding = True
        try:
            return self._feed(<const unsigned char*>view.buf, view.len)
        finally:
            self._feeding = False
            PyBuffer_Release(&view)

    cdef list _feed(self, const unsigned char* data, Py_ssize_t size):
        """Parse what the buffer and ``data`` hold, in stream order.

        The pure twin appends every chunk to its buffer and parses from there. This one moves only
        the bytes the buffered partial frame still lacks, a header field or the payload at a time
        (``_want``), parses that frame from the buffer, then parses the rest of the chunk where it
        lies and keeps only the partial frame it ends with. The frames, the order of the checks and
        so every result and error are the same; fewer bytes are copied.
        """
        cdef list messages = []
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t take
        cdef uint64_t missing
        if self._buf_len:
            while True:
                # _want > _buf_len here: the buffer ended inside a frame of known (partial) size.
                missing = self._want - <uint64_t>self._buf_len
                take = size - pos
                if missing < <uint64_t>take:
                    take = <Py_ssize_t>missing
                self._append(data + pos, take)
                pos += take
                if <uint64_t>self._buf_len < self._want:
                    return messages  # data is used up, the frame still incomplete
                self._drop_front(self._parse(self._buf, self._buf_len, messages))
                if self._closed:
                    self._after_close()
                    return messages
                if self._buf_len == 0:
                    break  # the frame was complete (_parse took exactly that one frame)
        pos += self._parse(data + pos, size - pos, messages)
        if self._closed:
            self._after_close()
            return messages
        # Keep the partial frame the chunk ends with (_want was set by _parse).
        self._append(data + pos, size - pos)
        self._trim()
        return messages

    cdef Py_ssize_t _parse(
        self, const unsigned char* src, Py_ssize_t end, list messages
    ) except -1:
        """Parse the frames in src[:end], appending complete messages; return how many bytes
        they took and set ``_want`` to the size of the partial frame left, or stop after a close.

        The loop is the pure twin's, statement by statement.
        """
        cdef Py_ssize_t pos = 0
        cdef Py_ssize_t avail, header, start
        cdef uint64_t length
        cdef unsigned int b0, b1, opcode, masked
        cdef bytes payload
        cdef unsigned char* dest

        while True:
            avail = end - pos
            if avail < 2:
                self._want = 2
                return pos
            b0 = src[pos]
            b1 = src[pos + 1]
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            # Every check on the first two bytes runs as soon as both are here, in a fixed order
            # (the pure twin's), so the error does not depend on how the stream was split.
            if b0 & 0x70:
                raise self._fail(_CLOSE_PROTOCOL_ERROR, "reserved bits set")
            if opcode >= _OP_CLOSE:
                if opcode > _OP_PONG:
                    raise self._fail(_CLOSE_PROTOCOL_ERROR, "unknown opcode")
                if not b0 & 0x80:
                    raise self._fail(_CLOSE_PROTOCOL_ERROR, "fragmented control frame")
                if length > _MAX_CONTROL_PAYLOAD:
                    raise self._fail(_CLOSE_PROTOCOL_ERROR, "control frame too long")
            elif opcode == _OP_CONT:
                if self._msg_opcode == 0:
                    raise self._fail(_CLOSE_PROTOCOL_ERROR, "continuation without a message")
                if self._msg_frames >= self._max_fragments:
                    raise self._fail(_CLOSE_POLICY_VIOLATION, "too many fragments")
            elif opcode > _OP_BINARY:
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
                self._want = header
                return pos
            if length == 126:
                length = (<uint64_t>src[pos + 2] << 8) | src[pos + 3]
            elif length == 127:
                length = (
                    (<uint64_t>src[pos + 2] << 56) | (<uint64_t>src[pos + 3] << 48)
                    | (<uint64_t>src[pos + 4] << 40) | (<uint64_t>src[pos + 5] << 32)
                    | (<uint64_t>src[pos + 6] << 24) | (<uint64_t>src[pos + 7] << 16)
                    | (<uint64_t>src[pos + 8] << 8) | <uint64_t>src[pos + 9]
                )
                if length >> 63:
                    raise self._fail(_CLOSE_PROTOCOL_ERROR, "64-bit length with high bit set")
            # From here length < 2**63 fits int64. Both limits are checked before the payload is
            # buffered; control frames (at most 125 bytes) never count towards the message they
            # interrupt. _msg_size <= _max_size, so the subtraction cannot underflow.
            if opcode >= _OP_CLOSE:
                if <int64_t>length > self._max_size:
                    raise self._fail(_CLOSE_TOO_BIG, "frame too big")
            elif <int64_t>length > self._max_size - self._msg_size:
                raise self._fail(_CLOSE_TOO_BIG, "message too big")
            # header + length <= 14 + (2**63 - 1): no overflow in uint64.
            if <uint64_t>avail < <uint64_t>header + length:
                self._want = <uint64_t>header + length
                return pos

            # The whole frame is in src, so length < avail fits Py_ssize_t.
            start = pos + header
            pos = start + <Py_ssize_t>length
            if opcode < _OP_CLOSE and (opcode == _OP_CONT or not b0 & 0x80):
                # A fragment: unmasked straight into the message buffer, no object per fragment.
                dest = self._message_room(<int64_t>length)
                if masked:
                    _unmask_into(dest, src + start, <Py_ssize_t>length, src + start - 4)
                elif length:
                    memcpy(dest, src + start, <size_t>length)
                self._msg_size += <int64_t>length
                if not b0 & 0x80:
                    if opcode != _OP_CONT:
                        self._msg_opcode = opcode
                    self._msg_frames += 1
                    continue
                payload = PyBytes_FromStringAndSize(<const char*>self._msg, <Py_ssize_t>self._msg_size)
                opcode = self._msg_opcode
                self._msg_opcode = 0
                self._drop_message()
            elif masked:
                payload = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>length)
                _unmask_into(
                    <unsigned char*>PyBytes_AS_STRING(payload), src + start, <Py_ssize_t>length,
                    src + start - 4,
                )
            else:
                payload = PyBytes_FromStringAndSize(<const char*>(src + start), <Py_ssize_t>length)

            if opcode >= _OP_CLOSE:
                messages.append((opcode, payload))
                if opcode == _OP_CLOSE:
                    self._closed = True
                    return pos
                continue
            if opcode == _OP_TEXT and not _valid_utf8(
                <const unsigned char*>PyBytes_AS_STRING(payload), len(payload)
            ):
                raise self._fail(_CLOSE_INVALID_DATA, "text message is not valid UTF-8")
            messages.append((opcode, payload))


# ------------------------------------------------------------------------------------- encoding


def encode_frame(opcode, payload):
    """Return one unmasked, final (FIN) frame, as a server sends it.

    Same contract as :func:`gateway.protocol._frames_py.encode_frame`: ``opcode`` an int, ``payload``
    bytes-like.
    """
    cdef Py_ssize_t n = len(payload)  # first, like the pure twin: a TypeError for no len()
    cdef int op = -1
    cdef Py_buffer view
    if isinstance(opcode, int) and 0 <= opcode <= 0xF:
        op = opcode
    if op == _OP_TEXT or op == _OP_BINARY:
        pass
    elif op == _OP_CLOSE or op == _OP_PING or op == _OP_PONG:
        if n > _MAX_CONTROL_PAYLOAD:
            raise ValueError(f"control frame payload of {n} bytes (max {_MAX_CONTROL_PAYLOAD})")
    else:
        raise ValueError(f"cannot encode opcode {opcode!r} as a single frame")

    if type(payload) is bytes:  # the common case: no buffer export needed
        return _build_frame(op, PyBytes_AS_STRING(payload), n)
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        # The frame is built from the buffer's size, which is len(payload) for every bytes-like
        # object of bytes; check the control limit again on it so no illegal frame is ever built.
        if op >= _OP_CLOSE and view.len > _MAX_CONTROL_PAYLOAD:
            raise ValueError(
                f"control frame payload of {view.len} bytes (max {_MAX_CONTROL_PAYLOAD})"
            )
        return _build_frame(op, <const char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


cdef bytes _build_frame(int op, const char* payload, Py_ssize_t n):
    """FIN, opcode ``op``, no mask, the shortest length encoding, then payload[:n]."""
    cdef Py_ssize_t header = 2 if n < 126 else 4 if n < 65536 else 10
    cdef bytes frame = PyBytes_FromStringAndSize(NULL, header + n)
    cdef unsigned char* out = <unsigned char*>PyBytes_AS_STRING(frame)
    cdef int i
    out[0] = 0x80 | op
    if n < 126:
        out[1] = <unsigned char>n
    elif n < 65536:
        out[1] = 126
        out[2] = <unsigned char>(n >> 8)
        out[3] = <unsigned char>n
    else:
        out[1] = 127
        for i in range(8):
            out[2 + i] = <unsigned char>((<uint64_t>n) >> (56 - 8 * i))
    memcpy(out + header, payload, n)
    return frame


def encode_close(code, reason=""):
    """Return a close frame carrying ``code`` and ``reason``.

    Same contract as :func:`gateway.protocol._frames_py.encode_close`.
    """
    cdef bytes raw
    cdef const unsigned char* p
    cdef Py_ssize_t cut
    if not _valid_close_code(code):
        raise ValueError(f"close code {code!r} may not be sent")
    raw = reason.encode("utf-8")
    if len(raw) > _MAX_CLOSE_REASON:
        p = <const unsigned char*>PyBytes_AS_STRING(raw)
        cut = _MAX_CLOSE_REASON
        # Back up over continuation bytes (0b10xxxxxx) to the first byte of the split character.
        while p[cut] & 0xC0 == 0x80:
            cut -= 1
        raw = raw[:cut]
    return encode_frame(_OP_CLOSE, code.to_bytes(2, "big") + raw)


def parse_close_payload(payload):
    """Return ``(code, reason)`` from the payload of a received close frame.

    Same contract as :func:`gateway.protocol._frames_py.parse_close_payload`.
    """
    cdef Py_ssize_t n = len(payload)
    cdef Py_buffer view
    cdef const unsigned char* p
    cdef int code
    if n == 0:
        return 1005, ""
    if n == 1:
        raise FrameError(_CLOSE_PROTOCOL_ERROR, "close payload of 1 byte")
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        p = <const unsigned char*>view.buf
        n = view.len
        if n < 2:  # only an object whose len() disagrees with its buffer gets here
            raise ValueError("close payload: len() and buffer size disagree")
        code = (p[0] << 8) | p[1]
        if not _valid_close_code(code):
            raise FrameError(_CLOSE_PROTOCOL_ERROR, "invalid close code")
        if not _valid_utf8(p + 2, n - 2):
            raise FrameError(_CLOSE_INVALID_DATA, "close reason is not valid UTF-8")
        return code, PyUnicode_DecodeUTF8(<const char*>(p + 2), n - 2, NULL)
    finally:
        PyBuffer_Release(&view)
