/* SPDX-License-Identifier: Apache-2.0 */
/* dd_span.c - span creation and tag lists.
 *
 * Tags live in small arrays searched linearly: a span has a couple of dozen tags at most, and
 * a linear scan of pointers is faster than hashing at that size and keeps insertion order
 * (which makes payloads stable and easy to read in tests).
 */
#include "dd_span.h"
#include "dd_encode.h"

#include <stdint.h>
#include <string.h>
#include <apr_hash.h>
#include <apr_strings.h>

/* Keys are mostly string literals, so the same pointer usually means the same key, and two
 * different keys usually differ in their first byte: strcmp only runs when both fail. */
static inline int same_key(const char *a, const char *b)
{
    return a == b || (a[0] == b[0] && strcmp(a, b) == 0);
}

/* A span and room for its usual tags in one allocation: a server span has about a dozen
 * tags, an inferred span up to twenty; a longer list grows in the pool as any APR array. */
#define META_SLOTS 20
#define METRIC_SLOTS 4

const char dd_span_type_web[] = "web";

dd_span_t *dd_span_create(apr_pool_t *p)
{
    struct block {
        dd_span_t span;
        apr_array_header_t meta, metrics;
        dd_meta_t meta_slots[META_SLOTS];
        dd_metric_t metric_slots[METRIC_SLOTS];
    } *b = apr_palloc(p, sizeof(*b));
    dd_span_t *s = &b->span;

    memset(s, 0, sizeof(*s));
    s->type = dd_span_type_web;
    b->meta = (apr_array_header_t){p, sizeof(dd_meta_t), 0, META_SLOTS, (char *)b->meta_slots};
    b->metrics =
        (apr_array_header_t){p, sizeof(dd_metric_t), 0, METRIC_SLOTS, (char *)b->metric_slots};
    s->meta = &b->meta;
    s->metrics = &b->metrics;
    return s;
}

static const dd_run_t *run_make(apr_pool_t *p, const void *items, int n, int metrics)
{
    size_t size = metrics ? sizeof(dd_metric_t) : sizeof(dd_meta_t);
    dd_run_t *r;
    if (n <= 0)
        return NULL;
    r = apr_palloc(p, sizeof(*r));
    r->items = apr_pmemdup(p, items, size * (size_t)n);
    r->n = n;
    r->metrics = metrics;
    r->bytes = dd_encode_entries(p, r->items, n, metrics, &r->len);
    r->keys = 0;
    for (int i = 0; i < n; i++) {
        const char *key =
            metrics ? ((const dd_metric_t *)items)[i].key : ((const dd_meta_t *)items)[i].key;
        r->keys |= dd_key_bit(key, strlen(key));
    }
    return r->bytes ? r : NULL;
}

const dd_run_t *dd_run_make(apr_pool_t *p, const dd_meta_t *tags, int n)
{
    return run_make(p, tags, n, 0);
}

const dd_run_t *dd_run_make_metrics(apr_pool_t *p, const dd_metric_t *metrics, int n)
{
    return run_make(p, metrics, n, 1);
}

void dd_span_add_run(dd_span_t *s, const dd_run_t *r)
{
    apr_array_header_t *a;
    size_t size;
    if (!r)
        return;
    a = r->metrics ? s->metrics : s->meta;
    size = r->metrics ? sizeof(dd_metric_t) : sizeof(dd_meta_t);
    if (a->nalloc - a->nelts < r->n) { /* grows as apr_array_push would, by doubling */
        int cap = a->nalloc > 0 ? a->nalloc * 2 : 4;
        char *elts;
        while (cap - a->nelts < r->n)
            cap *= 2;
        elts = apr_palloc(a->pool, size * (size_t)cap);
        memcpy(elts, a->elts, size * (size_t)a->nelts);
        a->elts = elts;
        a->nalloc = cap;
    }
    for (int k = 0; k < DD_SPAN_RUNS; k++) {
        if (!s->runs[k].run) {
            s->runs[k].run = r;
            s->runs[k].at = a->nelts;
            break;
        }
    }
    memcpy(a->elts + size * (size_t)a->nelts, r->items, size * (size_t)r->n);
    a->nelts += r->n;
    *(r->metrics ? &s->metric_keys : &s->meta_keys) |= r->keys;
}

void dd_span_put_meta(dd_span_t *s, const dd_meta_t *tag)
{
    dd_meta_t *m = (dd_meta_t *)s->meta->elts;
    uint64_t bit = dd_key_bit(tag->key, tag->klen ? tag->klen : strlen(tag->key));
    if (!(s->meta_keys & bit)) { /* a key the span has not got: no search */
        if (tag->value)
            dd_span_add_meta_n(s, tag->key, tag->klen, tag->value, tag->vlen);
        return;
    }
    for (int i = 0; i < s->meta->nelts; i++) {
        if (tag->klen && m[i].klen && tag->klen != m[i].klen)
            continue; /* both lengths known and different: another key, no strcmp */
        if (same_key(m[i].key, tag->key)) {
            if (tag->value) {
                m[i].value = tag->value;
                m[i].vlen = tag->vlen;
            } else {
                memmove(&m[i], &m[i + 1], (size_t)(s->meta->nelts - i - 1) * sizeof(*m));
                s->meta->nelts--;
            }
            return;
        }
    }
    if (tag->value)
        dd_span_add_meta_n(s, tag->key, tag->klen, tag->value, tag->vlen);
}

void dd_span_set_meta(dd_span_t *s, const char *key, const char *value)
{
    dd_meta_t m = {key, value, 0, 0};
    dd_span_put_meta(s, &m);
}

/* The length the encoder may take as it is (see dd_meta_t), else 0. */
static uint32_t clean_length(const char *s)
{
    size_t n = strlen(s);
    return n <= UINT32_MAX && !dd_encode_has_control(s, n) ? (uint32_t)n : 0;
}

void dd_meta_measure(dd_meta_t *m)
{
    m->klen = m->key ? clean_length(m->key) : 0;
    m->vlen = m->value ? clean_length(m->value) : 0;
}

const char *dd_span_get_meta(const dd_span_t *s, const char *key)
{
    const dd_meta_t *m = (const dd_meta_t *)s->meta->elts;
    if (!(s->meta_keys & dd_key_bit(key, strlen(key))))
        return NULL;
    for (int i = 0; i < s->meta->nelts; i++)
        if (same_key(m[i].key, key))
            return m[i].value;
    return NULL;
}

void dd_span_set_metric_n(dd_span_t *s, const char *key, uint32_t klen, double value)
{
    dd_metric_t *m = (dd_metric_t *)s->metrics->elts;
    uint64_t bit = dd_key_bit(key, klen ? klen : strlen(key));
    for (int i = 0; (s->metric_keys & bit) && i < s->metrics->nelts; i++) {
        if (klen && m[i].klen && klen != m[i].klen)
            continue; /* both lengths known and different: another key, no strcmp */
        if (same_key(m[i].key, key)) {
            m[i].value = value;
            return; /* the same key: its klen stays right */
        }
    }
    apr_array_header_t *a = s->metrics;
    dd_metric_t *n = a->nelts < a->nalloc ? &((dd_metric_t *)a->elts)[a->nelts++]
                                          : (dd_metric_t *)apr_array_push(a);
    n->key = key;
    n->value = value;
    n->klen = klen;
    s->metric_keys |= bit;
}

void dd_span_set_metric(dd_span_t *s, const char *key, double value)
{
    dd_span_set_metric_n(s, key, 0, value);
}

int dd_span_get_metric(const dd_span_t *s, const char *key, double *value)
{
    const dd_metric_t *m = (const dd_metric_t *)s->metrics->elts;
    if (!(s->metric_keys & dd_key_bit(key, strlen(key))))
        return 0;
    for (int i = 0; i < s->metrics->nelts; i++) {
        if (same_key(m[i].key, key)) {
            *value = m[i].value;
            return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Tag sets                                                                                 */

/* Invariant: items holds each key once; index maps every key to 1 + its position in items;
 * filter has dd_key_bit() of every key set. run, when not NULL, is items encoded: bytes grow
 * with each new key; a key set again makes the run stale (NULL) until a merge encodes the
 * whole set (a set is built once, at configuration time, so this is about never being
 * quadratic, not about speed). */
struct dd_tagset {
    apr_pool_t *pool;
    apr_array_header_t *items; /* dd_meta_t */
    apr_hash_t *index;         /* key -> (void *)(intptr_t)(position + 1) */
    uint64_t filter;
    const dd_run_t *run; /* &encoded, or NULL (empty or stale) */
    dd_run_t encoded;
    size_t cap; /* of encoded.bytes */
    int stale;
};

/* Appends the encoding of the set's last n items to its run (amortized: bytes double). */
static void tagset_encode_last(dd_tagset_t *t, int n)
{
    const dd_meta_t *m = (const dd_meta_t *)t->items->elts;
    int total = t->items->nelts;
    size_t len;
    const unsigned char *more;

    for (int i = total - n; i < total; i++)
        t->filter |= dd_key_bit(m[i].key, m[i].klen ? m[i].klen : strlen(m[i].key));
    if (t->stale)
        return;
    more = dd_encode_entries(t->pool, m + total - n, n, 0, &len);
    if (!more) {
        t->stale = 1;
        t->run = NULL;
        return;
    }
    if (t->cap - t->encoded.len < len) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        unsigned char *grown;
        while (cap - t->encoded.len < len)
            cap *= 2;
        grown = apr_palloc(t->pool, cap);
        if (t->encoded.len)
            memcpy(grown, t->encoded.bytes, t->encoded.len);
        t->encoded.bytes = grown;
        t->cap = cap;
    }
    memcpy((unsigned char *)t->encoded.bytes + t->encoded.len, more, len);
    t->encoded.len += len;
    t->encoded.items = m; /* the array may have moved */
    t->encoded.n = total;
    t->encoded.keys = t->filter;
    t->run = &t->encoded;
}

static dd_tagset_t *tagset_sized(apr_pool_t *p, int n)
{
    dd_tagset_t *t = apr_pcalloc(p, sizeof(*t));
    t->pool = p;
    t->items = apr_array_make(p, n > 0 ? n : 4, sizeof(dd_meta_t));
    t->index = apr_hash_make(p);
    return t;
}

dd_tagset_t *dd_tagset_make(apr_pool_t *p)
{
    return tagset_sized(p, 4);
}

/* Returns 1 when the key is new (appended), 0 when its value was replaced. */
static int tagset_put_meta(dd_tagset_t *t, const dd_meta_t *m)
{
    intptr_t at = (intptr_t)apr_hash_get(t->index, m->key, APR_HASH_KEY_STRING);
    if (at) {
        ((dd_meta_t *)t->items->elts)[at - 1] = *m;
        return 0;
    }
    *(dd_meta_t *)apr_array_push(t->items) = *m;
    apr_hash_set(t->index, m->key, APR_HASH_KEY_STRING, (void *)(intptr_t)t->items->nelts);
    return 1;
}

void dd_tagset_put(dd_tagset_t *t, const char *key, const char *value)
{
    dd_meta_t m = {key, value, 0, 0};
    dd_meta_measure(&m);
    if (tagset_put_meta(t, &m)) {
        tagset_encode_last(t, 1);
    } else {
        t->stale = 1;
        t->run = NULL;
    }
}

const dd_tagset_t *dd_tagset_merge(apr_pool_t *p, const dd_tagset_t *base, const dd_tagset_t *add)
{
    dd_tagset_t *t;
    if (!base || base->items->nelts == 0)
        return add ? add : base;
    if (!add || add->items->nelts == 0)
        return base;
    t = tagset_sized(p, base->items->nelts + add->items->nelts);
    for (int i = 0; i < base->items->nelts; i++)
        tagset_put_meta(t, &((const dd_meta_t *)base->items->elts)[i]);
    for (int i = 0; i < add->items->nelts; i++)
        tagset_put_meta(t, &((const dd_meta_t *)add->items->elts)[i]);
    tagset_encode_last(t, t->items->nelts);
    return t;
}

const char *dd_tagset_get(const dd_tagset_t *t, const char *key)
{
    intptr_t at = t ? (intptr_t)apr_hash_get(t->index, key, APR_HASH_KEY_STRING) : 0;
    return at ? ((const dd_meta_t *)t->items->elts)[at - 1].value : NULL;
}

const dd_meta_t *dd_tagset_items(const dd_tagset_t *t, int *n)
{
    *n = t ? t->items->nelts : 0;
    return t ? (const dd_meta_t *)t->items->elts : NULL;
}

void dd_span_apply_tagset(dd_span_t *s, const dd_tagset_t *t)
{
    const dd_meta_t *own = (const dd_meta_t *)s->meta->elts, *m;
    int n_own = s->meta->nelts, n, skip_n = 0;
    int skip_stack[32], *skip = skip_stack;

    m = dd_tagset_items(t, &n);
    if (n == 0)
        return;
    /* Usually none of the span's own keys is a configured one: the set goes in as its run,
     * encoded once. Only a key the filter lets through is looked up. */
    if (t->run) {
        int shadowed = 0;
        for (int i = 0; i < n_own && !shadowed; i++)
            shadowed = (t->filter &
                        dd_key_bit(own[i].key, own[i].klen ? own[i].klen : strlen(own[i].key))) &&
                       apr_hash_get(t->index, own[i].key, APR_HASH_KEY_STRING);
        if (!shadowed) {
            dd_span_add_run(s, t->run);
            return;
        }
    }
    /* The span's own tags (a few dozen) are looked up in the set; the configured tags that
     * they shadow are skipped. Positions are collected in increasing order, so one moving
     * cursor checks them while appending. */
    if (n_own > (int)(sizeof(skip_stack) / sizeof(skip_stack[0])))
        skip = apr_palloc(s->meta->pool, sizeof(*skip) * (size_t)n_own);
    for (int i = 0; i < n_own; i++) {
        intptr_t at = (intptr_t)apr_hash_get(t->index, own[i].key, APR_HASH_KEY_STRING);
        if (at) {
            int j = skip_n++;
            while (j > 0 && skip[j - 1] > (int)at - 1) { /* insertion sort: a handful */
                skip[j] = skip[j - 1];
                j--;
            }
            skip[j] = (int)at - 1;
        }
    }
    for (int i = 0, k = 0; i < n; i++) {
        if (k < skip_n && skip[k] == i) {
            k++;
            continue;
        }
        dd_span_add_meta_n(s, m[i].key, m[i].klen, m[i].value, m[i].vlen);
    }
}
