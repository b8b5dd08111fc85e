"""ChainKeeper: the only writer of the chain. Serves STATS and GET_BLOCK.

Every change is written to SQLite (one transaction, synchronous) *before* the
in-memory copy changes, and only the in-memory copy is served or announced, so
nothing is ever served that a crash could take back. On (re)start it reloads the
chain from disk.
"""
from __future__ import annotations

import sqlite3
import time
from collections import Counter
from typing import Any, Callable, Sequence

from actors.base import NodeActor
from runtime.context import NodeContext, tell
from runtime.interfaces import ChainApi
from chain.block import Block, InvalidBlock, check_block, check_chain
from chain.store import ChainStore, StoreError
from chain.sync import Staged
from net.address import is_printable_text
from messages.internal import TipChanged
from messages.wire import Announce, GetBlockReply, StatsReply, WireMessage
from net.address import Address

MAX_QUEUED_WORDS = 10_000
MAX_WORD_CHARS = 20
MAX_WORDS_PER_SOURCE = 500  # one source IP's share of the NEW_WORD queue (5%)
STORE_RETRY_FIRST = 1.0  # seconds before the first write after a storage failure ...
STORE_RETRY_MAX = 60.0  # ... doubling up to this
STORAGE_ERRORS = (sqlite3.Error, OSError)


class ChainKeeper(NodeActor, ChainApi):
    # The store has one writer: never two instances; a hang ends the node (exit 1).
    owns_shared_state = True
    # A reorg or sync switch of hundreds of thousands of blocks takes seconds.
    message_budget = 30.0

    def __init__(self, ctx: NodeContext, name: str = "ChainKeeper", clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ctx, name)
        self.difficulty = ctx.config.difficulty
        self.clock = clock
        self.store: ChainStore | None = None
        self.blocks: list[Block] = []
        # The NEW_WORD queue as it is on disk: word -> source IP (a word is queued once).
        self._queued: dict[str, str] = {}
        self._per_source: Counter[str] = Counter()
        # Storage faults (a full disk): writes stop until `_retry_at`, reads go on.
        self._failing_since: float | None = None
        self._retry_at = 0.0
        self._backoff = STORE_RETRY_FIRST

    def on_start(self) -> None:
        self.store = ChainStore(self.ctx.config.data_dir)
        self.blocks = self._load()
        try:  # words in blocks that are not ours any more (a quarantined tail) are queued again
            back = self.store.unmine_words_from(len(self.blocks))
        except STORAGE_ERRORS as exc:
            back = []
            self.log.error("could not put back the words of blocks above height %d: %s", len(self.blocks), exc)
        if back:
            self.log.warning("%d queued words were in blocks above height %d: queued again", len(back), len(self.blocks))
        # Every queued word: a reorg may put back more than MAX_QUEUED_WORDS (new words wait for room).
        for _, word in self.store.pending_words(-1):
            if word not in self._queued:
                self._queued[word] = "stored"
                self._per_source["stored"] += 1
        self.ctx.metrics.chain_height.set(len(self.blocks))
        self.log.info("chain loaded: %d blocks", len(self.blocks))
        self._notify_tip()

    def release(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def _load(self) -> list[Block]:
        """The stored chain, checked block by block; an invalid tail is quarantined, never dropped.

        The data dir was checked to hold a chain at our difficulty before the node
        started (chain/datadir.py), so a block failing here means damage or a bug:
        the log names the block and the rule, and the blocks from there up are moved
        to the store's quarantine table with that reason.
        """
        assert self.store is not None
        # Rows the store can't read as blocks (a gap, text that is not UTF-8, messages that
        # are not a JSON list) end `loaded` with `damage`; wrong values are refused below.
        loaded, damage = self.store.load_checked()
        valid: list[Block] = []
        problem: str | None = None
        for block in loaded:
            prev_hash = valid[-1].hash if valid else None
            try:
                check_block(block, prev_hash, self.difficulty)
            except InvalidBlock as exc:
                shown = block.hash[:16] if isinstance(block.hash, str) else repr(block.hash)[:20]
                problem = f"stored block {block.height} ({shown}) fails a chain rule: {exc.reason}"
                break
            valid.append(block)
        if problem is None:
            problem = damage
        if problem is not None:
            moved = self.store.quarantine_from(len(valid), problem)
            self.log.error("%s; moved %d stored blocks from height %d up to the quarantine table of %s",
                           problem, moved, len(valid), self.store.path)
        return valid

    # ---------------------------------------------------------- queries (ask)

    def tip(self) -> tuple[int, str | None]:
        """(height as the number of blocks, top hash or None)."""
        return len(self.blocks), (self.blocks[-1].hash if self.blocks else None)

    def get_blocks(self, start: int, limit: int) -> list[Block]:
        start = max(0, start)
        return self.blocks[start : start + max(0, limit)]

    def find_block(self, block_hash: str) -> Block | None:
        """Our block with this hash (the explorer's /block/<hash>), newest first; None if we have none."""
        for block in reversed(self.blocks):
            if block.hash == block_hash:
                return block
        return None

    def all_hashes(self) -> list[str]:
        """Our block hashes by height (a copy: consensus compares them with a peer's chain)."""
        return [block.hash for block in self.blocks]

    def pending_words(self, limit: int = 10) -> list[str]:
        assert self.store is not None
        return [word for _, word in self.store.pending_words(limit)]

    def word_count(self) -> int:
        return len(self._queued)

    def health_details(self) -> dict[str, Any]:
        """In /health: whether storage takes writes (a full disk stops them), the NEW_WORD queue."""
        return {"storage": self.storage_state(), "words_queued": len(self._queued)}

    def storage_state(self) -> dict[str, Any]:
        """For ops: whether writes are stopped by a storage fault, since when, next retry."""
        now = self.clock()
        return {
            "writable": self._failing_since is None,
            "failing_for": None if self._failing_since is None else round(now - self._failing_since, 1),
            "retry_in": None if self._failing_since is None else round(max(0.0, self._retry_at - now), 1),
        }

    # ---------------------------------------------------------- network requests (defer)

    def on_stats_batch(self, requests: list[tuple[Address]]) -> None:
        """STATS from several peers (NetworkIO batches what arrives together)."""
        reply = StatsReply(*self.tip())
        self._send_many([(reply, addr) for (addr,) in requests])

    def on_get_block_batch(self, requests: list[tuple[int, Address]]) -> None:
        """GET_BLOCKs from peers, answered in one batch; all-null for heights we lack."""
        blocks = self.blocks
        self._send_many([(GetBlockReply(blocks[h] if 0 <= h < len(blocks) else None), addr) for h, addr in requests])

    def on_new_word(self, word: str, source: str = "local") -> None:
        self.on_new_words([(word, source)])

    def on_new_words(self, words: list[tuple[str, str]]) -> None:
        """NEW_WORDs (word, source IP) that arrived together: checked, then queued in one transaction.

        Duplicates of a queued word are dropped; each source may hold at most
        MAX_WORDS_PER_SOURCE of the MAX_QUEUED_WORDS, so one sender can't fill the queue.
        """
        assert self.store is not None
        dropped = self.ctx.metrics.dropped
        accepted: dict[str, str] = {}
        taken: Counter[str] = Counter()
        for word, source in words:
            if not isinstance(word, str) or not 0 < len(word) <= MAX_WORD_CHARS or not is_printable_text(word):
                reason = "bad_word"
            elif word in self._queued or word in accepted:
                reason = "duplicate_word"
            elif len(self._queued) + len(accepted) >= MAX_QUEUED_WORDS:
                reason = "word_queue_full"
            elif self._per_source[source] + taken[source] >= MAX_WORDS_PER_SOURCE:
                reason = "word_share_exceeded"
            else:
                accepted[word] = source
                taken[source] += 1
                continue
            dropped.labels(reason=reason).inc()
        if not accepted:
            return
        if not self._storage_try(lambda store: store.add_words(list(accepted))):
            dropped.labels(reason="store_unavailable").inc(len(accepted))
            return
        self._queued.update(accepted)
        self._per_source.update(taken)
        self.log.debug("queued %d words", len(accepted))

    def on_announce(self, block: Block, addr: Address) -> None:
        """A peer's new top block: extend our chain if it links, else tell consensus."""
        height = len(self.blocks)
        if block.height < height and self.blocks[block.height].hash == block.hash:
            return  # we have it already
        if block.height == height:
            prev_hash = self.blocks[-1].hash if self.blocks else None
            try:
                check_block(block, prev_hash, self.difficulty)
            except InvalidBlock as exc:
                self.ctx.metrics.blocks_rejected.labels(source="announce").inc()
                self.log.debug("announce of height %d from %s:%d refused: %s", block.height, *addr, exc.reason)
                if block.height > 0 and exc.reason.startswith("hash does not match"):
                    self._tell_unlinked(block, addr)
                return
            if self._write(height, [block]):
                self.log.info("block %d from %s:%d accepted by announce", block.height, *addr)
            return
        if block.height > height:
            self._tell_unlinked(block, addr)

    # ---------------------------------------------------------- local writers

    def add_mined_block(self, block: Block) -> bool:
        """A block our miner found: store it, then announce it. False if it is stale."""
        height = len(self.blocks)
        prev_hash = self.blocks[-1].hash if self.blocks else None
        if block.height != height:
            return False
        try:
            check_block(block, prev_hash, self.difficulty)
        except InvalidBlock as exc:
            self.ctx.metrics.blocks_rejected.labels(source="miner").inc()
            self.log.warning("mined block %d refused: %s", block.height, exc.reason)
            return False
        if not self._write(height, [block]):  # durable first...
            return False
        self.ctx.metrics.blocks_mined.inc()
        tell(self.ctx.registry.gossip(), lambda gossip: gossip.broadcast.defer(Announce(block)))  # ...then announced
        self.log.info("mined block %d %s", block.height, block.hash[:16])
        return True

    def apply_segment(self, fork_height: int, segment: Sequence[Block]) -> bool:
        """Replace everything from `fork_height` up with `segment`, if that is better.

        Only a chain that is longer than ours and valid from the fork point up is
        taken, in one transaction. Returns whether it was applied.
        """
        new_length = fork_height + len(segment)
        if not 0 <= fork_height <= len(self.blocks) or new_length <= len(self.blocks):
            return False
        base_prev = self.blocks[fork_height - 1].hash if fork_height > 0 else None
        try:
            check_chain(segment, self.difficulty, base_height=fork_height, base_prev_hash=base_prev)
        except InvalidBlock as exc:
            self.ctx.metrics.blocks_rejected.labels(source="sync").inc()
            self.log.warning("synced segment from %d refused: %s", fork_height, exc.reason)
            return False
        replaced = len(self.blocks) - fork_height
        if not self._write(fork_height, segment):
            return False
        if replaced > 0:
            self.ctx.metrics.chain_reorgs.inc()
            self.log.warning("reorg: replaced %d blocks above height %d", replaced, fork_height)
        self.log.info("chain now %d blocks (synced %d)", len(self.blocks), len(segment))
        return True

    # ---------------------------------------------------------- long syncs (staging)

    def stage_blocks(self, blocks: Sequence[Block], reset: bool = False) -> None:
        """Keep linked blocks of a chain being synced (one transaction): a crash keeps them."""
        if not self._storage_try(lambda store: store.stage(blocks, reset=reset)):
            self.ctx.metrics.dropped.labels(reason="store_unavailable").inc()

    def staging_summary(self) -> Staged | None:
        """The staged run (lowest block, top height and hash), for a sync to resume from."""
        assert self.store is not None
        run = self.store.staged_run()
        if run is None:
            return None
        low, high = run
        return Staged(low, high.height, high.hash)

    def switch_to_staged(self, first: int, top: int, top_hash: str) -> bool:
        """Replace our chain from `first` up with staged blocks `first`..`top`, in one transaction.

        Only if that chain is longer than ours, its top is `top_hash` and its first
        block links to our block `first - 1`. Returns whether it was switched.
        """
        assert self.store is not None
        if not 0 <= first <= len(self.blocks) or top + 1 <= len(self.blocks) or top < first:
            return False
        top_block = self.store.staged_block(top)
        first_block = self.store.staged_block(first)
        if top_block is None or first_block is None or top_block.hash != top_hash:
            self.log.warning("staged chain does not match the sync's (%d..%d)", first, top)
            return False
        base_prev = self.blocks[first - 1].hash if first > 0 else None
        try:
            check_block(first_block, base_prev, self.difficulty)
        except InvalidBlock as exc:
            self.log.warning("staged chain from %d refused: %s", first, exc.reason)
            return False
        replaced = len(self.blocks) - first
        settled: list[tuple[list[str], list[str]]] = []
        try:
            if not self._storage_try(lambda store: settled.append(store.switch_to_staged(first, top))):
                return False
        except StoreError as exc:
            self.log.warning("staged chain from %d refused: %s", first, exc)
            return False
        self.blocks[first:] = self.store.load_range(first, top + 1)
        self._after_write(*settled)
        if replaced > 0:
            self.ctx.metrics.chain_reorgs.inc()
            self.log.warning("reorg: replaced %d blocks above height %d", replaced, first)
        self.log.info("chain now %d blocks (synced %d)", len(self.blocks), top + 1 - first)
        return True

    # ---------------------------------------------------------- ConsensusRunner's requests (told; answered by a tell)

    def send_round_inputs(self, request_id: int) -> None:
        """Tell ConsensusRunner what a round starts from: our hashes by height and the staged run.

        A storage fault reading the staged run costs only the resume (None), not the round.
        """
        hashes = self.all_hashes()
        try:
            staged = self.staging_summary()
        except STORAGE_ERRORS as exc:
            self.log.warning("staged run unreadable (%s: %s): a sync starts afresh", type(exc).__name__, exc)
            staged = None
        tell(self.ctx.registry.consensus(), lambda consensus: consensus.on_round_inputs.defer(request_id, hashes, staged))

    def apply_segment_and_reply(self, request_id: int, fork_height: int, segment: Sequence[Block]) -> None:
        """`apply_segment`, then tell ConsensusRunner whether it was applied (after the tip notice)."""
        ok = False
        try:
            ok = self.apply_segment(fork_height, segment)
        finally:  # a bug that crashes us still answers "not applied" (the crash shows it)
            self._tell_applied(request_id, ok)

    def switch_to_staged_and_reply(self, request_id: int, first: int, top: int, top_hash: str) -> None:
        """`switch_to_staged`, then tell ConsensusRunner whether it was switched (after the tip notice)."""
        ok = False
        try:
            ok = self.switch_to_staged(first, top, top_hash)
        finally:
            self._tell_applied(request_id, ok)

    def _tell_applied(self, request_id: int, ok: bool) -> None:
        tell(self.ctx.registry.consensus(), lambda consensus: consensus.on_segment_applied.defer(request_id, ok))

    # ---------------------------------------------------------- internals

    def _write(self, height: int, blocks: Sequence[Block]) -> bool:
        """Store blocks from `height` up, then take them in memory. False (nothing changed) on a storage fault."""
        settled: list[tuple[list[str], list[str]]] = []
        if not self._storage_try(lambda store: settled.append(store.replace_from(height, blocks))):
            self.ctx.metrics.dropped.labels(reason="store_unavailable").inc()
            return False
        self.blocks[height:] = blocks
        self._after_write(*settled)
        return True

    def _after_write(self, settled: tuple[list[str], list[str]]) -> None:
        """The queue in memory as the write left it on disk (same transaction as the blocks).

        A queued word in a new block leaves the queue (its row stays, marked with the
        block's height); the words of replaced blocks that no new block carries are back.
        """
        mined, back = settled
        for word in mined:
            source = self._queued.pop(word, None)
            if source is not None:
                self._per_source[source] -= 1
                if self._per_source[source] <= 0:
                    del self._per_source[source]
        for word in back:
            if word not in self._queued:
                self._queued[word] = "reorg"
                self._per_source["reorg"] += 1
        if back:
            self.log.warning("reorg: %d queued words of the replaced blocks are queued again", len(back))
        self.ctx.metrics.chain_height.set(len(self.blocks))
        self._notify_tip()

    def _storage_try(self, write: Callable[[ChainStore], None]) -> bool:
        """Run one write unless writes are stopped; a storage error stops them (one ERROR line), with backoff.

        What is stored keeps being served (STATS, GET_BLOCK come from memory); the
        first write after the backoff is the retry, and its success says so.
        """
        assert self.store is not None
        now = self.clock()
        if self._failing_since is not None and now < self._retry_at:
            return False
        try:
            write(self.store)
        except StoreError:
            raise  # a wrong-shaped write is a bug, not a fault of the disk
        except STORAGE_ERRORS as exc:
            if self._failing_since is None:
                self._failing_since = now
                self._backoff = STORE_RETRY_FIRST
                self.log.error("storage write failed (%s: %s): writes stopped, still serving the %d stored blocks; "
                               "retrying with backoff up to %.0fs", type(exc).__name__, exc, len(self.blocks), STORE_RETRY_MAX)
            else:
                self._backoff = min(STORE_RETRY_MAX, self._backoff * 2)
                self.log.debug("storage write still failing (%s); next try in %.0fs", exc, self._backoff)
            self._retry_at = now + self._backoff
            return False
        except Exception as exc:  # noqa: BLE001 - a value SQLite can't take (e.g. text it can't encode): this write only
            self.ctx.metrics.dropped.labels(reason="store_rejected").inc()
            self.log.warning("a write was refused by the store (%s: %s); dropped", type(exc).__name__, exc)
            return False
        if self._failing_since is not None:
            self.log.warning("storage writable again after %.0fs", now - self._failing_since)
            self._failing_since = None
        return True

    def _notify_tip(self) -> None:
        height, top = self.tip()
        event = TipChanged(height, top)
        for listener in self.ctx.registry.tip_listeners():
            tell(listener, lambda listener: listener.on_tip_changed.defer(event))

    def _tell_unlinked(self, block: Block, addr: Address) -> None:
        """An announced block that doesn't extend our chain: a reason for consensus to look."""
        tell(self.ctx.registry.consensus(), lambda consensus: consensus.on_unlinked_announce.defer(block, addr))

    def _send_many(self, messages: list[tuple[WireMessage, Address]]) -> None:
        if messages:
            tell(self.ctx.registry.network(), lambda network: network.send_many.defer(messages))
