"""The records of the message path, as frozen dataclasses: the pure-Python twin of
``native/records.pyx`` (built as ``gateway._records_c``). Import them from :mod:`gateway.model`.

Both twins have the same constructor (positional or keyword arguments, ``duplicate`` defaulting to
False), the same ``repr``, equality (same type and equal fields), hash (of the fields' tuple), are
immutable (assignment raises ``AttributeError``) and pickle. The native twin is not a dataclass:
``dataclasses.replace``/``astuple`` are not used on these three.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Appended", "AppendMessage", "StoredMessage"]


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A message as it is durable: ``body`` is the msgpack encoding of the body map, kept packed so
    that delivery frames splice it in without re-encoding."""

    conv_id: str
    seq: int
    cmid: str
    sender: str
    sender_role: str
    ts: int
    body: bytes


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """Append one message. The store assigns ``seq`` (last_seq + 1) and ``ts``; if the same
    (conv_id, sender, cmid) is already stored, nothing is written and the stored one is returned."""

    conv_id: str
    cmid: str
    sender: str
    sender_role: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Appended:
    """The result of an AppendMessage: the stored message, and whether it was already there."""

    message: StoredMessage
    duplicate: bool = False
