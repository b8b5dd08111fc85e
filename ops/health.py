"""The /health document: what the supervision tree and the end-to-end probes say, judged.

Pure: it takes the facts the node gathered (the supervisor's snapshot, the probe
report) and decides the status an operator, a load balancer or a test sees:

* `down`: the root gave up (the node is stopping), or a probe of a core part
  (UDP STATS through NetworkIO and ChainKeeper, the store, the prober itself)
  has not succeeded recently;
* `degraded`: an expendable subtree gave up (cooling down), an actor is being
  restarted or is hung, or an expendable probe (the miner gateway) fails;
* `ok`: none of that. A busy actor (a long inbox, a long message within its
  budget) is not a problem and is only shown as busy.

`reason` names each problem in a few words, the part first.
"""
from __future__ import annotations

from typing import Any


def render_health(facts: dict[str, Any]) -> dict[str, Any]:
    """`{"status", "reason", "actors", "supervision", "probes", "gave_up"}` from the node's facts."""
    tree = facts["supervision"]
    actors = facts["actors"]
    probes = facts.get("probes") or []
    gave_up = facts.get("gave_up")
    down: list[str] = []
    degraded: list[str] = []
    if gave_up:
        down.append(str(gave_up))
    failing = [p for p in probes if not p["ok"]]
    busy = {a["name"]: a for a in actors if a.get("activity") in ("busy", "hung")}
    for probe in failing:
        text = f"{probe['part']}: {probe['name']} probe failing ({_age(probe)}{_error(probe)})"
        if probe["part"] == "NetworkIO" and "ChainKeeper" in busy:
            keeper = busy["ChainKeeper"]
            text += f"; ChainKeeper busy ({keeper.get('queue_depth') or 0} queued)"
        (down if probe["core"] else degraded).append(text)
    degraded += _tree_problems(tree)
    hung = [a for a in actors if a.get("activity") == "hung"]
    degraded += [f"{a['name']} hung in {a.get('current')!r} for {a.get('busy_for') or 0:.0f}s "
                 f"(budget {a.get('budget') or 0:g}s)" for a in hung]
    dead_threads = [f"{a['name']}: thread {t['name']} died ({t['error']})" for a in actors
                    for t in a.get("threads") or [] if not t.get("alive") and t.get("error")]
    degraded += dead_threads
    degraded += [f"thread {t['name']} died ({t['error']}); restarting it" for t in facts.get("threads") or []
                 if not t.get("alive")]
    if down:
        status = "down"
    elif degraded:
        status = "degraded"
    else:
        status = "ok"
    problems = down + degraded
    return {"status": status, "reason": "; ".join(problems) if problems else None, "actors": actors,
            "supervision": tree, "probes": probes, "threads": facts.get("threads") or [], "gave_up": gave_up}


def _age(probe: dict[str, Any]) -> str:
    age = probe.get("last_success_age")
    return "never succeeded" if age is None else f"last success {age:.1f}s ago"


def _error(probe: dict[str, Any]) -> str:
    return f": {probe['last_error']}" if probe.get("last_error") else ""


def _tree_problems(tree: dict[str, Any]) -> list[str]:
    """Subtrees that gave up, then `restarting: <actors>`."""
    gave_up: list[str] = []
    down: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        for child in node["children"]:
            if child["kind"] == "supervisor":
                if child["state"] in ("cooling_down", "gave_up", "giving_up"):
                    when = f"; restarting it in {child['restart_in']:.0f}s" if child.get("restart_in") is not None else ""
                    gave_up.append(f"{child['name']} gave up ({child.get('reason') or child.get('last_error')}){when}")
                else:
                    walk(child)
            elif child["state"] != "running":
                down.append(child["name"])

    walk(tree)
    return gave_up + (["restarting: " + ", ".join(down)] if down else [])
