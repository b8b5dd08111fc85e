/*
 * pow_kernel: the nonce search of mining/worker.py, in C.
 *
 * A work unit is a fixed byte string `data` (block prefix + nonce head) followed
 * by an 11-digit lowercase hex counter; the nonce is head + counter. search()
 * hashes the counters start .. start+count-1 in order and stops at the first one
 * whose SHA-256 hex digest ends with `difficulty` '0's, exactly as the hashlib
 * loop does, so both find the same nonce.
 *
 * What is constant is computed once per call: every whole 64-byte block of
 * `data` is compressed into a midstate; the counter digits that sit in an
 * earlier block than the last one (they change only every 16**k nonces) are
 * compressed once per group; per nonce only the last block is compressed (and
 * with SHA-NI, the rounds of its message words that precede the last digit are
 * done once per 16 nonces). The worker's nonce head is padded so that this is one
 * compression per nonce.
 *
 * Two implementations of the compression function, chosen at run time:
 * PORTABLE (plain C, any CPU) and SHA_NI (the x86 SHA extensions, two nonces
 * interleaved so the round instructions of one hide the latency of the other's).
 * SHA_NI is refused (ValueError) on a CPU without it, never executed there.
 *
 * The GIL is released while hashing; callers keep batches short (milliseconds)
 * so that new work is picked up quickly.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define POW_HAVE_X86 1
#include <cpuid.h>
#include <immintrin.h>
#define TARGET_SHA __attribute__((target("sha,sse4.1,ssse3")))
#else
#define POW_HAVE_X86 0
#endif

#if defined(__GNUC__)
#define POW_ALIGN16 __attribute__((aligned(16)))
#else
#define POW_ALIGN16
#endif

#define COUNTER_DIGITS 11
#define COUNTER_LIMIT (1ULL << (4 * COUNTER_DIGITS)) /* 16**11 */

enum { IMPL_PORTABLE = 0, IMPL_SHA_NI = 1 };

static const uint32_t IV[8] = {
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
};

/* Round constants: first 32 bits of the fractional parts of the cube roots of the first 64 primes. */
static const uint32_t K[64] POW_ALIGN16 = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

static const char HEX_DIGITS[16] = "0123456789abcdef";

/* ------------------------------------------------------------------ portable compression */

static inline uint32_t rotr32(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static inline uint32_t load_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static inline void store_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/*
 * One round, written for rotating variable names: instead of shifting eight
 * variables every round, the caller renames them, so the compiler keeps the
 * state in registers with no moves.
 */
#define PORTABLE_ROUND(a, b, c, d, e, f, g, h, i)                                                    \
    do {                                                                                             \
        uint32_t t1_ = (h) + (rotr32((e), 6) ^ rotr32((e), 11) ^ rotr32((e), 25)) +                  \
                       (((e) & (f)) ^ (~(e) & (g))) + K[(i)] + w[(i)];                               \
        uint32_t t2_ = (rotr32((a), 2) ^ rotr32((a), 13) ^ rotr32((a), 22)) +                        \
                       (((a) & (b)) ^ ((a) & (c)) ^ ((b) & (c)));                                    \
        (d) += t1_;                                                                                  \
        (h) = t1_ + t2_;                                                                             \
    } while (0)

/* One SHA-256 compression: state <- state + rounds(state, block). */
static inline void compress_portable(uint32_t state[8], const uint8_t block[64])
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = load_be32(block + 4 * i);
    for (int i = 16; i < 64; i++) {
        uint32_t x = w[i - 15], y = w[i - 2];
        uint32_t sigma0 = rotr32(x, 7) ^ rotr32(x, 18) ^ (x >> 3);
        uint32_t sigma1 = rotr32(y, 17) ^ rotr32(y, 19) ^ (y >> 10);
        w[i] = w[i - 16] + sigma0 + w[i - 7] + sigma1;
    }
    uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
    uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
    for (int i = 0; i < 64; i += 8) {
        PORTABLE_ROUND(a, b, c, d, e, f, g, h, i);
        PORTABLE_ROUND(h, a, b, c, d, e, f, g, i + 1);
        PORTABLE_ROUND(g, h, a, b, c, d, e, f, i + 2);
        PORTABLE_ROUND(f, g, h, a, b, c, d, e, i + 3);
        PORTABLE_ROUND(e, f, g, h, a, b, c, d, i + 4);
        PORTABLE_ROUND(d, e, f, g, h, a, b, c, i + 5);
        PORTABLE_ROUND(c, d, e, f, g, h, a, b, i + 6);
        PORTABLE_ROUND(b, c, d, e, f, g, h, a, i + 7);
    }
    state[0] += a;
    state[1] += b;
    state[2] += c;
    state[3] += d;
    state[4] += e;
    state[5] += f;
    state[6] += g;
    state[7] += h;
}

/* ------------------------------------------------------------------ SHA-NI compression */

#if POW_HAVE_X86

/*
 * The SHA-NI round instruction keeps the state as two vectors: ABEF (A in the top
 * dword, F in the bottom) and CDGH. Each sha256rnds2 does two rounds with the two
 * low dwords of its message+constant operand and returns the new ABEF; the old
 * ABEF becomes the new CDGH, hence the alternating destinations below.
 */
TARGET_SHA static inline void shani_from_words(const uint32_t s[8], __m128i *abef, __m128i *cdgh)
{
    *abef = _mm_set_epi32((int)s[0], (int)s[1], (int)s[4], (int)s[5]);
    *cdgh = _mm_set_epi32((int)s[2], (int)s[3], (int)s[6], (int)s[7]);
}

TARGET_SHA static inline void shani_to_words(__m128i abef, __m128i cdgh, uint32_t s[8])
{
    s[0] = (uint32_t)_mm_extract_epi32(abef, 3);
    s[1] = (uint32_t)_mm_extract_epi32(abef, 2);
    s[4] = (uint32_t)_mm_extract_epi32(abef, 1);
    s[5] = (uint32_t)_mm_extract_epi32(abef, 0);
    s[2] = (uint32_t)_mm_extract_epi32(cdgh, 3);
    s[3] = (uint32_t)_mm_extract_epi32(cdgh, 2);
    s[6] = (uint32_t)_mm_extract_epi32(cdgh, 1);
    s[7] = (uint32_t)_mm_extract_epi32(cdgh, 0);
}

/* 16 message bytes as 4 big-endian words, word 0 in the low dword. */
TARGET_SHA static inline __m128i shani_load_words(const uint8_t *p)
{
    const __m128i byteswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
    return _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)p), byteswap);
}

/* Four rounds with message words `m` (rounds k .. k+3). */
#define SHANI_ROUNDS4(abef, cdgh, m, k)                                                   \
    do {                                                                                  \
        __m128i wk_ = _mm_add_epi32((m), _mm_load_si128((const __m128i *)&K[(k)]));        \
        (cdgh) = _mm_sha256rnds2_epu32((cdgh), (abef), wk_);                              \
        (abef) = _mm_sha256rnds2_epu32((abef), (cdgh), _mm_shuffle_epi32(wk_, 0x0E));     \
    } while (0)

/* The next 4 schedule words from the previous 16 (m0 oldest .. m3 newest); result in m0. */
#define SHANI_SCHEDULE(m0, m1, m2, m3) \
    ((m0) = _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32((m0), (m1)), _mm_alignr_epi8((m3), (m2), 4)), (m3)))

TARGET_SHA static inline void compress_shani(__m128i *abef_io, __m128i *cdgh_io, const uint8_t block[64])
{
    __m128i abef = *abef_io, cdgh = *cdgh_io;
    __m128i m0 = shani_load_words(block), m1 = shani_load_words(block + 16);
    __m128i m2 = shani_load_words(block + 32), m3 = shani_load_words(block + 48);
    SHANI_ROUNDS4(abef, cdgh, m0, 0);
    SHANI_ROUNDS4(abef, cdgh, m1, 4);
    SHANI_ROUNDS4(abef, cdgh, m2, 8);
    SHANI_ROUNDS4(abef, cdgh, m3, 12);
    for (int k = 16; k < 64; k += 16) {
        SHANI_SCHEDULE(m0, m1, m2, m3);
        SHANI_ROUNDS4(abef, cdgh, m0, k);
        SHANI_SCHEDULE(m1, m2, m3, m0);
        SHANI_ROUNDS4(abef, cdgh, m1, k + 4);
        SHANI_SCHEDULE(m2, m3, m0, m1);
        SHANI_ROUNDS4(abef, cdgh, m2, k + 8);
        SHANI_SCHEDULE(m3, m0, m1, m2);
        SHANI_ROUNDS4(abef, cdgh, m3, k + 12);
    }
    *abef_io = _mm_add_epi32(abef, *abef_io);
    *cdgh_io = _mm_add_epi32(cdgh, *cdgh_io);
}

/*
 * The search's compressions. The first `skip` message vectors (4 words each) hold
 * no digit that changes within the 16 nonces that differ only in their last
 * digit, so their rounds are done once for those 16 (shani_first_rounds) and
 * each nonce starts from that state (pre_*); the feed-forward adds the state the
 * block started from (base_*).
 */
TARGET_SHA static inline void shani_first_rounds(__m128i base_abef, __m128i base_cdgh, const uint8_t *block, int skip,
                                                 __m128i *pre_abef, __m128i *pre_cdgh)
{
    __m128i abef = base_abef, cdgh = base_cdgh;
    for (int v = 0; v < skip; v++) {
        __m128i m = shani_load_words(block + 16 * v);
        SHANI_ROUNDS4(abef, cdgh, m, 4 * v);
    }
    *pre_abef = abef;
    *pre_cdgh = cdgh;
}

TARGET_SHA static inline void compress_shani_from(__m128i pre_abef, __m128i pre_cdgh, __m128i base_abef,
                                                  __m128i base_cdgh, int skip, const uint8_t *block, __m128i out[2])
{
    __m128i abef = pre_abef, cdgh = pre_cdgh;
    __m128i m0 = shani_load_words(block), m1 = shani_load_words(block + 16);
    __m128i m2 = shani_load_words(block + 32), m3 = shani_load_words(block + 48);
    if (skip <= 0)
        SHANI_ROUNDS4(abef, cdgh, m0, 0);
    if (skip <= 1)
        SHANI_ROUNDS4(abef, cdgh, m1, 4);
    if (skip <= 2)
        SHANI_ROUNDS4(abef, cdgh, m2, 8);
    SHANI_ROUNDS4(abef, cdgh, m3, 12);
    for (int k = 16; k < 64; k += 16) {
        SHANI_SCHEDULE(m0, m1, m2, m3);
        SHANI_ROUNDS4(abef, cdgh, m0, k);
        SHANI_SCHEDULE(m1, m2, m3, m0);
        SHANI_ROUNDS4(abef, cdgh, m1, k + 4);
        SHANI_SCHEDULE(m2, m3, m0, m1);
        SHANI_ROUNDS4(abef, cdgh, m2, k + 8);
        SHANI_SCHEDULE(m3, m0, m1, m2);
        SHANI_ROUNDS4(abef, cdgh, m3, k + 12);
    }
    out[0] = _mm_add_epi32(abef, base_abef);
    out[1] = _mm_add_epi32(cdgh, base_cdgh);
}

/* Two of the above (two nonces of the same 16), interleaved. */
TARGET_SHA static inline void compress_shani_x2_from(__m128i pre_abef, __m128i pre_cdgh, __m128i base_abef,
                                                     __m128i base_cdgh, int skip, const uint8_t *block_a,
                                                     const uint8_t *block_b, __m128i out_a[2], __m128i out_b[2])
{
    __m128i abef_a = pre_abef, cdgh_a = pre_cdgh, abef_b = pre_abef, cdgh_b = pre_cdgh;
    __m128i a0 = shani_load_words(block_a), a1 = shani_load_words(block_a + 16);
    __m128i a2 = shani_load_words(block_a + 32), a3 = shani_load_words(block_a + 48);
    __m128i b0 = shani_load_words(block_b), b1 = shani_load_words(block_b + 16);
    __m128i b2 = shani_load_words(block_b + 32), b3 = shani_load_words(block_b + 48);
    if (skip <= 0) {
        SHANI_ROUNDS4(abef_a, cdgh_a, a0, 0);
        SHANI_ROUNDS4(abef_b, cdgh_b, b0, 0);
    }
    if (skip <= 1) {
        SHANI_ROUNDS4(abef_a, cdgh_a, a1, 4);
        SHANI_ROUNDS4(abef_b, cdgh_b, b1, 4);
    }
    if (skip <= 2) {
        SHANI_ROUNDS4(abef_a, cdgh_a, a2, 8);
        SHANI_ROUNDS4(abef_b, cdgh_b, b2, 8);
    }
    SHANI_ROUNDS4(abef_a, cdgh_a, a3, 12);
    SHANI_ROUNDS4(abef_b, cdgh_b, b3, 12);
    for (int k = 16; k < 64; k += 16) {
        SHANI_SCHEDULE(a0, a1, a2, a3);
        SHANI_SCHEDULE(b0, b1, b2, b3);
        SHANI_ROUNDS4(abef_a, cdgh_a, a0, k);
        SHANI_ROUNDS4(abef_b, cdgh_b, b0, k);
        SHANI_SCHEDULE(a1, a2, a3, a0);
        SHANI_SCHEDULE(b1, b2, b3, b0);
        SHANI_ROUNDS4(abef_a, cdgh_a, a1, k + 4);
        SHANI_ROUNDS4(abef_b, cdgh_b, b1, k + 4);
        SHANI_SCHEDULE(a2, a3, a0, a1);
        SHANI_SCHEDULE(b2, b3, b0, b1);
        SHANI_ROUNDS4(abef_a, cdgh_a, a2, k + 8);
        SHANI_ROUNDS4(abef_b, cdgh_b, b2, k + 8);
        SHANI_SCHEDULE(a3, a0, a1, a2);
        SHANI_SCHEDULE(b3, b0, b1, b2);
        SHANI_ROUNDS4(abef_a, cdgh_a, a3, k + 12);
        SHANI_ROUNDS4(abef_b, cdgh_b, b3, k + 12);
    }
    out_a[0] = _mm_add_epi32(abef_a, base_abef);
    out_a[1] = _mm_add_epi32(cdgh_a, base_cdgh);
    out_b[0] = _mm_add_epi32(abef_b, base_abef);
    out_b[1] = _mm_add_epi32(cdgh_b, base_cdgh);
}

static int cpu_has_sha_ni(void)
{
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx))
        return 0;
    int ssse3 = (ecx >> 9) & 1, sse41 = (ecx >> 19) & 1;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx))
        return 0;
    int sha = (ebx >> 29) & 1;
    return ssse3 && sse41 && sha;
}

#else

static int cpu_has_sha_ni(void) { return 0; }

#endif /* POW_HAVE_X86 */

/* ------------------------------------------------------------------ the search */

/* One work unit laid out for hashing: see the comment at the top. */
typedef struct {
    uint32_t midstate[8];  /* after every whole block of data */
    uint8_t tail[128];     /* data's last partial block, the counter digits, padding: 1 or 2 blocks */
    int tail_blocks;
    int digits_at;         /* offset of the counter's first (most significant) digit in tail */
    int digits_in_last;    /* how many of the counter's low digits lie in the last block (0..11) */
    uint32_t mask[8];      /* the hash meets the difficulty iff (state[i] & mask[i]) == 0 for all i */
} Job;

static void job_init(Job *job, const uint8_t *data, Py_ssize_t len, int difficulty)
{
    memcpy(job->midstate, IV, sizeof IV);
    Py_ssize_t whole = len - len % 64;
    for (Py_ssize_t i = 0; i < whole; i += 64)
        compress_portable(job->midstate, data + i);
    int rem = (int)(len - whole);
    memset(job->tail, 0, sizeof job->tail);
    memcpy(job->tail, data + whole, (size_t)rem);
    job->digits_at = rem;
    memset(job->tail + rem, '0', COUNTER_DIGITS);
    job->tail[rem + COUNTER_DIGITS] = 0x80;
    job->tail_blocks = (rem + COUNTER_DIGITS + 1 + 8 + 63) / 64;
    uint64_t bits = ((uint64_t)len + COUNTER_DIGITS) * 8;
    uint8_t *length_field = job->tail + 64 * job->tail_blocks - 8;
    store_be32(length_field, (uint32_t)(bits >> 32));
    store_be32(length_field + 4, (uint32_t)bits);
    if (job->tail_blocks == 1) {
        job->digits_in_last = COUNTER_DIGITS;
    } else {
        int in_first = 64 - rem;
        job->digits_in_last = in_first >= COUNTER_DIGITS ? 0 : COUNTER_DIGITS - in_first;
    }
    /* Hex digit j from the end is nibble j of the 256-bit big-endian digest. */
    int bits_left = 4 * difficulty;
    for (int i = 7; i >= 0; i--) {
        if (bits_left >= 32) {
            job->mask[i] = 0xffffffffu;
            bits_left -= 32;
        } else {
            job->mask[i] = bits_left ? (1u << bits_left) - 1 : 0;
            bits_left = 0;
        }
    }
}

static inline int meets(const Job *job, const uint32_t s[8])
{
    uint32_t any = 0;
    for (int i = 0; i < 8; i++)
        any |= s[i] & job->mask[i];
    return any == 0;
}

static inline void write_counter(uint8_t *digits, uint64_t counter)
{
    for (int i = COUNTER_DIGITS - 1; i >= 0; i--) {
        digits[i] = (uint8_t)HEX_DIGITS[counter & 15];
        counter >>= 4;
    }
}

/* Add one to the ASCII hex number ending at `last`. Callers never carry past its first digit. */
static inline void hex_increment(uint8_t *last)
{
    for (;;) {
        uint8_t c = *last;
        if (c == '9') {
            *last = 'a';
            return;
        }
        if (c != 'f') {
            *last = (uint8_t)(c + 1);
            return;
        }
        *last-- = '0';
    }
}

typedef struct {
    uint64_t tried;  /* counters hashed, including the one found */
    int found;
    uint32_t state[8];  /* the found hash */
} Result;

/* Counters sharing everything outside the last block form a group of 16**digits_in_last. */
static inline uint64_t group_end(const Job *job, uint64_t counter, uint64_t end)
{
    uint64_t span = 1ULL << (4 * job->digits_in_last);
    uint64_t stop = (counter | (span - 1)) + 1;
    return stop < end ? stop : end;
}

static void search_portable(Job *job, uint64_t start, uint64_t count, Result *res)
{
    uint8_t *digits = job->tail + job->digits_at;
    uint8_t *last_block = job->tail + 64 * (job->tail_blocks - 1);
    uint64_t counter = start, end = start + count;
    res->found = 0;
    while (counter < end) {
        uint64_t stop = group_end(job, counter, end);
        write_counter(digits, counter);
        uint32_t base[8];
        memcpy(base, job->midstate, sizeof base);
        if (job->tail_blocks == 2)
            compress_portable(base, job->tail);
        for (;;) {
            uint32_t s[8];
            memcpy(s, base, sizeof s);
            compress_portable(s, last_block);
            if ((s[7] & job->mask[7]) == 0 && meets(job, s)) {
                res->found = 1;
                res->tried = counter - start + 1;
                memcpy(res->state, s, sizeof s);
                return;
            }
            if (++counter >= stop)
                break;
            hex_increment(digits + COUNTER_DIGITS - 1);
        }
    }
    res->tried = count;
}

#if POW_HAVE_X86

TARGET_SHA static int shani_check(const Job *job, __m128i abef, __m128i cdgh, uint64_t counter, uint64_t start,
                                  Result *res)
{
    if (((uint32_t)_mm_cvtsi128_si32(cdgh) & job->mask[7]) != 0)
        return 0;
    uint32_t s[8];
    shani_to_words(abef, cdgh, s);
    if (!meets(job, s))
        return 0;
    res->found = 1;
    res->tried = counter - start + 1;
    memcpy(res->state, s, sizeof s);
    return 1;
}

TARGET_SHA static void search_shani(Job *job, uint64_t start, uint64_t count, Result *res)
{
    uint8_t *digits = job->tail + job->digits_at;
    uint8_t *last_block = job->tail + 64 * (job->tail_blocks - 1);
    uint8_t *last_digit = digits + COUNTER_DIGITS - 1;
    /* Where the counter's last digit is inside the last block, and how many whole
       message vectors precede it there (none when the last block holds no digit). */
    int last_digit_in_block = (int)(last_digit - last_block);
    int skip = job->digits_in_last > 0 ? last_digit_in_block / 16 : 0;
    uint8_t second[64];
    uint64_t counter = start, end = start + count;
    res->found = 0;
    while (counter < end) {
        uint64_t stop = group_end(job, counter, end);
        write_counter(digits, counter);
        __m128i base_abef, base_cdgh, pre_abef, pre_cdgh, out_a[2], out_b[2];
        shani_from_words(job->midstate, &base_abef, &base_cdgh);
        if (job->tail_blocks == 2)
            compress_shani(&base_abef, &base_cdgh, job->tail);
        int fresh = 1;
        while (counter < stop) {
            /* Only the last digit differs within 16 aligned counters: the first rounds are shared. */
            if (fresh || (counter & 15) == 0) {
                shani_first_rounds(base_abef, base_cdgh, last_block, skip, &pre_abef, &pre_cdgh);
                fresh = 0;
            }
            if ((counter & 1) == 0 && stop - counter >= 2) {
                /* A pair: last_block holds `counter` (last digit even), `second` counter + 1. */
                memcpy(second, last_block, 64);
                hex_increment(second + last_digit_in_block);
                compress_shani_x2_from(pre_abef, pre_cdgh, base_abef, base_cdgh, skip, last_block, second, out_a,
                                       out_b);
                if (shani_check(job, out_a[0], out_a[1], counter, start, res))
                    return;
                if (shani_check(job, out_b[0], out_b[1], counter + 1, start, res))
                    return;
                counter += 2;
                if (counter < stop) {
                    hex_increment(last_digit);
                    hex_increment(last_digit);
                }
            } else {
                compress_shani_from(pre_abef, pre_cdgh, base_abef, base_cdgh, skip, last_block, out_a);
                if (shani_check(job, out_a[0], out_a[1], counter, start, res))
                    return;
                counter++;
                if (counter < stop)
                    hex_increment(last_digit);
            }
        }
    }
    res->tried = count;
}

TARGET_SHA static void digest_shani(uint32_t state[8], const uint8_t *blocks, Py_ssize_t nblocks)
{
    __m128i abef, cdgh;
    shani_from_words(state, &abef, &cdgh);
    for (Py_ssize_t i = 0; i < nblocks; i++)
        compress_shani(&abef, &cdgh, blocks + 64 * i);
    shani_to_words(abef, cdgh, state);
}

#endif /* POW_HAVE_X86 */

/* ------------------------------------------------------------------ Python interface */

static int sha_ni_ok = 0;

static int check_impl(int impl)
{
    if (impl == IMPL_PORTABLE)
        return 0;
    if (impl == IMPL_SHA_NI) {
        if (sha_ni_ok)
            return 0;
        PyErr_SetString(PyExc_ValueError, "this CPU has no SHA-NI");
        return -1;
    }
    PyErr_Format(PyExc_ValueError, "unknown implementation %d", impl);
    return -1;
}

static PyObject *state_to_bytes(const uint32_t s[8])
{
    uint8_t out[32];
    for (int i = 0; i < 8; i++)
        store_be32(out + 4 * i, s[i]);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

PyDoc_STRVAR(search_doc,
"search(data, start, count, difficulty, impl) -> (tried, digest or None)\n\n"
"Hash data + the 11-digit lowercase hex form of each counter from start to\n"
"start + count - 1, in order, and stop at the first whose hex digest ends with\n"
"`difficulty` '0's. Returns how many counters were hashed (the found one\n"
"included) and the found 32-byte digest, or (count, None).");

static PyObject *py_search(PyObject *self, PyObject *args)
{
    Py_buffer data;
    long long start, count;
    int difficulty, impl;
    if (!PyArg_ParseTuple(args, "y*LLii:search", &data, &start, &count, &difficulty, &impl))
        return NULL;
    PyObject *ret = NULL;
    if (check_impl(impl) < 0)
        goto done;
    if (difficulty < 0 || difficulty > 64) {
        PyErr_SetString(PyExc_ValueError, "difficulty must be 0..64");
        goto done;
    }
    if (start < 0 || count < 0 || (unsigned long long)start > COUNTER_LIMIT ||
        (unsigned long long)count > COUNTER_LIMIT - (unsigned long long)start) {
        PyErr_SetString(PyExc_ValueError, "counters must lie in 0 .. 16**11");
        goto done;
    }
    Job job;
    Result res = {0};
    Py_BEGIN_ALLOW_THREADS
    job_init(&job, (const uint8_t *)data.buf, data.len, difficulty);
#if POW_HAVE_X86
    if (impl == IMPL_SHA_NI)
        search_shani(&job, (uint64_t)start, (uint64_t)count, &res);
    else
#endif
        search_portable(&job, (uint64_t)start, (uint64_t)count, &res);
    Py_END_ALLOW_THREADS
    if (res.found) {
        PyObject *digest = state_to_bytes(res.state);
        if (digest != NULL)
            ret = Py_BuildValue("(KN)", (unsigned long long)res.tried, digest);
    } else {
        ret = Py_BuildValue("(KO)", (unsigned long long)res.tried, Py_None);
    }
done:
    PyBuffer_Release(&data);
    return ret;
}

PyDoc_STRVAR(sha256_doc,
"sha256(data, impl) -> bytes\n\n"
"The SHA-256 digest of data with the given compression implementation (for tests).");

static PyObject *py_sha256(PyObject *self, PyObject *args)
{
    Py_buffer data;
    int impl;
    if (!PyArg_ParseTuple(args, "y*i:sha256", &data, &impl))
        return NULL;
    PyObject *ret = NULL;
    if (check_impl(impl) < 0)
        goto done;
    Py_ssize_t len = data.len, whole = len - len % 64;
    uint8_t tail[128] = {0};
    memcpy(tail, (const uint8_t *)data.buf + whole, (size_t)(len - whole));
    tail[len - whole] = 0x80;
    Py_ssize_t tail_blocks = (len - whole + 1 + 8 + 63) / 64;
    uint64_t bits = (uint64_t)len * 8;
    store_be32(tail + 64 * tail_blocks - 8, (uint32_t)(bits >> 32));
    store_be32(tail + 64 * tail_blocks - 4, (uint32_t)bits);
    uint32_t state[8];
    memcpy(state, IV, sizeof IV);
    Py_BEGIN_ALLOW_THREADS
#if POW_HAVE_X86
    if (impl == IMPL_SHA_NI) {
        digest_shani(state, (const uint8_t *)data.buf, whole / 64);
        digest_shani(state, tail, tail_blocks);
    } else
#endif
    {
        for (Py_ssize_t i = 0; i < whole; i += 64)
            compress_portable(state, (const uint8_t *)data.buf + i);
        for (Py_ssize_t i = 0; i < tail_blocks; i++)
            compress_portable(state, tail + 64 * i);
    }
    Py_END_ALLOW_THREADS
    ret = state_to_bytes(state);
done:
    PyBuffer_Release(&data);
    return ret;
}

static PyObject *py_sha_ni_available(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(sha_ni_ok);
}

static PyMethodDef methods[] = {
    {"search", py_search, METH_VARARGS, search_doc},
    {"sha256", py_sha256, METH_VARARGS, sha256_doc},
    {"sha_ni_available", py_sha_ni_available, METH_NOARGS, "True if this CPU has the SHA extensions."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "pow_kernel",
    "The native nonce search of pow-node's miners (see mining/kernel.py).", -1, methods,
};

PyMODINIT_FUNC PyInit_pow_kernel(void)
{
    sha_ni_ok = cpu_has_sha_ni();
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "PORTABLE", IMPL_PORTABLE) < 0 ||
        PyModule_AddIntConstant(m, "SHA_NI", IMPL_SHA_NI) < 0 ||
        PyModule_AddIntConstant(m, "COUNTER_DIGITS", COUNTER_DIGITS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
