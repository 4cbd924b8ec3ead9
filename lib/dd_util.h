/* SPDX-License-Identifier: Apache-2.0 */
/* dd_util.h - small helpers shared by the library: clocks, ids, strings. */
#ifndef DD_UTIL_H
#define DD_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <apr_pools.h>

/* Unaligned loads of 8 and 4 bytes (as the native-endian integer), for word-at-a-time scans. */
static inline uint64_t dd_load64(const void *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

static inline uint64_t dd_load32(const void *p)
{
    uint32_t x;
    memcpy(&x, p, 4);
    return x;
}

/* Wall clock, ns since the Unix epoch: for timestamps only (span starts). It may step back or
 * forward at any time (NTP, an operator), so never for a duration or a rate. */
int64_t dd_now_ns(void);
/* Monotonic clock (CLOCK_MONOTONIC: never steps; the same in every process of the machine),
 * ns and ms: for durations, deadlines, intervals and the rate limiter. */
int64_t dd_mono_ns(void);
int64_t dd_mono_ms(void);

/* A random 64-bit id that is never 0. Thread-safe, lock-free (per-thread state seeded once
 * from the OS). With clear_msb the result is below 2^63 (span ids, as Datadog tracers do). */
uint64_t dd_random_id(int clear_msb);

/* Parses a whole string as an unsigned decimal number (no sign, no spaces, at most 20 digits,
 * no overflow). Returns 1 on success. */
int dd_parse_u64_dec(const char *s, size_t len, uint64_t *out);
/* Parses exactly len hex digits (1..16, either case). Returns 1 on success. */
int dd_parse_u64_hex(const char *s, size_t len, uint64_t *out);

/* v in decimal, allocated in p (what apr_psprintf("%" APR_UINT64_T_FMT) gives, without the
 * formatter). */
char *dd_u64_to_dec(apr_pool_t *p, uint64_t v);

/* Writes v as 16 lowercase hex digits plus NUL into out[17]. */
void dd_u64_to_hex16(uint64_t v, char out[17]);

/* s is a NUL-terminated string of len bytes. Returns a copy of s that is valid UTF-8 and at most
 * cap bytes long: invalid sequences become U+FFFD, and an over-long value is cut on a character
 * boundary. Sets *truncated to 1 when it cut (leaves it alone otherwise). Returns s itself when it
 * is already clean and short enough. */
const char *dd_str_clean(apr_pool_t *p, const char *s, size_t len, size_t cap, int *truncated);

/* Tag caps (CONTRACT §8). */
#define DD_CAP_VALUE 1024
#define DD_CAP_PATH 4096

#endif
