/* SPDX-License-Identifier: Apache-2.0 */
/* dd_gateway.c - x-dd-proxy* headers -> dd_gateway_t (CONTRACT §3.2).
 *
 * The rules, in the order they are checked:
 *   1. no x-dd-proxy and no x-dd-proxy-request-time-ms: not a gateway request (DD_GW_ABSENT);
 *   2. x-dd-proxy must name a gateway we know, case-insensitively, after one pair of single
 *      quotes (API Gateway v1's literal syntax) and surrounding blanks are removed;
 *   3. x-dd-proxy-request-time-ms must be plain decimal Unix milliseconds inside
 *      [now - 1 h, now + 5 min]: anything else would put the span somewhere absurd. Azure
 *      Application Gateway and Front Door have no request time to send: for them the header
 *      is optional (dd-trace-js's providesTimestamp: false), and without it the span starts
 *      with httpd's request; a time they do send is checked as any other;
 *   4. every other header is optional; an empty one counts as absent.
 * Values are made valid UTF-8 and capped before they can become tags.
 */
#include "dd_gateway.h"
#include "dd_util.h"

#include <stddef.h>
#include <string.h>
#include <strings.h>
#include <apr_strings.h>

/* As dd-trace-js's supportedProxies (plugins/util/inferred_proxy.js). */
static const struct {
    const char *header; /* the x-dd-proxy value, also the component tag */
    const char *span_name;
    int time_optional; /* the gateway may send no x-dd-proxy-request-time-ms */
    int aws;
} gateways[DD_GW_KIND_COUNT] = {
    [DD_GW_AWS_APIGATEWAY] = {"aws-apigateway", "aws.apigateway", 0, 1},
    [DD_GW_AWS_HTTPAPI] = {"aws-httpapi", "aws.httpapi", 0, 1},
    [DD_GW_AZURE_APIM] = {"azure-apim", "azure.apim", 0, 0},
    [DD_GW_AZURE_GW] = {"azure-gw", "azure.app-gateway", 1, 0},
    [DD_GW_AZURE_FD] = {"azure-fd", "azure.frontdoor", 1, 0},
};

static const char *const status_names[DD_GW_STATUS_COUNT] = {
    [DD_GW_OK] = "ok",
    [DD_GW_ABSENT] = "absent",
    [DD_GW_NO_PROXY] = "missing_proxy",
    [DD_GW_EMPTY_PROXY] = "empty_proxy",
    [DD_GW_UNKNOWN_PROXY] = "unknown_proxy",
    [DD_GW_NO_TIME] = "missing_time",
    [DD_GW_BAD_TIME] = "bad_time",
    [DD_GW_TIME_TOO_OLD] = "time_too_old",
    [DD_GW_TIME_IN_FUTURE] = "time_in_future",
    [DD_GW_UNTRUSTED_PEER] = "untrusted_peer",
};

const char *dd_gateway_span_name(dd_gw_kind_t kind)
{
    return kind < DD_GW_KIND_COUNT ? gateways[kind].span_name : "unknown";
}

const char *dd_gateway_component(dd_gw_kind_t kind)
{
    return kind < DD_GW_KIND_COUNT ? gateways[kind].header : "unknown";
}

int dd_gateway_is_aws(dd_gw_kind_t kind)
{
    return kind < DD_GW_KIND_COUNT && gateways[kind].aws;
}

const char *dd_gateway_status_name(dd_gw_status_t status)
{
    return status < DD_GW_STATUS_COUNT ? status_names[status] : "unknown";
}

/* Narrows [*s, *s + *len) to the value without surrounding blanks and one pair of single
 * quotes. Does not copy. */
static void unwrap(const char **s, size_t *len)
{
    const char *v = *s;
    size_t n = *len;
    while (n && (v[0] == ' ' || v[0] == '\t'))
        v++, n--;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n >= 2 && v[0] == '\'' && v[n - 1] == '\'') {
        v++;
        n -= 2;
    }
    *s = v;
    *len = n;
}

/* An optional header's value: NULL when absent or empty, else unwrapped and cleaned. */
static const char *optional(apr_pool_t *p, const char *v, size_t cap, int *truncated)
{
    size_t n;
    if (!v)
        return NULL;
    n = strlen(v);
    unwrap(&v, &n);
    if (n == 0)
        return NULL;
    if (v[n] != '\0')
        v = apr_pstrmemdup(p, v, n); /* the quotes or blanks were cut off the end */
    return dd_str_clean(p, v, n, cap, truncated);
}

/* The x-dd-proxy* headers, found in one pass over the table. apr_table_get() once per name
 * would scan the table eleven times, and since APR's key checksum covers only the first four
 * bytes ("x-dd"), every one of those scans strcasecmp()s every x-dd-proxy* header. */
enum {
    H_PROXY,
    H_TIME,
    H_METHOD,
    H_PATH,
    H_RESOURCE_PATH,
    H_DOMAIN,
    H_STAGE,
    H_REGION,
    H_ACCOUNT,
    H_API,
    H_USER,
    H_COUNT
};

static const struct {
    const char *suffix; /* after "x-dd-proxy" */
    size_t len;
} header_names[H_COUNT] = {
    [H_PROXY] = {"", 0},
    [H_TIME] = {"-request-time-ms", 16},
    [H_METHOD] = {"-httpmethod", 11},
    [H_PATH] = {"-path", 5},
    [H_RESOURCE_PATH] = {"-resource-path", 14},
    [H_DOMAIN] = {"-domain-name", 12},
    [H_STAGE] = {"-stage", 6},
    [H_REGION] = {"-region", 7},
    [H_ACCOUNT] = {"-account-id", 11},
    [H_API] = {"-api-id", 7},
    [H_USER] = {"-user", 5},
};

/* Whether word a (from a header name) equals word b (lowercase letters and '-') in any case:
 * the bytes where b has a letter (bit 6 set; '-' has it clear) are folded with | 0x20, which
 * maps only 'A'..'Z' onto 'a'..'z'. */
static inline int same_word(uint64_t a, uint64_t b)
{
    return (a | ((b & 0x4040404040404040ULL) >> 1)) == b;
}

/* Whether name (strlen(name) == n) equals lower (n bytes of lowercase letters and '-') in any
 * case: a word at a time, the last word overlapping, never reading outside either string. */
static int same_name(const char *name, const char *lower, size_t n)
{
    if (n >= 8) {
        for (size_t i = 0; i + 8 < n; i += 8)
            if (!same_word(dd_load64(name + i), dd_load64(lower + i)))
                return 0;
        return same_word(dd_load64(name + n - 8), dd_load64(lower + n - 8));
    }
    if (n >= 4)
        return same_word(dd_load32(name) | dd_load32(name + n - 4) << 32,
                         dd_load32(lower) | dd_load32(lower + n - 4) << 32);
    for (size_t i = 0; i < n; i++)
        if (!same_word((unsigned char)name[i], (unsigned char)lower[i]))
            return 0;
    return 1;
}

/* The length of an "x-dd-proxy..." name in any case, or -1. The first bytes are checked
 * inline, so the other headers (Accept, X-Forwarded-For ...) cost a few instructions. */
static inline ptrdiff_t dd_proxy_name_len(const char *k)
{
    size_t n;
    if (!k || (k[0] | 0x20) != 'x' || k[1] != '-' || (k[2] | 0x20) != 'd')
        return -1;
    n = strlen(k);
    return n >= 10 && same_name(k, "x-dd-proxy", 10) ? (ptrdiff_t)n : -1;
}

static inline int is_dd_proxy_header(const char *k)
{
    return dd_proxy_name_len(k) >= 0;
}

/* Fills v[] with the first value of each header (as apr_table_get would). */
static void find_headers(const apr_table_t *h, const char *v[H_COUNT])
{
    const apr_array_header_t *arr = apr_table_elts(h);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;

    for (int j = 0; j < H_COUNT; j++)
        v[j] = NULL;
    for (int i = 0; i < arr->nelts; i++) {
        ptrdiff_t len = dd_proxy_name_len(e[i].key);
        size_t n;
        if (len < 0)
            continue;
        n = (size_t)len - 10; /* the suffix after "x-dd-proxy" */
        for (int j = 0; j < H_COUNT; j++) {
            if (header_names[j].len == n && same_name(e[i].key + 10, header_names[j].suffix, n)) {
                if (!v[j])
                    v[j] = e[i].val;
                break;
            }
        }
    }
}

dd_gw_status_t dd_gateway_parse(apr_pool_t *p, const apr_table_t *h, int64_t now_ms,
                                dd_gateway_t *gw)
{
    const char *v[H_COUNT];
    const char *proxy, *time;
    size_t plen, tlen;
    uint64_t ms;
    int kind = -1;

    find_headers(h, v);
    proxy = v[H_PROXY];
    time = v[H_TIME];
    if (!proxy)
        return time ? DD_GW_NO_PROXY : DD_GW_ABSENT;
    plen = strlen(proxy);
    unwrap(&proxy, &plen);
    if (plen == 0)
        return DD_GW_EMPTY_PROXY;
    for (int k = 0; k < DD_GW_KIND_COUNT; k++) {
        if (strlen(gateways[k].header) == plen &&
            strncasecmp(proxy, gateways[k].header, plen) == 0) {
            kind = k;
            break;
        }
    }
    if (kind < 0)
        return DD_GW_UNKNOWN_PROXY;

    tlen = time ? strlen(time) : 0;
    if (time)
        unwrap(&time, &tlen);
    if (tlen == 0 && !gateways[kind].time_optional)
        return DD_GW_NO_TIME;
    if (tlen == 0)
        ms = (uint64_t)now_ms; /* the span starts with the request (no_time) */
    else if (!dd_parse_u64_dec(time, tlen, &ms) || ms > (uint64_t)INT64_MAX / 1000000)
        return DD_GW_BAD_TIME;
    else if ((int64_t)ms < now_ms - DD_GW_MAX_AGE_MS)
        return DD_GW_TIME_TOO_OLD;
    else if ((int64_t)ms > now_ms + DD_GW_MAX_AHEAD_MS)
        return DD_GW_TIME_IN_FUTURE;

    memset(gw, 0, sizeof(*gw));
    gw->kind = (dd_gw_kind_t)kind;
    gw->request_time_ms = (int64_t)ms;
    gw->no_time = tlen == 0;
    gw->method = optional(p, v[H_METHOD], DD_CAP_VALUE, &gw->truncated);
    gw->path = optional(p, v[H_PATH], DD_CAP_PATH, &gw->truncated);
    if (gw->path && gw->path[0] != '/') /* APIM's UrlTemplate "carts/{id}" (dd-trace-js too) */
        gw->path = apr_pstrcat(p, "/", gw->path, NULL);
    gw->resource_path = optional(p, v[H_RESOURCE_PATH], DD_CAP_PATH, &gw->truncated);
    gw->domain = optional(p, v[H_DOMAIN], DD_CAP_VALUE, &gw->truncated);
    gw->stage = optional(p, v[H_STAGE], DD_CAP_VALUE, &gw->truncated);
    gw->region = optional(p, v[H_REGION], DD_CAP_VALUE, &gw->truncated);
    gw->account_id = optional(p, v[H_ACCOUNT], DD_CAP_VALUE, &gw->truncated);
    gw->api_id = optional(p, v[H_API], DD_CAP_VALUE, &gw->truncated);
    gw->user = optional(p, v[H_USER], DD_CAP_VALUE, &gw->truncated);
    return DD_GW_OK;
}

void dd_gateway_strip(apr_table_t *h)
{
    /* One pass, and only when there is something to remove: the table is emptied and the
     * other entries are added back in their order (the same key and value strings). Removing
     * them one by one with apr_table_unset() would rescan, compact and reindex the whole table
     * once per x-dd-proxy* header. */
    const apr_array_header_t *arr = apr_table_elts(h);
    const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
    apr_table_entry_t stack[64], *keep;
    int n = arr->nelts, first = -1, kept = 0;

    for (int i = 0; i < n && first < 0; i++)
        if (is_dd_proxy_header(e[i].key))
            first = i;
    if (first < 0)
        return;
    keep = n <= 64 ? stack : apr_palloc(arr->pool, sizeof(*keep) * (size_t)n);
    for (int i = 0; i < n; i++)
        if (i < first || !is_dd_proxy_header(e[i].key))
            keep[kept++] = e[i];
    apr_table_clear(h);
    for (int i = 0; i < kept; i++)
        apr_table_addn(h, keep[i].key, keep[i].val);
}
