/* SPDX-License-Identifier: Apache-2.0 */
/* mod_dd_proxy_xray.c - httpd glue for AWS X-Ray (issue 17): httpd records its own segment
 * for each sampled request, with a subsegment per proxied call, and sends it to the X-Ray
 * daemon; it samples as X-Ray does, with rules and reservoirs shared by every child.
 *
 *   post_read_request  the request's facts before anything rewrites them: the inbound
 *                      X-Amzn-Trace-Id, X-Forwarded-For, Host
 *   fixups             (after the module's own, which may rebuild the Datadog trace) the X-Ray
 *                      decision: Sampled=1/0 from upstream, else dd_xray_sample; the ids; the
 *                      response header for Sampled=?; X-Amzn-Trace-Id for what runs next
 *   handler            (first, declining) for a request mod_proxy will serve: a subsegment,
 *                      whose id replaces Parent in the header mod_proxy forwards
 *   proxy request_status  the proxied call's end and status
 *   log_transaction    (before the module's) the decision for a request that never reached
 *                      fixups; (after it) the segment, from the finished Datadog span's times,
 *                      encoded here and put on this child's segment queue
 *   flusher thread     queue -> UDP datagrams; the sampling API when this child holds the
 *                      poller lease (dd_xray_poll)
 *
 * X-Ray and Datadog decide separately: the X-Ray decision goes to the segment and downstream
 * in X-Amzn-Trace-Id; the Datadog trace keeps its own sampling (an inbound Sampled=1/0 becomes
 * a Datadog priority only with the xray propagation style, as before). The segment's id is
 * the Datadog server span's id and, when no Root came in, its trace id is the Datadog trace
 * id, so one request has the same ids in both; annotations and metadata carry the Datadog
 * ids either way, and the Datadog span carries aws.xray.trace_id.
 */
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "ap_mpm.h"
#include "mod_proxy.h"
#include "mod_status.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <apr_atomic.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include "dd_agent.h"
#include "dd_queue.h"
#include "dd_util.h"
#include "dd_xray.h"
#include "dd_xray_daemon.h"
#include "dd_xray_sampler.h"
#include "mod_dd_proxy.h"

APLOG_USE_MODULE(dd_proxy);

#define DD_STRINGIFY2(x) #x
#define DD_STRINGIFY(x) DD_STRINGIFY2(x)
#ifdef DD_PROXY_VERSION_TOKEN
#define XRAY_SDK_VERSION DD_STRINGIFY(DD_PROXY_VERSION_TOKEN)
#else
#define XRAY_SDK_VERSION "0.0.0"
#endif

#define XRAY_QUEUE_ITEMS 2048
#define XRAY_QUEUE_BYTES (8 * 1024 * 1024)
#define XRAY_API_TIMEOUT_MS 1000 /* one call per tick at most: a stop waits for it */
#define XRAY_UDP_RETRY_S 10

/* ---------------------------------------------------------------------------------------- */
/* Configuration                                                                            */
/* ---------------------------------------------------------------------------------------- */

void dd_proxy_xray_srv_init(dd_xray_srv_conf_t *c)
{
    c->on = UNSET;
}

void dd_proxy_xray_srv_merge(dd_xray_srv_conf_t *c, const dd_xray_srv_conf_t *base,
                             const dd_xray_srv_conf_t *add)
{
    c->on = add->on != UNSET ? add->on : base->on;
    c->segment_name = add->segment_name ? add->segment_name : base->segment_name;
    c->daemon = add->daemon ? add->daemon : base->daemon;
}

const char *dd_proxy_xray_set_on(cmd_parms *cmd, void *dir, const char *arg)
{
    dd_xray_srv_conf_t *c = &dd_proxy_srv_conf(cmd->server)->xray;
    (void)dir;
    if (strcasecmp(arg, "on") == 0)
        c->on = 1;
    else if (strcasecmp(arg, "off") == 0)
        c->on = 0;
    else
        return apr_psprintf(cmd->pool, "DDXRay: '%s' is not On or Off", arg);
    return NULL;
}

/* One word (host:port) or the SDKs' two (tcp:host:port udp:host:port), quoted or not. */
const char *dd_proxy_xray_set_daemon(cmd_parms *cmd, void *dir, const char *a1, const char *a2)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY), *why;
    const char *arg = a2 ? apr_pstrcat(cmd->pool, a1, " ", a2, NULL) : a1;
    dd_xray_addr_t a;
    (void)dir;
    if (err)
        return err;
    if (dd_xray_addr_parse(cmd->pool, arg, &a, &why) != 0)
        return apr_psprintf(cmd->pool, "DDXRayDaemonAddress: '%s' is not a daemon address: %s", arg,
                            why);
    dd_proxy_srv_conf(cmd->server)->xray.daemon = arg;
    return NULL;
}

const char *dd_proxy_xray_set_name(cmd_parms *cmd, void *dir, const char *arg)
{
    int changed = 0;
    const char *clean = dd_xray_name_clean(cmd->pool, arg, &changed);
    (void)dir;
    if (!clean || changed)
        return apr_psprintf(cmd->pool,
                            "DDXRaySegmentName: '%s' is not a valid X-Ray segment name (1 to 200 "
                            "letters, numbers, spaces and _ . : / %% & # = + - @)",
                            arg);
    dd_proxy_srv_conf(cmd->server)->xray.segment_name = arg;
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Per process                                                                              */
/* ---------------------------------------------------------------------------------------- */

static struct {
    /* set in post_config (inherited by the children) */
    dd_xray_sampler_t *sampler;
    dd_xray_addr_t addr;
    int any_on;
    const char *origin, *ec2_instance;
    /* per child */
    server_rec *server;
    uint32_t pid;
    dd_queue_t *queue;
    dd_xray_udp_t *udp; /* the flusher thread's */
    int64_t udp_retry_at;
    dd_xray_http_t *http;
    _Atomic(dd_flusher_t *) flusher;
    atomic_bool ready, closing;
    atomic_uint inflight;
    apr_uint32_t last_send_log, last_poll_log;
} xr;

static int xray_on(server_rec *s)
{
    return dd_proxy_srv_conf(s)->xray.on == 1;
}

static const char *env_value(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* The shared sampler: anonymous shared memory made once before the first children fork and
 * kept across graceful restarts, as the counters are. Without it, each process samples on
 * its own (and says so). */
static void attach_sampler(server_rec *s)
{
    apr_shm_t **shm = ap_retained_data_get("mod_dd_proxy_xray_sampler");
    apr_status_t rv;
    if (!shm) {
        shm = ap_retained_data_create("mod_dd_proxy_xray_sampler", sizeof(*shm));
        rv = apr_shm_create(shm, dd_xray_sampler_size(), NULL, s->process->pool);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                         DDLOGNO(3003) "cannot create shared memory for X-Ray sampling; each "
                                       "process will sample on its own");
            *shm = NULL;
        } else {
            dd_xray_sampler_init(apr_shm_baseaddr_get(*shm), dd_xray_sampler_size());
        }
    }
    if (*shm) {
        xr.sampler = dd_xray_sampler_attach(apr_shm_baseaddr_get(*shm), apr_shm_size_get(*shm));
    } else if (!xr.sampler) {
        void *mem = apr_palloc(s->process->pool, dd_xray_sampler_size());
        xr.sampler = dd_xray_sampler_init(mem, dd_xray_sampler_size());
    }
}

static int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    int report = ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_CREATE_PRE_CONFIG;
    const char *env_name = env_value("AWS_XRAY_TRACING_NAME"), *v, *why;
    const char *daemon = dd_proxy_srv_conf(s)->xray.daemon;
    int changed = 0;
    (void)plog;
    (void)ptemp;

    if (env_name) {
        const char *clean = dd_xray_name_clean(pconf, env_name, &changed);
        if (changed && report)
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                         DDLOGNO(3002) "AWS_XRAY_TRACING_NAME='%s' holds characters X-Ray does "
                                       "not allow in a segment name; using '%s'",
                         env_name, clean ? clean : "(the DDService name)");
        env_name = clean;
    }
    xr.any_on = 0;
    for (server_rec *vs = s; vs; vs = vs->next) {
        dd_srv_conf_t *c = dd_proxy_srv_conf(vs);
        const char *svc = c->service             ? c->service
                          : dd_proxy_env.service ? dd_proxy_env.service
                                                 : DEFAULT_SERVICE;
        c->xray.name = c->xray.segment_name ? c->xray.segment_name : env_name;
        if (!c->xray.name)
            c->xray.name = dd_xray_name_clean(pconf, svc, NULL);
        if (!c->xray.name)
            c->xray.name = DEFAULT_SERVICE;
        xr.any_on |= c->xray.on == 1;
    }

    if (!daemon && (v = env_value("AWS_XRAY_DAEMON_ADDRESS"))) {
        if (dd_xray_addr_parse(pconf, v, &xr.addr, &why) == 0) {
            daemon = v;
        } else if (report && xr.any_on) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                         DDLOGNO(3001) "ignoring AWS_XRAY_DAEMON_ADDRESS='%s': %s; the default "
                                       "applies",
                         v, why);
        }
    }
    if (dd_xray_addr_parse(pconf, daemon ? daemon : DD_XRAY_DEFAULT_ADDRESS, &xr.addr, &why) != 0)
        dd_xray_addr_parse(pconf, DD_XRAY_DEFAULT_ADDRESS, &xr.addr, &why);
    xr.origin = dd_xray_origin_detect(pconf, "", &xr.ec2_instance);
    if (report && xr.any_on)
        attach_sampler(s);
    return OK;
}

/* From the flusher thread, at most once a minute per child. */
static void log_limited(apr_uint32_t *last_log, int level, const char *what)
{
    apr_uint32_t now = (apr_uint32_t)apr_time_sec(apr_time_now());
    apr_uint32_t last = apr_atomic_read32(last_log);
    if ((last && now - last < 60) || apr_atomic_cas32(last_log, now, last) != last)
        return;
    if (level == APLOG_WARNING)
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, xr.server,
                     DDLOGNO(3004) "cannot send X-Ray segments to the daemon: %s; segments "
                                   "dropped (logged at most once a minute)",
                     what);
    else
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, xr.server,
                     DDLOGNO(3005) "X-Ray sampling API: %s; sampling goes on with the rules "
                                   "held, or X-Ray's default rule (logged at most once a minute)",
                     what);
}

static void on_poll_error(void *ctx, const char *what)
{
    (void)ctx;
    log_limited(&xr.last_poll_log, APLOG_INFO, what);
}

/* The flusher thread: what the queue holds goes out as datagrams; then, not at the very end,
 * one step of the sampling client. */
void dd_proxy_xray_flusher_tick(void *ctx, dd_flusher_t *f, int final)
{
    char *data;
    size_t len;
    int64_t now = apr_time_sec(apr_time_now());
    (void)ctx;

    if (!atomic_load_explicit(&xr.ready, memory_order_acquire))
        return;
    atomic_store_explicit(&xr.flusher, f, memory_order_release);
    /* at most a queue's worth per tick: requests that keep pushing cannot keep it here */
    for (int n = 0; n < XRAY_QUEUE_ITEMS && dd_queue_pop(xr.queue, &data, &len); n++) {
        int err = 0;
        if (!xr.udp && now >= xr.udp_retry_at) {
            char why[256];
            xr.udp = dd_xray_udp_open(xr.addr.udp_host, xr.addr.udp_port, why, sizeof(why));
            if (!xr.udp) {
                xr.udp_retry_at = now + XRAY_UDP_RETRY_S;
                log_limited(&xr.last_send_log, APLOG_WARNING, why);
            }
        }
        err = xr.udp ? dd_xray_udp_send(xr.udp, data, len) : ENOTCONN;
        if (err == 0) {
            dd_stats_add(&dd_proxy_stats->xray_segments_sent, 1);
            dd_stats_add(&dd_proxy_stats->xray_bytes_sent, len);
        } else {
            dd_stats_add(
                &dd_proxy_stats->xray_segments_dropped[err == EMSGSIZE ? DD_XRAY_DROP_TOO_LARGE
                                                                       : DD_XRAY_DROP_SEND_ERROR],
                1);
            if (xr.udp && err != EAGAIN && err != ENOBUFS) {
                char why[200];
                snprintf(why, sizeof(why), "%s:%u: %s", xr.addr.udp_host, xr.addr.udp_port,
                         strerror(err));
                log_limited(&xr.last_send_log, APLOG_WARNING, why);
            }
        }
        free(data);
    }
    if (!final && xr.http && xr.sampler) {
        dd_xray_poll_conf_t pc = {
            .sampler = xr.sampler,
            .api = {dd_xray_http_post, xr.http},
            .stats = dd_proxy_stats,
            .pid = xr.pid,
            .timeout_ms = XRAY_API_TIMEOUT_MS,
            .on_error = on_poll_error,
        };
        dd_xray_poll(&pc, now);
    }
}

static apr_status_t child_cleanup(void *data)
{
    int busy;
    (void)data;
    atomic_store(&xr.closing, true);
    for (int i = 0; i < 100 && atomic_load(&xr.inflight) != 0; i++)
        apr_sleep(apr_time_from_msec(1));
    busy = atomic_load(&xr.inflight) != 0;
    atomic_store(&xr.ready, false);
    if (xr.sampler)
        dd_xray_sampler_release(xr.sampler, xr.pid);
    dd_xray_http_destroy(xr.http);
    xr.http = NULL;
    dd_xray_udp_close(xr.udp);
    xr.udp = NULL;
    if (xr.queue && !busy) {
        dd_queue_destroy(xr.queue);
        xr.queue = NULL;
    }
    return APR_SUCCESS;
}

/* Runs before the module's own child_init (which starts the flusher), so everything here is
 * ready when the thread first ticks; its cleanup, registered first, runs after the module's
 * (which stops the flusher). */
static void child_init(apr_pool_t *p, server_rec *s)
{
    xr.server = s;
    xr.pid = (uint32_t)getpid();
    if (!xr.any_on)
        return;
    dd_agent_global_init();
    xr.queue = dd_queue_create(XRAY_QUEUE_ITEMS, XRAY_QUEUE_BYTES);
    xr.http = dd_xray_http_create(xr.addr.tcp_host, xr.addr.tcp_port);
    apr_pool_cleanup_register(p, NULL, child_cleanup, apr_pool_cleanup_null);
    if (!xr.queue || !xr.http) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     DDLOGNO(3006) "out of memory setting up X-Ray; no segments from this "
                                   "process");
        child_cleanup(NULL);
        return;
    }
    atomic_store_explicit(&xr.ready, true, memory_order_release);
}

/* ---------------------------------------------------------------------------------------- */
/* Requests                                                                                 */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    dd_xray_subsegment_t s;
    request_rec *r; /* the request that proxied (matches request_status) */
    int open;
} xr_sub_t;

typedef struct {
    /* post_read_request: as the client sent them */
    const char *inbound; /* X-Amzn-Trace-Id */
    const char *host;    /* the Host header */
    const char *client_ip;
    int xff;
    const char *user_agent;
    /* the decision */
    int decided, sampled, ask, off;
    dd_xray_header_t in;
    uint64_t hi, lo, segment_id;
    const char *rule;
    apr_array_header_t *subs; /* xr_sub_t */
    unsigned subs_dropped;
} xr_req_t;

/* The X-Ray module config slot is the module's own: the state hangs in request notes-like
 * userdata of the first request's pool instead, keyed by this address. */
static const char XR_KEY[] = "dd_proxy.xray";

static request_rec *first_of(request_rec *r)
{
    while (r->main)
        r = r->main;
    while (r->prev)
        r = r->prev;
    return r;
}

static xr_req_t *state(request_rec *r)
{
    void *st = NULL;
    request_rec *f = first_of(r);
    apr_pool_userdata_get(&st, XR_KEY, f->pool);
    return st;
}

/* The client's address: mod_remoteip's answer when it found one behind trusted proxies, else
 * the first X-Forwarded-For entry (as the SDKs take it; x_forwarded_for says it may be
 * forged), else the TCP peer. */
static void client_ip(request_rec *r, xr_req_t *st)
{
    const char *xff = apr_table_get(r->headers_in, "X-Forwarded-For");
    if (r->useragent_ip && r->connection->client_ip &&
        strcmp(r->useragent_ip, r->connection->client_ip) != 0) {
        st->client_ip = r->useragent_ip;
        st->xff = 1;
    } else if (xff) {
        const char *end = xff + strcspn(xff, ",");
        while (*xff == ' ' || *xff == '\t')
            xff++;
        while (end > xff && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        st->client_ip =
            end > xff ? apr_pstrmemdup(r->pool, xff, (size_t)(end - xff)) : r->useragent_ip;
        st->xff = end > xff;
    } else {
        st->client_ip = r->useragent_ip;
    }
}

static int post_read_request(request_rec *r)
{
    xr_req_t *st;
    if (r->main || r->prev || !xray_on(r->server) || !dd_proxy_request_trace(r))
        return DECLINED;
    st = apr_pcalloc(r->pool, sizeof(*st));
    st->inbound = apr_table_get(r->headers_in, "X-Amzn-Trace-Id");
    st->host = apr_table_get(r->headers_in, "Host");
    st->user_agent = apr_table_get(r->headers_in, "User-Agent");
    client_ip(r, st);
    apr_pool_userdata_setn(st, XR_KEY, NULL, r->pool);
    return DECLINED;
}

static dd_dir_conf_t *dir_conf(request_rec *r)
{
    return ap_get_module_config(r->per_dir_config, &dd_proxy_module);
}

static const char *request_url(request_rec *r)
{
    const char *scheme = ap_http_scheme(r);
    unsigned port = ap_get_server_port(r);
    const char *host = r->hostname ? r->hostname : r->server->server_hostname;
    const char *path = r->parsed_uri.path ? r->parsed_uri.path : r->uri;
    int default_port = (strcmp(scheme, "https") == 0 && port == 443) ||
                       (strcmp(scheme, "http") == 0 && port == 80) || port == 0;
    if (default_port)
        return apr_pstrcat(r->pool, scheme, "://", host, path, NULL);
    return apr_psprintf(r->pool, "%s://%s:%u%s", scheme, host, port, path);
}

/* Sets X-Amzn-Trace-Id for what runs next (mod_proxy, CGI) with parent as this hop. */
static void set_downstream(request_rec *r, const xr_req_t *st, uint64_t parent)
{
    apr_table_setn(
        r->headers_in, "X-Amzn-Trace-Id",
        dd_xray_header_format(r->pool, st->hi, st->lo, parent, st->sampled, st->in.extra));
}

/* Decides once per request, with the configuration of the request that runs (cur). */
static void decide(request_rec *cur, xr_req_t *st)
{
    dd_trace_t *t = dd_proxy_request_trace(cur);
    dd_dir_conf_t *d = dir_conf(cur);
    dd_srv_conf_t *c = dd_proxy_srv_conf(cur->server);
    request_rec *first = first_of(cur);
    char tid[36];

    st->decided = 1;
    if (!t || d->trace == 0) {
        st->off = 1; /* not traced here: no segment, and the headers are left alone */
        return;
    }
    if (dd_proxy_trust(d) != DD_TRUST_CONTINUE || !st->inbound ||
        !dd_xray_header_parse(cur->pool, st->inbound, &st->in))
        memset(&st->in, 0, sizeof(st->in));
    if (st->in.has_root) {
        st->hi = st->in.root_hi;
        st->lo = st->in.root_lo;
    } else {
        dd_xray_trace_id_for(t->server->trace_id_high, t->server->trace_id,
                             (int64_t)apr_time_sec(first->request_time), &st->hi, &st->lo);
    }
    st->segment_id = t->server->span_id;
    if (st->in.sampled == DD_XRAY_SAMPLED_YES) {
        st->sampled = 1;
    } else if (st->in.sampled == DD_XRAY_SAMPLED_NO) {
        st->sampled = 0;
    } else {
        dd_xray_sample_req_t q = {st->host, first->method,
                                  first->parsed_uri.path ? first->parsed_uri.path : first->uri,
                                  c->xray.name, xr.origin};
        dd_xray_decision_t dec;
        if (xr.sampler) {
            /* the second the request arrived in: its reservoir is the one its segment's
             * start_time falls in */
            dd_xray_sample(xr.sampler, &q, (int64_t)apr_time_sec(first->request_time), &dec);
        } else {
            dec.sampled = 0; /* no sampler (cannot happen with DDXRay On): record nothing */
            dec.rule[0] = '\0';
        }
        st->sampled = dec.sampled;
        st->rule = dec.rule[0] ? apr_pstrdup(first->pool, dec.rule) : NULL;
        st->ask = st->in.sampled == DD_XRAY_SAMPLED_ASK;
    }
    dd_stats_add(st->sampled ? &dd_proxy_stats->xray_sampled : &dd_proxy_stats->xray_not_sampled,
                 1);
    if (st->ask)
        apr_table_setn(cur->err_headers_out, "X-Amzn-Trace-Id",
                       dd_xray_response_header(cur->pool, st->hi, st->lo, st->sampled));
    dd_xray_trace_id_format(st->hi, st->lo, tid);
    dd_span_set_meta(t->server, "aws.xray.trace_id", apr_pstrdup(first->pool, tid));
}

static int fixups(request_rec *r)
{
    xr_req_t *st;
    if (r->main || !(st = state(r)))
        return DECLINED;
    if (!st->decided)
        decide(r, st);
    if (!st->off)
        set_downstream(r, st, st->segment_id);
    return DECLINED;
}

/* The backend's host from mod_proxy's "proxy:scheme://host[:port]/path" (or the balancer's
 * name for balancer://name/...). */
static void backend_of(request_rec *r, const char **name, const char **url)
{
    const char *u = r->filename + 6, *q, *h, *e;
    q = strchr(u, '?');
    *url = q ? apr_pstrmemdup(r->pool, u, (size_t)(q - u)) : u;
    h = strstr(*url, "://");
    h = h ? h + 3 : *url;
    if (*h == '[') {
        e = strchr(h, ']');
        *name = e ? apr_pstrmemdup(r->pool, h + 1, (size_t)(e - h - 1)) : h;
        return;
    }
    e = h + strcspn(h, ":/");
    *name = apr_pstrmemdup(r->pool, h, (size_t)(e - h));
}

/* First of the handlers, declining: a request mod_proxy is about to serve (its own test)
 * gets a subsegment, and the subsegment's id goes downstream as Parent. */
static int handler(request_rec *r)
{
    xr_req_t *st;
    xr_sub_t *sub;
    if (!r->proxyreq || !r->filename || strncmp(r->filename, "proxy:", 6) != 0)
        return DECLINED;
    if (!(st = state(r)) || !st->decided || st->off)
        return DECLINED;
    if (!st->subs)
        st->subs = apr_array_make(first_of(r)->pool, 2, sizeof(xr_sub_t));
    if (st->subs->nelts >= DD_XRAY_MAX_SUBSEGMENTS) {
        st->subs_dropped++;
        return DECLINED; /* downstream keeps this hop's segment as its parent */
    }
    sub = apr_array_push(st->subs);
    memset(sub, 0, sizeof(*sub));
    sub->s.id = dd_random_id(0);
    backend_of(r, &sub->s.name, &sub->s.url);
    sub->s.name = apr_pstrdup(first_of(r)->pool, sub->s.name);
    sub->s.url = apr_pstrdup(first_of(r)->pool, sub->s.url);
    sub->s.method = apr_pstrdup(first_of(r)->pool, r->method);
    sub->s.start_us = apr_time_now();
    sub->s.content_length = -1;
    sub->r = r;
    sub->open = 1;
    set_downstream(r, st, sub->s.id);
    return DECLINED;
}

static void close_sub(xr_sub_t *sub, int status, int failed, request_rec *r)
{
    const char *cl = apr_table_get(r->headers_out, "Content-Length");
    apr_int64_t n;
    char *end;
    sub->s.end_us = apr_time_now();
    sub->s.status = status;
    sub->s.failed = failed;
    if (cl && *cl && (n = apr_strtoi64(cl, &end, 10)) >= 0 && !*end)
        sub->s.content_length = n;
    sub->open = 0;
}

/* mod_proxy's last word on a request it served (RUN_ALL: declining changes nothing). */
static int proxy_request_status(int *status, request_rec *r)
{
    xr_req_t *st = state(r);
    if (!st || !st->subs)
        return DECLINED;
    for (int i = st->subs->nelts - 1; i >= 0; i--) {
        xr_sub_t *sub = &((xr_sub_t *)st->subs->elts)[i];
        if (sub->open && sub->r == r) {
            int ok = *status == OK || *status == DONE;
            close_sub(sub, ok ? r->status : *status, !ok, r);
            break;
        }
    }
    return DECLINED;
}

static request_rec *last_of(request_rec *r)
{
    while (r->next)
        r = r->next;
    return r;
}

/* Before the module's log_transaction (which encodes the Datadog trace): the decision for a
 * request that ended before fixups, so its aws.xray.trace_id tag is in the payload too. */
static int log_decide(request_rec *r)
{
    xr_req_t *st;
    if (r->main || !(st = state(r)))
        return DECLINED;
    if (!st->decided)
        decide(last_of(r), st);
    else if (dir_conf(last_of(r))->trace == 0)
        st->off = 1; /* an internal redirect into a DDTrace Off place: no Datadog trace */
    return DECLINED;
}

static void push(char *data, size_t len)
{
    atomic_fetch_add(&xr.inflight, 1); /* seq_cst, before the load of closing */
    if (atomic_load(&xr.closing) || !xr.queue) {
        atomic_fetch_sub(&xr.inflight, 1);
        free(data);
        return;
    }
    if (dd_queue_push(xr.queue, data, len) != DD_QUEUE_OK) {
        free(data);
        dd_stats_add(&dd_proxy_stats->xray_segments_dropped[DD_XRAY_DROP_QUEUE_FULL], 1);
    } else if (dd_queue_count(xr.queue) > XRAY_QUEUE_ITEMS / 2) {
        dd_flusher_wake(atomic_load_explicit(&xr.flusher, memory_order_acquire));
    }
    atomic_fetch_sub(&xr.inflight, 1);
}

/* After the module's log_transaction: the Datadog spans are finished, so the segment takes
 * their times and ids. */
static int log_segment(request_rec *r)
{
    xr_req_t *st;
    request_rec *last = last_of(r);
    dd_trace_t *t;
    dd_xray_segment_t seg;
    dd_xray_datagrams_t dg;
    dd_xray_subsegment_t *subs = NULL;
    dd_srv_conf_t *c;

    if (r->main || !(st = state(r)) || !st->decided || st->off || !st->sampled)
        return DECLINED;
    if (!(t = dd_proxy_request_trace(r)))
        return DECLINED;
    c = dd_proxy_srv_conf(r->server);
    memset(&seg, 0, sizeof(seg));
    seg.name = c->xray.name;
    seg.id = st->segment_id;
    seg.trace_hi = st->hi;
    seg.trace_lo = st->lo;
    seg.parent_id = st->in.has_root ? st->in.parent : 0;
    seg.start_us = t->server->start / 1000;
    seg.end_us = (t->server->start + t->server->duration) / 1000;
    seg.method = r->method;
    seg.url = request_url(r);
    seg.user_agent = st->user_agent;
    seg.client_ip = st->client_ip;
    seg.x_forwarded_for = st->xff;
    seg.status = last->status;
    seg.content_length = last->bytes_sent;
    seg.origin = xr.origin;
    seg.ec2_instance_id = xr.ec2_instance;
    seg.service_version = c->version ? c->version : dd_proxy_env.version;
    seg.sdk_version = XRAY_SDK_VERSION;
    seg.rule_name = st->rule;
    seg.dd_trace_id = dd_trace_id_string(r->pool, t);
    seg.dd_trace_id_low = t->server->trace_id;
    seg.dd_span_id = t->server->span_id;
    seg.dd_priority = t->priority;
    if (st->subs && st->subs->nelts) {
        subs = apr_palloc(r->pool, sizeof(*subs) * (size_t)st->subs->nelts);
        for (int i = 0; i < st->subs->nelts; i++) {
            xr_sub_t *sub = &((xr_sub_t *)st->subs->elts)[i];
            if (sub->open)
                close_sub(sub, last->status, 0, last);
            subs[i] = sub->s;
        }
        seg.subsegments = subs;
        seg.nsubsegments = (size_t)st->subs->nelts;
    }
    if (st->subs_dropped)
        dd_stats_add(&dd_proxy_stats->xray_segments_dropped[DD_XRAY_DROP_SUBSEGMENT_LIMIT],
                     st->subs_dropped);
    if (dd_xray_segment_encode(r->pool, &seg, DD_XRAY_MAX_DATAGRAM, &dg) != 0) {
        dd_stats_add(&dd_proxy_stats->xray_segments_too_large, 1);
        dd_stats_add(&dd_proxy_stats->xray_segments_dropped[DD_XRAY_DROP_TOO_LARGE], dg.lost);
        dd_xray_datagrams_free(&dg);
        return DECLINED;
    }
    if (dg.split)
        dd_stats_add(&dd_proxy_stats->xray_segments_too_large, 1);
    if (dg.lost)
        dd_stats_add(&dd_proxy_stats->xray_segments_dropped[DD_XRAY_DROP_TOO_LARGE], dg.lost);
    for (size_t i = 0; i < dg.n; i++)
        push(dg.data[i], dg.len[i]); /* the queue (or push) owns each now */
    dg.n = 0;
    return DECLINED;
}

/* ---------------------------------------------------------------------------------------- */
/* Status rows                                                                              */
/* ---------------------------------------------------------------------------------------- */

void dd_proxy_xray_status_rows(request_rec *r, int flags)
{
    struct {
        const char *name;
        atomic_uint_fast64_t *c;
    } rows[] = {
        {"XRaySegmentsSent", &dd_proxy_stats->xray_segments_sent},
        {"XRayBytesSent", &dd_proxy_stats->xray_bytes_sent},
        {"XRaySegmentsTooLarge", &dd_proxy_stats->xray_segments_too_large},
        {"XRaySampled", &dd_proxy_stats->xray_sampled},
        {"XRayNotSampled", &dd_proxy_stats->xray_not_sampled},
        {"XRaySamplingRulesFetched", &dd_proxy_stats->xray_sampling_rules_fetched},
        {"XRaySamplingTargetsFetched", &dd_proxy_stats->xray_sampling_targets_fetched},
        {"XRaySamplingErrors", &dd_proxy_stats->xray_sampling_errors},
        {"XRaySamplingRulesSkipped", &dd_proxy_stats->xray_sampling_rules_skipped},
    };
    const char *fmt = (flags & AP_STATUS_SHORT) ? "DDProxy%s: %" APR_UINT64_T_FMT "\n"
                                                : "<tr><td>%s</td><td>%" APR_UINT64_T_FMT
                                                  "</td></tr>\n";
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        ap_rprintf(r, fmt, rows[i].name, (apr_uint64_t)dd_stats_get(rows[i].c));
    for (int i = 0; i < DD_XRAY_DROP_REASON_COUNT; i++)
        ap_rprintf(r, fmt,
                   apr_pstrcat(r->pool, "XRaySegmentsDropped_",
                               dd_xray_drop_reason_name((dd_xray_drop_reason_t)i), NULL),
                   (apr_uint64_t)dd_stats_get(&dd_proxy_stats->xray_segments_dropped[i]));
}

void dd_proxy_xray_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE + 1);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE - 1);
    /* After mod_remoteip's (FIRST) and the module's own: only reads what the client sent. */
    ap_hook_post_read_request(post_read_request, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_fixups(fixups, NULL, NULL, APR_HOOK_FIRST + 1);
    ap_hook_handler(handler, NULL, NULL, APR_HOOK_REALLY_FIRST);
    APR_OPTIONAL_HOOK(proxy, request_status, proxy_request_status, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_log_transaction(log_decide, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_log_transaction(log_segment, NULL, NULL, APR_HOOK_FIRST + 1);
}
