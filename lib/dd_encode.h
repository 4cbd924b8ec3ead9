/* SPDX-License-Identifier: Apache-2.0 */
/* dd_encode.h - spans -> msgpack, the /v0.4/traces wire format (CONTRACT §6).
 *
 * A chunk (one trace's spans) is encoded once, when the request ends, into a malloc'd buffer
 * that outlives the request pool and travels through the queue. A payload is a msgpack array
 * header followed by the chunks' bytes as they are, so the flusher never re-encodes.
 */
#ifndef DD_ENCODE_H
#define DD_ENCODE_H

#include <stddef.h>
#include "dd_span.h"

/* Encodes n spans as one msgpack array of span maps. On success returns 0 and a buffer from
 * malloc() in *out (free it with free()). Returns -1 on failure (nothing allocated). */
int dd_encode_chunk(dd_span_t *const *spans, size_t n, char **out, size_t *out_len);

/* Whether s[0..n) holds a byte the encoder escapes: a control character other than tab, or
 * DEL. A string without one may be given to the encoder with its length (dd_meta_t.klen /
 * vlen) and is then copied as it is. */
int dd_encode_has_control(const char *s, size_t n);

/* The msgpack key/value pairs of n meta entries (dd_meta_t), or of n metrics (dd_metric_t)
 * when metrics is 1, as dd_encode_chunk writes them inside a span's map, in p (dd_run_t).
 * NULL when out of memory. */
const unsigned char *dd_encode_entries(apr_pool_t *p, const void *items, int n, int metrics,
                                       size_t *len);

/* Writes the msgpack array header for n elements into out (at most 5 bytes) and returns
 * its length. */
size_t dd_encode_array_header(size_t n, unsigned char out[5]);

#endif
