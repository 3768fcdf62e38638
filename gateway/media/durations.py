"""How long a voice message or video plays, read by mutagen from the container's headers.

mutagen reads MP4/M4A, Ogg (Opus, Vorbis), MP3, WAV and ADTS AAC without decoding any audio. It
does not read WebM or AMR: their duration is unknown (None), which the kinds allow.
"""

from __future__ import annotations

import math
from typing import BinaryIO

import mutagen


def duration_ms(source: BinaryIO) -> int | None:
    """The duration in milliseconds, or None when mutagen cannot read one."""
    source.seek(0)
    try:
        parsed = mutagen.File(source)
    except (mutagen.MutagenError, ValueError, EOFError, OverflowError, IndexError):
        # A container mutagen takes for its own but cannot parse: the duration is unknown.
        return None
    length = getattr(getattr(parsed, "info", None), "length", None)
    if not isinstance(length, (int, float)) or not math.isfinite(length) or length < 0:
        return None
    return round(length * 1000)
