"""Webhooks: a tenant's events POSTed, signed, to its backend (gateway.webhooks.sender)."""

from .payloads import EVENTS, WebhookError, check_events, check_url, new_secret, signature, verify
from .sender import RECORD_KIND, STATUS_KIND, Subscription, WebhookCollector, Webhooks, WebhookStats

__all__ = [
    "EVENTS", "RECORD_KIND", "STATUS_KIND", "Subscription", "WebhookCollector", "WebhookError", "WebhookStats", "Webhooks",
    "check_events", "check_url", "new_secret", "signature", "verify",
]
