/* SPDX-License-Identifier: Apache-2.0 */
/* dd_propagation.c - trace context in and out of HTTP headers: datadog, tracecontext (W3C),
 * b3multi and X-Ray (CONTRACT §4).
 *
 * Every parser here reads attacker-controlled bytes, so each one works on (pointer, length)
 * slices, never writes into its input, and validates a whole context before touching the
 * caller's struct: a style either yields a complete valid context or nothing. Repeated headers
 * are ambiguous and therefore not a context (httpd joins repeats as "a, b", which fails the
 * syntax checks; a table holding two entries is caught by header_one()). The one exception is
 * tracestate, which W3C defines as a list that may be split over several header lines.
 *
 * Choices where the sources leave room (documented for the tests):
 * - A trace id whose low 64 bits are zero is not a context in any style: the agent's wire
 *   format keys traces by the low half, and dd_context_t uses low == 0 for "none".
 * - datadog: a trace id without a parent id is not a context (Datadog tracers accept that only
 *   for synthetics; we would rather start a new trace than guess).
 * - Values we re-emit (origin, tags, kept tracestate members) are printable ASCII only, so no
 *   inbound byte can reach an outbound header unchecked.
 */
#include "dd_propagation.h"

#include <limits.h>
#include <string.h>
#include <apr_strings.h>

#include "dd_span.h"
#include "dd_util.h"
#include "dd_xray.h"

/* W3C: a tracestate holds at most 32 list members; Datadog keeps its own member within 256
 * bytes. */
#define TS_MAX_MEMBERS 32
#define TS_DD_MAX_BYTES 256

/* ---- small string helpers ------------------------------------------------------------- */

static int ows(char c)
{
    return c == ' ' || c == '\t';
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && ows((*s)[0])) {
        (*s)++;
        (*n)--;
    }
    while (*n > 0 && ows((*s)[*n - 1]))
        (*n)--;
}

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

/* ASCII case-insensitive equality of a slice and a C string (locale-independent). */
static int slice_ieq(const char *s, size_t n, const char *lit)
{
    size_t i = 0;
    for (; i < n; i++)
        if (lit[i] == '\0' || lower(s[i]) != lower(lit[i]))
            return 0;
    return lit[i] == '\0';
}

static int slice_eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

static int is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return 1;
}

/* A set of ASCII bytes (a few banned ones), tested with a shift instead of a strchr() per
 * byte. Bytes above 0x7f are never in it. */
typedef struct {
    uint64_t w[2];
} byteset_t;

static inline byteset_t byteset(const char *chars)
{
    byteset_t b = {{0, 0}};
    for (; *chars; chars++) {
        unsigned c = (unsigned char)*chars;
        if (c < 128)
            b.w[c >> 6] |= 1ULL << (c & 63);
    }
    return b;
}

static inline int in_byteset(const byteset_t *b, unsigned char c)
{
    return c < 128 && ((b->w[c >> 6] >> (c & 63)) & 1);
}

/* Printable ASCII (0x20..0x7e) without any of the bytes in `banned`. */
static int printable(const char *s, size_t n, const char *banned)
{
    byteset_t set = byteset(banned);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || in_byteset(&set, c))
            return 0;
    }
    return 1;
}

/* Finds c in s[0..n) and returns its index, or n. */
static size_t find(const char *s, size_t n, char c)
{
    const char *q = memchr(s, c, n);
    return q ? (size_t)(q - s) : n;
}

/* A signed decimal int: optional '-', 1..10 digits, within int. (A value equal to
 * DD_PRIORITY_UNSET simply reads as "no priority".) */
static int parse_int(const char *s, size_t n, int *out)
{
    size_t i = 0;
    int neg = 0;
    int64_t v = 0;
    if (n > 0 && s[0] == '-') {
        neg = 1;
        i = 1;
    }
    if (i == n || n - i > 10)
        return 0;
    for (; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9)
            return 0;
        v = v * 10 + d;
    }
    if (neg)
        v = -v;
    if (v < INT_MIN || v > INT_MAX)
        return 0;
    *out = (int)v;
    return 1;
}

/* An origin: 1..1024 printable bytes, no comma, no edge spaces. */
static int valid_origin(const char *s, size_t n)
{
    return n > 0 && n <= DD_CAP_VALUE && printable(s, n, ",") && !ows(s[0]) && !ows(s[n - 1]);
}

/* A growable string in a pool (old buffers stay in the pool; they are small and the pool is
 * the request's). */
typedef struct {
    apr_pool_t *p;
    char *s;
    size_t len, cap;
} sbuf_t;

static void sb_init(sbuf_t *b, apr_pool_t *p, size_t cap)
{
    b->p = p;
    b->cap = cap;
    b->len = 0;
    b->s = apr_palloc(p, cap + 1);
    b->s[0] = '\0';
}

static void sb_put(sbuf_t *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap * 2 > b->len + n ? b->cap * 2 : b->len + n;
        char *ns = apr_palloc(b->p, cap + 1);
        memcpy(ns, b->s, b->len);
        b->s = ns;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_puts(sbuf_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* ---- headers and tags ------------------------------------------------------------------ */

/* The value of a header that must appear exactly once; NULL when absent or repeated (then
 * *repeated is set, when asked). */
static const char *header_one(const apr_table_t *h, const char *name, int *repeated)
{
    const apr_array_header_t *arr = apr_table_elts(h);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    const char *found = NULL;
    int n = 0;
    if (repeated)
        *repeated = 0;
    /* Most requests carry no context at all: apr_table_get's checksum index says "absent"
     * without comparing names, and only a present header needs the scan for a repeat. */
    if (!apr_table_get(h, name))
        return NULL;
    for (int i = 0; i < arr->nelts; i++) {
        if (e[i].key && e[i].val && slice_ieq(e[i].key, strlen(e[i].key), name)) {
            found = e[i].val;
            n++;
        }
    }
    if (repeated)
        *repeated = n > 1;
    return n == 1 ? found : NULL;
}

/* Every entry of a list-valued header joined with ',' (RFC 9110 §5.3), or NULL when absent. */
static const char *header_list(apr_pool_t *p, const apr_table_t *h, const char *name)
{
    const apr_array_header_t *arr = apr_table_elts(h);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    const char *out = NULL;
    for (int i = 0; i < arr->nelts; i++) {
        if (e[i].key && e[i].val && slice_ieq(e[i].key, strlen(e[i].key), name))
            out = out ? apr_pstrcat(p, out, ",", e[i].val, NULL) : e[i].val;
    }
    return out;
}

/* Sets (or replaces) a dd_meta_t tag in *tags, creating the array on first use. */
static void tag_set(apr_pool_t *p, apr_array_header_t **tags, const char *key, const char *value)
{
    if (!*tags)
        *tags = apr_array_make(p, 4, sizeof(dd_meta_t));
    dd_meta_t *m = (dd_meta_t *)(*tags)->elts;
    for (int i = 0; i < (*tags)->nelts; i++) {
        if (strcmp(m[i].key, key) == 0) {
            m[i].value = value;
            return;
        }
    }
    *(dd_meta_t *)apr_array_push(*tags) = (dd_meta_t){key, value, 0, 0};
}

static void extracted_init(dd_extracted_t *x, dd_style_t style)
{
    memset(x, 0, sizeof(*x));
    x->style = style;
    x->ctx.priority = DD_PRIORITY_UNSET;
}

static void set_error(dd_extracted_t *x, const char *err)
{
    if (!x->propagation_error)
        x->propagation_error = err;
}

/* ---- datadog --------------------------------------------------------------------------- */

/* x-datadog-tags: "k=v,k=v". All or nothing: one bad member and no tag is kept. Only _dd.p.*
 * keys are kept; _dd.p.tid becomes trace_id_high. Blanks around a member are tolerated, but
 * not ", ": that is how httpd joins a repeated header, and two tag sets are not one. */
static void parse_dd_tags(apr_pool_t *p, const char *s, dd_extracted_t *x)
{
    size_t n = strlen(s);
    apr_array_header_t *tags = NULL;
    uint64_t high = 0;
    const char *tid_error = NULL;

    if (n > DD_TAGS_MAX_BYTES) {
        set_error(x, "extract_max_size");
        return;
    }
    trim(&s, &n);
    if (n == 0)
        return;
    if (strstr(s, ", ")) {
        set_error(x, "decoding_error");
        return;
    }
    for (size_t pos = 0; pos <= n;) {
        size_t end = pos + find(s + pos, n - pos, ',');
        const char *m = s + pos;
        size_t mn = end - pos;
        trim(&m, &mn);
        size_t eq = find(m, mn, '=');
        const char *v = m + eq + 1;
        size_t vn = eq < mn ? mn - eq - 1 : 0;
        trim(&v, &vn);
        if (eq == mn || eq == 0 || vn == 0 || !printable(m, eq, " ,=") || !printable(v, vn, ",")) {
            set_error(x, "decoding_error");
            return;
        }
        if (slice_eq(m, eq, "_dd.p.tid")) {
            uint64_t t;
            if (vn == 16 && dd_parse_u64_hex(v, 16, &t) && t != 0) {
                high = t;
                tid_error = NULL;
            } else {
                tid_error = apr_pstrcat(p, "malformed_tid ", apr_pstrmemdup(p, v, vn), NULL);
                high = 0;
            }
        } else if (eq > 6 && memcmp(m, "_dd.p.", 6) == 0) {
            tag_set(p, &tags, apr_pstrmemdup(p, m, eq), apr_pstrmemdup(p, v, vn));
        }
        pos = end + 1;
    }
    x->ctx.tags = tags;
    x->ctx.trace_id_high = high;
    if (tid_error)
        set_error(x, tid_error);
}

int dd_extract_datadog(apr_pool_t *p, const apr_table_t *h, dd_extracted_t *out)
{
    const char *tid = header_one(h, "x-datadog-trace-id", NULL);
    const char *pid = header_one(h, "x-datadog-parent-id", NULL);
    const char *v;
    uint64_t trace, parent;
    int repeated, prio;
    dd_extracted_t x;

    if (!tid || !pid || !dd_parse_u64_dec(tid, strlen(tid), &trace) || trace == 0 ||
        !dd_parse_u64_dec(pid, strlen(pid), &parent) || parent == 0)
        return 0;

    extracted_init(&x, DD_STYLE_DATADOG);
    x.ctx.trace_id_low = trace;
    x.ctx.parent_id = parent;
    v = header_one(h, "x-datadog-sampling-priority", NULL);
    if (v && parse_int(v, strlen(v), &prio))
        x.ctx.priority = prio;
    v = header_one(h, "x-datadog-origin", NULL);
    if (v) {
        size_t n = strlen(v);
        trim(&v, &n);
        if (valid_origin(v, n))
            x.ctx.origin = apr_pstrmemdup(p, v, n);
    }
    v = header_one(h, "x-datadog-tags", &repeated);
    if (repeated)
        set_error(&x, "decoding_error");
    else if (v)
        parse_dd_tags(p, v, &x);
    *out = x;
    return 1;
}

/* ---- tracecontext ---------------------------------------------------------------------- */

/* "vv-<32 hex>-<16 hex>-<2 hex>[-...]", lowercase only; OWS already trimmed. */
static int parse_traceparent(const char *s, size_t n, uint64_t *hi, uint64_t *lo, uint64_t *parent,
                             int *sampled)
{
    uint64_t flags;
    if (n < 55 || !is_lower_hex(s, 2) || (s[0] == 'f' && s[1] == 'f'))
        return 0;
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return 0;
    if (!is_lower_hex(s + 3, 32) || !is_lower_hex(s + 36, 16) || !is_lower_hex(s + 53, 2))
        return 0;
    if (s[0] == '0' && s[1] == '0') {
        if (n != 55)
            return 0;
    } else if (n > 55 && s[55] != '-') {
        return 0; /* a later version may add fields, but only after a '-' */
    }
    if (!dd_parse_u64_hex(s + 3, 16, hi) || !dd_parse_u64_hex(s + 19, 16, lo) ||
        !dd_parse_u64_hex(s + 36, 16, parent) || !dd_parse_u64_hex(s + 53, 2, &flags))
        return 0;
    if (*lo == 0 || *parent == 0)
        return 0;
    *sampled = (int)(flags & 1);
    return 1;
}

/* A tracestate value with '~' standing for '=' (Datadog's escape), decoded and trimmed; NULL
 * when the value is empty, too long or not printable. */
static const char *ts_decode(apr_pool_t *p, const char *v, size_t n)
{
    trim(&v, &n);
    if (n == 0 || n > TS_DD_MAX_BYTES || !printable(v, n, ",;="))
        return NULL;
    char *o = apr_pstrmemdup(p, v, n);
    for (size_t i = 0; i < n; i++)
        if (o[i] == '~')
            o[i] = '=';
    return o;
}

/* The dd= member's value: "k:v;k:v". Unknown or bad pairs are skipped one by one. */
static void parse_dd_member(apr_pool_t *p, const char *s, size_t n, dd_extracted_t *x, int *ts_prio)
{
    for (size_t pos = 0; pos <= n;) {
        size_t end = pos + find(s + pos, n - pos, ';');
        const char *k = s + pos;
        size_t pn = end - pos;
        size_t colon = find(k, pn, ':');
        const char *v = k + colon + 1;
        size_t vn = colon < pn ? pn - colon - 1 : 0;
        pos = end + 1;
        if (colon == pn || colon == 0)
            continue;
        if (slice_eq(k, colon, "s")) {
            int prio;
            if (parse_int(v, vn, &prio))
                *ts_prio = prio;
        } else if (slice_eq(k, colon, "o")) {
            const char *o = ts_decode(p, v, vn);
            if (o)
                x->ctx.origin = o;
        } else if (slice_eq(k, colon, "p")) {
            uint64_t id;
            if (vn == 16 && dd_parse_u64_hex(v, 16, &id)) {
                char hex[17];
                dd_u64_to_hex16(id, hex);
                x->w3c_parent = apr_pstrdup(p, hex);
            }
        } else if (colon > 2 && k[0] == 't' && k[1] == '.') {
            /* _dd.p.tid comes from the traceparent's trace id, never from here */
            const char *val = ts_decode(p, v, vn);
            if (val && printable(k + 2, colon - 2, " ,;=") && !slice_eq(k + 2, colon - 2, "tid"))
                tag_set(p, &x->ctx.tags,
                        apr_pstrcat(p, "_dd.p.", apr_pstrmemdup(p, k + 2, colon - 2), NULL), val);
        }
    }
}

/* Walks the tracestate list: the first dd= member is parsed, the other valid members are
 * kept in order (at most TS_MAX_MEMBERS - 1, leaving room for ours). */
static void parse_tracestate(apr_pool_t *p, const char *s, dd_extracted_t *x, int *ts_prio)
{
    size_t n = strlen(s);
    int seen_dd = 0, kept = 0;
    sbuf_t others;
    sb_init(&others, p, 64);
    for (size_t pos = 0; pos <= n;) {
        size_t end = pos + find(s + pos, n - pos, ',');
        const char *m = s + pos;
        size_t mn = end - pos;
        pos = end + 1;
        trim(&m, &mn);
        size_t eq = find(m, mn, '=');
        if (mn == 0 || eq == mn || eq == 0 || !printable(m, mn, ",") || !printable(m, eq, " "))
            continue;
        if (slice_eq(m, eq, "dd")) {
            if (!seen_dd)
                parse_dd_member(p, m + eq + 1, mn - eq - 1, x, ts_prio);
            seen_dd = 1;
            continue;
        }
        if (kept == TS_MAX_MEMBERS - 1)
            continue;
        if (kept++)
            sb_put(&others, ",", 1);
        sb_put(&others, m, mn);
    }
    x->tracestate = kept ? others.s : NULL;
}

int dd_extract_tracecontext(apr_pool_t *p, const apr_table_t *h, dd_extracted_t *out)
{
    const char *tp = header_one(h, "traceparent", NULL);
    const char *ts;
    size_t n;
    uint64_t hi, lo, parent;
    int sampled, ts_prio = DD_PRIORITY_UNSET;
    dd_extracted_t x;

    if (!tp)
        return 0;
    n = strlen(tp);
    trim(&tp, &n);
    if (!parse_traceparent(tp, n, &hi, &lo, &parent, &sampled))
        return 0;

    extracted_init(&x, DD_STYLE_TRACECONTEXT);
    x.ctx.trace_id_high = hi;
    x.ctx.trace_id_low = lo;
    x.ctx.parent_id = parent;
    ts = header_list(p, h, "tracestate");
    if (ts)
        parse_tracestate(p, ts, &x, &ts_prio);
    /* The sampled flag is authoritative; s: refines it only when they agree. */
    if (ts_prio != DD_PRIORITY_UNSET && (ts_prio > 0) == (sampled != 0))
        x.ctx.priority = ts_prio;
    else
        x.ctx.priority = sampled ? 1 : 0;
    *out = x;
    return 1;
}

/* ---- b3multi --------------------------------------------------------------------------- */

int dd_extract_b3multi(apr_pool_t *p, const apr_table_t *h, dd_extracted_t *out)
{
    const char *t = header_one(h, "x-b3-traceid", NULL);
    const char *s = header_one(h, "x-b3-spanid", NULL);
    const char *v;
    size_t tn;
    uint64_t hi = 0, lo, span;
    dd_extracted_t x;

    (void)p;
    if (!t || !s)
        return 0;
    tn = strlen(t);
    if ((tn != 16 && tn != 32) || !is_lower_hex(t, tn))
        return 0;
    if (tn == 32 && !dd_parse_u64_hex(t, 16, &hi))
        return 0;
    if (!dd_parse_u64_hex(t + tn - 16, 16, &lo) || lo == 0)
        return 0;
    if (strlen(s) != 16 || !is_lower_hex(s, 16) || !dd_parse_u64_hex(s, 16, &span) || span == 0)
        return 0;

    extracted_init(&x, DD_STYLE_B3MULTI);
    x.ctx.trace_id_high = hi;
    x.ctx.trace_id_low = lo;
    x.ctx.parent_id = span;
    v = header_one(h, "x-b3-sampled", NULL);
    if (v && (strcmp(v, "1") == 0 || slice_ieq(v, strlen(v), "true")))
        x.ctx.priority = 1;
    else if (v && (strcmp(v, "0") == 0 || slice_ieq(v, strlen(v), "false")))
        x.ctx.priority = 0;
    v = header_one(h, "x-b3-flags", NULL);
    if (v && strcmp(v, "1") == 0)
        x.ctx.priority = 2; /* debug: keep */
    *out = x;
    return 1;
}

/* ---- xray ------------------------------------------------------------------------------ */

/* The header as X-Ray reads it (dd_xray_header_parse: a repeated key, a malformed Root or
 * Parent, or a ',' make it no context). A Root is required (it is the trace id); a Root with no
 * Parent (what ALBs and API Gateway add for an uninstrumented caller) continues the trace
 * with no parent span. Sampled=1/0 is the priority; "?" or anything else leaves it to httpd. */
int dd_extract_xray(apr_pool_t *p, const apr_table_t *h, dd_extracted_t *out)
{
    const char *s = header_one(h, "x-amzn-trace-id", NULL);
    dd_xray_header_t xh;
    dd_extracted_t x;

    if (!s || !dd_xray_header_parse(p, s, &xh) || !xh.has_root)
        return 0;
    extracted_init(&x, DD_STYLE_XRAY);
    x.ctx.trace_id_high = xh.root_hi;
    x.ctx.trace_id_low = xh.root_lo;
    x.ctx.parent_id = xh.parent;
    x.ctx.priority = xh.sampled == DD_XRAY_SAMPLED_YES  ? 1
                     : xh.sampled == DD_XRAY_SAMPLED_NO ? 0
                                                        : DD_PRIORITY_UNSET;
    x.xray_extra = xh.extra;
    *out = x;
    return 1;
}

/* ---- extraction in order --------------------------------------------------------------- */

static int extract_one(apr_pool_t *p, const apr_table_t *h, dd_style_t style, dd_extracted_t *x)
{
    switch (style) {
    case DD_STYLE_DATADOG:
        return dd_extract_datadog(p, h, x);
    case DD_STYLE_TRACECONTEXT:
        return dd_extract_tracecontext(p, h, x);
    case DD_STYLE_B3MULTI:
        return dd_extract_b3multi(p, h, x);
    case DD_STYLE_XRAY:
        return dd_extract_xray(p, h, x);
    case DD_STYLE_BAGGAGE:
        return 0; /* items, not a context: dd_baggage.h */
    }
    return 0;
}

const char *dd_style_name(dd_style_t style)
{
    switch (style) {
    case DD_STYLE_DATADOG:
        return "datadog";
    case DD_STYLE_TRACECONTEXT:
        return "tracecontext";
    case DD_STYLE_B3MULTI:
        return "b3multi";
    case DD_STYLE_XRAY:
        return "xray";
    case DD_STYLE_BAGGAGE:
        return "baggage";
    }
    return "unknown";
}

static int same_trace(const dd_extracted_t *a, const dd_extracted_t *b)
{
    return a->ctx.trace_id_low == b->ctx.trace_id_low &&
           a->ctx.trace_id_high == b->ctx.trace_id_high;
}

/* A link to the context other, with the attributes reason and context_headers (the style). */
static void push_link(apr_pool_t *p, apr_array_header_t *links, const dd_extracted_t *other,
                      const char *reason, const char *tracestate)
{
    apr_array_header_t *attrs = apr_array_make(p, 2, sizeof(dd_meta_t));
    const char *name = dd_style_name(other->style);
    dd_span_link_t *l;

    /* dd_meta_t: key, value, their lengths (literals: no control characters) */
    *(dd_meta_t *)apr_array_push(attrs) =
        (dd_meta_t){"reason", reason, 6, (uint32_t)strlen(reason)};
    *(dd_meta_t *)apr_array_push(attrs) =
        (dd_meta_t){"context_headers", name, 15, (uint32_t)strlen(name)};
    l = (dd_span_link_t *)apr_array_push(links);
    l->trace_id = other->ctx.trace_id_low;
    l->trace_id_high = other->ctx.trace_id_high;
    l->span_id = other->ctx.parent_id;
    /* dd-trace-js: flags only for a known, non-negative priority */
    l->flags = other->ctx.priority == DD_PRIORITY_UNSET || other->ctx.priority < 0
                   ? -1
                   : other->ctx.priority > 0;
    l->tracestate = tracestate;
    l->attributes = attrs;
}

/* The inbound tracestate, whole, when it is one clean header value; else NULL. */
static const char *whole_tracestate(apr_pool_t *p, const apr_table_t *h)
{
    const char *ts = header_list(p, h, "tracestate");
    size_t n = ts ? strlen(ts) : 0;
    if (ts)
        trim(&ts, &n);
    if (n > 0 && n <= DD_CAP_VALUE && printable(ts, n, ""))
        return apr_pstrmemdup(p, ts, n);
    return NULL;
}

/* A context of another trace that the request also carried: a span link on the local root. */
static void add_link(apr_pool_t *p, const apr_table_t *h, dd_extracted_t *x,
                     const dd_extracted_t *other)
{
    if (!x->links)
        x->links = apr_array_make(p, DD_STYLES_MAX, sizeof(dd_span_link_t));
    push_link(p, x->links, other, "terminated_context",
              other->style == DD_STYLE_TRACECONTEXT ? whole_tracestate(p, h) : NULL);
}

apr_array_header_t *dd_restart_links(apr_pool_t *p, const dd_extracted_t *x)
{
    apr_array_header_t *links = apr_array_make(p, 1, sizeof(dd_span_link_t));
    push_link(p, links, x, "propagation_behavior_extract", x->link_tracestate);
    return links;
}

/* The first context x (not tracecontext) and a tracecontext one w of the same trace: W3C
 * re-parenting, as dd-trace-js's resolveTraceContextConflicts does it. */
static void merge_tracecontext(apr_pool_t *p, const apr_table_t *h, dd_extracted_t *x,
                               const dd_extracted_t *w)
{
    x->tracestate = w->tracestate;
    if (x->ctx.priority == DD_PRIORITY_UNSET) {
        const dd_meta_t *m = w->ctx.tags ? (const dd_meta_t *)w->ctx.tags->elts : NULL;
        x->ctx.priority = w->ctx.priority;
        for (int i = 0; m && i < w->ctx.tags->nelts; i++)
            if (strcmp(m[i].key, "_dd.p.dm") == 0)
                tag_set(p, &x->ctx.tags, m[i].key, m[i].value);
    }
    if (x->ctx.parent_id == w->ctx.parent_id)
        return;
    if (w->w3c_parent) {
        x->w3c_parent = w->w3c_parent; /* the last Datadog span before a W3C-only hop */
    } else {
        dd_extracted_t d;
        uint64_t parent = 0;
        if (x->style == DD_STYLE_DATADOG)
            parent = x->ctx.parent_id;
        else if (dd_extract_datadog(p, h, &d))
            parent = d.ctx.parent_id;
        if (parent) {
            char *hex = apr_palloc(p, 17);
            dd_u64_to_hex16(parent, hex);
            x->w3c_parent = hex;
        }
    }
    x->ctx.parent_id = w->ctx.parent_id; /* traceparent's parent is the real one */
}

int dd_extract(apr_pool_t *p, const apr_table_t *h, const dd_styles_t *styles, dd_extracted_t *out)
{
    dd_extracted_t x, y;
    int found = 0;

    for (int i = 0; i < styles->n; i++) {
        if (!found) {
            found = extract_one(p, h, styles->order[i], &x);
            if (found && styles->extract_first)
                break;
            continue;
        }
        if (!extract_one(p, h, styles->order[i], &y))
            continue;
        if (!same_trace(&x, &y))
            add_link(p, h, &x, &y);
        else if (y.style == DD_STYLE_TRACECONTEXT)
            merge_tracecontext(p, h, &x, &y);
    }
    if (!found)
        return 0;
    /* A 64-bit datadog context and a 128-bit traceparent with the same low half: other
     * vendors' tracestate members still continue (their part of the trace is the same). */
    if (!styles->extract_first && !x.tracestate && x.style != DD_STYLE_TRACECONTEXT &&
        x.ctx.trace_id_high == 0) {
        for (int i = 0; i < styles->n; i++)
            if (styles->order[i] == DD_STYLE_TRACECONTEXT && dd_extract_tracecontext(p, h, &y) &&
                y.ctx.trace_id_low == x.ctx.trace_id_low)
                x.tracestate = y.tracestate;
    }
    if (x.style == DD_STYLE_TRACECONTEXT || x.tracestate)
        x.link_tracestate = whole_tracestate(p, h);
    *out = x;
    return 1;
}

/* ---- styles ---------------------------------------------------------------------------- */

void dd_styles_default(dd_styles_t *out)
{
    memset(out, 0, sizeof(*out));
    out->n = 3;
    out->order[0] = DD_STYLE_DATADOG;
    out->order[1] = DD_STYLE_TRACECONTEXT;
    out->order[2] = DD_STYLE_BAGGAGE;
}

int dd_styles_have(const dd_styles_t *styles, dd_style_t style)
{
    for (int i = 0; i < styles->n; i++)
        if (styles->order[i] == style)
            return 1;
    return 0;
}

int dd_styles_parse(apr_pool_t *p, const char *s, dd_styles_t *out, const char **err)
{
    static const struct {
        const char *name;
        dd_style_t style;
    } names[] = {
        {"datadog", DD_STYLE_DATADOG}, {"tracecontext", DD_STYLE_TRACECONTEXT},
        {"b3multi", DD_STYLE_B3MULTI}, {"b3", DD_STYLE_B3MULTI},
        {"xray", DD_STYLE_XRAY},       {"baggage", DD_STYLE_BAGGAGE},
    };
    dd_styles_t r = {0};
    int none = 0, words = 0;
    size_t n = s ? strlen(s) : 0;

    for (size_t pos = 0; pos < n;) {
        size_t len = strcspn(s + pos, " \t,");
        const char *w = s + pos;
        if (len == 0) {
            pos++;
            continue;
        }
        pos += len;
        words++;
        if (slice_ieq(w, len, "none")) {
            none = 1;
            continue;
        }
        size_t k = 0;
        while (k < sizeof(names) / sizeof(names[0]) && !slice_ieq(w, len, names[k].name))
            k++;
        if (k == sizeof(names) / sizeof(names[0])) {
            if (err)
                *err = apr_psprintf(p,
                                    "unknown propagation style '%s' (use datadog, tracecontext, "
                                    "b3multi, xray, baggage or none)",
                                    apr_pstrmemdup(p, w, len));
            return -1;
        }
        int dup = 0;
        for (int i = 0; i < r.n; i++)
            dup |= r.order[i] == names[k].style;
        if (!dup)
            r.order[r.n++] = names[k].style;
    }
    if (words == 0) {
        if (err)
            *err =
                "no propagation style given (use datadog, tracecontext, b3multi, xray, baggage or "
                "none)";
        return -1;
    }
    if (none && r.n > 0) {
        if (err)
            *err = "propagation style 'none' cannot be combined with other styles";
        return -1;
    }
    *out = r;
    return 0;
}

/* ---- injection ------------------------------------------------------------------------- */

static int decided(const dd_inject_t *in)
{
    return in->priority != DD_PRIORITY_UNSET;
}

/* A tag we may propagate: _dd.p.<something> (not tid, which is derived), printable, unable to
 * break the x-datadog-tags syntax, and without edge spaces (which a reader would trim, so the
 * value would not come back as sent). Every tag extraction yields passes this. */
static int propagatable(const dd_meta_t *m)
{
    size_t kn = m->key ? strlen(m->key) : 0;
    size_t vn = m->value ? strlen(m->value) : 0;
    return kn > 6 && vn > 0 && memcmp(m->key, "_dd.p.", 6) == 0 &&
           strcmp(m->key, "_dd.p.tid") != 0 && printable(m->key, kn, " ,=") &&
           printable(m->value, vn, ",") && !ows(m->value[0]) && !ows(m->value[vn - 1]);
}

static int inject_datadog(apr_pool_t *p, apr_table_t *h, const dd_inject_t *in)
{
    sbuf_t tags;
    char hex[17];

    apr_table_setn(h, "x-datadog-trace-id", dd_u64_to_dec(p, in->trace_id_low));
    apr_table_setn(h, "x-datadog-parent-id", dd_u64_to_dec(p, in->span_id));
    if (decided(in))
        apr_table_setn(h, "x-datadog-sampling-priority", apr_itoa(p, in->priority));
    else
        apr_table_unset(h, "x-datadog-sampling-priority");
    if (in->origin && valid_origin(in->origin, strlen(in->origin)))
        apr_table_setn(h, "x-datadog-origin", in->origin);
    else
        apr_table_unset(h, "x-datadog-origin");

    sb_init(&tags, p, DD_TAGS_MAX_BYTES);
    if (in->trace_id_high) {
        dd_u64_to_hex16(in->trace_id_high, hex);
        sb_puts(&tags, "_dd.p.tid=");
        sb_puts(&tags, hex);
    }
    if (in->tags) {
        const dd_meta_t *m = (const dd_meta_t *)in->tags->elts;
        for (int i = 0; i < in->tags->nelts; i++) {
            if (!propagatable(&m[i]))
                continue;
            if (tags.len)
                sb_put(&tags, ",", 1);
            sb_puts(&tags, m[i].key);
            sb_put(&tags, "=", 1);
            sb_puts(&tags, m[i].value);
        }
    }
    if (tags.len == 0 || tags.len > DD_TAGS_MAX_BYTES) {
        apr_table_unset(h, "x-datadog-tags");
        return tags.len > DD_TAGS_MAX_BYTES;
    }
    apr_table_setn(h, "x-datadog-tags", tags.s);
    return 0;
}

/* Copies s into b for a tracestate dd= value: '=' becomes '~' (unless banned), and anything
 * that would break the list syntax (',', ';', '~', space, control and non-ASCII bytes, and
 * the bytes in `banned`) becomes '_'. */
static void ts_encode(sbuf_t *b, const char *s, const char *banned)
{
    byteset_t set = byteset(banned), list = byteset(",;~");
    size_t from = b->len;
    set.w[0] |= list.w[0];
    set.w[1] |= list.w[1];
    sb_puts(b, s); /* copied, then rewritten where it must be */
    for (size_t i = from; i < b->len; i++) {
        unsigned char c = (unsigned char)b->s[i];
        if (c <= 0x20 || c > 0x7e || in_byteset(&set, c))
            b->s[i] = '_';
        else if (c == '=')
            b->s[i] = '~';
    }
}

static void inject_tracecontext(apr_pool_t *p, apr_table_t *h, const dd_inject_t *in)
{
    /* 00-<32 hex trace id>-<16 hex span id>-<flags> */
    char *tp = apr_palloc(p, 56), *span = tp + 36;
    sbuf_t ts, pair;
    int members = 1;

    memcpy(tp, "00-", 3);
    dd_u64_to_hex16(in->trace_id_high, tp + 3);
    dd_u64_to_hex16(in->trace_id_low, tp + 19);
    tp[35] = '-';
    dd_u64_to_hex16(in->span_id, span);
    memcpy(tp + 52, decided(in) && in->priority > 0 ? "-01" : "-00", 4);
    apr_table_setn(h, "traceparent", tp);

    sb_init(&ts, p, TS_DD_MAX_BYTES);
    sb_puts(&ts, "dd=");
    if (decided(in)) {
        sb_puts(&ts, "s:");
        sb_puts(&ts, apr_itoa(p, in->priority));
        sb_put(&ts, ";", 1);
    }
    sb_puts(&ts, "p:");
    sb_put(&ts, span, 16); /* span is inside traceparent: not NUL-terminated here */
    if (in->origin && in->origin[0]) {
        sb_init(&pair, p, 64);
        sb_puts(&pair, ";o:");
        ts_encode(&pair, in->origin, "");
        if (ts.len + pair.len <= TS_DD_MAX_BYTES)
            sb_put(&ts, pair.s, pair.len);
    }
    if (in->tags) {
        const dd_meta_t *m = (const dd_meta_t *)in->tags->elts;
        for (int i = 0; i < in->tags->nelts; i++) {
            if (!m[i].key || !m[i].value || !m[i].value[0] || strlen(m[i].key) <= 6 ||
                memcmp(m[i].key, "_dd.p.", 6) != 0 || strcmp(m[i].key, "_dd.p.tid") == 0)
                continue;
            sb_init(&pair, p, 64);
            sb_puts(&pair, ";t.");
            ts_encode(&pair, m[i].key + 6, ":=");
            sb_put(&pair, ":", 1);
            ts_encode(&pair, m[i].value, "");
            if (ts.len + pair.len <= TS_DD_MAX_BYTES) /* the dd= member stays within 256 */
                sb_put(&ts, pair.s, pair.len);
        }
    }
    if (in->tracestate) {
        const char *s = in->tracestate;
        size_t n = strlen(s);
        for (size_t pos = 0; pos <= n && members < TS_MAX_MEMBERS;) {
            size_t end = pos + find(s + pos, n - pos, ',');
            const char *m = s + pos;
            size_t mn = end - pos;
            pos = end + 1;
            trim(&m, &mn);
            size_t eq = find(m, mn, '=');
            if (mn == 0 || eq == mn || eq == 0 || slice_eq(m, eq, "dd") || !printable(m, mn, ","))
                continue;
            sb_put(&ts, ",", 1);
            sb_put(&ts, m, mn);
            members++;
        }
    }
    apr_table_setn(h, "tracestate", ts.s);
}

static void inject_b3multi(apr_pool_t *p, apr_table_t *h, const dd_inject_t *in)
{
    char hi[17], lo[17], span[17];
    dd_u64_to_hex16(in->trace_id_high, hi);
    dd_u64_to_hex16(in->trace_id_low, lo);
    dd_u64_to_hex16(in->span_id, span);
    apr_table_set(h, "x-b3-traceid", in->trace_id_high ? apr_pstrcat(p, hi, lo, NULL) : lo);
    apr_table_set(h, "x-b3-spanid", span);
    if (decided(in))
        apr_table_set(h, "x-b3-sampled", in->priority > 0 ? "1" : "0");
    else
        apr_table_unset(h, "x-b3-sampled");
    /* Inbound values describe the caller's span, not ours. */
    apr_table_unset(h, "x-b3-flags");
    apr_table_unset(h, "x-b3-parentspanid");
}

static void inject_xray(apr_pool_t *p, apr_table_t *h, const dd_inject_t *in)
{
    char hi[17], lo[17], span[17];
    dd_u64_to_hex16(in->trace_id_high, hi);
    dd_u64_to_hex16(in->trace_id_low, lo);
    dd_u64_to_hex16(in->span_id, span);
    /* The 32 digits hi||lo split 8 / 24, so an inbound Root goes out unchanged. */
    apr_table_set(h, "X-Amzn-Trace-Id",
                  apr_psprintf(p, "Root=1-%.8s-%s%s;Parent=%s%s", hi, hi + 8, lo, span,
                               !decided(in)       ? ""
                               : in->priority > 0 ? ";Sampled=1"
                                                  : ";Sampled=0"));
}

int dd_inject(apr_pool_t *p, apr_table_t *h, const dd_styles_t *styles, const dd_inject_t *in)
{
    int dropped = 0;
    if (in->trace_id_low == 0 || in->span_id == 0)
        return 0;
    for (int i = 0; i < styles->n; i++) {
        switch (styles->order[i]) {
        case DD_STYLE_DATADOG:
            dropped |= inject_datadog(p, h, in);
            break;
        case DD_STYLE_TRACECONTEXT:
            inject_tracecontext(p, h, in);
            break;
        case DD_STYLE_B3MULTI:
            inject_b3multi(p, h, in);
            break;
        case DD_STYLE_XRAY:
            inject_xray(p, h, in);
            break;
        case DD_STYLE_BAGGAGE:
            /* what the tracer would send: the items read (normalized, within the limits), so
             * a malformed or untrusted inbound header goes no further */
            if (in->baggage)
                apr_table_setn(h, "baggage", in->baggage);
            else
                apr_table_unset(h, "baggage");
            break;
        }
    }
    return dropped;
}
