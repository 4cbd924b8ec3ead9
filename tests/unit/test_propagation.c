/* SPDX-License-Identifier: Apache-2.0 */
/* test_propagation.c - trace context extraction and injection (lib/dd_propagation.c) for the
 * datadog, tracecontext, b3multi and xray styles: exact values in, every malformed case
 * rejected, exact headers out, and round trips (extract(inject(x)) == x). */
#include "unit.h"
#include "dd_propagation.h"
#include "dd_span.h"

#include <stdarg.h>
#include <apr_general.h>
#include <apr_strings.h>

static apr_pool_t *pool;

/* A header table from NULL-terminated name, value pairs; a name may repeat (apr_table_add). */
static apr_table_t *hdrs(const char *name, ...)
{
    apr_table_t *h = apr_table_make(pool, 8);
    va_list ap;
    va_start(ap, name);
    for (const char *k = name; k; k = va_arg(ap, const char *))
        apr_table_add(h, k, va_arg(ap, const char *));
    va_end(ap);
    return h;
}

static const char *tag(const dd_extracted_t *x, const char *key)
{
    if (!x->ctx.tags)
        return NULL;
    const dd_meta_t *m = (const dd_meta_t *)x->ctx.tags->elts;
    for (int i = 0; i < x->ctx.tags->nelts; i++)
        if (strcmp(m[i].key, key) == 0)
            return m[i].value;
    return NULL;
}

static int ntags(const dd_extracted_t *x)
{
    return x->ctx.tags ? x->ctx.tags->nelts : 0;
}

static int dd(apr_table_t *h, dd_extracted_t *x)
{
    memset(x, 0, sizeof(*x));
    return dd_extract_datadog(pool, h, x);
}

static int tc(apr_table_t *h, dd_extracted_t *x)
{
    memset(x, 0, sizeof(*x));
    return dd_extract_tracecontext(pool, h, x);
}

static int b3(apr_table_t *h, dd_extracted_t *x)
{
    memset(x, 0, sizeof(*x));
    return dd_extract_b3multi(pool, h, x);
}

static int xr(apr_table_t *h, dd_extracted_t *x)
{
    memset(x, 0, sizeof(*x));
    return dd_extract_xray(pool, h, x);
}

static dd_styles_t one_style(dd_style_t s)
{
    dd_styles_t st = {1, {s}, 0};
    return st;
}

/* ---- datadog ---------------------------------------------------------------------------- */

static void test_datadog_valid(void)
{
    dd_extracted_t x;
    CHECK(dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", "2",
                  "x-datadog-sampling-priority", "2", "x-datadog-origin", "rum", "x-datadog-tags",
                  "_dd.p.dm=-4,_dd.p.usr.id=12345,other=x", NULL),
             &x));
    CHECK(x.style == DD_STYLE_DATADOG);
    CHECK_U64(x.ctx.trace_id_low, 1);
    CHECK_U64(x.ctx.trace_id_high, 0);
    CHECK_U64(x.ctx.parent_id, 2);
    CHECK(x.ctx.priority == 2);
    CHECK_STR(x.ctx.origin, "rum");
    CHECK(ntags(&x) == 2);
    CHECK_STR(tag(&x, "_dd.p.dm"), "-4");
    CHECK_STR(tag(&x, "_dd.p.usr.id"), "12345");
    CHECK_STR(tag(&x, "other"), NULL);
    CHECK_STR(x.propagation_error, NULL);
    CHECK_STR(x.tracestate, NULL);

    /* header names are case-insensitive; ids >= 2^63 are kept exactly */
    CHECK(dd(hdrs("X-Datadog-Trace-Id", "18446744073709551615", "X-DATADOG-PARENT-ID",
                  "9223372036854775808", NULL),
             &x));
    CHECK_U64(x.ctx.trace_id_low, UINT64_MAX);
    CHECK_U64(x.ctx.parent_id, 9223372036854775808ULL);
    CHECK(x.ctx.priority == DD_PRIORITY_UNSET);
    CHECK_STR(x.ctx.origin, NULL);
    CHECK(x.ctx.tags == NULL);

    /* priority: signed; anything else leaves a valid context without a priority */
    CHECK(dd(hdrs("x-datadog-trace-id", "5", "x-datadog-parent-id", "6",
                  "x-datadog-sampling-priority", "-1", NULL),
             &x));
    CHECK(x.ctx.priority == -1);
    CHECK(dd(hdrs("x-datadog-trace-id", "5", "x-datadog-parent-id", "6",
                  "x-datadog-sampling-priority", "-2147483648", NULL),
             &x));
    CHECK(x.ctx.priority == -2147483647 - 1);
    /* out of int range (2^64+1 would wrap to 1); -128 is DD_PRIORITY_UNSET itself */
    const char *bad_prio[] = {"abc",
                              "1.5",
                              "",
                              " 1",
                              "+1",
                              "99999999999",
                              "1, 1",
                              "--1",
                              "2147483648",
                              "-2147483649",
                              "18446744073709551617",
                              "-128"};
    for (size_t i = 0; i < sizeof(bad_prio) / sizeof(*bad_prio); i++) {
        CHECK(dd(hdrs("x-datadog-trace-id", "5", "x-datadog-parent-id", "6",
                      "x-datadog-sampling-priority", bad_prio[i], NULL),
                 &x));
        CHECK(x.ctx.priority == DD_PRIORITY_UNSET);
        CHECK_U64(x.ctx.trace_id_low, 5);
    }
    /* two priority entries: ambiguous, so no priority (the ids still stand) */
    CHECK(dd(hdrs("x-datadog-trace-id", "5", "x-datadog-parent-id", "6",
                  "x-datadog-sampling-priority", "1", "x-datadog-sampling-priority", "2", NULL),
             &x));
    CHECK(x.ctx.priority == DD_PRIORITY_UNSET);
    /* an origin that could not be re-emitted safely is dropped */
    CHECK(dd(hdrs("x-datadog-trace-id", "5", "x-datadog-parent-id", "6", "x-datadog-origin",
                  "rum\r\nx: y", NULL),
             &x));
    CHECK_STR(x.ctx.origin, NULL);
}

static void test_datadog_tags(void)
{
    dd_extracted_t x;
    /* _dd.p.tid gives the high half and is not kept as a tag; either case */
    CHECK(dd(hdrs("x-datadog-trace-id", "9223372036854775809", "x-datadog-parent-id", "3",
                  "x-datadog-tags", "_dd.p.tid=640CFD8D00000000,_dd.p.dm=-1", NULL),
             &x));
    CHECK_U64(x.ctx.trace_id_high, 0x640cfd8d00000000ULL);
    CHECK_U64(x.ctx.trace_id_low, 9223372036854775809ULL);
    CHECK(ntags(&x) == 1);
    CHECK_STR(tag(&x, "_dd.p.dm"), "-1");
    CHECK_STR(tag(&x, "_dd.p.tid"), NULL);
    CHECK_STR(x.propagation_error, NULL);

    /* blanks around a member are tolerated ... */
    CHECK(dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", "2", "x-datadog-tags",
                  "_dd.p.a=1 ,_dd.p.b=x y", NULL),
             &x));
    CHECK_STR(tag(&x, "_dd.p.a"), "1");
    CHECK_STR(tag(&x, "_dd.p.b"), "x y");
    /* ... but ", " is a repeated header joined by httpd: no tags, the ids continue */
    memset(&x, 0, sizeof(x));
    CHECK(dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", "2", "x-datadog-tags",
                  "_dd.p.dm=-4, _dd.p.big=1", NULL),
             &x));
    CHECK(x.ctx.tags == NULL);
    CHECK_STR(x.propagation_error, "decoding_error");
    CHECK_U64(x.ctx.trace_id_low, 1);

    /* a repeated key: the last one counts; a blank header is no tags and no error */
    CHECK(dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", "2", "x-datadog-tags",
                  "_dd.p.a=1,_dd.p.a=2", NULL),
             &x));
    CHECK(ntags(&x) == 1);
    CHECK_STR(tag(&x, "_dd.p.a"), "2");
    CHECK(
        dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", "2", "x-datadog-tags", " ", NULL),
           &x));
    CHECK(x.ctx.tags == NULL);
    CHECK_STR(x.propagation_error, NULL);

    /* invalid tid: dropped with an error, the other tags stay */
    const char *bad_tid[] = {"xyz", "0000000000000000", "640cfd8d0000000", "640cfd8d000000000",
                             "640cfd8d0000000g"};
    for (size_t i = 0; i < sizeof(bad_tid) / sizeof(*bad_tid); i++) {
        CHECK(dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", "2", "x-datadog-tags",
                      apr_pstrcat(pool, "_dd.p.dm=-1,_dd.p.tid=", bad_tid[i], NULL), NULL),
                 &x));
        CHECK_U64(x.ctx.trace_id_high, 0);
        CHECK_STR(tag(&x, "_dd.p.dm"), "-1");
        CHECK_STR(tag(&x, "_dd.p.tid"), NULL);
        CHECK_STR(x.propagation_error, apr_pstrcat(pool, "malformed_tid ", bad_tid[i], NULL));
    }

    /* exactly 512 bytes is fine, 513 is not */
    char big[600];
    memcpy(big, "_dd.p.big=", 10);
    memset(big + 10, 'a', 502);
    big[512] = '\0';
    CHECK(
        dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", "2", "x-datadog-tags", big, NULL),
           &x));
    CHECK(ntags(&x) == 1);
    CHECK_STR(x.propagation_error, NULL);
    big[512] = 'a';
    big[513] = '\0';
    CHECK(
        dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", "2", "x-datadog-tags", big, NULL),
           &x));
    CHECK(x.ctx.tags == NULL);
    CHECK_STR(x.propagation_error, "extract_max_size");
    CHECK_U64(x.ctx.trace_id_low, 1);

    /* malformed: everything is ignored */
    const char *bad[] = {"_dd.p.dm",
                         "=x",
                         "_dd.p.a=1,,_dd.p.b=2",
                         "_dd.p.a=1,",
                         "_dd.p.a=",
                         "_dd.p.a=1,_dd.p.b",
                         "_dd.p.a\x01=1",
                         "_dd.p.a=\xc3\xa9",
                         "_dd p.a=1",
                         "_dd.p.tid=640cfd8d00000000,oops"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        CHECK(dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", "2", "x-datadog-tags",
                      bad[i], NULL),
                 &x));
        CHECK(x.ctx.tags == NULL);
        CHECK_U64(x.ctx.trace_id_high, 0);
        CHECK_STR(x.propagation_error, "decoding_error");
    }
    /* two x-datadog-tags entries: ambiguous */
    CHECK(dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", "2", "x-datadog-tags",
                  "_dd.p.a=1", "x-datadog-tags", "_dd.p.b=2", NULL),
             &x));
    CHECK(x.ctx.tags == NULL);
    CHECK_STR(x.propagation_error, "decoding_error");
}

static void test_datadog_invalid(void)
{
    dd_extracted_t x;
    const char *bad_ids[] = {"0",
                             "-1",
                             "+1",
                             " 1",
                             "1 ",
                             "0x1",
                             "abc",
                             "",
                             "1.0",
                             "18446744073709551616",
                             "1, 2",
                             "1,2",
                             "00000000000000000000001"};
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(*bad_ids); i++) {
        CHECK(!dd(hdrs("x-datadog-trace-id", bad_ids[i], "x-datadog-parent-id", "2", NULL), &x));
        CHECK(!dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", bad_ids[i], NULL), &x));
    }
    CHECK(!dd(hdrs("x-datadog-trace-id", "1", NULL), &x)); /* no parent: not a context */
    CHECK(!dd(hdrs("x-datadog-trace-id", "1", "x-datadog-origin", "synthetics", NULL), &x));
    CHECK(!dd(hdrs("x-datadog-parent-id", "1", NULL), &x));
    CHECK(!dd(hdrs("x-other", "1", NULL), &x));
    /* repeated as two table entries, even when equal */
    CHECK(!dd(hdrs("x-datadog-trace-id", "1", "x-datadog-trace-id", "1", "x-datadog-parent-id", "2",
                   NULL),
              &x));
    CHECK(!dd(hdrs("x-datadog-trace-id", "1", "x-datadog-parent-id", "2", "x-datadog-parent-id",
                   "3", NULL),
              &x));
    /* on failure the output is left alone */
    x.ctx.trace_id_low = 77;
    CHECK(!dd_extract_datadog(pool, hdrs("x-datadog-trace-id", "0", NULL), &x));
    CHECK_U64(x.ctx.trace_id_low, 77);
}

/* ---- tracecontext ----------------------------------------------------------------------- */

#define TP_TRACE "4bf92f3577b34da6a3ce929d0e0e4736"
#define TP_SPAN "00f067aa0ba902b7"

static void test_tracecontext_valid(void)
{
    dd_extracted_t x;
    CHECK(tc(hdrs("traceparent", "00-" TP_TRACE "-" TP_SPAN "-01", NULL), &x));
    CHECK(x.style == DD_STYLE_TRACECONTEXT);
    CHECK_U64(x.ctx.trace_id_high, 0x4bf92f3577b34da6ULL);
    CHECK_U64(x.ctx.trace_id_low, 0xa3ce929d0e0e4736ULL);
    CHECK_U64(x.ctx.parent_id, 0x00f067aa0ba902b7ULL);
    CHECK(x.ctx.priority == 1);
    CHECK_STR(x.ctx.origin, NULL);
    CHECK(x.ctx.tags == NULL);
    CHECK_STR(x.tracestate, NULL);
    CHECK_STR(x.w3c_parent, NULL);

    /* the inferred-proxy spec's W3C example */
    CHECK(tc(hdrs("traceparent", "00-0000000000000000000000000000002a-0000000000000001-01",
                  "tracestate", "dd=p:00000000000000bb;s:1;o:rum;t.dm:-4;t.usr.id:12345", NULL),
             &x));
    CHECK_U64(x.ctx.trace_id_high, 0);
    CHECK_U64(x.ctx.trace_id_low, 42);
    CHECK_U64(x.ctx.parent_id, 1);
    CHECK(x.ctx.priority == 1);
    CHECK_STR(x.ctx.origin, "rum");
    CHECK_STR(x.w3c_parent, "00000000000000bb");
    CHECK(ntags(&x) == 2);
    CHECK_STR(tag(&x, "_dd.p.dm"), "-4");
    CHECK_STR(tag(&x, "_dd.p.usr.id"), "12345");
    CHECK_STR(x.tracestate, NULL);

    /* other members kept in order, OWS dropped, '~' decoded, t.tid and junk ignored */
    CHECK(tc(hdrs("traceparent", "00-" TP_TRACE "-" TP_SPAN "-01", "tracestate",
                  "foo=bar , dd=s:2;o:syn~th;p:00000000000000BB;t.dm:-4;t.x:a~b;t.tid:ffff;"
                  "junk;zz:1,\tcongo=t61rcWkgMzE,bad member,=nokey",
                  NULL),
             &x));
    CHECK(x.ctx.priority == 2);
    CHECK_STR(x.ctx.origin, "syn=th");
    CHECK_STR(x.w3c_parent, "00000000000000bb");
    CHECK(ntags(&x) == 2);
    CHECK_STR(tag(&x, "_dd.p.x"), "a=b");
    CHECK_STR(tag(&x, "_dd.p.tid"), NULL);
    CHECK_U64(x.ctx.trace_id_high, 0x4bf92f3577b34da6ULL);
    CHECK_STR(x.tracestate, "foo=bar,congo=t61rcWkgMzE");

    /* dd= values: empty, blank or over 256 bytes are skipped one by one */
    char longv[300];
    memset(longv, 'v', 257);
    longv[257] = '\0';
    CHECK(tc(hdrs("traceparent", "00-" TP_TRACE "-" TP_SPAN "-01", "tracestate",
                  apr_pstrcat(pool, "dd=o:;t.a:  ;t.b:", longv, ";t.c: c ;s:2", NULL), NULL),
             &x));
    CHECK_STR(x.ctx.origin, NULL);
    CHECK(ntags(&x) == 1);
    CHECK_STR(tag(&x, "_dd.p.c"), "c");
    CHECK(x.ctx.priority == 2);

    /* only the first dd= member counts */
    CHECK(tc(hdrs("traceparent", "00-" TP_TRACE "-" TP_SPAN "-01", "tracestate",
                  "dd=s:2,a=b,dd=s:1;o:x", NULL),
             &x));
    CHECK(x.ctx.priority == 2);
    CHECK_STR(x.ctx.origin, NULL);
    CHECK_STR(x.tracestate, "a=b");

    /* tracestate split over two header lines is one list */
    CHECK(tc(hdrs("traceparent", "00-" TP_TRACE "-" TP_SPAN "-00", "tracestate", "foo=1",
                  "tracestate", "dd=s:-1", NULL),
             &x));
    CHECK(x.ctx.priority == -1);
    CHECK_STR(x.tracestate, "foo=1");

    /* priority vs the sampled flag */
    struct {
        const char *flags, *ts;
        int want;
    } prio[] = {
        {"01", NULL, 1},     {"00", NULL, 0},       {"01", "dd=s:2", 2},   {"01", "dd=s:-1", 1},
        {"01", "dd=s:0", 1}, {"00", "dd=s:-1", -1}, {"00", "dd=s:0", 0},   {"00", "dd=s:2", 0},
        {"03", "dd=s:1", 1}, {"01", "dd=s:x", 1},   {"00", "dd=o:rum", 0}, {"ff", "dd=s:2", 2},
    };
    for (size_t i = 0; i < sizeof(prio) / sizeof(*prio); i++) {
        apr_table_t *h =
            hdrs("traceparent",
                 apr_pstrcat(pool, "00-" TP_TRACE "-" TP_SPAN "-", prio[i].flags, NULL), NULL);
        if (prio[i].ts)
            apr_table_set(h, "tracestate", prio[i].ts);
        CHECK(tc(h, &x));
        CHECK(x.ctx.priority == prio[i].want);
    }

    /* OWS around traceparent; later versions: exactly 55, or more after a '-' */
    CHECK(tc(hdrs("traceparent", " \t00-" TP_TRACE "-" TP_SPAN "-01 ", NULL), &x));
    CHECK_U64(x.ctx.parent_id, 0x00f067aa0ba902b7ULL);
    CHECK(tc(hdrs("traceparent", "01-" TP_TRACE "-" TP_SPAN "-01-what-ever", NULL), &x));
    CHECK_U64(x.ctx.trace_id_low, 0xa3ce929d0e0e4736ULL);
    CHECK(tc(hdrs("traceparent", "cc-" TP_TRACE "-" TP_SPAN "-00", NULL), &x));
    CHECK(x.ctx.priority == 0);

    /* at most 31 other members are kept (ours makes 32) */
    const char *many = "";
    for (int i = 0; i < 40; i++)
        many = apr_psprintf(pool, "%s%sk%d=v%d", many, i ? "," : "", i, i);
    CHECK(tc(hdrs("traceparent", "00-" TP_TRACE "-" TP_SPAN "-01", "tracestate", many, NULL), &x));
    int commas = 0;
    for (const char *c = x.tracestate; c && *c; c++)
        commas += *c == ',';
    CHECK(commas == 30);
    CHECK(x.tracestate && strncmp(x.tracestate, "k0=v0,k1=v1,", 12) == 0);
}

static void test_tracecontext_invalid(void)
{
    dd_extracted_t x;
    const char *bad[] = {
        "",
        "00-" TP_TRACE "-" TP_SPAN "-0",                      /* short flags */
        "00-" TP_TRACE "-" TP_SPAN "-01-",                    /* version 00 is 55 exactly */
        "00-" TP_TRACE "-" TP_SPAN "-01-extra",               /* version 00 is 55 exactly */
        "ff-" TP_TRACE "-" TP_SPAN "-01",                     /* version ff */
        "0-" TP_TRACE "-" TP_SPAN "-01",                      /* short version */
        "0g-" TP_TRACE "-" TP_SPAN "-01",                     /* non-hex version */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" TP_SPAN "-01", /* uppercase */
        "00-" TP_TRACE "-00F067AA0BA902B7-01",                /* uppercase */
        "00-" TP_TRACE "-" TP_SPAN "-0A",                     /* uppercase flags */
        "00-00000000000000000000000000000000-" TP_SPAN "-01", /* zero trace id */
        "00-" TP_TRACE "-0000000000000000-01",                /* zero parent */
        "00-4bf92f3577b34da60000000000000000-" TP_SPAN "-01", /* low 64 bits zero */
        "00-" TP_TRACE "a-" TP_SPAN "-01",                    /* long trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e473-" TP_SPAN "-01",  /* short trace id */
        "00-" TP_TRACE "-00f067aa0ba902b-01",                 /* short span */
        "00_" TP_TRACE "-" TP_SPAN "-01",                     /* separators */
        "00-" TP_TRACE "_" TP_SPAN "-01",
        "00-" TP_TRACE "-" TP_SPAN "_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473x-" TP_SPAN "-01",      /* non-hex */
        "01-" TP_TRACE "-" TP_SPAN "-01x",                         /* later version: '-' needed */
        "01-zzf92f3577b34da6a3ce929d0e0e4736-" TP_SPAN "-01-more", /* later version, bad id */
        "01-" TP_TRACE "-" TP_SPAN "-0z-more",                     /* later version, bad flags */
        "01-00000000000000000000000000000000-" TP_SPAN "-01-more", /* later version, zero */
        "00-" TP_TRACE "-" TP_SPAN "-01, 00-" TP_TRACE "-" TP_SPAN "-01", /* httpd-joined */
        "01-" TP_TRACE "-" TP_SPAN "-01, 01-" TP_TRACE "-" TP_SPAN "-01",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        int ok = tc(hdrs("traceparent", bad[i], "tracestate", "dd=s:2", NULL), &x);
        CHECK(!ok);
        if (ok)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
    }
    /* two traceparent entries, even equal ones */
    CHECK(!tc(hdrs("traceparent", "00-" TP_TRACE "-" TP_SPAN "-01", "traceparent",
                   "00-" TP_TRACE "-" TP_SPAN "-01", NULL),
              &x));
    CHECK(!tc(hdrs("tracestate", "dd=s:2", NULL), &x)); /* tracestate alone */
}

/* ---- b3multi ----------------------------------------------------------------------------- */

static void test_b3(void)
{
    dd_extracted_t x;
    CHECK(b3(
        hdrs("x-b3-traceid", "a3ce929d0e0e4736", "x-b3-spanid", TP_SPAN, "x-b3-sampled", "1", NULL),
        &x));
    CHECK(x.style == DD_STYLE_B3MULTI);
    CHECK_U64(x.ctx.trace_id_high, 0);
    CHECK_U64(x.ctx.trace_id_low, 0xa3ce929d0e0e4736ULL);
    CHECK_U64(x.ctx.parent_id, 0x00f067aa0ba902b7ULL);
    CHECK(x.ctx.priority == 1);

    CHECK(b3(hdrs("X-B3-TraceId", TP_TRACE, "X-B3-SpanId", "ffffffffffffffff", NULL), &x));
    CHECK_U64(x.ctx.trace_id_high, 0x4bf92f3577b34da6ULL);
    CHECK_U64(x.ctx.trace_id_low, 0xa3ce929d0e0e4736ULL);
    CHECK_U64(x.ctx.parent_id, UINT64_MAX);
    CHECK(x.ctx.priority == DD_PRIORITY_UNSET);

    struct {
        const char *sampled, *flags;
        int want;
    } prio[] = {{"1", NULL, 1},
                {"true", NULL, 1},
                {"0", NULL, 0},
                {"false", NULL, 0},
                {"2", NULL, DD_PRIORITY_UNSET},
                {"yes", NULL, DD_PRIORITY_UNSET},
                {NULL, "1", 2},
                {"0", "1", 2},
                {"1", "0", 1}};
    for (size_t i = 0; i < sizeof(prio) / sizeof(*prio); i++) {
        apr_table_t *h = hdrs("x-b3-traceid", "a3ce929d0e0e4736", "x-b3-spanid", TP_SPAN, NULL);
        if (prio[i].sampled)
            apr_table_set(h, "x-b3-sampled", prio[i].sampled);
        if (prio[i].flags)
            apr_table_set(h, "x-b3-flags", prio[i].flags);
        CHECK(b3(h, &x));
        CHECK(x.ctx.priority == prio[i].want);
    }

    const char *bad_trace[] = {"A3CE929D0E0E4736",
                               "a3ce929d0e0e473",
                               "a3ce929d0e0e47361",
                               "4bf92f3577b34da6a3ce929d0e0e473",
                               "0000000000000000",
                               "00000000000000000000000000000000",
                               "4bf92f3577b34da60000000000000000",
                               "a3ce929d0e0e473g",
                               "",
                               "a3ce929d0e0e4736, a3ce929d0e0e4736"};
    for (size_t i = 0; i < sizeof(bad_trace) / sizeof(*bad_trace); i++)
        CHECK(!b3(hdrs("x-b3-traceid", bad_trace[i], "x-b3-spanid", TP_SPAN, NULL), &x));
    const char *bad_span[] = {"00F067AA0BA902B7",
                              "00f067aa0ba902b",
                              "00f067aa0ba902b70",
                              "0000000000000000",
                              "00f067aa0ba902bx",
                              TP_TRACE,
                              ""};
    for (size_t i = 0; i < sizeof(bad_span) / sizeof(*bad_span); i++)
        CHECK(!b3(hdrs("x-b3-traceid", "a3ce929d0e0e4736", "x-b3-spanid", bad_span[i], NULL), &x));
    CHECK(!b3(hdrs("x-b3-traceid", "a3ce929d0e0e4736", NULL), &x));
    CHECK(!b3(hdrs("x-b3-spanid", TP_SPAN, NULL), &x));
    CHECK(!b3(hdrs("x-b3-traceid", "a3ce929d0e0e4736", "x-b3-traceid", "a3ce929d0e0e4736",
                   "x-b3-spanid", TP_SPAN, NULL),
              &x));
}

/* ---- xray -------------------------------------------------------------------------------- */

#define XR_ROOT "1-5759e988-bd862e3fe1be46a994272793"
#define XR_PARENT "53995c3f42cd8ad8"

static void test_xray(void)
{
    dd_extracted_t x;
    CHECK(xr(hdrs("X-Amzn-Trace-Id", "Root=" XR_ROOT ";Parent=" XR_PARENT ";Sampled=1", NULL), &x));
    CHECK(x.style == DD_STYLE_XRAY);
    CHECK_U64(x.ctx.trace_id_high, 0x5759e988bd862e3fULL);
    CHECK_U64(x.ctx.trace_id_low, 0xe1be46a994272793ULL);
    CHECK_U64(x.ctx.parent_id, 0x53995c3f42cd8ad8ULL);
    CHECK(x.ctx.priority == 1);
    CHECK_STR(x.ctx.origin, NULL);

    struct {
        const char *v;
        int want;
    } prio[] = {{";Sampled=0", 0},
                {";Sampled=?", DD_PRIORITY_UNSET},
                {"", DD_PRIORITY_UNSET},
                {";Sampled=yes", DD_PRIORITY_UNSET},
                {"; Sampled = 1 ", 1}};
    for (size_t i = 0; i < sizeof(prio) / sizeof(*prio); i++) {
        CHECK(
            xr(hdrs("x-amzn-trace-id",
                    apr_pstrcat(pool, "Root=" XR_ROOT ";Parent=" XR_PARENT, prio[i].v, NULL), NULL),
               &x));
        CHECK(x.ctx.priority == prio[i].want);
    }

    /* any order, spaces, uppercase hex, extra fields (ALB Self=, Lambda Lineage=, app fields) */
    CHECK(xr(hdrs("x-amzn-trace-id",
                  " Self=1-67891234-12456789abcdef012345678 ; Parent = 53995C3F42CD8AD8 ;"
                  "Root=1-5759E988-BD862E3FE1BE46A994272793;Lineage=a87bd80c:1|68fd508a:5;"
                  "CalledFrom=app;;flag",
                  NULL),
             &x));
    CHECK_U64(x.ctx.trace_id_high, 0x5759e988bd862e3fULL);
    CHECK_U64(x.ctx.trace_id_low, 0xe1be46a994272793ULL);
    CHECK_U64(x.ctx.parent_id, 0x53995c3f42cd8ad8ULL);
    CHECK(x.ctx.priority == DD_PRIORITY_UNSET);

    /* Root only (ALB, API Gateway for an uninstrumented caller): the trace, no parent */
    CHECK(xr(hdrs("x-amzn-trace-id", "Root=" XR_ROOT ";Sampled=1", NULL), &x));
    CHECK_U64(x.ctx.trace_id_high, 0x5759e988bd862e3fULL);
    CHECK_U64(x.ctx.trace_id_low, 0xe1be46a994272793ULL);
    CHECK_U64(x.ctx.parent_id, 0);
    CHECK(x.ctx.priority == 1);
    CHECK(xr(hdrs("x-amzn-trace-id", "Root=" XR_ROOT, NULL), &x));
    CHECK_U64(x.ctx.parent_id, 0);
    CHECK(x.ctx.priority == DD_PRIORITY_UNSET);
    /* other fields are kept for the X-Ray glue to forward (Self is not) */
    CHECK(xr(hdrs("x-amzn-trace-id",
                  "Root=" XR_ROOT ";Self=1-67891234-12456789abcdef012345678;"
                  "Lineage=a87bd80c:1|68fd508a:5",
                  NULL),
             &x));
    CHECK_STR(x.xray_extra, "Lineage=a87bd80c:1|68fd508a:5");

    const char *bad[] = {
        "Sampled=1",                                                   /* no Root */
        "Parent=" XR_PARENT ";Sampled=1",                              /* no Root */
        "Root=2-5759e988-bd862e3fe1be46a994272793;Parent=" XR_PARENT,  /* version */
        "Root=1-5759e98-bd862e3fe1be46a994272793;Parent=" XR_PARENT,   /* 7 hex */
        "Root=1-5759e9888-bd862e3fe1be46a99427279;Parent=" XR_PARENT,  /* 9 hex */
        "Root=1-5759e988-bd862e3fe1be46a99427279;Parent=" XR_PARENT,   /* 23 hex */
        "Root=1-5759e988-bd862e3fe1be46a9942727933;Parent=" XR_PARENT, /* 25 hex */
        "Root=1-5759e98g-bd862e3fe1be46a994272793;Parent=" XR_PARENT,  /* non-hex */
        "Root=1-5759e988-bd862e3fe1be46a99427279z;Parent=" XR_PARENT,  /* non-hex */
        "Root=1_5759e988-bd862e3fe1be46a994272793;Parent=" XR_PARENT,  /* separator */
        "Root=1-5759e988_bd862e3fe1be46a994272793;Parent=" XR_PARENT,  /* separator */
        "Root=1-5759e988-bd862e3f0000000000000000;Parent=" XR_PARENT,  /* low 64 bits zero */
        "Root=" XR_ROOT ";Parent=53995c3f42cd8ad",                     /* 15 hex */
        "Root=" XR_ROOT ";Parent=53995c3f42cd8ad80",                   /* 17 hex */
        "Root=" XR_ROOT ";Parent=0000000000000000",                    /* zero */
        "Root=" XR_ROOT ";Parent=53995c3f42cd8adx",                    /* non-hex */
        "Root=" XR_ROOT ";Parent=",                                    /* empty */
        "Root=;Parent=" XR_PARENT,                                     /* empty */
        "Root=" XR_ROOT ";Root=" XR_ROOT ";Parent=" XR_PARENT,         /* duplicate */
        "Root=" XR_ROOT ";Parent=" XR_PARENT ";Parent=" XR_PARENT,     /* duplicate */
        "Root=" XR_ROOT ";Parent=" XR_PARENT ";Sampled=1;Sampled=0",   /* duplicate */
        "Root=" XR_ROOT ";Parent=" XR_PARENT ";Sampled=1, Root=" XR_ROOT ";Parent=" XR_PARENT
        ";Sampled=1", /* httpd-joined */
        "Root=" XR_ROOT ";Parent=" XR_PARENT ", Self=1-67891234-12456789abcdef012345678",
        "Root=" XR_ROOT ";Parent=" XR_PARENT ";Sampled=1, CalledFrom=app", /* joined */
        "",
        "garbage",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        int ok = xr(hdrs("x-amzn-trace-id", bad[i], NULL), &x);
        CHECK(!ok);
        if (ok)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
    }
    /* two table entries */
    CHECK(!xr(hdrs("x-amzn-trace-id", "Root=" XR_ROOT ";Parent=" XR_PARENT, "x-amzn-trace-id",
                   "Root=" XR_ROOT ";Parent=" XR_PARENT, NULL),
              &x));
}

/* ---- dd_extract ------------------------------------------------------------------------- */

static void test_extract_order(void)
{
    dd_extracted_t x;
    dd_styles_t st;
    apr_table_t *h =
        hdrs("x-datadog-trace-id", "7", "x-datadog-parent-id", "8", "traceparent",
             "00-" TP_TRACE "-" TP_SPAN "-01", "x-b3-traceid", "0000000000000009", "x-b3-spanid",
             "000000000000000a", "x-amzn-trace-id", "Root=" XR_ROOT ";Parent=" XR_PARENT, NULL);

    dd_styles_default(&st);
    CHECK(dd_extract(pool, h, &st, &x) && x.style == DD_STYLE_DATADOG);
    CHECK_U64(x.ctx.trace_id_low, 7);

    CHECK(dd_styles_parse(pool, "tracecontext datadog", &st, NULL) == 0);
    CHECK(dd_extract(pool, h, &st, &x) && x.style == DD_STYLE_TRACECONTEXT);
    CHECK_U64(x.ctx.trace_id_low, 0xa3ce929d0e0e4736ULL);

    CHECK(dd_styles_parse(pool, "b3multi xray", &st, NULL) == 0);
    CHECK(dd_extract(pool, h, &st, &x) && x.style == DD_STYLE_B3MULTI);
    CHECK_U64(x.ctx.parent_id, 10);

    CHECK(dd_styles_parse(pool, "xray,b3", &st, NULL) == 0);
    CHECK(dd_extract(pool, h, &st, &x) && x.style == DD_STYLE_XRAY);
    CHECK_U64(x.ctx.parent_id, 0x53995c3f42cd8ad8ULL);

    /* a malformed first style falls through to the next */
    apr_table_set(h, "x-datadog-trace-id", "0");
    dd_styles_default(&st);
    CHECK(dd_extract(pool, h, &st, &x) && x.style == DD_STYLE_TRACECONTEXT);

    /* a style that is not configured is not read */
    h = hdrs("x-b3-traceid", "0000000000000009", "x-b3-spanid", "000000000000000a", NULL);
    x.ctx.trace_id_low = 99;
    CHECK(!dd_extract(pool, h, &st, &x));
    CHECK_U64(x.ctx.trace_id_low, 99);
    CHECK(dd_styles_parse(pool, "none", &st, NULL) == 0);
    CHECK(!dd_extract(pool, h, &st, &x));

    /* datadog wins, and the same trace's tracestate members of other vendors are kept */
    h = hdrs("x-datadog-trace-id", "11803532876627986230", "x-datadog-parent-id", "8",
             "traceparent", "00-" TP_TRACE "-" TP_SPAN "-01", "tracestate",
             "dd=s:1,foo=bar,baz=qux", NULL);
    dd_styles_default(&st);
    CHECK(dd_extract(pool, h, &st, &x) && x.style == DD_STYLE_DATADOG);
    CHECK_U64(x.ctx.trace_id_low, 0xa3ce929d0e0e4736ULL);
    CHECK_STR(x.tracestate, "foo=bar,baz=qux");
    /* ... but not a different trace's */
    apr_table_set(h, "x-datadog-trace-id", "5");
    CHECK(dd_extract(pool, h, &st, &x) && x.style == DD_STYLE_DATADOG);
    CHECK_STR(x.tracestate, NULL);
}

/* ---- W3C re-parenting and span links (dd-trace-js's rules) ----------------------------- */

static const char *link_attr(const dd_span_link_t *l, const char *key)
{
    const dd_meta_t *m = (const dd_meta_t *)l->attributes->elts;
    for (int i = 0; i < l->attributes->nelts; i++)
        if (strcmp(m[i].key, key) == 0)
            return m[i].value;
    return NULL;
}

static void test_reparenting(void)
{
    dd_extracted_t x;
    dd_styles_t st;
    /* the same 128-bit trace; datadog's parent 8, traceparent's 00f067aa0ba902b7, p: bb */
    apr_table_t *h = hdrs("x-datadog-trace-id", "11803532876627986230", "x-datadog-parent-id", "8",
                          "x-datadog-sampling-priority", "2", "x-datadog-tags",
                          "_dd.p.tid=4bf92f3577b34da6,_dd.p.dm=-4", "traceparent",
                          "00-" TP_TRACE "-" TP_SPAN "-01", "tracestate",
                          "dd=s:2;p:00000000000000bb;t.dm:-4,foo=bar", NULL);
    dd_styles_default(&st);
    CHECK(dd_extract(pool, h, &st, &x) && x.style == DD_STYLE_DATADOG);
    CHECK_U64(x.ctx.trace_id_high, 0x4bf92f3577b34da6ULL);
    CHECK_U64(x.ctx.parent_id, 0x00f067aa0ba902b7ULL); /* traceparent's parent wins */
    CHECK_STR(x.w3c_parent, "00000000000000bb");       /* tracestate p: */
    CHECK(x.ctx.priority == 2);
    CHECK_STR(x.tracestate, "foo=bar");
    CHECK(x.links == NULL);

    /* no p: in tracestate: the datadog parent becomes _dd.parent_id (16 hex) */
    apr_table_set(h, "tracestate", "dd=s:2;t.dm:-4,foo=bar");
    CHECK(dd_extract(pool, h, &st, &x));
    CHECK_U64(x.ctx.parent_id, 0x00f067aa0ba902b7ULL);
    CHECK_STR(x.w3c_parent, "0000000000000008");
    apr_table_unset(h, "tracestate");
    CHECK(dd_extract(pool, h, &st, &x));
    CHECK_STR(x.w3c_parent, "0000000000000008");
    CHECK_STR(x.tracestate, NULL);

    /* the same parent in both: nothing to re-parent */
    apr_table_set(h, "x-datadog-parent-id", "67667974448284343"); /* 0x00f067aa0ba902b7 */
    CHECK(dd_extract(pool, h, &st, &x));
    CHECK_U64(x.ctx.parent_id, 0x00f067aa0ba902b7ULL);
    CHECK_STR(x.w3c_parent, NULL);

    /* no datadog priority: the W3C one (and its decision maker) is taken */
    h = hdrs("x-datadog-trace-id", "11803532876627986230", "x-datadog-parent-id", "8",
             "x-datadog-tags", "_dd.p.tid=4bf92f3577b34da6", "traceparent",
             "00-" TP_TRACE "-" TP_SPAN "-01", "tracestate", "dd=s:2;t.dm:-3", NULL);
    CHECK(dd_extract(pool, h, &st, &x));
    CHECK(x.ctx.priority == 2);
    CHECK_STR(tag(&x, "_dd.p.dm"), "-3");

    /* tracecontext first: its own p: is _dd.parent_id, datadog changes nothing */
    CHECK(dd_styles_parse(pool, "tracecontext datadog", &st, NULL) == 0);
    apr_table_set(h, "tracestate", "dd=s:1;p:00000000000000cc");
    CHECK(dd_extract(pool, h, &st, &x) && x.style == DD_STYLE_TRACECONTEXT);
    CHECK_U64(x.ctx.parent_id, 0x00f067aa0ba902b7ULL);
    CHECK_STR(x.w3c_parent, "00000000000000cc");
    CHECK(x.links == NULL);

    /* b3multi first, tracecontext second, datadog not configured: the datadog headers still
     * give _dd.parent_id (dd-trace-js reads them for this) */
    CHECK(dd_styles_parse(pool, "b3multi tracecontext", &st, NULL) == 0);
    h = hdrs("x-b3-traceid", TP_TRACE, "x-b3-spanid", "0000000000000009", "x-b3-sampled", "1",
             "x-datadog-trace-id", "11803532876627986230", "x-datadog-parent-id", "10",
             "traceparent", "00-" TP_TRACE "-" TP_SPAN "-01", NULL);
    CHECK(dd_extract(pool, h, &st, &x) && x.style == DD_STYLE_B3MULTI);
    CHECK_U64(x.ctx.parent_id, 0x00f067aa0ba902b7ULL);
    CHECK_STR(x.w3c_parent, "000000000000000a");
    apr_table_unset(h, "x-datadog-parent-id");
    CHECK(dd_extract(pool, h, &st, &x));
    CHECK_U64(x.ctx.parent_id, 0x00f067aa0ba902b7ULL);
    CHECK_STR(x.w3c_parent, NULL);
}

static void test_span_links(void)
{
    dd_extracted_t x;
    dd_styles_t st;
    const dd_span_link_t *l;
    /* three traces: datadog 7/8 (kept), traceparent TP, b3 9/10 */
    apr_table_t *h =
        hdrs("x-datadog-trace-id", "7", "x-datadog-parent-id", "8", "x-datadog-sampling-priority",
             "1", "traceparent", "00-" TP_TRACE "-" TP_SPAN "-01", "tracestate",
             "dd=s:2;p:00000000000000bb,foo=bar", "x-b3-traceid", "0000000000000009", "x-b3-spanid",
             "000000000000000a", NULL);
    CHECK(dd_styles_parse(pool, "datadog tracecontext b3multi", &st, NULL) == 0);
    CHECK(dd_extract(pool, h, &st, &x) && x.style == DD_STYLE_DATADOG);
    CHECK_U64(x.ctx.trace_id_low, 7);
    CHECK_U64(x.ctx.parent_id, 8);
    CHECK(x.ctx.priority == 1);
    CHECK_STR(x.w3c_parent, NULL);
    CHECK_STR(x.tracestate, NULL); /* another trace's tracestate does not continue */
    CHECK(x.links && x.links->nelts == 2);
    if (!x.links || x.links->nelts != 2)
        return;
    l = (const dd_span_link_t *)x.links->elts;
    CHECK_U64(l[0].trace_id, 0xa3ce929d0e0e4736ULL);
    CHECK_U64(l[0].trace_id_high, 0x4bf92f3577b34da6ULL);
    CHECK_U64(l[0].span_id, 0x00f067aa0ba902b7ULL);
    CHECK(l[0].flags == 1);
    CHECK_STR(l[0].tracestate, "dd=s:2;p:00000000000000bb,foo=bar");
    CHECK_STR(link_attr(&l[0], "reason"), "terminated_context");
    CHECK_STR(link_attr(&l[0], "context_headers"), "tracecontext");
    CHECK(l[0].attributes->nelts == 2);
    CHECK_U64(l[1].trace_id, 9);
    CHECK_U64(l[1].trace_id_high, 0);
    CHECK_U64(l[1].span_id, 10);
    CHECK(l[1].flags == -1); /* b3 without x-b3-sampled: no decision, no flags */
    CHECK_STR(l[1].tracestate, NULL);
    CHECK_STR(link_attr(&l[1], "context_headers"), "b3multi");

    /* a dropped or user-rejected context: flags 0, or none for a negative priority */
    apr_table_set(h, "traceparent", "00-" TP_TRACE "-" TP_SPAN "-00");
    apr_table_set(h, "tracestate", "dd=s:-1");
    apr_table_set(h, "x-b3-sampled", "0");
    CHECK(dd_extract(pool, h, &st, &x) && x.links && x.links->nelts == 2);
    l = (const dd_span_link_t *)x.links->elts;
    CHECK(l[0].flags == -1);
    CHECK(l[1].flags == 0);

    /* a tracestate that is not clean text is not copied into the link */
    apr_table_set(h, "tracestate", "dd=s:0,foo=\x01");
    CHECK(dd_extract(pool, h, &st, &x) && x.links && x.links->nelts == 2);
    l = (const dd_span_link_t *)x.links->elts;
    CHECK_STR(l[0].tracestate, NULL);

    /* a 64-bit datadog id and a 128-bit traceparent with the same low half are two traces for
     * dd-trace-js (a link), yet the other vendors' tracestate members continue */
    h = hdrs("x-datadog-trace-id", "11803532876627986230", "x-datadog-parent-id", "8",
             "traceparent", "00-" TP_TRACE "-" TP_SPAN "-01", "tracestate", "dd=s:1,foo=bar", NULL);
    dd_styles_default(&st);
    CHECK(dd_extract(pool, h, &st, &x));
    CHECK_U64(x.ctx.parent_id, 8);
    CHECK_STR(x.tracestate, "foo=bar");
    CHECK(x.links && x.links->nelts == 1);

    /* a single style, or malformed other headers: no links */
    h = hdrs("x-datadog-trace-id", "7", "x-datadog-parent-id", "8", "traceparent", "garbage", NULL);
    CHECK(dd_extract(pool, h, &st, &x) && x.links == NULL);
}

/* ---- dd_styles_parse ------------------------------------------------------------------- */

/* DD_TRACE_PROPAGATION_EXTRACT_FIRST: the first context only (no links, no tracestate merge);
 * and the restart link (DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT=restart), as dd-trace-js. */
static void test_extract_first_and_restart(void)
{
    dd_styles_t st;
    dd_extracted_t x;
    const char *err = NULL;
    apr_array_header_t *links;
    const dd_span_link_t *l;
    const dd_meta_t *a;
    apr_table_t *h =
        hdrs("x-datadog-trace-id", "7", "x-datadog-parent-id", "8", "x-datadog-sampling-priority",
             "1", "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
             "tracestate", "dd=s:1,congo=t61", NULL);

    CHECK(dd_styles_parse(pool, "datadog tracecontext", &st, &err) == 0);
    CHECK(dd_extract(pool, h, &st, &x) == 1);
    CHECK(x.links && x.links->nelts == 1); /* the traceparent of another trace */
    st.extract_first = 1;
    CHECK(dd_extract(pool, h, &st, &x) == 1);
    CHECK(x.style == DD_STYLE_DATADOG && x.links == NULL && x.tracestate == NULL);
    CHECK_U64(x.ctx.trace_id_low, 7);
    CHECK(x.link_tracestate == NULL);

    /* restart: one link to the context itself */
    links = dd_restart_links(pool, &x);
    CHECK(links->nelts == 1);
    l = (const dd_span_link_t *)links->elts;
    CHECK_U64(l->trace_id, 7);
    CHECK_U64(l->trace_id_high, 0);
    CHECK_U64(l->span_id, 8);
    CHECK(l->flags == 1 && l->tracestate == NULL);
    a = (const dd_meta_t *)l->attributes->elts;
    CHECK(l->attributes->nelts == 2);
    CHECK_STR(a[0].key, "reason");
    CHECK_STR(a[0].value, "propagation_behavior_extract");
    CHECK_STR(a[1].key, "context_headers");
    CHECK_STR(a[1].value, "datadog");

    /* a tracecontext context links with its whole tracestate */
    CHECK(dd_styles_parse(pool, "tracecontext datadog", &st, &err) == 0);
    CHECK(dd_extract(pool, h, &st, &x) == 1);
    CHECK_STR(x.link_tracestate, "dd=s:1,congo=t61");
    l = (const dd_span_link_t *)dd_restart_links(pool, &x)->elts;
    CHECK_STR(l->tracestate, "dd=s:1,congo=t61");
    CHECK_U64(l->span_id, 0x00f067aa0ba902b7ULL);
    CHECK_STR(((const dd_meta_t *)l->attributes->elts)[1].value, "tracecontext");
}

/* Style baggage: the header is what the caller gives (unset when there is none). */
static void test_inject_baggage(void)
{
    dd_styles_t st;
    const char *err = NULL;
    dd_inject_t in = {0};
    apr_table_t *h = hdrs("baggage", "inbound=1", NULL);

    in.trace_id_low = 1;
    in.span_id = 2;
    in.priority = DD_PRIORITY_UNSET;
    CHECK(dd_styles_parse(pool, "baggage", &st, &err) == 0);
    in.baggage = "a=b,c=d";
    dd_inject(pool, h, &st, &in);
    CHECK_STR(apr_table_get(h, "baggage"), "a=b,c=d");
    in.baggage = NULL;
    dd_inject(pool, h, &st, &in);
    CHECK(apr_table_get(h, "baggage") == NULL);
    /* without the style the header is left as it came */
    apr_table_set(h, "baggage", "inbound=1");
    CHECK(dd_styles_parse(pool, "datadog", &st, &err) == 0);
    in.baggage = "a=b";
    dd_inject(pool, h, &st, &in);
    CHECK_STR(apr_table_get(h, "baggage"), "inbound=1");
}

static void test_styles(void)
{
    dd_styles_t st;
    const char *err = NULL;

    dd_styles_default(&st); /* the tracers' default: datadog,tracecontext,baggage */
    CHECK(st.n == 3 && st.order[0] == DD_STYLE_DATADOG && st.order[1] == DD_STYLE_TRACECONTEXT &&
          st.order[2] == DD_STYLE_BAGGAGE && !st.extract_first);
    CHECK(dd_styles_have(&st, DD_STYLE_BAGGAGE) && !dd_styles_have(&st, DD_STYLE_XRAY));
    CHECK(dd_styles_parse(pool, "Baggage, datadog", &st, &err) == 0);
    CHECK(st.n == 2 && st.order[0] == DD_STYLE_BAGGAGE && st.order[1] == DD_STYLE_DATADOG);

    CHECK(dd_styles_parse(pool, "datadog tracecontext", &st, &err) == 0);
    CHECK(st.n == 2 && st.order[0] == DD_STYLE_DATADOG && st.order[1] == DD_STYLE_TRACECONTEXT);
    CHECK(dd_styles_parse(pool, " XRay,, Datadog ,\tB3 tracecontext ", &st, &err) == 0);
    CHECK(st.n == 4 && st.order[0] == DD_STYLE_XRAY && st.order[1] == DD_STYLE_DATADOG &&
          st.order[2] == DD_STYLE_B3MULTI && st.order[3] == DD_STYLE_TRACECONTEXT);
    CHECK(dd_styles_parse(pool, "b3multi b3 datadog datadog", &st, &err) == 0);
    CHECK(st.n == 2 && st.order[0] == DD_STYLE_B3MULTI && st.order[1] == DD_STYLE_DATADOG);
    CHECK(dd_styles_parse(pool, "None", &st, &err) == 0);
    CHECK(st.n == 0);
    CHECK(dd_styles_parse(pool, "none none", &st, &err) == 0);
    CHECK(st.n == 0);

    st.n = 3;
    err = NULL;
    CHECK(dd_styles_parse(pool, "datadog foo", &st, &err) == -1);
    CHECK_STR(err, "unknown propagation style 'foo' (use datadog, tracecontext, b3multi, xray, "
                   "baggage or none)");
    CHECK(st.n == 3); /* untouched on error */
    err = NULL;
    CHECK(dd_styles_parse(pool, "none datadog", &st, &err) == -1);
    CHECK(err && strstr(err, "'none'"));
    err = NULL;
    CHECK(dd_styles_parse(pool, "datadog,none", &st, &err) == -1);
    CHECK(err != NULL);
    err = NULL;
    CHECK(dd_styles_parse(pool, " , ", &st, &err) == -1);
    CHECK(err != NULL);
    err = NULL;
    CHECK(dd_styles_parse(pool, NULL, &st, &err) == -1);
    CHECK(err != NULL);
    CHECK(dd_styles_parse(pool, "datadogx", &st, &err) == -1);
    CHECK(dd_styles_parse(pool, "b3 single header", &st, &err) == -1);
}

/* ---- injection -------------------------------------------------------------------------- */

static apr_array_header_t *meta(const char *k, ...)
{
    apr_array_header_t *a = apr_array_make(pool, 4, sizeof(dd_meta_t));
    va_list ap;
    va_start(ap, k);
    for (; k; k = va_arg(ap, const char *)) {
        dd_meta_t *m = apr_array_push(a);
        m->key = k;
        m->value = va_arg(ap, const char *);
    }
    va_end(ap);
    return a;
}

static void test_inject_datadog(void)
{
    dd_styles_t st = one_style(DD_STYLE_DATADOG);
    apr_table_t *h =
        hdrs("x-datadog-trace-id", "1", "x-datadog-trace-id", "2", "x-datadog-tags", "old=1",
             "x-datadog-origin", "old", "x-datadog-sampling-priority", "1", NULL);
    dd_inject_t in = {.trace_id_high = 0x640cfd8d00000000ULL,
                      .trace_id_low = 18446744073709551615ULL,
                      .span_id = 9223372036854775808ULL,
                      .priority = 2,
                      .origin = "rum",
                      .tags = meta("_dd.p.dm", "-4", "_dd.p.tid", "ignored", "env", "prod",
                                   "_dd.p.bad", "a,b", "_dd.p.sp", " x", "_dd.p.nul", NULL, NULL)};
    CHECK(dd_inject(pool, h, &st, &in) == 0);
    CHECK_STR(apr_table_get(h, "x-datadog-trace-id"), "18446744073709551615");
    CHECK_STR(apr_table_get(h, "x-datadog-parent-id"), "9223372036854775808");
    CHECK_STR(apr_table_get(h, "x-datadog-sampling-priority"), "2");
    CHECK_STR(apr_table_get(h, "x-datadog-origin"), "rum");
    CHECK_STR(apr_table_get(h, "x-datadog-tags"), "_dd.p.tid=640cfd8d00000000,_dd.p.dm=-4");
    CHECK(apr_table_elts(h)->nelts == 5); /* the repeat is gone */
    CHECK(apr_table_get(h, "traceparent") == NULL);

    /* undecided, no origin, no tags, 64-bit: those headers go, inbound ones included */
    dd_inject_t in2 = {.trace_id_low = 5, .span_id = 6, .priority = DD_PRIORITY_UNSET};
    CHECK(dd_inject(pool, h, &st, &in2) == 0);
    CHECK_STR(apr_table_get(h, "x-datadog-trace-id"), "5");
    CHECK_STR(apr_table_get(h, "x-datadog-parent-id"), "6");
    CHECK(apr_table_get(h, "x-datadog-sampling-priority") == NULL);
    CHECK(apr_table_get(h, "x-datadog-origin") == NULL);
    CHECK(apr_table_get(h, "x-datadog-tags") == NULL);

    /* over 512 bytes: the header is left out and the caller told */
    char big[600];
    memset(big, 'v', 480);
    big[480] = '\0';
    dd_inject_t in3 = {.trace_id_high = 1,
                       .trace_id_low = 5,
                       .span_id = 6,
                       .priority = 1,
                       .tags = meta("_dd.p.big", big, NULL)};
    apr_table_set(h, "x-datadog-tags", "stale=1");
    CHECK(dd_inject(pool, h, &st, &in3) == 1);
    CHECK(apr_table_get(h, "x-datadog-tags") == NULL);
    CHECK_STR(apr_table_get(h, "x-datadog-trace-id"), "5");
    /* ... while exactly 512 is fine: "_dd.p.tid=" 16 "," "_dd.p.big=" = 37 bytes */
    big[475] = '\0';
    CHECK(dd_inject(pool, h, &st, &in3) == 0);
    CHECK(apr_table_get(h, "x-datadog-tags") && strlen(apr_table_get(h, "x-datadog-tags")) == 512);
}

static void test_inject_tracecontext(void)
{
    dd_styles_t st = one_style(DD_STYLE_TRACECONTEXT);
    apr_table_t *h = hdrs("traceparent", "old", "tracestate", "dd=s:-1", "tracestate", "x=y", NULL);
    dd_inject_t in = {
        .trace_id_high = 0x4bf92f3577b34da6ULL,
        .trace_id_low = 0xa3ce929d0e0e4736ULL,
        .span_id = 0x00f067aa0ba902b7ULL,
        .priority = 2,
        .origin = "syn=th,x;y",
        .tags = meta("_dd.p.dm", "-4", "_dd.p.usr.id", "a=b", "_dd.p.tid", "x", "other", "1", NULL),
        .tracestate = "foo=bar, dd=s:9 ,baz=qux"};
    CHECK(dd_inject(pool, h, &st, &in) == 0);
    CHECK_STR(apr_table_get(h, "traceparent"), "00-" TP_TRACE "-" TP_SPAN "-01");
    CHECK_STR(apr_table_get(h, "tracestate"),
              "dd=s:2;p:" TP_SPAN ";o:syn~th_x_y;t.dm:-4;t.usr.id:a~b,foo=bar,baz=qux");
    CHECK(apr_table_elts(h)->nelts == 2);
    CHECK(apr_table_get(h, "x-datadog-trace-id") == NULL);

    /* every byte tracestate's dd= member cannot carry: '~' ',' ';' space, control, non-ASCII,
     * and ':' in a key */
    dd_inject_t inx = {.trace_id_low = 42,
                       .span_id = 1,
                       .priority = 1,
                       .origin = "a~b c;d\x01" "e\xc3\xa9",
                       .tags = meta("_dd.p.k:x", "v~w;z", NULL)};
    h = hdrs(NULL);
    CHECK(dd_inject(pool, h, &st, &inx) == 0);
    CHECK_STR(apr_table_get(h, "tracestate"),
              "dd=s:1;p:0000000000000001;o:a_b_c_d_e__;t.k_x:v_w_z");

    dd_inject_t in0 = {.trace_id_low = 42, .span_id = 1, .priority = 0};
    dd_inject(pool, h, &st, &in0);
    CHECK_STR(apr_table_get(h, "traceparent"),
              "00-0000000000000000000000000000002a-0000000000000001-00");
    CHECK_STR(apr_table_get(h, "tracestate"), "dd=s:0;p:0000000000000001");
    in0.priority = -1;
    dd_inject(pool, h, &st, &in0);
    CHECK_STR(apr_table_get(h, "tracestate"), "dd=s:-1;p:0000000000000001");
    CHECK(strcmp(apr_table_get(h, "traceparent") + 53, "00") == 0);
    in0.priority = DD_PRIORITY_UNSET;
    dd_inject(pool, h, &st, &in0);
    CHECK_STR(apr_table_get(h, "tracestate"), "dd=p:0000000000000001");
    CHECK(strcmp(apr_table_get(h, "traceparent") + 53, "00") == 0);

    /* 32 members at most */
    const char *many = "";
    for (int i = 0; i < 40; i++)
        many = apr_psprintf(pool, "%s%sk%d=v%d", many, i ? "," : "", i, i);
    in0.tracestate = many;
    dd_inject(pool, h, &st, &in0);
    int members = 1;
    for (const char *c = apr_table_get(h, "tracestate"); *c; c++)
        members += *c == ',';
    CHECK(members == 32);
    CHECK(strstr(apr_table_get(h, "tracestate"), ",k30=v30") != NULL);
    CHECK(strstr(apr_table_get(h, "tracestate"), ",k31=v31") == NULL);

    /* the dd= member stays within 256 bytes: tags that do not fit are left out */
    char big[300];
    memset(big, 'v', 250);
    big[250] = '\0';
    in0.tracestate = NULL;
    in0.tags = meta("_dd.p.big", big, "_dd.p.dm", "-4", NULL);
    dd_inject(pool, h, &st, &in0);
    CHECK_STR(apr_table_get(h, "tracestate"), "dd=p:0000000000000001;t.dm:-4");
}

static void test_inject_b3_xray(void)
{
    dd_styles_t st = one_style(DD_STYLE_B3MULTI);
    apr_table_t *h =
        hdrs("x-b3-flags", "1", "x-b3-parentspanid", "0000000000000001", "x-b3-sampled", "1", NULL);
    dd_inject_t in = {.trace_id_low = 0xa3ce929d0e0e4736ULL, .span_id = 1, .priority = -1};
    CHECK(dd_inject(pool, h, &st, &in) == 0);
    CHECK_STR(apr_table_get(h, "x-b3-traceid"), "a3ce929d0e0e4736");
    CHECK_STR(apr_table_get(h, "x-b3-spanid"), "0000000000000001");
    CHECK_STR(apr_table_get(h, "x-b3-sampled"), "0");
    CHECK(apr_table_get(h, "x-b3-flags") == NULL);
    CHECK(apr_table_get(h, "x-b3-parentspanid") == NULL);
    in.trace_id_high = 0x4bf92f3577b34da6ULL;
    in.priority = 2;
    dd_inject(pool, h, &st, &in);
    CHECK_STR(apr_table_get(h, "x-b3-traceid"), TP_TRACE);
    CHECK_STR(apr_table_get(h, "x-b3-sampled"), "1");
    in.priority = DD_PRIORITY_UNSET;
    dd_inject(pool, h, &st, &in);
    CHECK(apr_table_get(h, "x-b3-sampled") == NULL);

    st = one_style(DD_STYLE_XRAY);
    h = hdrs("x-amzn-trace-id", "Root=old", NULL);
    dd_inject_t xin = {.trace_id_high = 0x5759e988bd862e3fULL,
                       .trace_id_low = 0xe1be46a994272793ULL,
                       .span_id = 0x53995c3f42cd8ad8ULL,
                       .priority = 2};
    CHECK(dd_inject(pool, h, &st, &xin) == 0);
    CHECK_STR(apr_table_get(h, "X-Amzn-Trace-Id"),
              "Root=" XR_ROOT ";Parent=" XR_PARENT ";Sampled=1");
    CHECK(apr_table_elts(h)->nelts == 1);
    xin.priority = 0;
    dd_inject(pool, h, &st, &xin);
    CHECK_STR(apr_table_get(h, "x-amzn-trace-id"),
              "Root=" XR_ROOT ";Parent=" XR_PARENT ";Sampled=0");
    xin.priority = DD_PRIORITY_UNSET;
    xin.trace_id_high = 0;
    xin.trace_id_low = 1;
    dd_inject(pool, h, &st, &xin);
    CHECK_STR(apr_table_get(h, "x-amzn-trace-id"),
              "Root=1-00000000-000000000000000000000001;Parent=" XR_PARENT);

    /* every style at once; nothing without an id */
    dd_styles_t all;
    CHECK(dd_styles_parse(pool, "datadog tracecontext b3multi xray", &all, NULL) == 0);
    h = apr_table_make(pool, 8);
    xin.priority = 1;
    CHECK(dd_inject(pool, h, &all, &xin) == 0);
    CHECK(apr_table_elts(h)->nelts == 9); /* 3 datadog, 2 tracecontext, 3 b3, 1 xray */
    h = apr_table_make(pool, 8);
    dd_inject_t none = {.priority = 1, .span_id = 1};
    CHECK(dd_inject(pool, h, &all, &none) == 0);
    CHECK(apr_table_elts(h)->nelts == 0);
}

/* ---- round trips ------------------------------------------------------------------------ */

static dd_inject_t as_inject(const dd_extracted_t *x, uint64_t span_id)
{
    dd_inject_t in = {.trace_id_high = x->ctx.trace_id_high,
                      .trace_id_low = x->ctx.trace_id_low,
                      .span_id = span_id,
                      .priority = x->ctx.priority,
                      .origin = x->ctx.origin,
                      .tags = x->ctx.tags,
                      .tracestate = x->tracestate};
    return in;
}

/* Injects in with one style, extracts that style again, and checks every field survived. */
static void round_trip(dd_style_t style, const dd_inject_t *in, int expect_prio,
                       int expect_origin_tags)
{
    dd_styles_t st = one_style(style);
    apr_table_t *h = apr_table_make(pool, 8);
    dd_extracted_t y;
    memset(&y, 0, sizeof(y));
    CHECK(dd_inject(pool, h, &st, in) == 0);
    CHECK(dd_extract(pool, h, &st, &y));
    CHECK(y.style == style);
    CHECK_U64(y.ctx.trace_id_high, in->trace_id_high);
    CHECK_U64(y.ctx.trace_id_low, in->trace_id_low);
    CHECK_U64(y.ctx.parent_id, in->span_id);
    CHECK(y.ctx.priority == expect_prio);
    if (expect_origin_tags) {
        CHECK_STR(y.ctx.origin, in->origin);
        int n = in->tags ? in->tags->nelts : 0;
        CHECK(ntags(&y) == n);
        for (int i = 0; i < n; i++) {
            const dd_meta_t *m = &((const dd_meta_t *)in->tags->elts)[i];
            CHECK_STR(tag(&y, m->key), m->value);
        }
        CHECK_STR(y.tracestate, in->tracestate);
    }
}

static void test_round_trips(void)
{
    dd_extracted_t x;
    /* datadog, 128-bit, both halves >= 2^63 */
    CHECK(dd(hdrs("x-datadog-trace-id", "18446744073709551614", "x-datadog-parent-id", "2",
                  "x-datadog-sampling-priority", "-1", "x-datadog-origin", "synthetics",
                  "x-datadog-tags", "_dd.p.tid=fedcba9876543210,_dd.p.dm=-3,_dd.p.x=a=b", NULL),
             &x));
    dd_inject_t in = as_inject(&x, 0x8000000000000001ULL);
    round_trip(DD_STYLE_DATADOG, &in, -1, 1);
    in.priority = DD_PRIORITY_UNSET;
    round_trip(DD_STYLE_DATADOG, &in, DD_PRIORITY_UNSET, 1);

    /* tracecontext, 128-bit, with origin, tags and other vendors' members */
    CHECK(
        tc(hdrs("traceparent", "00-ffffffffffffffffffffffffffffffff-8000000000000000-01",
                "tracestate", "rojo=00f067aa0ba902b7,dd=s:2;o:rum;t.dm:-4;t.x:a~b,congo=t61", NULL),
           &x));
    in = as_inject(&x, UINT64_MAX);
    round_trip(DD_STYLE_TRACECONTEXT, &in, 2, 1);
    in.priority = 0;
    round_trip(DD_STYLE_TRACECONTEXT, &in, 0, 1);
    in.priority = -1;
    round_trip(DD_STYLE_TRACECONTEXT, &in, -1, 1);
    /* the same context also survives the datadog style */
    in.priority = 2;
    round_trip(DD_STYLE_DATADOG, &in, 2, 0);

    /* b3multi 64- and 128-bit */
    CHECK(b3(hdrs("x-b3-traceid", "ffffffffffffffff", "x-b3-spanid", "8000000000000000",
                  "x-b3-sampled", "0", NULL),
             &x));
    in = as_inject(&x, 0x8000000000000002ULL);
    round_trip(DD_STYLE_B3MULTI, &in, 0, 0);
    CHECK(b3(hdrs("x-b3-traceid", TP_TRACE, "x-b3-spanid", "8000000000000000", "x-b3-sampled", "1",
                  NULL),
             &x));
    in = as_inject(&x, 3);
    round_trip(DD_STYLE_B3MULTI, &in, 1, 0);

    /* xray: the Root goes out exactly as it came in, with our span as Parent */
    const char *roots[] = {XR_ROOT, "1-ffffffff-ffffffffffffffffffffffff",
                           "1-00000000-000000000000000000000001"};
    for (size_t i = 0; i < sizeof(roots) / sizeof(*roots); i++) {
        CHECK(xr(hdrs("x-amzn-trace-id",
                      apr_pstrcat(pool, "Root=", roots[i], ";Parent=" XR_PARENT ";Sampled=0", NULL),
                      NULL),
                 &x));
        in = as_inject(&x, 0xabcdef0123456789ULL);
        round_trip(DD_STYLE_XRAY, &in, 0, 0);
        apr_table_t *h = apr_table_make(pool, 4);
        dd_styles_t st = one_style(DD_STYLE_XRAY);
        dd_inject(pool, h, &st, &in);
        CHECK_STR(apr_table_get(h, "x-amzn-trace-id"),
                  apr_pstrcat(pool, "Root=", roots[i], ";Parent=abcdef0123456789;Sampled=0", NULL));
    }

    /* across styles: an X-Ray trace id continues as the same 128-bit W3C and datadog id */
    CHECK(xr(hdrs("x-amzn-trace-id", "Root=" XR_ROOT ";Parent=" XR_PARENT ";Sampled=1", NULL), &x));
    in = as_inject(&x, 77);
    dd_styles_t all;
    CHECK(dd_styles_parse(pool, "datadog tracecontext b3multi xray", &all, NULL) == 0);
    apr_table_t *h = apr_table_make(pool, 8);
    dd_inject(pool, h, &all, &in);
    CHECK_STR(apr_table_get(h, "traceparent"),
              "00-5759e988bd862e3fe1be46a994272793-000000000000004d-01");
    CHECK_STR(apr_table_get(h, "x-datadog-tags"), "_dd.p.tid=5759e988bd862e3f");
    CHECK_STR(apr_table_get(h, "x-datadog-trace-id"), "16266516598257821587");
    CHECK_STR(apr_table_get(h, "x-b3-traceid"), "5759e988bd862e3fe1be46a994272793");
    for (int i = 0; i < all.n; i++) {
        dd_styles_t st = one_style(all.order[i]);
        dd_extracted_t y;
        CHECK(dd_extract(pool, h, &st, &y));
        CHECK_U64(y.ctx.trace_id_high, 0x5759e988bd862e3fULL);
        CHECK_U64(y.ctx.trace_id_low, 0xe1be46a994272793ULL);
        CHECK_U64(y.ctx.parent_id, 77);
        CHECK(y.ctx.priority == 1);
    }
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    test_datadog_valid();
    test_datadog_tags();
    test_datadog_invalid();
    test_tracecontext_valid();
    test_tracecontext_invalid();
    test_b3();
    test_xray();
    test_extract_order();
    test_reparenting();
    test_span_links();
    test_styles();
    test_extract_first_and_restart();
    test_inject_baggage();
    test_inject_datadog();
    test_inject_tracecontext();
    test_inject_b3_xray();
    test_round_trips();
    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
