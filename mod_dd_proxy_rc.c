/* SPDX-License-Identifier: Apache-2.0 */
/* mod_dd_proxy_rc.c - remote configuration (issue 13.3): what the Datadog UI sets for this
 * service and env (APM_TRACING: sampling rate and rules, tags, tracing enabled) applied to the
 * servers it targets, and reverted to httpd's own configuration when it is removed.
 *
 * Each child polls alike, from its flusher thread, once /info announced /v0.7/config: every
 * DDRemoteConfigPollInterval (5 s), at the first flusher tick after it is due. The protocol
 * and its state are lib/dd_rc.c; the request is lib/dd_rc_http.c. When the files held change,
 * a snapshot is built: for each server whose service/env a file targets, its rules (the
 * remote ones in front of its own, the remote rate as the catch-all), tags and enabled flag.
 *
 * Request threads read the snapshot through one atomic pointer (acquire load; a hash lookup
 * keyed by the server's configuration): no lock, no malloc. The pointer is read only inside
 * decide() and at log_transaction's "tracing enabled?" check, and nothing read from it is kept
 * after that (tags are copied into the request's pool), so a reader holds a snapshot for
 * microseconds. A replaced snapshot is therefore freed after a grace period (RC_GRACE_S, a
 * minute: far beyond any such window, even on a box swapping hard) rather than with epochs or
 * reference counts, which would make every request write a shared cache line. Memory stays
 * bounded: at most RC_MAX_RETIRED snapshots wait; past that a change is published at a later
 * tick, once the oldest is freed (only an agent changing its answer every second would see it).
 */
#include "httpd.h"
#include "http_config.h"
#include "http_log.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <apr_hash.h>
#include <apr_strings.h>

#include "dd_rc.h"
#include "dd_rc_http.h"
#include "dd_stats.h"
#include "dd_util.h"
#include "mod_dd_proxy.h"
#include "mod_dd_proxy_rc.h"

APLOG_USE_MODULE(dd_proxy);

#define RC_TIMEOUT_MS 1000 /* the agent is local: a poll never holds the flusher longer */
#define RC_GRACE_S 60
#define RC_MAX_RETIRED 64
#define RC_LOG_EVERY_S 60
#define NS_PER_S 1000000000LL

typedef struct snapshot {
    apr_pool_t *pool;      /* unmanaged: everything below */
    apr_hash_t *by_server; /* const dd_srv_conf_t * -> dd_proxy_rc_t */
    int64_t retired_at;    /* dd_mono_ns */
    struct snapshot *next; /* on the retired list */
} snapshot_t;

/* The flusher thread's, except current (any thread reads it). */
static struct {
    int on;
    server_rec *s;
    dd_rc_client_t *client;
    dd_rc_http_t *http;
    long interval_ms;
    int64_t next_poll; /* dd_mono_ns: a wall-clock step must not stop the polls */
    int announced;
    int pending; /* the files changed and no snapshot says so yet */
    snapshot_t *retired, *retired_last;
    int nretired;
    int64_t last_log;
    _Atomic(snapshot_t *) current;
} rc;

static const char *service_of(const dd_srv_conf_t *c)
{
    return c->service ? c->service : dd_proxy_env.service ? dd_proxy_env.service : DEFAULT_SERVICE;
}

static const char *env_of(const dd_srv_conf_t *c)
{
    return c->env ? c->env : dd_proxy_env.env;
}

void dd_proxy_rc_child_init(server_rec *s, const dd_agent_url_t *url, const char *runtime_id,
                            const char *tracer_version)
{
    const dd_srv_conf_t *c = dd_proxy_srv_conf(s);
    dd_rc_identity_t id;
    char client_id[37];

    memset(&rc, 0, sizeof(rc));
    atomic_init(&rc.current, NULL);
    rc.s = s;
    if (!(c->remote_config != UNSET ? c->remote_config : dd_proxy_env.remote_config))
        return;
    rc.interval_ms = (long)(c->rc_poll_ms != UNSET ? c->rc_poll_ms : dd_proxy_env.rc_poll_ms);
    dd_runtime_id(client_id);
    id.client_id = client_id;
    id.runtime_id = runtime_id;
    id.language = "c"; /* as Datadog-Meta-Lang and the spans' language tag say */
    id.tracer_version = tracer_version;
    id.service = service_of(c);
    id.env = env_of(c);
    id.app_version = c->version ? c->version : dd_proxy_env.version;
    rc.client = dd_rc_client_create(&id);
    rc.http = dd_rc_http_create(url);
    if (!rc.client || !rc.http) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, s,
                     DDLOGNO(4102) "out of memory setting up remote configuration; this "
                                   "process applies none");
        dd_proxy_rc_child_exit(0);
        return;
    }
    rc.on = 1;
}

void dd_proxy_rc_agent_info(int announced)
{
    rc.announced = announced;
}

/* At most one line a minute per child: a broken agent must not fill the error log. */
static void log_problem(int level, const char *what, const char *why)
{
    int64_t now = dd_mono_ns();
    if (rc.last_log && now - rc.last_log < RC_LOG_EVERY_S * NS_PER_S)
        return;
    rc.last_log = now;
    ap_log_error(APLOG_MARK, level, 0, rc.s,
                 DDLOGNO(4103) "remote configuration: %s: %s; the configuration in force stays "
                               "(logged at most once a minute)",
                 what, why);
}

static void free_retired(int64_t now, int all)
{
    while (rc.retired && (all || now - rc.retired->retired_at > RC_GRACE_S * NS_PER_S)) {
        snapshot_t *s = rc.retired;
        rc.retired = s->next;
        rc.nretired--;
        apr_pool_destroy(s->pool);
    }
    if (!rc.retired)
        rc.retired_last = NULL;
}

static void set_gauge(atomic_uint_fast64_t *g, int on)
{
    atomic_store_explicit(g, (uint_fast64_t)(on != 0), memory_order_relaxed);
}

/* A snapshot of what applies to each server now, or NULL when nothing does (*failed: out of
 * memory). */
static snapshot_t *build(int *failed)
{
    apr_pool_t *p;
    snapshot_t *sn;
    int any = 0, rate = 0, rules = 0, tags = 0, off = 0;

    *failed = apr_pool_create_unmanaged_ex(&p, NULL, NULL) != APR_SUCCESS;
    if (*failed)
        return NULL;
    sn = apr_pcalloc(p, sizeof(*sn));
    sn->pool = p;
    sn->by_server = apr_hash_make(p);
    for (server_rec *v = rc.s; v; v = v->next) {
        const dd_srv_conf_t *c = dd_proxy_srv_conf(v), **key;
        const dd_rc_file_t *f = dd_rc_select(rc.client, service_of(c), env_of(c));
        dd_rc_apm_t a;
        dd_proxy_rc_t *o;
        const char *why;

        if (!f || apr_hash_get(sn->by_server, &c, sizeof(c)) ||
            dd_rc_parse_apm(p, f->content, f->len, &a, &why) != 0)
            continue;
        o = apr_pcalloc(p, sizeof(*o));
        o->enabled = a.enabled;
        o->tags = a.tags;
        if (a.rules || a.has_rate)
            o->rules = dd_rules_override(p, a.rules, c->resolved_rules, a.has_rate, a.rate);
        if (!o->rules && !o->tags && o->enabled < 0)
            continue; /* an empty lib_config: httpd's own configuration */
        key = apr_palloc(p, sizeof(*key));
        *key = c;
        apr_hash_set(sn->by_server, key, sizeof(*key), o);
        any = 1;
        rate |= a.has_rate;
        rules |= a.rules != NULL;
        tags |= a.tags != NULL;
        off |= a.enabled == 0;
    }
    set_gauge(&dd_proxy_stats->rc_active_sample_rate, rate);
    set_gauge(&dd_proxy_stats->rc_active_sampling_rules, rules);
    set_gauge(&dd_proxy_stats->rc_active_tags, tags);
    set_gauge(&dd_proxy_stats->rc_active_tracing_disabled, off);
    if (!any) {
        apr_pool_destroy(p);
        return NULL;
    }
    return sn;
}

static void publish(int64_t now)
{
    snapshot_t *old = atomic_load_explicit(&rc.current, memory_order_relaxed), *neu;
    int failed;

    if (old && rc.nretired >= RC_MAX_RETIRED)
        return; /* still pending: a later tick publishes it */
    neu = build(&failed);
    if (failed)
        return;
    /* release: the snapshot's contents are written before a reader can see the pointer */
    atomic_store_explicit(&rc.current, neu, memory_order_release);
    rc.pending = 0;
    if (!old)
        return;
    old->retired_at = now;
    old->next = NULL;
    if (rc.retired_last)
        rc.retired_last->next = old;
    else
        rc.retired = old;
    rc.retired_last = old;
    rc.nretired++;
}

static void poll_agent(int64_t now)
{
    char *req = dd_rc_request(rc.client), *body = NULL, error[160];
    size_t len = 0;
    long status;
    dd_rc_result_t res;
    dd_rc_status_t st;

    if (!req)
        return;
    dd_stats_add(&dd_proxy_stats->rc_polls, 1);
    if (dd_rc_http_post(rc.http, req, strlen(req), RC_TIMEOUT_MS, DD_RC_MAX_BODY, &status, &body,
                        &len, error, sizeof(error)) != 0) {
        free(req);
        dd_stats_add(&dd_proxy_stats->rc_poll_errors, 1);
        /* info: when the agent is down, trace delivery already warns */
        log_problem(APLOG_INFO, "cannot poll the agent's /v0.7/config", error);
        return;
    }
    free(req);
    st = dd_rc_process(rc.client, body, len, &res);
    free(body);
    dd_stats_add(&dd_proxy_stats->rc_configs_applied, (uint64_t)res.applied);
    dd_stats_add(&dd_proxy_stats->rc_apply_errors, (uint64_t)res.apply_errors);
    if (st == DD_RC_MALFORMED) {
        dd_stats_add(&dd_proxy_stats->rc_malformed, 1);
        log_problem(APLOG_WARNING, "the agent's answer is malformed", res.error);
    } else if (res.apply_errors) {
        for (int i = 0; i < dd_rc_nfiles(rc.client); i++) {
            const dd_rc_file_t *f = dd_rc_file(rc.client, i);
            char what[300];
            if (!f->apply_error)
                continue;
            apr_snprintf(what, sizeof(what), "%s not applied", f->path);
            log_problem(APLOG_WARNING, what, f->apply_error);
        }
    }
    if (st == DD_RC_CHANGED)
        rc.pending = 1;
    if (rc.pending)
        publish(now);
}

void dd_proxy_rc_tick(void)
{
    int64_t now = dd_mono_ns();

    if (!rc.on)
        return;
    free_retired(now, 0);
    if (rc.pending)
        publish(now);
    if (!rc.announced || now < rc.next_poll)
        return;
    rc.next_poll = now + (int64_t)rc.interval_ms * 1000000;
    poll_agent(now);
}

void dd_proxy_rc_child_exit(int busy)
{
    snapshot_t *cur = atomic_exchange(&rc.current, NULL);
    rc.on = 0;
    dd_rc_http_destroy(rc.http);
    rc.http = NULL;
    dd_rc_client_destroy(rc.client);
    rc.client = NULL;
    if (busy)
        return; /* a request thread may still read a snapshot: left to the process exit */
    if (cur)
        apr_pool_destroy(cur->pool);
    free_retired(0, 1);
}

const dd_proxy_rc_t *dd_proxy_rc_for(const dd_srv_conf_t *c)
{
    snapshot_t *sn = atomic_load_explicit(&rc.current, memory_order_acquire);
    return sn ? apr_hash_get(sn->by_server, &c, sizeof(c)) : NULL;
}

static void apply_copied(dd_span_t *s, const dd_tagset_t *tags, apr_pool_t *p)
{
    int n0 = s->meta->nelts;
    dd_span_apply_tagset(s, tags);
    for (int i = n0; i < s->meta->nelts; i++) { /* the snapshot may go: nothing points into it */
        dd_meta_t *m = &((dd_meta_t *)s->meta->elts)[i];
        m->key = apr_pstrdup(p, m->key);
        m->value = apr_pstrdup(p, m->value);
    }
}

void dd_proxy_rc_apply_tags(dd_trace_t *t, const dd_tagset_t *tags)
{
    apply_copied(t->server, tags, t->pool);
    if (t->inferred)
        apply_copied(t->inferred, tags, t->pool);
}
