"""The one error of the WebSocket frame codec, shared by both twins.

``gateway.protocol._frames_py`` (pure Python) and ``gateway._frames_c`` (Cython, built from
``native/frames.pyx``) both import :class:`FrameError` from here, so ``except FrameError`` catches
what either raises, whichever one ``gateway.protocol.frames`` selected.
"""

from __future__ import annotations

__all__ = ["FrameError"]


class FrameError(Exception):
    """The peer broke the protocol; close the connection with ``.code`` and ``.reason``.

    ``code`` is 1002 (protocol error), 1007 (invalid payload data) or 1009 (message too big);
    ``reason`` is a short ASCII text, safe to send as the close reason.
    """

    code: int
    reason: str

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason} (close code {self.code})"
