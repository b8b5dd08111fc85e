"""The mailbox: fire-and-forget calls survive their actor's crash, in order; the crashing one does not."""
from __future__ import annotations

import pykka
import pytest

from runtime.interfaces import ActorInterface
from runtime.mailbox import Deferred, Mailbox


class JournalApi(ActorInterface):
    """The calls these tests journal: the mailbox carries the functions, never names."""

    def record(self, value): ...

    def poison(self, value): ...


RECORD, POISON = JournalApi.record, JournalApi.poison


class Inbox(pykka.ThreadingActor):
    """Records what reaches it without handling it (the journal is what is under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list = []

    def on_receive(self, message):
        self.got.append(message)

    def received(self):
        return self.got


@pytest.fixture
def refs():
    started: list = []

    def start():
        ref = Inbox.start()
        started.append(ref)
        return ref

    yield start
    for ref in started:
        if ref.is_alive():
            ref.stop()


def test_unstarted_calls_are_handed_to_the_next_instance_in_order(refs):
    box = Mailbox("X")
    first = refs()
    box.attach(first)
    for value in range(5):
        box.defer(RECORD, value)
    assert box.begin(0, first.actor_urn) and box.begin(1, first.actor_urn)  # 0 done, 1 crashed it
    box.detach(first.actor_urn)
    with pytest.raises(pykka.ActorDeadError):
        box.defer(RECORD, 99)  # nobody to send to: the caller is told, nothing is kept
    second = refs()
    assert box.attach(second) == 3
    box.defer(RECORD, 5)
    got = second.proxy().received().get(timeout=2)
    assert [(m.method, m.args) for m in got] == [(RECORD, (2,)), (RECORD, (3,)), (RECORD, (4,)), (RECORD, (5,))]


def test_a_replaced_instance_may_not_start_calls_handed_to_its_successor(refs):
    box = Mailbox("X")
    old, new = refs(), refs()
    box.attach(old)
    box.defer(RECORD, 1)
    box.detach(old.actor_urn)
    assert not box.begin(0, old.actor_urn)  # detached: a zombie, not the current instance
    box.attach(new)
    assert not box.begin(0, old.actor_urn)
    assert box.begin(0, new.actor_urn) and box.pending() == 0


def test_queued_copies_of_the_crashing_call_are_dropped():
    box = Mailbox("X")
    ref = Inbox.start()
    try:
        box.attach(ref)
        box.defer(POISON, {"x": 1})
        box.defer(RECORD, 1)
        box.defer(POISON, {"x": 1})
        box.defer(POISON, {"x": 2})
        assert box.begin(0, ref.actor_urn)
        assert box.drop_copies(Deferred(0, POISON, ({"x": 1},))) == 1
        assert box.pending() == 2  # record 1 and poison x=2 remain
    finally:
        ref.stop()


def test_the_journal_is_bounded():
    box = Mailbox("X", limit=10)
    ref = Inbox.start()
    try:
        box.attach(ref)
        for value in range(25):
            box.defer(RECORD, value)
        assert box.pending() == 10 and box.dropped == 15
    finally:
        ref.stop()
