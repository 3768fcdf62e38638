"""Kefu (客服): a realtime customer-service gateway.

Shopper apps, agent workspaces and bots speak msgpack over WebSocket (subprotocol ``kefu.v1``);
every message is acknowledged once durable and carries a gap-free per-conversation sequence number.
"""

__version__ = "0.1.0"
