"""The native hash kernel against hashlib: same hashes, same first solution, every path.

Each native implementation (SHA-NI where the CPU has it, portable C always) is
forced in turn and compared with the hashlib loop, which is the reference.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import string
import sysconfig
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mining import kernel as kernel_mod
from mining.kernel import (
    COUNTER_LIMIT,
    HASHLIB,
    PORTABLE,
    SHA_NI,
    HashlibKernel,
    available_kernels,
    counter_text,
    make_kernel,
    measure_rate,
    native_module,
    select_kernel,
    warn_if_not_native,
)
from mining.worker import MAX_TAG_CHARS, Search

NATIVE = native_module()
needs_native = pytest.mark.skipif(NATIVE is None, reason="pow_kernel not built (no C compiler)")


def _native_params():
    return [
        pytest.param(PORTABLE, marks=needs_native),
        pytest.param(SHA_NI, marks=pytest.mark.skipif(
            NATIVE is None or not NATIVE.sha_ni_available(), reason="no SHA-NI here")),
    ]


@pytest.fixture(params=_native_params())
def native(request):
    return make_kernel(request.param)


def reference(data: bytes, difficulty: int, start: int, count: int) -> tuple[int, bytes | None]:
    """The first solution by brute force, one hashlib.sha256 per nonce: no midstate, no shortcuts."""
    for i in range(count):
        digest = hashlib.sha256(data + counter_text(start + i)).digest()
        if digest.hex().endswith("0" * difficulty):
            return i + 1, digest
    return count, None


def test_native_module_is_built_where_there_is_a_compiler():
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        pytest.skip(f"no C compiler ({compiler}) on this machine")
    assert NATIVE is not None, "pip install -r requirements.txt should have built pow_kernel"
    assert available_kernels()[-2:] == [PORTABLE, HASHLIB]


@needs_native
@pytest.mark.parametrize("impl", ["PORTABLE", "SHA_NI"])
def test_compression_functions_hash_like_hashlib_at_every_length(impl):
    if impl == "SHA_NI" and not NATIVE.sha_ni_available():
        pytest.skip("no SHA-NI here")
    code = getattr(NATIVE, impl)
    for length in range(0, 300):
        data = hashlib.sha512(b"%d" % length).digest() * 5
        data = data[:length]
        assert NATIVE.sha256(data, code) == hashlib.sha256(data).digest(), length


# Uniform lengths (st.binary's sizes are heavily skewed to short strings), arbitrary bytes.
prefixes = st.tuples(st.integers(0, 300), st.randoms(use_true_random=False)).map(lambda t: t[1].randbytes(t[0]))
ascii_text = st.text(alphabet=string.ascii_letters + string.digits + "-_.", max_size=MAX_TAG_CHARS)
starts = st.one_of(
    st.integers(0, COUNTER_LIMIT - 1),
    st.integers(0, 2**32).map(lambda outer: outer * 4096 + 4096 - 300),  # runs across an outer boundary
    st.integers(COUNTER_LIMIT - 400, COUNTER_LIMIT - 1),  # the very end of the nonce space
)
difficulties = st.one_of(st.integers(0, 3), st.integers(4, 64))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=prefixes, tag=ascii_text, pad=st.integers(0, 11), difficulty=difficulties,
       start=starts, count=st.integers(0, 600))
def test_native_and_hashlib_find_the_same_first_solution(native, prefix, tag, pad, difficulty, start, count):
    data = prefix + (tag + "0" * pad).encode("ascii")
    start = min(start, COUNTER_LIMIT - count)
    expected = HashlibKernel().searcher(data, difficulty)(start, count)
    assert native.searcher(data, difficulty)(start, count) == expected
    tried, digest = expected
    if digest is not None:
        assert digest == hashlib.sha256(data + counter_text(start + tried - 1)).digest()
        assert digest.hex().endswith("0" * difficulty)


@pytest.mark.parametrize("offset", range(64))
def test_prefixes_ending_at_every_offset_of_a_block(native, offset):
    """data ends at `offset` of its block: the counter may straddle two blocks, padding may spill."""
    for blocks in (0, 1, 3):
        data = bytes((7 * i + offset) % 256 for i in range(64 * blocks + offset))
        # Every single hash (difficulty 0: the first nonce is the solution), across group boundaries.
        one = native.searcher(data, 0)
        for counter in (0, 1, 15, 16, 255, 4095, 4096, 65535, 2**40 + 17, COUNTER_LIMIT - 1):
            assert one(counter, 1) == (1, hashlib.sha256(data + counter_text(counter)).digest())
        for difficulty, start, count in ((1, 4000, 300), (2, 70_000, 2000), (3, 4096 * 9 - 5, 9000)):
            assert native.searcher(data, difficulty)(start, count) == reference(data, difficulty, start, count)


def test_hashlib_kernel_agrees_with_brute_force():
    for length in (0, 41, 52, 53, 63, 64, 100):
        data = b"p" * length
        for difficulty, start, count in ((1, 0, 100), (2, 4000, 500), (3, 0, 9000), (3, 123, 50)):
            got = HashlibKernel().searcher(data, difficulty)(start, count)
            assert got == reference(data, difficulty, start, count)


@needs_native
def test_bad_arguments_are_refused_not_run():
    for bad in ((b"x", -1, 1, 1, NATIVE.PORTABLE), (b"x", COUNTER_LIMIT - 1, 2, 1, NATIVE.PORTABLE),
                (b"x", 0, 1, 65, NATIVE.PORTABLE), (b"x", 0, 1, -1, NATIVE.PORTABLE), (b"x", 0, 1, 1, 7)):
        with pytest.raises(ValueError):
            NATIVE.search(*bad)
    assert NATIVE.search(b"x", COUNTER_LIMIT, 0, 1, NATIVE.PORTABLE) == (0, None)
    if not NATIVE.sha_ni_available():
        with pytest.raises(ValueError):
            NATIVE.search(b"x", 0, 1, 1, NATIVE.SHA_NI)


def test_native_search_releases_the_gil(native):
    """Another thread runs Python code while a search is hashing."""
    search = native.searcher(b"gil" * 30, 64)  # never found: runs the whole range
    window: list[float] = []

    def run():
        started = time.perf_counter()
        search(0, 4_000_000 if native.name == SHA_NI else 1_000_000)
        window.extend((started, time.perf_counter()))

    thread = threading.Thread(target=run)
    stamps = []
    thread.start()
    while thread.is_alive():
        stamps.append(time.perf_counter())
        time.sleep(0.001)
    thread.join()
    started, ended = window
    margin = (ended - started) / 5
    inside = [t for t in stamps if started + margin < t < ended - margin]
    assert ended - started > 0.02
    assert len(inside) >= 2, f"the main thread ran {len(inside)} times during a {ended - started:.2f}s search"


def test_every_kernel_makes_the_worker_find_the_same_block():
    from chain.block import compute_hash, hash_prefix

    prev, words, ts = "ab" * 32, ["hello", "kernel"], 1_700_000_000
    prefix = hash_prefix(prev, "node", words, ts)
    results = {}
    for name in available_kernels():
        search = Search(1, prefix, 3, "5-c0ffee", make_kernel(name))
        found = None
        while found is None:
            found = search.batch()
        results[name] = (found, search.counter)
        nonce, block_hash = found
        assert compute_hash(prev, "node", words, ts, nonce) == block_hash
        assert block_hash.endswith("000") and nonce.startswith("5-c0ffee")
    assert len({v for v in results.values()}) == 1, results


def test_forced_kernel_and_fallbacks(monkeypatch, caplog):
    monkeypatch.setenv("POW_KERNEL", "hashlib")
    assert select_kernel().name == HASHLIB
    monkeypatch.delenv("POW_KERNEL")
    assert select_kernel().name == available_kernels()[0]
    caplog.set_level(logging.WARNING, logger="mining.kernel")
    assert select_kernel("no-such-kernel").name == available_kernels()[0]
    assert "unknown kernel" in caplog.text

    # The extension absent: only hashlib, with one warning however often asked.
    monkeypatch.setattr(kernel_mod, "native_module", lambda: None)
    monkeypatch.setattr(kernel_mod, "_warned", False)
    assert available_kernels() == [HASHLIB]
    assert select_kernel().name == HASHLIB
    assert select_kernel(SHA_NI).name == HASHLIB  # forced but impossible: the best there is
    caplog.clear()
    logger = logging.getLogger("test.fallback")
    with caplog.at_level(logging.WARNING, logger="test.fallback"):
        assert warn_if_not_native(logger) and warn_if_not_native(logger)
    assert [r.getMessage() for r in caplog.records if r.name == "test.fallback"] == [
        "native hash kernel not built (pow_kernel missing: no C compiler at install?); "
        "mining with the hashlib loop, several times slower"
    ]


def test_measured_rate_is_a_positive_figure_from_real_hashing():
    calls: list[int] = []
    inner = make_kernel(HASHLIB)

    class Counting:
        name = "counting"

        def searcher(self, data, difficulty):
            search = inner.searcher(data, difficulty)

            def run(start, count):
                calls.append(count)
                return search(start, count)
            return run

    rate = measure_rate(Counting(), seconds=0.05)
    assert rate > 1000 and sum(calls) > 0
    assert rate <= sum(calls) / 0.05  # what was hashed, over at least the time asked for
