/* CRC-32 kernels: a PCLMULQDQ folding version
 * (Gopal et al., "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ", Intel 2009)
 * chosen at run time with __builtin_cpu_supports, and a bytewise table for the few bytes the
 * folding cannot take (and for other CPUs). The folding version can also store every
 * 16-byte block it loads, which makes copy + checksum a single pass over the source; for large
 * copies those stores are non-temporal (see NT_MIN).
 *
 * State convention inside this file: `reg` is the raw shift register, i.e. ~crc in zlib terms.
 */
#include "crc32.h"

#include <string.h>

#define POLY 0xedb88320u /* x^32 + x^26 + ... + 1, bit-reflected */

static uint32_t table[256]; /* table[b]: register after feeding byte b into a zero register */
static uint32_t x2n_table[32]; /* x2n_table[k] = x^(2^k) mod P, reflected */
static int have_simd;

/* ---------- portable: one byte at a time ----------
 * Only for the short head and tail around the folded body, and for CPUs without PCLMULQDQ,
 * where Python does not use this module at all: zlib.crc32 (zlib 1.2.13, ~4 GB/s here) beats
 * any table code worth keeping here (a slicing-by-8 version measured 1.9 GB/s). */

static uint32_t crc_bytes(uint32_t reg, const uint8_t *buf, size_t len)
{
    while (len--)
        reg = table[(reg ^ *buf++) & 0xff] ^ (reg >> 8);
    return reg;
}

/* ---------- x86: PCLMULQDQ folding ---------- */

/* -DQS_NO_SIMD builds the portable code only (what other CPUs get). */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__)) && !defined(QS_NO_SIMD)
#define QS_X86 1
#include <immintrin.h>

#define QS_TARGET __attribute__((target("pclmul,sse4.1")))

/* Folding constants for the reflected polynomial: x^(4*128+32), x^(4*128-32) mod P (fold by 4),
 * x^(128+32), x^(128-32) (fold by 1), x^64 (128 -> 64 bits), then P and mu for the Barrett
 * reduction. Each is a 33-bit value, hence the leading 0x1. */
static const uint64_t k1k2[2] __attribute__((aligned(16))) = {0x0154442bd4, 0x01c6e41596};
static const uint64_t k3k4[2] __attribute__((aligned(16))) = {0x01751997d0, 0x00ccaa009e};
static const uint64_t k5k0[2] __attribute__((aligned(16))) = {0x0163cd6124, 0x0000000000};
static const uint64_t poly[2] __attribute__((aligned(16))) = {0x01db710641, 0x01f7011641};

enum store { NO_STORE, STORE, STORE_NT };

/* Copies at least this long use non-temporal (streaming) stores: they skip reading each
 * destination line before overwriting it and do not evict the caches for data nobody reads
 * soon. Measured on the 256 MiB benchmark: 1.2-1.7x the bandwidth of ordinary stores. Shorter
 * copies keep ordinary stores, so a reader on this node finds them in cache. */
#define NT_MIN ((size_t)1 << 20)

/* acc * x^k (k given by the two halves of `k`) xor data: moves acc 128 (or 512) bits forward. */
QS_TARGET static inline __m128i fold(__m128i acc, __m128i k, __m128i data)
{
    __m128i lo = _mm_clmulepi64_si128(acc, k, 0x00);
    __m128i hi = _mm_clmulepi64_si128(acc, k, 0x11);
    return _mm_xor_si128(_mm_xor_si128(lo, hi), data);
}

/* Loads 16 bytes of src and, when copying, stores them to dst at the same offset. */
QS_TARGET static inline __m128i take(const uint8_t *src, uint8_t *dst, size_t off, enum store st)
{
    __m128i v = _mm_loadu_si128((const __m128i *)(src + off));
    if (st == STORE)
        _mm_storeu_si128((__m128i *)(dst + off), v);
    else if (st == STORE_NT) /* dst + off is 16-byte aligned: see crc_fold_copy */
        _mm_stream_si128((__m128i *)(dst + off), v);
    return v;
}

/* Requires len >= 64 and len % 16 == 0. Returns the register after `len` bytes. */
QS_TARGET __attribute__((always_inline)) static inline uint32_t
crc_fold(uint32_t reg, uint8_t *dst, const uint8_t *src, size_t len, enum store st)
{
    size_t off = 0;
    __m128i x1 = take(src, dst, 0, st), x2 = take(src, dst, 16, st);
    __m128i x3 = take(src, dst, 32, st), x4 = take(src, dst, 48, st);
    __m128i k = _mm_load_si128((const __m128i *)k1k2);

    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)reg));
    for (off = 64; len - off >= 64; off += 64) {
        x1 = fold(x1, k, take(src, dst, off, st));
        x2 = fold(x2, k, take(src, dst, off + 16, st));
        x3 = fold(x3, k, take(src, dst, off + 32, st));
        x4 = fold(x4, k, take(src, dst, off + 48, st));
    }

    /* Four 128-bit accumulators -> one. */
    k = _mm_load_si128((const __m128i *)k3k4);
    x1 = fold(x1, k, x2);
    x1 = fold(x1, k, x3);
    x1 = fold(x1, k, x4);
    for (; len - off >= 16; off += 16)
        x1 = fold(x1, k, take(src, dst, off, st));

    /* 128 -> 64 bits. */
    __m128i mask32 = _mm_setr_epi32(~0, 0, ~0, 0);
    x2 = _mm_clmulepi64_si128(x1, k, 0x10);
    x1 = _mm_xor_si128(_mm_srli_si128(x1, 8), x2);
    k = _mm_loadl_epi64((const __m128i *)k5k0);
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), k, 0x00);
    x1 = _mm_xor_si128(x1, x2);

    /* Barrett reduction 64 -> 32 bits. */
    k = _mm_load_si128((const __m128i *)poly);
    x2 = _mm_clmulepi64_si128(_mm_and_si128(x1, mask32), k, 0x10);
    x2 = _mm_clmulepi64_si128(_mm_and_si128(x2, mask32), k, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (uint32_t)_mm_extract_epi32(x1, 1);
}

QS_TARGET static uint32_t crc_fold_only(uint32_t reg, const uint8_t *src, size_t len)
{
    return crc_fold(reg, NULL, src, len, NO_STORE);
}

/* Requires len >= 64 and len % 16 == 0; dst must be 16-byte aligned when len >= NT_MIN. */
QS_TARGET static uint32_t crc_fold_copy(uint32_t reg, uint8_t *dst, const uint8_t *src, size_t len)
{
    if (len < NT_MIN)
        return crc_fold(reg, dst, src, len, STORE);
    reg = crc_fold(reg, dst, src, len, STORE_NT);
    _mm_sfence(); /* order the streaming stores before anything this thread does next */
    return reg;
}
#endif /* QS_X86 */

/* ---------- public ---------- */

static uint32_t multmodp(uint32_t a, uint32_t b) /* a * b mod P, reflected */
{
    uint32_t m = 1u << 31, p = 0;
    for (;;) {
        if (a & m) {
            p ^= b;
            if ((a & (m - 1)) == 0)
                break;
        }
        m >>= 1;
        b = b & 1 ? (b >> 1) ^ POLY : b >> 1;
    }
    return p;
}

void qs_crc32_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        table[n] = c;
    }

    x2n_table[0] = 1u << 30; /* x^1 */
    for (int k = 1; k < 32; k++)
        x2n_table[k] = multmodp(x2n_table[k - 1], x2n_table[k - 1]);

#ifdef QS_X86
    __builtin_cpu_init();
    have_simd = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#endif
}

int qs_crc32_have_simd(void) { return have_simd; }

uint32_t qs_crc32(uint32_t crc, const uint8_t *buf, size_t len, int simd)
{
    uint32_t reg = ~crc;
#ifdef QS_X86
    if (simd && have_simd && len >= 64) {
        size_t body = len & ~(size_t)15;
        reg = crc_fold_only(reg, buf, body);
        buf += body;
        len -= body;
    }
#else
    (void)simd;
#endif
    return ~crc_bytes(reg, buf, len);
}

uint32_t qs_crc32_copy(uint32_t crc, uint8_t *dst, const uint8_t *src, size_t len, int simd)
{
    uint32_t reg = ~crc;
#ifdef QS_X86
    if (simd && have_simd && len >= 64) {
        if (len >= NT_MIN) { /* align dst for the streaming stores: at most 15 bytes here */
            size_t head = (16 - ((uintptr_t)dst & 15)) & 15;
            memcpy(dst, src, head);
            reg = crc_bytes(reg, dst, head);
            dst += head;
            src += head;
            len -= head;
        }
        size_t body = len & ~(size_t)15;
        reg = crc_fold_copy(reg, dst, src, body);
        dst += body;
        src += body;
        len -= body;
        memcpy(dst, src, len);
        return ~crc_bytes(reg, dst, len);
    }
#else
    (void)simd;
#endif
    memcpy(dst, src, len);
    return ~crc_bytes(reg, dst, len);
}

uint32_t qs_crc32_combine(uint32_t crc1, uint32_t crc2, uint64_t len2)
{
    /* CRC(A||B) = CRC(A) * x^(8*len2) mod P  xor  CRC(B)  (zlib's crc32_combine). */
    uint32_t p = 1u << 31; /* x^0 */
    for (unsigned k = 3; len2; len2 >>= 1, k++)
        if (len2 & 1)
            p = multmodp(x2n_table[k & 31], p);
    return multmodp(p, crc1) ^ crc2;
}
