"""Which hash kernel a worker searches nonces with, chosen at run time.

The kernels all do one thing: hash ``data + "%011x" % counter`` for a range of
counters, in order, and stop at the first hash whose hex form ends with
`difficulty` zeros. They find exactly the same nonces and hashes; they differ only
in speed:

* ``sha-ni``: the native module `pow_kernel` (C, mining/native/) using the CPU's
  SHA extensions, where the CPU has them;
* ``portable``: the same module's plain C compression function, on any other CPU;
* ``hashlib``: CPython's hashlib with a copied midstate, when the module was not
  built (e.g. no C compiler at install time).

`pow_kernel` is a top-level module installed by ``pip install -r requirements.txt``
(the requirements name the local project mining/native/); importing it can't be
shadowed by this repository's `mining` package. ``POW_KERNEL=sha-ni|portable|hashlib``
in the environment forces a kernel (tests, benchmarks); a forced kernel this
machine can't run falls back to the best one that it can, with a warning.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from types import ModuleType
from typing import Callable, Protocol

COUNTER_DIGITS = 11  # the nonce's varying part: 8 "outer" + 3 "suffix" hex digits (mining/worker.py)
COUNTER_LIMIT = 16**COUNTER_DIGITS
KERNEL_ENV = "POW_KERNEL"
SHA_NI, PORTABLE, HASHLIB = "sha-ni", "portable", "hashlib"
KERNEL_NAMES = (SHA_NI, PORTABLE, HASHLIB)

log = logging.getLogger("mining.kernel")

# (counter start, count) -> (counters hashed, found digest or None)
RangeSearch = Callable[[int, int], tuple[int, bytes | None]]


class Kernel(Protocol):
    name: str

    def searcher(self, data: bytes, difficulty: int) -> RangeSearch:
        """A search over counter ranges of one work unit (`data` = block prefix + nonce head)."""
        ...


def counter_text(counter: int) -> bytes:
    """The nonce's varying part for `counter`: 11 lowercase hex digits."""
    return b"%011x" % counter


def digest_meets(digest: bytes, difficulty: int) -> bool:
    """True when the digest's hex form ends with `difficulty` '0's, without making it."""
    whole, half = divmod(difficulty, 2)
    if whole and digest[len(digest) - whole :] != bytes(whole):
        return False
    return not half or digest[len(digest) - whole - 1] & 0x0F == 0


_SUFFIX_DIGITS = 3
_GROUP = 16**_SUFFIX_DIGITS
_SUFFIXES: tuple[bytes, ...] = tuple(b"%0*x" % (_SUFFIX_DIGITS, i) for i in range(_GROUP))


class HashlibKernel:
    """The pure-Python loop: midstate copied per nonce, the last byte checked first."""

    name = HASHLIB

    def searcher(self, data: bytes, difficulty: int) -> RangeSearch:
        base = hashlib.sha256(data)

        def search(start: int, count: int) -> tuple[int, bytes | None]:
            counter, end = start, start + count
            while counter < end:
                outer, first = divmod(counter, _GROUP)
                last = min(_GROUP, first + end - counter)
                mid = base.copy()
                mid.update(b"%08x" % outer)
                suffixes = _SUFFIXES if first == 0 and last == _GROUP else _SUFFIXES[first:last]
                copy = mid.copy
                if difficulty >= 2:
                    # Hot loop: a hash whose last byte is not 0 can't end with two hex zeros.
                    for i, suffix in enumerate(suffixes):
                        h = copy()
                        h.update(suffix)
                        if not h.digest()[-1]:
                            digest = h.digest()
                            if digest_meets(digest, difficulty):
                                return counter + i - start + 1, digest
                else:
                    for i, suffix in enumerate(suffixes):
                        h = copy()
                        h.update(suffix)
                        digest = h.digest()
                        if digest_meets(digest, difficulty):
                            return counter + i - start + 1, digest
                counter += last - first
            return count, None

        return search


class NativeKernel:
    """`pow_kernel.search` with one of its implementations."""

    def __init__(self, module: ModuleType, impl: int, name: str) -> None:
        self._search = module.search
        self._impl = impl
        self.name = name

    def searcher(self, data: bytes, difficulty: int) -> RangeSearch:
        search, impl = self._search, self._impl

        def run(start: int, count: int) -> tuple[int, bytes | None]:
            return search(data, start, count, difficulty, impl)

        return run


def native_module() -> ModuleType | None:
    """The built `pow_kernel` module, or None when it was not built."""
    try:
        import pow_kernel
    except ImportError:
        return None
    return pow_kernel


def available_kernels(module: ModuleType | None = None) -> list[str]:
    """Kernel names this machine can run, fastest first."""
    module = native_module() if module is None else module
    names = []
    if module is not None:
        if module.sha_ni_available():
            names.append(SHA_NI)
        names.append(PORTABLE)
    names.append(HASHLIB)
    return names


def make_kernel(name: str, module: ModuleType | None = None) -> Kernel:
    """The kernel called `name`; ValueError if this machine can't run it."""
    if name == HASHLIB:
        return HashlibKernel()
    if name not in KERNEL_NAMES:
        raise ValueError(f"unknown kernel {name!r} (one of {', '.join(KERNEL_NAMES)})")
    module = native_module() if module is None else module
    if module is None:
        raise ValueError(f"kernel {name!r} needs the native module pow_kernel, which is not built")
    if name == SHA_NI:
        if not module.sha_ni_available():
            raise ValueError("kernel 'sha-ni' needs a CPU with the SHA extensions")
        return NativeKernel(module, module.SHA_NI, SHA_NI)
    return NativeKernel(module, module.PORTABLE, PORTABLE)


def select_kernel(requested: str | None = None) -> Kernel:
    """The fastest kernel here, or `requested` (default: $POW_KERNEL) when it can run here."""
    requested = requested if requested is not None else os.environ.get(KERNEL_ENV, "").strip().lower()
    module = native_module()
    if requested:
        try:
            return make_kernel(requested, module)
        except ValueError as exc:
            log.warning("%s; using the best available kernel instead", exc)
    return make_kernel(available_kernels(module)[0], module)


_warned = False


def warn_if_not_native(logger: logging.Logger) -> bool:
    """Log one warning (per process) when the native module is missing; True if it is."""
    global _warned
    if native_module() is not None:
        return False
    if not _warned:
        _warned = True
        logger.warning("native hash kernel not built (pow_kernel missing: no C compiler at install?); "
                       "mining with the hashlib loop, several times slower")
    return True


def measure_rate(kernel: Kernel, seconds: float = 0.2) -> float:
    """Hashes per second `kernel` does on this core now (a search that can't succeed, for ~`seconds`).

    Measured, not looked up, so a busy machine gets its real (lower) figure.
    """
    search = kernel.searcher(b"rate probe " + bytes(53), 64)
    batch, done, counter = 4096, 0, 0
    started = time.perf_counter()
    while True:
        tried, _ = search(counter, batch)
        done += tried
        counter += tried
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed
        if elapsed < seconds / 20:
            batch *= 2
