"""Durable storage of conversations, participants, messages and receipts, behind one contract."""

from .base import Conflict, NotFound, StoreBackend, StoreDamaged, StoreError
from .memory import MemoryBackend
from .sqlite import SqliteBackend

__all__ = [
    "Conflict",
    "MemoryBackend",
    "NotFound",
    "SqliteBackend",
    "StoreBackend",
    "StoreDamaged",
    "StoreError",
]
