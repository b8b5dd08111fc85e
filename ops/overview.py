"""What an operator wants to know first, derived from a /health document (pure, no I/O).

Shared by the dashboard (`GET /api/overview`), the periodic mining log line and
`run_node.py status`, so the three always agree on what "total hash rate" and
"expected time per block" mean.
"""
from __future__ import annotations

from typing import Any

MINER_PREFIX = "MinerActor-"
GATEWAY = "MinerGateway"


def _rate(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def hashrate_breakdown(health: dict[str, Any]) -> dict[str, Any]:
    """Hashes/s of local worker processes, Ray workers and external miners, and their total."""
    local = ray = external = 0.0
    local_workers = ray_workers = 0
    external_clients = 0
    for actor in health.get("actors") or []:
        name = str(actor.get("name", ""))
        if name.startswith(MINER_PREFIX):
            if actor.get("backend") == "ray":
                ray += _rate(actor.get("hashrate"))
                ray_workers += 1
            else:
                local += _rate(actor.get("hashrate"))
                local_workers += 1
        elif name == GATEWAY:
            external += _rate(actor.get("hashrate"))
            clients = actor.get("clients")
            external_clients = clients if isinstance(clients, int) else 0
    return {
        "total": local + ray + external,
        "local": local,
        "local_workers": local_workers,
        "ray": ray,
        "ray_workers": ray_workers,
        "external": external,
        "external_clients": external_clients,
    }


def expected_block_seconds(hashrate: float, difficulty: int) -> float | None:
    """Mean time to find a block: 16**difficulty hashes (a hex digit is zero 1 time in 16)."""
    if hashrate <= 0:
        return None
    return 16.0 ** difficulty / hashrate


def fmt_duration(seconds: Any) -> str:
    """'2.5s', '45s', '11m 31s', '3h 04m', '2d 5h'; '-' when unknown."""
    if not isinstance(seconds, (int, float)) or seconds != seconds or seconds < 0:
        return "-"
    if seconds == float("inf"):
        return "forever"
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def sync_progress(health: dict[str, Any]) -> dict[str, Any] | None:
    """Where a running sync stands: target, blocks fetched, percentage; None when not syncing.

    Reads the ConsensusRunner's status (`running`, `target_height`, `fetched`, and
    `total`/`percent`/`blocks_per_second`/`eta_seconds` when the sync engine reports
    them; a `fork_height` is used when there is no `total`).
    """
    consensus = health.get("consensus") or {}
    if not consensus.get("running"):
        return None
    target = consensus.get("target_height")
    fetched = consensus.get("fetched") or 0
    chain_height = (health.get("chain") or {}).get("height") or 0
    total = consensus.get("total")  # blocks this sync has to fetch, when the engine says
    if not isinstance(total, int) or total <= 0:
        # Otherwise: from the fork point if known, else from our tip (the usual catch-up).
        base = consensus.get("fork_height")
        base = base if isinstance(base, int) else chain_height
        total = target - base if isinstance(target, int) and target > base else None
    percent = consensus.get("percent")
    if not isinstance(percent, (int, float)) or not total:
        percent = min(100.0, 100.0 * fetched / total) if total else None
    rate = consensus.get("rate", consensus.get("blocks_per_second"))
    return {
        "stage": consensus.get("stage"),
        "target_height": target,
        "chain_height": chain_height,
        "fetched": fetched,
        "total": total,
        "percent": percent,
        "rate": rate if isinstance(rate, (int, float)) and rate > 0 else None,
        "eta_seconds": consensus.get("eta_seconds"),
    }


CLAIM_RECENT_SECONDS = 120.0  # a claim from a peer no longer in the tables still counts this long


def best_claim(peers: list[dict[str, Any]], claims: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The longest chain any known peer claims: `{"address", "name", "height", "hash", "age"}`, or None.

    Known peers are those in the peer tables (whatever their claim's age) and any
    address whose claim is younger than CLAIM_RECENT_SECONDS (a peer that just
    ANNOUNCEd, before the tables list it).
    """
    names = {f"{p.get('host')}:{p.get('port')}": p.get("name") for p in peers}
    best: dict[str, Any] | None = None
    for address, claim in claims.items():
        height, age = claim.get("height"), claim.get("age")
        if not isinstance(height, int) or isinstance(height, bool):
            continue
        if address not in names and not (isinstance(age, (int, float)) and age <= CLAIM_RECENT_SECONDS):
            continue
        if best is None or height > best["height"]:
            best = {"address": address, "name": names.get(address), "height": height, "hash": claim.get("hash"),
                    "age": age}
    return best


def sync_state(our_height: Any, peers: list[dict[str, Any]], claims: dict[str, dict[str, Any]],
               configured_peers: bool) -> tuple[str, dict[str, Any] | None]:
    """What the sync card says when no sync is running, and the best claim it is based on.

    `behind` when a known peer claims a longer chain than ours (a sync round follows
    by itself); `in sync` only when some peer's claim is known and none is longer;
    `checking` while peers are connected but none has told us its chain yet; `no
    peers` only when no peer is connected and none claimed anything lately;
    `alone` when none was ever configured either.
    """
    best = best_claim(peers, claims)
    if best is not None and isinstance(our_height, int) and best["height"] > our_height:
        return "behind", best
    if best is not None:
        return "in sync", best
    if peers:
        return "checking", None
    return ("no peers" if configured_peers else "alone"), None
