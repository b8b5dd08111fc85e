"""The ops HTTP server against slow, idle and oversized clients (issue 11)."""
from __future__ import annotations

import socket
import time

from tests.helpers import health, free_tcp_port
from tests.ops.ops_helpers import http


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return sock


NEVER = 3600.0  # seconds: longer than any test runs


def _still_open(sock: socket.socket) -> bool:
    """The server has not closed (or reset) this connection: nothing to read, but no EOF."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # bytes would be an answer to an incomplete request: not expected
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def test_health_answers_while_120_slow_and_100_idle_clients_hold_connections(make_node, monkeypatch):
    """Slow and idle connections cost the server no request slot: /health is served beside them.

    Every deadline that would cut them is an hour here, so they stay held for the whole test; a
    server that served /health only once they were gone could not answer it at all, and each
    answer is checked to have come while all 220 were still open, whatever the machine's speed.
    """
    import ops.serving as serving

    monkeypatch.setattr(serving, "KEEP_ALIVE_TIMEOUT", NEVER)  # the header deadline's cap
    monkeypatch.setattr(serving, "READ_TIMEOUT", NEVER)
    node = make_node(http_port=free_tcp_port(), http_request_deadline=2 * NEVER)
    port = node.config.http_port
    slow, idle = [], []
    try:
        for i in range(120):  # a slowloris: a request line and half a header, then a byte now and then
            sock = _connect(port)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            slow.append(sock)
        idle = [_connect(port) for _ in range(100)]
        for _ in range(3):
            for sock in slow:
                sock.sendall(b"a")
            result = http(port, "/health", timeout=60)  # generous: it only must not wait for the others
            assert result.status == 200
            assert all(_still_open(sock) for sock in slow + idle)  # served beside them, not after them
            time.sleep(0.3)  # the slowloris's drip, not a wait for anything
    finally:
        for sock in slow + idle:
            sock.close()


def test_a_50_mb_body_is_refused_before_it_is_read(make_node):
    node = make_node(http_port=free_tcp_port(), enable_fault_injection=True)
    sock = _connect(node.config.http_port)
    try:
        # Only the headers are sent: an answer proves the server did not wait for the body.
        sock.sendall(b"POST /admin/crash/ChainKeeper HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 52428800\r\n\r\n")
        sock.settimeout(5)
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = sock.recv(4096)
            if not chunk:
                break
            response += chunk
        assert response.startswith(b"HTTP/1.1 413"), response[:80]
    finally:
        sock.close()
    assert health(node)["actors"][0]["restarts"] == 0  # the crash endpoint never ran
    assert sum(a["restarts"] for a in health(node)["actors"]) == 0


def test_a_chunked_body_is_refused_at_the_limit_and_the_endpoint_never_runs(make_node):
    node = make_node(http_port=free_tcp_port(), enable_fault_injection=True)
    sock = _connect(node.config.http_port)
    sent = 0
    try:
        sock.sendall(b"POST /admin/crash/ChainKeeper HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        try:
            for _ in range(200):  # up to 12.5 MiB, if the server kept reading
                sock.sendall(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the server closed the connection: what we want
    finally:
        sock.close()
    assert sent < 8 * 1024 * 1024  # socket buffers hold a few MiB at most; the body was not consumed
    assert sum(a["restarts"] for a in health(node)["actors"]) == 0


def test_stop_frees_the_port_through_the_public_api(make_served_node):
    import ops.http_server as http_server
    import ops.serving as serving

    for module in (http_server, serving):
        assert "waitress" not in open(module.__file__).read()
    port = free_tcp_port()
    served = make_served_node(http_port=port)
    assert http(port, "/health").status == 200
    served.http.stop()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as a new server would (TIME_WAIT is fine)
        probe.bind(("127.0.0.1", port))  # free again


def test_pages_render_any_stored_text_safely(make_node):
    """Extreme but valid blocks (timestamp 2**63-1, markup and odd Unicode in minedBy and messages)."""
    from sim.chains import make_chain, mine_block

    node = make_node(http_port=free_tcp_port())
    chain = make_chain(2, 2)
    chain.append(mine_block(chain[-1], 2, mined_by="<script>alert(1)</script>\u202e\U0001f600",
                            messages=("<b>x</b>", "\u0000\u0007", "\ufeff"), timestamp=2**63 - 1))
    assert node.ctx.registry.proxy("ChainKeeper").apply_segment(0, chain).get(timeout=5)
    for path in ("/", "/block/2", f"/block/{chain[-1].hash}", "/chain?from=0&limit=3", "/health"):
        result = http(node.config.http_port, path)
        assert result.status == 200, (path, result.status)
        if result.headers["Content-Type"].startswith("text/html"):
            assert b"<script>alert(1)" not in result.body, path  # escaped
        else:
            result.json()


def test_health_shows_storage_membership_and_validation(make_node):
    node = make_node(http_port=free_tcp_port())
    actors = {a["name"]: a for a in http(node.config.http_port, "/health").json()["actors"]}
    assert actors["ChainKeeper"]["storage"]["writable"] is True and actors["ChainKeeper"]["words_queued"] == 0
    assert actors["GossipManager"]["tried"] == 0 and actors["GossipManager"]["new"] == 0
    assert actors["NetworkIO"]["validated_addresses"] == 0
