/* CRC-32 (the zlib / IEEE 802.3 polynomial, reflected 0xEDB88320) kernels for qsrv.
 *
 * Every function uses zlib's convention: `crc` is the CRC of the bytes seen so far (0 for none)
 * and the return value is the CRC of those bytes followed by `buf`. So
 * qs_crc32(0, buf, len) == zlib.crc32(buf) and the Python fallback can produce the same value.
 *
 * No function here touches Python objects or the GIL: they are safe to call from any thread once
 * qs_crc32_init() has returned.
 */
#ifndef QSRV_CRC32_H
#define QSRV_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* Builds the tables and detects the CPU. Call once, before any other function, with the GIL
 * held (module init); afterwards everything here is read-only and thread-safe. */
void qs_crc32_init(void);

/* 1 when the carry-less-multiply (PCLMULQDQ) kernels can run on this CPU, else 0. */
int qs_crc32_have_simd(void);

/* The CRC of `len` bytes at `buf`, continuing `crc`. `simd` = 0 forces the bytewise table code
 * (slow: for tests and for CPUs without PCLMULQDQ). */
uint32_t qs_crc32(uint32_t crc, const uint8_t *buf, size_t len, int simd);

/* Copies `len` bytes from `src` to `dst` (which must not overlap) and returns their CRC,
 * continuing `crc`, reading each source byte once. */
uint32_t qs_crc32_copy(uint32_t crc, uint8_t *dst, const uint8_t *src, size_t len, int simd);

/* The CRC of A followed by B, given crc1 = CRC(A), crc2 = CRC(B) and len2 = len(B). */
uint32_t qs_crc32_combine(uint32_t crc1, uint32_t crc2, uint64_t len2);

#endif
