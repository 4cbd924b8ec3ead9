/* SPDX-License-Identifier: Apache-2.0 */
/* dd_headers.h - what request and response headers contribute to the server span beyond the
 * gateway and propagation headers: header tags (DD_TRACE_HEADER_TAGS) and the client IP
 * (DD_TRACE_CLIENT_IP_ENABLED / DD_TRACE_CLIENT_IP_HEADER).
 *
 * headers (apr_table_t) -> tag values. Values are trimmed, made valid UTF-8 and capped at
 * DD_CAP_VALUE like every header value that becomes a tag.
 */
#ifndef DD_HEADERS_H
#define DD_HEADERS_H

#include <apr_pools.h>
#include <apr_tables.h>
#include "dd_settings.h"
#include "dd_span.h"

/* For each configured header present in headers (or in headers2, may be NULL: httpd keeps
 * response headers in headers_out and err_headers_out), appends a dd_meta_t with the
 * request or response tag name to *out (created when NULL). A header present several times
 * gives its values joined with ", ". Sets *truncated when a value was cut. */
void dd_header_tags_collect(apr_pool_t *p, const apr_array_header_t *config, int response,
                            const apr_table_t *headers, const apr_table_t *headers2,
                            apr_array_header_t **out, int *truncated);

/* An IPv4 or IPv6 address. */
typedef struct {
    unsigned char b[16]; /* IPv4 in the first 4 bytes */
    int v6;
} dd_ip_t;

/* Parses s[0..n) as an address, also in the forms a header carries it: "1.2.3.4:80",
 * "[2001:db8::1]", "[2001:db8::1]:443". Returns 1 on success. */
int dd_ip_parse(const char *s, size_t n, dd_ip_t *ip);

/* Public (globally routable) in the tracers' sense (dd-trace-go internal/clientip, dd-trace-js
 * ip_extractor.js): not loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local
 * (169.254/16, fe80::/10), 100.64/10, fec0::/10, nor unspecified; IPv4-mapped IPv6 addresses
 * are judged as IPv4. */
int dd_ip_is_public(const dd_ip_t *ip);

/* The tracers' header list, in their order of preference. */
extern const char *const dd_client_ip_headers[];

/* The client IP as Datadog's tracers resolve it: the headers of dd_client_ip_headers (or only
 * `header` when not NULL) are read in order, each as a comma-separated list of addresses
 * (Forwarded: its for= values); the first public address wins, else the first valid one
 * found; that one replaces the TCP peer's address unless the peer is public and the found one
 * private. Returns the address as the header or the peer wrote it (trimmed, without port or
 * brackets), or NULL when there is none. */
const char *dd_client_ip_resolve(apr_pool_t *p, const apr_table_t *headers, const char *header,
                                 const char *peer);

#endif
