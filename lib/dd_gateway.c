/* dd_gateway.c - x-dd-proxy* headers -> dd_gateway_t (CONTRACT §3.2).
 *
 * The rules, in the order they are checked:
 *   1. no x-dd-proxy and no x-dd-proxy-request-time-ms: not a gateway request (DD_GW_ABSENT);
 *   2. x-dd-proxy must name a gateway we know, case-insensitively, after one pair of single
 *      quotes (API Gateway v1's literal syntax) and surrounding blanks are removed;
 *   3. x-dd-proxy-request-time-ms must be plain decimal Unix milliseconds inside
 *      [now - 1 h, now + 5 min]: anything else would put the span somewhere absurd;
 *   4. every other header is optional; an empty one counts as absent.
 * Values are made valid UTF-8 and capped before they can become tags.
 */
#include "dd_gateway.h"
#include "dd_util.h"

#include <string.h>
#include <strings.h>
#include <apr_strings.h>

static const struct {
    const char *header; /* the x-dd-proxy value, also the component tag */
    const char *span_name;
} gateways[DD_GW_KIND_COUNT] = {
    [DD_GW_AWS_APIGATEWAY] = {"aws-apigateway", "aws.apigateway"},
    [DD_GW_AWS_HTTPAPI] = {"aws-httpapi", "aws.httpapi"},
    [DD_GW_AZURE_APIM] = {"azure-apim", "azure.apim"},
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

/* Reads an optional header: NULL when absent or empty, else the unwrapped, cleaned value. */
static const char *optional(apr_pool_t *p, const apr_table_t *h, const char *name, size_t cap,
                            int *truncated)
{
    const char *v = apr_table_get(h, name);
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

dd_gw_status_t dd_gateway_parse(apr_pool_t *p, const apr_table_t *h, int64_t now_ms,
                                dd_gateway_t *gw)
{
    const char *proxy = apr_table_get(h, "x-dd-proxy");
    const char *time = apr_table_get(h, "x-dd-proxy-request-time-ms");
    size_t plen, tlen;
    uint64_t ms;
    int kind = -1;

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

    if (!time)
        return DD_GW_NO_TIME;
    tlen = strlen(time);
    unwrap(&time, &tlen);
    if (tlen == 0)
        return DD_GW_NO_TIME;
    if (!dd_parse_u64_dec(time, tlen, &ms) || ms > (uint64_t)INT64_MAX / 1000000)
        return DD_GW_BAD_TIME;
    if ((int64_t)ms < now_ms - DD_GW_MAX_AGE_MS)
        return DD_GW_TIME_TOO_OLD;
    if ((int64_t)ms > now_ms + DD_GW_MAX_AHEAD_MS)
        return DD_GW_TIME_IN_FUTURE;

    memset(gw, 0, sizeof(*gw));
    gw->kind = (dd_gw_kind_t)kind;
    gw->request_time_ms = (int64_t)ms;
    gw->method = optional(p, h, "x-dd-proxy-httpmethod", DD_CAP_VALUE, &gw->truncated);
    gw->path = optional(p, h, "x-dd-proxy-path", DD_CAP_PATH, &gw->truncated);
    gw->resource_path = optional(p, h, "x-dd-proxy-resource-path", DD_CAP_PATH, &gw->truncated);
    gw->domain = optional(p, h, "x-dd-proxy-domain-name", DD_CAP_VALUE, &gw->truncated);
    gw->stage = optional(p, h, "x-dd-proxy-stage", DD_CAP_VALUE, &gw->truncated);
    gw->region = optional(p, h, "x-dd-proxy-region", DD_CAP_VALUE, &gw->truncated);
    gw->account_id = optional(p, h, "x-dd-proxy-account-id", DD_CAP_VALUE, &gw->truncated);
    gw->api_id = optional(p, h, "x-dd-proxy-api-id", DD_CAP_VALUE, &gw->truncated);
    gw->user = optional(p, h, "x-dd-proxy-user", DD_CAP_VALUE, &gw->truncated);
    return DD_GW_OK;
}

void dd_gateway_strip(apr_table_t *h)
{
    /* Unsetting removes every entry with that name, so rescan until none is left; a request
     * has few headers and this runs once per request. */
    for (;;) {
        const apr_array_header_t *arr = apr_table_elts(h);
        const apr_table_entry_t *e = (const apr_table_entry_t *)arr->elts;
        const char *victim = NULL;
        for (int i = 0; i < arr->nelts; i++) {
            if (e[i].key && strncasecmp(e[i].key, "x-dd-proxy", 10) == 0) {
                victim = e[i].key;
                break;
            }
        }
        if (!victim)
            return;
        apr_table_unset(h, victim);
    }
}
