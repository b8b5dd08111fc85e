"""What a peer address and a piece of peer-supplied text may be (what the node accepts from a peer).

Pure, shared by the wire codec, the peer-table snapshot loader and GossipManager,
so the rule is written once. A host from the wire is an IP literal and nothing
else: a name would make the node resolve whatever an attacker sends (DNS from the
receive path), and anything `sendto()` can't take (NUL, lone surrogates, text IDNA
can't encode) would make sending fail with something other than OSError.
"""
from __future__ import annotations

import ipaddress

MIN_PORT = 1
MAX_PORT = 65535
MAX_HOST_CHARS = 45  # the longest IPv6 literal with an embedded IPv4 tail


def is_utf8_text(value: str) -> bool:
    """True when `value` can be encoded as UTF-8 (JSON "\\ud800" decodes to a lone surrogate, which can't)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_printable_text(value: str) -> bool:
    """Valid UTF-8 text with no control, format or separator characters other than the space."""
    return value.isprintable() and is_utf8_text(value)


def ip_literal(host: object) -> str | None:
    """The canonical form of an IPv4/IPv6 literal, or None for anything else (names included).

    Zone ids ("fe80::1%eth0") are refused: they name a local interface, which a
    remote peer has no business choosing.
    """
    if not isinstance(host, str) or not 0 < len(host) <= MAX_HOST_CHARS or not host.isascii():
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if getattr(address, "scope_id", None):
        return None
    return str(address)


def valid_port(port: object) -> bool:
    """An int in 1..65535 (bool is not a port)."""
    return isinstance(port, int) and not isinstance(port, bool) and MIN_PORT <= port <= MAX_PORT


Address = tuple[str, int]  # the one address type of the node: (host, port)


def format_address(address: Address) -> str:
    """`host:port`, as addresses appear in logs and in the ops endpoints."""
    return f"{address[0]}:{address[1]}"
