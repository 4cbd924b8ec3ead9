/* SPDX-License-Identifier: Apache-2.0 */
/* dd_span.h - the span model.
 *
 * A span is plain data allocated in an APR pool (the request pool): ids, names, times and two
 * ordered lists of tags. Nothing here knows about httpd or the wire format; dd_encode.c turns
 * spans into msgpack. String pointers stored in a span must live as long as the pool
 * (pool-allocated or static); the span does not copy them.
 */
#ifndef DD_SPAN_H
#define DD_SPAN_H

#include <stdint.h>
#include <string.h>
#include <apr_pools.h>
#include <apr_tables.h>

/* klen / vlen, when not 0, are the key's / value's length and say the string has no control
 * characters (a literal, or a value checked once at configuration): the encoder copies it as
 * it is. 0 means unknown: the encoder measures and checks the string itself. */
typedef struct {
    const char *key;
    const char *value;
    uint32_t klen;
    uint32_t vlen;
} dd_meta_t;

/* A string literal as the (pointer, length) pair the _n functions take. */
#define DD_LIT(s) ("" s ""), ((uint32_t)sizeof(s) - 1)

typedef struct {
    const char *key;
    double value;
    uint32_t klen; /* as dd_meta_t's: the key's length when known clean, else 0 */
} dd_metric_t;

/* A span link (the agent's span.proto SpanLink): a reference to a span of another trace, e.g.
 * a context the request also carried that its trace does not continue. */
typedef struct {
    uint64_t trace_id;      /* low 64 bits */
    uint64_t trace_id_high; /* high 64 bits, 0 for a 64-bit id */
    uint64_t span_id;
    const char *tracestate;               /* W3C tracestate of the linked context, or NULL */
    int flags;                            /* W3C trace flags (0 or 1), or -1 when unknown */
    const apr_array_header_t *attributes; /* dd_meta_t, or NULL */
} dd_span_link_t;

/* Tags encoded once (at configuration time, or once per child for its runtime id): the
 * entries as a span's meta (dd_meta_t) or metrics (dd_metric_t) array holds them, and their
 * msgpack key/value pairs, byte for byte what the encoder writes for those entries. A span
 * that holds them at the position it recorded (dd_span_t.runs), every entry unchanged, gets
 * the bytes copied as one block; otherwise (a tag replaced, removed, or moved since) the
 * encoder writes its entries one by one. The encoder compares the entries, so nothing that
 * changes a span's tags needs to know about runs. Items and bytes live as long as the run. */
typedef struct {
    const void *items; /* dd_meta_t[n] or dd_metric_t[n] */
    int n;
    int metrics; /* items are dd_metric_t */
    const unsigned char *bytes;
    size_t len;
    uint64_t keys; /* dd_key_bit() of each key */
} dd_run_t;

/* Encodes n meta entries (or metrics) as a run in p. NULL when n == 0. */
const dd_run_t *dd_run_make(apr_pool_t *p, const dd_meta_t *tags, int n);
const dd_run_t *dd_run_make_metrics(apr_pool_t *p, const dd_metric_t *metrics, int n);

/* name, service and type as the encoder may copy them: checked once, free of control
 * characters, with their lengths. Used for a span whose field is the same pointer. */
typedef struct {
    const char *name, *service, *type;
    uint32_t name_len, service_len, type_len;
} dd_span_known_t;

#define DD_SPAN_RUNS 3

typedef struct dd_span {
    uint64_t trace_id;      /* low 64 bits: the wire's trace_id */
    uint64_t trace_id_high; /* high 64 bits, carried as meta _dd.p.tid on the chunk root */
    uint64_t span_id;
    uint64_t parent_id; /* 0 = none */
    const char *name;
    const char *service;
    const char *resource;
    const char *type;
    int64_t start;    /* ns since the Unix epoch */
    int64_t duration; /* ns, never negative */
    int32_t error;
    apr_array_header_t *meta;        /* of dd_meta_t; keys unique */
    apr_array_header_t *metrics;     /* of dd_metric_t; keys unique */
    const apr_array_header_t *links; /* of dd_span_link_t, or NULL (encoded as span_links) */
    /* For the encoder only (dd_run_t): runs of meta or metrics and where they start, and the
     * strings known clean. Nothing else needs to read or keep them right. */
    struct {
        const dd_run_t *run;
        int at;
    } runs[DD_SPAN_RUNS];
    const dd_span_known_t *known;
    const char *resource_clean; /* resource when measured clean, resource_len bytes long */
    uint32_t resource_len;
    /* dd_key_bit() of every key meta (metrics) holds, and maybe of keys it held: a key whose
     * bit is not set is not there, with no search. Kept by the functions below, the only
     * ones that add tags. */
    uint64_t meta_keys, metric_keys;
} dd_span_t;

/* One of 64 bits for a key of n bytes, from n and two of its bytes: two equal keys have the
 * same bit (dd_span_t.meta_keys, tag sets). */
static inline uint64_t dd_key_bit(const char *key, size_t n)
{
    unsigned char last = n ? (unsigned char)key[n - 1] : 0;
    return 1ULL << ((n * 7 + (unsigned char)key[0] * 3 + last) & 63);
}

/* A fresh span: no tags, type dd_span_type_web ("web", one pointer for dd_span_known_t). */
dd_span_t *dd_span_create(apr_pool_t *p);
extern const char dd_span_type_web[];

/* Appends a meta tag whose key the span does not have yet (a fresh span's own tags): no
 * search. A NULL value adds nothing. klen / vlen as in dd_meta_t:
 * dd_span_add_meta_n(s, DD_LIT("span.kind"), DD_LIT("server")), or 0 for a string of unknown
 * length. */
static inline void dd_span_add_meta_n(dd_span_t *s, const char *key, uint32_t klen,
                                      const char *value, uint32_t vlen)
{
    apr_array_header_t *a = s->meta;
    if (!value)
        return;
    *(a->nelts < a->nalloc ? &((dd_meta_t *)a->elts)[a->nelts++] : (dd_meta_t *)apr_array_push(a)) =
        (dd_meta_t){key, value, klen, vlen};
    s->meta_keys |= dd_key_bit(key, klen ? klen : strlen(key));
}

/* Appends a run's entries to the span's meta (or metrics) and records where they are, for the
 * encoder. As dd_span_add_meta_n: the span must not have any of the run's keys yet. At most
 * DD_SPAN_RUNS runs are recorded; more are appended all the same (and encoded one by one). */
void dd_span_add_run(dd_span_t *s, const dd_run_t *r);

/* Sets (or replaces) a meta tag. A NULL value removes the tag. */
void dd_span_set_meta(dd_span_t *s, const char *key, const char *value);
/* Sets (or replaces) a tag given as a dd_meta_t, lengths included. */
void dd_span_put_meta(dd_span_t *s, const dd_meta_t *m);
/* Fills m->klen and m->vlen when the strings are free of control characters (configuration
 * time: the request path then copies them as they are). */
void dd_meta_measure(dd_meta_t *m);
const char *dd_span_get_meta(const dd_span_t *s, const char *key);

/* A set of configured tags (DDTag, DD_TAGS): unique keys in the order they were first set, a
 * later value for a key replacing the earlier one, looked up by key in constant time. Built at
 * configuration time (and merged when httpd merges per-directory configurations), read-only on
 * the request path, so a request applies any number of them in time linear in their number. */
typedef struct dd_tagset dd_tagset_t;

dd_tagset_t *dd_tagset_make(apr_pool_t *p);
/* Sets key to value (both must live as long as the set's pool); measures them (dd_meta_t). */
void dd_tagset_put(dd_tagset_t *t, const char *key, const char *value);
/* base's tags with add's over them (add wins), in p; base or add itself when the other is NULL
 * or empty. Time linear in both sizes. Neither is changed. */
const dd_tagset_t *dd_tagset_merge(apr_pool_t *p, const dd_tagset_t *base, const dd_tagset_t *add);
/* The value of key, or NULL. */
const char *dd_tagset_get(const dd_tagset_t *t, const char *key);
/* The tags, in order; *n gets their number (0 for a NULL set). */
const dd_meta_t *dd_tagset_items(const dd_tagset_t *t, int *n);

/* Adds the set's tags to the span, except those whose key the span has already: the module's
 * own tags win over configured ones (as tracers' integrations overwrite DD_TAGS). No search
 * per tag: time linear in the set's size plus the span's tags. */
void dd_span_apply_tagset(dd_span_t *s, const dd_tagset_t *t);

/* Sets (or replaces) a metric. */
void dd_span_set_metric(dd_span_t *s, const char *key, double value);
/* The same with the key's length (dd_span_set_metric_n(s, DD_LIT("process_id"), v)), which says
 * the key has no control characters: the encoder copies it without measuring it. */
void dd_span_set_metric_n(dd_span_t *s, const char *key, uint32_t klen, double value);
/* Returns 1 and stores the value when the metric exists, else 0. */
int dd_span_get_metric(const dd_span_t *s, const char *key, double *value);

#endif
