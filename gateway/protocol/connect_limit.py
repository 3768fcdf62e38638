"""New connections per source address: a token bucket each, shrunk by strikes; sans-IO, clock passed in.

A peer that reconnects hundreds of times a second costs the gateway an accept, an HTTP upgrade and
a token check per connection before any per-connection limit can act. ``ConnectLimit`` decides at
accept, from the source address alone, whether a new connection is read at all:

* **Bucket.** Each address (an IPv4 address, or an IPv6 /64: one subscriber's prefix) may open
  ``rate`` connections a second, ``burst`` at once. The defaults are generous on purpose: shoppers
  behind one carrier NAT, or a whole office of agents reconnecting after a deploy, share one
  address, and a reconnect storm from one address must pass (clients retry with backoff).
* **Strikes.** A connection closed for abuse (a flood over the rate limit, input past the
  pre-authentication budget, too many fragments, a frame that never completes, requests before
  authentication) gives its address a strike. Each strike halves the address's rate and burst, up
  to ``MAX_STRIKES``; one strike is forgiven every ``STRIKE_FORGIVEN_AFTER_S``. So a flooding peer
  is held to a trickle of new connections within a few of its own, while a clean address keeps
  the generous bucket.
* **Bounded.** The table remembers at most ``max_addresses`` addresses, least recently seen
  forgotten first (a forgotten address starts again with a full bucket and no strikes), so its
  memory is bounded whatever peers do (about 200 bytes an address).
"""

from __future__ import annotations

import math
import socket
from collections import OrderedDict

MAX_STRIKES = 6  # at most 1/64 of the rate and burst
STRIKE_FORGIVEN_AFTER_S = 10.0


def address_key(host: str) -> str | bytes:
    """What addresses are grouped by: an IPv4 address as it is; an IPv6 address by its /64 (the
    first 8 bytes, one subscriber's prefix; a zone suffix ``%eth0`` is dropped); an IPv4 address
    mapped into IPv6 (``::ffff:192.0.2.1``, from a dual-stack listener) as the IPv4 address."""
    if ":" not in host:
        return host
    host = host.split("%", 1)[0]
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return host
    if packed[:12] == b"\x00" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return packed[:8]


class AddressState:
    """One address's bucket and strikes."""

    __slots__ = ("tokens", "stamp", "strikes", "strike_stamp")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.stamp = now
        self.strikes = 0
        self.strike_stamp = now


class ConnectLimit:
    """The per-address admission of new connections (see the module doc). ``rate`` 0 admits all."""

    def __init__(self, rate: float, burst: float, max_addresses: int) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.max_addresses = max(1, max_addresses)
        self.table: OrderedDict[str | bytes, AddressState] = OrderedDict()

    def _state(self, key: str | bytes, now: float) -> AddressState:
        state = self.table.get(key)
        if state is None:
            state = self.table[key] = AddressState(self.burst, now)
            if len(self.table) > self.max_addresses:
                self.table.popitem(last=False)
        else:
            self.table.move_to_end(key)
            if state.strikes:
                forgiven = int((now - state.strike_stamp) // STRIKE_FORGIVEN_AFTER_S)
                if forgiven > 0:
                    state.strikes = max(0, state.strikes - forgiven)
                    state.strike_stamp += forgiven * STRIKE_FORGIVEN_AFTER_S
        return state

    def admit(self, host: str, now: float) -> float:
        """Take a token for a new connection from ``host`` at ``now`` (monotonic seconds): 0.0 when
        admitted, else the seconds until the address may try again (always > 0)."""
        if not self.rate:
            return 0.0
        state = self._state(address_key(host), now)
        scale = 0.5 ** state.strikes
        rate, burst = self.rate * scale, max(1.0, self.burst * scale)
        elapsed = now - state.stamp
        state.stamp = now
        tokens = state.tokens + (elapsed * rate if elapsed > 0.0 else 0.0)
        if tokens > burst:
            tokens = burst
        if tokens >= 1.0:
            state.tokens = tokens - 1.0
            return 0.0
        state.tokens = tokens
        return (1.0 - tokens) / rate

    def strike(self, host: str, now: float) -> int:
        """A connection from ``host`` was closed for abuse: one more strike; returns its count."""
        if not self.rate:
            return 0
        state = self._state(address_key(host), now)
        if state.strikes < MAX_STRIKES:
            if not state.strikes:
                state.strike_stamp = now
            state.strikes += 1
        # Tokens above the shrunk burst are gone now, not only at the next admission.
        state.tokens = min(state.tokens, max(1.0, self.burst * 0.5 ** state.strikes))
        return state.strikes

    def strikes(self, host: str) -> int:
        state = self.table.get(address_key(host))
        return state.strikes if state is not None else 0


def retry_after_s(wait: float) -> int:
    """The ``Retry-After`` header's whole seconds for a wait of ``wait`` seconds (at least 1)."""
    return max(1, math.ceil(wait))
