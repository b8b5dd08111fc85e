"""Connecting to Ray must not leave Ray's signal handlers in our processes.

ray.init installs a SIGTERM handler that exits and a native one that prints a stack dump;
a node stopped by a signal to its process group then showed dumps from every Ray process.
A stand-in `ray` module does what ray.init does to the handlers, so no cluster is needed.
"""
from __future__ import annotations

import signal
import sys
import types

from mining import ray_backend


def test_ray_init_puts_back_the_signal_handlers_it_replaced(monkeypatch):
    def exiting_handler(signum, frame):  # what Ray's init installs
        raise SystemExit(signum)

    def fake_init(**kwargs):
        signal.signal(signal.SIGTERM, exiting_handler)
        signal.signal(signal.SIGINT, exiting_handler)

    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(init=fake_init))
    old_term, old_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a bridge process has it
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        ray_backend.ray_init("auto")
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
