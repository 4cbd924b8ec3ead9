/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_gateway.c - libFuzzer target: any bytes as x-dd-proxy* header values, through the
 * parser and, when accepted, into spans and the msgpack encoder. Input: values separated by
 * '\n', assigned in order to the gateway headers. */
#include <stdlib.h>
#include <string.h>
#include <apr_general.h>
#include <apr_strings.h>

#include "dd_gateway.h"
#include "dd_trace.h"

static const char *const names[] = {
    "x-dd-proxy",
    "x-dd-proxy-request-time-ms",
    "x-dd-proxy-path",
    "x-dd-proxy-httpmethod",
    "x-dd-proxy-domain-name",
    "x-dd-proxy-stage",
    "x-dd-proxy-resource-path",
    "x-dd-proxy-region",
    "x-dd-proxy-account-id",
    "x-dd-proxy-api-id",
    "x-dd-proxy-user",
    "user-agent",
};

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static int init;
    apr_pool_t *p;
    apr_table_t *h;
    char *copy, *line, *next;
    size_t i = 0;
    dd_gateway_t gw;
    const int64_t now_ms = 1736973768000LL;

    if (!init) {
        apr_initialize();
        init = 1;
    }
    apr_pool_create(&p, NULL);
    h = apr_table_make(p, 16);
    copy = apr_pstrmemdup(p, (const char *)data, size);
    for (line = copy; line && i < sizeof(names) / sizeof(names[0]); line = next, i++) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        apr_table_add(h, names[i], line);
    }
    if (dd_gateway_parse(p, h, now_ms, &gw) == DD_GW_OK) {
        dd_trace_conf_t conf = {0};
        dd_request_info_t req = {0};
        char *chunk;
        size_t len;
        conf.service = "httpd";
        conf.user_tag = 1;
        conf.trace_id_128 = 1;
        req.start_ns = now_ms * 1000000LL;
        req.start_mono_ns = req.start_ns;
        req.method = "GET";
        req.scheme = "https";
        req.host = "h";
        req.path = "/";
        req.user_agent = apr_table_get(h, "user-agent");
        dd_trace_t *t = dd_trace_start(p, &conf, &req, &gw, NULL);
        dd_trace_sample(t, &conf, NULL, NULL, req.start_ns);
        dd_trace_finish(t, req.start_ns + 1000, 502, "502 Bad Gateway", NULL);
        if (dd_trace_encode(t, &chunk, &len) == 0)
            free(chunk);
    }
    dd_gateway_strip(h);
    if (apr_table_get(h, "x-dd-proxy"))
        abort(); /* strip must leave none */
    apr_pool_destroy(p);
    return 0;
}
