/* SPDX-License-Identifier: Apache-2.0 */
/* test_sketch.c - unit tests for lib/dd_sketch.c: quantiles within the relative accuracy
 * (uniform, log-spread and two-mode data against the exact sorted values), zeros, collapsing
 * past DD_SKETCH_MAX_BINS, and the protobuf bytes decoded field by field (numbers and wire
 * types of sketches-go's DDSketch message). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dd_sketch.h"
#include "unit.h"

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The exact q-quantile as the agent's rank: the value at rank floor(q * (n - 1)). */
static double exact(double *v, size_t n, double q)
{
    return v[(size_t)(q * (double)(n - 1))];
}

static int within(double got, double want)
{
    if (want == 0)
        return got == 0;
    return fabs(got - want) <= want * DD_SKETCH_ACCURACY * 1.0001;
}

static void check_quantiles(double *v, size_t n)
{
    static const double qs[] = {0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1};
    dd_sketch_t s;
    dd_sketch_init(&s);
    for (size_t i = 0; i < n; i++)
        CHECK(dd_sketch_add(&s, v[i]) == 0);
    CHECK_U64(s.count, n);
    qsort(v, n, sizeof(*v), cmp);
    for (size_t i = 0; i < sizeof(qs) / sizeof(qs[0]); i++) {
        double got = dd_sketch_quantile(&s, qs[i]), want = exact(v, n, qs[i]);
        if (!within(got, want))
            fprintf(stderr, "q=%g got %g want %g\n", qs[i], got, want);
        CHECK(within(got, want));
    }
    dd_sketch_free(&s);
}

static uint64_t lcg = 42;
static double rnd(void)
{
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(lcg >> 11) / 9007199254740992.0;
}

static void test_quantiles(void)
{
    size_t n = 20000;
    double *v = malloc(n * sizeof(*v));
    for (size_t i = 0; i < n; i++)
        v[i] = 1e5 + rnd() * 9e5; /* 100 us .. 1 ms */
    check_quantiles(v, n);
    for (size_t i = 0; i < n; i++)
        v[i] = exp(log(1e3) + rnd() * (log(1e10) - log(1e3))); /* 1 us .. 10 s, log-spread */
    check_quantiles(v, n);
    for (size_t i = 0; i < n; i++)
        v[i] = (i % 10 == 0 ? 5e8 : 2e6) * (1 + 0.1 * rnd()); /* two modes: 2 ms and 500 ms */
    check_quantiles(v, n);
    for (size_t i = 0; i < n; i++) /* arriving in descending order: the array grows downward */
        v[i] = 1e9 / (double)(i + 1);
    check_quantiles(v, n);
    free(v);
}

static void test_zeros_and_empty(void)
{
    dd_sketch_t s;
    dd_sketch_init(&s);
    CHECK(dd_sketch_quantile(&s, 0.5) == 0);
    dd_sketch_add(&s, 0);
    dd_sketch_add(&s, 0);
    dd_sketch_add(&s, 1000);
    CHECK_U64(s.zero_count, 2);
    CHECK(dd_sketch_quantile(&s, 0.5) == 0);
    CHECK(within(dd_sketch_quantile(&s, 1), 1000));
    dd_sketch_free(&s);
}

static void test_collapse(void)
{
    dd_sketch_t s;
    dd_sketch_init(&s);
    /* 1e-3 .. 1e300: far more than DD_SKETCH_MAX_BINS bins apart */
    dd_sketch_add(&s, 1e-3);
    dd_sketch_add(&s, 1.0);
    dd_sketch_add(&s, 1e300);
    CHECK(s.nbins <= DD_SKETCH_MAX_BINS);
    CHECK(s.cap <= DD_SKETCH_MAX_BINS);
    CHECK_U64(s.count, 3);
    CHECK(within(dd_sketch_quantile(&s, 1), 1e300)); /* the top keeps its accuracy */
    /* and upward again, past the window in one jump */
    dd_sketch_add(&s, 1e-300);
    CHECK(s.nbins <= DD_SKETCH_MAX_BINS);
    CHECK_U64(s.count, 4);
    uint64_t sum = s.zero_count;
    for (uint32_t i = 0; i < s.nbins; i++)
        sum += s.bins[i];
    CHECK_U64(sum, 4);
    dd_sketch_free(&s);
}

/* --- a protobuf reader, just enough for the DDSketch message ---------------------------- */

static uint64_t rd_varint(const unsigned char **p, const unsigned char *end)
{
    uint64_t v = 0;
    int shift = 0;
    while (*p < end) {
        unsigned char b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            break;
        shift += 7;
    }
    return v;
}

static double rd_double(const unsigned char *p)
{
    uint64_t bits = 0;
    double d;
    for (int i = 0; i < 8; i++)
        bits |= (uint64_t)p[i] << (8 * i);
    memcpy(&d, &bits, sizeof(d));
    return d;
}

typedef struct {
    double gamma, offset, zero;
    int interpolation, fields_bad;
    int32_t index_offset;
    double counts[4096];
    size_t ncounts;
} decoded_t;

static void decode_store(const unsigned char *p, const unsigned char *end, decoded_t *d)
{
    while (p < end) {
        uint64_t key = rd_varint(&p, end);
        if (key == (2 << 3 | 2)) { /* contiguousBinCounts, packed */
            uint64_t n = rd_varint(&p, end);
            for (uint64_t i = 0; i + 8 <= n && d->ncounts < 4096; i += 8)
                d->counts[d->ncounts++] = rd_double(p + i);
            p += n;
        } else if (key == (3 << 3 | 0)) { /* contiguousBinIndexOffset, sint32 */
            uint64_t z = rd_varint(&p, end);
            d->index_offset = (int32_t)((z >> 1) ^ (~(z & 1) + 1));
        } else {
            d->fields_bad++;
            return;
        }
    }
}

static void decode(const unsigned char *p, size_t len, decoded_t *d)
{
    const unsigned char *end = p + len;
    memset(d, 0, sizeof(*d));
    while (p < end) {
        uint64_t key = rd_varint(&p, end);
        if (key == (1 << 3 | 2)) { /* mapping */
            uint64_t n = rd_varint(&p, end);
            const unsigned char *m = p, *me = p + n;
            while (m < me) {
                uint64_t k = rd_varint(&m, me);
                if (k == (1 << 3 | 1))
                    d->gamma = rd_double(m), m += 8;
                else if (k == (2 << 3 | 1))
                    d->offset = rd_double(m), m += 8;
                else if (k == (3 << 3 | 0))
                    d->interpolation = (int)rd_varint(&m, me);
                else
                    d->fields_bad++, m = me;
            }
            p = me;
        } else if (key == (2 << 3 | 2)) { /* positiveValues */
            uint64_t n = rd_varint(&p, end);
            decode_store(p, p + n, d);
            p += n;
        } else if (key == (4 << 3 | 1)) { /* zeroCount */
            d->zero = rd_double(p);
            p += 8;
        } else {
            d->fields_bad++;
            return;
        }
    }
}

static void test_protobuf(void)
{
    dd_sketch_t s;
    decoded_t d;
    size_t len;
    unsigned char *pb;
    double total = 0;

    dd_sketch_init(&s);
    pb = dd_sketch_encode(&s, &len); /* empty: the mapping only */
    decode(pb, len, &d);
    CHECK(d.fields_bad == 0);
    CHECK(fabs(d.gamma - 1.01 / 0.99) < 1e-15);
    CHECK(d.ncounts == 0);
    free(pb);

    for (int i = 0; i < 1000; i++)
        dd_sketch_add(&s, 1e6 + i * 1e3); /* 1 .. 2 ms */
    dd_sketch_add(&s, 0);
    dd_sketch_add(&s, 0.5); /* a negative index: the offset's zigzag */
    pb = dd_sketch_encode(&s, &len);
    decode(pb, len, &d);
    CHECK(d.fields_bad == 0);
    CHECK(d.offset == 0 && d.interpolation == 0);
    CHECK(d.zero == 1);
    CHECK(d.index_offset == dd_sketch_index(0.5));
    CHECK(d.index_offset < 0);
    for (size_t i = 0; i < d.ncounts; i++)
        total += d.counts[i];
    CHECK(total == 1001);
    /* the highest bin decodes to the highest value within the accuracy */
    CHECK(d.ncounts > 0 && d.counts[d.ncounts - 1] > 0);
    CHECK(within(pow(d.gamma, d.index_offset + (int)d.ncounts - 1) * (1 + DD_SKETCH_ACCURACY),
                 1e6 + 999e3));
    free(pb);
    dd_sketch_free(&s);
}

int main(void)
{
    test_quantiles();
    test_zeros_and_empty();
    test_collapse();
    test_protobuf();
    UNIT_DONE();
}
