/* SPDX-License-Identifier: Apache-2.0 */
/* mod_dd_proxy_config.c - the directives (CONTRACT §2): each value checked when the
 * configuration is read, so `apache2 -t` names the directive and the bad value; merges with an
 * explicit "unset"; and the environment fallbacks Datadog's tracers read. */
#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_main.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <apr_lib.h>
#include <apr_strings.h>

#include "dd_agent.h"
#include "dd_baggage.h"
#include "dd_headers.h"
#include "dd_obfuscate.h"
#include "dd_settings.h"
#include "dd_span.h"
#include "mod_dd_proxy.h"

APLOG_USE_MODULE(dd_proxy);

dd_env_conf_t dd_proxy_env;
int dd_proxy_any_trace_on;

void *dd_proxy_create_srv_conf(apr_pool_t *p, server_rec *s)
{
    dd_srv_conf_t *c = apr_pcalloc(p, sizeof(*c));
    (void)s;
    c->inferred = c->strip = c->user_tag = UNSET;
    c->flush_ms = UNSET;
    c->queue_items = c->queue_bytes = UNSET;
    c->sample_rate = c->rate_limit = -1;
    c->client_ip = c->query_string = UNSET;
    c->resource_renaming = c->resource_renaming_always = UNSET;
    c->extract_first = UNSET;
    c->client_stats = UNSET;
    c->baggage_max_items = c->baggage_max_bytes = UNSET;
    c->remote_config = UNSET;
    c->rc_poll_ms = UNSET;
    dd_proxy_xray_srv_init(&c->xray);
    return c;
}

#define MERGE_INT(f) c->f = (add->f != UNSET) ? add->f : base->f
#define MERGE_PTR(f) c->f = add->f ? add->f : base->f

void *dd_proxy_merge_srv_conf(apr_pool_t *p, void *basev, void *addv)
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
    MERGE_PTR(header_tags);
    MERGE_INT(client_ip);
    MERGE_PTR(client_ip_header);
    MERGE_PTR(error_statuses);
    MERGE_INT(query_string);
    MERGE_PTR(qs_obfuscator);
    MERGE_INT(resource_renaming);
    MERGE_INT(resource_renaming_always);
    MERGE_INT(extract_first);
    MERGE_PTR(baggage_tag_keys);
    MERGE_INT(baggage_max_items);
    MERGE_INT(baggage_max_bytes);
    MERGE_INT(remote_config);
    MERGE_INT(rc_poll_ms);
    dd_proxy_xray_srv_merge(&c->xray, &base->xray, &add->xray);
    return c;
}

void *dd_proxy_create_dir_conf(apr_pool_t *p, char *dir)
{
    dd_dir_conf_t *c = apr_pcalloc(p, sizeof(*c));
    (void)dir;
    c->trace = c->trust = UNSET;
    return c;
}

void *dd_proxy_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    dd_dir_conf_t *base = basev, *add = addv, *c = apr_pcalloc(p, sizeof(*c));
    MERGE_INT(trace);
    MERGE_INT(trust);
    c->tags = dd_tagset_merge(p, base->tags, add->tags); /* linear; shared when one is empty */
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

/* DDInferredProxy, DDInferredProxyStripHeaders, DDInferredProxyUserTag: On|Off per server. */
static const char *set_srv_flag(cmd_parms *cmd, void *dir, const char *arg)
{
    dd_srv_conf_t *c = dd_proxy_srv_conf(cmd->server);
    int *field = (int *)((char *)c + (size_t)cmd->info);
    (void)dir;
    return parse_on_off(cmd, arg, field);
}

/* DDService, DDEnv, DDVersion: a non-empty name per server. */
static const char *set_srv_name(cmd_parms *cmd, void *dir, const char *arg)
{
    dd_srv_conf_t *c = dd_proxy_srv_conf(cmd->server);
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
    dd_proxy_srv_conf(cmd->server)->agent_url = arg;
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
    dd_proxy_srv_conf(cmd->server)->flush_ms = (int)v;
    return NULL;
}

static const char *set_queue_limit(cmd_parms *cmd, void *dir, const char *items, const char *bytes)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    dd_srv_conf_t *c = dd_proxy_srv_conf(cmd->server);
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
        dd_proxy_any_trace_on = 1;
    return err;
}

static const char *set_tag(cmd_parms *cmd, void *dirv, const char *key, const char *value)
{
    dd_dir_conf_t *d = dirv;
    if (!*key)
        return apr_psprintf(cmd->pool, "DDTag: the tag name must not be empty (value '%s')", value);
    if (!d->tags)
        d->tags = dd_tagset_make(cmd->pool);
    /* The section's own set (made just above, never a merged one): a repeated key replaces. */
    dd_tagset_put((dd_tagset_t *)d->tags, key, value);
    return NULL;
}

/* The words of DDTrustInboundContext and DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT; -1 if none. */
static int parse_trust(const char *arg)
{
    if (strcasecmp(arg, "on") == 0 || strcasecmp(arg, "continue") == 0)
        return DD_TRUST_CONTINUE;
    if (strcasecmp(arg, "off") == 0 || strcasecmp(arg, "ignore") == 0)
        return DD_TRUST_IGNORE;
    if (strcasecmp(arg, "restart") == 0)
        return DD_TRUST_RESTART;
    return -1;
}

static const char *set_trust(cmd_parms *cmd, void *dirv, const char *arg)
{
    int v = parse_trust(arg);
    if (v < 0)
        return apr_psprintf(cmd->pool,
                            "DDTrustInboundContext: '%s' is not On (continue), Off (ignore) or "
                            "Restart",
                            arg);
    ((dd_dir_conf_t *)dirv)->trust = v;
    return NULL;
}

/* DDClientStats On|Off (issue 13.2): global. */
static const char *set_client_stats(cmd_parms *cmd, void *dir, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dir;
    return err ? err : parse_on_off(cmd, arg, &dd_proxy_srv_conf(cmd->server)->client_stats);
}

static const char *set_extract_first(cmd_parms *cmd, void *dir, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dir;
    return err ? err : parse_on_off(cmd, arg, &dd_proxy_srv_conf(cmd->server)->extract_first);
}

/* DDRemoteConfig On|Off */
static const char *set_remote_config(cmd_parms *cmd, void *dir, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dir;
    return err ? err : parse_on_off(cmd, arg, &dd_proxy_srv_conf(cmd->server)->remote_config);
}

/* Seconds, fractions allowed ("0.2" for tests), as DD_REMOTE_CONFIG_POLL_INTERVAL_SECONDS. */
static int parse_poll_seconds(const char *arg, apr_int64_t *ms)
{
    char *end;
    double v = strtod(arg, &end);
    if (!*arg || *end || !(v >= DD_RC_MIN_POLL_MS / 1000.0 && v <= 3600.0))
        return 0;
    *ms = (apr_int64_t)(v * 1000.0 + 0.5);
    return 1;
}

static const char *set_rc_poll_interval(cmd_parms *cmd, void *dir, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    (void)dir;
    if (err)
        return err;
    if (!parse_poll_seconds(arg, &dd_proxy_srv_conf(cmd->server)->rc_poll_ms))
        return apr_psprintf(cmd->pool,
                            "DDRemoteConfigPollInterval: '%s' is not a number of seconds in "
                            "0.05..3600",
                            arg);
    return NULL;
}

static const char *set_baggage_tag_keys(cmd_parms *cmd, void *dir, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    apr_array_header_t *keys;
    (void)dir;
    if (err)
        return err;
    keys = dd_baggage_tag_keys_parse(cmd->pool, arg);
    for (int i = 0; i < keys->nelts; i++) {
        const char *k = ((const char **)keys->elts)[i];
        if (strcmp(k, "*") != 0 && strcspn(k, "\"=;") != strlen(k))
            return apr_psprintf(cmd->pool, "DDBaggageTagKeys: '%s' is not a baggage key", k);
    }
    dd_proxy_srv_conf(cmd->server)->baggage_tag_keys = keys;
    return NULL;
}

/* DDBaggageMaxItems n, DDBaggageMaxBytes n: the W3C baggage limits (1..65536). */
static const char *set_baggage_limit(cmd_parms *cmd, void *dir, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    dd_srv_conf_t *c = dd_proxy_srv_conf(cmd->server);
    apr_int64_t *field = (apr_int64_t *)((char *)c + (size_t)cmd->info);
    (void)dir;
    if (err)
        return err;
    if (!parse_positive(arg, 0, 65536, field))
        return apr_psprintf(cmd->pool, "%s: '%s' is not a number in 1..65536", cmd->cmd->name, arg);
    return NULL;
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
    if (!parse_rate(arg, &dd_proxy_srv_conf(cmd->server)->sample_rate))
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
    dd_srv_conf_t *c = dd_proxy_srv_conf(cmd->server);
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
    if (!parse_per_second(arg, &dd_proxy_srv_conf(cmd->server)->rate_limit))
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
    dd_proxy_srv_conf(cmd->server)->styles = styles;
    return NULL;
}

/* "DDInferredProxyTrustedNetworks any": an explicit value (an empty list), so that a virtual
 * host's "any" survives the merge over a main server that lists networks (NULL is "unset"). */
static apr_array_header_t trusted_any;

/* DDInferredProxyTrustedNetworks cidr...: IPv4/IPv6 networks (or single addresses) whose TCP
 * peers may make gateway spans; "any" allows everyone (the default). */
static const char *add_trusted(cmd_parms *cmd, void *dir, const char *arg)
{
    dd_srv_conf_t *c = dd_proxy_srv_conf(cmd->server);
    char *ip = apr_pstrdup(cmd->pool, arg), *slash = strchr(ip, '/');
    apr_ipsubnet_t *net;
    apr_status_t rv;
    (void)dir;
    if (strcasecmp(arg, "any") == 0) {
        if (c->trusted && c->trusted != &trusted_any)
            return "DDInferredProxyTrustedNetworks: 'any' cannot be combined with networks";
        c->trusted = &trusted_any;
        return NULL;
    }
    if (c->trusted == &trusted_any)
        return apr_psprintf(
            cmd->pool, "DDInferredProxyTrustedNetworks: '%s' cannot be combined with 'any'", arg);
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

/* ---------------------------------------------------------------------------------------- */
/* Tracer features: header tags, client IP, error statuses, query strings                   */
/* ---------------------------------------------------------------------------------------- */

/* DDTraceHeaderTags header[:tag] ...: each argument may itself be a comma-separated list, as
 * DD_TRACE_HEADER_TAGS is. Repeated directives add to the list. */
static const char *add_header_tags(cmd_parms *cmd, void *dir, const char *arg)
{
    dd_srv_conf_t *c = dd_proxy_srv_conf(cmd->server);
    const char *bad = NULL, *why = NULL;
    (void)dir;
    if (dd_header_tags_parse(cmd->pool, arg, &c->header_tags, &bad, &why) != 0)
        return apr_psprintf(cmd->pool, "DDTraceHeaderTags: '%s' is not header or header:tag (%s)",
                            bad, why);
    return NULL;
}

/* An HTTP header name (RFC 9110 token). */
static int is_header_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!apr_isalnum(*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return 0;
    return 1;
}

static const char *set_client_ip_header(cmd_parms *cmd, void *dir, const char *arg)
{
    (void)dir;
    if (!is_header_name(arg))
        return apr_psprintf(cmd->pool, "DDTraceClientIPHeader: '%s' is not an HTTP header name",
                            arg);
    dd_proxy_srv_conf(cmd->server)->client_ip_header = arg;
    return NULL;
}

static const char *set_error_statuses(cmd_parms *cmd, void *dir, const char *arg)
{
    dd_status_set_t *set = apr_pcalloc(cmd->pool, sizeof(*set));
    const char *why = NULL;
    (void)dir;
    if (dd_status_set_parse(arg, set, &why) != 0)
        return apr_psprintf(cmd->pool, "DDTraceServerErrorStatuses: '%s' is not valid: %s", arg,
                            why);
    dd_proxy_srv_conf(cmd->server)->error_statuses = set;
    return NULL;
}

/* DDTraceQueryStringObfuscation regex: the rest of the line ("" for none), compiled now. */
static const char *set_qs_obfuscation(cmd_parms *cmd, void *dir, const char *arg)
{
    const char *why = NULL, *re = whole_value(cmd, arg, &why);
    const dd_qs_obfuscator_t *o;
    size_t at = 0;
    (void)dir;
    if (why)
        return why;
    o = dd_qs_obfuscator_create(cmd->pool, re, &why, &at);
    if (!o)
        return apr_psprintf(cmd->pool,
                            "DDTraceQueryStringObfuscation: '%s' is not a valid regular "
                            "expression: %s at offset %" APR_SIZE_T_FMT,
                            re, why, at);
    dd_proxy_srv_conf(cmd->server)->qs_obfuscator = o;
    return NULL;
}

#define SRV_FIELD(f) (void *)APR_OFFSETOF(dd_srv_conf_t, f)

const command_rec dd_proxy_cmds[] = {
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
    AP_INIT_TAKE1("DDRemoteConfig", set_remote_config, NULL, RSRC_CONF,
                  "On|Off: apply the sampling, tags and tracing enabled the agent's remote "
                  "configuration sets for this service (default On)"),
    AP_INIT_TAKE1("DDRemoteConfigPollInterval", set_rc_poll_interval, NULL, RSRC_CONF,
                  "seconds between remote configuration polls (default 5)"),
    AP_INIT_TAKE1("DDFlushInterval", set_flush_interval, NULL, RSRC_CONF,
                  "milliseconds between deliveries to the agent (default 1000)"),
    AP_INIT_TAKE2("DDQueueLimit", set_queue_limit, NULL, RSRC_CONF,
                  "traces bytes: per-process queue bounds (default 4096 16M)"),
    AP_INIT_ITERATE("DDInferredProxyTrustedNetworks", add_trusted, NULL, RSRC_CONF,
                    "networks (CIDR) of the gateways allowed to make gateway spans (default any)"),
    AP_INIT_TAKE1("DDTrustInboundContext", set_trust, NULL, RSRC_CONF | ACCESS_CONF,
                  "On|Off|Restart: continue the caller's trace from its headers, ignore them, or "
                  "start a new trace linked to the caller's (default On)"),
    AP_INIT_RAW_ARGS("DDPropagationStyle", set_styles, NULL, RSRC_CONF,
                     "datadog, tracecontext, b3multi, xray, baggage or none (default datadog "
                     "tracecontext baggage)"),
    AP_INIT_TAKE1("DDClientStats", set_client_stats, NULL, RSRC_CONF,
                  "On|Off: compute APM stats here and send no unsampled traces, where the agent "
                  "accepts it (default Off, as DD_TRACE_STATS_COMPUTATION_ENABLED)"),
    AP_INIT_TAKE1("DDPropagationExtractFirst", set_extract_first, NULL, RSRC_CONF,
                  "On|Off: only the first style's context counts (default Off)"),
    AP_INIT_RAW_ARGS("DDBaggageTagKeys", set_baggage_tag_keys, NULL, RSRC_CONF,
                     "baggage keys copied as baggage.<key> span tags, * for all (default "
                     "user.id session.id account.id)"),
    AP_INIT_TAKE1("DDBaggageMaxItems", set_baggage_limit, SRV_FIELD(baggage_max_items), RSRC_CONF,
                  "baggage items read and sent at most (default 64)"),
    AP_INIT_TAKE1("DDBaggageMaxBytes", set_baggage_limit, SRV_FIELD(baggage_max_bytes), RSRC_CONF,
                  "baggage bytes read and sent at most (default 8192)"),
    AP_INIT_TAKE1("DDSampleRate", set_sample_rate, NULL, RSRC_CONF,
                  "0..1: keep this share of traces no rule matched"),
    AP_INIT_RAW_ARGS("DDSamplingRules", set_sampling_rules, NULL, RSRC_CONF,
                     "a JSON list of sampling rules"),
    AP_INIT_TAKE1("DDRateLimit", set_rate_limit, NULL, RSRC_CONF,
                  "traces per second and process that rules may keep (default 100)"),
    /* Tracer features */
    AP_INIT_ITERATE("DDTraceHeaderTags", add_header_tags, NULL, RSRC_CONF,
                    "header[:tag] ...: request and response headers as span tags"),
    AP_INIT_TAKE1("DDTraceClientIP", set_srv_flag, SRV_FIELD(client_ip), RSRC_CONF,
                  "On|Off: resolve http.client_ip from forwarding headers, and network.client.ip "
                  "(Off: neither; unset: httpd's client address)"),
    AP_INIT_TAKE1("DDTraceClientIPHeader", set_client_ip_header, NULL, RSRC_CONF,
                  "the one header to resolve the client IP from (default: the tracers' list)"),
    AP_INIT_RAW_ARGS("DDTraceServerErrorStatuses", set_error_statuses, NULL, RSRC_CONF,
                     "statuses that make the span an error, e.g. 500-599,429 (default 500-599)"),
    AP_INIT_TAKE1("DDTraceQueryString", set_srv_flag, SRV_FIELD(query_string), RSRC_CONF,
                  "On|Off: the query string (obfuscated) in http.url (default Off)"),
    AP_INIT_RAW_ARGS("DDTraceQueryStringObfuscation", set_qs_obfuscation, NULL, RSRC_CONF,
                     "regular expression whose matches in the query string become <redacted> "
                     "(default: the tracers'; \"\" for none)"),
    AP_INIT_TAKE1("DDTraceResourceRenaming", set_srv_flag, SRV_FIELD(resource_renaming), RSRC_CONF,
                  "On|Off: http.endpoint, the path with its parameters as placeholders, where "
                  "there is no http.route (default Off)"),
    AP_INIT_TAKE1("DDTraceResourceRenamingAlwaysSimplified", set_srv_flag,
                  SRV_FIELD(resource_renaming_always), RSRC_CONF,
                  "On|Off: with DDTraceResourceRenaming On, http.endpoint also next to "
                  "http.route (default Off)"),
    DD_PROXY_XRAY_CMDS,
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

/* A bad environment value is reported once at startup (not in the first of httpd's two
 * configuration passes) and ignored: the default applies. */
#define ENV_PROBLEM(id, name, value, why)                                                          \
    do {                                                                                           \
        if (report)                                                                                \
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,                                          \
                         DDLOGNO(id) "ignoring %s='%s': %s; the default applies", name, value,     \
                         why);                                                                     \
    } while (0)

static void env_bool(server_rec *s, int report, int id, const char *name, int dflt, int *out);

/* The tracer features' environment variables (log ids DDP6000-6099). */
static void read_feature_env(apr_pool_t *p, server_rec *s, int report)
{
    const char *v, *bad = NULL, *why = NULL;
    int apm = 1;
    dd_status_set_t *set;

    /* DD_TRACE_ENABLED=false: no traces (as DDTrace Off where no DDTrace directive says
     * otherwise). DD_APM_TRACING_ENABLED=false is the same here: the tracers keep sending a
     * trace a minute then only so that another product (AppSec) can work without APM, and
     * the module has no other product. */
    env_bool(s, report, 6001, "DD_TRACE_ENABLED", 1, &dd_proxy_env.trace_enabled);
    env_bool(s, report, 6002, "DD_APM_TRACING_ENABLED", 1, &apm);
    dd_proxy_env.trace_enabled = dd_proxy_env.trace_enabled && apm;

    dd_proxy_env.header_tags = NULL;
    if ((v = env_value("DD_TRACE_HEADER_TAGS")) &&
        dd_header_tags_parse(p, v, &dd_proxy_env.header_tags, &bad, &why) != 0) {
        dd_proxy_env.header_tags = NULL;
        ENV_PROBLEM(6003, "DD_TRACE_HEADER_TAGS", v,
                    apr_psprintf(p, "'%s' is not header or header:tag (%s)", bad, why));
    }
    if (dd_proxy_env.header_tags && dd_proxy_env.header_tags->nelts == 0)
        dd_proxy_env.header_tags = NULL;

    dd_proxy_env.client_ip = UNSET;
    if (env_value("DD_TRACE_CLIENT_IP_ENABLED"))
        env_bool(s, report, 6004, "DD_TRACE_CLIENT_IP_ENABLED", UNSET, &dd_proxy_env.client_ip);
    dd_proxy_env.client_ip_header = NULL;
    if ((v = env_value("DD_TRACE_CLIENT_IP_HEADER"))) {
        if (is_header_name(v))
            dd_proxy_env.client_ip_header = v;
        else
            ENV_PROBLEM(6005, "DD_TRACE_CLIENT_IP_HEADER", v, "not an HTTP header name");
    }

    dd_proxy_env.error_statuses = NULL;
    v = env_value("DD_TRACE_HTTP_SERVER_ERROR_STATUSES");
    if (!v)
        v = env_value("DD_HTTP_SERVER_ERROR_STATUSES"); /* dd-trace-js and -java's name */
    set = apr_pcalloc(p, sizeof(*set));
    if (v && dd_status_set_parse(v, set, &why) == 0)
        dd_proxy_env.error_statuses = set;
    else if (v)
        ENV_PROBLEM(6006, "DD_TRACE_HTTP_SERVER_ERROR_STATUSES", v, why);

    dd_proxy_env.query_string = UNSET;
    if (env_value("DD_HTTP_SERVER_TAG_QUERY_STRING"))
        env_bool(s, report, 6007, "DD_HTTP_SERVER_TAG_QUERY_STRING", UNSET,
                 &dd_proxy_env.query_string);
    /* set but empty means "no obfuscation", so getenv, not env_value */
    v = getenv("DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP");
    dd_proxy_env.qs_regexp = v ? v : dd_qs_default_regexp;
    dd_proxy_env.qs_obfuscator = NULL;

    env_bool(s, report, 6050, "DD_TRACE_RESOURCE_RENAMING_ENABLED", 0,
             &dd_proxy_env.resource_renaming);
    env_bool(s, report, 6051, "DD_TRACE_RESOURCE_RENAMING_ALWAYS_SIMPLIFIED_ENDPOINT", 0,
             &dd_proxy_env.resource_renaming_always);

    dd_proxy_env.trust = DD_TRUST_CONTINUE;
    if ((v = env_value("DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT"))) {
        int t = parse_trust(v);
        if (t >= 0 && !strchr("oO", v[0])) /* the tracers' words only, not On/Off */
            dd_proxy_env.trust = t;
        else
            ENV_PROBLEM(6010, "DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT", v,
                        "not continue, restart or ignore");
    }
    env_bool(s, report, 6011, "DD_TRACE_PROPAGATION_EXTRACT_FIRST", 0, &dd_proxy_env.extract_first);
    env_bool(s, report, 4200, "DD_TRACE_STATS_COMPUTATION_ENABLED", 0, &dd_proxy_env.client_stats);
    v = getenv("DD_TRACE_BAGGAGE_TAG_KEYS"); /* set but empty: no tags */
    dd_proxy_env.baggage_tag_keys =
        dd_baggage_tag_keys_parse(p, v ? v : "user.id,session.id,account.id");
    dd_proxy_env.baggage_max_items = DD_BAGGAGE_MAX_ITEMS;
    if ((v = env_value("DD_TRACE_BAGGAGE_MAX_ITEMS")) &&
        !parse_positive(v, 0, 65536, &dd_proxy_env.baggage_max_items)) {
        dd_proxy_env.baggage_max_items = DD_BAGGAGE_MAX_ITEMS;
        ENV_PROBLEM(6012, "DD_TRACE_BAGGAGE_MAX_ITEMS", v, "not a number in 1..65536");
    }
    dd_proxy_env.baggage_max_bytes = DD_BAGGAGE_MAX_BYTES;
    if ((v = env_value("DD_TRACE_BAGGAGE_MAX_BYTES")) &&
        !parse_positive(v, 0, 65536, &dd_proxy_env.baggage_max_bytes)) {
        dd_proxy_env.baggage_max_bytes = DD_BAGGAGE_MAX_BYTES;
        ENV_PROBLEM(6013, "DD_TRACE_BAGGAGE_MAX_BYTES", v, "not a number in 1..65536");
    }
}

void dd_proxy_resolve_features(apr_pool_t *p, server_rec *s)
{
    int report = ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_CREATE_PRE_CONFIG;
    /* http.endpoint: Off unless renaming is on; then next to http.route too when "always" */
    for (server_rec *v = s; v; v = v->next) {
        dd_srv_conf_t *c = dd_proxy_srv_conf(v);
        int on =
            c->resource_renaming != UNSET ? c->resource_renaming : dd_proxy_env.resource_renaming;
        int always = c->resource_renaming_always != UNSET ? c->resource_renaming_always
                                                          : dd_proxy_env.resource_renaming_always;
        c->endpoint = !on ? DD_ENDPOINT_OFF : always ? DD_ENDPOINT_ALWAYS : DD_ENDPOINT_FALLBACK;
    }
    for (server_rec *v = s; v; v = v->next) {
        dd_srv_conf_t *c = dd_proxy_srv_conf(v);
        int on = c->query_string != UNSET ? c->query_string : dd_proxy_env.query_string == 1;
        c->resolved_qs = NULL;
        if (!on)
            continue;
        if (c->qs_obfuscator) {
            c->resolved_qs = c->qs_obfuscator;
            continue;
        }
        if (!dd_proxy_env.qs_obfuscator) {
            const char *why = NULL;
            size_t at = 0;
            dd_proxy_env.qs_obfuscator =
                dd_qs_obfuscator_create(p, dd_proxy_env.qs_regexp, &why, &at);
            if (!dd_proxy_env.qs_obfuscator) {
                /* as dd-trace-py does with a bad expression: no query strings at all */
                if (report)
                    ap_log_error(
                        APLOG_MARK, APLOG_WARNING, 0, s,
                        DDLOGNO(6008) "ignoring "
                                      "DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP='%s': %s at "
                                      "offset %" APR_SIZE_T_FMT "; query strings are not "
                                      "shown",
                        dd_proxy_env.qs_regexp, why, at);
                return;
            }
        }
        c->resolved_qs = dd_proxy_env.qs_obfuscator;
    }
}

void dd_proxy_read_env(apr_pool_t *p, server_rec *s)
{
    const char *v, *why;
    dd_agent_url_t url;
    apr_array_header_t *env_tags;
    int report = ap_state_query(AP_SQ_MAIN_STATE) != AP_SQ_MS_CREATE_PRE_CONFIG;

    /* Unified service tagging: DD_SERVICE, DD_ENV, DD_VERSION, else DD_TAGS' service:, env:,
     * version: entries (dd-trace-py's precedence); those entries are not tags of their own. */
    env_tags = (v = env_value("DD_TAGS")) ? dd_parse_tags(p, v) : NULL;
    dd_proxy_env.service = env_value("DD_SERVICE");
    dd_proxy_env.env = env_value("DD_ENV");
    dd_proxy_env.version = env_value("DD_VERSION");
    dd_proxy_env.tags = NULL;
    if (env_tags) {
        static const char *const ust[] = {"service", "env", "version"};
        const char **dest[] = {&dd_proxy_env.service, &dd_proxy_env.env, &dd_proxy_env.version};
        dd_tagset_t *set = dd_tagset_make(p);
        for (int i = 0; i < 3; i++) {
            const char *t = dd_tags_get(env_tags, ust[i]);
            if (!*dest[i] && t && *t)
                *dest[i] = t;
            dd_tags_remove(env_tags, ust[i]);
        }
        for (int i = 0; i < env_tags->nelts; i++) { /* unique keys already: a set, once */
            const dd_meta_t *m = &((const dd_meta_t *)env_tags->elts)[i];
            dd_tagset_put(set, m->key, m->value);
        }
        dd_proxy_env.tags = set;
    }
    v = env_value("DD_TRACE_INFERRED_PROXY_SERVICES_ENABLED");
    dd_proxy_env.inferred = v && (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0);
    dd_proxy_env.agent_url = dd_agent_url_from_env(p);
    if (dd_agent_url_parse(p, dd_proxy_env.agent_url, &url, &why) != 0) {
        ENV_PROBLEM(1001, "the agent URL", dd_proxy_env.agent_url, why);
        dd_proxy_env.agent_url = DEFAULT_AGENT_URL;
    }
    dd_styles_default(&dd_proxy_env.styles);
    if ((v = env_value("DD_TRACE_PROPAGATION_STYLE")) &&
        dd_styles_parse(p, v, &dd_proxy_env.styles, &why) != 0) {
        dd_styles_default(&dd_proxy_env.styles);
        ENV_PROBLEM(1005, "DD_TRACE_PROPAGATION_STYLE", v, why);
    }
    dd_proxy_env.sample_rate = -1;
    if ((v = env_value("DD_TRACE_SAMPLE_RATE")) && !parse_rate(v, &dd_proxy_env.sample_rate)) {
        dd_proxy_env.sample_rate = -1;
        ENV_PROBLEM(1006, "DD_TRACE_SAMPLE_RATE", v, "not a number in [0, 1]");
    }
    dd_proxy_env.rules = NULL;
    if ((v = env_value("DD_TRACE_SAMPLING_RULES")) &&
        !(dd_proxy_env.rules = dd_rules_parse(p, v, &why)))
        ENV_PROBLEM(1007, "DD_TRACE_SAMPLING_RULES", v, why);
    dd_proxy_env.rate_limit = DEFAULT_RATE_LIMIT;
    if ((v = env_value("DD_TRACE_RATE_LIMIT")) && !parse_per_second(v, &dd_proxy_env.rate_limit)) {
        dd_proxy_env.rate_limit = DEFAULT_RATE_LIMIT;
        ENV_PROBLEM(1008, "DD_TRACE_RATE_LIMIT", v, "not a number of traces per second");
    }
    read_feature_env(p, s, report);
    /* Remote configuration (issue 13.3; log ids DDP4100-4199) */
    env_bool(s, report, 4100, "DD_REMOTE_CONFIGURATION_ENABLED", 1, &dd_proxy_env.remote_config);
    dd_proxy_env.rc_poll_ms = DD_RC_DEFAULT_POLL_MS;
    if ((v = env_value("DD_REMOTE_CONFIG_POLL_INTERVAL_SECONDS")) &&
        !parse_poll_seconds(v, &dd_proxy_env.rc_poll_ms)) {
        dd_proxy_env.rc_poll_ms = DD_RC_DEFAULT_POLL_MS;
        ENV_PROBLEM(4101, "DD_REMOTE_CONFIG_POLL_INTERVAL_SECONDS", v,
                    "not a number of seconds in 0.05..3600");
    }
}

/* An environment boolean: *out = its value, else dflt (and a warning when it is not one). */
static void env_bool(server_rec *s, int report, int id, const char *name, int dflt, int *out)
{
    const char *v = env_value(name);
    *out = dflt;
    if (v && !dd_parse_bool(v, out)) {
        *out = dflt;
        if (report)
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s,
                         "DDP%d: ignoring %s='%s': not true or false; the default applies", id,
                         name, v);
    }
}
