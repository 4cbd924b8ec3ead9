/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_propagation.c - libFuzzer target for lib/dd_propagation.c.
 *
 * The input is split on '\n' into header values, given in turn to the propagation headers
 * (wrapping around, so long inputs repeat headers the way a hostile client can). The target
 * runs every extractor and dd_extract, then for each context found injects every style into
 * a fresh table and checks what a user relies on: the outbound headers are printable ASCII
 * (no header splitting), and each style extracts back the same ids and sampling decision.
 * The baggage header goes through dd_baggage_extract; what it reads is encoded and read
 * back: printable ASCII out, the same items in.
 * A broken invariant aborts, which libFuzzer reports as a crash.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "dd_baggage.h"
#include "dd_propagation.h"
#include "dd_span.h"

/* clang-format off */
static const char *const names[] = {
    "x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
    "x-datadog-origin",   "x-datadog-tags",      "traceparent",
    "tracestate",         "x-b3-traceid",        "x-b3-spanid",
    "x-b3-sampled",       "x-b3-flags",          "X-Amzn-Trace-Id",
    "baggage",
};
/* clang-format on */
#define NNAMES (sizeof(names) / sizeof(names[0]))

static apr_pool_t *root;

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    apr_initialize();
    apr_pool_create(&root, NULL);
    return 0;
}

static int printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            return 0;
    return 1;
}

static int check_header(void *rec, const char *key, const char *value)
{
    (void)rec;
    (void)key;
    ASSERT(printable(value));
    return 1;
}

static void check_context(const dd_extracted_t *x)
{
    ASSERT(x->ctx.trace_id_low != 0);
    /* a Root-only X-Ray header is a trace without a parent (issue 17) */
    ASSERT(x->ctx.parent_id != 0 || x->style == DD_STYLE_XRAY);
    if (x->ctx.origin)
        ASSERT(printable(x->ctx.origin));
    if (x->ctx.tags) {
        const dd_meta_t *m = (const dd_meta_t *)x->ctx.tags->elts;
        for (int i = 0; i < x->ctx.tags->nelts; i++) {
            ASSERT(strncmp(m[i].key, "_dd.p.", 6) == 0 && strcmp(m[i].key, "_dd.p.tid") != 0);
            ASSERT(printable(m[i].key) && printable(m[i].value));
        }
    }
    if (x->tracestate)
        ASSERT(printable(x->tracestate));
}

/* The decision each style can carry back: exact for datadog and tracecontext (where an
 * undecided trace reads as "not sampled"), keep/drop for b3multi and xray. */
static int expected_priority(dd_style_t style, int prio)
{
    switch (style) {
    case DD_STYLE_DATADOG:
        return prio;
    case DD_STYLE_TRACECONTEXT:
        return prio == DD_PRIORITY_UNSET ? 0 : prio;
    case DD_STYLE_B3MULTI:
    case DD_STYLE_XRAY:
        return prio == DD_PRIORITY_UNSET ? prio : prio > 0;
    case DD_STYLE_BAGGAGE: /* carries no context */
        break;
    }
    return prio;
}

static int same(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static const char *tag_get(const apr_array_header_t *tags, const char *key)
{
    const dd_meta_t *m = tags ? (const dd_meta_t *)tags->elts : NULL;
    for (int i = 0; tags && i < tags->nelts; i++)
        if (strcmp(m[i].key, key) == 0)
            return m[i].value;
    return NULL;
}

/* What tracestate's o: brings back: bytes that would break the list become '_' ('=' travels
 * as '~' and returns), and nothing when the pair did not fit in the 256-byte dd= member. */
static const char *w3c_origin(apr_pool_t *p, const dd_inject_t *in)
{
    if (!in->origin)
        return NULL;
    size_t n = strlen(in->origin);
    size_t base = 3 + 2 + 16 + 3; /* "dd=" "p:" <span> ";o:" */
    if (in->priority != DD_PRIORITY_UNSET)
        base += 3 + strlen(apr_itoa(p, in->priority)); /* "s:" <n> ";" */
    if (n == 0 || base + n > 256)
        return NULL;
    char *o = apr_pstrdup(p, in->origin);
    for (char *c = o; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c > 0x7e || strchr(",;~", *c))
            *c = '_';
    return o;
}

static void round_trip(apr_pool_t *p, const dd_extracted_t *x)
{
    static const dd_styles_t all = {
        4, {DD_STYLE_DATADOG, DD_STYLE_TRACECONTEXT, DD_STYLE_B3MULTI, DD_STYLE_XRAY}, 0};
    uint64_t span = x->ctx.parent_id ^ 0x5555555555555555ULL;
    dd_inject_t in = {.trace_id_high = x->ctx.trace_id_high,
                      .trace_id_low = x->ctx.trace_id_low,
                      .span_id = span ? span : 1,
                      .priority = x->ctx.priority,
                      .origin = x->ctx.origin,
                      .tags = x->ctx.tags,
                      .tracestate = x->tracestate};
    apr_table_t *h = apr_table_make(p, 16);
    int dropped = dd_inject(p, h, &all, &in);
    apr_table_do(check_header, NULL, h, NULL);

    for (int i = 0; i < all.n; i++) {
        dd_styles_t one = {1, {all.order[i]}, 0};
        dd_extracted_t y;
        ASSERT(dd_extract(p, h, &one, &y) == 1);
        check_context(&y);
        ASSERT(y.style == all.order[i]);
        ASSERT(y.ctx.trace_id_low == in.trace_id_low);
        ASSERT(y.ctx.parent_id == in.span_id);
        if (all.order[i] != DD_STYLE_DATADOG || !dropped) {
            ASSERT(y.ctx.trace_id_high == in.trace_id_high);
        }
        if (all.order[i] == DD_STYLE_DATADOG && !dropped)
            ASSERT(y.propagation_error == NULL);
        ASSERT(y.ctx.priority == expected_priority(all.order[i], in.priority));
        if (all.order[i] == DD_STYLE_DATADOG) {
            ASSERT(same(y.ctx.origin, in.origin));
            if (!dropped) {
                int n = in.tags ? in.tags->nelts : 0;
                ASSERT((y.ctx.tags ? y.ctx.tags->nelts : 0) == n);
                for (int k = 0; k < n; k++) {
                    const dd_meta_t *m = &((const dd_meta_t *)in.tags->elts)[k];
                    ASSERT(same(tag_get(y.ctx.tags, m->key), m->value));
                }
            }
        } else if (all.order[i] == DD_STYLE_TRACECONTEXT) {
            ASSERT(same(y.ctx.origin, w3c_origin(p, &in)));
            ASSERT(same(y.tracestate, in.tracestate));
        }
    }
}

/* Baggage read, written and read again gives the same items; what is written is printable. */
static void baggage_round_trip(apr_pool_t *p, const char *header)
{
    static const dd_baggage_limits_t lim = {DD_BAGGAGE_MAX_ITEMS, DD_BAGGAGE_MAX_BYTES};
    static const dd_baggage_limits_t big = {1 << 16, 1 << 20};
    apr_array_header_t *items = NULL, *again = NULL;
    dd_baggage_status_t st = dd_baggage_extract(p, header, &lim, &items);
    int cut = 0;
    char *out;

    ASSERT((items != NULL) == (st == DD_BAGGAGE_OK || (st == DD_BAGGAGE_TRUNCATED && items)));
    if (!items)
        return;
    ASSERT(items->nelts > 0 && items->nelts <= DD_BAGGAGE_MAX_ITEMS);
    out = dd_baggage_encode(p, items, &big, &cut);
    ASSERT(out != NULL && cut == 0);
    for (const char *c = out; *c; c++)
        ASSERT((unsigned char)*c > 0x20 && (unsigned char)*c < 0x7f && *c != ';');
    ASSERT(dd_baggage_extract(p, out, &big, &again) == DD_BAGGAGE_OK);
    ASSERT(again->nelts == items->nelts);
    for (int i = 0; i < items->nelts; i++) {
        const dd_meta_t *a = &((const dd_meta_t *)items->elts)[i];
        const dd_meta_t *b = &((const dd_meta_t *)again->elts)[i];
        ASSERT(strcmp(a->key, b->key) == 0 && strcmp(a->value, b->value) == 0);
    }
    out = dd_baggage_encode(p, items, &lim, &cut);
    ASSERT(!out || strlen(out) < DD_BAGGAGE_MAX_BYTES);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const dd_styles_t orders[] = {
        {5,
         {DD_STYLE_DATADOG, DD_STYLE_TRACECONTEXT, DD_STYLE_B3MULTI, DD_STYLE_XRAY,
          DD_STYLE_BAGGAGE},
         0},
        {5,
         {DD_STYLE_BAGGAGE, DD_STYLE_XRAY, DD_STYLE_B3MULTI, DD_STYLE_TRACECONTEXT,
          DD_STYLE_DATADOG},
         1},
    };
    int (*const extract[])(apr_pool_t *, const apr_table_t *, dd_extracted_t *) = {
        dd_extract_datadog, dd_extract_tracecontext, dd_extract_b3multi, dd_extract_xray};
    apr_pool_t *p;
    apr_table_t *h;
    dd_extracted_t x;
    dd_styles_t st;
    const char *err;

    apr_pool_create(&p, root);
    h = apr_table_make(p, 16);
    /* NUL-terminated copy; a NUL inside the input simply ends that value early */
    char *buf = apr_pstrmemdup(p, (const char *)data, size);
    size_t i = 0;
    for (char *line = buf, *nl;; line = nl + 1, i++) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        apr_table_add(h, names[i % NNAMES], line);
        if (!nl)
            break;
    }

    if (dd_styles_parse(p, buf, &st, &err) == 0) {
        ASSERT(st.n >= 0 && st.n <= DD_STYLES_MAX);
        dd_extract(p, h, &st, &x);
    } else {
        ASSERT(err != NULL);
    }
    for (size_t k = 0; k < sizeof(extract) / sizeof(extract[0]); k++) {
        if (extract[k](p, h, &x)) {
            check_context(&x);
            round_trip(p, &x);
        }
    }
    for (size_t k = 0; k < sizeof(orders) / sizeof(orders[0]); k++) {
        if (dd_extract(p, h, &orders[k], &x)) {
            check_context(&x);
            /* inject over the inbound headers, as the module does on r->headers_in */
            dd_inject_t in = {
                x.ctx.trace_id_high, x.ctx.trace_id_low, 1,   x.ctx.priority, x.ctx.origin,
                x.ctx.tags,          x.tracestate,       NULL};
            if (x.links)
                ASSERT(!orders[k].extract_first);
            dd_inject(p, h, &orders[k], &in);
        }
    }
    for (const char *b = apr_table_get(h, "baggage"); b; b = NULL)
        baggage_round_trip(p, b);
    apr_pool_destroy(p);
    return 0;
}
