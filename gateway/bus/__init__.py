"""Delivery across gateway processes: the Bus interface and its implementations."""

from .base import Bus, BusHandler
from .local import LocalBus

__all__ = ["Bus", "BusHandler", "LocalBus"]
