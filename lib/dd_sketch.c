/* SPDX-License-Identifier: Apache-2.0 */
/* dd_sketch.c - DDSketch for client-side stats: logarithmic bins in one contiguous array, and
 * the protobuf encoding the agent decodes (pkg/proto/datadog/trace/stats.proto carries it as
 * bytes; the message is sketches-go's ddsketch.proto). */
#include "dd_sketch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GAMMA ((1.0 + DD_SKETCH_ACCURACY) / (1.0 - DD_SKETCH_ACCURACY))

/* 1 / ln(gamma), computed once: the mapping's multiplier. */
static double multiplier(void)
{
    static double m;
    if (m == 0.0)
        m = 1.0 / log(GAMMA); /* idempotent: a race writes the same value */
    return m;
}

void dd_sketch_init(dd_sketch_t *s)
{
    memset(s, 0, sizeof(*s));
}

void dd_sketch_free(dd_sketch_t *s)
{
    free(s->bins);
    dd_sketch_init(s);
}

int32_t dd_sketch_index(double v)
{
    double i = log(v) * multiplier();
    if (i > 1e9)
        return 1000000000;
    if (i < -1e9)
        return -1000000000;
    return (int32_t)floor(i);
}

double dd_sketch_value(int32_t index)
{
    return exp((double)index / multiplier()) * (1.0 + DD_SKETCH_ACCURACY);
}

/* Makes bins cover index, growing the array or collapsing the lowest bins. */
static int cover(dd_sketch_t *s, int32_t index, int32_t *slot)
{
    int32_t lo = s->min_index, hi = s->min_index + (int32_t)s->nbins - 1;
    int32_t new_lo, new_hi;
    uint32_t width;

    if (s->nbins == 0) {
        lo = hi = index;
    } else if (index >= lo && index <= hi) {
        *slot = index - lo;
        return 0;
    }
    new_lo = index < lo ? index : lo;
    new_hi = index > hi ? index : hi;
    if ((int64_t)new_hi - new_lo + 1 > DD_SKETCH_MAX_BINS) {
        /* Too wide: keep the top DD_SKETCH_MAX_BINS bins, the lower ones fold into the lowest
         * kept (low durations lose their accuracy first; the tail latencies keep theirs). */
        new_lo = new_hi - DD_SKETCH_MAX_BINS + 1;
    }
    width = (uint32_t)(new_hi - new_lo + 1);
    if (width > s->cap) {
        uint32_t cap = s->cap ? s->cap : 16;
        uint32_t *nb;
        while (cap < width)
            cap *= 2;
        if (cap > DD_SKETCH_MAX_BINS)
            cap = DD_SKETCH_MAX_BINS;
        nb = calloc(cap, sizeof(*nb));
        if (!nb)
            return -1;
        for (uint32_t i = 0; i < s->nbins; i++) {
            int32_t at = lo + (int32_t)i;
            nb[at < new_lo ? 0 : at - new_lo] += s->bins[i];
        }
        free(s->bins);
        s->bins = nb;
        s->cap = cap;
    } else if (s->nbins > 0 && new_lo != lo) {
        /* Room enough: move the bins to their new place (up, when lower ones arrive; folding
         * the lowest in, when higher ones push the window up). */
        uint32_t *tmp = s->bins, n = s->nbins;
        if (new_lo < lo) {
            memmove(tmp + (lo - new_lo), tmp, n * sizeof(*tmp));
            memset(tmp, 0, (size_t)(lo - new_lo) * sizeof(*tmp));
        } else {
            uint32_t fold = (uint32_t)(new_lo - lo), sum = 0;
            for (uint32_t i = 0; i <= fold && i < n; i++)
                sum += tmp[i];
            if (fold < n) {
                memmove(tmp, tmp + fold, (n - fold) * sizeof(*tmp));
                memset(tmp + (n - fold), 0, fold * sizeof(*tmp));
            } else {
                memset(tmp, 0, s->cap * sizeof(*tmp));
            }
            tmp[0] = sum;
        }
    }
    if (s->nbins == 0)
        memset(s->bins, 0, s->cap * sizeof(*s->bins));
    s->min_index = new_lo;
    s->nbins = width;
    *slot = index < new_lo ? 0 : index - new_lo;
    return 0;
}

int dd_sketch_add(dd_sketch_t *s, double v)
{
    int32_t slot;

    if (!(v > 1e-9)) { /* 0, negative or NaN: the zero bucket */
        s->zero_count++;
        s->count++;
        return 0;
    }
    if (cover(s, dd_sketch_index(v), &slot) != 0)
        return -1;
    s->bins[slot]++;
    s->count++;
    return 0;
}

double dd_sketch_quantile(const dd_sketch_t *s, double q)
{
    double rank;
    uint64_t n;

    if (s->count == 0)
        return 0.0;
    q = q < 0 ? 0 : q > 1 ? 1 : q;
    rank = q * (double)(s->count - 1);
    n = s->zero_count;
    if ((double)n > rank)
        return 0.0;
    for (uint32_t i = 0; i < s->nbins; i++) {
        n += s->bins[i];
        if ((double)n > rank)
            return dd_sketch_value(s->min_index + (int32_t)i);
    }
    return dd_sketch_value(s->min_index + (int32_t)s->nbins - 1);
}

/* --- protobuf -------------------------------------------------------------------------- */

static unsigned char *put_varint(unsigned char *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    *p++ = (unsigned char)v;
    return p;
}

static unsigned char *put_double(unsigned char *p, unsigned field, double d)
{
    uint64_t bits;
    memcpy(&bits, &d, sizeof(bits));
    *p++ = (unsigned char)(field << 3 | 1); /* wire type 1: 64-bit */
    for (int i = 0; i < 8; i++)
        *p++ = (unsigned char)(bits >> (8 * i)); /* little-endian */
    return p;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

unsigned char *dd_sketch_encode(const dd_sketch_t *s, size_t *len)
{
    /* Only the bins from the lowest to the highest non-empty one are sent. */
    uint32_t first = 0, last = s->nbins;
    uint64_t zz, packed, store_len;
    unsigned char *out, *p;

    while (first < last && s->bins[first] == 0)
        first++;
    while (last > first && s->bins[last - 1] == 0)
        last--;
    packed = (uint64_t)(last - first) * 8;
    zz = (uint32_t)(((uint32_t)(s->min_index + (int32_t)first) << 1) ^
                    (uint32_t)((s->min_index + (int32_t)first) >> 31)); /* sint32 zigzag */
    store_len = 0;
    if (packed)
        store_len = 1 + varint_len(packed) + packed + (zz ? 1 + varint_len(zz) : 0);
    out = malloc(2 + 9 + 2 + store_len + 9 + 16);
    if (!out)
        return NULL;
    p = out;
    *p++ = 1 << 3 | 2; /* mapping: IndexMapping, length-delimited */
    *p++ = 9;          /* gamma only: indexOffset 0 and interpolation NONE are proto3 defaults */
    p = put_double(p, 1, GAMMA);
    if (store_len) {
        *p++ = 2 << 3 | 2; /* positiveValues: Store */
        p = put_varint(p, store_len);
        *p++ = 2 << 3 | 2; /* contiguousBinCounts: packed doubles */
        p = put_varint(p, packed);
        for (uint32_t i = first; i < last; i++) {
            double c = (double)s->bins[i];
            uint64_t bits;
            memcpy(&bits, &c, sizeof(bits));
            for (int b = 0; b < 8; b++)
                *p++ = (unsigned char)(bits >> (8 * b));
        }
        if (zz) {
            *p++ = 3 << 3 | 0; /* contiguousBinIndexOffset: sint32 */
            p = put_varint(p, zz);
        }
    }
    if (s->zero_count)
        p = put_double(p, 4, (double)s->zero_count);
    *len = (size_t)(p - out);
    return out;
}
