/* SPDX-License-Identifier: Apache-2.0 */
/* dd_gateway.h - reading the x-dd-proxy* headers an API gateway adds (CONTRACT §3.2).
 *
 * headers -> dd_gateway_t. The parser only reads; it never changes the table. Header names are
 * case-insensitive (apr_table_get already is); the x-dd-proxy value is matched
 * case-insensitively; one pair of surrounding single quotes is stripped from every value.
 */
#ifndef DD_GATEWAY_H
#define DD_GATEWAY_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

typedef enum {
    DD_GW_AWS_APIGATEWAY = 0, /* REST v1 (and what Datadog's docs tell HTTP v2 users to send) */
    DD_GW_AWS_HTTPAPI,        /* HTTP API v2 */
    DD_GW_AZURE_APIM,         /* Azure API Management */
    DD_GW_AZURE_GW,           /* Azure Application Gateway (may send no time) */
    DD_GW_AZURE_FD,           /* Azure Front Door (may send no time) */
    DD_GW_KIND_COUNT
} dd_gw_kind_t;

typedef enum {
    DD_GW_OK = 0,         /* a valid gateway request: make an inferred span */
    DD_GW_ABSENT,         /* no x-dd-proxy* header at all: nothing to say */
    DD_GW_NO_PROXY,       /* x-dd-proxy missing while other x-dd-proxy-* headers came */
    DD_GW_EMPTY_PROXY,    /* x-dd-proxy present but empty */
    DD_GW_UNKNOWN_PROXY,  /* x-dd-proxy names no gateway we know */
    DD_GW_NO_TIME,        /* x-dd-proxy-request-time-ms missing or empty (where required) */
    DD_GW_BAD_TIME,       /* not a plain decimal number of milliseconds */
    DD_GW_TIME_TOO_OLD,   /* more than DD_GW_MAX_AGE_MS before the server's clock */
    DD_GW_TIME_IN_FUTURE, /* more than DD_GW_MAX_AHEAD_MS after the server's clock */
    DD_GW_UNTRUSTED_PEER, /* the TCP peer is outside DDInferredProxyTrustedNetworks (glue) */
    DD_GW_STATUS_COUNT
} dd_gw_status_t;

#define DD_GW_MAX_AGE_MS (60LL * 60 * 1000)
#define DD_GW_MAX_AHEAD_MS (5LL * 60 * 1000)

/* What the gateway told us. Optional fields are NULL when absent or empty. Values are cleaned
 * (valid UTF-8, capped at DD_CAP_VALUE, paths at DD_CAP_PATH); truncated is 1 when any value
 * was cut. no_time: the gateway sent no time, which only azure-gw and azure-fd may do (their
 * time header is optional, as in dd-trace-js): the span starts with httpd's request, and
 * request_time_ms is now_ms. */
typedef struct {
    dd_gw_kind_t kind;
    int64_t request_time_ms;
    int no_time;
    const char *method;
    const char *path;
    const char *resource_path;
    const char *domain;
    const char *stage;
    const char *region;
    const char *account_id;
    const char *api_id;
    const char *user;
    int truncated;
} dd_gateway_t;

/* now_ms is the server's wall clock in Unix ms. Fills *gw only when the result is DD_GW_OK. */
dd_gw_status_t dd_gateway_parse(apr_pool_t *p, const apr_table_t *headers, int64_t now_ms,
                                dd_gateway_t *gw);

/* Span name (aws.apigateway ...) and component / header value (aws-apigateway ...). */
const char *dd_gateway_span_name(dd_gw_kind_t kind);
const char *dd_gateway_component(dd_gw_kind_t kind);
/* Whether the gateway is one of AWS's (its api id and region make an ARN). */
int dd_gateway_is_aws(dd_gw_kind_t kind);
/* A short stable name for a status, for logs and counters ("unknown_proxy" ...). */
const char *dd_gateway_status_name(dd_gw_status_t status);

/* Removes every header whose name starts with "x-dd-proxy" (any case). */
void dd_gateway_strip(apr_table_t *headers);

#endif
