"""Durable storage of conversations, participants, messages and receipts, behind one contract."""

from .base import Conflict, NotFound, StaleFence, StoreBackend, StoreDamaged, StoreError
from .memory import MemoryBackend
from .postgres import PostgresBackend, StoreUnavailable
from .sqlite import SqliteBackend

__all__ = [
    "Conflict",
    "MemoryBackend",
    "NotFound",
    "PostgresBackend",
    "SqliteBackend",
    "StaleFence",
    "StoreBackend",
    "StoreDamaged",
    "StoreError",
    "StoreUnavailable",
]
