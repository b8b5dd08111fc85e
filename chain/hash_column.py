"""Block hashes by height, 32 bytes each: the chain's in-memory index, not its blocks.

ChainKeeper keeps only this (plus a small cache) in memory, so a million blocks
cost 32 MB instead of the blocks themselves. The hashes live in fixed-size
chunks of immutable `bytes` plus one growing tail, so that:

* reading hash `h` is one slice and a hex conversion;
* appending a block touches only the tail, and a reorg truncates in O(chunks);
* `snapshot()` is an immutable copy that shares the full chunks (O(height / CHUNK)),
  safe to hand to another actor (the sync engine reads it while we go on).

Only valid block hashes (64 lowercase hex characters) are stored; anything else
raises ValueError on the way in.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence, overload

DIGEST = 32  # bytes per hash
CHUNK = 4096  # hashes per immutable chunk (128 KiB)
_CHUNK_BYTES = CHUNK * DIGEST


def to_digest(block_hash: str) -> bytes:
    """The 32 raw bytes of a block hash; ValueError unless it is 64 lowercase hex characters."""
    if not isinstance(block_hash, str) or len(block_hash) != 2 * DIGEST or block_hash != block_hash.lower():
        raise ValueError(f"not a block hash: {block_hash!r:.80}")
    return bytes.fromhex(block_hash)


class _Hashes(Sequence[str]):
    """Read side shared by the mutable column and its snapshots."""

    _full: Sequence[bytes]
    _tail: bytes | bytearray

    def __len__(self) -> int:
        return len(self._full) * CHUNK + len(self._tail) // DIGEST

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        length = len(self)
        if index < 0:
            index += length
        if not 0 <= index < length:
            raise IndexError("hash index out of range")
        return self.digest(index).hex()

    def digest(self, index: int) -> bytes:
        """The raw 32 bytes of hash `index` (0 <= index < len)."""
        chunk, offset = divmod(index, CHUNK)
        data = self._full[chunk] if chunk < len(self._full) else self._tail
        return bytes(data[offset * DIGEST : (offset + 1) * DIGEST])

    def __iter__(self) -> Iterator[str]:
        for data in [*self._full, bytes(self._tail)]:
            for offset in range(0, len(data), DIGEST):
                yield data[offset : offset + DIGEST].hex()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Hashes):
            return len(self) == len(other) and list(self._full) == list(other._full) and bytes(self._tail) == bytes(other._tail)
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self)} hashes>"


class HashSnapshot(_Hashes):
    """An immutable copy of a HashColumn (shares the column's full chunks)."""

    def __init__(self, full: tuple[bytes, ...], tail: bytes) -> None:
        self._full = full
        self._tail = tail


class HashColumn(_Hashes):
    """The mutable column: append, extend, truncate; `snapshot()` for other threads."""

    def __init__(self, hashes: Iterable[str] = ()) -> None:
        self._full: list[bytes] = []
        self._tail = bytearray()
        self.extend(hashes)

    def append(self, block_hash: str) -> None:
        self.append_digest(to_digest(block_hash))

    def append_digest(self, digest: bytes) -> None:
        if len(digest) != DIGEST:
            raise ValueError(f"a digest is {DIGEST} bytes, not {len(digest)}")
        self._tail += digest
        if len(self._tail) >= _CHUNK_BYTES:
            self._full.append(bytes(self._tail))
            self._tail = bytearray()

    def extend(self, hashes: Iterable[str]) -> None:
        for block_hash in hashes:
            self.append(block_hash)

    def extend_raw(self, digests: bytes) -> None:
        """Append concatenated 32-byte digests (e.g. read in bulk from the store)."""
        if len(digests) % DIGEST:
            raise ValueError("raw digests must be a multiple of 32 bytes")
        view = memoryview(digests)
        while view:
            room = _CHUNK_BYTES - len(self._tail)
            self._tail += view[:room]
            view = view[room:]
            if len(self._tail) >= _CHUNK_BYTES:
                self._full.append(bytes(self._tail))
                self._tail = bytearray()

    def extend_column(self, other: "_Hashes") -> None:
        """Append every hash of `other` (chunk by chunk, no hex round trip)."""
        for data in [*other._full, bytes(other._tail)]:
            self.extend_raw(data)

    def truncate(self, length: int) -> None:
        """Keep the first `length` hashes."""
        if length >= len(self):
            return
        length = max(0, length)
        chunk, offset = divmod(length, CHUNK)
        if chunk < len(self._full):
            self._tail = bytearray(self._full[chunk][: offset * DIGEST])
            del self._full[chunk:]
        else:
            del self._tail[offset * DIGEST :]

    def snapshot(self) -> HashSnapshot:
        return HashSnapshot(tuple(self._full), bytes(self._tail))

    def nbytes(self) -> int:
        """Memory held by the hashes themselves (for /health)."""
        return len(self._full) * _CHUNK_BYTES + len(self._tail)
