/* test_trace.c - spans built from a request (+ gateway), sampling, finishing. */
#include "unit.h"
#include "dd_trace.h"

#include <math.h>
#include <apr_general.h>
#include <apr_strings.h>

static apr_pool_t *pool;

static dd_trace_conf_t conf(void)
{
    static apr_array_header_t *tags;
    dd_trace_conf_t c = {0};
    if (!tags) {
        tags = apr_array_make(pool, 1, sizeof(dd_meta_t));
        dd_meta_t *m = apr_array_push(tags);
        m->key = "team";
        m->value = "edge";
    }
    c.service = "httpd-svc";
    c.env = "prod";
    c.version = "1.2";
    c.tags = tags;
    c.trace_id_128 = 1;
    return c;
}

static dd_request_info_t request(void)
{
    dd_request_info_t r = {0};
    r.start_ns = 1736973768500000000LL;
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

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    test_server_only();
    test_gateway_spans();
    test_version_and_base_service();
    test_runtime_tags();
    test_inbound_parent();
    test_sampling_formula();
    test_rules_at_the_gateway();
    test_clean_request();
    test_features();
    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
