"""The GET_BLOCK scheduler (chain.fetch.Requests), with time passed in."""
from __future__ import annotations

from chain.fetch import Requests

A, B = ("127.0.0.1", 1001), ("127.0.0.2", 1002)
STRANGER = ("127.0.0.9", 1001)


def test_requests_spread_over_peers_and_one_height_is_in_flight_once():
    req = Requests(initial_cwnd=2)
    req.add_peer(A)
    req.add_peer(B)
    sent = [req.assign(h, 0.0) for h in range(5)]
    assert sent[:4].count(A) == 2 and sent[:4].count(B) == 2
    assert sent[4] is None  # both congestion windows are full
    assert req.assign(0, 0.0) is None  # already in flight


def test_replies_count_only_from_the_ip_asked():
    req = Requests()
    req.add_peer(A)
    req.assign(7, 0.0)
    assert req.match(7, STRANGER, 0.01) is None
    assert req.match(8, A, 0.01) is None  # never asked
    other_port = (A[0], 5555)
    reply = req.match(7, other_port, 0.01)
    assert reply is not None and reply.peer == A and not reply.accountable  # counts, but can't be blamed on A
    req.assign(9, 0.0)
    assert req.match(9, A, 0.02).accountable


def test_the_address_a_peer_answered_stats_from_is_accountable():
    req = Requests()
    req.add_peer(A, reply_addr=(A[0], 5555))
    req.assign(1, 0.0)
    assert req.match(1, (A[0], 5555), 0.01).accountable


def test_timeouts_back_off_and_halve_the_window():
    req = Requests(initial_cwnd=8, min_rto=0.05)
    req.add_peer(A, rtt_hint=0.001)
    for h in range(8):
        req.assign(h, 0.0)
    expired, silent = req.expire(0.06)
    assert len(expired) == 8 and silent == []
    link = req.links[A]
    assert link.cwnd == 4 and link.backoff == 2
    assert link.rto(0.05, 4.0, 0.5) == 0.1


def test_a_peer_that_never_answers_is_set_aside_after_a_few_timeouts():
    req = Requests(silent_timeouts=3)
    req.add_peer(A, rtt_hint=0.001)
    req.add_peer(B, rtt_hint=0.001)
    now, dropped = 0.0, []
    for _ in range(10):
        for h in range(4):
            if not req.is_inflight(h):
                req.assign(h, now)
        now += 5.0
        expired, silent = req.expire(now)
        for h, _ in expired:
            pass
        for peer in silent:
            req.remove_peer(peer)
            dropped.append(peer)
        if dropped:
            break
    assert set(dropped) == {A, B} and now <= 15.0


def test_a_late_reply_to_an_earlier_request_still_counts():
    req = Requests()
    req.add_peer(A, rtt_hint=0.01)
    req.add_peer(B, rtt_hint=0.01)
    first = req.assign(3, 0.0)
    expired, _ = req.expire(1.0)
    assert expired == [(3, (first,))]
    second = req.retry(3, (first,), 1.0)
    assert second != first
    assert req.match(3, first, 1.01).peer == first  # the first peer's late answer
    assert not req.is_inflight(3)


def test_rtt_samples_follow_karn():
    req = Requests()
    req.add_peer(A)
    req.assign(1, 0.0)
    req.match(1, A, 0.2)
    assert abs(req.links[A].srtt - 0.2) < 1e-9
    req.assign(2, 1.0)
    req.expire(10.0)
    req.retry(2, (A,), 10.0)
    req.match(2, A, 13.0)  # ambiguous: answers the first or the second send
    assert abs(req.links[A].srtt - 0.2) < 1e-9


def test_a_null_counts_only_from_a_peer_with_a_request_in_flight():
    req = Requests()
    req.add_peer(A, rtt_hint=0.01, reply_addr=(A[0], 5555))
    req.add_peer(B, rtt_hint=0.01)
    assert req.note_null(A, 0.0) is None  # nothing asked yet: unsolicited
    req.assign(3, 0.0, only=A)
    assert req.note_null(B, 0.001) is None  # nothing in flight to B
    assert req.note_null(STRANGER, 0.001) is None
    assert req.note_null((A[0], 1), 0.001) is None  # another port of A's host: not A's word
    assert req.note_null((A[0], 5555), 0.001).peer == A  # where A answered STATS from
    req.match(3, A, 0.002)
    assert req.note_null(A, 0.003) is None  # answered: nothing in flight any more


def test_a_null_sets_a_peer_aside_only_after_its_requests_time_out_unanswered():
    req = Requests(lack_timeouts=2)
    req.add_peer(A, rtt_hint=0.01)
    req.assign(10, 0.0)
    assert req.note_null(A, 0.001).peer == A
    assert req.links[A].lack_strikes == 0 and A in req.links  # the null alone changes nothing
    expired, aside = req.expire(1.0)
    assert expired == [(10, (A,))] and aside == [] and req.links[A].lack_strikes == 1
    req.retry(10, (A,), 1.0)
    req.note_null(A, 1.001)
    expired, aside = req.expire(3.0)
    assert aside == [A]


def test_an_answer_after_a_null_wins():
    """A forged null came first; the peer's block came before the timeout: no strike."""
    req = Requests(lack_timeouts=1)
    req.add_peer(A, rtt_hint=0.01)
    req.assign(10, 0.0)
    req.assign(11, 0.0)
    req.note_null(A, 0.001)
    assert req.match(10, A, 0.002).first
    expired, aside = req.expire(1.0)  # 11 was lost
    assert [h for h, _ in expired] == [11] and aside == [] and req.links[A].lack_strikes == 0


def test_a_second_reply_to_an_answered_request_counts_until_its_deadline():
    """The first reply may have been forged with the peer's address: its own copy still counts."""
    req = Requests(answer_grace=1.0)
    req.add_peer(A, rtt_hint=0.01)
    req.assign(10, 0.0)
    deadline = req.awaiting(10, 0.0)
    assert deadline is not None and 0.0 < deadline < 1.0  # in flight: its timeout
    first = req.match(10, A, 0.001)  # (a forgery, say: it made the round trip look short)
    assert first.first and not req.is_inflight(10)
    again = req.match(10, A, 0.5)  # the peer's own copy, past the request's timeout
    assert again is not None and not again.first and again.peer == A
    assert req.match(10, STRANGER, 0.5) is None
    assert req.awaiting(10, 0.5) == 1.0 and req.awaiting(10, 1.0) is None  # answerable for the grace
    req.forget(10)
    assert req.match(10, A, 0.6) is None
