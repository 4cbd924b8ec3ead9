/* SPDX-License-Identifier: Apache-2.0 */
/* dd_xray_daemon.h - reaching the X-Ray daemon (or the CloudWatch agent, or the OpenTelemetry
 * collector's awsxray receiver): its address, segment datagrams over UDP, and its TCP proxy of
 * X-Ray's sampling API.
 *
 * Used by one thread per child process (the flusher); nothing here is shared between threads.
 * Every socket is close-on-exec, so CGI children and piped loggers do not inherit it.
 */
#ifndef DD_XRAY_DAEMON_H
#define DD_XRAY_DAEMON_H

#include <stddef.h>
#include <apr_pools.h>

#include "dd_xray_sampler.h"

#define DD_XRAY_DEFAULT_ADDRESS "127.0.0.1:2000"

typedef struct {
    const char *udp_host; /* an IPv6 literal without its brackets */
    unsigned udp_port;
    const char *tcp_host;
    unsigned tcp_port;
} dd_xray_addr_t;

/* Parses AWS_XRAY_DAEMON_ADDRESS's forms (the SDKs'): "host:port" (UDP and TCP alike), or
 * "tcp:host:port udp:host:port" in either order, both required. host is a name, an IPv4
 * address or a bracketed IPv6 address ([::1]:2000); port 1..65535. On error returns -1 with a
 * message in *err (pool-allocated). */
int dd_xray_addr_parse(apr_pool_t *p, const char *s, dd_xray_addr_t *out, const char **err);

/* ---- UDP ------------------------------------------------------------------------------- */

typedef struct dd_xray_udp dd_xray_udp_t;

/* Resolves host and opens a non-blocking, close-on-exec UDP socket connected to it (so a
 * daemon that is not there shows up as ECONNREFUSED on a later send). NULL on failure, with a
 * message in err. */
dd_xray_udp_t *dd_xray_udp_open(const char *host, unsigned port, char *err, size_t errlen);
/* Sends one datagram without waiting. Returns 0, or an errno value. */
int dd_xray_udp_send(dd_xray_udp_t *u, const char *data, size_t len);
void dd_xray_udp_close(dd_xray_udp_t *u);

/* ---- the sampling API (HTTP over TCP, libcurl) ------------------------------------------ */

typedef struct dd_xray_http dd_xray_http_t;

/* A client for http://host:port (the connection is kept between calls). NULL when out of
 * memory. libcurl must be initialized (dd_agent_global_init). */
dd_xray_http_t *dd_xray_http_create(const char *host, unsigned port);
void dd_xray_http_destroy(dd_xray_http_t *h);
/* dd_xray_api_t's post for this client (ctx = the client): answers up to 1 MiB are kept. */
int dd_xray_http_post(void *ctx, const char *path, const char *body, size_t len, long timeout_ms,
                      long *status, char **resp, size_t *resp_len, char *err, size_t errlen);

#endif
