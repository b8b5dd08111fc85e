"""The ops HTTP under slow uploads: bodies are due within a deadline and never hold a request slot."""
from __future__ import annotations

import socket
import time

import pytest

from ops.serving import Deadlines
from tests.helpers import free_tcp_port, health, wait_for
from tests.ops.ops_helpers import http

SLOW_UPLOAD = (b"POST /admin/stall/ChainKeeper HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/json\r\nContent-Length: 65536\r\n\r\n")


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _response_head(sock: socket.socket) -> bytes:
    """What the server sent on `sock` until it closed (or a full head arrived); b"" for nothing."""
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = sock.recv(4096)
        except (BlockingIOError, socket.timeout):
            return data
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data


def test_deadlines_split_the_total_between_headers_and_body():
    assert (Deadlines(10).headers, Deadlines(10).body, Deadlines(10).read) == (5.0, 5.0, 10.0)
    assert (Deadlines(2).headers, Deadlines(2).body, Deadlines(2).read) == (1.0, 1.0, 2.0)
    assert Deadlines(60).headers == 5.0 and Deadlines(60).body == 55.0
    with pytest.raises(ValueError):
        Deadlines(0)


def test_a_body_trickling_in_is_cut_at_the_deadline(make_served_node):
    """A byte every 0.2 s never trips the silence timeout; the total deadline cuts it with 408."""
    served = make_served_node(http_port=free_tcp_port(), enable_fault_injection=True, http_request_deadline=2.0)
    port = served.node.config.http_port
    sock = _connect(port)
    head = b""
    try:
        sock.sendall(SLOW_UPLOAD)
        sock.setblocking(False)
        for _ in range(300):  # 60 s of trickle at most, far past the 2 s deadline; never a whole body
            try:
                sock.send(b" ")
            except OSError:  # closed by the server
                break
            head += _response_head(sock)
            if head:
                break
            time.sleep(0.2)  # the attacker's pace, not synchronisation
        sock.settimeout(5)
        head += _response_head(sock)
    finally:
        sock.close()
    assert head.startswith(b"HTTP/1.1 408"), head[:80]
    assert served.http.guard.refused["slow_body"] == 1
    assert served.http.guard.reading == 0 and served.http.guard.in_flight == 0
    assert sum(a["restarts"] for a in health(served.node)["actors"]) == 0  # the stall never ran
    assert http(port, "/health").status == 200


def test_health_and_admin_answer_while_64_slow_uploads_and_64_idle_connections_are_held(make_served_node):
    # A long deadline: the test holds every slow upload while it asks.
    served = make_served_node(http_port=free_tcp_port(), http_request_deadline=120.0)
    port, guard = served.node.config.http_port, served.http.guard
    uploads: list[socket.socket] = []
    idle: list[socket.socket] = []
    try:
        for _ in range(64):
            sock = _connect(port)
            sock.sendall(SLOW_UPLOAD + b"{")
            uploads.append(sock)
        idle = [_connect(port) for _ in range(64)]
        wait_for(lambda: guard.reading == 64, timeout=20)  # every upload is past its headers, reading its body
        for sock in uploads:
            sock.sendall(b" ")  # still trickling
        assert guard.in_flight == 0  # ... and none of them holds a request slot
        for _ in range(5):
            result = http(port, "/health", timeout=10)
            assert result.status == 200, result.status
        admin = http(port, "/admin/stall/ChainKeeper", method="POST", body=b'{"seconds": 1}', timeout=10)
        assert admin.status == 403  # answered (fault injection is off here), not "busy"
        assert guard.reading == 64 and guard.refused["busy"] == 0 and guard.refused["readers_busy"] == 0
    finally:
        for sock in uploads + idle:
            sock.close()
    wait_for(lambda: guard.reading == 0, timeout=20)  # their readers ended with the connections
