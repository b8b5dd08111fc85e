"""The dashboard in a real browser: headless system Chromium, driven by Playwright, on loopback only.

Skips (saying why) where Chromium or Playwright is missing; `.ci/run` installs
Chromium so CI runs it.
"""
from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

import pytest

from chain.datadir import DataDir
from chain.store import ChainStore
from sim.chains import make_chain
from tests.helpers import free_tcp_port, wait_for, wait_for_chain_height, wire_block
from tests.ops.browser import browser_page, skip_reason

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")

FIRST, THEN = 12, 15
TIMEOUT_MS = 20_000


@pytest.fixture
def node(make_node, tmp_path):
    data_dir = tmp_path / "seeded"
    DataDir.open(data_dir, 2).close()
    store = ChainStore(data_dir)
    store.replace_from(0, make_chain(FIRST, 2))
    store.close()
    return make_node(http_port=free_tcp_port(), data_dir=data_dir)


def test_dashboard_renders_updates_in_place_and_explorer_links_work(node, client):
    chain = make_chain(THEN, 2)
    base = f"http://127.0.0.1:{node.config.http_port}"
    problems: list[str] = []
    requested: list[str] = []
    with browser_page() as page:
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("request", lambda r: requested.append(r.url))
        page.set_default_timeout(TIMEOUT_MS)

        page.goto(base + "/")
        page.wait_for_function(f"document.getElementById('chain-height').textContent === '{FIRST}'")
        assert page.text_content("#chain-detail").startswith(f"top is #{FIRST - 1}")
        assert page.text_content("#sync-state") == "on its own"
        assert page.locator("#blocks tbody tr").count() == 10
        assert page.locator("#actors tbody tr").count() == 4
        assert page.locator("#chart-hashrate *").count() > 0  # the charts are drawn inline, no network
        page.evaluate("window.__sameDocument = true")
        updates_before = int(page.evaluate("document.body.dataset.updates"))

        for block in chain[FIRST:]:  # the chain grows while the page is open
            client.send(node.config.port, wire_block(block))
        wait_for_chain_height(client, node.config.port, THEN)
        page.wait_for_function(f"document.getElementById('chain-height').textContent === '{THEN}'")
        assert page.evaluate("window.__sameDocument === true")  # updated in place: no reload
        assert int(page.evaluate("document.body.dataset.updates")) > updates_before
        assert page.text_content("#blocks tbody tr:first-child td:first-child") == str(THEN - 1)

        assert "ConsensusRunner" in page.text_content("#supervision")  # the supervision tree, when /health has it

        node.ctx.registry.proxy("GossipManager").crash.defer("browser test")  # a problem shows, highlighted
        page.wait_for_function("""[...document.querySelectorAll('#actors tbody tr')].some(
            (tr) => tr.cells[0].textContent === 'GossipManager' && tr.cells[2].textContent === '1'
                    && tr.cells[2].classList.contains('bad'))""")
        assert "browser test" in page.text_content("#actors")  # its last error
        assert page.evaluate("window.__sameDocument === true")

        page.click("#blocks tbody tr:first-child td:first-child a")  # latest block -> its page
        page.wait_for_url(f"{base}/block/{THEN - 1}")
        assert page.text_content("#block-hash") == chain[THEN - 1].hash
        page.click("#prev")
        page.wait_for_url(f"{base}/block/{THEN - 2}")
        assert page.text_content("#block-height") == str(THEN - 2)
        page.click("#next")
        page.wait_for_url(f"{base}/block/{THEN - 1}")

        page.fill("input[name=q]", chain[3].hash)  # search by hash
        page.press("input[name=q]", "Enter")
        page.wait_for_url(f"{base}/block/{chain[3].hash}")
        assert page.text_content("#block-height") == "3"
        page.click("a.node-name")
        page.wait_for_url(f"{base}/")
        page.fill("#search-q", "7")  # search by height, from the dashboard
        page.press("#search-q", "Enter")
        page.wait_for_url(f"{base}/block/7")
        assert page.text_content("#block-hash") == chain[7].hash

    assert problems == []
    assert requested and all(url.startswith(base + "/") for url in requested), requested


# The README's screenshot is rewritten only when asked (UPDATE_SCREENSHOT=1): a test run must not
# leave a tracked file changed. Otherwise the page is still captured, into the test's own directory.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
FRESHNESS_TIMEOUT_MS = 60_000
DIFFICULTY = 5  # a block every fraction of a second to a few seconds, whatever the kernel
HOUR = 3600.0  # longer than the test runs: a periodic round this far apart never happens within it


def test_a_mining_peers_new_blocks_show_on_the_other_nodes_page_through_her_announces(make_node, tmp_path):
    """Two nodes: alice mines, bob joined through her. Each block alice finds reaches bob's page
    as her claim (her ANNOUNCE refreshes it), not with a periodic round: sync rounds and keep-alive
    GOSSIP (whose answer also asks her claim) are an hour apart here, so none falls within the test
    after the join, and her claim showing at all is the proof.
    The sync card never says "in sync" or "no peers" while she claims more. The time from alice
    storing a block to bob's page showing it is measured and printed (the issue asks for under
    5 s), never asserted. Captures alice's page (into docs/dashboard.png with UPDATE_SCREENSHOT=1)."""
    hourly = {"consensus_interval": HOUR, "gossip_interval": HOUR, "peer_timeout": 2 * HOUR}
    alice = make_node(name="alice", difficulty=DIFFICULTY, miners=1, http_port=free_tcp_port(), **hourly)
    bob = make_node(name="bob", difficulty=DIFFICULTY, peers=(("127.0.0.1", alice.config.port),),
                    http_port=free_tcp_port(), **hourly)
    base = f"http://127.0.0.1:{bob.config.http_port}"
    alice_address = f"127.0.0.1:{alice.config.port}"
    problems: list[str] = []
    with browser_page() as page:
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.set_default_timeout(FRESHNESS_TIMEOUT_MS)
        page.goto(base + "/")
        page.wait_for_function(f"""[...document.querySelectorAll('#peers tbody tr')].some(
            (tr) => tr.cells[1].textContent === '{alice_address}')""")
        delays = []
        for _ in range(3):
            height = wait_for(lambda: _chain_height(alice) or None, timeout=60)
            before = wait_for(lambda: (h := _chain_height(alice)) > height and h, timeout=60)
            stored = time.monotonic()  # alice has just stored block `before - 1`
            page.wait_for_function(f"""[...document.querySelectorAll('#peers tbody tr')].some(
                (tr) => tr.cells[1].textContent === '{alice_address}'
                        && parseInt(tr.cells[2].textContent.replace(/,/g, ''), 10) >= {before})""")
            delays.append(time.monotonic() - stored)
            # One render's card and chain height, read together.
            state, shown = page.evaluate("""[document.getElementById('sync-state').textContent,
                parseInt(document.getElementById('chain-height').textContent.replace(/,/g, ''), 10)]""")
            if shown < before:  # bob's own chain lags alice's claim: the card must say so
                assert state in ("behind", "syncing") or state.startswith("syncing"), state
            assert state not in ("no peers", "on its own"), state
        print(f"peer freshness: alice's new block on bob's page after {', '.join(f'{d:.2f}s' for d in delays)}")
        peers = http_json(bob.config.http_port, "/peers")
        entry = next(p for p in peers if p["port"] == alice.config.port)
        assert isinstance(entry["claimed_height"], int) and entry["claimed_height"] >= before
        assert isinstance(entry["claimed_hash"], str) and len(entry["claimed_hash"]) == 64
        assert isinstance(entry["claim_age"], (int, float)) and entry["claim_age"] >= 0
        # The README's screenshot: alice's page (she mines, bob is her peer), once her charts have points.
        page.goto(f"http://127.0.0.1:{alice.config.http_port}/")
        page.wait_for_function("""document.querySelectorAll('#chart-hashrate .line').length > 0
            && document.querySelectorAll('#peers tbody tr').length > 0""")
        shot = SCREENSHOT if os.environ.get("UPDATE_SCREENSHOT") == "1" else tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert problems == []


def _chain_height(node) -> int:
    return int(node.ctx.registry.chain().tip().get(timeout=5)[0])


def http_json(port: int, path: str):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())
