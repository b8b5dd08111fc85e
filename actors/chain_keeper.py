"""ChainKeeper: the only writer of the chain. Serves STATS and GET_BLOCK.

Every change is written to SQLite (one transaction, synchronous) *before* the
in-memory state changes, and only what the in-memory state calls ours is served
or announced, so nothing is ever served that a crash could take back.

The store is the chain; memory holds its index: the hashes by height (32 bytes a
block, chain/hash_column.py) and a bounded cache of blocks (the newest, and the
last ones read). A block is read from the store by height and served only if its
hash is the one our index holds; a lookup by hash is an index probe in SQLite.
So memory grows by 32 bytes a block, not by the blocks.

On (re)start the stored chain is checked block by block: the first
START_VERIFY_BLOCKS inside on_start, the rest in batches of VERIFY_BATCH, one
message each, so STATS is answered from the checked prefix meanwhile (`/health`
says `"chain": "verifying"`). A switch to a long staged chain runs as one
transaction on a thread with its own connection, while this actor keeps serving
the old chain, then takes the new hashes in one step.
"""
from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pykka

from actors.base import NodeActor
from runtime.context import NodeContext, tell
from runtime.interfaces import ChainApi
from runtime.threads import OwnedThread
from chain.block import HASH_RE, Block, InvalidBlock, check_block, check_chain, field_problem, meets_difficulty
from chain.hash_column import HashColumn
from chain.store import ChainStore, RowDamage, StoreError
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
# Memory is per block only through the hash column (32 bytes a block); blocks themselves are read
# from the store, and only these few are kept: the newest (peers and the explorer ask for those)
# and the last ones read elsewhere.
TIP_WINDOW = 512
CACHE_BLOCKS = 2048
MAX_BLOCKS_PER_CALL = 10_000  # get_blocks answers at most this many (the HTTP API asks for far fewer)
# Checking the stored chain at start: this many blocks inside on_start (a small chain is whole
# before the first message), then VERIFY_BATCH per message, so STATS is answered in between.
START_VERIFY_BLOCKS = 20_000
VERIFY_BATCH = 1_000
# A switch to a staged chain touching more rows than this (replaced + new) runs on a thread of
# its own with its own connection: the message loop goes on serving the old chain meanwhile.
INLINE_SWITCH_ROWS = 5_000
MAX_DEFERRED = 1_000  # NEW_WORD batches and staging writes held while such a thread writes
# A block that becomes our tip (announced to us, or the top of a sync) is relayed once: the
# hashes relayed are remembered (bounded), and so are the peers that announced a block above
# our tip before we had it (they have it: not relayed back to them).
RELAY_MEMORY = 1_024
HOLDER_MEMORY = 256
HOLDERS_PER_BLOCK = 8


@dataclass(frozen=True)
class _Quarantine:
    """A damaged stored tail to move to the quarantine table (found at the end of the check)."""

    reason: str
    stamp: float


@dataclass(frozen=True)
class _Switch:
    """A switch to a staged chain running on its own thread (one at a time)."""

    request_id: int
    first: int
    top: int
    replaced: int


class ChainKeeper(NodeActor, ChainApi):
    # The store has one writer: never two instances; a hang ends the node (exit 1).
    owns_shared_state = True
    # Every message is short (reads by index, bounded verification batches, big switches on
    # a thread): this budget is for a storage stall (SQLite's lock wait, a slow fsync).
    message_budget = 30.0

    def __init__(self, ctx: NodeContext, name: str = "ChainKeeper", clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ctx, name)
        self.difficulty = ctx.config.difficulty
        self.clock = clock
        self.store: ChainStore | None = None
        # Our chain in memory is its hashes by height; the store holds the blocks.
        self._hashes = HashColumn()
        self._tip_cache: dict[int, Block] = {}
        self._lru: OrderedDict[int, Block] = OrderedDict()
        # The stored chain is checked block by block after start; until then only the checked
        # prefix is ours (served, announced), and nothing is written to the blocks table.
        self._verifying = False
        self._stored_rows = 0
        self._waiting_rounds: list[int] = []  # round-input requests answered once verified
        self._quarantine: _Quarantine | None = None
        self._quarantine_thread: OwnedThread | None = None
        self._switching: _Switch | None = None
        self._switch_thread: OwnedThread | None = None
        self._deferred: list[tuple[Callable[..., None], tuple]] = []
        self._thread_stores: set[ChainStore] = set()  # the connections those threads write on
        self._attached = False
        self._writes = 0  # block writes that reached the store (an apply error after one is not survivable)
        # The NEW_WORD queue as it is on disk: word -> source IP (a word is queued once).
        self._queued: dict[str, str] = {}
        self._per_source: Counter[str] = Counter()
        # Storage faults (a full disk): writes stop until `_retry_at`, reads go on.
        self._failing_since: float | None = None
        self._retry_at = 0.0
        self._backoff = STORE_RETRY_FIRST
        self._relayed: OrderedDict[str, None] = OrderedDict()  # block hashes relayed (or mined) here
        self._holders: OrderedDict[str, list[Address]] = OrderedDict()  # block hash -> peers that announced it

    def on_start(self) -> None:
        self.store = ChainStore(self.ctx.config.data_dir)
        self._stored_rows = self.store.height()
        # Every queued word: a reorg may put back more than MAX_QUEUED_WORDS (new words wait for room).
        for _, word in self.store.pending_words(-1):
            if word not in self._queued:
                self._queued[word] = "stored"
                self._per_source["stored"] += 1
        self._verifying = True
        self._verify(START_VERIFY_BLOCKS)
        if self._verifying and self._quarantine is None:
            self.log.info("verifying the stored chain: %d of %d blocks checked so far and served; the rest is checked "
                          "in the background (/health shows 'chain': 'verifying')", self.height, self._stored_rows)
            self.tell_self(self.verify_more)
        self.ctx.metrics.chain_height.set(self.height)
        self._notify_tip()

    def on_attached(self) -> None:
        self._attached = True
        if self._quarantine is not None and self._quarantine_thread is None:
            self._start_quarantine_thread()  # damage found inside on_start, with a long tail above it

    def release(self) -> None:
        # A switch or quarantine thread still writing: abort its transaction (it rolls back; the next
        # start finds the chain as it was) and let it end before the store closes.
        for store in list(self._thread_stores):
            try:
                store.interrupt()
            except sqlite3.Error:
                pass
        for thread in (self._switch_thread, self._quarantine_thread):
            if thread is not None and thread.is_alive():
                thread.join(timeout=30)
        if self.store is not None:
            self.store.close()
            self.store = None

    def _release_abandoned(self) -> None:
        """Given up on as hung, while its message may still run inside SQLite on our thread:
        closing the connection under that thread crashes the process (a segfault instead of
        the supervisor's one CRITICAL line and exit 1). Only interrupt what runs; the
        connection goes with the process, which a hung state owner always ends."""
        self._interrupted.set()
        for store in [self.store, *self._thread_stores]:
            if store is not None:
                try:
                    store.interrupt()
                except sqlite3.Error:
                    pass

    @property
    def height(self) -> int:
        """Our chain's length: the verified blocks."""
        return len(self._hashes)

    # ---------------------------------------------------------- the stored chain, checked

    def verify_more(self) -> None:
        """Check the next batch of stored blocks (a message of its own, so STATS is answered in between)."""
        if not self._verifying or self._quarantine is not None or self.store is None:
            return
        self._verify(VERIFY_BATCH)
        if self._verifying and self._quarantine is None:
            self.ctx.metrics.chain_height.set(self.height)
            self.tell_self(self.verify_more)

    def _verify(self, budget: int) -> None:
        """Check up to `budget` stored blocks on top of the verified prefix; at the end (or damage), finish.

        The data dir was checked to hold a chain at our difficulty before the node
        started (chain/datadir.py), so a block failing here means damage or a bug:
        the log names the block and the rule, and the blocks from there up are moved
        to the store's quarantine table with that reason (never dropped).
        """
        assert self.store is not None
        done = 0
        while self._verifying and self._quarantine is None and done < budget:
            want = min(VERIFY_BATCH, budget - done)
            start = self.height
            # Rows the store can't read as blocks (a gap, text that is not UTF-8, messages that
            # are not a JSON list) end the batch with `damage`; wrong values are refused below.
            blocks, damage = self.store.read_rows(start, want)
            prev_hash = self._hashes[-1] if start else None
            for block in blocks:
                try:
                    check_block(block, prev_hash, self.difficulty)
                except InvalidBlock as exc:
                    shown = block.hash[:16] if isinstance(block.hash, str) else repr(block.hash)[:20]
                    damage = f"stored block {block.height} ({shown}) fails a chain rule: {exc.reason}"
                    break
                self._hashes.append(block.hash)
                prev_hash = block.hash
                if block.height >= self._stored_rows - TIP_WINDOW:
                    self._tip_cache[block.height] = block
            done += want
            if damage is not None or len(blocks) < want:
                stray = self.store.stray_damage()
                if stray is not None:
                    damage = stray if damage is None else f"{damage}; and {stray}"
                self._end_verify(damage)

    def _end_verify(self, problem: str | None) -> None:
        """The stored chain is checked: quarantine what failed, then `_finish_load`.

        A long damaged tail (more than INLINE_SWITCH_ROWS rows) moves in one transaction on a
        thread of its own, once we are attached, while the checked prefix is served; until it
        is done the node stays `verifying` (nothing writes the blocks table).
        """
        if problem is None:
            self._finish_load()
            return
        self._quarantine = _Quarantine(problem, time.time())
        if max(0, self._stored_rows - self.height) <= INLINE_SWITCH_ROWS:
            assert self.store is not None
            self.quarantine_done(self.store.quarantine_from(self.height, problem, now=self._quarantine.stamp), None)
        elif self._attached:
            self._start_quarantine_thread()

    def _start_quarantine_thread(self) -> None:
        job = self._quarantine
        assert job is not None and self.store is not None
        self.log.info("moving the stored blocks from height %d up to quarantine on a thread; serving the %d checked blocks "
                      "meanwhile", self.height, self.height)
        self._quarantine_thread = self.spawn("quarantine", self._quarantine_in_thread, self.store.path, self.height, job)

    def _quarantine_in_thread(self, path: Any, height: int, job: _Quarantine) -> None:
        """On the quarantine thread: the move as one transaction on a connection of its own."""
        moved, error = 0, None
        try:
            store = ChainStore.second_connection(path)
            self._thread_stores.add(store)
            try:
                moved = store.quarantine_from(height, job.reason, now=job.stamp)
            finally:
                self._thread_stores.discard(store)
                store.close()
        except Exception as exc:  # noqa: BLE001 - told to the actor, which fails (and is restarted)
            error = f"{type(exc).__name__}: {exc}"
        try:
            self.tell_self(self.quarantine_done, moved, error)
        except pykka.ActorDeadError:
            pass

    def quarantine_done(self, moved: int, error: str | None) -> None:
        """The damaged tail is in the quarantine table (or the move failed: then we fail, and the restart retries)."""
        job = self._quarantine
        if job is None:
            return
        assert self.store is not None
        if error is not None:
            # Writing on top now would delete the damaged rows instead of keeping them: retry from a fresh start.
            raise RuntimeError(f"moving the damaged stored blocks from height {self.height} to quarantine failed: {error}")
        self._quarantine = None
        self._quarantine_thread = None
        self.log.error("%s; moved %d stored blocks from height %d up to the quarantine table of %s",
                       job.reason, moved, self.height, self.store.path)
        self._finish_load()
        self._replay_deferred()

    def _finish_load(self) -> None:
        """The chain is ours: put back the words of quarantined blocks, answer waiting rounds, tell the tip."""
        assert self.store is not None
        self._verifying = False
        height = self.height
        self._stored_rows = height
        try:  # words in blocks that are not ours any more (a quarantined tail) are queued again
            back = self.store.unmine_words_from(height)
        except STORAGE_ERRORS as exc:
            back = []
            self.log.error("could not put back the words of blocks above height %d: %s", height, exc)
        for word in back:
            if word not in self._queued:
                self._queued[word] = "stored"
                self._per_source["stored"] += 1
        if back:
            self.log.warning("%d queued words were in blocks above height %d: queued again", len(back), height)
        self._trim_tip_cache()
        self.ctx.metrics.chain_height.set(height)
        self.log.info("chain loaded: %d blocks", height)
        waiting, self._waiting_rounds = self._waiting_rounds, []
        self._notify_tip()
        for request_id in waiting:
            self.send_round_inputs(request_id)

    # ---------------------------------------------------------- blocks, from the cache or the store

    def block(self, height: int) -> Block | None:
        """Our block at `height`, or None (beyond our chain, or unreadable now)."""
        if not 0 <= height < self.height:
            return None
        block = self._tip_cache.get(height)
        if block is None:
            block = self._lru.get(height)
            if block is not None:
                self._lru.move_to_end(height)
        if block is not None:
            return block
        assert self.store is not None
        try:
            block = self.store.block_at(height)
        except STORAGE_ERRORS as exc:
            self._repeats.report("read", logging.WARNING, "reading block %d failed (%s: %s): not served", height,
                                 type(exc).__name__, exc)
            return None
        if block is None or not self._is_ours(block):
            return None
        self._remember(block)
        return block

    def _is_ours(self, block: Block) -> bool:
        """A block read from disk is served only if it is the one our index holds, and still valid there
        (not a row a switch is rewriting, nor damage since the chain was checked): one hash to compute."""
        height = block.height
        if block.hash != self._hashes[height]:
            return False
        try:
            check_block(block, self._hashes[height - 1] if height else None, self.difficulty)
        except InvalidBlock as exc:
            self._repeats.report("damage", logging.ERROR, "stored block %d fails a chain rule now (%s): not served; "
                                 "the next start quarantines it", height, exc.reason)
            return False
        return True

    def _remember(self, block: Block) -> None:
        if block.height >= self.height - TIP_WINDOW:
            self._tip_cache[block.height] = block
            if len(self._tip_cache) > 2 * TIP_WINDOW:
                self._trim_tip_cache()
            return
        self._lru[block.height] = block
        self._lru.move_to_end(block.height)
        while len(self._lru) > CACHE_BLOCKS:
            self._lru.popitem(last=False)

    def _trim_tip_cache(self) -> None:
        low = self.height - TIP_WINDOW
        for height in [h for h in self._tip_cache if h < low or h >= self.height]:
            del self._tip_cache[height]

    def _forget_from(self, height: int) -> None:
        """Drop cached blocks at `height` and above (they are being replaced)."""
        for cache in (self._tip_cache, self._lru):
            for h in [h for h in cache if h >= height]:
                del cache[h]

    def cache_size(self) -> int:
        """Blocks held in memory (bounded: TIP_WINDOW * 2 + CACHE_BLOCKS)."""
        return len(self._tip_cache) + len(self._lru)

    # ---------------------------------------------------------- queries (ask)

    def tip(self) -> tuple[int, str | None]:
        """(height as the number of blocks, top hash or None)."""
        return self.height, (self._hashes[-1] if self.height else None)

    def get_blocks(self, start: int, limit: int) -> list[Block]:
        """Our blocks `start` .. `start + limit - 1` (at most MAX_BLOCKS_PER_CALL), cut at the first unreadable one."""
        start = max(0, start)
        stop = min(self.height, start + min(max(0, limit), MAX_BLOCKS_PER_CALL))
        if start >= stop:
            return []
        cached = {h: b for h in range(start, stop) if (b := self._tip_cache.get(h) or self._lru.get(h)) is not None}
        read: dict[int, Block] = {}
        if len(cached) < stop - start:
            assert self.store is not None
            try:
                read = {b.height: b for b in self.store.load_range(start, stop)}
            except (RowDamage, *STORAGE_ERRORS):
                read = {}  # block by block below: the readable prefix is still served
        blocks: list[Block] = []
        for height in range(start, stop):
            block = cached.get(height)
            if block is None:
                block = read.get(height)
                if block is None or not self._is_ours(block):
                    block = self.block(height)
            if block is None:
                break
            blocks.append(block)
        return blocks

    def find_block(self, block_hash: str) -> Block | None:
        """Our block with this hash (the explorer's /block/<hash>): an index probe in the store; None if we have none."""
        if not isinstance(block_hash, str) or not HASH_RE.match(block_hash):
            return None
        assert self.store is not None
        try:
            heights = self.store.heights_of(block_hash)
        except STORAGE_ERRORS:
            return None
        for height in heights:
            if 0 <= height < self.height and self._hashes[height] == block_hash:
                return self.block(height)
        return None

    def all_hashes(self) -> Sequence[str]:
        """Our block hashes by height: an immutable snapshot (consensus compares it with a peer's chain)."""
        return self._hashes.snapshot()

    def pending_words(self, limit: int = 10) -> list[str]:
        assert self.store is not None
        return [word for _, word in self.store.pending_words(limit)]

    def word_count(self) -> int:
        return len(self._queued)

    def health_details(self) -> dict[str, Any]:
        """In /health: the chain's state (verifying at start), storage, the NEW_WORD queue, memory held."""
        state = "verifying" if self._verifying else "switching" if self._switching is not None else "ready"
        details: dict[str, Any] = {"chain": state, "height": self.height, "storage": self.storage_state(),
                                   "words_queued": len(self._queued), "cached_blocks": self.cache_size(),
                                   "hash_index_mb": round(self._hashes.nbytes() / 2**20, 1)}
        if self._verifying:
            details["stored_blocks"] = self._stored_rows
        return details

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
        self._send_many([(GetBlockReply(self.block(h) if isinstance(h, int) else None), addr) for h, addr in requests])

    def on_new_word(self, word: str, source: str = "local") -> None:
        self.on_new_words([(word, source)])

    def on_new_words(self, words: list[tuple[str, str]]) -> None:
        """NEW_WORDs (word, source IP) that arrived together: checked, then queued in one transaction.

        Duplicates of a queued word are dropped; each source may hold at most
        MAX_WORDS_PER_SOURCE of the MAX_QUEUED_WORDS, so one sender can't fill the queue.
        While a switch thread writes, the batch waits (in order) for it to end.
        """
        assert self.store is not None
        if self._thread_writes():
            self._defer(self.on_new_words, (list(words),), len(words))
            return
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
        height = self.height
        if not isinstance(block.height, int):
            return
        if block.height < height and self._hashes[block.height] == block.hash:
            self._tell_claim(block, addr)  # we have it already; still news of the peer's tip
            return
        if self._busy():
            return  # our chain is being checked or switched: a later round catches up
        if block.height < height:
            self._answer_stale(block, addr)
            return
        if block.height == height:
            prev_hash = self._hashes[-1] if height else None
            try:
                check_block(block, prev_hash, self.difficulty)
            except InvalidBlock as exc:
                self.ctx.metrics.blocks_rejected.labels(source="announce").inc()
                self.log.debug("announce of height %d from %s:%d refused: %s", block.height, *addr, exc.reason)
                if block.height > 0 and exc.reason.startswith("hash does not match"):
                    self._tell_unlinked(block, addr)
                return
            if self._write(height, [block]):
                self.log.info("block %d from %s:%d accepted by announce", block.height, *addr,
                              extra={"height": block.height, "hash": block.hash, "peer": f"{addr[0]}:{addr[1]}"})
                self._tell_claim(block, addr)
                self._relay(block, addr)
            return
        self._note_holder(block.hash, addr)
        self._tell_unlinked(block, addr)

    def _answer_stale(self, block: Block, addr: Address) -> None:
        """A peer announced a block of another branch no longer than ours (after a healed partition, its
        side's tip): tell it our tip, which doesn't link there, so its consensus syncs our chain.
        Only a block that could be valid somewhere is answered; GossipManager sends the answer only
        to a tried peer, at most every few seconds each."""
        if field_problem(block) is not None or not meets_difficulty(block.hash, self.difficulty):
            return
        tip = self.block(self.height - 1)
        if tip is not None:
            tell(self.ctx.registry.gossip(), lambda gossip: gossip.answer_stale.defer(Announce(tip), addr))

    def _note_holder(self, block_hash: str, addr: Address) -> None:
        """`addr` announced `block_hash` before we had it: if a sync makes it our tip, don't relay it back there."""
        if not isinstance(block_hash, str):
            return
        holders = self._holders.pop(block_hash, [])
        if addr not in holders and len(holders) < HOLDERS_PER_BLOCK:
            holders.append(addr)
        self._holders[block_hash] = holders
        while len(self._holders) > HOLDER_MEMORY:
            self._holders.popitem(last=False)

    def _relay(self, block: Block, sender: Address | None = None) -> None:
        """`block` (valid, stored) is our new tip: an ANNOUNCE of it to a few random tried peers, once per
        hash, never to its sender nor to peers that announced it to us."""
        if block.hash in self._relayed:
            return
        self._mark_relayed(block.hash)
        exclude = self._holders.pop(block.hash, [])
        if sender is not None and sender not in exclude:
            exclude.append(sender)
        tell(self.ctx.registry.gossip(), lambda gossip: gossip.relay.defer(Announce(block), exclude))

    def _mark_relayed(self, block_hash: str) -> None:
        self._relayed[block_hash] = None
        self._relayed.move_to_end(block_hash)
        while len(self._relayed) > RELAY_MEMORY:
            self._relayed.popitem(last=False)

    def _tell_claim(self, block: Block, addr: Address) -> None:
        """ConsensusRunner keeps each peer's latest claim for the dashboard: this ANNOUNCE is one."""
        tell(self.ctx.registry.consensus(), lambda consensus: consensus.note_announce.defer(block.height + 1, block.hash, addr))

    # ---------------------------------------------------------- local writers

    def add_mined_block(self, block: Block) -> bool:
        """A block our miner found: store it, then announce it. False if it is stale."""
        height = self.height
        if block.height != height or self._busy():
            return False
        prev_hash = self._hashes[-1] if height else None
        try:
            check_block(block, prev_hash, self.difficulty)
        except InvalidBlock as exc:
            self.ctx.metrics.blocks_rejected.labels(source="miner").inc()
            self.log.warning("mined block %d refused: %s", block.height, exc.reason)
            return False
        if not self._write(height, [block]):  # durable first...
            return False
        self.ctx.metrics.blocks_mined.inc()
        self._mark_relayed(block.hash)  # announced to every tried peer: never relayed on top
        tell(self.ctx.registry.gossip(), lambda gossip: gossip.broadcast.defer(Announce(block)))  # ...then announced
        self.log.info("mined block %d %s", block.height, block.hash[:16], extra={"height": block.height, "hash": block.hash})
        return True

    def apply_segment(self, fork_height: int, segment: Sequence[Block]) -> bool:
        """Replace everything from `fork_height` up with `segment`, if that is better.

        Only a chain that is longer than ours and valid from the fork point up is
        taken, in one transaction. Returns whether it was applied.
        """
        height = self.height
        new_length = fork_height + len(segment)
        if not 0 <= fork_height <= height or new_length <= height:
            return False
        if self._busy():
            self.log.info("synced segment from %d not applied: the stored chain is being %s", fork_height, self._busy())
            return False
        base_prev = self._hashes[fork_height - 1] if fork_height > 0 else None
        try:
            check_chain(segment, self.difficulty, base_height=fork_height, base_prev_hash=base_prev)
        except InvalidBlock as exc:
            self.ctx.metrics.blocks_rejected.labels(source="sync").inc()
            self.log.warning("synced segment from %d refused: %s", fork_height, exc.reason)
            return False
        replaced = height - fork_height
        if not self._write(fork_height, segment):
            return False
        if replaced > 0:
            self.ctx.metrics.chain_reorgs.inc()
            self.log.warning("reorg: replaced %d blocks above height %d", replaced, fork_height)
        self.log.info("chain now %d blocks (synced %d)", self.height, len(segment), extra={"height": self.height})
        self._relay(segment[-1])  # the new tip only, not every synced block
        return True

    # ---------------------------------------------------------- long syncs (staging)

    def stage_blocks(self, blocks: Sequence[Block], reset: bool = False) -> None:
        """Keep linked blocks of a chain being synced (one transaction): a crash keeps them."""
        if self._thread_writes():
            self._defer(self.stage_blocks, (list(blocks), reset), 1)
            return
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
        block links to our block `first - 1`. Returns whether it was switched. Runs
        inside this call; ConsensusRunner's `switch_to_staged_and_reply` runs a big
        switch on a thread instead.
        """
        if not self._switch_allowed(first, top, top_hash):
            return False
        assert self.store is not None
        result: list[tuple[tuple[list[str], list[str]], bytes]] = []
        try:
            if not self._storage_try(lambda store: result.append(_switch_rows(store, first, top))):
                return False
        except (StoreError, ValueError) as exc:
            self.log.warning("staged chain from %d refused: %s", first, exc)
            return False
        self._finish_switch(first, top, self.height - first, *result[0])
        return True

    def _switch_allowed(self, first: int, top: int, top_hash: str) -> bool:
        """The checks before a switch: longer than ours, the staged run's ends match, it links to our block `first - 1`."""
        assert self.store is not None
        height = self.height
        if not 0 <= first <= height or top + 1 <= height or top < first:
            return False
        if self._busy():
            self.log.info("switch to the staged chain %d..%d not done: the stored chain is being %s", first, top, self._busy())
            return False
        top_block = self.store.staged_block(top)
        first_block = self.store.staged_block(first)
        if top_block is None or first_block is None or top_block.hash != top_hash:
            self.log.warning("staged chain does not match the sync's (%d..%d)", first, top)
            return False
        base_prev = self._hashes[first - 1] if first > 0 else None
        try:
            check_block(first_block, base_prev, self.difficulty)
        except InvalidBlock as exc:
            self.log.warning("staged chain from %d refused: %s", first, exc.reason)
            return False
        return True

    def _finish_switch(self, first: int, top: int, replaced: int, settled: tuple[list[str], list[str]], digests: bytes) -> None:
        """The store switched: our hashes from `first` up become the staged run's."""
        self._writes += 1
        self._hashes.truncate(first)
        self._hashes.extend_raw(digests)
        self._forget_from(first)
        self._after_write(settled)
        if replaced > 0:
            self.ctx.metrics.chain_reorgs.inc()
            self.log.warning("reorg: replaced %d blocks above height %d", replaced, first)
        self.log.info("chain now %d blocks (synced %d)", self.height, top + 1 - first, extra={"height": self.height})
        tip = self.block(self.height - 1)
        if tip is not None:
            self._relay(tip)  # the new tip only, not every synced block

    def switch_done(self, request_id: int, outcome: tuple[str, Any]) -> None:
        """The switch thread's answer (a message to ourselves): take the new chain in memory, reply, catch up."""
        job = self._switching
        self._switching = None
        ok = False
        kind, value = outcome
        if job is None or job.request_id != request_id:
            self.log.error("a switch thread answered for a switch that is not running (%s): ignored", kind)
        elif kind == "switched":
            settled, digests = value
            self._storage_recovered()
            self._finish_switch(job.first, job.top, job.replaced, settled, digests)
            ok = True
        elif kind == "storage":
            self._storage_failed(value)
            self.ctx.metrics.dropped.labels(reason="store_unavailable").inc()
        elif kind == "refused":
            self.log.warning("staged chain from %d refused: %s", job.first, value)
        else:
            self.ctx.metrics.dropped.labels(reason="apply_error").inc()
            self.log.error("the switch to the staged chain %d..%d failed (%s); our chain is unchanged", job.first, job.top, value)
        self._tell_applied(request_id, ok)
        self._replay_deferred()

    def _switch_in_thread(self, job: _Switch) -> None:
        """On the switch thread: the whole switch as one transaction on a connection of its own."""
        assert self.store is not None
        outcome: tuple[str, Any]
        try:
            store = ChainStore.second_connection(self.store.path)
        except STORAGE_ERRORS as exc:
            outcome = ("storage", exc)
        else:
            self._thread_stores.add(store)
            try:
                outcome = ("switched", _switch_rows(store, job.first, job.top))
            except (StoreError, ValueError) as exc:
                outcome = ("refused", str(exc))
            except STORAGE_ERRORS as exc:
                outcome = ("storage", exc)
            except Exception as exc:  # noqa: BLE001 - a bug: the transaction rolled back; the switch fails, not the node
                self.log.exception("switch thread failed")
                outcome = ("failed", f"{type(exc).__name__}: {exc}")
            finally:
                self._thread_stores.discard(store)
                store.close()
        try:
            self.tell_self(self.switch_done, job.request_id, outcome)
        except pykka.ActorDeadError:
            pass  # stopped meanwhile: the next start loads whatever was committed

    def _thread_writes(self) -> bool:
        """A switch or quarantine thread holds the store's write lock: our own writes wait for it (deferred)."""
        return self._switching is not None or (self._quarantine is not None and self._quarantine_thread is not None)

    def _replay_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for method, args in deferred:
            method(*args)

    def _busy(self) -> str:
        """Why the blocks table can't be written now ('' if it can)."""
        return "verified" if self._verifying else "switched" if self._switching is not None else ""

    def _defer(self, method: Callable[..., None], args: tuple, weight: int) -> None:
        """Hold a write until the switch thread is done (bounded; beyond it, dropped and counted)."""
        if len(self._deferred) >= MAX_DEFERRED:
            self.ctx.metrics.dropped.labels(reason="chain_switching").inc(weight)
            return
        self._deferred.append((method, args))

    # ---------------------------------------------------------- ConsensusRunner's requests (told; answered by a tell)

    def send_round_inputs(self, request_id: int) -> None:
        """Tell ConsensusRunner what a round starts from: our hashes by height and the staged run.

        While the stored chain is being verified the answer waits for the end of it
        (a round must not sync blocks we already hold). A storage fault reading the
        staged run costs only the resume (None), not the round.
        """
        if self._verifying:
            self._waiting_rounds = [*self._waiting_rounds[-3:], request_id]
            return
        hashes = self.all_hashes()
        try:
            staged = self.staging_summary()
        except STORAGE_ERRORS as exc:
            self.log.warning("staged run unreadable (%s: %s): a sync starts afresh", type(exc).__name__, exc)
            staged = None
        tell(self.ctx.registry.consensus(), lambda consensus: consensus.on_round_inputs.defer(request_id, hashes, staged))

    def apply_segment_and_reply(self, request_id: int, fork_height: int, segment: Sequence[Block]) -> None:
        """`apply_segment`, then tell ConsensusRunner whether it was applied (after the tip notice).

        An error inside the apply (a bug) fails that segment, logged and counted, as
        long as nothing reached the store: memory and disk are then as they were. If
        the store was written, memory can't be trusted: the error is raised and the
        restarted ChainKeeper reloads the chain from disk.
        """
        ok = False
        writes = self._writes
        try:
            ok = self.apply_segment(fork_height, segment)
        except Exception as exc:  # noqa: BLE001 - see above
            if self._writes != writes:
                raise
            self.ctx.metrics.dropped.labels(reason="apply_error").inc()
            self.log.exception("applying %d synced blocks from height %d failed (%s: %s); segment refused, chain unchanged",
                               len(segment), fork_height, type(exc).__name__, exc)
        finally:
            self._tell_applied(request_id, ok)

    def switch_to_staged_and_reply(self, request_id: int, first: int, top: int, top_hash: str) -> None:
        """`switch_to_staged`, then tell ConsensusRunner whether it was switched (after the tip notice).

        A big switch (more than INLINE_SWITCH_ROWS rows) runs on a thread with its own
        connection; this actor goes on answering STATS and GET_BLOCK from the old chain
        and replies when the thread is done (`switch_done`).
        """
        ok = False
        writes = self._writes
        try:
            if not self._switch_allowed(first, top, top_hash):
                return
            rows = (self.height - first) + (top + 1 - first)
            now = self.clock()
            if self._failing_since is not None and now < self._retry_at:
                return
            if rows > INLINE_SWITCH_ROWS and self._attached:
                self._switching = _Switch(request_id, first, top, self.height - first)
                self.log.info("switching to the staged chain %d..%d (%d rows) on a thread; serving the old chain meanwhile",
                              first, top, rows)
                self._switch_thread = self.spawn("switch", self._switch_in_thread, self._switching)
                request_id = 0  # answered by switch_done
                return
            ok = self.switch_to_staged(first, top, top_hash)
        except Exception as exc:  # noqa: BLE001 - as in apply_segment_and_reply
            if self._writes != writes:
                raise
            self._switching = None
            self.ctx.metrics.dropped.labels(reason="apply_error").inc()
            self.log.exception("switch to the staged chain %d..%d failed (%s: %s); chain unchanged", first, top,
                               type(exc).__name__, exc)
        finally:
            if request_id:
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
        self._writes += 1
        self._hashes.truncate(height)
        self._forget_from(height)
        for block in blocks:
            self._hashes.append(block.hash)
        for block in blocks[-TIP_WINDOW:]:
            self._remember(block)
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
        self.ctx.metrics.chain_height.set(self.height)
        self._notify_tip()

    def _storage_try(self, write: Callable[[ChainStore], None]) -> bool:
        """Run one write unless writes are stopped; a storage error stops them (one ERROR line), with backoff.

        What is stored keeps being served (STATS from memory, GET_BLOCK from the
        cache or the store's readable rows); the first write after the backoff is the
        retry, and its success says so.
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
            self._storage_failed(exc)
            return False
        except Exception as exc:  # noqa: BLE001 - a value SQLite can't take (e.g. text it can't encode): this write only
            self.ctx.metrics.dropped.labels(reason="store_rejected").inc()
            self.log.warning("a write was refused by the store (%s: %s); dropped", type(exc).__name__, exc)
            return False
        self._storage_recovered()
        return True

    def _storage_failed(self, exc: BaseException) -> None:
        now = self.clock()
        if self._failing_since is None:
            self._failing_since = now
            self._backoff = STORE_RETRY_FIRST
            self.log.error("storage write failed (%s: %s): writes stopped, still serving the %d stored blocks; "
                           "retrying with backoff up to %.0fs", type(exc).__name__, exc, self.height, STORE_RETRY_MAX)
        else:
            self._backoff = min(STORE_RETRY_MAX, self._backoff * 2)
            self.log.debug("storage write still failing (%s); next try in %.0fs", exc, self._backoff)
        self._retry_at = now + self._backoff

    def _storage_recovered(self) -> None:
        if self._failing_since is not None:
            self.log.warning("storage writable again after %.0fs", self.clock() - self._failing_since)
            self._failing_since = None

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


def _switch_rows(store: ChainStore, first: int, top: int) -> tuple[tuple[list[str], list[str]], bytes]:
    """Switch `store` to staged blocks `first`..`top` (one transaction); (words settled, the new hashes raw).

    The hashes are read before the switch empties the staging table; nothing can stage
    in between (the keeper holds staging writes while a switch runs).
    """
    digests = store.staged_digests(first, top)
    if len(digests) != (top + 1 - first) * 32:
        raise StoreError(f"staging lacks blocks between {first} and {top}")
    return store.switch_to_staged(first, top), digests
