/* SPDX-License-Identifier: Apache-2.0 */
/* test_encode.c - spans -> msgpack, decoded back with msgpack-c's unpacker. */
#include "unit.h"
#include "dd_encode.h"

#include <stdlib.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <msgpack.h>

static apr_pool_t *pool;

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *kv = &map->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
            memcmp(kv->key.via.str.ptr, key, kv->key.via.str.size) == 0)
            return &kv->val;
    }
    return NULL;
}

static int str_is(const msgpack_object *o, const char *s)
{
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

static void test_two_spans(void)
{
    dd_span_t *a = dd_span_create(pool), *b = dd_span_create(pool);
    char *out;
    size_t len;
    msgpack_unpacked u;

    a->trace_id = 0xFFFFFFFFFFFFFFF0ULL; /* >= 2^63 survives as unsigned */
    a->span_id = 7;
    a->parent_id = 0;
    a->name = "aws.apigateway";
    a->service = "example.com";
    a->resource = "GET /caf\xc3\xa9";
    a->start = 1736973768000000000LL;
    a->duration = 1234;
    a->error = 1;
    dd_span_set_meta(a, "component", "aws-apigateway");
    dd_span_set_meta(a, "http.status_code", "500");
    dd_span_set_metric_n(a, DD_LIT("_dd.inferred_span"), 1); /* known length */
    dd_span_set_metric(a, "_dd.agent_psr", 0.25);
    *b = *a;
    b->meta = apr_array_make(pool, 1, sizeof(dd_meta_t));
    b->metrics = apr_array_make(pool, 1, sizeof(dd_metric_t));
    b->span_id = 8;
    b->parent_id = 7;
    b->name = "httpd.request";
    b->duration = -5; /* never encoded negative */
    b->error = 0;

    dd_span_t *spans[] = {a, b};
    CHECK(dd_encode_chunk(spans, 2, &out, &len) == 0);
    msgpack_unpacked_init(&u);
    size_t off = 0;
    CHECK(msgpack_unpack_next(&u, out, len, &off) == MSGPACK_UNPACK_SUCCESS);
    CHECK(off == len); /* exactly one object, nothing trailing */
    CHECK(u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 2);
    if (u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.size == 2) {
        const msgpack_object *s0 = &u.data.via.array.ptr[0], *s1 = &u.data.via.array.ptr[1];
        CHECK(s0->type == MSGPACK_OBJECT_MAP && s0->via.map.size == 12);
        const msgpack_object *o = map_get(s0, "trace_id");
        CHECK(o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
              o->via.u64 == 0xFFFFFFFFFFFFFFF0ULL);
        o = map_get(s0, "span_id");
        CHECK(o && o->via.u64 == 7);
        o = map_get(s0, "parent_id");
        CHECK(o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 == 0);
        CHECK(str_is(map_get(s0, "name"), "aws.apigateway"));
        CHECK(str_is(map_get(s0, "service"), "example.com"));
        CHECK(str_is(map_get(s0, "resource"), "GET /caf\xc3\xa9"));
        CHECK(str_is(map_get(s0, "type"), "web"));
        o = map_get(s0, "start");
        CHECK(o && o->via.i64 == 1736973768000000000LL);
        o = map_get(s0, "duration");
        CHECK(o && o->via.i64 == 1234);
        o = map_get(s0, "error");
        CHECK(o && o->via.i64 == 1);
        const msgpack_object *meta = map_get(s0, "meta");
        CHECK(meta && meta->type == MSGPACK_OBJECT_MAP && meta->via.map.size == 2);
        CHECK(meta && str_is(map_get(meta, "component"), "aws-apigateway"));
        CHECK(meta && str_is(map_get(meta, "http.status_code"), "500"));
        const msgpack_object *metrics = map_get(s0, "metrics");
        CHECK(metrics && metrics->via.map.size == 2);
        o = metrics ? map_get(metrics, "_dd.agent_psr") : NULL;
        CHECK(o && o->type == MSGPACK_OBJECT_FLOAT64 && o->via.f64 == 0.25);
        o = metrics ? map_get(metrics, "_dd.inferred_span") : NULL; /* a key of known length */
        CHECK(o && o->type == MSGPACK_OBJECT_FLOAT64 && o->via.f64 == 1);
        o = map_get(s1, "parent_id");
        CHECK(o && o->via.u64 == 7);
        o = map_get(s1, "duration");
        CHECK(o && o->via.i64 == 0);
        meta = map_get(s1, "meta");
        CHECK(meta && meta->type == MSGPACK_OBJECT_MAP && meta->via.map.size == 0);
    }
    msgpack_unpacked_destroy(&u);
    free(out);
}

/* span_links as span.proto has them: two links, one with every optional field, one without. */
static void test_span_links(void)
{
    dd_span_t *a = dd_span_create(pool);
    apr_array_header_t *links = apr_array_make(pool, 2, sizeof(dd_span_link_t));
    apr_array_header_t *attrs = apr_array_make(pool, 2, sizeof(dd_meta_t));
    dd_span_link_t *l;
    char *out;
    size_t len, off = 0;
    msgpack_unpacked u;

    a->trace_id = 1;
    a->span_id = 2;
    a->name = "httpd.request";
    *(dd_meta_t *)apr_array_push(attrs) = (dd_meta_t){"reason", "terminated_context", 6, 18};
    *(dd_meta_t *)apr_array_push(attrs) = (dd_meta_t){"context_headers", "tracecontext", 0, 0};
    l = apr_array_push(links);
    *l = (dd_span_link_t){0xa3ce929d0e0e4736ULL,
                          0x4bf92f3577b34da6ULL,
                          0xFFFFFFFFFFFFFFFFULL,
                          "dd=s:2,foo=bar",
                          1,
                          attrs};
    l = apr_array_push(links);
    *l = (dd_span_link_t){9, 0, 10, NULL, -1, NULL};
    a->links = links;

    dd_span_t *spans[] = {a};
    CHECK(dd_encode_chunk(spans, 1, &out, &len) == 0);
    msgpack_unpacked_init(&u);
    CHECK(msgpack_unpack_next(&u, out, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len);
    const msgpack_object *s0 =
        u.data.type == MSGPACK_OBJECT_ARRAY ? &u.data.via.array.ptr[0] : NULL;
    CHECK(s0 && s0->via.map.size == 13);
    const msgpack_object *sl = s0 ? map_get(s0, "span_links") : NULL;
    CHECK(sl && sl->type == MSGPACK_OBJECT_ARRAY && sl->via.array.size == 2);
    if (sl && sl->type == MSGPACK_OBJECT_ARRAY && sl->via.array.size == 2) {
        const msgpack_object *l0 = &sl->via.array.ptr[0], *l1 = &sl->via.array.ptr[1], *o;
        CHECK(l0->type == MSGPACK_OBJECT_MAP && l0->via.map.size == 6);
        o = map_get(l0, "trace_id");
        CHECK(o && o->via.u64 == 0xa3ce929d0e0e4736ULL);
        o = map_get(l0, "trace_id_high");
        CHECK(o && o->via.u64 == 0x4bf92f3577b34da6ULL);
        o = map_get(l0, "span_id");
        CHECK(o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER &&
              o->via.u64 == 0xFFFFFFFFFFFFFFFFULL);
        CHECK(str_is(map_get(l0, "tracestate"), "dd=s:2,foo=bar"));
        o = map_get(l0, "flags");
        CHECK(o && o->via.u64 == 0x80000001ULL); /* bit 31: "flags are set" */
        o = map_get(l0, "attributes");
        CHECK(o && o->type == MSGPACK_OBJECT_MAP && o->via.map.size == 2);
        CHECK(o && str_is(map_get(o, "reason"), "terminated_context"));
        CHECK(o && str_is(map_get(o, "context_headers"), "tracecontext"));
        CHECK(l1->type == MSGPACK_OBJECT_MAP && l1->via.map.size == 3);
        o = map_get(l1, "trace_id_high");
        CHECK(o && o->via.u64 == 0);
        CHECK(map_get(l1, "flags") == NULL && map_get(l1, "tracestate") == NULL &&
              map_get(l1, "attributes") == NULL);
    }
    msgpack_unpacked_destroy(&u);
    free(out);

    /* an empty list is not sent */
    a->links = apr_array_make(pool, 1, sizeof(dd_span_link_t));
    CHECK(dd_encode_chunk(spans, 1, &out, &len) == 0);
    msgpack_unpacked_init(&u);
    off = 0;
    CHECK(msgpack_unpack_next(&u, out, len, &off) == MSGPACK_UNPACK_SUCCESS);
    CHECK(u.data.type == MSGPACK_OBJECT_ARRAY && u.data.via.array.ptr[0].via.map.size == 12);
    msgpack_unpacked_destroy(&u);
    free(out);
}

static void test_big_chunk(void)
{
    /* Bigger than the on-stack buffer: the heap path must give the same bytes. */
    dd_span_t *s = dd_span_create(pool);
    char *out;
    size_t len;
    msgpack_unpacked u;
    s->trace_id = s->span_id = 1;
    s->name = s->service = s->resource = "x";
    for (int i = 0; i < 200; i++)
        dd_span_set_meta(s, apr_psprintf(pool, "key.%d", i),
                         apr_psprintf(pool, "value-%d-%0100d", i, i));
    dd_span_t *spans[] = {s};
    CHECK(dd_encode_chunk(spans, 1, &out, &len) == 0);
    CHECK(len > 20000);
    msgpack_unpacked_init(&u);
    size_t off = 0;
    CHECK(msgpack_unpack_next(&u, out, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len);
    const msgpack_object *meta = map_get(&u.data.via.array.ptr[0], "meta");
    CHECK(meta && meta->via.map.size == 200);
    CHECK(meta &&
          str_is(map_get(meta, "key.199"), apr_psprintf(pool, "value-%d-%0100d", 199, 199)));
    msgpack_unpacked_destroy(&u);
    free(out);
}

static void test_control_characters(void)
{
    dd_span_t *s = dd_span_create(pool);
    char *out;
    size_t len;
    msgpack_unpacked u;
    s->trace_id = s->span_id = 1;
    s->name = "n";
    s->service = "svc";
    s->resource = "GET /a\nb";
    dd_span_set_meta(s, "x", "tab\tok, bell\a, del\x7f, cr\r");
    dd_span_t *spans[] = {s};
    CHECK(dd_encode_chunk(spans, 1, &out, &len) == 0);
    msgpack_unpacked_init(&u);
    size_t off = 0;
    CHECK(msgpack_unpack_next(&u, out, len, &off) == MSGPACK_UNPACK_SUCCESS && off == len);
    const msgpack_object *span = &u.data.via.array.ptr[0];
    CHECK(str_is(map_get(span, "resource"), "GET /a\\nb"));
    CHECK(str_is(map_get(map_get(span, "meta"), "x"), "tab\tok, bell\\u0007, del\\u007f, cr\\r"));
    CHECK(str_is(map_get(span, "service"), "svc"));
    msgpack_unpacked_destroy(&u);
    free(out);
}

/* The reference: msgpack-c's own msgpack_packer writing into an sbuffer, with the escape rule
 * applied byte by byte. dd_encode_chunk() must give exactly these bytes. */
static void ref_str(msgpack_packer *pk, const char *s)
{
    size_t n = s ? strlen(s) : 0, out = 0;
    char *esc = malloc(n * 6 + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            if (c == '\n' || c == '\r') {
                esc[out++] = '\\';
                esc[out++] = c == '\n' ? 'n' : 'r';
            } else {
                out += (size_t)sprintf(esc + out, "\\u%04x", c);
            }
        } else {
            esc[out++] = (char)c;
        }
    }
    msgpack_pack_str(pk, out);
    msgpack_pack_str_body(pk, esc, out);
    free(esc);
}

#define REF_KEY(pk, k) ref_str((pk), (k))

static void ref_span(msgpack_packer *pk, const dd_span_t *s)
{
    const dd_meta_t *meta = (const dd_meta_t *)s->meta->elts;
    const dd_metric_t *metrics = (const dd_metric_t *)s->metrics->elts;
    msgpack_pack_map(pk, 12);
    REF_KEY(pk, "trace_id");
    msgpack_pack_uint64(pk, s->trace_id);
    REF_KEY(pk, "span_id");
    msgpack_pack_uint64(pk, s->span_id);
    REF_KEY(pk, "parent_id");
    msgpack_pack_uint64(pk, s->parent_id);
    REF_KEY(pk, "name");
    ref_str(pk, s->name);
    REF_KEY(pk, "service");
    ref_str(pk, s->service);
    REF_KEY(pk, "resource");
    ref_str(pk, s->resource);
    REF_KEY(pk, "type");
    ref_str(pk, s->type);
    REF_KEY(pk, "start");
    msgpack_pack_int64(pk, s->start);
    REF_KEY(pk, "duration");
    msgpack_pack_int64(pk, s->duration < 0 ? 0 : s->duration);
    REF_KEY(pk, "error");
    msgpack_pack_int32(pk, s->error);
    REF_KEY(pk, "meta");
    msgpack_pack_map(pk, (size_t)s->meta->nelts);
    for (int i = 0; i < s->meta->nelts; i++) {
        ref_str(pk, meta[i].key);
        ref_str(pk, meta[i].value);
    }
    REF_KEY(pk, "metrics");
    msgpack_pack_map(pk, (size_t)s->metrics->nelts);
    for (int i = 0; i < s->metrics->nelts; i++) {
        ref_str(pk, metrics[i].key);
        msgpack_pack_double(pk, metrics[i].value);
    }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* A string whose length crosses msgpack's str header sizes and whose bytes mix ASCII, tab,
 * every control character, DEL, UTF-8 and raw high bytes, placed at every offset of a word. */
static const char *rnd_str(void)
{
    static const size_t lens[] = {0,  1,  7,  8,   9,   15,  16,   17,    31,    32,
                                  33, 63, 64, 255, 256, 257, 1000, 65535, 65536, 70000};
    size_t n = rnd() % 8 == 0 ? lens[rnd() % (sizeof(lens) / sizeof(lens[0]))] : rnd() % 48;
    unsigned kind = (unsigned)(rnd() % 4);
    char *s = apr_palloc(pool, n + 1);
    for (size_t i = 0; i < n; i++) {
        uint64_t r = rnd();
        if (kind == 0 || r % 16 != 0)
            s[i] = (char)(' ' + r % 95); /* printable, '~' included; DEL below */
        else
            s[i] = (char)(1 + (r >> 8) % 255); /* any byte but NUL */
    }
    s[n] = '\0';
    return s;
}

/* The msgpack_packer bytes of n entries of a meta (or metrics) array. */
static void ref_entries(msgpack_sbuffer *sb, const void *items, int n, int metrics)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    for (int i = 0; i < n; i++) {
        if (metrics) {
            ref_str(&pk, ((const dd_metric_t *)items)[i].key);
            msgpack_pack_double(&pk, ((const dd_metric_t *)items)[i].value);
        } else {
            ref_str(&pk, ((const dd_meta_t *)items)[i].key);
            ref_str(&pk, ((const dd_meta_t *)items)[i].value);
        }
    }
}

static int runs_checked, runs_same;

/* A run is checked on its own against msgpack_packer, then goes into the span. */
static const dd_run_t *checked(const dd_run_t *r)
{
    msgpack_sbuffer sb;
    if (!r)
        return NULL;
    msgpack_sbuffer_init(&sb);
    ref_entries(&sb, r->items, r->n, r->metrics);
    runs_checked++;
    runs_same += sb.size == r->len && memcmp(sb.data, r->bytes, r->len) == 0;
    msgpack_sbuffer_destroy(&sb);
    return r;
}

/* Random runs of meta and metrics (dd_run_t, the tags a configuration encodes once) among the
 * span's own tags, some of them changed afterwards (a tag replaced, removed, or written over
 * in the array): the encoder must copy the intact ones and write the others one by one, the
 * same bytes either way. Keys are fresh strings, so they are unique in the span. And name,
 * service and type known clean (dd_span_known_t), some of them no longer the span's. */
static void add_runs(apr_pool_t *p, dd_span_t *s)
{
    for (int k = (int)(rnd() % 4); k > 0; k--) {
        int n = 1 + (int)(rnd() % 8), metrics = rnd() % 3 == 0;
        dd_meta_t m[8];
        dd_metric_t x[8];
        for (int i = 0; i < n; i++) {
            m[i] = (dd_meta_t){apr_psprintf(p, "run.%d.%s", k, rnd_str()), rnd_str(), 0, 0};
            if (rnd() % 2)
                dd_meta_measure(&m[i]);
            x[i] = (dd_metric_t){m[i].key, (double)(int64_t)rnd() / (double)(rnd() | 1), m[i].klen};
        }
        dd_span_add_run(s, checked(metrics ? dd_run_make_metrics(p, x, n) : dd_run_make(p, m, n)));
        if (rnd() % 3 == 0) /* an own tag after it */
            dd_span_add_meta_n(s, apr_psprintf(p, "after.%d", k), 0, rnd_str(), 0);
        switch (rnd() % 8) {
        case 0: /* a tag of the run replaced */
            dd_span_set_meta(s, m[rnd() % (unsigned)n].key, rnd_str());
            break;
        case 1: /* one removed: the rest moves */
            dd_span_set_meta(s, m[rnd() % (unsigned)n].key, NULL);
            break;
        case 2: /* a metric of the run given another value */
            dd_span_set_metric(s, x[rnd() % (unsigned)n].key, 0.5);
            break;
        case 3: /* written over in the array itself */
            if (s->meta->nelts > 0)
                ((dd_meta_t *)s->meta->elts)[rnd() % (unsigned)s->meta->nelts].vlen = 0;
            break;
        default:
            break;
        }
    }
    if (rnd() % 2) {
        dd_span_known_t *k = apr_pcalloc(p, sizeof(*k));
        dd_meta_t m = {s->name, s->service, 0, 0}, t = {s->type, NULL, 0, 0};
        dd_meta_measure(&m);
        dd_meta_measure(&t);
        *k = (dd_span_known_t){s->name, s->service, s->type, m.klen, m.vlen, t.klen};
        if (rnd() % 4 == 0)
            s->name = rnd_str(); /* no longer the one measured */
        s->known = k;
    }
    if (rnd() % 2) { /* the resource measured (dd_span_t.resource_clean) */
        dd_meta_t r = {s->resource, NULL, 0, 0};
        dd_meta_measure(&r);
        s->resource_clean = s->resource;
        s->resource_len = r.klen;
        if (rnd() % 4 == 0)
            s->resource = rnd_str();
    }
}

static void test_same_bytes_as_msgpack_packer(void)
{
    int same = 0, runs = 3000;
    for (int r = 0; r < runs; r++) {
        apr_pool_t *p;
        apr_pool_create(&p, pool);
        apr_pool_t *saved = pool;
        pool = p;
        size_t n = 1 + rnd() % 3;
        dd_span_t *spans[3];
        for (size_t i = 0; i < n; i++) {
            dd_span_t *s = dd_span_create(p);
            s->trace_id = rnd() >> (rnd() % 64);
            s->span_id = rnd() >> (rnd() % 64);
            s->parent_id = rnd() % 3 == 0 ? 0 : rnd();
            s->name = rnd_str();
            s->service = rnd() % 5 == 0 ? NULL : rnd_str();
            s->resource = rnd_str();
            s->type = rnd_str();
            s->start = (int64_t)rnd() >> (rnd() % 64);
            s->duration = (int64_t)rnd() >> (rnd() % 64);
            s->error = (int32_t)(rnd() >> (32 + rnd() % 32));
            for (int m = (int)(rnd() % 40); m > 0; m--) {
                /* Half with measured lengths (the encoder copies those as they are) */
                dd_meta_t tag = {rnd_str(), rnd_str(), 0, 0};
                if (rnd() % 2)
                    dd_meta_measure(&tag);
                dd_span_add_meta_n(s, tag.key, tag.klen, tag.value, tag.vlen);
            }
            for (int m = (int)(rnd() % 6); m > 0; m--)
                dd_span_set_metric(s, rnd_str(), (double)(int64_t)rnd() / (double)(rnd() | 1));
            add_runs(p, s);
            spans[i] = s;
        }
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, n);
        for (size_t i = 0; i < n; i++)
            ref_span(&pk, spans[i]);
        char *out = NULL;
        size_t len = 0;
        if (dd_encode_chunk(spans, n, &out, &len) == 0 && len == sb.size &&
            memcmp(out, sb.data, len) == 0)
            same++;
        else
            fprintf(stderr, "run %d: %zu bytes, reference %zu\n", r, len, sb.size);
        free(out);
        msgpack_sbuffer_destroy(&sb);
        pool = saved;
        apr_pool_destroy(p);
    }
    CHECK(same == runs);
    CHECK(runs_checked > runs && runs_same == runs_checked);
}

/* An intact run is copied as it was encoded, not written again: a run whose bytes say
 * something else than its entries shows through, until one of its entries changes. */
static void test_runs_copied(void)
{
    dd_meta_t tag = {"k", "b", 1, 1}, other = {"k", "c", 1, 1};
    const dd_run_t *real = dd_run_make(pool, &tag, 1), *fake_bytes = dd_run_make(pool, &other, 1);
    dd_run_t *r = apr_pmemdup(pool, real, sizeof(*real));
    dd_span_t *s = dd_span_create(pool);
    char *out;
    size_t len;
    msgpack_unpacked u;

    r->bytes = fake_bytes->bytes; /* entries k:b, bytes k:c */
    dd_span_add_meta_n(s, DD_LIT("own"), DD_LIT("x"));
    dd_span_add_run(s, r);
    CHECK(s->meta->nelts == 2 && s->runs[0].run == r && s->runs[0].at == 1);
    CHECK_STR(dd_span_get_meta(s, "k"), "b"); /* the entries are the span's tags */
    for (int round = 0; round < 2; round++) {
        CHECK(dd_encode_chunk(&s, 1, &out, &len) == 0);
        msgpack_unpacked_init(&u);
        CHECK(msgpack_unpack_next(&u, out, len, NULL) == MSGPACK_UNPACK_SUCCESS);
        const msgpack_object *meta = map_get(&u.data.via.array.ptr[0], "meta");
        CHECK(str_is(map_get(meta, "k"), round == 0 ? "c" : "b2"));
        CHECK(str_is(map_get(meta, "own"), "x"));
        msgpack_unpacked_destroy(&u);
        free(out);
        dd_span_set_meta(s, "k", "b2"); /* changed: written one by one */
    }
}

static void test_array_header(void)
{
    unsigned char h[5];
    size_t sizes[] = {0, 1, 15, 16, 65535, 65536, 1000000};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, sizes[i]);
        size_t n = dd_encode_array_header(sizes[i], h);
        CHECK(n == sb.size && memcmp(h, sb.data, n) == 0);
        msgpack_sbuffer_destroy(&sb);
    }
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    test_two_spans();
    test_span_links();
    test_big_chunk();
    test_control_characters();
    test_array_header();
    test_runs_copied();
    test_same_bytes_as_msgpack_packer();
    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
