/* SPDX-License-Identifier: Apache-2.0 */
/* test_trace.c - spans built from a request (+ gateway), sampling, finishing. */
#include "unit.h"
#include "dd_trace.h"
#include "dd_endpoint.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>
#include <apr_general.h>
#include <apr_strings.h>

static apr_pool_t *pool;

static const dd_tagset_t *team_tags(void)
{
    static dd_tagset_t *tags;
    if (!tags) {
        tags = dd_tagset_make(pool);
        dd_tagset_put(tags, "team", "edge");
    }
    return tags;
}

static dd_trace_conf_t conf(void)
{
    dd_trace_conf_t c = {0};
    {
    }
    c.service = "httpd-svc";
    c.env = "prod";
    c.version = "1.2";
    c.trace_id_128 = 1;
    return c;
}

static dd_request_info_t request(void)
{
    dd_request_info_t r = {0};
    r.start_ns = 1736973768500000000LL;
    r.start_mono_ns = r.start_ns; /* the tests' monotonic clock reads the epoch */
    r.method = "GET";
    r.scheme = "http";
    r.host = "api.internal";
    r.port = 8080;
    r.path = "/api/users/123";
    r.user_agent = "curl/8.0";
    r.client_ip = "10.0.0.1";
    return r;
}

static dd_gateway_t gateway(dd_gw_kind_t kind)
{
    dd_gateway_t g = {0};
    g.kind = kind;
    g.request_time_ms = 1736973768000LL;
    g.method = "GET";
    g.path = "/users/123";
    g.resource_path = "/users/{id}";
    g.domain = "example.execute-api.us-east-1.amazonaws.com";
    g.stage = "prod";
    g.region = "us-east-1";
    g.account_id = "123456789012";
    g.api_id = "abc123";
    g.user = "test-user";
    return g;
}

static void test_server_only(void)
{
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_trace_t *t = dd_trace_start(pool, &c, &r, NULL, NULL);
    dd_span_t *s = t->server;
    dd_trace_apply_tags(t, team_tags());
    CHECK(t->inferred == NULL);
    CHECK(dd_trace_root(t) == s);
    CHECK_STR(s->name, "httpd.request");
    CHECK_STR(s->service, "httpd-svc");
    CHECK_STR(s->resource, "GET /api/users/123");
    CHECK_STR(s->type, "web");
    CHECK(s->start == r.start_ns);
    CHECK(s->parent_id == 0);
    CHECK(s->trace_id != 0 && s->span_id != 0);
    CHECK_U64(s->trace_id_high, (uint64_t)1736973768 << 32);
    CHECK_STR(dd_span_get_meta(s, "_dd.p.tid"), "67881dc800000000");
    CHECK_STR(dd_span_get_meta(s, "component"), "httpd");
    CHECK_STR(dd_span_get_meta(s, "span.kind"), "server");
    CHECK_STR(dd_span_get_meta(s, "http.method"), "GET");
    CHECK_STR(dd_span_get_meta(s, "http.url"), "http://api.internal:8080/api/users/123");
    CHECK_STR(dd_span_get_meta(s, "http.useragent"), "curl/8.0");
    CHECK_STR(dd_span_get_meta(s, "http.client_ip"), "10.0.0.1");
    CHECK_STR(dd_span_get_meta(s, "env"), "prod");
    CHECK_STR(dd_span_get_meta(s, "version"), "1.2");
    CHECK_STR(dd_span_get_meta(s, "team"), "edge");
    CHECK(dd_span_get_meta(s, "http.route") == NULL);

    dd_trace_finish(t, r.start_ns + 2000000, 404, "404 Not Found", NULL);
    CHECK(s->duration == 2000000);
    CHECK(s->error == 0);
    CHECK_STR(dd_span_get_meta(s, "http.status_code"), "404");
    CHECK(dd_span_get_meta(s, "error.message") == NULL);

    /* log correlation: 128-bit as 32 hex, span id in decimal */
    const char *tid = dd_trace_id_string(pool, t);
    CHECK(strlen(tid) == 32);
    CHECK(strncmp(tid, "67881dc800000000", 16) == 0);
    CHECK_STR(dd_span_id_string(pool, t),
              apr_psprintf(pool, "%" APR_UINT64_T_FMT, (apr_uint64_t)s->span_id));
    /* default ports are not shown */
    r.port = 80;
    t = dd_trace_start(pool, &c, &r, NULL, NULL);
    CHECK_STR(dd_span_get_meta(t->server, "http.url"), "http://api.internal/api/users/123");
}

static void test_gateway_spans(void)
{
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_gateway_t g = gateway(DD_GW_AWS_APIGATEWAY);
    dd_trace_t *t;
    dd_span_t *i, *s;

    c.user_tag = 1;
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    i = t->inferred;
    s = t->server;
    CHECK(i != NULL);
    if (!i)
        return;
    CHECK(dd_trace_root(t) == i);
    CHECK_STR(i->name, "aws.apigateway");
    CHECK_STR(i->service, "example.execute-api.us-east-1.amazonaws.com");
    CHECK_STR(i->resource, "GET /users/{id}");
    CHECK_STR(i->type, "web");
    CHECK(i->start == 1736973768000000000LL);
    CHECK(i->parent_id == 0);
    CHECK(s->parent_id == i->span_id);
    CHECK(s->trace_id == i->trace_id);
    CHECK(i->span_id != s->span_id);
    CHECK_STR(dd_span_get_meta(i, "component"), "aws-apigateway");
    CHECK_STR(dd_span_get_meta(i, "span.kind"), "server");
    CHECK_STR(dd_span_get_meta(i, "http.method"), "GET");
    CHECK_STR(dd_span_get_meta(i, "http.url"),
              "https://example.execute-api.us-east-1.amazonaws.com/users/123");
    CHECK_STR(dd_span_get_meta(i, "http.route"), "/users/{id}");
    CHECK_STR(dd_span_get_meta(i, "stage"), "prod");
    CHECK_STR(dd_span_get_meta(i, "region"), "us-east-1");
    CHECK_STR(dd_span_get_meta(i, "account_id"), "123456789012");
    CHECK_STR(dd_span_get_meta(i, "apiid"), "abc123");
    CHECK_STR(dd_span_get_meta(i, "dd_resource_key"),
              "arn:aws:apigateway:us-east-1::/restapis/abc123");
    CHECK_STR(dd_span_get_meta(i, "aws_user"), "test-user");
    CHECK_STR(dd_span_get_meta(i, "http.useragent"), "curl/8.0");
    CHECK_STR(dd_span_get_meta(i, "env"), "prod");
    CHECK_STR(dd_span_get_meta(i, "_dd.p.tid"), "67881dc800000000");
    CHECK(dd_span_get_meta(s, "_dd.p.tid") == NULL); /* only on the chunk root */
    CHECK_STR(dd_span_get_meta(s, "http.route"), "/users/{id}");
    double v = 0;
    CHECK(dd_span_get_metric(i, "_dd.inferred_span", &v) && v == 1);
    CHECK(!dd_span_get_metric(s, "_dd.inferred_span", &v));

    dd_trace_finish(t, r.start_ns + 1000000, 502, "502 Bad Gateway", "upstream refused");
    CHECK(s->error == 1 && i->error == 1);
    CHECK(s->duration == 1000000);
    CHECK(i->duration == 501000000); /* from the gateway's time to the server span's end */
    CHECK_STR(dd_span_get_meta(s, "error.message"), "upstream refused");
    CHECK_STR(dd_span_get_meta(i, "error.message"), "upstream refused");
    CHECK_STR(dd_span_get_meta(i, "error.type"), dd_span_get_meta(s, "error.type"));
    CHECK_STR(dd_span_get_meta(i, "http.status_code"), "502");

    /* no user tag unless asked; HTTP API ARN; no ARN for Azure; no ARN without api id */
    c.user_tag = 0;
    g = gateway(DD_GW_AWS_HTTPAPI);
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK(dd_span_get_meta(t->inferred, "aws_user") == NULL);
    CHECK_STR(t->inferred->name, "aws.httpapi");
    CHECK_STR(dd_span_get_meta(t->inferred, "dd_resource_key"),
              "arn:aws:apigateway:us-east-1::/apis/abc123");
    g = gateway(DD_GW_AZURE_APIM);
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK_STR(t->inferred->name, "azure.apim");
    CHECK(dd_span_get_meta(t->inferred, "dd_resource_key") == NULL);
    g = gateway(DD_GW_AWS_APIGATEWAY);
    g.api_id = NULL;
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK(dd_span_get_meta(t->inferred, "dd_resource_key") == NULL);

    /* route vs path; no domain -> the configured service; clock ahead -> clamped start */
    g = gateway(DD_GW_AWS_APIGATEWAY);
    g.resource_path = NULL;
    g.domain = NULL;
    g.request_time_ms = 1736973769000LL; /* 0.5 s after httpd got the request */
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK_STR(t->inferred->resource, "GET /users/123");
    CHECK_STR(t->inferred->service, "httpd-svc");
    CHECK(dd_span_get_meta(t->inferred, "http.route") == NULL);
    CHECK(dd_span_get_meta(t->server, "http.route") == NULL);
    CHECK(t->inferred->start == r.start_ns);
    dd_trace_finish(t, r.start_ns + 10, 200, NULL, NULL);
    CHECK(t->inferred->duration == 10 && t->inferred->error == 0);
}

/* azure-gw and azure-fd: their names and components, every tag as for the other gateways but
 * no ARN; without a time the gateway span starts exactly with the request (not at its
 * millisecond) and lasts as long as the server span. */
static void test_azure_gateways_without_time(void)
{
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    const struct {
        dd_gw_kind_t kind;
        const char *name, *component;
    } kinds[] = {{DD_GW_AZURE_GW, "azure.app-gateway", "azure-gw"},
                 {DD_GW_AZURE_FD, "azure.frontdoor", "azure-fd"}};

    c.user_tag = 1;
    r.start_ns = 1736973768500123456LL; /* not on a millisecond */
    r.start_mono_ns = r.start_ns;
    for (size_t k = 0; k < 2; k++) {
        dd_gateway_t g = gateway(kinds[k].kind);
        dd_trace_t *t;
        dd_span_t *i;
        double v = 0;
        g.no_time = 1;
        g.request_time_ms = r.start_ns / 1000000;
        g.domain = "shop.azurefd.net";
        t = dd_trace_start(pool, &c, &r, &g, NULL);
        i = t->inferred;
        CHECK(i != NULL && dd_trace_root(t) == i);
        if (!i)
            return;
        CHECK_STR(i->name, kinds[k].name);
        CHECK_STR(dd_span_get_meta(i, "component"), kinds[k].component);
        CHECK_STR(i->service, "shop.azurefd.net");
        CHECK_STR(i->resource, "GET /users/{id}");
        CHECK(i->start == r.start_ns);
        CHECK(t->server->parent_id == i->span_id);
        CHECK_STR(dd_span_get_meta(i, "http.url"), "https://shop.azurefd.net/users/123");
        CHECK_STR(dd_span_get_meta(i, "http.route"), "/users/{id}");
        CHECK_STR(dd_span_get_meta(i, "stage"), "prod");
        CHECK_STR(dd_span_get_meta(i, "region"), "us-east-1");
        CHECK_STR(dd_span_get_meta(i, "account_id"), "123456789012");
        CHECK_STR(dd_span_get_meta(i, "apiid"), "abc123");
        CHECK(dd_span_get_meta(i, "dd_resource_key") == NULL);
        CHECK_STR(dd_span_get_meta(i, "aws_user"), "test-user");
        CHECK(dd_span_get_metric(i, "_dd.inferred_span", &v) && v == 1);
        dd_trace_finish(t, r.start_ns + 7000, 200, NULL, NULL);
        CHECK(i->duration == 7000 && t->server->duration == 7000);

        /* a time they do send is the start, as for the others */
        g.no_time = 0;
        g.request_time_ms = 1736973768000LL;
        t = dd_trace_start(pool, &c, &r, &g, NULL);
        CHECK(t->inferred->start == 1736973768000000000LL);
    }
}

/* Unified service tagging as the tracers do it: version only on spans of the configured
 * service; _dd.base_service (lowercased) on the gateway's. */
static void test_version_and_base_service(void)
{
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_gateway_t g = gateway(DD_GW_AWS_APIGATEWAY);
    dd_trace_t *t;

    c.service = "Httpd-Svc";
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK(dd_span_get_meta(t->inferred, "version") == NULL);
    CHECK_STR(dd_span_get_meta(t->inferred, "env"), "prod");
    CHECK_STR(dd_span_get_meta(t->inferred, "_dd.base_service"), "httpd-svc");
    CHECK_STR(dd_span_get_meta(t->server, "version"), "1.2");
    CHECK(dd_span_get_meta(t->server, "_dd.base_service") == NULL);

    /* no domain: the gateway span is the service's own, with its version */
    g.domain = NULL;
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK_STR(t->inferred->service, "Httpd-Svc");
    CHECK_STR(dd_span_get_meta(t->inferred, "version"), "1.2");
    CHECK(dd_span_get_meta(t->inferred, "_dd.base_service") == NULL);

    /* a domain equal to the service but for case: no base service (the agent lowercases) */
    g.domain = "httpd-svc";
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK(dd_span_get_meta(t->inferred, "_dd.base_service") == NULL);

    /* no version configured: none anywhere */
    c.version = NULL;
    g = gateway(DD_GW_AZURE_APIM);
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK(dd_span_get_meta(t->inferred, "version") == NULL);
    CHECK(dd_span_get_meta(t->server, "version") == NULL);
    CHECK_STR(dd_span_get_meta(t->inferred, "_dd.base_service"), "httpd-svc");
}

/* runtime-id, language and process_id on both spans when configured, as dd-trace-cpp sends. */
static void test_runtime_tags(void)
{
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_gateway_t g = gateway(DD_GW_AWS_APIGATEWAY);
    char id[37], other[37];
    dd_trace_t *t;
    double v = 0;

    dd_runtime_id(id);
    dd_runtime_id(other);
    CHECK(strlen(id) == 36 && id[8] == '-' && id[13] == '-' && id[14] == '4' && id[18] == '-' &&
          strchr("89ab", id[19]) && id[23] == '-');
    CHECK(strcmp(id, other) != 0);
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK(dd_span_get_meta(t->server, "runtime-id") == NULL);
    CHECK(!dd_span_get_metric(t->inferred, "process_id", &v));
    c.runtime_id = id;
    c.pid = 4242;
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    for (dd_span_t *s = t->server; s; s = s == t->server ? t->inferred : NULL) {
        CHECK_STR(dd_span_get_meta(s, "runtime-id"), id);
        CHECK_STR(dd_span_get_meta(s, "language"), "c");
        CHECK(dd_span_get_metric(s, "process_id", &v) && v == 4242);
    }
}

static void test_inbound_parent(void)
{
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_gateway_t g = gateway(DD_GW_AWS_APIGATEWAY);
    dd_context_t in = {0};
    in.trace_id_low = 1;
    in.parent_id = 2;
    in.priority = 2;
    in.origin = "rum";
    dd_trace_t *t = dd_trace_start(pool, &c, &r, &g, &in);
    CHECK(t->inferred->trace_id == 1 && t->server->trace_id == 1);
    CHECK(t->inferred->parent_id == 2);
    CHECK(t->server->parent_id == t->inferred->span_id);
    CHECK_STR(dd_span_get_meta(t->inferred, "_dd.origin"), "rum");
    CHECK(dd_span_get_meta(t->inferred, "_dd.p.tid") == NULL); /* a 64-bit inbound id */
    CHECK_STR(dd_trace_id_string(pool, t), "1");
    dd_trace_sample(t, &c, NULL, NULL, 0);
    double v = 0;
    CHECK(t->priority == 2);
    CHECK(dd_span_get_metric(t->inferred, "_sampling_priority_v1", &v) && v == 2);
    CHECK(!dd_span_get_metric(t->server, "_sampling_priority_v1", &v));
}

static void test_sampling_formula(void)
{
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_rates_t *rates = dd_rates_create();
    unsigned rejected = 0;
    const char *body = "{\"rate_by_service\":{\"service:httpd-svc,env:prod\":0.5,"
                       "\"service:,env:\":0.1}}";
    int kept = 0, n = 2000;
    CHECK(rates && dd_rates_update_json(rates, body, strlen(body), &rejected) == 0);
    for (int k = 1; k <= n; k++) {
        dd_context_t in = {0};
        in.trace_id_low = (uint64_t)k * 0x9E3779B97F4A7C15ULL;
        in.priority = DD_PRIORITY_UNSET;
        dd_trace_t *t = dd_trace_start(pool, &c, &r, NULL, &in);
        dd_trace_sample(t, &c, NULL, rates, 0);
        uint64_t hash = in.trace_id_low * 1111111111111111111ULL;
        int want = hash <= (uint64_t)(0.5 * 18446744073709551616.0);
        CHECK(t->priority == want);
        kept += t->priority;
        double psr = 0;
        CHECK(dd_span_get_metric(t->server, "_dd.agent_psr", &psr) && psr == 0.5);
        CHECK_STR(dd_span_get_meta(t->server, "_dd.p.dm"), want ? "-1" : NULL);
        CHECK_STR(dd_span_get_meta(t->server, "_dd.p.ksr"), "0.5"); /* keep or drop */
    }
    CHECK(kept > n * 4 / 10 && kept < n * 6 / 10);
    /* no rates at all: rate 1.0, default mechanism */
    dd_trace_t *t = dd_trace_start(pool, &c, &r, NULL, NULL);
    dd_trace_sample(t, &c, NULL, NULL, 0);
    CHECK(t->priority == 1);
    CHECK_STR(dd_span_get_meta(t->server, "_dd.p.dm"), "-0");
    CHECK(dd_span_get_meta(t->server, "_dd.p.ksr") == NULL); /* no rate was applied */
    dd_rates_destroy(rates);
}

static void test_rules_at_the_gateway(void)
{
    /* A rule naming the gateway's service applies to traces that came through it: the
     * inferred span is the local root the rules see. */
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_gateway_t g = gateway(DD_GW_AWS_APIGATEWAY);
    const char *err = NULL;
    dd_rules_t *rules =
        dd_rules_parse(pool,
                       "[{\"service\":\"httpd-svc\",\"sample_rate\":0},"
                       "{\"service\":\"*.execute-api.*.amazonaws.com\",\"sample_rate\":1}]",
                       &err);
    double v = 0;
    CHECK(rules != NULL);
    c.rules = rules;
    dd_trace_t *t = dd_trace_start(pool, &c, &r, &g, NULL);
    dd_trace_sample(t, &c, NULL, NULL, r.start_ns);
    CHECK(t->priority == 2);
    CHECK(dd_span_get_metric(t->inferred, "_dd.rule_psr", &v) && v == 1);
    CHECK_STR(dd_span_get_meta(t->inferred, "_dd.p.dm"), "-3");
    CHECK_STR(dd_span_get_meta(t->inferred, "_dd.p.ksr"), "1");
    CHECK(dd_span_get_meta(t->server, "_dd.p.ksr") == NULL);
    CHECK(!dd_span_get_metric(t->server, "_sampling_priority_v1", &v));
    /* without a gateway the httpd service's rule (rate 0) applies */
    t = dd_trace_start(pool, &c, &r, NULL, NULL);
    dd_trace_sample(t, &c, NULL, NULL, r.start_ns);
    CHECK(t->priority == -1);
    CHECK(dd_span_get_metric(t->server, "_dd.rule_psr", &v) && v == 0);
    CHECK(dd_span_get_meta(t->server, "_dd.p.dm") == NULL);
    CHECK_STR(dd_span_get_meta(t->server, "_dd.p.ksr"), "0");

    /* what goes downstream: ids, priority and the _dd.p.* tags, never _dd.p.tid */
    dd_inject_t in;
    dd_trace_inject_input(t, "vendor=x", &in);
    CHECK_U64(in.trace_id_low, t->server->trace_id);
    CHECK_U64(in.trace_id_high, t->server->trace_id_high);
    CHECK_U64(in.span_id, t->server->span_id);
    CHECK(in.priority == -1);
    CHECK_STR(in.tracestate, "vendor=x");
    for (int i = 0; i < in.tags->nelts; i++)
        CHECK(strcmp(((const dd_meta_t *)in.tags->elts)[i].key, "_dd.p.tid") != 0);
}

static void test_clean_request(void)
{
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    char *long_path = apr_palloc(pool, 6001);
    memset(long_path, 'a', 6000);
    long_path[0] = '/';
    long_path[6000] = '\0';
    r.path = long_path;
    r.user_agent = "bad\xff";
    dd_trace_t *t = dd_trace_start(pool, &c, &r, NULL, NULL);
    double v = 0;
    CHECK(strlen(t->server->resource) <= 4096);
    CHECK(strlen(dd_span_get_meta(t->server, "http.url")) <= 4096);

    /* the ARN is a value, not a path: 1 KiB even when built from two 1 KiB values */
    dd_gateway_t g = gateway(DD_GW_AWS_APIGATEWAY);
    char *big = apr_palloc(pool, 1025);
    memset(big, 'r', 1024);
    big[1024] = '\0';
    g.region = g.api_id = big;
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK(strlen(dd_span_get_meta(t->inferred, "dd_resource_key")) <= 1024);
    CHECK(dd_span_get_metric(t->inferred, "_dd.proxy.truncated", &v) && v == 1);
    CHECK_STR(dd_span_get_meta(t->server, "http.useragent"), "bad\xef\xbf\xbd");
    CHECK(dd_span_get_metric(t->server, "_dd.proxy.truncated", &v) && v == 1);

    /* A user agent over the cap is cut once and marks both spans that show it; a long path
     * of the request line marks only the server span. */
    char *ua = apr_palloc(pool, 3001);
    memset(ua, 'u', 3000);
    ua[3000] = '\0';
    r = request();
    r.user_agent = ua;
    g = gateway(DD_GW_AWS_APIGATEWAY);
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK(strlen(dd_span_get_meta(t->server, "http.useragent")) == 1024);
    CHECK(strlen(dd_span_get_meta(t->inferred, "http.useragent")) == 1024);
    CHECK(dd_span_get_metric(t->server, "_dd.proxy.truncated", &v) && v == 1);
    CHECK(dd_span_get_metric(t->inferred, "_dd.proxy.truncated", &v) && v == 1);
    r = request();
    r.path = long_path;
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK(dd_span_get_metric(t->server, "_dd.proxy.truncated", &v) && v == 1);
    CHECK(!dd_span_get_metric(t->inferred, "_dd.proxy.truncated", &v));
    CHECK(strlen(dd_span_get_meta(t->server, "http.url")) <= 4096);
}

/* The tracer features' inputs: query string, network.client.ip, header tags, error statuses. */
static void test_features(void)
{
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_status_set_t set;
    const char *why;
    apr_array_header_t *tags = apr_array_make(pool, 2, sizeof(dd_meta_t));
    dd_trace_t *t;
    dd_span_t *s;
    double cut = 0;

    *(dd_meta_t *)apr_array_push(tags) = (dd_meta_t){"http.request.headers.x-id", "42", 0, 0};
    *(dd_meta_t *)apr_array_push(tags) = (dd_meta_t){"team", "from-header", 0, 0};
    r.query = "a=1&<redacted>";
    r.network_client_ip = "127.0.0.1";
    r.tags = tags;
    CHECK(dd_status_set_parse("500-599,429", &set, &why) == 0);
    c.error_statuses = &set;
    t = dd_trace_start(pool, &c, &r, NULL, NULL);
    s = t->server;
    CHECK_STR(dd_span_get_meta(s, "http.url"),
              "http://api.internal:8080/api/users/123?a=1&<redacted>");
    CHECK_STR(s->resource, "GET /api/users/123"); /* never the query */
    CHECK_STR(dd_span_get_meta(s, "network.client.ip"), "127.0.0.1");
    CHECK_STR(dd_span_get_meta(s, "http.client_ip"), "10.0.0.1");
    CHECK_STR(dd_span_get_meta(s, "http.request.headers.x-id"), "42");
    CHECK_STR(dd_span_get_meta(s, "team"), "from-header");
    CHECK(!dd_span_get_metric(s, "_dd.proxy.truncated", &cut));
    dd_trace_finish(t, r.start_ns + 1000, 429, "429 Too Many Requests", NULL);
    CHECK(s->error == 1);
    CHECK_STR(dd_span_get_meta(s, "error.message"), "429 Too Many Requests");
    CHECK_STR(dd_span_get_meta(s, "error.type"), "HTTP 429");

    /* with that set a 503 is not an error */
    CHECK(dd_status_set_parse("400-499", &set, &why) == 0);
    t = dd_trace_start(pool, &c, &r, NULL, NULL);
    dd_trace_finish(t, r.start_ns + 1000, 503, "503 Service Unavailable", NULL);
    CHECK(t->server->error == 0);
    CHECK(dd_span_get_meta(t->server, "error.message") == NULL);

    /* an empty query shows no '?'; a cut header value marks the span */
    r.query = "";
    r.port = 80;
    r.truncated = 1;
    t = dd_trace_start(pool, &c, &r, NULL, NULL);
    CHECK_STR(dd_span_get_meta(t->server, "http.url"), "http://api.internal/api/users/123");
    CHECK(dd_span_get_metric(t->server, "_dd.proxy.truncated", &cut) && cut == 1);
}

/* Durations and the limiter run on the monotonic clock; a wall-clock step either way between
 * start and finish (or between two traces) changes neither (issue 16 item 1). */
static void test_clock_steps(void)
{
    const int64_t ms = 1000000, hour = 3600LL * 1000 * ms, mono0 = 5000LL * 1000 * ms;
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_gateway_t g = gateway(DD_GW_AWS_APIGATEWAY);
    apr_pool_t *p;
    dd_limiter_t *l;
    dd_trace_t *t;

    apr_pool_create(&p, pool);
    c.rules = dd_rules_parse(p, "[{\"sample_rate\": 1}]", NULL);
    l = dd_limiter_create(p, 10);
    r.start_mono_ns = mono0;
    t = dd_trace_start(p, &c, &r, &g, NULL);
    dd_trace_finish(t, mono0 + 5 * ms, 200, NULL, NULL); /* the wall clock stepped: unused */
    CHECK(t->server->start == r.start_ns);               /* starts stay on the epoch */
    CHECK(t->server->duration == 5 * ms);
    /* the gateway span ends with the server span, on the epoch: 500 ms before, 5 ms in */
    CHECK(t->inferred->duration == 505 * ms);
    CHECK(t->inferred->start + t->inferred->duration == t->server->start + t->server->duration);

    dd_trace_finish(t, mono0 - ms, 200, NULL, NULL); /* a clock that ran backwards: 0, never < 0 */
    CHECK(t->server->duration == 0 && t->inferred->duration == 500 * ms);

    /* 10 rule keeps a second pass the limiter, whatever the wall clock says: the requests'
     * wall starts jump an hour back and an hour forward while the monotonic clock runs on. */
    for (int i = 0; i < 30; i++) {
        int64_t mono = mono0 + (int64_t)i * 100 * ms;
        r.start_ns = request().start_ns + (i < 10 ? 0 : i < 20 ? -hour : hour) + i * 100 * ms;
        r.start_mono_ns = mono;
        t = dd_trace_start(p, &c, &r, NULL, NULL);
        dd_trace_sample(t, &c, l, NULL, mono);
        CHECK(t->priority == 2);
        dd_trace_finish(t, mono + 2 * ms, 200, NULL, NULL);
        CHECK(t->server->duration == 2 * ms);
    }
    apr_pool_destroy(p);
}

/* Configured tags: duplicates (the later wins), merges (the deeper wins), the module's own tags
 * and DDEnv winning over a tag of the same name, a tag "env" as the trace's env (and its
 * sampling key) when no DDEnv is set (issue 16 item 6). */
static void test_tag_precedence(void)
{
    apr_pool_t *p;
    dd_tagset_t *server, *loc;
    const dd_tagset_t *merged;
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_gateway_t g = gateway(DD_GW_AWS_HTTPAPI);
    dd_rates_t *rates = dd_rates_create();
    const char *body = "{\"rate_by_service\":{\"service:gw.example,env:from-tag\":0,"
                       "\"service:gw.example,env:prod\":1}}";
    dd_trace_t *t;
    int n;

    apr_pool_create(&p, pool);
    server = dd_tagset_make(p);
    dd_tagset_put(server, "team", "a");
    dd_tagset_put(server, "env", "from-tag");
    dd_tagset_put(server, "owner", "x");
    dd_tagset_put(server, "team", "b"); /* a repeated key: replaces, keeps its place */
    CHECK_STR(dd_tagset_get(server, "team"), "b");
    dd_tagset_items(server, &n);
    CHECK(n == 3);
    loc = dd_tagset_make(p);
    dd_tagset_put(loc, "owner", "y");
    dd_tagset_put(loc, "http.url", "spoofed");
    dd_tagset_put(loc, "span.kind", "client");
    dd_tagset_put(loc, "version", "tag-version");
    merged = dd_tagset_merge(p, server, loc);
    CHECK(dd_tagset_merge(p, server, NULL) == server && dd_tagset_merge(p, NULL, loc) == loc);
    CHECK_STR(dd_tagset_get(merged, "owner"), "y");
    CHECK_STR(dd_tagset_get(server, "owner"), "x"); /* the inputs are not changed */
    dd_tagset_items(merged, &n);
    CHECK(n == 6);

    g.domain = "gw.example";
    t = dd_trace_start(p, &c, &r, &g, NULL); /* DDEnv prod, DDVersion 1.2 */
    dd_trace_apply_tags(t, merged);
    for (dd_span_t *s = t->server; s; s = s == t->server ? t->inferred : NULL) {
        CHECK_STR(dd_span_get_meta(s, "env"), "prod");
        /* DDVersion belongs to the configured service's spans; the gateway span (another
         * service) shows only what a configured tag says. */
        CHECK_STR(dd_span_get_meta(s, "version"), s == t->server ? "1.2" : "tag-version");
        CHECK_STR(dd_span_get_meta(s, "span.kind"), "server");
        CHECK_STR(dd_span_get_meta(s, "team"), "b");
        CHECK_STR(dd_span_get_meta(s, "owner"), "y");
        const dd_meta_t *m = (const dd_meta_t *)s->meta->elts;
        int envs = 0;
        for (int i = 0; i < s->meta->nelts; i++)
            envs += strcmp(m[i].key, "env") == 0;
        CHECK(envs == 1); /* keys stay unique */
    }
    CHECK_STR(dd_span_get_meta(t->server, "http.url"), "http://api.internal:8080/api/users/123");
    CHECK_STR(dd_span_get_meta(t->inferred, "http.url"), "https://gw.example/users/123");
    CHECK(dd_rates_update_json(rates, body, strlen(body), NULL) == 0);
    dd_trace_sample(t, &c, NULL, rates, 0);
    CHECK(t->priority == 1); /* the agent's rate for env:prod, the env the spans show */

    c.env = NULL; /* no DDEnv / DD_ENV: the tag is the env, for the spans and the rate key */
    c.version = NULL;
    t = dd_trace_start(p, &c, &r, &g, NULL);
    dd_trace_apply_tags(t, merged);
    CHECK_STR(dd_span_get_meta(t->inferred, "env"), "from-tag");
    CHECK_STR(dd_span_get_meta(t->server, "version"), "tag-version");
    dd_trace_sample(t, &c, NULL, rates, 0);
    CHECK(t->priority == 0); /* rate 0 for env:from-tag */
    dd_rates_destroy(rates);
    apr_pool_destroy(p);
}

/* 100,000 configured tags, in two levels that overlap, applied to both spans of a request:
 * with a search per tag this takes minutes (quadratic); linear, well under a second. The alarm
 * turns "minutes" into a failure (issue 18 item 5). */
static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "test_trace: 100,000 tags took over 20 s: tag handling is not "
                              "linear in the number of tags\n";
    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(2);
    _exit(1);
}

static void test_many_tags_linear(void)
{
    enum { N = 100000 };
    apr_pool_t *p;
    dd_tagset_t *a, *b;
    const dd_tagset_t *m;
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_gateway_t g = gateway(DD_GW_AWS_APIGATEWAY);
    dd_trace_t *t;
    char *chunk = NULL;
    size_t len = 0;

    apr_pool_create(&p, pool);
    signal(SIGALRM, on_alarm);
    alarm(20);
    a = dd_tagset_make(p);
    b = dd_tagset_make(p);
    for (int i = 0; i < N; i++) {
        dd_tagset_put(a, apr_psprintf(p, "tag.%d", i), "server");
        if (i % 2 == 0)
            dd_tagset_put(b, apr_psprintf(p, "tag.%d", i), "location");
        dd_tagset_put(a, apr_psprintf(p, "tag.%d", i / 2), "server-again"); /* duplicates */
    }
    m = dd_tagset_merge(p, a, b);
    t = dd_trace_start(p, &c, &r, &g, NULL);
    dd_trace_apply_tags(t, m);
    dd_trace_sample(t, &c, NULL, NULL, 0);
    dd_trace_finish(t, r.start_mono_ns + 1000, 500, NULL, NULL);
    CHECK(dd_trace_encode(t, &chunk, &len) == 0 && len > (size_t)N * 10);
    alarm(0);
    CHECK_STR(dd_span_get_meta(t->server, "tag.2"), "location");
    CHECK_STR(dd_span_get_meta(t->inferred, "tag.1"), "server-again");
    CHECK_STR(dd_span_get_meta(t->server, "tag.99999"), "server");
    CHECK(t->server->meta->nelts > N && t->inferred->meta->nelts > N);
    CHECK_STR(dd_span_get_meta(t->server, "http.status_code"), "500");
    free(chunk);
    apr_pool_destroy(p);
}

/* IPv6 hosts keep (or get) their brackets in http.url (issue 18 item 4). */
static void test_ipv6_urls(void)
{
    static const struct {
        const char *host;
        unsigned port;
        const char *url;
    } cases[] = {
        {"::1", 8080, "http://[::1]:8080/p"},
        {"2001:db8::7", 80, "http://[2001:db8::7]/p"},
        {"[::1]", 8080, "http://[::1]:8080/p"},
        {"fe80::1%eth0", 0, "http://[fe80::1%eth0]/p"},
        {"10.0.0.1", 8080, "http://10.0.0.1:8080/p"},
        {"example.com", 80, "http://example.com/p"},
    };
    static const struct {
        const char *domain, *url;
    } domains[] = {
        {"2001:db8::1", "https://[2001:db8::1]/g"},
        {"[2001:db8::1]:8443", "https://[2001:db8::1]:8443/g"},
        {"api.example.com:8443", "https://api.example.com:8443/g"},
    };
    dd_trace_conf_t c = conf();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dd_request_info_t r = request();
        r.host = cases[i].host;
        r.port = cases[i].port;
        r.path = "/p";
        CHECK_STR(dd_span_get_meta(dd_trace_start(pool, &c, &r, NULL, NULL)->server, "http.url"),
                  cases[i].url);
    }
    for (size_t i = 0; i < sizeof(domains) / sizeof(domains[0]); i++) {
        dd_request_info_t r = request();
        dd_gateway_t g = gateway(DD_GW_AWS_APIGATEWAY);
        g.domain = domains[i].domain;
        g.path = "/g";
        CHECK_STR(dd_span_get_meta(dd_trace_start(pool, &c, &r, &g, NULL)->inferred, "http.url"),
                  domains[i].url);
    }
}

/* http.endpoint (DDTraceResourceRenaming): off by default; fallback only without http.route;
 * always next to it; never over a header tag of that name; on the server span only. */
static void test_endpoint(void)
{
    dd_trace_conf_t c = conf();
    dd_request_info_t r = request();
    dd_gateway_t g = gateway(DD_GW_AWS_APIGATEWAY);
    apr_array_header_t *tags = apr_array_make(pool, 1, sizeof(dd_meta_t));
    dd_trace_t *t;

    t = dd_trace_start(pool, &c, &r, NULL, NULL);
    CHECK(dd_span_get_meta(t->server, "http.endpoint") == NULL);
    c.endpoint = DD_ENDPOINT_FALLBACK;
    r.path = "/api/users/123/";
    t = dd_trace_start(pool, &c, &r, NULL, NULL);
    CHECK_STR(dd_span_get_meta(t->server, "http.endpoint"), "/api/users/{param:int}/");
    CHECK_STR(t->server->resource, "GET /api/users/123/");
    t = dd_trace_start(pool, &c, &r, &g, NULL); /* the gateway's resource path: http.route */
    CHECK_STR(dd_span_get_meta(t->server, "http.route"), "/users/{id}");
    CHECK(dd_span_get_meta(t->server, "http.endpoint") == NULL);
    CHECK(dd_span_get_meta(t->inferred, "http.endpoint") == NULL);
    c.endpoint = DD_ENDPOINT_ALWAYS;
    t = dd_trace_start(pool, &c, &r, &g, NULL);
    CHECK_STR(dd_span_get_meta(t->server, "http.endpoint"), "/api/users/{param:int}/");
    CHECK(dd_span_get_meta(t->inferred, "http.endpoint") == NULL);
    r.path = NULL; /* a request httpd could not read: http.url has no path */
    t = dd_trace_start(pool, &c, &r, NULL, NULL);
    CHECK_STR(dd_span_get_meta(t->server, "http.endpoint"), "/");
    r.path = "/api/users/123";
    *(dd_meta_t *)apr_array_push(tags) = (dd_meta_t){"http.endpoint", "/mine", 0, 0};
    r.tags = tags;
    t = dd_trace_start(pool, &c, &r, NULL, NULL);
    CHECK_STR(dd_span_get_meta(t->server, "http.endpoint"), "/mine");
}

/* A span's tags against a plain model, through every way of setting them (put with and
 * without lengths, set, remove, runs, metrics) on a small set of keys, so that keys repeat
 * and their dd_key_bit()s collide: a key is never there twice, and is found while it is. */
static void test_tags_against_model(void)
{
    static const char *keys[] = {"a", "b", "env", "version", "http.url", "http.status_code",
                                 "x.1", "x.2", "x.3", "_dd.p.dm", "zz", "span.kind"};
    enum { K = sizeof(keys) / sizeof(keys[0]) };
    uint64_t x = 0x2545F4914F6CDD1DULL;
    int ok = 1;
    for (int round = 0; round < 2000; round++) {
        apr_pool_t *p;
        const char *model[K] = {0};
        int has_metric[K] = {0};
        dd_span_t *s;
        apr_pool_create(&p, pool);
        s = dd_span_create(p);
        for (int op = 0; op < 40; op++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            int k = (int)(x % K), what = (int)((x >> 8) % 6);
            const char *v = apr_psprintf(p, "v%d", op);
            dd_meta_t m = {keys[k], v, what == 0 ? (uint32_t)strlen(keys[k]) : 0, 0};
            if (what <= 1) {
                dd_span_put_meta(s, &m);
                model[k] = v;
            } else if (what == 2) {
                dd_span_set_meta(s, keys[k], NULL);
                model[k] = NULL;
            } else if (what == 3 && !model[k]) { /* a run of one key the span has not got */
                dd_span_add_run(s, dd_run_make(p, &m, 1));
                model[k] = v;
            } else if (what == 4) {
                dd_span_set_metric_n(s, keys[k], (x >> 20) % 2 ? (uint32_t)strlen(keys[k]) : 0,
                                     op);
                has_metric[k] = 1;
            }
        }
        for (int k = 0; k < K; k++) {
            const char *got = dd_span_get_meta(s, keys[k]);
            int n = 0, nm = 0;
            double d;
            for (int i = 0; i < s->meta->nelts; i++)
                n += strcmp(((const dd_meta_t *)s->meta->elts)[i].key, keys[k]) == 0;
            for (int i = 0; i < s->metrics->nelts; i++)
                nm += strcmp(((const dd_metric_t *)s->metrics->elts)[i].key, keys[k]) == 0;
            ok &= (model[k] ? got && strcmp(got, model[k]) == 0 && n == 1 : !got && n == 0);
            ok &= nm == has_metric[k] && dd_span_get_metric(s, keys[k], &d) == has_metric[k];
        }
        apr_pool_destroy(p);
    }
    CHECK(ok);
}

/* _dd.p.ksr without printf: the same string as "%.6f" with the trailing zeros cut, for rates
 * on and near every rounding tie, random ones, and the edges. */
static void test_knuth_rate(void)
{
    int same = 0, runs = 0;
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < 300000; i++) {
        double r;
        char want[32];
        size_t n;
        uint32_t len = 0;
        const char *got;
        if (i < 100000) { /* ties k + 0.5 (some exact: 1/128 ...) and their neighbours */
            uint64_t bits;
            r = ((double)(i / 3) + 0.5) / 1e6;
            memcpy(&bits, &r, sizeof(r));
            bits += i % 3 == 0 ? 0 : i % 3 == 1 ? (uint64_t)-1 : 1; /* the doubles beside it */
            memcpy(&r, &bits, sizeof(r));
        } else if (i < 100010) {
            double edge[] = {0, 1, -1, 2, 1e-7, 5e-7, 0.9999995, 0.0078125, 0.5, 1 - 1e-12};
            r = edge[i - 100000];
        } else {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            r = (double)(x >> 11) / 9007199254740992.0;
        }
        snprintf(want, sizeof(want), "%.6f", r < 0 ? 0 : r > 1 ? 1 : r);
        n = strlen(want);
        while (n > 1 && want[n - 1] == '0')
            n--;
        if (want[n - 1] == '.')
            n--;
        want[n] = '\0';
        got = dd_knuth_rate(pool, r, &len);
        runs++;
        if (strcmp(got, want) == 0 && len == n)
            same++;
        else if (runs - same < 5)
            fprintf(stderr, "knuth rate %.17g: %s, printf %s\n", r, got, want);
    }
    CHECK(same == runs);
    for (double k = 1; k <= 128; k *= 2) /* exact binary ties: printf's rounding */
        CHECK(dd_knuth_rate(pool, 1 / k, NULL)[0] != '\0');
    CHECK_STR(dd_knuth_rate(pool, 1.0 / 128, NULL), "0.007812");
    CHECK_STR(dd_knuth_rate(pool, 0.25, NULL), "0.25");
    CHECK_STR(dd_knuth_rate(pool, 1, NULL), "1");
    CHECK_STR(dd_knuth_rate(pool, 0, NULL), "0");
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    test_server_only();
    test_gateway_spans();
    test_azure_gateways_without_time();
    test_version_and_base_service();
    test_runtime_tags();
    test_inbound_parent();
    test_sampling_formula();
    test_rules_at_the_gateway();
    test_clean_request();
    test_features();
    test_clock_steps();
    test_tag_precedence();
    test_many_tags_linear();
    test_knuth_rate();
    test_tags_against_model();
    test_ipv6_urls();
    test_endpoint();
    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
