/* dd_span.c - span creation and tag lists.
 *
 * Tags live in small arrays searched linearly: a span has a couple of dozen tags at most, and
 * a linear scan of pointers is faster than hashing at that size and keeps insertion order
 * (which makes payloads stable and easy to read in tests).
 */
#include "dd_span.h"
#include "dd_encode.h"

#include <string.h>

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
    s->type = "web";
    b->meta = (apr_array_header_t){p, sizeof(dd_meta_t), 0, META_SLOTS, (char *)b->meta_slots};
    b->metrics =
        (apr_array_header_t){p, sizeof(dd_metric_t), 0, METRIC_SLOTS, (char *)b->metric_slots};
    s->meta = &b->meta;
    s->metrics = &b->metrics;
    return s;
}

void dd_span_put_meta(dd_span_t *s, const dd_meta_t *tag)
{
    dd_meta_t *m = (dd_meta_t *)s->meta->elts;
    for (int i = 0; i < s->meta->nelts; i++) {
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
        *(dd_meta_t *)apr_array_push(s->meta) = *tag;
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
    for (int i = 0; i < s->meta->nelts; i++)
        if (same_key(m[i].key, key))
            return m[i].value;
    return NULL;
}

void dd_span_set_metric(dd_span_t *s, const char *key, double value)
{
    dd_metric_t *m = (dd_metric_t *)s->metrics->elts;
    for (int i = 0; i < s->metrics->nelts; i++) {
        if (same_key(m[i].key, key)) {
            m[i].value = value;
            return;
        }
    }
    dd_metric_t *n = apr_array_push(s->metrics);
    n->key = key;
    n->value = value;
}

int dd_span_get_metric(const dd_span_t *s, const char *key, double *value)
{
    const dd_metric_t *m = (const dd_metric_t *)s->metrics->elts;
    for (int i = 0; i < s->metrics->nelts; i++) {
        if (same_key(m[i].key, key)) {
            *value = m[i].value;
            return 1;
        }
    }
    return 0;
}
