/* mod_dd_proxy.c - httpd glue: directives, hooks, and calls into lib/.
 *
 * Data flows one way (CONTRACT §1):
 *   post_read_request  gateway headers -> dd_gateway_t; spans started (dd_trace_start);
 *                      ids in the request notes and subprocess environment
 *   fixups             the ids again for the request that will run (internal redirects)
 *   log_transaction    spans finished and encoded; the chunk goes on the lock-free queue
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

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <apr_strings.h>
#include <apr_atomic.h>
#include <apr_lib.h>
#include <apr_shm.h>

#include "dd_agent.h"
#include "dd_flusher.h"
#include "dd_gateway.h"
#include "dd_propagation.h"
#include "dd_queue.h"
#include "dd_rates.h"
#include "dd_sampler.h"
#include "dd_stats.h"
#include "dd_trace.h"
#include "dd_util.h"

/* The build passes the version as a bare token (quotes do not survive apxs and libtool). */
#define DD_STRINGIFY2(x) #x
#define DD_STRINGIFY(x) DD_STRINGIFY2(x)
#ifdef DD_PROXY_VERSION_TOKEN
#define DD_PROXY_VERSION DD_STRINGIFY(DD_PROXY_VERSION_TOKEN)
#else
#define DD_PROXY_VERSION "0.0.0"
#endif

/* Stable log ids, in the spirit of httpd's APLOGNO. */
#define DDLOGNO(n) "DDP" #n ": "

#define UNSET (-1)
#define DEFAULT_AGENT_URL "http://localhost:8126"
#define DEFAULT_SERVICE "httpd"
#define DEFAULT_FLUSH_MS 1000
#define DEFAULT_QUEUE_ITEMS 4096
#define DEFAULT_QUEUE_BYTES (16 * 1024 * 1024)
#define MAX_PAYLOAD_BYTES (4 * 1024 * 1024)
#define SEND_TIMEOUT_MS 2000
#define STOP_DEADLINE_MS 2000
#define DEFAULT_RATE_LIMIT 100.0

module AP_MODULE_DECLARE_DATA dd_proxy_module;

/* ---------------------------------------------------------------------------------------- */
/* Configuration                                                                            */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    int inferred;                /* DDInferredProxy, UNSET -> env -> Off */
    int strip;                   /* DDInferredProxyStripHeaders, UNSET -> On */
    int user_tag;                /* DDInferredProxyUserTag, UNSET -> Off */
    const char *service;         /* DDService, NULL -> env -> "httpd" */
    const char *env;             /* DDEnv */
    const char *version;         /* DDVersion */
    apr_array_header_t *trusted; /* DDInferredProxyTrustedNetworks: apr_ipsubnet_t *, NULL = any */
    double sample_rate;          /* DDSampleRate, < 0 = unset */
    dd_rules_t *rules;           /* DDSamplingRules, NULL = unset */
    const dd_rules_t *resolved_rules; /* rules, then the catch-all; env applied (post_config) */
    /* Global only (main server): */
    dd_styles_t *styles;     /* DDPropagationStyle */
    double rate_limit;       /* DDRateLimit, < 0 = unset */
    const char *agent_url;   /* DDAgentURL */
    int flush_ms;            /* DDFlushInterval */
    apr_int64_t queue_items; /* DDQueueLimit */
    apr_int64_t queue_bytes;
} dd_srv_conf_t;

typedef struct {
    int trace;                /* DDTrace, UNSET -> On */
    int trust;                /* DDTrustInboundContext, UNSET -> On */
    apr_array_header_t *tags; /* DDTag: dd_meta_t, later entries win */
} dd_dir_conf_t;

/* What the environment says, read once in post_config (directives beat it). */
static struct {
    const char *service, *env, *version;
    apr_array_header_t *tags; /* DD_TAGS */
    int inferred;
    const char *agent_url;
    dd_styles_t styles; /* DD_TRACE_PROPAGATION_STYLE, else the default */
    double sample_rate; /* DD_TRACE_SAMPLE_RATE, < 0 = unset */
    dd_rules_t *rules;  /* DD_TRACE_SAMPLING_RULES */
    double rate_limit;  /* DD_TRACE_RATE_LIMIT, else 100 */
} env_conf;

/* Set when any DDTrace On appears, so DDTrace Off at server level can skip all work. */
static int any_trace_on;

static void *create_srv_conf(apr_pool_t *p, server_rec *s)
{
    dd_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));
    (void)s;
    c->inferred = c->strip = c->user_tag = UNSET;
    c->flush_ms = UNSET;
    c->queue_items = c->queue_bytes = UNSET;
    c->sample_rate = c->rate_limit = -1;
    return c;
}

#define MERGE_INT(f) c->f = (add->f != UNSET) ? add->f : base->f
#define MERGE_PTR(f) c->f = add->f ? add->f : base->f

static void *merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
{
    dd_srv_conf_t *base = basev, *add = addv, *c = apr_pcalloc(p, sizeof(*c));
    MERGE_INT(inferred);
    MERGE_INT(strip);
    MERGE_INT(user_tag);
    MERGE_PTR(service);
    MERGE_PTR(env);
    MERGE_PTR(version);
    MERGE_PTR(agent_url);
    MERGE_INT(flush_ms);
    MERGE_INT(queue_items);
    MERGE_INT(queue_bytes);
    c->sample_rate = add->sample_rate >= 0 ? add->sample_rate : base->sample_rate;
    c->rate_limit = add->rate_limit >= 0 ? add->rate_limit : base->rate_limit;
    MERGE_PTR(rules);
    MERGE_PTR(styles);
    MERGE_PTR(trusted);
    return c;
}

static void *create_dir_conf(apr_pool_t *p, char *dir)
{
    dd_dir_conf_t *c = apr_pcalloc(p, sizeof(*c));
    (void)dir;
    c->trace = c->trust = UNSET;
    return c;
}

static void *merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    dd_dir_conf_t *base = basev, *add = addv, *c = apr_pcalloc(p, sizeof(*c));
    MERGE_INT(trace);
    MERGE_INT(trust);
    if (base->tags && add->tags)
        c->tags = apr_array_append(p, base->tags, add->tags);
    else
        c->tags = add->tags ? add->tags : base->tags;
    return c;
}

static const char *parse_on_off(cmd_parms *cmd, const char *arg, int *out)
{
    if (strcasecmp(arg, "on") == 0)
        *out = 1;
    else if (strcasecmp(arg, "off") == 0)
        *out = 0;
    else
        return apr_psprintf(cmd->pool, "%s: '%s' is not On or Off", cmd->cmd->name, arg);
    return NULL;
}

static dd_srv_conf_t *srv_conf(server_rec *s)
{
    return ap_get_module_config(s->module_config, &dd_proxy_module);
}

/* DDInferredProxy, DDInferredProxyStripHeaders, DDInferredProxyUserTag: On|Off per server. */
static const char *set_srv_flag(cmd_parms *cmd, void *dir, const char *arg)
{
    dd_srv_conf_t *c = srv_conf(cmd->server);
    int *field = (int *)((char *)c + (size_t)cmd->info);
    (void)dir;
    return parse_on_off(cmd, arg, field);
}

/* DDService, DDEnv, DDVersion: a non-empty name per server. */
static const char *set_srv_name(cmd_parms *cmd, void *dir, const char *arg)
{
    dd_srv_conf_t *c = srv_conf(cmd->server);
    (void)dir;
    if (!*arg)
        return apr_psprintf(cmd->pool, "%s: the value must not be empty", cmd->cmd->name);
    *(const char **)((char *)c + (size_t)cmd->info) = arg;
    return NULL;
}

static const char *set_agent_url(cmd_parms *cmd, void *dir, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY), *why;
    dd_agent_url_t url;
    (void)dir;
    if (err)
        return err;
    if (dd_agent_url_parse(cmd->pool, arg, &url, &why) != 0)
        return apr_psprintf(cmd->pool, "DDAgentURL: '%s' is not a valid agent URL: %s", arg, why);
    srv_conf(cmd->server)->agent_url = arg;
    return NULL;
}

/* Parses a positive integer with an optional K/M/G suffix (powers of 1024 when allow_units). */
static int parse_positive(const char *arg, int allow_units, apr_int64_t max, apr_int64_t *out)
{
    char *end;
    apr_int64_t v, mult = 1;
    if (!*arg || !(arg[0] >= '0' && arg[0] <= '9'))
        return 0;
    v = apr_strtoi64(arg, &end, 10);
    if (allow_units && *end && !end[1]) {
        switch (*end) {
        case 'k':
        case 'K':
            mult = 1024;
            end++;
            break;
        case 'm':
        case 'M':
            mult = 1024 * 1024;
            end++;
            break;
        case 'g':
        case 'G':
            mult = 1024 * 1024 * 1024;
            end++;
            break;
        }
    }
    if (*end || v <= 0 || v > max / mult)
        return 0;
    *out = v * mult;
    return 1;
}

static const char *set_flush_interval(cmd_parms *cmd, void *dir, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_int64_t v;
    (void)dir;
    if (err)
        return err;
    if (!parse_positive(arg, 0, 3600000, &v))
        return apr_psprintf(
            cmd->pool, "DDFlushInterval: '%s' is not a number of milliseconds in 1..3600000", arg);
    srv_conf(cmd->server)->flush_ms = (int)v;
    return NULL;
}

static const char *set_queue_limit(cmd_parms *cmd, void *dir, const char *items, const char *bytes)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    dd_srv_conf_t *c = srv_conf(cmd->server);
    (void)dir;
    if (err)
        return err;
    if (!parse_positive(items, 0, 1 << 24, &c->queue_items))
        return apr_psprintf(cmd->pool,
                            "DDQueueLimit: '%s' is not a number of traces in 1..16777216", items);
    if (!parse_positive(bytes, 1, (apr_int64_t)1 << 32, &c->queue_bytes))
        return apr_psprintf(
            cmd->pool, "DDQueueLimit: '%s' is not a size in bytes (1..4G, K/M/G allowed)", bytes);
    return NULL;
}

static const char *set_trace(cmd_parms *cmd, void *dirv, const char *arg)
{
    dd_dir_conf_t *d = dirv;
    const char *err = parse_on_off(cmd, arg, &d->trace);
    if (!err && d->trace)
        any_trace_on = 1;
    return err;
}

static const char *set_tag(cmd_parms *cmd, void *dirv, const char *key, const char *value)
{
    dd_dir_conf_t *d = dirv;
    dd_meta_t *m;
    if (!*key)
        return apr_psprintf(cmd->pool, "DDTag: the tag name must not be empty (value '%s')", value);
    if (!d->tags)
        d->tags = apr_array_make(cmd->pool, 4, sizeof(dd_meta_t));
    m = apr_array_push(d->tags);
    m->key = key;
    m->value = value;
    return NULL;
}

static const char *set_trust(cmd_parms *cmd, void *dirv, const char *arg)
{
    return parse_on_off(cmd, arg, &((dd_dir_conf_t *)dirv)->trust);
}

/* A rate in [0, 1] written as a plain decimal number. */
static int parse_rate(const char *arg, double *out)
{
    char *end;
    double v;
    if (!*arg)
        return 0;
    v = strtod(arg, &end);
    if (*end || !(v >= 0.0 && v <= 1.0))
        return 0;
    *out = v;
    return 1;
}

static const char *set_sample_rate(cmd_parms *cmd, void *dir, const char *arg)
{
    (void)dir;
    if (!parse_rate(arg, &srv_conf(cmd->server)->sample_rate))
        return apr_psprintf(cmd->pool, "DDSampleRate: '%s' is not a number in [0, 1]", arg);
    return NULL;
}

/* The rest of the line as one value: a quoted value is read as httpd reads any quoted argument
 * (ap_getword_conf: either quote, backslash escapes), so "[{\"service\": ...}]", '[...]' and bare
 * JSON all work. Sets *err when text follows the closing quote. */
static const char *whole_value(cmd_parms *cmd, const char *arg, const char **err)
{
    const char *rest = arg;
    char *word;
    size_t n = strlen(arg);
    *err = NULL;
    if (arg[0] != '"' && arg[0] != '\'') {
        while (n && apr_isspace(arg[n - 1]))
            n--;
        return apr_pstrmemdup(cmd->pool, arg, n);
    }
    word = ap_getword_conf(cmd->pool, &rest);
    while (*rest && apr_isspace(*rest))
        rest++;
    if (*rest)
        *err = apr_psprintf(cmd->pool, "%s: unexpected text after the quoted value: '%s'",
                            cmd->cmd->name, rest);
    return word;
}

static const char *set_sampling_rules(cmd_parms *cmd, void *dir, const char *arg)
{
    dd_srv_conf_t *c = srv_conf(cmd->server);
    const char *why = NULL, *json = whole_value(cmd, arg, &why);
    (void)dir;
    if (why)
        return why;
    c->rules = dd_rules_parse(cmd->pool, json, &why);
    if (!c->rules)
        return apr_psprintf(cmd->pool, "DDSamplingRules: '%s' is not valid: %s", json, why);
    return NULL;
}

/* A number of traces per second, >= 0. */
static int parse_per_second(const char *arg, double *out)
{
    char *end;
    double v = strtod(arg, &end);
    if (!*arg || *end || !(v >= 0.0 && v <= 1e9))
        return 0;
    *out = v;
    return 1;
}

static const char *set_rate_limit(cmd_parms *cmd, void *dir, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dir;
    if (err)
        return err;
    if (!parse_per_second(arg, &srv_conf(cmd->server)->rate_limit))
        return apr_psprintf(cmd->pool,
                            "DDRateLimit: '%s' is not a number of traces per second (>= 0)", arg);
    return NULL;
}

static const char *set_styles(cmd_parms *cmd, void *dir, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY), *why = NULL;
    dd_styles_t *styles = apr_pcalloc(cmd->pool, sizeof(*styles));
    (void)dir;
    if (err)
        return err;
    if (dd_styles_parse(cmd->pool, arg, styles, &why) != 0)
        return apr_psprintf(cmd->pool, "DDPropagationStyle: '%s': %s", arg, why);
    srv_conf(cmd->server)->styles = styles;
    return NULL;
}

/* DDInferredProxyTrustedNetworks cidr...: IPv4/IPv6 networks (or single addresses) whose TCP
 * peers may make gateway spans; "any" allows everyone (the default). */
static const char *add_trusted(cmd_parms *cmd, void *dir, const char *arg)
{
    dd_srv_conf_t *c = srv_conf(cmd->server);
    char *ip = apr_pstrdup(cmd->pool, arg), *slash = strchr(ip, '/');
    apr_ipsubnet_t *net;
    apr_status_t rv;
    (void)dir;
    if (strcasecmp(arg, "any") == 0) {
        c->trusted = NULL;
        return NULL;
    }
    if (slash)
        *slash++ = '\0';
    rv = apr_ipsubnet_create(&net, ip, slash, cmd->pool);
    if (rv != APR_SUCCESS || (slash && !*slash))
        return apr_psprintf(cmd->pool,
                            "DDInferredProxyTrustedNetworks: '%s' is not an IP address or a "
                            "network in CIDR notation (10.0.0.0/8, 2001:db8::/32) or 'any'",
                            arg);
    if (!c->trusted)
        c->trusted = apr_array_make(cmd->pool, 4, sizeof(apr_ipsubnet_t *));
    *(apr_ipsubnet_t **)apr_array_push(c->trusted) = net;
    return NULL;
}

#define SRV_FIELD(f) (void *)APR_OFFSETOF(dd_srv_conf_t, f)

static const command_rec dd_cmds[] = {
    AP_INIT_TAKE1("DDTrace", set_trace, NULL, RSRC_CONF | ACCESS_CONF,
                  "On|Off: trace requests here (default On)"),
    AP_INIT_TAKE1("DDInferredProxy", set_srv_flag, SRV_FIELD(inferred), RSRC_CONF,
                  "On|Off: make gateway spans from x-dd-proxy headers (default Off)"),
    AP_INIT_TAKE1("DDInferredProxyStripHeaders", set_srv_flag, SRV_FIELD(strip), RSRC_CONF,
                  "On|Off: remove x-dd-proxy headers before handlers see them (default On)"),
    AP_INIT_TAKE1("DDInferredProxyUserTag", set_srv_flag, SRV_FIELD(user_tag), RSRC_CONF,
                  "On|Off: tag the gateway span with the caller (aws_user; default Off)"),
    AP_INIT_TAKE1("DDAgentURL", set_agent_url, NULL, RSRC_CONF,
                  "http://host:port, https://host:port or unix:///path.sock"),
    AP_INIT_TAKE1("DDService", set_srv_name, SRV_FIELD(service), RSRC_CONF,
                  "service name of httpd's spans (default httpd)"),
    AP_INIT_TAKE1("DDEnv", set_srv_name, SRV_FIELD(env), RSRC_CONF, "env tag"),
    AP_INIT_TAKE1("DDVersion", set_srv_name, SRV_FIELD(version), RSRC_CONF, "version tag"),
    AP_INIT_TAKE2("DDTag", set_tag, NULL, RSRC_CONF | ACCESS_CONF,
                  "key value: a tag on every span (repeatable)"),
    AP_INIT_TAKE1("DDFlushInterval", set_flush_interval, NULL, RSRC_CONF,
                  "milliseconds between deliveries to the agent (default 1000)"),
    AP_INIT_TAKE2("DDQueueLimit", set_queue_limit, NULL, RSRC_CONF,
                  "traces bytes: per-process queue bounds (default 4096 16M)"),
    AP_INIT_ITERATE("DDInferredProxyTrustedNetworks", add_trusted, NULL, RSRC_CONF,
                    "networks (CIDR) of the gateways allowed to make gateway spans (default any)"),
    AP_INIT_TAKE1("DDTrustInboundContext", set_trust, NULL, RSRC_CONF | ACCESS_CONF,
                  "On|Off: continue the caller's trace from its headers (default On)"),
    AP_INIT_RAW_ARGS("DDPropagationStyle", set_styles, NULL, RSRC_CONF,
                     "datadog, tracecontext, b3multi, xray or none (default datadog tracecontext)"),
    AP_INIT_TAKE1("DDSampleRate", set_sample_rate, NULL, RSRC_CONF,
                  "0..1: keep this share of traces no rule matched"),
    AP_INIT_RAW_ARGS("DDSamplingRules", set_sampling_rules, NULL, RSRC_CONF,
                     "a JSON list of sampling rules"),
    AP_INIT_TAKE1("DDRateLimit", set_rate_limit, NULL, RSRC_CONF,
                  "traces per second and process that rules may keep (default 100)"),
    {NULL},
};

/* ---------------------------------------------------------------------------------------- */
/* Environment fallbacks                                                                    */
/* ---------------------------------------------------------------------------------------- */

static const char *env_value(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* DD_TAGS: "k1:v1,k2:v2" or "k1:v1 k2:v2"; entries without a key are skipped. */
static apr_array_header_t *parse_dd_tags(apr_pool_t *p, const char *s)
{
    apr_array_header_t *tags = apr_array_make(p, 4, sizeof(dd_meta_t));
    char *copy = apr_pstrdup(p, s), *state = NULL;
    for (char *tok = apr_strtok(copy, ", ", &state); tok; tok = apr_strtok(NULL, ", ", &state)) {
        char *colon = strchr(tok, ':');
        dd_meta_t *m;
        if (!colon || colon == tok)
            continue;
        *colon = '\0';
        m = apr_array_push(tags);
        m->key = tok;
        m->value = colon + 1;
    }
    return tags;
}

/* A bad environment value is reported once at startup (not in the first of httpd's two
 * configuration passes) and ignored: the default applies. */
#define ENV_PROBLEM(id, name, value, why)                                                          \
    do {                                                                                           \
        if (report)                                                                                \
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,                                          \
                         DDLOGNO(id) "ignoring %s='%s': %s; the default applies", name, value,     \
                         why);                                                                     \
    } while (0)

static void read_env(apr_pool_t *p, server_rec *s)
{
    const char *v, *why;
    dd_agent_url_t url;
    int report = ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_CREATE_PRE_CONFIG;

    env_conf.service = env_value("DD_SERVICE");
    env_conf.env = env_value("DD_ENV");
    env_conf.version = env_value("DD_VERSION");
    env_conf.tags = (v = env_value("DD_TAGS")) ? parse_dd_tags(p, v) : NULL;
    v = env_value("DD_TRACE_INFERRED_PROXY_SERVICES_ENABLED");
    env_conf.inferred = v && (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0);
    env_conf.agent_url = dd_agent_url_from_env(p);
    if (dd_agent_url_parse(p, env_conf.agent_url, &url, &why) != 0) {
        ENV_PROBLEM(1001, "the agent URL", env_conf.agent_url, why);
        env_conf.agent_url = DEFAULT_AGENT_URL;
    }
    dd_styles_default(&env_conf.styles);
    if ((v = env_value("DD_TRACE_PROPAGATION_STYLE")) &&
        dd_styles_parse(p, v, &env_conf.styles, &why) != 0) {
        dd_styles_default(&env_conf.styles);
        ENV_PROBLEM(1005, "DD_TRACE_PROPAGATION_STYLE", v, why);
    }
    env_conf.sample_rate = -1;
    if ((v = env_value("DD_TRACE_SAMPLE_RATE")) && !parse_rate(v, &env_conf.sample_rate)) {
        env_conf.sample_rate = -1;
        ENV_PROBLEM(1006, "DD_TRACE_SAMPLE_RATE", v, "not a number in [0, 1]");
    }
    env_conf.rules = NULL;
    if ((v = env_value("DD_TRACE_SAMPLING_RULES")) &&
        !(env_conf.rules = dd_rules_parse(p, v, &why)))
        ENV_PROBLEM(1007, "DD_TRACE_SAMPLING_RULES", v, why);
    env_conf.rate_limit = DEFAULT_RATE_LIMIT;
    if ((v = env_value("DD_TRACE_RATE_LIMIT")) && !parse_per_second(v, &env_conf.rate_limit)) {
        env_conf.rate_limit = DEFAULT_RATE_LIMIT;
        ENV_PROBLEM(1008, "DD_TRACE_RATE_LIMIT", v, "not a number of traces per second");
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Per child process: queue, rates, counters, flusher                                       */
/* ---------------------------------------------------------------------------------------- */

static struct {
    dd_queue_t *queue;
    dd_rates_t *rates;
    dd_limiter_t *limiter;
    dd_agent_t *agent;
    dd_agent_result_t last_result; /* the flusher's last answer from the agent */
    dd_flusher_t *flusher;
    server_rec *server;
    apr_uint32_t last_error_log; /* apr_time_sec of the last agent error logged */
    apr_uint32_t last_reject_log;
} child;

/* The counters live in anonymous shared memory made once, before the first children fork, and
 * kept across graceful restarts (ap_retained_data), so every child adds to the same numbers.
 * Until then (or if shared memory is refused) they count in this process only. */
static dd_stats_t process_stats;
static dd_stats_t *stats = &process_stats;

static void attach_shared_stats(server_rec *s)
{
    apr_shm_t **shm = ap_retained_data_get("mod_dd_proxy_stats");
    apr_status_t rv;
    if (!shm) {
        shm = ap_retained_data_create("mod_dd_proxy_stats", sizeof(*shm));
        rv = apr_shm_create(shm, sizeof(dd_stats_t), NULL, s->process->pool);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                         DDLOGNO(1020) "cannot create shared memory for the counters; each "
                                       "process will count on its own");
            *shm = NULL;
            return;
        }
        memset(apr_shm_baseaddr_get(*shm), 0, sizeof(dd_stats_t));
    }
    if (*shm)
        stats = apr_shm_baseaddr_get(*shm);
}

static int agent_send(void *ctx, const char *payload, size_t len, size_t ntraces, long timeout_ms,
                      long *http_status, const char **error, const char **body, size_t *body_len)
{
    /* Only the flusher thread sends; the answer lives until the next send or child exit. */
    dd_agent_result_t *res = &child.last_result;
    int rc;
    free(res->body);
    memset(res, 0, sizeof(*res));
    rc = dd_agent_send(ctx, payload, len, ntraces, timeout_ms, res);
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
    dd_stats_set_error_text(stats, error && *error ? error : status);
    if (last && now - last < 60)
        return;
    if (apr_atomic_cas32(&child.last_error_log, now, last) != last)
        return;
    ap_log_error(APLOG_MARK, APLOG_WARNING, 0, child.server,
                 DDLOGNO(1002) "cannot deliver traces to the agent: %s; traces dropped "
                               "(logged at most once a minute)",
                 error && *error ? error : status);
}

static apr_status_t child_cleanup(void *data)
{
    (void)data;
    if (child.flusher)
        dd_flusher_stop(child.flusher);
    child.flusher = NULL;
    if (child.agent)
        dd_agent_destroy(child.agent);
    child.agent = NULL;
    free(child.last_result.body);
    child.last_result.body = NULL;
    if (child.queue)
        dd_queue_destroy(child.queue);
    child.queue = NULL;
    if (child.rates)
        dd_rates_destroy(child.rates);
    child.rates = NULL;
    return APR_SUCCESS;
}

static void child_init(apr_pool_t *p, server_rec *s)
{
    child.server = s;
    dd_srv_conf_t *c = srv_conf(s);
    const char *url_str = c->agent_url ? c->agent_url : env_conf.agent_url;
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
    child.limiter = dd_limiter_create(p, c->rate_limit >= 0 ? c->rate_limit : env_conf.rate_limit);
    if (dd_agent_url_parse(p, url_str, &url, &why) != 0)
        dd_agent_url_parse(p, DEFAULT_AGENT_URL, &url, &why);
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

    memset(&fc, 0, sizeof(fc));
    fc.queue = child.queue;
    fc.sender.send = agent_send;
    fc.sender.ctx = child.agent;
    fc.rates = child.rates;
    fc.stats = stats;
    fc.interval_ms = c->flush_ms != UNSET ? c->flush_ms : DEFAULT_FLUSH_MS;
    fc.max_payload_bytes = MAX_PAYLOAD_BYTES;
    fc.send_timeout_ms = SEND_TIMEOUT_MS;
    fc.stop_deadline_ms = STOP_DEADLINE_MS;
    fc.on_error = on_agent_error;
    rv = dd_flusher_start(p, &fc, &child.flusher);
    if (rv != APR_SUCCESS) {
        ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                     DDLOGNO(1004) "cannot start the trace flusher thread; no traces from this "
                                   "process");
        child.flusher = NULL;
    }
}

static int post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s)
{
    (void)plog;
    (void)ptemp;
    read_env(pconf, s);
    if (ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_CREATE_PRE_CONFIG)
        attach_shared_stats(s);
    for (server_rec *v = s; v; v = v->next) {
        dd_srv_conf_t *c = srv_conf(v);
        double rate = c->sample_rate >= 0 ? c->sample_rate : env_conf.sample_rate;
        const dd_rules_t *rules = c->rules ? c->rules : env_conf.rules;
        c->resolved_rules = rate >= 0 ? dd_rules_add_catch_all(pconf, rules, rate) : rules;
    }
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
    dd_request_info_t req;
    dd_gateway_t gw;
    int has_gw;
    dd_extracted_t inbound;
    int has_inbound;
    int trusted; /* the trace continues the inbound context */
} dd_req_state_t;

static dd_dir_conf_t *dir_conf(request_rec *r)
{
    return ap_get_module_config(r->per_dir_config, &dd_proxy_module);
}

static request_rec *first_request(request_rec *r)
{
    while (r->prev)
        r = r->prev;
    return r;
}

static const dd_styles_t *styles(void)
{
    const dd_srv_conf_t *main_conf = child.server ? srv_conf(child.server) : NULL;
    return main_conf && main_conf->styles ? main_conf->styles : &env_conf.styles;
}

static void resolve_trace_conf(const dd_srv_conf_t *c, dd_trace_conf_t *tc)
{
    tc->service = c->service ? c->service : env_conf.service ? env_conf.service : DEFAULT_SERVICE;
    tc->env = c->env ? c->env : env_conf.env;
    tc->version = c->version ? c->version : env_conf.version;
    tc->tags = env_conf.tags;
    tc->user_tag = c->user_tag == 1;
    tc->trace_id_128 = 1;
    tc->rules = c->resolved_rules;
}

static void log_rejected(request_rec *r, dd_gw_status_t st)
{
    apr_uint32_t now = (apr_uint32_t)apr_time_sec(r->request_time);
    apr_uint32_t last = apr_atomic_read32(&child.last_reject_log);
    dd_stats_add(&stats->gateway_rejected[st], 1);
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

/* (Re)builds the spans, continuing the inbound context when trusted, and decides sampling. */
static void build_trace(request_rec *r, dd_req_state_t *st, int trusted)
{
    const dd_context_t *parent = NULL;
    dd_span_t *root;

    st->trusted = trusted && st->has_inbound;
    if (st->trusted)
        parent = &st->inbound.ctx;
    st->trace = dd_trace_start(r->pool, &st->tc, &st->req, st->has_gw ? &st->gw : NULL, parent);
    root = dd_trace_root(st->trace);
    if (st->trusted && st->inbound.propagation_error)
        dd_span_set_meta(root, "_dd.propagation_error", st->inbound.propagation_error);
    if (st->trusted && st->inbound.w3c_parent)
        dd_span_set_meta(root, "_dd.parent_id", st->inbound.w3c_parent);
    dd_trace_sample(st->trace, &st->tc, child.limiter, child.rates, dd_now_ns());
    st->trace_id = dd_trace_id_string(r->pool, st->trace);
    st->span_id = dd_span_id_string(r->pool, st->trace);
}

/* The TCP peer, never a forwarded-for header: that is what a gateway cannot fake. */
static int peer_trusted(const dd_srv_conf_t *c, request_rec *r)
{
    apr_ipsubnet_t **nets;
    if (!c->trusted)
        return 1;
    nets = (apr_ipsubnet_t **)c->trusted->elts;
    for (int i = 0; i < c->trusted->nelts; i++)
        if (apr_ipsubnet_test(nets[i], r->connection->client_addr))
            return 1;
    return 0;
}

static int post_read_request(request_rec *r)
{
    dd_srv_conf_t *c = srv_conf(r->server);
    dd_dir_conf_t *d = dir_conf(r);
    dd_gw_status_t gst = DD_GW_ABSENT;
    dd_req_state_t *st;
    int inferred = c->inferred != UNSET ? c->inferred : env_conf.inferred;

    if (r->main || r->prev)
        return DECLINED; /* subrequests and internal redirects belong to the first request */

    st = apr_pcalloc(r->pool, sizeof(*st));
    if (inferred) {
        gst = dd_gateway_parse(r->pool, r->headers_in, apr_time_as_msec(r->request_time), &st->gw);
        if (gst == DD_GW_OK && !peer_trusted(c, r))
            gst = DD_GW_UNTRUSTED_PEER;
        if (c->strip != 0)
            dd_gateway_strip(r->headers_in);
    }
    if (d->trace == 0 && !any_trace_on)
        return DECLINED; /* tracing is off here and nowhere switched back on */

    if (gst == DD_GW_OK)
        dd_stats_add(&stats->inferred_spans, 1);
    else if (gst != DD_GW_ABSENT)
        log_rejected(r, gst);
    st->has_gw = gst == DD_GW_OK;
    st->has_inbound = dd_extract(r->pool, r->headers_in, styles(), &st->inbound);

    resolve_trace_conf(c, &st->tc);
    st->req.start_ns = (int64_t)r->request_time * 1000;
    st->req.method = r->method;
    st->req.scheme = ap_http_scheme(r);
    st->req.host = r->hostname ? r->hostname : r->server->server_hostname;
    st->req.port = ap_get_server_port(r);
    st->req.path = r->parsed_uri.path ? r->parsed_uri.path : r->uri;
    st->req.user_agent = apr_table_get(r->headers_in, "User-Agent");
    st->req.client_ip = r->useragent_ip;

    /* Per-directory trust is known only in fixups; the server's says what to start with. */
    build_trace(r, st, d->trust != 0);
    ap_set_module_config(r->request_config, &dd_proxy_module, st);
    set_correlation(r, st);
    return DECLINED;
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
    request_rec *first = first_request(r->main ? r->main : r);
    dd_req_state_t *st = ap_get_module_config(first->request_config, &dd_proxy_module);
    dd_dir_conf_t *d;
    dd_inject_t in;

    if (!st || r->main)
        return DECLINED;
    d = dir_conf(r);
    if (d->trace == 0) {
        clear_correlation(r); /* no trace will be sent: leave no ids that point nowhere */
        return DECLINED;
    }
    if (st->has_inbound && st->trusted != (d->trust != 0)) {
        build_trace(first, st, d->trust != 0);
        set_correlation(first, st);
    }
    if (r != first)
        set_correlation(r, st);
    dd_trace_inject_input(st->trace, st->trusted ? st->inbound.tracestate : NULL, &in);
    if (dd_inject(r->pool, r->headers_in, styles(), &in))
        dd_span_set_meta(dd_trace_root(st->trace), "_dd.propagation_error", "inject_max_size");
    return DECLINED;
}

static void apply_tags(dd_trace_t *t, const apr_array_header_t *tags)
{
    const dd_meta_t *m = (const dd_meta_t *)tags->elts;
    for (int i = 0; i < tags->nelts; i++) {
        dd_span_set_meta(t->server, m[i].key, m[i].value);
        if (t->inferred)
            dd_span_set_meta(t->inferred, m[i].key, m[i].value);
    }
}

static int log_transaction(request_rec *r)
{
    dd_req_state_t *st = ap_get_module_config(r->request_config, &dd_proxy_module);
    request_rec *last = r;
    dd_dir_conf_t *d;
    char *chunk;
    size_t len;

    if (!st || r->main)
        return DECLINED;
    while (last->next)
        last = last->next;
    d = dir_conf(last);
    if (d->trace == 0)
        return DECLINED;

    if (d->tags)
        apply_tags(st->trace, d->tags);
    dd_trace_finish(st->trace, dd_now_ns(), last->status,
                    last->status_line ? last->status_line : ap_get_status_line(last->status),
                    apr_table_get(last->notes, "error-notes"));
    dd_stats_add(&stats->requests_traced, 1);

    if (!child.queue)
        return DECLINED;
    if (dd_trace_encode(st->trace, &chunk, &len) != 0) {
        dd_stats_add(&stats->chunks_dropped[DD_DROP_ENCODE_ERROR], 1);
        return DECLINED;
    }
    if (dd_queue_push(child.queue, chunk, len) != DD_QUEUE_OK) {
        free(chunk);
        dd_stats_add(&stats->chunks_dropped[DD_DROP_QUEUE_FULL], 1);
        if (child.flusher)
            dd_flusher_wake(child.flusher);
        return DECLINED;
    }
    dd_stats_add(&stats->chunks_queued, 1);
    if (child.flusher && dd_queue_count(child.queue) > dd_queue_max_items(child.queue) / 2)
        dd_flusher_wake(child.flusher);
    return DECLINED;
}

/* ---------------------------------------------------------------------------------------- */
/* The module's own counters: mod_status and SetHandler dd-proxy-status                      */
/* ---------------------------------------------------------------------------------------- */

static int status_hook(request_rec *r, int flags)
{
    char text[sizeof(stats->last_agent_error)];
    apr_int64_t when = atomic_load_explicit(&stats->last_agent_error_time, memory_order_relaxed);
    struct {
        const char *name;
        atomic_uint_fast64_t *c;
    } rows[] = {
        {"RequestsTraced", &stats->requests_traced},
        {"InferredSpans", &stats->inferred_spans},
        {"ChunksQueued", &stats->chunks_queued},
        {"ChunksSent", &stats->chunks_sent},
        {"PayloadsSent", &stats->payloads_sent},
        {"BytesSent", &stats->bytes_sent},
        {"AgentErrors", &stats->agent_errors},
        {"AgentRatesRejected", &stats->agent_rates_rejected},
    };
    const char *row_fmt = (flags & AP_STATUS_SHORT) ? "DDProxy%s: %" APR_UINT64_T_FMT "\n"
                                                    : "<tr><td>%s</td><td>%" APR_UINT64_T_FMT
                                                      "</td></tr>\n";
    dd_stats_get_error_text(stats, text, sizeof(text));

    if (!(flags & AP_STATUS_SHORT))
        ap_rputs("<hr />\n<h2>mod_dd_proxy</h2>\n<table>\n", r);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        ap_rprintf(r, row_fmt, rows[i].name, (apr_uint64_t)dd_stats_get(rows[i].c));
    for (int i = DD_GW_NO_PROXY; i < DD_GW_STATUS_COUNT; i++)
        ap_rprintf(r, row_fmt,
                   apr_pstrcat(r->pool, "GatewayRejected_",
                               dd_gateway_status_name((dd_gw_status_t)i), NULL),
                   (apr_uint64_t)dd_stats_get(&stats->gateway_rejected[i]));
    for (int i = 0; i < DD_DROP_REASON_COUNT; i++)
        ap_rprintf(
            r, row_fmt,
            apr_pstrcat(r->pool, "ChunksDropped_", dd_drop_reason_name((dd_drop_reason_t)i), NULL),
            (apr_uint64_t)dd_stats_get(&stats->chunks_dropped[i]));
    if (flags & AP_STATUS_SHORT) {
        ap_rprintf(r, "DDProxyLastAgentErrorTime: %" APR_INT64_T_FMT "\n", when);
        return OK;
    }
    ap_rprintf(
        r, "<tr><td>LastAgentError</td><td>%s</td></tr>\n</table>\n",
        when ? ap_escape_html(r->pool, apr_psprintf(r->pool, "%s at %s", text,
                                                    ap_ht_time(r->pool, apr_time_from_sec(when),
                                                               "%Y-%m-%dT%H:%M:%SZ", 1)))
             : "none");
    return OK;
}

static int status_handler(request_rec *r)
{
    char *json;
    if (!r->handler || strcmp(r->handler, "dd-proxy-status") != 0)
        return DECLINED;
    if (r->method_number != M_GET)
        return HTTP_METHOD_NOT_ALLOWED;
    json = dd_stats_to_json(stats);
    if (!json)
        return HTTP_INTERNAL_SERVER_ERROR;
    ap_set_content_type(r, "application/json");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    ap_rputs(json, r);
    ap_rputs("\n", r);
    free(json);
    return OK;
}

static void register_hooks(apr_pool_t *p)
{
    (void)p;
    APR_OPTIONAL_HOOK(ap, status_hook, status_hook, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_handler(status_handler, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_read_request(post_read_request, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_fixups(fixups, NULL, NULL, APR_HOOK_FIRST);
    ap_hook_log_transaction(log_transaction, NULL, NULL, APR_HOOK_FIRST);
}

AP_DECLARE_MODULE(dd_proxy) = {
    STANDARD20_MODULE_STUFF, create_dir_conf, merge_dir_conf, create_srv_conf,
    merge_srv_conf,          dd_cmds,         register_hooks,
#if defined(AP_MODULE_FLAG_ALWAYS_MERGE)
    AP_MODULE_FLAG_NONE,
#endif
};
