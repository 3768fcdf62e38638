"""Sans-IO WebSocket frame codec, server side (RFC 6455 section 5): the switch between its twins.

Two implementations of one API live behind this module:

* ``gateway._frames_c``, compiled by ``setup.py`` from ``native/frames.pyx`` (Cython), used whenever
  it is built;
* :mod:`gateway.protocol._frames_py`, the pure-Python twin, which documents the behaviour in full,
  used when the extension is not built or ``KEFU_PUREPYTHON=1`` is set.

Both raise the same :class:`FrameError` class (from :mod:`gateway.protocol._frame_errors`) with the
same ``code`` and ``reason`` for the same input. :data:`IMPLEMENTATION` says which one was picked
(``"native"`` or ``"python"``), for build information and logs. An extension that is present but
broken is not silently replaced: the import error propagates (see :mod:`gateway._native`).
"""

from __future__ import annotations

from .. import _native
from ._frame_errors import FrameError

__all__ = [
    "IMPLEMENTATION",
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

_impl = _native.load("frames")
if _impl is None:
    from . import _frames_py as _impl

    IMPLEMENTATION = "python"
else:
    # One exception class for both twins: an extension built against another FrameError would
    # escape ``except FrameError`` in the connection layer. That is a broken build: say so.
    if _impl.FrameError is not FrameError:
        raise ImportError("gateway._frames_c raises its own FrameError; rebuild the extension")
    IMPLEMENTATION = "native"

OP_CONT, OP_TEXT, OP_BINARY = _impl.OP_CONT, _impl.OP_TEXT, _impl.OP_BINARY
OP_CLOSE, OP_PING, OP_PONG = _impl.OP_CLOSE, _impl.OP_PING, _impl.OP_PONG
FrameDecoder = _impl.FrameDecoder
encode_frame = _impl.encode_frame
encode_close = _impl.encode_close
parse_close_payload = _impl.parse_close_payload
del _impl
