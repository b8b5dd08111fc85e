"""Reading the nodes from the host: /health, /chain, /metrics over their ops HTTP."""
from __future__ import annotations

import http.client
import json
from typing import Any

CHAIN_PAGE = 100  # the most /chain returns at once


def get(host: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes] | None:
    """(status, body), or None if the node did not answer."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def health(host: str, port: int, timeout: float = 5.0) -> dict[str, Any] | None:
    answer = get(host, port, "/health", timeout)
    if answer is None:
        return None
    try:
        doc = json.loads(answer[1])
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def health_record(doc: dict[str, Any]) -> dict[str, Any]:
    """What the lab keeps of one /health: tip, peer tables, the process's own CPU and memory."""
    chain = doc.get("chain") or {}
    peers = doc.get("peers") or []
    process = doc.get("process") or {}
    return {
        "status": doc.get("status"),
        "height": chain.get("height"),
        "hash": chain.get("hash"),
        "tried": sum(1 for p in peers if p.get("table") == "tried") if isinstance(peers, list) else None,
        "new": sum(1 for p in peers if p.get("table") == "new") if isinstance(peers, list) else None,
        "rss": process.get("rss_bytes"),
        "hashrate": sum(a.get("hashrate") or 0.0 for a in doc.get("actors") or []
                        if isinstance(a, dict) and str(a.get("name", "")).startswith("MinerActor")),
        "pid": process.get("pid"),
    }


def chain_hashes(host: str, port: int, height: int, timeout: float = 10.0) -> list[str] | None:
    """The hashes of the node's chain, blocks 0..height-1 (paged through /chain)."""
    hashes: list[str] = []
    while len(hashes) < height:
        answer = get(host, port, f"/chain?from={len(hashes)}&limit={CHAIN_PAGE}", timeout)
        if answer is None or answer[0] != 200:
            return None
        page = json.loads(answer[1])
        if not page:
            break
        hashes += [block["hash"] for block in page]
    return hashes[:height]


def datagram_counts(host: str, port: int) -> dict[str, dict[str, float]] | None:
    """The node's own counters of datagrams sent and received (by message type) and dropped (by reason), from /metrics."""
    answer = get(host, port, "/metrics")
    if answer is None or answer[0] != 200:
        return None
    counts: dict[str, dict[str, float]] = {"sent": {}, "received": {}, "dropped": {}}
    series = (("node_datagrams_sent_total{", "sent", 'type="'), ("node_datagrams_received_total{", "received", 'type="'),
              ("node_datagrams_dropped_total{", "dropped", 'reason="'))
    for line in answer[1].decode(errors="replace").splitlines():
        for name, key, label in series:
            if line.startswith(name):
                labels, _, value = line.rpartition(" ")
                kind = labels.split(label, 1)[-1].split('"', 1)[0]
                counts[key][kind] = float(value)
    return counts


def udp_receive_drops() -> int | None:
    """The kernel's count of UDP datagrams dropped for a full socket buffer (RcvbufErrors), machine-wide.

    Neither the relay nor a node sees these: a process too slow to read its socket
    loses datagrams in the kernel. A lab run reads it before and after.
    """
    try:
        lines = [line.split() for line in open("/proc/net/snmp") if line.startswith("Udp:")]
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None
