"""Fuzz every explorer and API route in-process: whatever the path or query, never a 500.

The Flask app of ops/http_server.py over a real in-process node (5 blocks), driven
by Flask's test client with random path segments and query values: huge digit
strings (past Python's 4,300-digit int limit), unicode digits, empty, negative,
floats, raw and broken `%` escapes, near-miss hashes.
"""
from __future__ import annotations

from collections import Counter
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node import Node
from ops.http_server import create_app
from ops.snapshot import NodeInspector
from sim.chains import make_chain
from tests.conftest import FAST_POLICY
from tests.helpers import node_config

FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NO_INPUT = ("/", "/api/overview", "/health", "/metrics", "/peers")  # they read no parameter: fewer examples
COUNTS: Counter[str] = Counter()

_digits = st.one_of(
    st.integers(min_value=0, max_value=2**80).map(str),
    st.integers(min_value=15, max_value=6000).map(lambda n: "9" * n),  # past the int() digit limit
    st.text(alphabet="0123456789", min_size=1, max_size=30),
)
_escapes = st.sampled_from(["%", "%%", "%z", "%zz", "%00", "%ff", "%C2%B2", "%2f", "%2e%2e", "%u1234", "%0a", "%20", "%2b"])
_piece = st.one_of(
    _digits,
    _digits.map(lambda d: "-" + d),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", " ", "²", "١٢", "٣", "1_0", "+5", "0x10", "1e5", "nan", "-0", "١" * 5000]),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=62, max_size=66),  # hash-like
    st.text(max_size=40),
    _escapes,
)
_huge = st.integers(min_value=4000, max_value=6000).map(lambda n: "9" * n)  # around the int() digit limit
value = st.one_of(_huge, _digits, st.lists(_piece, min_size=1, max_size=3).map("".join))


def _raw(text: str) -> str:
    """`text` for a URL: everything quoted except `%` (so broken escapes reach the server as sent)."""
    return quote(text, safe="%")


_query = st.lists(st.tuples(st.sampled_from(["q", "from", "limit", "x", ""]), value), max_size=3).map(
    lambda pairs: "&".join(f"{_raw(k)}={_raw(v)}" for k, v in pairs))

# route -> strategy of (path, query string)
ROUTES = {
    "/": _query.map(lambda q: ("/", q)),
    "/api/overview": _query.map(lambda q: ("/api/overview", q)),
    "/health": _query.map(lambda q: ("/health", q)),
    "/metrics": _query.map(lambda q: ("/metrics", q)),
    "/peers": _query.map(lambda q: ("/peers", q)),
    "/block/<ref>": st.tuples(value, _query).map(lambda t: ("/block/" + _raw(t[0]), t[1])),
    "/search": st.tuples(value, _query).map(lambda t: ("/search", f"q={_raw(t[0])}&{t[1]}")),
    "/chain": st.tuples(value, value, st.booleans()).map(
        lambda t: ("/chain", f"from={_raw(t[0])}&limit={_raw(t[1])}" if t[2] else f"from={_raw(t[0])}")),
    "/assets/<name>": st.tuples(value, st.booleans()).map(
        lambda t: ("/assets/" + quote(t[0], safe="%/" if t[1] else "%"), "")),
}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    node = Node(node_config(tmp_path_factory.mktemp("http-fuzz")), FAST_POLICY).start()
    try:
        assert node.ctx.registry.proxy("ChainKeeper").apply_segment(0, make_chain(5, 2)).get(timeout=5)
        inspector = NodeInspector(node)
        inspector.init_metrics()
        yield create_app(node, inspector)
    finally:
        node.stop()


@pytest.mark.parametrize("route", list(ROUTES))
def test_no_input_makes_a_route_answer_500(app, route):
    client = app.test_client()

    @settings(FUZZ, max_examples=100 if route in NO_INPUT else 200)
    @given(request=ROUTES[route])
    def fetch(request):
        path, query = request
        response = client.get(path, query_string=query, follow_redirects=True)  # /search -> /block/<ref>
        COUNTS[route] += 1
        assert response.status_code != 500, (path[:200], query[:200])
        assert response.status_code < 500 or response.status_code == 503, (path[:200], query[:200])

    fetch()
    print(f"\n{route}: {COUNTS[route]} requests")
    assert COUNTS[route] >= 50  # hypothesis really ran (it stops early only when it runs out of inputs)


def test_the_cases_that_were_500_are_400_or_404(app):
    client = app.test_client()
    assert client.get("/block/" + "9" * 5000).status_code == 404  # a height beyond any chain
    assert client.get("/block/" + "9" * 19).status_code == 404
    assert client.get("/block/²").status_code == 400  # str.isdigit(), but not a height
    assert client.get("/search", query_string="q=" + "9" * 5000, follow_redirects=True).status_code == 404
    assert client.get("/chain", query_string="from=" + "9" * 5000).status_code == 400
    assert client.get("/chain", query_string="from=1_0").status_code == 400
    assert client.get("/block/3").status_code == 200
    assert client.get("/chain", query_string="from=3&limit=1").get_json()[0]["height"] == 3
