/* SPDX-License-Identifier: Apache-2.0 */
/* dd_trace.c - one request's trace: the inferred (gateway) span and the server span.
 *
 * The inferred span is the local root when a gateway was seen: it carries the trace-level
 * tags (_dd.p.tid, the sampling decision) and is the parent of the server span. Everything a
 * header contributes to a tag was cleaned by dd_gateway.c, and everything the request line
 * contributes is cleaned here, so no tag value is invalid UTF-8 or longer than its cap.
 */
#include "dd_trace.h"
#include "dd_encode.h"
#include "dd_endpoint.h"
#include "dd_util.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <apr_lib.h>
#include <apr_strings.h>

/* A fresh span's own tags: literal keys (and values), appended without a search. */
#define ADD(s, key, value) dd_span_add_meta_n((s), DD_LIT(key), (value), 0)
#define ADD_LIT(s, key, value) dd_span_add_meta_n((s), DD_LIT(key), DD_LIT(value))
/* Sets (or replaces) a tag with a literal key; vlen as in dd_meta_t. */
#define SET(s, key, value, vlen)                                                                   \
    dd_span_put_meta((s), &(dd_meta_t){"" key "", (value), sizeof(key) - 1, (vlen)})

static const char *clean(apr_pool_t *p, const char *s, size_t cap, int *truncated)
{
    return s ? dd_str_clean(p, s, strlen(s), cap, truncated) : NULL;
}

/* clean(), and *len gets the result's length (0 for NULL). */
static const char *clean_n(apr_pool_t *p, const char *s, size_t cap, int *truncated, size_t *len)
{
    const char *out;
    if (!s) {
        *len = 0;
        return NULL;
    }
    *len = strlen(s);
    out = dd_str_clean(p, s, *len, cap, truncated);
    if (out != s)
        *len = strlen(out);
    return out;
}

#define UNKNOWN_LEN ((size_t)-1)

/* Joins n clean strings (valid UTF-8, as everything here is once cleaned) into one pool
 * string. The result is valid UTF-8 too, so it only goes through dd_str_clean when it is
 * longer than cap, to be cut on a character boundary. lens (or NULL) gives the parts' lengths
 * where known, else UNKNOWN_LEN. */
static const char *join(apr_pool_t *p, size_t cap, int *truncated, size_t n,
                        const char *const *parts, const size_t *lens, size_t *out_len)
{
    size_t len[8], total = 0;
    char *out, *o;
    for (size_t i = 0; i < n; i++)
        total += len[i] = lens && lens[i] != UNKNOWN_LEN ? lens[i] : strlen(parts[i]);
    o = out = apr_palloc(p, total + 1);
    for (size_t i = 0; i < n; i++) {
        memcpy(o, parts[i], len[i]);
        o += len[i];
    }
    *o = '\0';
    if (total > cap) {
        out = (char *)dd_str_clean(p, out, total, cap, truncated);
        total = strlen(out);
    }
    if (out_len)
        *out_len = total;
    return out;
}

/* The vlen (dd_meta_t) of a value of n bytes: n when it has no control characters, so the
 * encoder copies it as it is, else 0. */
static uint32_t vlen_of(const char *s, size_t n)
{
    return s && n > 0 && n <= UINT32_MAX && !dd_encode_has_control(s, n) ? (uint32_t)n : 0;
}

#define JOIN(p, cap, truncated, ...)                                                               \
    join((p), (cap), (truncated), sizeof((const char *[]){__VA_ARGS__}) / sizeof(const char *),    \
         (const char *[]){__VA_ARGS__}, NULL, NULL)

static const char server_span_name[] = "httpd.request";

/* What a configuration's spans start with, encoded once (dd_trace_conf_prepare), and what it
 * was made from. */
typedef struct dd_trace_fixed {
    const char *service, *env, *version, *runtime_id;
    long pid;
    const dd_run_t *server_meta, *server_metrics, *inferred_meta, *inferred_metrics;
    dd_span_known_t server_known, inferred_known;
} dd_trace_fixed_t;

/* The module's own tags that do not change from one request to the next. env and version
 * from DDEnv/DD_ENV, DDVersion/DD_VERSION: a configured tag of the same name does not replace
 * them (dd_trace_apply_tags). Unified service tagging, as Datadog's tracers do it: version
 * belongs to the configured service, so the gateway's span, whose service is another (or may
 * be), adds it per request (make_inferred_span). The runtime tags, as dd-trace-cpp
 * (httpd-datadog) sends them: runtime-id, language (Datadog-Meta-Lang: c), process_id. */
static const dd_trace_fixed_t *fixed_make(apr_pool_t *p, const dd_trace_conf_t *conf)
{
    dd_trace_fixed_t *f = apr_pcalloc(p, sizeof(*f));
    dd_meta_t m[8], svc = {conf->service, NULL, 0, 0};
    dd_metric_t x[2];
    int n = 0, k = 0;

    f->service = conf->service;
    f->env = conf->env;
    f->version = conf->version;
    f->runtime_id = conf->runtime_id;
    f->pid = conf->pid;

    m[n++] = (dd_meta_t){"component", "httpd", 9, 5};
    m[n++] = (dd_meta_t){"span.kind", "server", 9, 6};
    m[n] = (dd_meta_t){"env", conf->env, 3, 0};
    n += conf->env != NULL;
    m[n] = (dd_meta_t){"version", conf->version, 7, 0};
    n += conf->version != NULL;
    if (conf->runtime_id) {
        m[n++] = (dd_meta_t){"runtime-id", conf->runtime_id, 10, 36};
        m[n++] = (dd_meta_t){"language", "c", 8, 1};
    }
    for (int i = 0; i < n; i++)
        if (!m[i].vlen)
            dd_meta_measure(&m[i]);
    f->server_meta = dd_run_make(p, m, n);
    /* The gateway's span: all but component (the gateway's kind) and version. */
    k = 0;
    for (int i = 1; i < n; i++)
        if (strcmp(m[i].key, "version") != 0)
            m[k++] = m[i];
    f->inferred_meta = dd_run_make(p, m, k);

    n = 0;
    x[n] = (dd_metric_t){"process_id", (double)conf->pid, 10};
    n += conf->pid > 0;
    f->server_metrics = dd_run_make_metrics(p, x, n);
    x[0] = (dd_metric_t){"_dd.inferred_span", 1, 17};
    x[1] = (dd_metric_t){"process_id", (double)conf->pid, 10};
    f->inferred_metrics = dd_run_make_metrics(p, x, 1 + (conf->pid > 0));

    dd_meta_measure(&svc);
    f->server_known = (dd_span_known_t){.name = server_span_name,
                                        .service = conf->service,
                                        .type = dd_span_type_web,
                                        .name_len = sizeof(server_span_name) - 1,
                                        .service_len = svc.klen,
                                        .type_len = 3};
    f->inferred_known = f->server_known; /* its name is the gateway's */
    f->inferred_known.name = NULL;
    f->inferred_known.name_len = 0;
    return f;
}

void dd_trace_conf_prepare(apr_pool_t *p, dd_trace_conf_t *conf)
{
    conf->fixed = fixed_make(p, conf);
}

/* conf->fixed when it is conf's, else made now for this trace. */
static const dd_trace_fixed_t *fixed_of(apr_pool_t *p, const dd_trace_conf_t *conf)
{
    const dd_trace_fixed_t *f = conf->fixed;
    if (f && f->service == conf->service && f->env == conf->env && f->version == conf->version &&
        f->runtime_id == conf->runtime_id && f->pid == conf->pid)
        return f;
    return fixed_make(p, conf);
}

/* A host for a URL (RFC 3986): an IPv6 address gets its brackets ("::1" -> "[::1]"); a name,
 * an IPv4 address, "name:port" or an address already in brackets stays as it is. httpd gives
 * the Host header's IPv6 address without them. */
static const char *url_host(apr_pool_t *p, const char *host)
{
    const char *colon = strchr(host, ':');
    if (host[0] == '[' || !colon || !strchr(colon + 1, ':'))
        return host;
    return JOIN(p, DD_CAP_VALUE + 2, NULL, "[", host, "]");
}

/* _dd.base_service: on a span whose service is not the configured one, the configured one,
 * lowercased (dd-trace-js compares and records it lowercased; the agent lowercases services). */
static void set_base_service(apr_pool_t *p, dd_span_t *s, const dd_trace_conf_t *conf)
{
    size_t n = strlen(conf->service);
    char *lower;
    if (strcasecmp(s->service, conf->service) == 0)
        return;
    lower = apr_palloc(p, n + 1);
    for (size_t i = 0; i <= n; i++)
        lower[i] = (char)apr_tolower((unsigned char)conf->service[i]);
    dd_span_add_meta_n(s, DD_LIT("_dd.base_service"), lower, 0);
}

/* scheme://host[:port]path[?query], from the parts' lengths where they are known. */
static const char *server_url(apr_pool_t *p, const dd_request_info_t *req, const char *host,
                              size_t host_len, const char *path, size_t path_len, int *truncated,
                              size_t *url_len)
{
    char port[8], *d = port + sizeof(port) - 1;
    const char *q = req->query && *req->query ? "?" : "", *query = *q ? req->query : "";
    unsigned v = req->port;
    int default_port = req->port == 0 || (strcmp(req->scheme, "https") == 0 && req->port == 443) ||
                       (strcmp(req->scheme, "http") == 0 && req->port == 80);
    const char *bracketed = url_host(p, host);

    *d = '\0';
    if (!default_port) { /* ":<port>" without printf: a port is at most 5 digits */
        do {
            *--d = (char)('0' + v % 10);
            v /= 10;
        } while (v && d > port + 1);
        *--d = ':';
    }
    return join(p, DD_CAP_PATH, truncated, 7,
                (const char *[]){req->scheme, "://", bracketed, d, path, q, query},
                (const size_t[]){UNKNOWN_LEN, 3, bracketed == host ? host_len : UNKNOWN_LEN,
                                 (size_t)(port + sizeof(port) - 1 - d), path_len, *q ? 1 : 0,
                                 UNKNOWN_LEN},
                url_len);
}

static dd_span_t *make_server_span(apr_pool_t *p, const dd_trace_conf_t *conf,
                                   const dd_trace_fixed_t *f, const dd_request_info_t *req,
                                   const dd_gateway_t *gw, const char *user_agent, uint32_t ua_vlen,
                                   int *truncated)
{
    dd_span_t *s = dd_span_create(p);
    size_t method_len, path_len, host_len, url_len;
    const char *url;
    const char *method = clean_n(p, req->method, DD_CAP_VALUE, truncated, &method_len);
    const char *path = clean_n(p, req->path, DD_CAP_PATH, truncated, &path_len);
    const char *host =
        clean_n(p, req->host ? req->host : "localhost", DD_CAP_VALUE, truncated, &host_len);

    s->name = server_span_name;
    s->service = conf->service;
    s->known = &f->server_known;
    dd_span_add_run(s, f->server_meta); /* component, span.kind, env, version, runtime ... */
    dd_span_add_run(s, f->server_metrics);
    /* Method and path are unknown only for a request httpd could not read (a 414 ...). */
    if (method && path) {
        size_t n;
        s->resource = join(p, DD_CAP_PATH, truncated, 3, (const char *[]){method, " ", path},
                           (const size_t[]){method_len, 1, path_len}, &n);
        s->resource_clean = s->resource; /* measured: the encoder copies it */
        s->resource_len = vlen_of(s->resource, n);
    } else {
        s->resource = method ? method : path ? path : s->name;
    }
    s->start = req->start_ns;
    /* A fresh span: its own tags are appended without a search (the keys are distinct). */
    url = server_url(p, req, host, host_len, path ? path : "", path_len, truncated, &url_len);
    /* with their lengths when clean: the encoder copies them */
    dd_span_add_meta_n(s, DD_LIT("http.method"), method, vlen_of(method, method_len));
    dd_span_add_meta_n(s, DD_LIT("http.url"), url, vlen_of(url, url_len));
    if (user_agent)
        dd_span_add_meta_n(s, DD_LIT("http.useragent"), user_agent, ua_vlen);
    if (req->client_ip)
        ADD(s, "http.client_ip", req->client_ip);
    if (req->network_client_ip)
        ADD(s, "network.client.ip", req->network_client_ip);
    if (gw && gw->resource_path)
        ADD(s, "http.route", gw->resource_path);
    if (req->tags) { /* header tags: the glue cleaned them, and they replace a tag they name */
        const dd_meta_t *m = (const dd_meta_t *)req->tags->elts;
        for (int i = 0; i < req->tags->nelts; i++)
            dd_span_put_meta(s, &m[i]);
    }
    /* http.endpoint from http.url's path, as dd-trace-cpp sets it: not over one already set
     * (a header tag), and only where there is no http.route unless always asked for */
    if (conf->endpoint != DD_ENDPOINT_OFF && !dd_span_get_meta(s, "http.endpoint") &&
        (conf->endpoint == DD_ENDPOINT_ALWAYS || !dd_span_get_meta(s, "http.route")))
        ADD(s, "http.endpoint", dd_endpoint_infer(p, path ? path : "", path ? strlen(path) : 0));
    if (req->truncated)
        *truncated = 1;
    return s;
}

static dd_span_t *make_inferred_span(apr_pool_t *p, const dd_trace_conf_t *conf,
                                     const dd_trace_fixed_t *f, const dd_request_info_t *req,
                                     const dd_gateway_t *gw, const char *user_agent,
                                     uint32_t ua_vlen, int *truncated)
{
    dd_span_t *s = dd_span_create(p);
    const char *route = gw->resource_path ? gw->resource_path : gw->path;

    s->name = dd_gateway_span_name(gw->kind);
    s->service = gw->domain ? gw->domain : conf->service;
    s->known = &f->inferred_known;
    dd_span_add_run(s, f->inferred_meta); /* span.kind, env, runtime-id, language */
    dd_span_add_run(s, f->inferred_metrics);
    if (gw->method && route)
        s->resource = JOIN(p, DD_CAP_PATH, truncated, gw->method, " ", route);
    else
        s->resource = gw->method ? gw->method : route ? route : s->name;
    /* azure-gw and azure-fd send no time: the gateway span starts with the request (as
     * dd-trace-js's Date.now() when the request arrives), not at its millisecond */
    s->start = gw->no_time ? req->start_ns : gw->request_time_ms * 1000000LL;
    if (s->start > req->start_ns)
        s->start = req->start_ns; /* the gateway's clock is ahead: never a negative gap */

    ADD(s, "component", dd_gateway_component(gw->kind));
    if (gw->method)
        ADD(s, "http.method", gw->method);
    if (gw->domain)
        ADD(s, "http.url",
            JOIN(p, DD_CAP_PATH, truncated, "https://", url_host(p, gw->domain),
                 gw->path ? gw->path : ""));
    else if (gw->path)
        ADD(s, "http.url", gw->path);
    if (gw->resource_path)
        ADD(s, "http.route", gw->resource_path);
    if (gw->stage)
        ADD(s, "stage", gw->stage);
    if (gw->region)
        ADD(s, "region", gw->region);
    if (gw->account_id)
        ADD(s, "account_id", gw->account_id);
    if (gw->api_id)
        ADD(s, "apiid", gw->api_id);
    if (gw->region && gw->api_id && dd_gateway_is_aws(gw->kind)) /* an Azure API has no ARN */
        ADD(s, "dd_resource_key",
            JOIN(p, DD_CAP_VALUE, truncated, "arn:aws:apigateway:", gw->region, "::/",
                 gw->kind == DD_GW_AWS_HTTPAPI ? "apis/" : "restapis/", gw->api_id));
    if (gw->user && conf->user_tag)
        ADD(s, "aws_user", gw->user);
    if (user_agent)
        dd_span_add_meta_n(s, DD_LIT("http.useragent"), user_agent, ua_vlen);
    if (conf->version && (s->service == conf->service || strcmp(s->service, conf->service) == 0))
        ADD(s, "version", conf->version); /* the configured service's version */
    set_base_service(p, s, conf);
    return s;
}

dd_trace_t *dd_trace_start(apr_pool_t *p, const dd_trace_conf_t *conf, const dd_request_info_t *req,
                           const dd_gateway_t *gw, const dd_context_t *parent)
{
    dd_trace_t *t = apr_pcalloc(p, sizeof(*t));
    const dd_trace_fixed_t *f = fixed_of(p, conf);
    dd_span_t *root;
    uint64_t high, low;
    const char *user_agent;
    int ua_cut = 0, cut;
    size_t ua_len;
    uint32_t ua_vlen;

    t->pool = p;
    t->priority = DD_PRIORITY_UNSET;
    t->error_statuses = conf->error_statuses;
    t->start_mono_ns = req->start_mono_ns;
    if (parent && parent->trace_id_low) {
        t->parent = *parent;
        high = parent->trace_id_high;
        low = parent->trace_id_low;
    } else {
        t->parent.priority = DD_PRIORITY_UNSET;
        high = conf->trace_id_128 ? ((uint64_t)(req->start_ns / 1000000000LL) << 32) : 0;
        low = dd_random_id(!conf->trace_id_128);
    }

    /* The user agent goes on both spans: cleaned once. A value cut to its cap marks the
     * span that shows it with _dd.proxy.truncated. */
    user_agent = clean_n(p, req->user_agent, DD_CAP_VALUE, &ua_cut, &ua_len);
    ua_vlen = vlen_of(user_agent, ua_len);
    cut = ua_cut;
    t->server = make_server_span(p, conf, f, req, gw, user_agent, ua_vlen, &cut);
    if (cut)
        dd_span_set_metric_n(t->server, DD_LIT("_dd.proxy.truncated"), 1);
    t->server->span_id = dd_random_id(1);
    if (gw) {
        cut = ua_cut || gw->truncated;
        t->inferred = make_inferred_span(p, conf, f, req, gw, user_agent, ua_vlen, &cut);
        if (cut)
            dd_span_set_metric_n(t->inferred, DD_LIT("_dd.proxy.truncated"), 1);
        t->inferred->span_id = dd_random_id(1);
        t->inferred->parent_id = t->parent.parent_id;
        t->server->parent_id = t->inferred->span_id;
    } else {
        t->server->parent_id = t->parent.parent_id;
    }

    root = dd_trace_root(t);
    for (dd_span_t *s = t->server; s; s = (s == t->server ? t->inferred : NULL)) {
        s->trace_id = low;
        s->trace_id_high = high;
        if (t->parent.origin)
            SET(s, "_dd.origin", t->parent.origin, 0);
    }
    if (high) {
        char *hex = apr_palloc(p, 17);
        dd_u64_to_hex16(high, hex);
        dd_span_add_meta_n(root, DD_LIT("_dd.p.tid"), hex, 16);
        t->tid_hex = hex;
    }
    if (t->parent.tags) {
        const dd_meta_t *tag = (const dd_meta_t *)t->parent.tags->elts;
        for (int i = 0; i < t->parent.tags->nelts; i++)
            dd_span_put_meta(root, &tag[i]);
    }
    return t;
}

void dd_trace_apply_tags(dd_trace_t *t, const dd_tagset_t *tags)
{
    dd_span_apply_tagset(t->server, tags);
    if (t->inferred)
        dd_span_apply_tagset(t->inferred, tags);
}

void dd_runtime_id(char out[37])
{
    static const char hex[] = "0123456789abcdef";
    uint64_t a = dd_random_id(0), b = dd_random_id(0);
    int j = 0;
    a = (a & ~0xF000ULL) | 0x4000ULL;       /* version 4 */
    b = (b & ~(3ULL << 62)) | (2ULL << 62); /* variant 10 */
    for (int i = 0; i < 32; i++) {
        uint64_t w = i < 16 ? a : b;
        int shift = 60 - 4 * (i % 16);
        if (i == 8 || i == 12 || i == 16 || i == 20)
            out[j++] = '-';
        out[j++] = hex[(w >> shift) & 0xF];
    }
    out[j] = '\0';
}

dd_span_t *dd_trace_root(const dd_trace_t *t)
{
    return t->inferred ? t->inferred : t->server;
}

const char *dd_knuth_rate(apr_pool_t *p, double rate, uint32_t *len)
{
    double r = rate < 0 ? 0 : rate > 1 ? 1 : rate, y = r == r ? r * 1e6 : 0.5, frac;
    uint32_t k = (uint32_t)y, n = 0;
    char *out = apr_palloc(p, 16);

    /* "%.6f" rounds the exact binary value; y's error is far below 1e-6, so the rounding
     * decision is the same unless y is that close to a tie: then (and for a NaN) printf
     * decides. */
    frac = y - (double)k;
    if (frac > 0.5 - 1e-6 && frac < 0.5 + 1e-6) {
        n = (uint32_t)snprintf(out, 16, "%.6f", r);
        while (n > 1 && out[n - 1] == '0')
            n--;
        if (out[n - 1] == '.')
            n--;
    } else {
        k += frac > 0.5;
        if (k >= 1000000) {
            out[n++] = '1';
        } else {
            out[n++] = '0';
            if (k) {
                int digits = 6;
                while (k % 10 == 0) { /* no trailing zeros */
                    k /= 10;
                    digits--;
                }
                out[n++] = '.';
                for (int i = digits - 1; i >= 0; i--, k /= 10)
                    out[n + (uint32_t)i] = (char)('0' + k % 10);
                n += (uint32_t)digits;
            }
        }
    }
    out[n] = '\0';
    if (len)
        *len = n;
    return out;
}

void dd_trace_sample(dd_trace_t *t, const dd_trace_conf_t *conf, dd_limiter_t *limiter,
                     dd_rates_t *rates, int64_t now_mono_ns)
{
    dd_span_t *root = dd_trace_root(t);
    dd_sample_input_t in;
    dd_decision_t d;
    uint32_t ksr_len;

    if (t->parent.priority != DD_PRIORITY_UNSET) {
        t->priority = t->parent.priority; /* decided upstream: honoured as is */
        dd_span_set_metric_n(root, DD_LIT("_sampling_priority_v1"), t->priority);
        return;
    }
    in.service = root->service;
    in.name = root->name;
    in.resource = root->resource;
    in.meta = root->meta;
    in.env = dd_span_get_meta(root, "env"); /* the env the trace shows (DDEnv, else a tag) */
    in.trace_id_low = root->trace_id;
    dd_sample(conf->rules, limiter, rates, &in, now_mono_ns, &d);

    t->priority = d.priority;
    dd_span_set_metric_n(root, DD_LIT("_sampling_priority_v1"), d.priority);
    if (DD_MECH_IS_RULE(d.mechanism)) {
        dd_span_set_metric_n(root, DD_LIT("_dd.rule_psr"), d.rate);
        if (d.limiter_used)
            dd_span_set_metric_n(root, DD_LIT("_dd.limit_psr"), d.limit_psr);
    } else {
        dd_span_set_metric_n(root, DD_LIT("_dd.agent_psr"), d.rate);
    }
    /* _dd.p.ksr: the rate a rule or the agent's rates applied, propagated with the trace (keep
     * or drop) so that downstream and the backend know the probability (dd-trace-js
     * formatKnuthRate: at most 6 decimals, no trailing zeros). */
    if (DD_MECH_IS_RULE(d.mechanism) || d.mechanism == DD_MECH_AGENT) {
        const char *ksr = dd_knuth_rate(t->pool, d.rate, &ksr_len);
        SET(root, "_dd.p.ksr", ksr, ksr_len);
    }
    /* The decision maker is propagated only with a keep, as Datadog tracers do. */
    if (d.priority > 0)
        SET(root, "_dd.p.dm",
            d.mechanism == DD_MECH_RULE             ? "-3"
            : d.mechanism == DD_MECH_AGENT          ? "-1"
            : d.mechanism == DD_MECH_REMOTE_USER    ? "-11"
            : d.mechanism == DD_MECH_REMOTE_DYNAMIC ? "-12"
                                                    : "-0",
            d.mechanism >= DD_MECH_REMOTE_USER ? 3 : 2);
}

void dd_trace_inject_input(const dd_trace_t *t, const char *tracestate, dd_inject_t *out)
{
    const dd_span_t *root = dd_trace_root(t);
    const dd_meta_t *m = (const dd_meta_t *)root->meta->elts;
    apr_array_header_t *tags = apr_array_make(t->pool, 4, sizeof(dd_meta_t));

    for (int i = 0; i < root->meta->nelts; i++) {
        if (m[i].key[0] == '_' && strncmp(m[i].key, "_dd.p.", 6) == 0 &&
            strcmp(m[i].key, "_dd.p.tid") != 0)
            *(dd_meta_t *)apr_array_push(tags) = m[i];
    }
    out->trace_id_high = t->server->trace_id_high;
    out->trace_id_low = t->server->trace_id;
    out->span_id = t->server->span_id;
    out->priority = t->priority;
    out->origin = t->parent.origin;
    out->tags = tags;
    out->tracestate = tracestate;
}

void dd_trace_finish(dd_trace_t *t, int64_t end_mono_ns, int status, const char *status_line,
                     const char *error_notes)
{
    dd_span_t *s = t->server;
    char *code;
    uint32_t code_len = 0;
    int64_t end_ns;

    if (status >= 100 && status <= 999) { /* three digits: no printf, and a known length */
        code = apr_palloc(t->pool, 4);
        code[0] = (char)('0' + status / 100);
        code[1] = (char)('0' + status / 10 % 10);
        code[2] = (char)('0' + status % 10);
        code[3] = '\0';
        code_len = 3;
    } else {
        code = apr_itoa(t->pool, status);
    }
    s->duration = end_mono_ns > t->start_mono_ns ? end_mono_ns - t->start_mono_ns : 0;
    end_ns = s->start + s->duration; /* on the epoch, as the gateway's start is */
    SET(s, "http.status_code", code, code_len);
    if (t->error_statuses ? dd_status_set_has(t->error_statuses, status)
                          : status >= 500 && status <= 599) {
        const char *msg = error_notes && *error_notes ? error_notes : status_line;
        int truncated = 0;
        s->error = 1;
        SET(s, "error.message", clean(t->pool, msg ? msg : code, DD_CAP_VALUE, &truncated), 0);
        SET(s, "error.type", apr_pstrcat(t->pool, "HTTP ", code, NULL), 0);
    }
    if (t->inferred) {
        /* The inferred span takes the server span's status and error tags: one pass. */
        dd_span_t *g = t->inferred;
        const dd_meta_t *m = (const dd_meta_t *)s->meta->elts;
        g->duration = end_ns > g->start ? end_ns - g->start : 0;
        g->error = s->error;
        for (int i = 0; i < s->meta->nelts; i++) {
            const char *k = m[i].key;
            uint32_t n = m[i].klen; /* a known length that is none of theirs: not one of them */
            if ((k[0] == 'h' && (n == 0 || n == 16) && strcmp(k, "http.status_code") == 0) ||
                (k[0] == 'e' && (n == 0 || n == 13 || n == 10) &&
                 (strcmp(k, "error.message") == 0 || strcmp(k, "error.type") == 0)))
                dd_span_put_meta(g, &m[i]);
        }
    }
}

int dd_trace_encode(const dd_trace_t *t, char **out, size_t *out_len)
{
    dd_span_t *spans[2];
    size_t n = 0;
    if (t->inferred)
        spans[n++] = t->inferred;
    spans[n++] = t->server;
    return dd_encode_chunk(spans, n, out, out_len);
}

const char *dd_trace_id_string(apr_pool_t *p, const dd_trace_t *t)
{
    const dd_span_t *s = t->server;
    if (s->trace_id_high) {
        char *out = apr_palloc(p, 33);
        if (t->tid_hex) /* the same 16 digits, written once */
            memcpy(out, t->tid_hex, 16);
        else
            dd_u64_to_hex16(s->trace_id_high, out);
        dd_u64_to_hex16(s->trace_id, out + 16);
        return out;
    }
    return dd_u64_to_dec(p, s->trace_id);
}

const char *dd_span_id_string(apr_pool_t *p, const dd_trace_t *t)
{
    return dd_u64_to_dec(p, t->server->span_id);
}
