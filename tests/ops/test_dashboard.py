"""The dashboard's JSON and the block explorer, over real HTTP on 127.0.0.1."""
from __future__ import annotations

import pytest

from chain.datadir import DataDir
from chain.store import ChainStore
from sim.chains import make_chain, mine_block
from tests.helpers import free_tcp_port, wait_for
from tests.ops.ops_helpers import http

LENGTH = 30


@pytest.fixture(scope="module")
def chain():
    blocks = make_chain(LENGTH - 1, 2)
    # The top block carries text a stranger chose: it must show as text, never as markup.
    blocks.append(mine_block(blocks[-1], 2, mined_by="<b>evil</b>", messages=("<script>x()</script>", "ok")))
    return blocks


@pytest.fixture
def node(make_node, tmp_path, chain):
    data_dir = tmp_path / "seeded"
    DataDir.open(data_dir, 2).close()
    store = ChainStore(data_dir)
    store.replace_from(0, chain)
    store.close()
    return make_node(http_port=free_tcp_port(), data_dir=data_dir)


def test_overview_leads_with_height_top_index_last_block_and_mining(node, chain, client):
    client.send(node.config.port, {"type": "NEW_WORD", "word": "hello"})
    port = node.config.http_port
    overview = wait_for(lambda: (o := http(port, "/api/overview").json())["pending_words"]["count"] == 1 and o)
    assert overview["status"] == "ok"
    assert overview["chain"]["height"] == LENGTH and overview["chain"]["top_index"] == LENGTH - 1
    assert overview["chain"]["hash"] == chain[-1].hash
    assert overview["chain"]["last_block_time"] == chain[-1].timestamp and overview["chain"]["last_block_age"] > 0
    assert [b["height"] for b in overview["latest_blocks"]] == list(range(LENGTH - 1, LENGTH - 11, -1))
    assert overview["pending_words"]["shown"] == ["hello"]
    assert overview["sync"]["state"] == "alone"  # no --peer and no peers
    assert overview["mining"]["total"] == 0 and overview["mining"]["expected_block_seconds"] is None
    assert overview["node"]["uptime_seconds"] >= 0
    assert set(overview["charts"]) == {"hashrate", "peers", "block_interval"}
    assert [a["name"] for a in overview["actors"]][:1] == ["ChainKeeper"]


def test_block_by_height_and_by_hash_show_every_field_and_link_neighbours(node, chain):
    port = node.config.http_port
    by_height = http(port, "/block/5")
    by_hash = http(port, f"/block/{chain[5].hash}")
    assert by_height.status == by_hash.status == 200
    for page in (by_height.text, by_hash.text):
        block = chain[5]
        for value in (block.hash, block.mined_by, block.nonce, str(block.timestamp), *block.messages, chain[4].hash):
            assert value in page
        assert 'href="/block/4"' in page and 'href="/block/6"' in page
    genesis = http(port, "/block/0").text
    assert "genesis" in genesis and 'href="/block/1"' in genesis and 'id="prev"' not in genesis
    top = http(port, f"/block/{LENGTH - 1}").text
    assert "top of the chain" in top and 'id="next"' not in top


def test_stranger_text_is_escaped_on_the_block_page(node, chain):
    page = http(node.config.http_port, f"/block/{LENGTH - 1}").text
    assert "&lt;script&gt;x()&lt;/script&gt;" in page and "<script>x()" not in page
    assert "&lt;b&gt;evil&lt;/b&gt;" in page and "<b>evil" not in page
    front = http(node.config.http_port, "/").text
    assert "<script>x()" not in front and "<b>evil" not in front


@pytest.mark.parametrize("ref, status", [("999", 404), ("f" * 64, 404), ("not-a-block", 400), ("12ab", 400)])
def test_unknown_or_malformed_block_refs_say_why(node, ref, status):
    result = http(node.config.http_port, f"/block/{ref}")
    assert result.status == status
    assert 'id="explorer-error"' in result.text


def test_search_redirects_a_height_or_a_hash_to_its_block_page(node, chain):
    import urllib.request

    port = node.config.http_port
    for query, expected in (("7", "/block/7"), (chain[3].hash.upper(), f"/block/{chain[3].hash}")):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/search?q={query}", timeout=5) as response:
            assert response.url.endswith(expected) and response.status == 200
    assert http(port, "/search?q=hello").status == 400


def test_assets_are_served_locally_and_the_page_loads_nothing_from_elsewhere(node):
    port = node.config.http_port
    page = http(port, "/").text
    assert "http://" not in page.split("<footer")[0] and "https://" not in page  # no CDN, no remote assets
    js = http(port, "/assets/dashboard.js")
    css = http(port, "/assets/dashboard.css")
    assert js.status == css.status == 200
    assert "fetch(\"/api/overview\"" in js.text and "innerHTML" not in js.text
    assert http(port, "/assets/../node.py").status == 404
