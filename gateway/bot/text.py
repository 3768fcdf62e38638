"""Text helpers every part of the bot shares: normalisation and the shopper's language.

Shoppers type on phones with full-width punctuation, stray spaces and mixed case; folding these
away before any matching means the knowledge base needs one spelling per phrase, not five.
"""

from __future__ import annotations

import re
import unicodedata

LANGUAGES = ("zh", "en")

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """Fold width (NFKC: ``？`` -> ``?``, ``ＡＢ`` -> ``AB``), case and runs of whitespace."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def detect_language(text: str, default: str = "zh") -> str:
    """``"zh"`` when the text has any Chinese character, ``"en"`` when it has Latin letters and no
    Chinese, else ``default`` (emoji, digits, "???": keep the conversation's language)."""
    if _CJK.search(text):
        return "zh"
    if _LATIN.search(text):
        return "en"
    return default
