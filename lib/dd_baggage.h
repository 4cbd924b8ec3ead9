/* SPDX-License-Identifier: Apache-2.0 */
/* dd_baggage.h - the W3C `baggage` header (https://www.w3.org/TR/baggage/), as Datadog's
 * tracers read and write it (dd-trace-js 5.132 text_map.js: #extractBaggageItems,
 * #injectBaggageItems; dd-trace-cpp baggage.cpp: the same limits).
 *
 * Extraction: list members `key=value[;properties]` separated by commas; a key is an RFC 7230
 * token, a value is percent-decoded (what cannot be decoded is kept as it is, then made valid
 * UTF-8), both are trimmed of white space, properties are ignored, empty members are skipped.
 * A member without `=`, with a bad key or an empty value makes the whole header malformed:
 * no item of it is kept. At most max_items items and max_bytes bytes (each member counted with
 * its comma) are read; the rest is cut off (truncated), what came before is kept.
 *
 * Injection writes `key=percent-encoded value` pairs (encodeURIComponent's set left as it is)
 * joined by commas, in the order the keys first came, within the same limits.
 */
#ifndef DD_BAGGAGE_H
#define DD_BAGGAGE_H

#include <stddef.h>
#include <apr_pools.h>
#include <apr_tables.h>

#define DD_BAGGAGE_MAX_ITEMS 64
#define DD_BAGGAGE_MAX_BYTES 8192

typedef enum {
    DD_BAGGAGE_NONE = 0,  /* no header, or nothing in it */
    DD_BAGGAGE_OK,        /* items read */
    DD_BAGGAGE_TRUNCATED, /* items read up to a limit; the rest cut off */
    DD_BAGGAGE_MALFORMED, /* no items: the header breaks the grammar */
} dd_baggage_status_t;

typedef struct {
    int max_items;    /* DD_TRACE_BAGGAGE_MAX_ITEMS */
    size_t max_bytes; /* DD_TRACE_BAGGAGE_MAX_BYTES */
} dd_baggage_limits_t;

/* Reads header (NUL-terminated, may be NULL) into *items (dd_meta_t, keys unique: a repeated
 * key takes the later value in the first key's place), allocated from p; *items is NULL unless
 * the status is OK or TRUNCATED. */
dd_baggage_status_t dd_baggage_extract(apr_pool_t *p, const char *header,
                                       const dd_baggage_limits_t *lim, apr_array_header_t **items);

/* The header value for items (dd_meta_t), or NULL when none fits. *truncated is set to 1 when
 * a limit left items out (left alone otherwise). */
char *dd_baggage_encode(apr_pool_t *p, const apr_array_header_t *items,
                        const dd_baggage_limits_t *lim, int *truncated);

/* Is key one of keys (const char *; an entry "*" matches every key)? keys may be NULL. */
int dd_baggage_tag_key(const apr_array_header_t *keys, const char *key);

/* Parses DD_TRACE_BAGGAGE_TAG_KEYS / DDBaggageTagKeys: keys separated by commas and/or spaces.
 * Returns an array of const char * (possibly empty: "no tags"), never NULL. */
apr_array_header_t *dd_baggage_tag_keys_parse(apr_pool_t *p, const char *s);

#endif
