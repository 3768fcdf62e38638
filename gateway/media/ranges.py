"""HTTP Range requests (RFC 9110 §14) on one attachment: a single byte range, so video seeks.

Only one range is served. A header this parser cannot use (another unit, several ranges, a
malformed spec) is ignored, as the RFC allows, and the whole attachment is sent with 200; a range
that starts past the end is 416 with ``Content-Range: bytes */size``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import MediaError

_SPEC = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The range to send for a Range header over ``size`` bytes; None: send everything (200).

    Raises MediaError ``range_not_satisfiable`` (416)."""
    if header is None:
        return None
    m = _SPEC.fullmatch(header)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if len(first) > 18 or len(last) > 18:
        return None
    if not first:
        if not last:
            return None
        suffix = int(last)  # the last `suffix` bytes
        if suffix == 0 or size == 0:
            raise MediaError("range_not_satisfiable", f"the range is empty; the attachment has {size} bytes")
        return ByteRange(max(size - suffix, 0), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise MediaError("range_not_satisfiable", f"the range starts at {start}; the attachment has {size} bytes")
    return ByteRange(start, min(int(last), size - 1) if last else size - 1)


def unsatisfiable_content_range(size: int) -> str:
    return f"bytes */{size}"
