/* SPDX-License-Identifier: Apache-2.0 */
/* dd_sketch.h - a DDSketch of non-negative values (span durations in ns) for client-side stats
 * (issue 13.2), and its protobuf encoding as the agent's stats payload carries it
 * (ClientGroupedStats.okSummary / errorSummary).
 *
 * The tracers' sketch: relative accuracy 0.01, so gamma = (1 + 0.01) / (1 - 0.01); a value v > 0
 * goes to bin floor(log(v) / log(gamma)) (sketches-go's LogarithmicMapping, index offset 0,
 * which is what the agent decodes with); a bin i stands for gamma^i * (1 + 0.01), within 1 % of
 * every value in it. Values <= 0 are counted in zeroCount. Bins are one contiguous array that
 * grows as values arrive, at most DD_SKETCH_MAX_BINS wide: past that the lowest bins are
 * collapsed into the lowest kept one (sketches-go's CollapsingLowestDenseStore), so a sketch
 * never takes more than DD_SKETCH_MAX_BINS * 4 bytes however wide the values spread.
 *
 * Plain data, one owner (the flusher thread); not thread-safe.
 */
#ifndef DD_SKETCH_H
#define DD_SKETCH_H

#include <stddef.h>
#include <stdint.h>

#define DD_SKETCH_ACCURACY 0.01
#define DD_SKETCH_MAX_BINS 2048 /* 1 ns .. 10^17 ns, far wider than any request */

typedef struct {
    uint32_t *bins;    /* counts of bins min_index .. min_index + nbins - 1; NULL when empty */
    int32_t min_index; /* the index of bins[0] */
    uint32_t nbins;    /* bins in use */
    uint32_t cap;      /* bins allocated */
    uint64_t zero_count;
    uint64_t count; /* all values, zeros included */
} dd_sketch_t;

/* An empty sketch (no memory). */
void dd_sketch_init(dd_sketch_t *s);
/* Frees the bins; the sketch is empty again. */
void dd_sketch_free(dd_sketch_t *s);

/* Adds v. Returns 0, or -1 when out of memory (the value is not counted). */
int dd_sketch_add(dd_sketch_t *s, double v);

/* The bin of v > 0, and the value a bin stands for. */
int32_t dd_sketch_index(double v);
double dd_sketch_value(int32_t index);

/* The q-quantile (0 <= q <= 1) as the agent computes it (the value of the bin that holds rank
 * q * (count - 1)); 0 for an empty sketch. */
double dd_sketch_quantile(const dd_sketch_t *s, double q);

/* The sketch as a DDSketch protobuf message (sketches-go's pb.DDSketch: mapping {gamma,
 * indexOffset 0, interpolation NONE}, positiveValues {contiguousBinCounts,
 * contiguousBinIndexOffset}, zeroCount). Returns the bytes (malloc'd) and their number in
 * *len, or NULL when out of memory. */
unsigned char *dd_sketch_encode(const dd_sketch_t *s, size_t *len);

#endif
