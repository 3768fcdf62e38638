"""The content type of an upload, read from its bytes: never from its name or declared type.

``filetype`` matches magic numbers for the binary formats (HEIC: the ``heic`` brand; the other
brands of HEVC-coded HEIF, such as the ``heix`` of 10-bit photos, are read here from the ``ftyp``
box). What it does not recognise is plain
text only when it is UTF-8 with no NUL and no markup: an HTML or SVG page (which a browser could
run as script from our origin) is no type at all, and so refused by every kind.
"""

from __future__ import annotations

import codecs
import re
from typing import BinaryIO

import filetype

#: Bytes read to decide a binary type (filetype itself looks at no more than 8 KiB).
HEAD_BYTES = 8192
TEXT_CHUNK = 64 * 1024

# filetype's names, where the rest of Kefu uses the registered ones.
_CANONICAL = {"audio/x-wav": "audio/wav"}
# Major brands of HEIF files whose images are HEVC-coded (ISO/IEC 23008-12), beyond filetype's ``heic``.
_HEIC_BRANDS = frozenset({b"heix", b"heim", b"heis", b"hevc", b"hevx"})
# Markup a browser would render: refused even in an otherwise plain text.
_MARKUP = re.compile(rb"<\s*(!doctype|html|head|body|script|svg|iframe|object|embed|meta|\?xml)", re.IGNORECASE)


def binary_type(head: bytes) -> str | None:
    """The MIME type filetype reads from the first bytes, or None."""
    kind = filetype.guess(head)
    if kind is None:
        return "image/heic" if head[4:8] == b"ftyp" and head[8:12] in _HEIC_BRANDS else None
    return _CANONICAL.get(kind.mime, kind.mime)


def content_type(source: BinaryIO) -> str | None:
    """The content type of ``source`` (read from the start; its position is left at the end of
    what was read), or None when it is neither a known binary type nor plain text."""
    source.seek(0)
    head = source.read(HEAD_BYTES)
    found = binary_type(head)
    if found is not None:
        return found
    source.seek(0)
    return "text/plain" if _is_plain_text(source) else None


def _is_plain_text(source: BinaryIO) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    tail = b""  # the end of the previous chunk: markup split across two chunks is still seen
    while chunk := source.read(TEXT_CHUNK):
        if b"\x00" in chunk or _MARKUP.search(tail + chunk):
            return False
        try:
            decoder.decode(chunk)
        except UnicodeDecodeError:
            return False
        tail = chunk[-32:]
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True
