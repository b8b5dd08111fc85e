"""Reply budgets, so forged sources can't aim our replies at a victim.

UDP source addresses can be forged: a 17-byte STATS or a 30-byte GET_BLOCK with a
victim's address as its source would make us send the victim a 107-byte STATS_REPLY
or a block of up to a few KiB. Two rules, both keyed by the destination's IP (not
IP:port: one host is one victim, whatever port it is attacked on):

* `AntiAmplification` is QUIC's rule (RFC 9000, section 8): until an address is
  *validated* (it answered a STATS or GOSSIP we sent it, i.e. a node really is
  there) we send it at most `factor` (3) times the bytes it sent us.
  Before that rule applies, an unvalidated IP has an *allowance*: up to
  `grace_bytes` (512 KB) of replies per `grace_period` (10 minutes), and all
  unvalidated IPs together up to `total_grace_bytes` (1 MB) per minute. It is
  for peers that never validate (a fresh source port per request and no
  listening socket: our probes never reach them), which would otherwise get 3x
  their 30-byte requests, i.e. almost no blocks. A forged-source victim gets at
  most 3x the attacker's bytes plus its allowance, and what all unvalidated IPs
  get beyond 3x is capped in absolute terms.
* `TokenBuckets` cap the bytes per second to any one IP (validated or not) and
  to all destinations together.
* `RoundGate` coalesces requests for an expensive action (a CONSENSUS round,
  which sends a STATS to every peer): at most one released per `gap` seconds,
  and at most one waiting, however many ask.

Every reply is charged its real encoded size when it is sent. Tables are bounded
(least recently used first out), so a flood of distinct forged addresses can't
grow memory; losing an entry only ever loses credit, never grants it (an
allowance entry is only ever dropped once it has refilled: a full table gives a
new IP no allowance rather than a victim a fresh one).

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
    """At most `factor` bytes out per byte in, per IP, until the IP is validated,
    past a bounded allowance (`grace_bytes` per IP, `total_grace_bytes` in all).

    `credit(ip, n)` for each request of n bytes whose reply would go to `ip`;
    `spend(ip, n, now)` before sending an n-byte reply (the 3x credit is used
    first, then the allowance). `probe_sent(ip, now)` when we send a STATS or
    GOSSIP to `ip`, `answered(ip, now)` when a STATS_REPLY or GOSSIP_REPLY comes
    from it: an answer within `window` seconds of a probe validates the IP for
    `validated_ttl` seconds (renewed by later answers).

    The allowances are counted in windows: an IP may get `grace_bytes` beyond 3x
    in the `grace_period` from the first byte of it (then a new window starts),
    and all unvalidated IPs together `total_grace_bytes` per `total_grace_period`
    window. So within one window a victim gets at most 3x plus `grace_bytes`,
    exactly. A zero `grace_bytes` turns the allowance off (the plain 3x rule).
    """

    def __init__(
        self,
        factor: float = 3.0,
        max_credit: float = 65536.0,
        window: float = 10.0,
        validated_ttl: float = 600.0,
        max_ips: int = 4096,
        grace_bytes: float = 0.0,
        grace_period: float = 600.0,
        total_grace_bytes: float = 0.0,
        total_grace_period: float = 60.0,
        max_grace_ips: int = 8192,
    ) -> None:
        self.factor = factor
        self.max_credit = max_credit
        self.window = window
        self.validated_ttl = validated_ttl
        self.max_ips = max_ips
        self.grace_bytes = grace_bytes
        self.grace_period = grace_period
        self.total_grace_bytes = total_grace_bytes
        self.total_grace_period = total_grace_period
        self.max_grace_ips = max_grace_ips
        self._credit: OrderedDict[str, float] = OrderedDict()
        self._probed: OrderedDict[str, float] = OrderedDict()
        self._validated: OrderedDict[str, float] = OrderedDict()
        self._grace: OrderedDict[str, tuple[float, float]] = OrderedDict()  # ip -> (window start, bytes used)
        self._total_grace: tuple[float, float] | None = None  # (window start, bytes used); None: none yet
        self.grace_spent = 0.0  # bytes sent beyond 3x to unvalidated IPs, in all (for /health and benches)

    def credit(self, ip: str, nbytes: int) -> None:
        """`ip` (as the destination of the reply) is owed `factor * nbytes` more bytes."""
        value = min(self.max_credit, self._credit.pop(ip, 0.0) + self.factor * nbytes)
        _put(self._credit, ip, value, self.max_ips)

    def available(self, ip: str, now: float) -> float:
        """Bytes we may still send `ip` (infinite once validated)."""
        if self.is_validated(ip, now):
            return float("inf")
        return self._credit.get(ip, 0.0) + self._grace_available(ip, now)

    def spend(self, ip: str, nbytes: int, now: float) -> bool:
        """Charge an `nbytes` reply to `ip`; False (nothing charged) if it would break the rule."""
        if self.is_validated(ip, now):
            return True
        credit = self._credit.get(ip, 0.0)
        if credit >= nbytes:
            self._credit[ip] = credit - nbytes
            return True
        beyond = nbytes - credit
        if self._grace_available(ip, now) < beyond:
            return False
        self._credit.pop(ip, None)
        start, used = _window(self._grace.pop(ip, None), self.grace_period, now)
        self._grace[ip] = (start, used + beyond)  # most recently used last
        start, used = _window(self._total_grace, self.total_grace_period, now)
        self._total_grace = (start, used + beyond)
        self.grace_spent += beyond
        return True

    def _own_grace(self, ip: str, now: float) -> float:
        """`ip`'s own allowance left now (all of it for an IP not tracked or whose window ended)."""
        return self.grace_bytes - _window(self._grace.get(ip), self.grace_period, now)[1]

    def _grace_available(self, ip: str, now: float) -> float:
        """What `ip` may still get beyond 3x now: its own allowance, within the shared one."""
        if self.grace_bytes <= 0 or self.total_grace_bytes <= 0:
            return 0.0
        if ip not in self._grace and len(self._grace) >= self.max_grace_ips and not self._evict_refilled(now):
            return 0.0  # every tracked IP is still spending: no fresh allowance for a new one
        return max(0.0, min(self._own_grace(ip, now), self._total_now(now)))

    def _evict_refilled(self, now: float) -> bool:
        """Drop the least recently used allowance if its window has ended (forgetting it then grants nothing)."""
        ip, entry = next(iter(self._grace.items()))
        if _window(entry, self.grace_period, now)[1] > 0:
            return False
        del self._grace[ip]
        return True

    def _total_now(self, now: float) -> float:
        return self.total_grace_bytes - _window(self._total_grace, self.total_grace_period, now)[1]

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


class RoundGate:
    """Coalesces requests for an expensive action: at most one released per `gap` seconds.

    `ask(now)` is True when the action may run now; otherwise the request is kept
    as the one waiting (however many more come) and `poll(now)` releases it at
    `due()`. So whatever the request rate, the action runs at most once per `gap`
    on average (twice in a `gap` only when one was already waiting), and nothing
    asked for is lost: the last request is served within `gap`.
    """

    def __init__(self, gap: float) -> None:
        self.gap = gap
        self._last: float | None = None
        self.waiting = False
        self.coalesced = 0  # requests folded into one already released or waiting

    def ask(self, now: float) -> bool:
        if self._last is None or now - self._last >= self.gap:
            self._last, self.waiting = now, False
            return True
        if self.waiting:
            self.coalesced += 1
        self.waiting = True
        return False

    def due(self) -> float | None:
        """When the waiting request may run (None: none waiting)."""
        return None if not self.waiting or self._last is None else self._last + self.gap

    def poll(self, now: float) -> bool:
        """True (once) when the waiting request is due: run it now."""
        due = self.due()
        if due is None or now < due:
            return False
        self._last, self.waiting = now, False
        return True


def _window(entry: tuple[float, float] | None, period: float, now: float) -> tuple[float, float]:
    """(start, bytes used) of the allowance window current at `now`: a fresh one once `period` has passed."""
    if entry is None or now - entry[0] >= period:
        return now, 0.0
    return entry


def _put(table: OrderedDict[str, float], key: str, value: float, limit: int) -> None:
    """Insert as most recent; drop the least recent past `limit`."""
    table.pop(key, None)
    table[key] = value
    while len(table) > limit:
        table.popitem(last=False)
