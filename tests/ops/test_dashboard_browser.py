"""The dashboard in a real browser: headless system Chromium, driven by Playwright, on loopback only.

Skips (saying why) where Chromium or Playwright is missing; `.ci/run` installs
Chromium so CI runs it.
"""
from __future__ import annotations

import pytest

from chain.datadir import DataDir
from chain.store import ChainStore
from sim.chains import make_chain
from tests.helpers import free_tcp_port, wait_for_chain_height, wire_block
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
