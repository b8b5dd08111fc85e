"""An actor's log records carry structured fields for the JSON log: the actor, and the
height, hash and peer of what the line is about."""
from __future__ import annotations

import json
import logging

from actors.base import ActorLog
from actors.chain_keeper import ChainKeeper
from config import NodeConfig
from ops.logsetup import JsonFormatter
from runtime.context import NodeContext
from sim.chains import make_chain


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_actor_log_adds_the_actor_and_keeps_the_call_fields():
    logger = logging.getLogger("test.actorlog")
    capture = Capture()
    logger.addHandler(capture)
    logger.setLevel(logging.INFO)
    try:
        log = ActorLog(logger, "ChainKeeper")
        log.info("plain")
        log.info("stored block %d", 7, extra={"height": 7, "peer": "127.0.0.1:9001"})
    finally:
        logger.removeHandler(capture)
    assert capture.lines[0]["actor"] == "ChainKeeper"
    assert {k: capture.lines[1][k] for k in ("actor", "height", "peer", "message")} == {
        "actor": "ChainKeeper", "height": 7, "peer": "127.0.0.1:9001", "message": "stored block 7"}


def test_a_synced_chain_line_in_json_says_the_height_and_the_actor(tmp_path):
    keeper = ChainKeeper(NodeContext(NodeConfig(data_dir=tmp_path, difficulty=2)), clock=lambda: 0.0)
    keeper._send_many = lambda messages: None  # no NetworkIO here
    keeper.on_start()
    capture = Capture()
    logger = logging.getLogger("node.ChainKeeper")
    logger.addHandler(capture)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        assert keeper.apply_segment(0, make_chain(3, 2))
    finally:
        logger.removeHandler(capture)
        logger.setLevel(old_level)
        keeper.release()
    synced = [line for line in capture.lines if line["message"].startswith("chain now")]
    assert synced and synced[-1]["height"] == 3 and synced[-1]["actor"] == "ChainKeeper"
