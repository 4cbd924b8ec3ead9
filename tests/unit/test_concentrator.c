/* SPDX-License-Identifier: Apache-2.0 */
/* test_concentrator.c - unit tests for lib/dd_concentrator.c: which spans of a trace count
 * (top-level, measured, span kind), aggregation on the key, 10 s buckets and late spans, the
 * cap on keys, ok / error summaries, the ring's bound, and the payload decoded with msgpack-c
 * (field names as the agent reads them). */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <msgpack.h>

#include "dd_concentrator.h"
#include "dd_sketch.h"
#include "unit.h"

#define S 1000000000LL
#define T0 (1700000000LL * S) /* a multiple of 10 s */

static apr_pool_t *pool;
static dd_stats_t stats;

static dd_concentrator_t *make(size_t ring, size_t keys)
{
    dd_cs_conf_t conf = {.ring_items = ring,
                         .max_keys = keys,
                         .service = "svc",
                         .lang = "c",
                         .tracer_version = "1.2.3",
                         .runtime_id = "rid",
                         .stats = &stats};
    memset(&stats, 0, sizeof(stats));
    return dd_cs_create(&conf);
}

static dd_cs_span_t span(const char *resource, uint32_t status, int error, int64_t end,
                         int64_t duration)
{
    dd_cs_span_t s;
    memset(&s, 0, sizeof(s));
    strcpy(s.service, "svc");
    strcpy(s.name, "httpd.request");
    snprintf(s.resource, sizeof(s.resource), "%s", resource);
    strcpy(s.type, "web");
    strcpy(s.span_kind, "server");
    strcpy(s.env, "prod");
    s.http_status = status;
    s.error = (uint8_t)error;
    s.top_level = 1;
    s.is_trace_root = 1;
    s.end_ns = end;
    s.duration = duration;
    return s;
}

/* --- the payload, decoded ------------------------------------------------------------------ */

static const msgpack_object *get(const msgpack_object *m, const char *key)
{
    if (!m || m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == strlen(key) &&
            memcmp(k->via.str.ptr, key, k->via.str.size) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

static uint64_t get_u(const msgpack_object *m, const char *key)
{
    const msgpack_object *v = get(m, key);
    return v && v->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? v->via.u64 : (uint64_t)-1;
}

static int str_is(const msgpack_object *m, const char *key, const char *want)
{
    const msgpack_object *v = get(m, key);
    return v && v->type == MSGPACK_OBJECT_STR && v->via.str.size == strlen(want) &&
           memcmp(v->via.str.ptr, want, v->via.str.size) == 0;
}

/* The total count in a DDSketch protobuf (contiguousBinCounts + zeroCount). */
static double pb_varint(const unsigned char **p)
{
    uint64_t v = 0;
    for (int s = 0;; s += 7) {
        unsigned char b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80))
            return (double)v;
    }
}

static double f64(const unsigned char *p)
{
    uint64_t b = 0;
    double d;
    for (int i = 0; i < 8; i++)
        b |= (uint64_t)p[i] << (8 * i);
    memcpy(&d, &b, 8);
    return d;
}

static double sketch_count(const msgpack_object *bin)
{
    const unsigned char *p = (const unsigned char *)bin->via.bin.ptr, *end = p + bin->via.bin.size;
    double n = 0;
    while (p < end) {
        unsigned key = (unsigned)pb_varint(&p);
        if (key == (1 << 3 | 2)) {
            size_t skip = (size_t)pb_varint(&p);
            p += skip;
        } else if (key == (2 << 3 | 2)) {
            size_t store = (size_t)pb_varint(&p);
            const unsigned char *se = p + store;
            p++; /* contiguousBinCounts' key */
            size_t len = (size_t)pb_varint(&p);
            for (size_t i = 0; i < len; i += 8)
                n += f64(p + i);
            p = se;
        } else if (key == (4 << 3 | 1)) {
            n += f64(p);
            p += 8;
        } else {
            return -1;
        }
    }
    return n;
}

typedef struct {
    int calls;
    int fail;
    msgpack_unpacked msg[8];
    char *body[8]; /* the objects point into the bytes: kept until sink_done */
} sink_t;

static int sink(void *ctx, const char *body, size_t len)
{
    sink_t *k = ctx;
    size_t off = 0;
    if (k->calls < 8) {
        k->body[k->calls] = malloc(len);
        memcpy(k->body[k->calls], body, len);
        msgpack_unpacked_init(&k->msg[k->calls]);
        CHECK(msgpack_unpack_next(&k->msg[k->calls], k->body[k->calls], len, &off) ==
              MSGPACK_UNPACK_SUCCESS);
        CHECK(off == len);
    }
    k->calls++;
    return k->fail ? -1 : 0;
}

static void sink_done(sink_t *k)
{
    for (int i = 0; i < k->calls && i < 8; i++) {
        msgpack_unpacked_destroy(&k->msg[i]);
        free(k->body[i]);
    }
    memset(k, 0, sizeof(*k));
}

/* The group of resource in bucket b of payload p, or NULL. */
static const msgpack_object *group(const msgpack_object *p, uint32_t b, const char *resource,
                                   uint64_t status)
{
    const msgpack_object *buckets = get(p, "Stats"), *gs;
    if (!buckets || buckets->type != MSGPACK_OBJECT_ARRAY || b >= buckets->via.array.size)
        return NULL;
    gs = get(&buckets->via.array.ptr[b], "Stats");
    for (uint32_t i = 0; gs && i < gs->via.array.size; i++)
        if (str_is(&gs->via.array.ptr[i], "Resource", resource) &&
            get_u(&gs->via.array.ptr[i], "HTTPStatusCode") == status)
            return &gs->via.array.ptr[i];
    return NULL;
}

/* --- tests --------------------------------------------------------------------------------- */

static void test_aggregation_and_payload(void)
{
    dd_concentrator_t *c = make(16, 100);
    sink_t k = {0};
    dd_cs_span_t s;

    for (int i = 0; i < 10; i++) {
        s = span("GET /a", 200, 0, T0 + 1 * S + i, 1000000 * (i + 1)); /* 1..10 ms */
        dd_cs_add(c, &s);
    }
    s = span("GET /a", 500, 1, T0 + 2 * S, 7000000);
    dd_cs_add(c, &s);
    s = span("GET /a", 500, 1, T0 + 3 * S, 9000000);
    s.top_level = 0;
    dd_cs_add(c, &s);
    CHECK(dd_cs_buckets(c) == 1);
    CHECK(dd_cs_keys(c) == 2);

    CHECK(dd_cs_flush(c, T0 + 9 * S, 0, sink, &k) == 0); /* the bucket is not over */
    CHECK(k.calls == 0);
    CHECK(dd_cs_flush(c, T0 + 10 * S, 0, sink, &k) == 1);
    CHECK(k.calls == 1);
    CHECK(dd_cs_buckets(c) == 0);
    CHECK_U64(dd_stats_get(&stats.cstats_payloads_sent), 1);
    CHECK_U64(dd_stats_get(&stats.cstats_buckets), 1);

    const msgpack_object *p = &k.msg[0].data;
    CHECK(str_is(p, "Env", "prod"));
    CHECK(str_is(p, "Version", ""));
    CHECK(str_is(p, "Lang", "c"));
    CHECK(str_is(p, "TracerVersion", "1.2.3"));
    CHECK(str_is(p, "RuntimeID", "rid"));
    CHECK(str_is(p, "Service", "svc"));
    CHECK(str_is(p, "Hostname", ""));
    CHECK_U64(get_u(p, "Sequence"), 1);
    CHECK_U64(get_u(&get(p, "Stats")->via.array.ptr[0], "Start"), T0);
    CHECK_U64(get_u(&get(p, "Stats")->via.array.ptr[0], "Duration"), 10 * S);

    const msgpack_object *ok = group(p, 0, "GET /a", 200), *err = group(p, 0, "GET /a", 500);
    CHECK(ok && err);
    if (ok && err) {
        CHECK_U64(get_u(ok, "Hits"), 10);
        CHECK_U64(get_u(ok, "Errors"), 0);
        CHECK_U64(get_u(ok, "TopLevelHits"), 10);
        CHECK_U64(get_u(ok, "Duration"), 55000000);
        CHECK_U64(get_u(ok, "IsTraceRoot"), 1);
        CHECK(str_is(ok, "Service", "svc") && str_is(ok, "Name", "httpd.request"));
        CHECK(str_is(ok, "Type", "web") && str_is(ok, "SpanKind", "server"));
        CHECK(get(ok, "Synthetics")->type == MSGPACK_OBJECT_BOOLEAN);
        CHECK(get(ok, "PeerTags")->type == MSGPACK_OBJECT_ARRAY);
        CHECK(sketch_count(get(ok, "OkSummary")) == 10);
        CHECK(sketch_count(get(ok, "ErrorSummary")) == 0);
        CHECK_U64(get_u(err, "Hits"), 2);
        CHECK_U64(get_u(err, "Errors"), 2);
        CHECK_U64(get_u(err, "TopLevelHits"), 1);
        CHECK(sketch_count(get(err, "OkSummary")) == 0);
        CHECK(sketch_count(get(err, "ErrorSummary")) == 2);
    }
    sink_done(&k);
    dd_cs_destroy(c);
}

static void test_buckets_and_late_spans(void)
{
    dd_concentrator_t *c = make(16, 100);
    sink_t k = {0};
    dd_cs_span_t s;

    s = span("GET /a", 200, 0, T0 + 5 * S, 1000);
    dd_cs_add(c, &s);
    s = span("GET /a", 200, 0, T0 + 15 * S, 1000);
    dd_cs_add(c, &s);
    CHECK(dd_cs_buckets(c) == 2);
    CHECK(dd_cs_flush(c, T0 + 12 * S, 0, sink, &k) == 1); /* the first only */
    CHECK(dd_cs_buckets(c) == 1);
    /* a late span of the flushed bucket goes to the next one */
    s = span("GET /a", 200, 0, T0 + 9 * S, 1000);
    dd_cs_add(c, &s);
    CHECK(dd_cs_buckets(c) == 1);
    CHECK(dd_cs_keys(c) == 1);
    CHECK(dd_cs_flush(c, T0 + 12 * S, 1, sink, &k) == 1); /* forced: child exit */
    CHECK(k.calls == 2);
    const msgpack_object *g = group(&k.msg[1].data, 0, "GET /a", 200);
    CHECK(g && get_u(g, "Hits") == 2);
    CHECK_U64(get_u(&get(&k.msg[1].data, "Stats")->via.array.ptr[0], "Start"), T0 + 10 * S);
    CHECK_U64(get_u(&k.msg[1].data, "Sequence"), 2);
    sink_done(&k);

    /* two env / version pairs: two payloads, each with its own groups */
    s = span("GET /a", 200, 0, T0 + 25 * S, 1000);
    dd_cs_add(c, &s);
    strcpy(s.env, "staging");
    dd_cs_add(c, &s);
    dd_cs_add(c, &s);
    CHECK(dd_cs_flush(c, T0 + 30 * S, 0, sink, &k) == 2);
    CHECK(k.calls == 2);
    CHECK(str_is(&k.msg[0].data, "Env", "prod") != str_is(&k.msg[1].data, "Env", "prod"));
    for (int i = 0; i < 2; i++) {
        g = group(&k.msg[i].data, 0, "GET /a", 200);
        CHECK(g && get_u(g, "Hits") == (str_is(&k.msg[i].data, "Env", "prod") ? 1u : 2u));
    }
    sink_done(&k);

    /* a failed send is counted, and the bucket is gone all the same (memory stays bounded) */
    s = span("GET /a", 200, 0, T0 + 35 * S, 1000);
    dd_cs_add(c, &s);
    k.fail = 1;
    CHECK(dd_cs_flush(c, T0 + 40 * S, 0, sink, &k) == 0);
    CHECK_U64(dd_stats_get(&stats.cstats_payloads_failed), 1);
    CHECK(dd_cs_buckets(c) == 0);
    sink_done(&k);
    dd_cs_destroy(c);
}

static void test_key_cap(void)
{
    dd_concentrator_t *c = make(16, 3);
    char res[32];
    for (int i = 0; i < 5; i++) {
        snprintf(res, sizeof(res), "GET /%d", i);
        dd_cs_span_t s = span(res, 200, 0, T0 + S, 1000);
        dd_cs_add(c, &s);
        dd_cs_add(c, &s); /* a known key still counts after the cap */
    }
    CHECK(dd_cs_keys(c) == 3);
    CHECK_U64(dd_stats_get(&stats.cstats_keys_dropped), 4);
    dd_cs_destroy(c);
}

static void test_ring(void)
{
    dd_concentrator_t *c = make(4, 100);
    dd_cs_span_t s[6];
    for (int i = 0; i < 6; i++)
        s[i] = span("GET /r", 200, 0, T0 + S, 1000);
    CHECK(dd_cs_ring_items(c) == 4);
    CHECK(dd_cs_push(c, s, 6) == 4);
    CHECK_U64(dd_stats_get(&stats.cstats_spans_dropped), 2);
    CHECK(dd_cs_pending(c) == 4);
    CHECK(dd_cs_drain(c) == 4);
    CHECK(dd_cs_pending(c) == 0);
    CHECK(dd_cs_push(c, s, 3) == 3); /* wrapped around */
    CHECK(dd_cs_drain(c) == 3);
    CHECK(dd_cs_keys(c) == 1);
    dd_cs_destroy(c);
}

/* Producers on four threads, the consumer draining meanwhile (run under ThreadSanitizer by
 * scripts/check.sh): a push that finds the ring full is counted and refused (the producer tries
 * again), every record that went in comes out, and only the four keys the producers wrote
 * come out (a torn record would make another). */
#define RING_THREADS 4
#define RING_PER_THREAD 20000
static atomic_size_t ring_pushed, ring_failed;
static atomic_int ring_done;
static dd_concentrator_t *ring_c;

static void *ring_producer(void *arg)
{
    dd_cs_span_t s = span("", 200, 0, T0 + S, 1000);
    size_t ok = 0, failed = 0;
    snprintf(s.resource, sizeof(s.resource), "GET /t%d", (int)(intptr_t)arg);
    while (ok < RING_PER_THREAD) { /* a full ring refuses: try again until each is in */
        if (dd_cs_push(ring_c, &s, 1) == 1)
            ok++;
        else
            failed++, sched_yield();
    }
    atomic_fetch_add(&ring_pushed, ok);
    atomic_fetch_add(&ring_failed, failed);
    atomic_fetch_add(&ring_done, 1);
    return NULL;
}

static void test_ring_threads(void)
{
    pthread_t t[RING_THREADS];
    size_t drained = 0;
    ring_c = make(256, 100);
    for (int i = 0; i < RING_THREADS; i++)
        pthread_create(&t[i], NULL, ring_producer, (void *)(intptr_t)i);
    while (atomic_load(&ring_done) < RING_THREADS)
        drained += dd_cs_drain(ring_c);
    for (int i = 0; i < RING_THREADS; i++)
        pthread_join(t[i], NULL);
    drained += dd_cs_drain(ring_c);
    CHECK_U64(drained, atomic_load(&ring_pushed));
    CHECK_U64(drained, (uint64_t)RING_THREADS * RING_PER_THREAD);
    CHECK_U64(dd_stats_get(&stats.cstats_spans_dropped), atomic_load(&ring_failed));
    CHECK_U64(dd_cs_keys(ring_c), RING_THREADS);
    dd_cs_destroy(ring_c);
}

static dd_span_t *mk(const char *service, const char *kind, uint64_t id, uint64_t parent)
{
    dd_span_t *s = dd_span_create(pool);
    s->service = service;
    s->name = "op";
    s->resource = "GET /x";
    s->span_id = id;
    s->parent_id = parent;
    s->start = T0;
    s->duration = 5000;
    if (kind)
        dd_span_set_meta(s, "span.kind", kind);
    dd_span_set_meta(s, "http.status_code", "404");
    return s;
}

static void test_from_trace(void)
{
    dd_trace_t t;
    dd_cs_span_t out[2];

    memset(&t, 0, sizeof(t));
    /* a gateway span and the server span in another service: both top-level */
    t.inferred = mk("gw.example.com", "server", 1, 0);
    t.server = mk("httpd", "server", 2, 1);
    CHECK(dd_cs_from_trace(&t, "prod", "v1", out) == 2);
    CHECK(out[0].top_level && out[1].top_level);
    CHECK(out[0].is_trace_root && !out[1].is_trace_root);
    CHECK(out[1].http_status == 404);
    CHECK_STR(out[1].env, "prod");
    CHECK_STR(out[1].version, "v1");
    CHECK_STR(out[0].service, "gw.example.com");
    CHECK(out[1].end_ns == T0 + 5000 && out[1].duration == 5000);

    /* same service: the server span is not top-level, but counts as a server span */
    t.inferred = mk("httpd", "server", 1, 0);
    CHECK(dd_cs_from_trace(&t, NULL, NULL, out) == 2);
    CHECK(out[0].top_level && !out[1].top_level);
    CHECK_STR(out[1].env, "");

    /* neither top-level nor of a counted kind: left out, unless measured */
    t.server = mk("httpd", "internal", 2, 1);
    CHECK(dd_cs_from_trace(&t, NULL, NULL, out) == 1);
    dd_span_set_metric(t.server, "_dd.measured", 1);
    CHECK(dd_cs_from_trace(&t, NULL, NULL, out) == 2);

    /* synthetics, an inbound parent (not a trace root), long strings cut to their bounds */
    t.inferred = NULL;
    t.server = mk("httpd", "server", 2, 77);
    t.parent.origin = "synthetics-browser";
    char *long_res = apr_pcalloc(pool, 1000);
    memset(long_res, 'r', 999);
    t.server->resource = long_res;
    CHECK(dd_cs_from_trace(&t, NULL, NULL, out) == 1);
    CHECK(out[0].top_level && !out[0].is_trace_root && out[0].synthetics);
    CHECK(strlen(out[0].resource) == DD_CS_RESOURCE_MAX);
}

static void test_quantiles_through_payload(void)
{
    /* what the agent would read back: the ok summary's p50 and p99 within the accuracy */
    dd_concentrator_t *c = make(16, 100);
    sink_t k = {0};
    for (int i = 1; i <= 1000; i++) {
        dd_cs_span_t s = span("GET /q", 200, 0, T0 + S, (int64_t)i * 100000); /* 0.1..100 ms */
        dd_cs_add(c, &s);
    }
    CHECK(dd_cs_flush(c, T0 + 10 * S, 0, sink, &k) == 1);
    const msgpack_object *g = group(&k.msg[0].data, 0, "GET /q", 200);
    CHECK(g != NULL);
    CHECK(sketch_count(get(g, "OkSummary")) == 1000);
    sink_done(&k);
    dd_cs_destroy(c);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    test_aggregation_and_payload();
    test_buckets_and_late_spans();
    test_key_cap();
    test_ring();
    test_ring_threads();
    test_from_trace();
    test_quantiles_through_payload();
    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
