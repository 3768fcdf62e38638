"""Delivery across gateway processes: the Bus interface and its implementations."""

from .base import Bus, BusError, BusHandler
from .local import LocalBus
from .redis import RedisBus

__all__ = ["Bus", "BusError", "BusHandler", "LocalBus", "RedisBus"]
