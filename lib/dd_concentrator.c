/* SPDX-License-Identifier: Apache-2.0 */
/* dd_concentrator.c - client-side APM stats: the hand-over ring, the 10 s buckets and their
 * bounded key tables, and the ClientStatsPayload encoding (msgpack, field names as the
 * agent's msgp code reads pkg/proto/datadog/trace/stats.proto).
 *
 * Memory: the ring is allocated once (ring_items fixed-size records). Each open bucket (at
 * most DD_CS_MAX_BUCKETS) has a table of 2 * max_keys slots and at most max_keys groups; a
 * group's two sketches are each at most DD_SKETCH_MAX_BINS * 4 bytes, and in practice a few
 * hundred bytes (durations of one endpoint span a few powers of ten at most).
 */
#include "dd_concentrator.h"

#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "dd_sketch.h"

#define DD_CACHE_LINE 64

/* --- the ring: request threads -> flusher ---------------------------------------------------
 *
 * A Vyukov bounded ring as dd_queue's, with the records in the cells, so a push allocates
 * nothing. For the cell at index pos & mask, seq == pos: free for the producer that claims
 * pos; seq == pos + 1: holds the record of pos, for the consumer; seq == pos + capacity:
 * freed, for position pos + capacity. Producers claim pos by CAS on enqueue_pos, write the
 * record, then store seq = pos + 1 (release); the consumer loads seq (acquire), reads, stores
 * seq = pos + capacity (release), which the next producer of that cell loads (acquire). A full
 * ring (seq < pos) refuses the push: the caller counts the record as dropped. */
typedef struct {
    atomic_size_t seq;
    dd_cs_span_t rec;
} cell_t;

typedef struct group {
    dd_cs_span_t key; /* the key fields; end_ns, duration, error and top_level unused */
    uint64_t hash;
    uint64_t hits, errors, top_level_hits, duration;
    dd_sketch_t ok, err;
} group_t;

typedef struct {
    int64_t start; /* ns, a multiple of DD_CS_BUCKET_NS; 0: the slot is free */
    group_t **slots;
    size_t nkeys;
} bucket_t;

struct dd_concentrator {
    alignas(DD_CACHE_LINE) atomic_size_t enqueue_pos;
    alignas(DD_CACHE_LINE) size_t dequeue_pos; /* the consumer's alone */
    alignas(DD_CACHE_LINE) size_t mask;
    cell_t *cells;
    /* the flusher thread's alone */
    size_t max_keys, nslots;
    bucket_t buckets[DD_CS_MAX_BUCKETS];
    int64_t flushed_until; /* spans of buckets before this go to the bucket that starts here */
    group_t *last;         /* the group the last span went to (in last_bucket), or NULL */
    bucket_t *last_bucket;
    uint64_t sequence;
    char *service, *lang, *tracer_version, *runtime_id, *hostname;
    dd_stats_t *stats;
};

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

dd_concentrator_t *dd_cs_create(const dd_cs_conf_t *conf)
{
    dd_concentrator_t *c;
    size_t cap = 2;

    if (!conf || !conf->stats || conf->ring_items < 2 || conf->max_keys < 1)
        return NULL;
    while (cap < conf->ring_items)
        cap *= 2;
    c = aligned_alloc(DD_CACHE_LINE,
                      (sizeof(*c) + DD_CACHE_LINE - 1) / DD_CACHE_LINE * DD_CACHE_LINE);
    if (!c)
        return NULL;
    memset(c, 0, sizeof(*c));
    c->cells = calloc(cap, sizeof(*c->cells));
    c->mask = cap - 1;
    c->max_keys = conf->max_keys;
    c->nslots = 16;
    while (c->nslots < 2 * c->max_keys)
        c->nslots *= 2;
    c->stats = conf->stats;
    c->service = dup_or_empty(conf->service);
    c->lang = dup_or_empty(conf->lang);
    c->tracer_version = dup_or_empty(conf->tracer_version);
    c->runtime_id = dup_or_empty(conf->runtime_id);
    c->hostname = dup_or_empty(conf->hostname);
    if (!c->cells || !c->service || !c->lang || !c->tracer_version || !c->runtime_id ||
        !c->hostname) {
        dd_cs_destroy(c);
        return NULL;
    }
    for (size_t i = 0; i < cap; i++)
        atomic_init(&c->cells[i].seq, i);
    atomic_init(&c->enqueue_pos, 0);
    return c;
}

static void bucket_free(dd_concentrator_t *c, bucket_t *b)
{
    for (size_t i = 0; b->slots && i < c->nslots; i++) {
        group_t *g = b->slots[i];
        if (g) {
            dd_sketch_free(&g->ok);
            dd_sketch_free(&g->err);
            free(g);
        }
    }
    free(b->slots);
    memset(b, 0, sizeof(*b));
}

void dd_cs_destroy(dd_concentrator_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < DD_CS_MAX_BUCKETS; i++)
        bucket_free(c, &c->buckets[i]);
    free(c->cells);
    free(c->service);
    free(c->lang);
    free(c->tracer_version);
    free(c->runtime_id);
    free(c->hostname);
    free(c);
}

size_t dd_cs_push(dd_concentrator_t *c, const dd_cs_span_t *spans, size_t n)
{
    size_t done = 0;

    for (; done < n; done++) {
        size_t pos = atomic_load_explicit(&c->enqueue_pos, memory_order_relaxed);
        cell_t *cell;
        for (;;) {
            size_t seq;
            cell = &c->cells[pos & c->mask];
            seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
            if (seq == pos) {
                if (atomic_compare_exchange_weak_explicit(
                        &c->enqueue_pos, &pos, pos + 1, memory_order_relaxed, memory_order_relaxed))
                    break;
            } else if ((intptr_t)(seq - pos) < 0) {
                cell = NULL; /* full */
                break;
            } else {
                pos = atomic_load_explicit(&c->enqueue_pos, memory_order_relaxed);
            }
        }
        if (!cell)
            break;
        cell->rec = spans[done];
        atomic_store_explicit(&cell->seq, pos + 1, memory_order_release);
    }
    if (done < n)
        dd_stats_add(&c->stats->cstats_spans_dropped, n - done);
    return done;
}

size_t dd_cs_pending(const dd_concentrator_t *c)
{
    size_t e = atomic_load_explicit(&((dd_concentrator_t *)c)->enqueue_pos, memory_order_relaxed);
    size_t d = c->dequeue_pos; /* racy read of the consumer's index: an estimate */
    return e - d > c->mask + 1 ? c->mask + 1 : e - d;
}

size_t dd_cs_ring_items(const dd_concentrator_t *c)
{
    return c->mask + 1;
}

size_t dd_cs_drain(dd_concentrator_t *c)
{
    size_t n = 0;
    for (;;) {
        cell_t *cell = &c->cells[c->dequeue_pos & c->mask];
        size_t seq = atomic_load_explicit(&cell->seq, memory_order_acquire);
        if (seq != c->dequeue_pos + 1)
            return n; /* empty (or the next producer has not published yet) */
        dd_cs_add(c, &cell->rec);
        atomic_store_explicit(&cell->seq, c->dequeue_pos + c->mask + 1, memory_order_release);
        c->dequeue_pos++;
        n++;
    }
}

/* --- from a trace ------------------------------------------------------------------------ */

static void copy_cut(char *dst, size_t max, const char *src)
{
    size_t n = src ? strnlen(src, max) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

typedef struct {
    const char *kind, *env, *version;
    uint32_t status;
} tags_t;

/* Is m's key lit (n bytes)? With the key's length known (a literal key), without strcmp. */
static int key_is(const dd_meta_t *m, const char *lit, uint32_t n)
{
    return m->klen ? m->klen == n && memcmp(m->key, lit, n) == 0 : strcmp(m->key, lit) == 0;
}

/* http.status_code's digits (the module writes them); 0 for anything else. */
static uint32_t status_of(const char *v)
{
    uint32_t n = 0;
    for (int i = 0; i < 4 && v[i] >= '0' && v[i] <= '9'; i++)
        n = n * 10 + (uint32_t)(v[i] - '0');
    return n;
}

static int span_counts(const dd_span_t *s, const dd_span_t *parent_in_chunk, tags_t *t, int *top)
{
    const dd_meta_t *m = (const dd_meta_t *)s->meta->elts;
    double measured = 0;

    for (int i = 0; i < s->meta->nelts; i++) { /* one pass for all the tags */
        const char k = m[i].key[0];
        if (k == 's' && key_is(&m[i], DD_LIT("span.kind")))
            t->kind = m[i].value;
        else if (k == 'h' && key_is(&m[i], DD_LIT("http.status_code")))
            t->status = status_of(m[i].value);
        else if (k == 'e' && key_is(&m[i], DD_LIT("env")))
            t->env = m[i].value;
        else if (k == 'v' && key_is(&m[i], DD_LIT("version")))
            t->version = m[i].value;
    }
    *top = !parent_in_chunk || !s->service || !parent_in_chunk->service ||
           strcmp(s->service, parent_in_chunk->service) != 0;
    if (*top)
        return 1;
    if (dd_span_get_metric(s, "_dd.measured", &measured) && measured == 1)
        return 1;
    return t->kind && (strcmp(t->kind, "server") == 0 || strcmp(t->kind, "client") == 0 ||
                       strcmp(t->kind, "producer") == 0 || strcmp(t->kind, "consumer") == 0);
}

static size_t from_span(const dd_span_t *s, const dd_span_t *parent_in_chunk, const char *env,
                        const char *version, const char *origin, dd_cs_span_t *o)
{
    tags_t t = {NULL, env, version, 0}; /* the span's own env and version tags win */
    int top;

    if (!span_counts(s, parent_in_chunk, &t, &top))
        return 0;
    copy_cut(o->service, DD_CS_SERVICE_MAX, s->service);
    copy_cut(o->name, DD_CS_NAME_MAX, s->name);
    copy_cut(o->resource, DD_CS_RESOURCE_MAX, s->resource);
    copy_cut(o->type, DD_CS_TYPE_MAX, s->type);
    copy_cut(o->span_kind, DD_CS_KIND_MAX, t.kind);
    copy_cut(o->env, DD_CS_ENV_MAX, t.env);
    copy_cut(o->version, DD_CS_VERSION_MAX, t.version);
    o->http_status = t.status;
    o->error = s->error != 0;
    o->top_level = (uint8_t)top;
    o->is_trace_root = s->parent_id == 0;
    o->synthetics = origin && strncmp(origin, "synthetics", 10) == 0;
    o->end_ns = s->start + s->duration;
    o->duration = s->duration;
    return 1;
}

size_t dd_cs_from_trace(const dd_trace_t *t, const char *env, const char *version,
                        dd_cs_span_t out[2])
{
    size_t n = 0;
    const char *origin = t->parent.origin;
    if (t->inferred)
        n += from_span(t->inferred, NULL, env, version, origin, &out[n]);
    n += from_span(t->server, t->inferred, env, version, origin, &out[n]);
    return n;
}

/* --- aggregation ------------------------------------------------------------------------- */

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (h ^ 0xff) * 1099511628211ULL; /* a separator: ("ab","c") != ("a","bc") */
}

static uint64_t key_hash(const dd_cs_span_t *s)
{
    uint64_t h = 14695981039346656037ULL;
    h = fnv(h, s->service);
    h = fnv(h, s->name);
    h = fnv(h, s->resource);
    h = fnv(h, s->type);
    h = fnv(h, s->span_kind);
    h = fnv(h, s->env);
    h = fnv(h, s->version);
    h = (h ^ s->http_status) * 1099511628211ULL;
    h = (h ^ (uint64_t)(s->synthetics | s->is_trace_root << 1)) * 1099511628211ULL;
    return h;
}

static int key_eq(const dd_cs_span_t *a, const dd_cs_span_t *b)
{
    return a->http_status == b->http_status && a->synthetics == b->synthetics &&
           a->is_trace_root == b->is_trace_root && strcmp(a->service, b->service) == 0 &&
           strcmp(a->name, b->name) == 0 && strcmp(a->resource, b->resource) == 0 &&
           strcmp(a->type, b->type) == 0 && strcmp(a->span_kind, b->span_kind) == 0 &&
           strcmp(a->env, b->env) == 0 && strcmp(a->version, b->version) == 0;
}

/* The agent's nsTimestampToFloat: durations keep 10 bits of mantissa before the sketch. */
static double trim_ns(int64_t ns)
{
    double d = (double)ns;
    uint64_t b;
    memcpy(&b, &d, sizeof(b));
    b &= 0xfffff80000000000ULL;
    memcpy(&d, &b, sizeof(d));
    return d;
}

static bucket_t *bucket_for(dd_concentrator_t *c, int64_t start)
{
    bucket_t *free_slot = NULL;
    for (int i = 0; i < DD_CS_MAX_BUCKETS; i++) {
        if (c->buckets[i].slots && c->buckets[i].start == start)
            return &c->buckets[i];
        if (!c->buckets[i].slots && !free_slot)
            free_slot = &c->buckets[i];
    }
    if (!free_slot)
        return NULL;
    free_slot->slots = calloc(c->nslots, sizeof(*free_slot->slots));
    if (!free_slot->slots)
        return NULL;
    free_slot->start = start;
    free_slot->nkeys = 0;
    return free_slot;
}

void dd_cs_add(dd_concentrator_t *c, const dd_cs_span_t *s)
{
    int64_t start = s->end_ns - s->end_ns % DD_CS_BUCKET_NS;
    uint64_t h;
    size_t i;
    bucket_t *b;
    group_t *g;

    if (start < c->flushed_until)
        start = c->flushed_until; /* late: its bucket is gone, the oldest open one takes it */
    if (c->last && c->last_bucket->start == start && key_eq(&c->last->key, s)) {
        g = c->last; /* the same key as the span before (a burst of one endpoint): no hash */
        goto count;
    }
    if (!(b = bucket_for(c, start))) {
        dd_stats_add(&c->stats->cstats_spans_dropped, 1);
        return;
    }
    h = key_hash(s);
    for (i = h & (c->nslots - 1); (g = b->slots[i]) != NULL; i = (i + 1) & (c->nslots - 1))
        if (g->hash == h && key_eq(&g->key, s))
            break;
    if (!g) {
        if (b->nkeys >= c->max_keys || !(g = calloc(1, sizeof(*g)))) {
            dd_stats_add(&c->stats->cstats_keys_dropped, 1);
            return;
        }
        g->key = *s;
        g->hash = h;
        b->slots[i] = g;
        b->nkeys++;
    }
    c->last = g;
    c->last_bucket = b;
count:
    g->hits++;
    g->top_level_hits += s->top_level;
    g->duration += (uint64_t)(s->duration > 0 ? s->duration : 0);
    if (s->error) {
        g->errors++;
        dd_sketch_add(&g->err, trim_ns(s->duration));
    } else {
        dd_sketch_add(&g->ok, trim_ns(s->duration));
    }
}

size_t dd_cs_buckets(const dd_concentrator_t *c)
{
    size_t n = 0;
    for (int i = 0; i < DD_CS_MAX_BUCKETS; i++)
        n += c->buckets[i].slots != NULL;
    return n;
}

size_t dd_cs_keys(const dd_concentrator_t *c)
{
    size_t n = 0;
    for (int i = 0; i < DD_CS_MAX_BUCKETS; i++)
        n += c->buckets[i].nkeys;
    return n;
}

/* --- the payload ------------------------------------------------------------------------- */

static void pk_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pk_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    pk_str(pk, k);
    pk_str(pk, v);
}

static void pk_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    pk_str(pk, k);
    msgpack_pack_uint64(pk, v);
}

static void pk_sketch(msgpack_packer *pk, const char *k, const dd_sketch_t *s)
{
    size_t len = 0;
    unsigned char *pb = dd_sketch_encode(s, &len);
    pk_str(pk, k);
    msgpack_pack_bin(pk, pb ? len : 0);
    msgpack_pack_bin_body(pk, pb ? (const char *)pb : "", pb ? len : 0);
    free(pb);
}

static int same_pair(const group_t *g, const char *env, const char *version)
{
    return strcmp(g->key.env, env) == 0 && strcmp(g->key.version, version) == 0;
}

static void pack_group(msgpack_packer *pk, const group_t *g)
{
    msgpack_pack_map(pk, 16);
    pk_kv_str(pk, "Service", g->key.service);
    pk_kv_str(pk, "Name", g->key.name);
    pk_kv_str(pk, "Resource", g->key.resource);
    pk_kv_u64(pk, "HTTPStatusCode", g->key.http_status);
    pk_kv_str(pk, "Type", g->key.type);
    pk_kv_str(pk, "DBType", "");
    pk_kv_u64(pk, "Hits", g->hits);
    pk_kv_u64(pk, "Errors", g->errors);
    pk_kv_u64(pk, "Duration", g->duration);
    pk_sketch(pk, "OkSummary", &g->ok);
    pk_sketch(pk, "ErrorSummary", &g->err);
    pk_str(pk, "Synthetics");
    if (g->key.synthetics)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    pk_kv_u64(pk, "TopLevelHits", g->top_level_hits);
    pk_kv_str(pk, "SpanKind", g->key.span_kind);
    pk_str(pk, "PeerTags"); /* the module's spans are server spans: peer tags are for clients */
    msgpack_pack_array(pk, 0);
    pk_kv_u64(pk, "IsTraceRoot", g->key.is_trace_root ? 1 : 2); /* Trilean TRUE / FALSE */
}

/* One ClientStatsPayload: the groups of env / version in the buckets marked in due. */
static int send_pair(dd_concentrator_t *c, const int *due, const char *env, const char *version,
                     dd_cs_send_fn send, void *ctx)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    size_t nb = 0;
    int rc;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    for (int i = 0; i < DD_CS_MAX_BUCKETS; i++)
        for (size_t j = 0; due[i] && j < c->nslots; j++)
            if (c->buckets[i].slots[j] && same_pair(c->buckets[i].slots[j], env, version)) {
                nb++;
                break;
            }
    msgpack_pack_map(&pk, 9);
    pk_kv_str(&pk, "Hostname", c->hostname);
    pk_kv_str(&pk, "Env", env);
    pk_kv_str(&pk, "Version", version);
    pk_str(&pk, "Stats");
    msgpack_pack_array(&pk, nb);
    for (int i = 0; i < DD_CS_MAX_BUCKETS; i++) {
        const bucket_t *b = &c->buckets[i];
        size_t ng = 0;
        if (!due[i])
            continue;
        for (size_t j = 0; j < c->nslots; j++)
            ng += b->slots[j] && same_pair(b->slots[j], env, version);
        if (!ng)
            continue;
        msgpack_pack_map(&pk, 3);
        pk_kv_u64(&pk, "Start", (uint64_t)b->start);
        pk_kv_u64(&pk, "Duration", (uint64_t)DD_CS_BUCKET_NS);
        pk_str(&pk, "Stats");
        msgpack_pack_array(&pk, ng);
        for (size_t j = 0; j < c->nslots; j++)
            if (b->slots[j] && same_pair(b->slots[j], env, version))
                pack_group(&pk, b->slots[j]);
    }
    pk_kv_str(&pk, "Lang", c->lang);
    pk_kv_str(&pk, "TracerVersion", c->tracer_version);
    pk_kv_str(&pk, "RuntimeID", c->runtime_id);
    pk_kv_u64(&pk, "Sequence", ++c->sequence);
    pk_kv_str(&pk, "Service", c->service);
    rc = sb.data ? send(ctx, sb.data, sb.size) : -1;
    msgpack_sbuffer_destroy(&sb);
    dd_stats_add(rc == 0 ? &c->stats->cstats_payloads_sent : &c->stats->cstats_payloads_failed, 1);
    return rc == 0;
}

/* Has an earlier group of the due buckets (before bucket bi, slot sj) the same env / version? */
static int pair_seen(const dd_concentrator_t *c, const int *due, int bi, size_t sj,
                     const group_t *g)
{
    for (int i = 0; i <= bi; i++) {
        size_t end = i == bi ? sj : c->nslots;
        for (size_t j = 0; due[i] && j < end; j++)
            if (c->buckets[i].slots[j] &&
                same_pair(c->buckets[i].slots[j], g->key.env, g->key.version))
                return 1;
    }
    return 0;
}

size_t dd_cs_flush(dd_concentrator_t *c, int64_t now_ns, int force, dd_cs_send_fn send, void *ctx)
{
    int due[DD_CS_MAX_BUCKETS] = {0}, any = 0;
    size_t sent = 0;

    for (int i = 0; i < DD_CS_MAX_BUCKETS; i++) {
        bucket_t *b = &c->buckets[i];
        due[i] = b->slots && (force || now_ns >= b->start + DD_CS_BUCKET_NS);
        any |= due[i];
        if (due[i] && b->start + DD_CS_BUCKET_NS > c->flushed_until)
            c->flushed_until = b->start + DD_CS_BUCKET_NS;
    }
    if (!any)
        return 0;
    c->last = NULL; /* its bucket may be about to go */
    c->last_bucket = NULL;
    /* One payload per env and version (the agent aggregates payloads on them); usually one.
     * A pair is sent where its first group is found. */
    for (int i = 0; i < DD_CS_MAX_BUCKETS; i++)
        for (size_t j = 0; due[i] && j < c->nslots; j++) {
            const group_t *g = c->buckets[i].slots[j];
            if (g && !pair_seen(c, due, i, j, g))
                sent += send_pair(c, due, g->key.env, g->key.version, send, ctx);
        }
    for (int i = 0; i < DD_CS_MAX_BUCKETS; i++)
        if (due[i]) {
            dd_stats_add(&c->stats->cstats_buckets, 1);
            bucket_free(c, &c->buckets[i]);
        }
    return sent;
}
