/* dd_encode.c - spans -> msgpack (the agent's /v0.4/traces span format).
 *
 * Packing goes into a buffer that starts on the stack and moves to the heap only for big
 * chunks; the result is copied once into an exactly-sized malloc'd block, so the bytes the
 * queue accounts for are the bytes the chunk really holds.
 */
#include "dd_encode.h"

#include <stdlib.h>
#include <string.h>
#include <msgpack.h>

#define STACK_BYTES 4096

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    int heap; /* data is malloc'd (else it is the caller's stack buffer) */
    int failed;
} buf_t;

static int buf_write(void *ctx, const char *bytes, size_t n)
{
    buf_t *b = ctx;
    if (b->failed)
        return -1;
    if (b->len + n > b->cap) {
        size_t cap = b->cap * 2;
        char *grown;
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
    }
    memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

/* Control characters (other than tab) never reach the agent raw: a header or path that
 * carried one is written with a visible escape (\n, \r, \u0001 ...), as a JSON encoder would. */
static int needs_escape(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static void pack_escaped(msgpack_packer *pk, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t out = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        out += !needs_escape(c) ? 1 : (c == '\n' || c == '\r') ? 2 : 6;
    }
    msgpack_pack_str(pk, out);
    for (size_t i = 0, run = 0; i <= n; i++) {
        unsigned char c = i < n ? (unsigned char)s[i] : 0;
        if (i < n && !needs_escape(c))
            continue;
        msgpack_pack_str_body(pk, s + run, i - run); /* the clean bytes before this one */
        run = i + 1;
        if (i == n)
            break;
        if (c == '\n' || c == '\r') {
            char esc[2] = {'\\', c == '\n' ? 'n' : 'r'};
            msgpack_pack_str_body(pk, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
            msgpack_pack_str_body(pk, esc, 6);
        }
    }
}

static void pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    for (size_t i = 0; i < n; i++) {
        if (needs_escape((unsigned char)s[i])) {
            pack_escaped(pk, s, n);
            return;
        }
    }
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s ? s : "", n);
}

static void pack_key(msgpack_packer *pk, const char *literal, size_t n)
{
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, literal, n);
}

#define KEY(pk, lit) pack_key((pk), (lit), sizeof(lit) - 1)

static void pack_span(msgpack_packer *pk, const dd_span_t *s)
{
    const dd_meta_t *meta = (const dd_meta_t *)s->meta->elts;
    const dd_metric_t *metrics = (const dd_metric_t *)s->metrics->elts;

    msgpack_pack_map(pk, 12);
    KEY(pk, "trace_id");
    msgpack_pack_uint64(pk, s->trace_id);
    KEY(pk, "span_id");
    msgpack_pack_uint64(pk, s->span_id);
    KEY(pk, "parent_id");
    msgpack_pack_uint64(pk, s->parent_id);
    KEY(pk, "name");
    pack_str(pk, s->name);
    KEY(pk, "service");
    pack_str(pk, s->service);
    KEY(pk, "resource");
    pack_str(pk, s->resource);
    KEY(pk, "type");
    pack_str(pk, s->type);
    KEY(pk, "start");
    msgpack_pack_int64(pk, s->start);
    KEY(pk, "duration");
    msgpack_pack_int64(pk, s->duration < 0 ? 0 : s->duration);
    KEY(pk, "error");
    msgpack_pack_int32(pk, s->error);
    KEY(pk, "meta");
    msgpack_pack_map(pk, (size_t)s->meta->nelts);
    for (int i = 0; i < s->meta->nelts; i++) {
        pack_str(pk, meta[i].key);
        pack_str(pk, meta[i].value);
    }
    KEY(pk, "metrics");
    msgpack_pack_map(pk, (size_t)s->metrics->nelts);
    for (int i = 0; i < s->metrics->nelts; i++) {
        pack_str(pk, metrics[i].key);
        msgpack_pack_double(pk, metrics[i].value);
    }
}

int dd_encode_chunk(dd_span_t *const *spans, size_t n, char **out, size_t *out_len)
{
    char stack[STACK_BYTES];
    buf_t b = {stack, 0, sizeof(stack), 0, 0};
    msgpack_packer pk;
    char *result;

    msgpack_packer_init(&pk, &b, buf_write);
    msgpack_pack_array(&pk, n);
    for (size_t i = 0; i < n; i++)
        pack_span(&pk, spans[i]);

    if (b.failed) {
        if (b.heap)
            free(b.data);
        return -1;
    }
    if (b.heap) {
        result = b.data; /* already ours; give back the slack only if it is large */
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

size_t dd_encode_array_header(size_t n, unsigned char out[5])
{
    if (n < 16) {
        out[0] = (unsigned char)(0x90 | n);
        return 1;
    }
    if (n <= 0xFFFF) {
        out[0] = 0xdc;
        out[1] = (unsigned char)(n >> 8);
        out[2] = (unsigned char)n;
        return 3;
    }
    out[0] = 0xdd;
    out[1] = (unsigned char)(n >> 24);
    out[2] = (unsigned char)(n >> 16);
    out[3] = (unsigned char)(n >> 8);
    out[4] = (unsigned char)n;
    return 5;
}
