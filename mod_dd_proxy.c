/* SPDX-License-Identifier: Apache-2.0 */
/* mod_dd_proxy.c - httpd glue: the hooks and calls into lib/. Directives are in
 * mod_dd_proxy_config.c, the counters' pages in mod_dd_proxy_status.c.
 *
 * Data flows one way (CONTRACT §1):
 *   post_read_request  gateway headers -> dd_gateway_t; spans started (dd_trace_start);
 *                      ids in the request notes and subprocess environment
 *   fixups             the ids again for the request that will run (internal redirects)
 *   handler            (REALLY_FIRST) x-dd-proxy* stripped again, whatever way led there
 *   log_transaction    spans finished and encoded; the chunk goes on the lock-free queue
 * A request httpd rejects while reading it never runs post_read_request: its trace starts
 * when its ErrorDocument's fixups or its log_transaction run (request_state).
 *   flusher thread     (one per child, started in child_init) queue -> agent
 * A request thread never waits on a lock or on the network.
 */
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "ap_release.h"
#include "mod_status.h"
#include "mod_http2.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>
#include <apr_strings.h>
#include <apr_atomic.h>

#include "dd_agent.h"
#include "dd_baggage.h"
#include "dd_concentrator.h"
#include "dd_flusher.h"
#include "dd_gateway.h"
#include "dd_headers.h"
#include "dd_obfuscate.h"
#include "dd_propagation.h"
#include "dd_queue.h"
#include "dd_rates.h"
#include "dd_sampler.h"
#include "dd_stats.h"
#include "dd_trace.h"
#include "dd_util.h"
#include "mod_dd_proxy.h"
#include "mod_dd_proxy_rc.h"

/* The build passes the version as a bare token (quotes do not survive apxs and libtool). */
#define DD_STRINGIFY2(x) #x
#define DD_STRINGIFY(x) DD_STRINGIFY2(x)
#ifdef DD_PROXY_VERSION_TOKEN
#define DD_PROXY_VERSION DD_STRINGIFY(DD_PROXY_VERSION_TOKEN)
#else
#define DD_PROXY_VERSION "0.0.0"
#endif

#define MAX_PAYLOAD_BYTES (4 * 1024 * 1024)
#define SEND_TIMEOUT_MS 2000
#define STOP_DEADLINE_MS 2000
/* After an agent failure of any kind, the next try waits 250 ms, doubling up to 5 s (issue
 * 18.6): a failing agent costs a handful of attempts, and delivery resumes within 5 s of it
 * coming back. */
#define BACKOFF_MIN_MS 250
#define BACKOFF_MAX_MS 5000
/* Client-side stats (issue 13.2): records handed over between flushes (the flusher is woken
 * at half), distinct keys per 10 s bucket. */
#define CSTATS_RING_ITEMS 1024
#define CSTATS_MAX_KEYS 1000
#define CSTATS_FINAL_TIMEOUT_MS 500

/* ---------------------------------------------------------------------------------------- */
/* Per child process: queue, rates, counters, flusher                                       */
/* ---------------------------------------------------------------------------------------- */

static struct {
    dd_queue_t *queue;
    dd_rates_t *rates;
    dd_limiter_t *limiter;
    dd_agent_t *agent;
    dd_agent_url_t agent_url; /* for the detached exit flush's own client */
    dd_agent_t *exited_agent; /* there, the child's client, kept reachable (leak checkers) */
    dd_agent_result_t last_result; /* the flusher's last answer from the agent */
    dd_flusher_t *flusher;
    server_rec *server;
    apr_uint32_t last_error_log; /* apr_time_sec of the last agent error logged */
    apr_uint32_t last_reject_log;
    /* Child exit: closing turns log_transaction away from the queue; inflight counts the
     * requests between their check of closing and the end of their push, so child_cleanup
     * frees the queue only when no request thread can still be touching it. */
    atomic_bool closing;
    atomic_uint inflight;
    char runtime_id[37]; /* this child's runtime-id tag (issue 15: as dd-trace-cpp sends it) */
    long pid;
    /* Client-side stats (issue 13.2): the concentrator exists when DDClientStats allows them;
     * cstats_on says the agent announced /v0.6/stats and client_drop_p0s at the last /info.
     * Request threads read cstats_on and add to the P0 counts; the flusher swaps those into
     * the next trace payload's headers. */
    dd_concentrator_t *cs;
    atomic_bool cstats_on;
    atomic_uint_fast64_t p0_traces, p0_spans;
} child;

/* mod_http2's variables (H2_STREAM_ID), when it is loaded. */
static APR_OPTIONAL_FN_TYPE(http2_var_lookup) * h2_var;

static int agent_send(void *ctx, const char *payload, size_t len, size_t ntraces, long timeout_ms,
                      long *http_status, const char **error, const char **body, size_t *body_len)
{
    /* Only the flusher thread sends; the answer lives until the next send or child exit. */
    dd_agent_result_t *res = &child.last_result;
    int rc, on = atomic_load_explicit(&child.cstats_on, memory_order_relaxed);
    free(res->body);
    memset(res, 0, sizeof(*res));
    /* The P0 traces dropped since the last payload ride on this one (the tracers' way: a
     * failed send loses them, as it loses the payload's own traces). */
    dd_agent_set_client_stats(
        ctx, on, on ? atomic_exchange_explicit(&child.p0_traces, 0, memory_order_relaxed) : 0,
        on ? atomic_exchange_explicit(&child.p0_spans, 0, memory_order_relaxed) : 0);
    rc = dd_agent_send(ctx, payload, len, ntraces, timeout_ms, res);
    if (rc != 0 && res->undelivered)
        rc = DD_SEND_UNDELIVERED;
    *http_status = res->http_status;
    *error = res->error;
    *body = res->body;
    *body_len = res->body_len;
    return rc;
}

/* From the flusher thread: at most one line a minute per child (CONTRACT §8). */
static void on_agent_error(void *ctx, long http_status, const char *error)
{
    apr_uint32_t now = (apr_uint32_t)apr_time_sec(apr_time_now());
    apr_uint32_t last = apr_atomic_read32(&child.last_error_log);
    char status[32];
    (void)ctx;
    apr_snprintf(status, sizeof(status), "HTTP %ld", http_status);
    dd_stats_set_error_text(dd_proxy_stats, error && *error ? error : status);
    if (last && now - last < 60)
        return;
    if (apr_atomic_cas32(&child.last_error_log, now, last) != last)
        return;
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, child.server,
                 DDLOGNO(1002) "cannot deliver traces to the agent: %s; traces dropped "
                               "(logged at most once a minute)",
                 error && *error ? error : status);
}

/* Client-side stats (issue 13.2) on or off, from the flusher thread after /info. */
static void cstats_switch(int agent_takes_them)
{
    int on = child.cs && agent_takes_them;
    if (on != atomic_load(&child.cstats_on))
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, child.server,
                     DDLOGNO(4201) "client-side stats %s: the agent %s them; unsampled traces "
                                   "are %s",
                     on ? "on" : "off", on ? "takes" : "does not take", on ? "dropped" : "sent");
    atomic_store(&child.cstats_on, on);
    atomic_store_explicit(&dd_proxy_stats->cstats_active, (uint64_t)on, memory_order_relaxed);
}

/* ctx: the timeout (ms) of each stats request. */
static int send_stats(void *ctx, const char *body, size_t len)
{
    dd_agent_result_t res;
    return dd_agent_send_stats(child.agent, body, len, *(const long *)ctx, &res);
}

/* The flusher's tick: what request threads handed over is aggregated, and the buckets that
 * are over are sent (all of them at child exit, each request more briefly). */
static void cstats_tick(int final)
{
    long timeout = final ? CSTATS_FINAL_TIMEOUT_MS : SEND_TIMEOUT_MS;
    if (!child.cs)
        return;
    dd_cs_drain(child.cs);
    dd_cs_flush(child.cs, dd_now_ns(), final, send_stats, &timeout);
}

/* Agent discovery (issue 13.1), on the flusher thread: at its start and then every
 * INFO_EVERY_MS. What the agent says it takes bounds the payloads; an agent older than /info
 * (404), garbage or no answer leaves everything as configured. */
#define INFO_EVERY_MS 60000
#define INFO_TIMEOUT_MS 1000

static void agent_discover(void *ctx, dd_flusher_t *f)
{
    static apr_time_t next; /* the flusher thread's alone */
    apr_time_t now = apr_time_now();
    dd_agent_info_t info;
    char error[128];
    (void)ctx;

    if (now < next)
        return;
    next = now + apr_time_from_msec(INFO_EVERY_MS);
    if (dd_agent_info(child.agent, INFO_TIMEOUT_MS, &info, error, sizeof(error)) != 0) {
        dd_stats_add(&dd_proxy_stats->agent_info_errors, 1);
        dd_flusher_set_max_payload(f, 0);
        dd_proxy_rc_agent_info(0);
        cstats_switch(0); /* no word from the agent: every trace goes to it again */
        return;
    }
    cstats_switch(info.stats && info.client_drop_p0s);
    dd_stats_add(&dd_proxy_stats->agent_info_fetched, 1);
    atomic_store_explicit(&dd_proxy_stats->agent_client_drop_p0s, (uint64_t)info.client_drop_p0s,
                          memory_order_relaxed);
    atomic_store_explicit(&dd_proxy_stats->agent_max_request_bytes,
                          (uint64_t)info.max_request_bytes, memory_order_relaxed);
    dd_flusher_set_max_payload(f, (size_t)info.max_request_bytes);
    dd_proxy_rc_agent_info(info.remote_config); /* remote configuration polls only then */
}

static void flusher_tick(void *ctx, dd_flusher_t *f, int final)
{
    if (!final) {
        agent_discover(ctx, f);
        dd_proxy_rc_tick(); /* remote configuration (issue 13.3), mod_dd_proxy_rc.c */
    }
    cstats_tick(final);
    dd_proxy_xray_flusher_tick(ctx, f, final); /* X-Ray segments and sampling (issue 17) */
}

static void agent_interrupt(void *ctx)
{
    dd_agent_interrupt(ctx);
}

/* Every listening socket this process holds (the MPM's listeners, each bucket's copy): the
 * detached exit flush must not keep httpd's ports bound after a stop. */
static void close_listening_sockets(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int fd, on;
    socklen_t len;

    for (fd = 3; !d && fd < 4096; fd++) { /* no /proc: the low descriptors, one by one */
        len = sizeof(on);
        if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on)
            close(fd);
    }
    while (d && (e = readdir(d)) != NULL) {
        fd = atoi(e->d_name);
        len = sizeof(on);
        if (fd > 2 && fd != dirfd(d) &&
            getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == 0 && on)
            close(fd);
    }
    if (d)
        closedir(d);
}

/* In the detached process that sends what the child had left at its exit (issue 14): no
 * listeners, and a client of its own (the child's may be mid-transfer on a shut socket). */
static int detach_flush(void *ctx, dd_sender_t *sender)
{
    char *container;
    (void)ctx;
    close_listening_sockets();
    child.exited_agent = child.agent;
    container = dd_agent_container_id();
    child.agent = dd_agent_create(&child.agent_url, DD_PROXY_VERSION, AP_SERVER_BASEREVISION,
                                  container);
    free(container);
    if (!child.agent)
        return -1;
    sender->send = agent_send;
    sender->ctx = child.agent;
    return 0;
}

/* A pre-cleanup registered after the flusher's, so it runs first (APR runs them last in,
 * first out): no request thread may push or wake the flusher once the flusher's pre-cleanup
 * stops it and closes its pipe. httpd's MPMs join their request threads before they destroy
 * the child's pool (prefork has one thread; worker and event join_workers() first), so the
 * wait below is for a thread some other module left running, and rates, limiter and queue
 * are freed only when none is in log_transaction (issue 16.4). */
static apr_status_t child_closing(void *data)
{
    (void)data;
    atomic_store(&child.closing, true);
    for (int i = 0; i < 100 && atomic_load(&child.inflight) != 0; i++)
        apr_sleep(apr_time_from_msec(1));
    return APR_SUCCESS;
}

static apr_status_t child_cleanup(void *data)
{
    int busy;
    (void)data;
    child_closing(NULL); /* already done, unless the flusher never started */
    if (child.flusher)
        dd_flusher_stop(child.flusher);
    child.flusher = NULL;
    /* A request thread still in log_transaction (an MPM that did not join it, or a frame a
     * signal handler interrupted) may be pushing: leave what it touches to the process exit
     * rather than free it under its feet. */
    busy = atomic_load(&child.inflight) != 0;
    dd_proxy_rc_child_exit(busy);
    if (child.agent)
        dd_agent_destroy(child.agent);
    child.agent = NULL;
    free(child.last_result.body);
    child.last_result.body = NULL;
    if (child.queue && !busy) {
        dd_queue_destroy(child.queue);
        child.queue = NULL;
    }
    if (child.rates && !busy) {
        dd_rates_destroy(child.rates);
        child.rates = NULL;
    }
    if (child.cs && !busy) {
        dd_cs_destroy(child.cs);
        child.cs = NULL;
    }
    return APR_SUCCESS;
}

static void resolve_trace_conf(const dd_srv_conf_t *c, dd_trace_conf_t *tc);

static void child_init(apr_pool_t *p, server_rec *s)
{
    child.server = s;
    dd_runtime_id(child.runtime_id);
    child.pid = (long)getpid();
    for (server_rec *v = s; v; v = v->next) { /* the spans' constant tags, encoded once */
        dd_srv_conf_t *vc = dd_proxy_srv_conf(v);
        dd_trace_conf_t tc;
        resolve_trace_conf(vc, &tc);
        dd_trace_conf_prepare(p, &tc);
        vc->trace_fixed = tc.fixed;
    }
    dd_srv_conf_t *c = dd_proxy_srv_conf(s);
    const char *url_str = c->agent_url ? c->agent_url : dd_proxy_env.agent_url;
    dd_agent_url_t url;
    const char *why;
    char *container;
    dd_flusher_conf_t fc;
    apr_status_t rv;

    dd_agent_global_init();
    child.queue =
        dd_queue_create(c->queue_items != UNSET ? (size_t)c->queue_items : DEFAULT_QUEUE_ITEMS,
                        c->queue_bytes != UNSET ? (size_t)c->queue_bytes : DEFAULT_QUEUE_BYTES);
    child.rates = dd_rates_create();
    if (c->client_stats != UNSET ? c->client_stats : dd_proxy_env.client_stats) {
        dd_cs_conf_t cc = {.ring_items = CSTATS_RING_ITEMS,
                           .max_keys = CSTATS_MAX_KEYS,
                           .service = c->service             ? c->service
                                      : dd_proxy_env.service ? dd_proxy_env.service
                                                             : DEFAULT_SERVICE,
                           .lang = "c",
                           .tracer_version = DD_PROXY_VERSION,
                           .runtime_id = child.runtime_id,
                           .stats = dd_proxy_stats};
        child.cs = dd_cs_create(&cc); /* NULL (out of memory): no client stats, all traces */
    }
    child.limiter =
        dd_limiter_create(p, c->rate_limit >= 0 ? c->rate_limit : dd_proxy_env.rate_limit);
    if (dd_agent_url_parse(p, url_str, &url, &why) != 0)
        dd_agent_url_parse(p, DEFAULT_AGENT_URL, &url, &why);
    child.agent_url = url;
    container = dd_agent_container_id();
    child.agent = dd_agent_create(&url, DD_PROXY_VERSION, AP_SERVER_BASEREVISION, container);
    free(container);
    apr_pool_cleanup_register(p, NULL, child_cleanup, apr_pool_cleanup_null);
    if (!child.queue || !child.rates || !child.agent) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     DDLOGNO(1003) "out of memory setting up tracing; no traces from this process");
        child_cleanup(NULL);
        return;
    }

    dd_proxy_rc_child_init(s, &url, child.runtime_id, DD_PROXY_VERSION);
    memset(&fc, 0, sizeof(fc));
    fc.queue = child.queue;
    fc.sender.send = agent_send;
    fc.sender.ctx = child.agent;
    fc.rates = child.rates;
    fc.stats = dd_proxy_stats;
    fc.interval_ms = c->flush_ms != UNSET ? c->flush_ms : DEFAULT_FLUSH_MS;
    fc.max_payload_bytes = MAX_PAYLOAD_BYTES;
    fc.send_timeout_ms = SEND_TIMEOUT_MS;
    fc.stop_deadline_ms = STOP_DEADLINE_MS;
    fc.backoff_min_ms = BACKOFF_MIN_MS;
    fc.backoff_max_ms = BACKOFF_MAX_MS;
    fc.on_error = on_agent_error;
    fc.tick = flusher_tick; /* agent discovery, X-Ray segments and sampling */
    fc.on_start = agent_discover;
    fc.interrupt = agent_interrupt;
    fc.detach = detach_flush; /* exit without a pause: a graceful restart waits for no agent */
    rv = dd_flusher_start(p, &fc, &child.flusher);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     DDLOGNO(1004) "cannot start the trace flusher thread; no traces from this "
                                   "process");
        child.flusher = NULL;
    }
    apr_pool_pre_cleanup_register(p, NULL, child_closing);
}

/* DDPropagationStyle (else DD_TRACE_PROPAGATION_STYLE) with DDPropagationExtractFirst, and
 * the baggage settings: global, resolved in post_config. */
static dd_styles_t resolved_styles;
static int baggage_style; /* baggage is one of resolved_styles */
static dd_baggage_limits_t baggage_limits;
static const apr_array_header_t *baggage_tag_keys;

static const dd_styles_t *styles(void)
{
    return &resolved_styles;
}

static void resolve_propagation(server_rec *s)
{
    const dd_srv_conf_t *c = dd_proxy_srv_conf(s);
    resolved_styles = c->styles ? *c->styles : dd_proxy_env.styles;
    resolved_styles.extract_first =
        c->extract_first != UNSET ? c->extract_first : dd_proxy_env.extract_first;
    baggage_style = dd_styles_have(&resolved_styles, DD_STYLE_BAGGAGE);
    baggage_limits.max_items =
        (int)(c->baggage_max_items != UNSET ? c->baggage_max_items
                                            : dd_proxy_env.baggage_max_items);
    baggage_limits.max_bytes =
        (size_t)(c->baggage_max_bytes != UNSET ? c->baggage_max_bytes
                                               : dd_proxy_env.baggage_max_bytes);
    baggage_tag_keys = c->baggage_tag_keys ? c->baggage_tag_keys : dd_proxy_env.baggage_tag_keys;
}

static int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    (void)plog;
    (void)ptemp;
    dd_proxy_read_env(pconf, s);
    dd_proxy_resolve_features(pconf, s);
    resolve_propagation(s);
    /* DD_TAGS beneath every server's own DDTags: each request's merged tags then hold both,
     * deduplicated, DDTag winning. */
    for (server_rec *v = s; v && dd_proxy_env.tags; v = v->next) {
        dd_dir_conf_t *d = ap_get_module_config(v->lookup_defaults, &dd_proxy_module);
        d->tags = dd_tagset_merge(pconf, dd_proxy_env.tags, d->tags);
    }
    if (ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_CREATE_PRE_CONFIG)
        dd_proxy_attach_stats(s);
    for (server_rec *v = s; v; v = v->next) {
        dd_srv_conf_t *c = dd_proxy_srv_conf(v);
        double rate = c->sample_rate >= 0 ? c->sample_rate : dd_proxy_env.sample_rate;
        const dd_rules_t *rules = c->rules ? c->rules : dd_proxy_env.rules;
        c->resolved_rules = rate >= 0 ? dd_rules_add_catch_all(pconf, rules, rate) : rules;
    }
    h2_var = APR_RETRIEVE_OPTIONAL_FN(http2_var_lookup);
    ap_add_version_component(pconf, "mod_dd_proxy/" DD_PROXY_VERSION);
    return OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Requests                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* A request's tracing state, kept in the first request's request_config. */
typedef struct {
    dd_trace_t *trace;
    const char *trace_id; /* log correlation strings */
    const char *span_id;
    dd_trace_conf_t tc;
    const dd_srv_conf_t *srv; /* the server's configuration (remote configuration's key) */
    dd_request_info_t req;
    dd_gateway_t gw;
    int has_gw;
    dd_extracted_t inbound;
    int has_inbound;
    int trusted; /* the trace continues the inbound context */
    int trust;   /* DD_TRUST_*: what the trace was built with */
    apr_array_header_t *baggage; /* W3C baggage items read (dd_meta_t), or NULL */
    const char *baggage_out;     /* what is injected, encoded once; NULL until then */
    int inject_pending;          /* fixups left the injection to the handler (static so far) */
    int decided; /* the sampling decision is made (and so fixed for injection) */
    const apr_array_header_t *header_tags; /* DDTraceHeaderTags, for the response's too */
    /* An HTTP/1.1 request asking for a protocol upgrade (Upgrade: h2c), while it runs: */
    request_rec *r;               /* the request */
    apr_table_t *upgrade_headers; /* its headers as they came (before stripping, injection) */
    atomic_int upgraded;          /* its HTTP/2 stream 1 took the trace over */
} dd_req_state_t;

static dd_dir_conf_t *dir_conf(request_rec *r)
{
    return ap_get_module_config(r->per_dir_config, &dd_proxy_module);
}

/* DDTrace where set, else DD_TRACE_ENABLED (and DD_APM_TRACING_ENABLED), else On. */
static int trace_on(const dd_dir_conf_t *d)
{
    return d->trace != UNSET ? d->trace : dd_proxy_env.trace_enabled;
}

static request_rec *first_request(request_rec *r)
{
    while (r->prev)
        r = r->prev;
    return r;
}

static void resolve_trace_conf(const dd_srv_conf_t *c, dd_trace_conf_t *tc)
{
    tc->service = c->service             ? c->service
                  : dd_proxy_env.service ? dd_proxy_env.service
                                         : DEFAULT_SERVICE;
    tc->env = c->env ? c->env : dd_proxy_env.env;
    tc->version = c->version ? c->version : dd_proxy_env.version;
    tc->user_tag = c->user_tag == 1;
    tc->trace_id_128 = 1;
    tc->rules = c->resolved_rules;
    tc->error_statuses = c->error_statuses ? c->error_statuses : dd_proxy_env.error_statuses;
    tc->endpoint = c->endpoint;
    tc->runtime_id = child.runtime_id[0] ? child.runtime_id : NULL;
    tc->pid = child.pid;
    tc->fixed = c->trace_fixed;
}

/* What the tracer features take from the request as it arrived (before the gateway headers
 * are stripped and context is injected): header tags, the query string, the client IP. Each
 * costs nothing when it is not configured. */
static void read_features(request_rec *r, const dd_srv_conf_t *c, dd_req_state_t *st)
{
    int client_ip = c->client_ip != UNSET ? c->client_ip : dd_proxy_env.client_ip;
    apr_array_header_t *tags = NULL;

    st->header_tags = c->header_tags ? c->header_tags : dd_proxy_env.header_tags;
    if (st->header_tags) {
        dd_header_tags_collect(r->pool, st->header_tags, 0, r->headers_in, NULL, &tags,
                               &st->req.truncated);
        st->req.tags = tags;
    }
    if (c->resolved_qs && r->parsed_uri.query) {
        const char *q = dd_qs_obfuscate(c->resolved_qs, r->pool, r->parsed_uri.query,
                                        strlen(r->parsed_uri.query), &st->req.truncated);
        /* a raw query may hold any byte: made valid UTF-8 as the path is */
        st->req.query = dd_str_clean(r->pool, q, strlen(q), DD_CAP_PATH, &st->req.truncated);
    }
    /* Unset: httpd's own client address (mod_remoteip's result where it is set up). Off:
     * none. On: the tracers' resolution from the forwarding headers, unless mod_remoteip (or
     * another module) already replaced the TCP peer's address: the operator told httpd which
     * proxies to trust, which beats the tracers' guess from headers anyone can send. */
    if (client_ip == UNSET) {
        st->req.client_ip = r->useragent_ip;
    } else if (client_ip == 1) {
        const char *peer = r->connection->client_ip;
        st->req.network_client_ip = peer;
        st->req.client_ip =
            strcmp(r->useragent_ip, peer) != 0
                ? r->useragent_ip
                : dd_client_ip_resolve(r->pool, r->headers_in,
                                       c->client_ip_header ? c->client_ip_header
                                                           : dd_proxy_env.client_ip_header,
                                       peer);
    }
}

/* The W3C baggage header's items (style baggage), counted when cut off or malformed. */
static void read_baggage(request_rec *r, const apr_table_t *headers, dd_req_state_t *st)
{
    const char *h = apr_table_get(headers, "baggage");
    dd_baggage_status_t bs;
    if (!h)
        return;
    bs = dd_baggage_extract(r->pool, h, &baggage_limits, &st->baggage);
    if (bs == DD_BAGGAGE_MALFORMED)
        dd_stats_add(&dd_proxy_stats->baggage_malformed, 1);
    else if (bs == DD_BAGGAGE_TRUNCATED)
        dd_stats_add(&dd_proxy_stats->baggage_truncated, 1);
}

/* The baggage header to send on: the items read, as the tracers write them; none when the
 * inbound context is ignored (DDTrustInboundContext Off). */
static const char *baggage_out(request_rec *r, dd_req_state_t *st, int trust)
{
    int cut = 0;
    if (trust == DD_TRUST_IGNORE || !st->baggage)
        return NULL;
    if (!st->baggage_out) {
        st->baggage_out = dd_baggage_encode(r->pool, st->baggage, &baggage_limits, &cut);
        if (cut)
            dd_stats_add(&dd_proxy_stats->baggage_truncated, 1);
        if (!st->baggage_out)
            st->baggage_out = "";
    }
    return *st->baggage_out ? st->baggage_out : NULL;
}

static void log_rejected(request_rec *r, dd_gw_status_t st)
{
    apr_uint32_t now = (apr_uint32_t)apr_time_sec(r->request_time);
    apr_uint32_t last = apr_atomic_read32(&child.last_reject_log);
    dd_stats_add(&dd_proxy_stats->gateway_rejected[st], 1);
    if (!APLOG_R_IS_LEVEL(r, APLOG_DEBUG) || now == last ||
        apr_atomic_cas32(&child.last_reject_log, now, last) != last)
        return;
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r,
                  DDLOGNO(1010) "no gateway span: x-dd-proxy headers rejected (%s); "
                                "logged at most once a second",
                  dd_gateway_status_name(st));
}

static void set_correlation(request_rec *r, const dd_req_state_t *st)
{
    apr_table_setn(r->notes, "dd.trace_id", st->trace_id);
    apr_table_setn(r->notes, "dd.span_id", st->span_id);
    apr_table_setn(r->subprocess_env, "DD_TRACE_ID", st->trace_id);
    apr_table_setn(r->subprocess_env, "DD_SPAN_ID", st->span_id);
}

/* baggage.<key> tags for the DDBaggageTagKeys among the items, on the local root (where the
 * tracers put trace-level tags), when the trace continues an inbound context. */
static void baggage_tags(request_rec *r, const dd_req_state_t *st, dd_span_t *root)
{
    const dd_meta_t *m = st->baggage ? (const dd_meta_t *)st->baggage->elts : NULL;
    for (int i = 0; m && i < st->baggage->nelts; i++)
        if (dd_baggage_tag_key(baggage_tag_keys, m[i].key))
            dd_span_set_meta(root, apr_pstrcat(r->pool, "baggage.", m[i].key, NULL), m[i].value);
}

/* (Re)builds the spans as trust (DD_TRUST_*) says: continuing the inbound context, or a new
 * trace (linked to the inbound one for restart). Sampling waits for decide(): rules may look
 * at tags that only the per-directory configuration adds. */
static void build_trace(request_rec *r, dd_req_state_t *st, int trust)
{
    const dd_context_t *parent = NULL;
    dd_span_t *root;

    st->trust = trust;
    st->trusted = trust == DD_TRUST_CONTINUE && st->has_inbound;
    if (st->trusted)
        parent = &st->inbound.ctx;
    st->trace = dd_trace_start(r->pool, &st->tc, &st->req, st->has_gw ? &st->gw : NULL, parent);
    root = dd_trace_root(st->trace);
    if (st->trusted && st->inbound.propagation_error)
        dd_span_set_meta(root, "_dd.propagation_error", st->inbound.propagation_error);
    if (st->trusted && st->inbound.w3c_parent)
        dd_span_set_meta(root, "_dd.parent_id", st->inbound.w3c_parent);
    if (st->trusted) {
        root->links = st->inbound.links; /* other traces' contexts the request carried */
        baggage_tags(r, st, root);
    } else if (trust == DD_TRUST_RESTART && st->has_inbound) {
        root->links = dd_restart_links(r->pool, &st->inbound);
    }
    st->decided = 0;
    st->trace_id = dd_trace_id_string(r->pool, st->trace);
    st->span_id = dd_span_id_string(r->pool, st->trace);
}

/* The TCP peer, never a forwarded-for header: that is what a gateway cannot fake. */
static int peer_trusted(const dd_srv_conf_t *c, request_rec *r)
{
    apr_ipsubnet_t **nets;
    if (!c->trusted || c->trusted->nelts == 0)
        return 1; /* unset, or "any" */
    nets = (apr_ipsubnet_t **)c->trusted->elts;
    for (int i = 0; i < c->trusted->nelts; i++)
        if (apr_ipsubnet_test(nets[i], r->connection->client_addr))
            return 1;
    return 0;
}

/* The trace's sampling decision, once, with the tags of the directory the request runs in
 * (applied here, once: rules may match them). */
static void decide(dd_req_state_t *st, const dd_dir_conf_t *d)
{
    const dd_proxy_rc_t *rc;
    dd_trace_conf_t tc;

    if (st->decided)
        return;
    /* What remote configuration sets for this server now (its tags win over DDTag's), read
     * here and not kept (mod_dd_proxy_rc.c says why). */
    if ((rc = dd_proxy_rc_for(st->srv)) && rc->tags)
        dd_proxy_rc_apply_tags(st->trace, rc->tags);
    dd_trace_apply_tags(st->trace, d->tags);
    tc = st->tc;
    if (rc && rc->rules)
        tc.rules = rc->rules;
    dd_trace_sample(st->trace, &tc, child.limiter, child.rates, dd_mono_ns());
    st->decided = 1;
}

/* Remote configuration's tracing_enabled false: spans are made (and the context passed on)
 * but not sent, as dd-trace-cpp's report_traces. */
static int rc_tracing_off(const dd_req_state_t *st)
{
    const dd_proxy_rc_t *rc = dd_proxy_rc_for(st->srv);
    return rc && rc->enabled == 0;
}

/* httpd's own "OPTIONS * HTTP/1.0" with User-Agent "<server> (internal dummy connection)",
 * sent to wake a listener when a child stops or at a restart: not a client's request. */
static int is_dummy_connection(request_rec *r)
{
    const char *ua;
    if (r->method_number != M_OPTIONS || strcmp(r->uri, "*") != 0)
        return 0;
    ua = apr_table_get(r->headers_in, "User-Agent");
    return ua && strstr(ua, "(internal dummy connection)") != NULL;
}

static int inferred_on(const dd_srv_conf_t *c)
{
    return c->inferred != UNSET ? c->inferred : dd_proxy_env.inferred;
}

/* DDInferredProxyStripHeaders applies wherever DDInferredProxy is On (CONTRACT §3.2). */
static void strip_gateway_headers(request_rec *r)
{
    const dd_srv_conf_t *c = dd_proxy_srv_conf(r->server);
    if (inferred_on(c) && c->strip != 0)
        dd_gateway_strip(r->headers_in);
}

/* post_read_request's mark on a request it chose not to trace, told apart from a request that
 * never reached post_read_request (httpd rejected it while reading it). */
static char not_traced;

/* httpd stamps a request with the wall clock (r->request_time), which can step. The spans
 * keep it as their start, and durations run on the monotonic clock from the same instant:
 * both clocks are read now and the request's age (at most an hour: a request is not older,
 * so a step in between cannot make it so) is taken off the monotonic reading. */
static int64_t mono_of(int64_t wall_ns)
{
    int64_t mono = dd_mono_ns(), age = dd_now_ns() - wall_ns;
    const int64_t hour = 3600LL * 1000000000LL;
    return mono - (age < 0 ? 0 : age > hour ? hour : age);
}

/* HTTP/1.1 Upgrade: h2c. httpd answers 101 and, inside that request's handler, serves the same
 * request again as stream 1 of an HTTP/2 connection (on a secondary connection whose master is
 * this one). That stream is the request: it takes the trace over (the gateway headers and the
 * inbound context as they came, the start time), and the 101 exchange makes no spans. While
 * the upgrading request runs, its state hangs on its connection. */
static apr_status_t forget_upgrade(void *c)
{
    ap_set_module_config(((conn_rec *)c)->conn_config, &dd_proxy_module, NULL);
    return APR_SUCCESS;
}

static void note_upgrade(request_rec *r, dd_req_state_t *st)
{
    st->r = r;
    st->upgrade_headers = apr_table_copy(r->pool, r->headers_in);
    ap_set_module_config(r->connection->conn_config, &dd_proxy_module, st);
    apr_pool_cleanup_register(r->pool, r->connection, forget_upgrade, apr_pool_cleanup_null);
}

static int copy_header(void *t, const char *k, const char *v)
{
    apr_table_t *to = t;
    apr_table_add(to, k, v); /* copies both into the new table's pool */
    return 1;
}

/* The upgrading request whose trace the request r (HTTP/2 stream 1) takes over, or NULL. */
static dd_req_state_t *upgrade_taken_over(request_rec *r)
{
    conn_rec *m = r->connection->master;
    dd_req_state_t *up;
    const char *id;
    int free = 0;

    if (!m || !h2_var || !(up = ap_get_module_config(m->conn_config, &dd_proxy_module)))
        return NULL;
    if (up->r->status != HTTP_SWITCHING_PROTOCOLS)
        return NULL;
    id = h2_var(r->pool, r->server, r->connection, r, "H2_STREAM_ID");
    if (!id || strcmp(id, "1") != 0 || !atomic_compare_exchange_strong(&up->upgraded, &free, 1))
        return NULL;
    return up;
}

/* Starts the trace of a first request from what httpd read. accepted = httpd accepted the
 * request (post_read_request): only then are the gateway headers read, since a request httpd
 * rejected may have stopped reading its headers half-way. up: the upgrading request whose
 * trace this one takes over, or NULL. */
static dd_req_state_t *start_request(request_rec *r, int accepted, const dd_req_state_t *up)
{
    dd_srv_conf_t *c = dd_proxy_srv_conf(r->server);
    dd_dir_conf_t *d = dir_conf(r);
    dd_req_state_t *st = apr_pcalloc(r->pool, sizeof(*st));
    dd_gw_status_t gst = DD_GW_ABSENT;
    apr_table_t *headers = r->headers_in;
    apr_time_t start = r->request_time;

    if (up) { /* copied out of the upgrading request, which ends after this one */
        headers = apr_table_make(r->pool, apr_table_elts(up->upgrade_headers)->nelts);
        apr_table_do(copy_header, headers, up->upgrade_headers, NULL);
        start = up->r->request_time;
    } else if (!r->connection->master && apr_table_get(r->headers_in, "Upgrade")) {
        note_upgrade(r, st);
    }
    read_features(r, c, st);
    if (accepted && inferred_on(c)) {
        gst = dd_gateway_parse(r->pool, headers, apr_time_as_msec(start), &st->gw);
        if (gst == DD_GW_OK && !peer_trusted(c, r))
            gst = DD_GW_UNTRUSTED_PEER;
        if (gst != DD_GW_OK && gst != DD_GW_ABSENT)
            log_rejected(r, gst);
    }
    strip_gateway_headers(r);
    st->has_gw = gst == DD_GW_OK;
    st->has_inbound = dd_extract(r->pool, headers, styles(), &st->inbound);
    if (baggage_style)
        read_baggage(r, headers, st);

    resolve_trace_conf(c, &st->tc);
    st->srv = c;
    st->req.start_ns = (int64_t)start * 1000;
    st->req.start_mono_ns = mono_of(st->req.start_ns);
    st->req.method = r->method; /* NULL when httpd could not read the request line */
    st->req.scheme = ap_http_scheme(r);
    st->req.host = r->hostname ? r->hostname : r->server->server_hostname;
    st->req.port = ap_get_server_port(r);
    st->req.path = r->parsed_uri.path ? r->parsed_uri.path : r->uri;
    st->req.user_agent = apr_table_get(r->headers_in, "User-Agent");

    /* Per-directory trust is known only in fixups; the server's says what to start with. */
    build_trace(r, st, dd_proxy_trust(d));
    ap_set_module_config(r->request_config, &dd_proxy_module, st);
    set_correlation(r, st);
    return st;
}

/* The first request's tracing state, or NULL when it is not traced. A request httpd rejected
 * before post_read_request (bad Host, bad header, 414, 408 while reading headers ...) gets its
 * trace here, from what httpd knows, when its ErrorDocument runs or when it is logged. */
static dd_req_state_t *request_state(request_rec *first)
{
    void *st = ap_get_module_config(first->request_config, &dd_proxy_module);
    if (st == &not_traced)
        return NULL;
    if (st)
        return st;
    if (!first->the_request || !*first->the_request)
        return NULL; /* a connection that sent no request (httpd logs a 408 for it) */
    if (!trace_on(dir_conf(first)) && !dd_proxy_any_trace_on)
        return NULL;
    return start_request(first, 0, NULL);
}

static int post_read_request(request_rec *r)
{
    if (r->main || r->prev) {
        /* Subrequests and internal redirects belong to the first request; a redirect shares its
         * headers, and the first request may never have come here (an ErrorDocument for a
         * request httpd rejected while reading it). */
        strip_gateway_headers(r);
        return DECLINED;
    }
    if (is_dummy_connection(r) || (!trace_on(dir_conf(r)) && !dd_proxy_any_trace_on)) {
        /* not traced: httpd's noise at restarts, or tracing off everywhere; stripping applies */
        ap_set_module_config(r->request_config, &dd_proxy_module, &not_traced);
        strip_gateway_headers(r);
        return DECLINED;
    }
    start_request(r, 1, upgrade_taken_over(r));
    return DECLINED;
}

/* The tracing state of the request r belongs to (r itself, the request it was redirected
 * from, or the main request of a subrequest), or NULL when it is not traced. Unlike
 * request_state, it never starts one. */
static dd_req_state_t *traced_state(request_rec *r)
{
    void *st = ap_get_module_config(first_request(r->main ? r->main : r)->request_config,
                                    &dd_proxy_module);
    return st == &not_traced ? NULL : st;
}

/* Does a request that this handler serves pass its headers on (mod_proxy, mod_proxy_fcgi,
 * CGI, an application server's module)? Not when it is a static file: httpd's default handler,
 * or a media type as the handler (what ap_invoke_handler makes of a file's type), which the
 * default handler serves unless it is one of the magic types of modules that run code (CGI,
 * PHP, server-side includes, type maps). Those get no injected headers: writing them costs
 * more than all the rest of a static request's tracing (issue 12). */
static int handler_passes_headers(const char *h)
{
    const char *slash;
    if (!h || strcmp(h, "default-handler") == 0)
        return 0;
    slash = strpbrk(h, "/:");
    if (!slash || *slash == ':' || strchr(slash, ':'))
        return 1; /* a module's handler: proxy-server, cgi-script, proxy:fcgi://... */
    if (slash[1] != 'x') /* a media type: only these magic ones run code */
        return 0;
    return strncmp(h, "application/x-httpd-", 20) == 0 ||
           strncmp(h, "text/x-server-parsed-html", 25) == 0 ||
           strcmp(h, "application/x-type-map") == 0;
}

/* Writes the context into r's headers (r: the request that runs, or a subrequest). */
static void inject(request_rec *r, dd_req_state_t *st, const dd_dir_conf_t *d)
{
    dd_inject_t in;
    dd_trace_inject_input(st->trace, st->trusted ? st->inbound.tracestate : NULL, &in);
    in.baggage = baggage_out(r, st, dd_proxy_trust(d));
    if (dd_inject(r->pool, r->headers_in, styles(), &in))
        dd_span_set_meta(dd_trace_root(st->trace), "_dd.propagation_error", "inject_max_size");
}

/* The last word before any handler (REALLY_FIRST), whatever way the request came: whichever
 * hooks ran for it, no handler or backend sees the gateway's headers (CONTRACT §3.2). */
static int strip_before_handlers(request_rec *r)
{
    dd_req_state_t *st;

    strip_gateway_headers(r);
    /* The context for a handler that passes headers on, when fixups left it to now: the
     * request itself (its handler changed after fixups) or a subrequest (SSI include virtual,
     * mod_dir's index) of a request that is a static file itself. */
    st = traced_state(r);
    if (st && st->inject_pending && handler_passes_headers(r->handler)) {
        inject(r, st, dir_conf(r));
        if (!r->main)
            st->inject_pending = 0; /* r's headers are the first request's (and its subrequests') */
    }
    return DECLINED;
}

dd_trace_t *dd_proxy_request_trace(request_rec *r)
{
    dd_req_state_t *st = traced_state(r);
    return st ? st->trace : NULL;
}

static void clear_correlation(request_rec *r)
{
    for (request_rec *q = r; q; q = q->prev) {
        apr_table_unset(q->notes, "dd.trace_id");
        apr_table_unset(q->notes, "dd.span_id");
        apr_table_unset(q->subprocess_env, "DD_TRACE_ID");
        apr_table_unset(q->subprocess_env, "DD_SPAN_ID");
    }
}

/* The per-directory configuration is known now: apply its trust setting, then inject the
 * context so mod_proxy (a handler) forwards our span as the parent. The request that runs may
 * be an internal redirect with its own notes and environment. */
static int fixups(request_rec *r)
{
    request_rec *first = first_request(r);
    dd_req_state_t *st;
    dd_dir_conf_t *d;

    if (r->main || !(st = request_state(first)))
        return DECLINED;
    d = dir_conf(r);
    st->inject_pending = 0;
    if (!trace_on(d)) {
        clear_correlation(r); /* no trace will be sent: leave no ids that point nowhere */
        return DECLINED;
    }
    if (st->has_inbound && st->trust != dd_proxy_trust(d)) {
        build_trace(first, st, dd_proxy_trust(d));
        set_correlation(first, st);
    }
    if (r != first)
        set_correlation(r, st);
    decide(st, d);
    /* Now when the handler is known (SetHandler, ProxyPass ...), so that later fixups (mod_headers'
     * RequestHeader) see the headers; else at the handler, once it is chosen: a later fixup
     * (mod_rewrite's per-directory [P], mod_dir) may still make the request a proxied one. */
    if (handler_passes_headers(r->handler))
        inject(r, st, d);
    else
        st->inject_pending = 1;
    return DECLINED;
}

/* DDTraceHeaderTags for the response headers of the request that ran. */
static void response_header_tags(request_rec *r, dd_req_state_t *st)
{
    apr_array_header_t *tags = NULL;
    int cut = 0;
    dd_header_tags_collect(r->pool, st->header_tags, 1, r->headers_out, r->err_headers_out, &tags,
                           &cut);
    for (int i = 0; tags && i < tags->nelts; i++)
        dd_span_put_meta(st->trace->server, &((const dd_meta_t *)tags->elts)[i]);
    if (cut)
        dd_span_set_metric(st->trace->server, "_dd.proxy.truncated", 1);
}

/* With client-side stats on: the trace's stats records go to the flusher, and a trace whose
 * priority is <= 0 goes no further (returns 1: not encoded, counted for the agent). */
static int cstats_hand_over(dd_req_state_t *st)
{
    dd_cs_span_t spans[2];
    size_t n = dd_cs_from_trace(st->trace, st->tc.env, st->tc.version, spans);
    uint64_t nspans = st->trace->inferred ? 2 : 1;

    if (n)
        dd_cs_push(child.cs, spans, n);
    if (child.flusher && dd_cs_pending(child.cs) > dd_cs_ring_items(child.cs) / 2)
        dd_flusher_wake(child.flusher);
    if (st->trace->priority > 0)
        return 0;
    atomic_fetch_add_explicit(&child.p0_traces, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&child.p0_spans, nspans, memory_order_relaxed);
    dd_stats_add(&dd_proxy_stats->p0_traces_dropped, 1);
    dd_stats_add(&dd_proxy_stats->p0_spans_dropped, nspans);
    return 1;
}

/* log_transaction's part on the queue, between its inflight increment and decrement. */
static void push_chunk(dd_req_state_t *st)
{
    char *chunk;
    size_t len;

    if (child.cs && atomic_load_explicit(&child.cstats_on, memory_order_relaxed) &&
        cstats_hand_over(st))
        return;

    if (dd_trace_encode(st->trace, &chunk, &len) != 0) {
        dd_stats_add(&dd_proxy_stats->chunks_dropped[DD_DROP_ENCODE_ERROR], 1);
        return;
    }
    if (dd_queue_push(child.queue, chunk, len) != DD_QUEUE_OK) {
        free(chunk);
        dd_stats_add(&dd_proxy_stats->chunks_dropped[DD_DROP_QUEUE_FULL], 1);
        if (child.flusher)
            dd_flusher_wake(child.flusher);
        return;
    }
    dd_stats_add(&dd_proxy_stats->chunks_queued, 1);
    if (child.flusher && dd_queue_count(child.queue) > dd_queue_max_items(child.queue) / 2)
        dd_flusher_wake(child.flusher);
}

static int log_transaction(request_rec *r)
{
    request_rec *last = r;
    dd_req_state_t *st;
    dd_dir_conf_t *d;

    if (r->main)
        return DECLINED;
    while (last->next)
        last = last->next;
    d = dir_conf(last);
    if (!trace_on(d) || !(st = request_state(r)))
        return DECLINED;
    if (atomic_load(&st->upgraded)) {
        clear_correlation(r); /* the 101 exchange: its HTTP/2 stream 1 sent the trace */
        return DECLINED;
    }
    if (st->header_tags)
        response_header_tags(last, st);

    decide(st, d); /* a request that ended before fixups (400, 401, 403 ...) */
    if (rc_tracing_off(st)) {
        dd_stats_add(&dd_proxy_stats->rc_traces_not_sent, 1);
        return DECLINED;
    }
    dd_trace_finish(st->trace, dd_mono_ns(), last->status,
                    last->status_line ? last->status_line : ap_get_status_line(last->status),
                    apr_table_get(last->notes, "error-notes"));
    /* Counted here, when the spans are really made (not for DDTrace Off locations). */
    dd_stats_add(&dd_proxy_stats->requests_traced, 1);
    if (st->has_gw)
        dd_stats_add(&dd_proxy_stats->inferred_spans, 1);

    atomic_fetch_add(&child.inflight, 1); /* seq_cst, before the load of closing */
    if (atomic_load(&child.closing) || !child.queue) {
        atomic_fetch_sub(&child.inflight, 1);
        return DECLINED;
    }
    push_chunk(st);
    atomic_fetch_sub(&child.inflight, 1);
    return DECLINED;
}

static void register_hooks(apr_pool_t *p)
{
    /* After mod_remoteip, so r->useragent_ip is the client it found behind trusted proxies
     * (it too runs at APR_HOOK_FIRST; without the order, load order would decide). */
    static const char *const after_remoteip[] = {"mod_remoteip.c", NULL};
    (void)p;
    APR_OPTIONAL_HOOK(ap, status_hook, dd_proxy_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(dd_proxy_status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_read_request(post_read_request, after_remoteip, NULL, APR_HOOK_FIRST);
    ap_hook_fixups(fixups, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_handler(strip_before_handlers, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_log_transaction(log_transaction, NULL, NULL, APR_HOOK_FIRST);
    dd_proxy_xray_register_hooks(p); /* X-Ray (issue 17), mod_dd_proxy_xray.c */
}

AP_DECLARE_MODULE(dd_proxy) = {
    STANDARD20_MODULE_STUFF,  dd_proxy_create_dir_conf, dd_proxy_merge_dir_conf,
    dd_proxy_create_srv_conf, dd_proxy_merge_srv_conf,  dd_proxy_cmds,
    register_hooks,
#if defined(AP_MODULE_FLAG_ALWAYS_MERGE)
    AP_MODULE_FLAG_NONE,
#endif
};
