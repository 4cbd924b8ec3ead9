/* SPDX-License-Identifier: Apache-2.0 */
/* dd_util.c - clocks, random ids, number parsing and UTF-8 cleaning for the library.
 *
 * Everything here is called on the request path, so nothing takes a lock or allocates from
 * the heap: ids come from a per-thread generator seeded once from the OS.
 */
#include "dd_util.h"

#include <string.h>
#include <time.h>
#include <apr_general.h>
#include <apr_strings.h>

int64_t dd_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t dd_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t dd_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/* splitmix64: a full-period 64-bit generator; good enough for ids (not for secrets). Each
 * thread seeds its own state from the OS on first use, so threads never share state. The
 * state is one thread-local block, so an id costs one TLS lookup. (Not the initial-exec TLS
 * model: it would save that lookup but can make a dlopen()ed module fail to load when other
 * modules have used up the static TLS space.) */
typedef struct {
    uint64_t state;
    int seeded;
} id_gen_t;

static _Thread_local id_gen_t id_gen;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

uint64_t dd_random_id(int clear_msb)
{
    id_gen_t *g = &id_gen;
    uint64_t v;
    if (!g->seeded) {
        uint64_t seed = 0;
        if (apr_generate_random_bytes((unsigned char *)&seed, sizeof(seed)) != APR_SUCCESS)
            seed = (uint64_t)dd_now_ns() ^ (uint64_t)(uintptr_t)g;
        g->state = seed;
        g->seeded = 1;
    }
    do {
        v = splitmix64(&g->state);
        if (clear_msb)
            v &= 0x7FFFFFFFFFFFFFFFULL;
    } while (v == 0);
    return v;
}

int dd_parse_u64_dec(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 20)
        return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9)
            return 0;
        if (i >= 19 && v > (UINT64_MAX - d) / 10) /* 19 digits never overflow */
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int dd_parse_u64_hex(const char *s, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    if (len == 0 || len > 16)
        return 0;
    for (size_t i = 0; i < len; i++) {
        int d = hex_value((unsigned char)s[i]);
        if (d < 0)
            return 0;
        v = (v << 4) | (uint64_t)d;
    }
    *out = v;
    return 1;
}

/* "00" "01" ... "99": two digits per division. */
static const char dec_pairs[201] = "00010203040506070809101112131415161718192021222324"
                                   "25262728293031323334353637383940414243444546474849"
                                   "50515253545556575859606162636465666768697071727374"
                                   "75767778798081828384858687888990919293949596979899";

/* Writes v (32 bits) as decimal digits ending at end, two at a time; returns the first. */
static char *u32_dec(char *end, uint32_t v)
{
    while (v >= 100) {
        uint32_t r = (v % 100) * 2;
        v /= 100;
        *--end = dec_pairs[r + 1];
        *--end = dec_pairs[r];
    }
    if (v >= 10) {
        *--end = dec_pairs[v * 2 + 1];
        *--end = dec_pairs[v * 2];
    } else {
        *--end = (char)('0' + v);
    }
    return end;
}

/* The same for v < 10^8, as exactly 8 digits (leading zeros). */
static char *u32_dec8(char *end, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        uint32_t r = (v % 100) * 2;
        v /= 100;
        *--end = dec_pairs[r + 1];
        *--end = dec_pairs[r];
    }
    return end;
}

char *dd_u64_to_dec(apr_pool_t *p, uint64_t v)
{
    char tmp[20], *end = tmp + sizeof(tmp), *d, *out;
    /* 64-bit divisions only to cut v into pieces of 8 digits: 32-bit arithmetic for those */
    if (v < 100000000) {
        d = u32_dec(end, (uint32_t)v);
    } else {
        uint64_t hi = v / 100000000;
        d = u32_dec8(end, (uint32_t)(v % 100000000));
        if (hi < 100000000) {
            d = u32_dec(d, (uint32_t)hi);
        } else {
            d = u32_dec8(d, (uint32_t)(hi % 100000000));
            d = u32_dec(d, (uint32_t)(hi / 100000000));
        }
    }
    out = apr_palloc(p, (size_t)(end - d) + 1);
    memcpy(out, d, (size_t)(end - d));
    out[end - d] = '\0';
    return out;
}

void dd_u64_to_hex16(uint64_t v, char out[17])
{
    static const char hex_pairs[513] =
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
        "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
        "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
        "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
        "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";
    for (int i = 14; i >= 0; i -= 2) {
        memcpy(out + i, hex_pairs + (v & 0xFF) * 2, 2);
        v >>= 8;
    }
    out[16] = '\0';
}

/* Length of the valid UTF-8 sequence starting at s (at most n bytes available), or 0 when
 * the bytes there are not valid UTF-8 (overlong forms, surrogates and values past U+10FFFF
 * are invalid, as RFC 3629 says). */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (n >= 2 && (s[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c >= 0xE0 && c <= 0xEF) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
            return 0;
        if (c == 0xE0 && s[1] < 0xA0)
            return 0; /* overlong */
        if (c == 0xED && s[1] >= 0xA0)
            return 0; /* surrogate */
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && s[1] < 0x90)
            return 0; /* overlong */
        if (c == 0xF4 && s[1] >= 0x90)
            return 0; /* past U+10FFFF */
        return 4;
    }
    return 0;
}

const char *dd_str_clean(apr_pool_t *p, const char *s, size_t len, size_t cap, int *truncated)
{
    static const char replacement[] = "\xEF\xBF\xBD"; /* U+FFFD */
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, clean_len = 0;
    int dirty = 0;

    /* Fastest path: most values are short ASCII and come back as they are. Eight bytes at a
     * time, no per-byte call: ASCII is valid UTF-8, so only the length matters. */
    if (len <= cap) {
        for (; i + 8 <= len; i += 8)
            if (dd_load64(u + i) & 0x8080808080808080ULL)
                break;
        while (i < len && u[i] < 0x80)
            i++;
        if (i == len)
            return s;
        clean_len = i; /* what was scanned is ASCII; validate the rest below */
    }

    /* Fast path: valid UTF-8 within the cap comes back as it is. */
    while (i < len) {
        size_t n = utf8_seq_len(u + i, len - i);
        if (n == 0) {
            dirty = 1;
            break;
        }
        if (clean_len + n > cap)
            break;
        i += n;
        clean_len += n;
    }
    if (!dirty && i == len)
        return s;

    /* Slow path: copy, replacing bad bytes and cutting at the cap on a character boundary. */
    char *out = apr_palloc(p, (cap < len * 3 ? cap : len * 3) + 1);
    size_t o = 0;
    for (i = 0; i < len;) {
        size_t n = utf8_seq_len(u + i, len - i);
        const char *piece = n ? s + i : replacement;
        size_t plen = n ? n : sizeof(replacement) - 1;
        if (o + plen > cap) {
            if (truncated)
                *truncated = 1;
            break;
        }
        memcpy(out + o, piece, plen);
        o += plen;
        i += n ? n : 1;
    }
    out[o] = '\0';
    return out;
}
