/* SPDX-License-Identifier: Apache-2.0 */
/* dd_encode.c - spans -> msgpack (the agent's /v0.4/traces span format).
 *
 * The packer is msgpack-c's own: its pack_template.h is instantiated here with a writer that
 * appends straight into a buffer (the way msgpack-c builds its msgpack_packer from the same
 * template), so every value is an inline store instead of an indirect call to a write callback
 * and a memcpy of a few bytes. Packing goes into a buffer on the stack that moves to the heap
 * only for big chunks; the result is copied once into an exactly-sized malloc'd block, so the
 * bytes the queue accounts for are the bytes the chunk really holds.
 */
#include "dd_encode.h"
#include "dd_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <apr_strings.h>
#include <msgpack/pack_define.h>
#include <msgpack/timestamp.h> /* pack_template.h also defines a timestamp packer */

#define STACK_BYTES 4096

typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
    int heap;   /* data is malloc'd (else it is the caller's stack buffer) */
    int failed; /* an allocation failed: the chunk is dropped */
} buf_t;

/* The slow path of buf_put(): the buffer moves to (or grows on) the heap. */
static int buf_grow(buf_t *b, size_t n)
{
    size_t cap = b->cap * 2;
    unsigned char *grown;
    if (b->failed)
        return -1;
    while (cap < b->len + n)
        cap *= 2;
    grown = b->heap ? realloc(b->data, cap) : malloc(cap);
    if (!grown) {
        b->failed = 1;
        return -1;
    }
    if (!b->heap)
        memcpy(grown, b->data, b->len);
    b->data = grown;
    b->cap = cap;
    b->heap = 1;
    return 0;
}

static inline int buf_put(buf_t *b, const void *bytes, size_t n)
{
    if (b->cap - b->len < n && buf_grow(b, n) != 0)
        return -1;
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

/* msgpack-c's packer, instantiated for buf_t: mp_str(), mp_str_body(), mp_uint64(), ... */
#define msgpack_pack_inline_func(name) static inline int mp##name
#define msgpack_pack_inline_func_cint(name) static inline int mp##name
#define msgpack_pack_inline_func_fixint(name) static inline int mp_fix##name
#define msgpack_pack_user buf_t *
#define msgpack_pack_append_buffer(user, buf, len) return buf_put((user), (buf), (len))
#define msgpack_pack_ext mp_ext /* the template's timestamp packer calls it by this name */
#include <msgpack/pack_template.h>
#undef msgpack_pack_ext

/* Control characters (other than tab) never reach the agent raw: a header or path that
 * carried one is written with a visible escape (\n, \r, \u0001 ...), as a JSON encoder would. */
static inline int needs_escape(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

/* Whether a word may hold a byte below 0x20 (tab included) or equal to 0x7f: no false
 * negatives; a hit is checked byte by byte. */
static inline int word_suspect(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t del = x ^ (0x7f * ones);
    return (((x - 0x20 * ones) & ~x) | ((del - ones) & ~del)) & highs ? 1 : 0;
}

/* Whether s[0..n) holds a byte needs_escape() is true for. Whole words only, never reading
 * outside s[0..n): the last word of a long string overlaps the one before it, and a short
 * string is gathered into one word (padded with spaces). */
static inline int has_control(const unsigned char *s, size_t n)
{
    uint64_t x;
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8)
            if (word_suspect(dd_load64(s + i)))
                goto bytewise;
        x = dd_load64(s + n - 8);
    } else if (n >= 4) {
        x = dd_load32(s) | dd_load32(s + n - 4) << 32;
    } else if (n > 0) {
        x = s[0] | (uint64_t)s[n / 2] << 8 | (uint64_t)s[n - 1] << 16 | 0x2020202020000000ULL;
    } else {
        return 0;
    }
    if (!word_suspect(x))
        return 0;
bytewise:
    for (size_t i = 0; i < n; i++)
        if (needs_escape(s[i]))
            return 1;
    return 0;
}

/* The same, for dd_meta_measure (the encoder's own calls stay inlined). */
int dd_encode_has_control(const char *s, size_t n)
{
    return has_control((const unsigned char *)s, n);
}

/* n < 32 bytes from s to d, with overlapping word moves (no call, no byte loop). */
static inline void copy_short(unsigned char *d, const char *s, size_t n)
{
    if (n >= 16) {
        uint64_t h0 = dd_load64(s), h1 = dd_load64(s + 8);
        uint64_t t0 = dd_load64(s + n - 16), t1 = dd_load64(s + n - 8);
        memcpy(d, &h0, 8);
        memcpy(d + 8, &h1, 8);
        memcpy(d + n - 16, &t0, 8);
        memcpy(d + n - 8, &t1, 8);
    } else if (n >= 8) {
        uint64_t head = dd_load64(s), tail = dd_load64(s + n - 8);
        memcpy(d, &head, 8);
        memcpy(d + n - 8, &tail, 8);
    } else if (n >= 4) {
        uint32_t head, tail;
        memcpy(&head, s, 4);
        memcpy(&tail, s + n - 4, 4);
        memcpy(d, &head, 4);
        memcpy(d + n - 4, &tail, 4);
    } else if (n > 0) {
        d[0] = (unsigned char)s[0];
        d[n / 2] = (unsigned char)s[n / 2];
        d[n - 1] = (unsigned char)s[n - 1];
    }
}

/* A string body: short ones (most tags) copied with overlapping word moves (copy_short)
 * instead of a call to memcpy. */
static inline void put_body(buf_t *b, const char *s, size_t n)
{
    if (n > 16 || b->cap - b->len < 16) {
        buf_put(b, s, n);
        return;
    }
    copy_short(b->data + b->len, s, n);
    b->len += n;
}

/* A string without control characters, of known length: header and body. Most keys and
 * values are under 32 bytes, msgpack's fixstr (a one-byte header, as mp_str writes it): a
 * store and copy_short(), inlined, with no call. */
static inline __attribute__((always_inline)) void put_clean(buf_t *b, const char *s, size_t n)
{
    unsigned char *d;
    if (n >= 32 || b->cap - b->len < 32) {
        mp_str(b, n);
        put_body(b, s, n);
        return;
    }
    d = b->data + b->len;
    d[0] = (unsigned char)(0xa0 | n);
    copy_short(d + 1, s, n);
    b->len += n + 1;
}

static void pack_escaped(buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out += !needs_escape(c) ? 1 : (c == '\n' || c == '\r') ? 2 : 6;
    }
    mp_str(b, out);
    for (size_t i = 0, run = 0; i <= n; i++) {
        unsigned char c = i < n ? (unsigned char)s[i] : 0;
        if (i < n && !needs_escape(c))
            continue;
        mp_str_body(b, s + run, i - run); /* the clean bytes before this one */
        run = i + 1;
        if (i == n)
            break;
        if (c == '\n' || c == '\r') {
            char esc[2] = {'\\', c == '\n' ? 'n' : 'r'};
            mp_str_body(b, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
            mp_str_body(b, esc, 6);
        }
    }
}

static void pack_str(buf_t *b, const char *s)
{
    size_t n;
    if (!s)
        s = "";
    n = strlen(s);
    if (has_control((const unsigned char *)s, n)) {
        pack_escaped(b, s, n);
        return;
    }
    put_clean(b, s, n);
}

/* A string whose length is known and which has no control characters (dd_meta_t's klen and
 * vlen), else (n == 0) one the encoder measures and checks. */
static inline void pack_known(buf_t *b, const char *s, uint32_t n)
{
    if (!n) {
        pack_str(b, s);
        return;
    }
    put_clean(b, s, n);
}

/* A key the encoder writes itself: a literal with no control characters. */
#define KEY(b, lit) put_clean((b), (lit), sizeof(lit) - 1)

/* span_links as the agent's span.proto has them (and dd-trace-py / dd-trace-cpp send them):
 * trace_id, trace_id_high, span_id, then attributes, tracestate and flags when known; flags
 * carry bit 31 to say they are set (span.proto: "If set, the high bit (bit 31) must be set"). */
static void pack_links(buf_t *b, const apr_array_header_t *links)
{
    const dd_span_link_t *l = (const dd_span_link_t *)links->elts;
    mp_array(b, (size_t)links->nelts);
    for (int i = 0; i < links->nelts; i++) {
        int nattr = l[i].attributes ? l[i].attributes->nelts : 0;
        mp_map(b, 3 + (nattr > 0) + (l[i].tracestate != NULL) + (l[i].flags >= 0));
        KEY(b, "trace_id");
        mp_uint64(b, l[i].trace_id);
        KEY(b, "trace_id_high");
        mp_uint64(b, l[i].trace_id_high);
        KEY(b, "span_id");
        mp_uint64(b, l[i].span_id);
        if (nattr > 0) {
            const dd_meta_t *a = (const dd_meta_t *)l[i].attributes->elts;
            KEY(b, "attributes");
            mp_map(b, (size_t)nattr);
            for (int j = 0; j < nattr; j++) {
                pack_known(b, a[j].key, a[j].klen);
                pack_known(b, a[j].value, a[j].vlen);
            }
        }
        if (l[i].tracestate) {
            KEY(b, "tracestate");
            pack_str(b, l[i].tracestate);
        }
        if (l[i].flags >= 0) {
            KEY(b, "flags");
            mp_uint32(b, (uint32_t)l[i].flags | 0x80000000u);
        }
    }
}

/* Entries [from, to) of a meta (or metrics) array, one by one. */
static void pack_entries(buf_t *b, const void *items, int metrics, int from, int to)
{
    if (metrics) {
        const dd_metric_t *m = (const dd_metric_t *)items;
        for (int i = from; i < to; i++) {
            pack_known(b, m[i].key, m[i].klen);
            mp_double(b, m[i].value);
        }
    } else {
        const dd_meta_t *m = (const dd_meta_t *)items;
        for (int i = from; i < to; i++) {
            pack_known(b, m[i].key, m[i].klen);
            pack_known(b, m[i].value, m[i].vlen);
        }
    }
}

/* Whether a[at, at + r->n) are the run's entries, unchanged (field by field: dd_metric_t has
 * padding that memcmp would see). */
static int run_intact(const dd_run_t *r, const void *items, int nelts, int at)
{
    if (at < 0 || r->n > nelts - at)
        return 0;
    if (r->metrics) {
        const dd_metric_t *a = (const dd_metric_t *)items + at, *x = r->items;
        for (int i = 0; i < r->n; i++)
            if (a[i].key != x[i].key || a[i].klen != x[i].klen ||
                memcmp(&a[i].value, &x[i].value, sizeof(double)) != 0)
                return 0;
    } else {
        const dd_meta_t *a = (const dd_meta_t *)items + at, *x = r->items;
        for (int i = 0; i < r->n; i++)
            if (a[i].key != x[i].key || a[i].value != x[i].value || a[i].klen != x[i].klen ||
                a[i].vlen != x[i].vlen)
                return 0;
    }
    return 1;
}

/* A span's meta (or metrics) map: its runs copied as they were encoded, where intact, and the
 * other entries one by one. Runs are recorded in increasing position. */
static void pack_map_of(buf_t *b, const dd_span_t *s, int metrics)
{
    const apr_array_header_t *a = metrics ? s->metrics : s->meta;
    int i = 0;
    mp_map(b, (size_t)a->nelts);
    for (int k = 0; k < DD_SPAN_RUNS; k++) {
        const dd_run_t *r = s->runs[k].run;
        int at = s->runs[k].at;
        if (!r || r->metrics != metrics || at < i || !run_intact(r, a->elts, a->nelts, at))
            continue;
        pack_entries(b, a->elts, metrics, i, at);
        buf_put(b, r->bytes, r->len);
        i = at + r->n;
    }
    pack_entries(b, a->elts, metrics, i, a->nelts);
}

/* A span's string field: copied as it is when it is the one known clean. */
static inline void pack_field(buf_t *b, const char *v, const char *known, uint32_t len)
{
    if (v == known && len)
        pack_known(b, v, len);
    else
        pack_str(b, v);
}

static void pack_span(buf_t *b, const dd_span_t *s)
{
    static const dd_span_known_t none = {0};
    const dd_span_known_t *k = s->known ? s->known : &none;
    int has_links = s->links && s->links->nelts > 0;

    mp_map(b, 12 + has_links);
    KEY(b, "trace_id");
    mp_uint64(b, s->trace_id);
    KEY(b, "span_id");
    mp_uint64(b, s->span_id);
    KEY(b, "parent_id");
    mp_uint64(b, s->parent_id);
    KEY(b, "name");
    pack_field(b, s->name, k->name, k->name_len);
    KEY(b, "service");
    pack_field(b, s->service, k->service, k->service_len);
    KEY(b, "resource");
    pack_field(b, s->resource, s->resource_clean, s->resource_len);
    KEY(b, "type");
    pack_field(b, s->type, k->type, k->type_len);
    KEY(b, "start");
    mp_int64(b, s->start);
    KEY(b, "duration");
    mp_int64(b, s->duration < 0 ? 0 : s->duration);
    KEY(b, "error");
    mp_int32(b, s->error);
    KEY(b, "meta");
    pack_map_of(b, s, 0);
    KEY(b, "metrics");
    pack_map_of(b, s, 1);
    if (has_links) {
        KEY(b, "span_links");
        pack_links(b, s->links);
    }
}

int dd_encode_chunk(dd_span_t *const *spans, size_t n, char **out, size_t *out_len)
{
    unsigned char stack[STACK_BYTES];
    buf_t b = {stack, 0, sizeof(stack), 0, 0};
    char *result;

    mp_array(&b, n);
    for (size_t i = 0; i < n; i++)
        pack_span(&b, spans[i]);

    if (b.failed) {
        if (b.heap)
            free(b.data);
        return -1;
    }
    if (b.heap) {
        result = (char *)b.data; /* already ours; give back the slack only if it is large */
        if (b.cap - b.len > 4096) {
            char *shrunk = realloc(result, b.len);
            if (shrunk)
                result = shrunk;
        }
    } else {
        result = malloc(b.len);
        if (!result)
            return -1;
        memcpy(result, b.data, b.len);
    }
    *out = result;
    *out_len = b.len;
    return 0;
}

const unsigned char *dd_encode_entries(apr_pool_t *p, const void *items, int n, int metrics,
                                       size_t *len)
{
    unsigned char stack[STACK_BYTES], *out;
    buf_t b = {stack, 0, sizeof(stack), 0, 0};
    pack_entries(&b, items, metrics, 0, n);
    out = b.failed ? NULL : apr_pmemdup(p, b.data, b.len ? b.len : 1);
    *len = out ? b.len : 0;
    if (b.heap)
        free(b.data);
    return out;
}

size_t dd_encode_array_header(size_t n, unsigned char out[5])
{
    buf_t b = {out, 0, 5, 0, 0};
    mp_array(&b, n);
    return b.len;
}
