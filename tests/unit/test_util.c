/* SPDX-License-Identifier: Apache-2.0 */
/* test_util.c - number parsing, hex, ids and UTF-8 cleaning. */
#include "unit.h"
#include "dd_util.h"

#include <apr_general.h>

static void test_parse(void)
{
    uint64_t v = 0;
    CHECK(dd_parse_u64_dec("0", 1, &v) && v == 0);
    CHECK(dd_parse_u64_dec("18446744073709551615", 20, &v) && v == UINT64_MAX);
    CHECK(!dd_parse_u64_dec("18446744073709551616", 20, &v)); /* overflow */
    CHECK(!dd_parse_u64_dec("99999999999999999999", 20, &v));
    CHECK(!dd_parse_u64_dec("", 0, &v));
    CHECK(!dd_parse_u64_dec("-1", 2, &v));
    CHECK(!dd_parse_u64_dec("+1", 2, &v));
    CHECK(!dd_parse_u64_dec("1.5", 3, &v));
    CHECK(!dd_parse_u64_dec(" 1", 2, &v));
    CHECK(dd_parse_u64_hex("ffffffffffffffff", 16, &v) && v == UINT64_MAX);
    CHECK(dd_parse_u64_hex("00aB", 4, &v) && v == 0xab);
    CHECK(!dd_parse_u64_hex("0x1", 3, &v));
    CHECK(!dd_parse_u64_hex("1ffffffffffffffff", 17, &v));
    char hex[17];
    dd_u64_to_hex16(0x0123456789abcdefULL, hex);
    CHECK_STR(hex, "0123456789abcdef");
}

/* Ids as text: every power of ten and its neighbours, every nibble position, and random
 * values, against printf. */
static void test_format(apr_pool_t *p)
{
    uint64_t x = 0x9E3779B97F4A7C15ULL, pow10 = 1;
    char want[32], hex[17];
    int same = 0, runs = 0;
    for (int i = 0; i < 3000; i++) {
        uint64_t v;
        if (i < 60) {
            v = pow10 + (uint64_t)(i % 3) - 1; /* 10^k - 1, 10^k, 10^k + 1 */
            if (i % 3 == 2 && pow10 <= UINT64_MAX / 10)
                pow10 *= 10;
        } else if (i < 124) {
            v = (1ULL << (i - 60)) - (i & 1); /* 2^k and 2^k - 1 */
        } else {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            v = x >> (x % 64);
        }
        snprintf(want, sizeof(want), "%" PRIu64, v);
        same += strcmp(dd_u64_to_dec(p, v), want) == 0;
        snprintf(want, sizeof(want), "%016" PRIx64, v);
        dd_u64_to_hex16(v, hex);
        same += strcmp(hex, want) == 0;
        runs += 2;
    }
    CHECK(same == runs);
    CHECK_STR(dd_u64_to_dec(p, 0), "0");
    CHECK_STR(dd_u64_to_dec(p, UINT64_MAX), "18446744073709551615");
}

static void test_ids(void)
{
    uint64_t seen_msb = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t a = dd_random_id(1), b = dd_random_id(0);
        CHECK(a != 0 && b != 0);
        CHECK(a < (1ULL << 63));
        seen_msb |= b & (1ULL << 63);
        if (a == 0 || b == 0 || a >= (1ULL << 63))
            break;
    }
    CHECK(seen_msb != 0); /* the full 64 bits are used when asked */
}

static void test_clean(apr_pool_t *p)
{
    int trunc = 0;
    const char *s = "plain";
    CHECK(dd_str_clean(p, s, 5, 1024, &trunc) == s); /* clean input is not copied */
    CHECK(trunc == 0);
    CHECK_STR(dd_str_clean(p, "caf\xc3\xa9", 5, 1024, &trunc), "caf\xc3\xa9");
    CHECK_STR(dd_str_clean(p,
                           "a\xff"
                           "b",
                           3, 1024, &trunc),
              "a\xef\xbf\xbd"
              "b");
    CHECK_STR(dd_str_clean(p, "\xc0\xaf", 2, 1024, &trunc), "\xef\xbf\xbd\xef\xbf\xbd");
    CHECK_STR(dd_str_clean(p, "\xed\xa0\x80", 3, 1024, &trunc),
              "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"); /* a surrogate */
    CHECK(trunc == 0);
    /* cut on a character boundary: "é" is 2 bytes and does not fit in 4 after "abc" */
    CHECK_STR(dd_str_clean(p, "abc\xc3\xa9", 5, 4, &trunc), "abc");
    CHECK(trunc == 1);
    trunc = 0;
    CHECK_STR(dd_str_clean(p, "abcdef", 6, 3, &trunc), "abc");
    CHECK(trunc == 1);
}

int main(void)
{
    apr_pool_t *p;
    apr_initialize();
    apr_pool_create(&p, NULL);
    test_parse();
    test_ids();
    test_format(p);
    test_clean(p);
    apr_pool_destroy(p);
    apr_terminate();
    UNIT_DONE();
}
