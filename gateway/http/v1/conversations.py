"""``/v1/conversations``: list, transcript, post, resolve and transfer (pending the service API)."""

from __future__ import annotations

OPERATIONS = ()
