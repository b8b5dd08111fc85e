"""Reply budgets, so forged sources can't aim our replies at a victim.

UDP source addresses can be forged: a 17-byte STATS or a 30-byte GET_BLOCK with a
victim's address as its source would make us send the victim a 107-byte STATS_REPLY
or a block of up to a few KiB. Two rules, both keyed by the destination's IP (not
IP:port: one host is one victim, whatever port it is attacked on):

* `AntiAmplification` is QUIC's rule (RFC 9000, section 8): until an address is
  *validated* (it answered a STATS or GOSSIP we sent it, i.e. a node really is
  there) we send it at most `factor` (3) times the bytes it sent us.
* `TokenBuckets` cap the bytes per second to any one IP (validated or not) and
  to all destinations together.

Every reply is charged its real encoded size when it is sent. Tables are bounded
(least recently used first out), so a flood of distinct forged addresses can't
grow memory; losing an entry only ever loses credit, never grants it.

Pure: time is passed in.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class TokenBuckets:
    """One bucket of `burst` bytes per key, refilled at `rate` bytes per second."""

    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # key -> (tokens, updated)

    def allow(self, key: Hashable, cost: float, now: float) -> bool:
        """Take `cost` tokens from `key`'s bucket if it has them."""
        tokens, updated = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - updated) * self.rate)
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return allowed

    def available(self, key: Hashable, now: float) -> float:
        """Tokens `key` would have now (without taking any)."""
        tokens, updated = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - updated) * self.rate)

    def __len__(self) -> int:
        return len(self._buckets)


class AntiAmplification:
    """At most `factor` bytes out per byte in, per IP, until the IP is validated.

    `credit(ip, n)` for each request of n bytes whose reply would go to `ip`;
    `spend(ip, n, now)` before sending an n-byte reply. `probe_sent(ip, now)` when
    we send a STATS or GOSSIP to `ip`, `answered(ip, now)` when a STATS_REPLY or
    GOSSIP_REPLY comes from it: an answer within `window` seconds of a probe
    validates the IP for `validated_ttl` seconds (renewed by later answers).
    """

    def __init__(
        self,
        factor: float = 3.0,
        max_credit: float = 65536.0,
        window: float = 10.0,
        validated_ttl: float = 600.0,
        max_ips: int = 4096,
    ) -> None:
        self.factor = factor
        self.max_credit = max_credit
        self.window = window
        self.validated_ttl = validated_ttl
        self.max_ips = max_ips
        self._credit: OrderedDict[str, float] = OrderedDict()
        self._probed: OrderedDict[str, float] = OrderedDict()
        self._validated: OrderedDict[str, float] = OrderedDict()

    def credit(self, ip: str, nbytes: int) -> None:
        """`ip` (as the destination of the reply) is owed `factor * nbytes` more bytes."""
        value = min(self.max_credit, self._credit.pop(ip, 0.0) + self.factor * nbytes)
        _put(self._credit, ip, value, self.max_ips)

    def available(self, ip: str, now: float) -> float:
        """Bytes we may still send `ip` (infinite once validated)."""
        return float("inf") if self.is_validated(ip, now) else self._credit.get(ip, 0.0)

    def spend(self, ip: str, nbytes: int, now: float) -> bool:
        """Charge an `nbytes` reply to `ip`; False (nothing charged) if it would break the rule."""
        if self.is_validated(ip, now):
            return True
        credit = self._credit.get(ip, 0.0)
        if credit < nbytes:
            return False
        self._credit[ip] = credit - nbytes
        return True

    def wants_probe(self, ip: str, now: float) -> bool:
        """True if `ip` is not validated and was not probed in the last `window` seconds.

        A request we can't answer in full is answered with a probe instead (a bare
        STATS, no bigger than the request): an honest peer answers it, is validated,
        and its next request gets the whole reply; a forged source costs its victim
        one small datagram per `window`.
        """
        if self.is_validated(ip, now):
            return False
        asked = self._probed.get(ip)
        return asked is None or now - asked > self.window

    def probe_sent(self, ip: str, now: float) -> None:
        _put(self._probed, ip, now, self.max_ips)

    def answered(self, ip: str, now: float) -> bool:
        """A reply came from `ip`: validates it if we asked it something recently."""
        asked = self._probed.get(ip)
        if asked is None or now - asked > self.window:
            return False
        _put(self._validated, ip, now, self.max_ips)
        self._credit.pop(ip, None)
        return True

    def is_validated(self, ip: str, now: float) -> bool:
        since = self._validated.get(ip)
        if since is None:
            return False
        if now - since > self.validated_ttl:
            del self._validated[ip]
            return False
        return True

    def validated_count(self) -> int:
        return len(self._validated)


def _put(table: OrderedDict[str, float], key: str, value: float, limit: int) -> None:
    """Insert as most recent; drop the least recent past `limit`."""
    table.pop(key, None)
    table[key] = value
    while len(table) > limit:
        table.popitem(last=False)
