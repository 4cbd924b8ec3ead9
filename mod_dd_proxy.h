/* SPDX-License-Identifier: Apache-2.0 */
/* mod_dd_proxy.h - what the glue's files share: configuration, environment, counters.
 *
 * mod_dd_proxy.c        hooks: requests, the per-child flusher; the module table
 * mod_dd_proxy_config.c directives, merges, environment fallbacks
 * mod_dd_proxy_status.c the counters in shared memory, mod_status and the JSON handler
 * mod_dd_proxy_xray.c   AWS X-Ray segments and sampling (mod_dd_proxy_xray.h)
 * mod_dd_proxy_rc.c     remote configuration: the poller and what it applies (mod_dd_proxy_rc.h)
 */
#ifndef MOD_DD_PROXY_H
#define MOD_DD_PROXY_H

#include "httpd.h"
#include "http_config.h"

#include "dd_endpoint.h"
#include "dd_obfuscate.h"
#include "dd_propagation.h"
#include "dd_sampler.h"
#include "dd_settings.h"
#include "dd_span.h"
#include "dd_stats.h"
#include "dd_trace.h"
#include "mod_dd_proxy_xray.h"

/* Stable log ids, in the spirit of httpd's APLOGNO. */
#define DDLOGNO(n) "DDP" #n ": "

#define UNSET (-1)
#define DEFAULT_AGENT_URL "http://localhost:8126"
#define DEFAULT_SERVICE "httpd"
#define DEFAULT_FLUSH_MS 1000
#define DEFAULT_QUEUE_ITEMS 4096
#define DEFAULT_QUEUE_BYTES (16 * 1024 * 1024)
#define DEFAULT_RATE_LIMIT 100.0
#define DD_RC_DEFAULT_POLL_MS 5000 /* as Datadog's tracers poll remote configuration */
#define DD_RC_MIN_POLL_MS 50

extern module AP_MODULE_DECLARE_DATA dd_proxy_module;

typedef struct {
    int inferred;                     /* DDInferredProxy, UNSET -> env -> Off */
    int strip;                        /* DDInferredProxyStripHeaders, UNSET -> On */
    int user_tag;                     /* DDInferredProxyUserTag, UNSET -> Off */
    const char *service;              /* DDService, NULL -> env -> "httpd" */
    const char *env;                  /* DDEnv */
    const char *version;              /* DDVersion */
    apr_array_header_t *trusted;      /* DDInferredProxyTrustedNetworks: apr_ipsubnet_t *; NULL =
                                       * unset (any), empty = "any" set explicitly */
    double sample_rate;               /* DDSampleRate, < 0 = unset */
    dd_rules_t *rules;                /* DDSamplingRules, NULL = unset */
    const dd_rules_t *resolved_rules; /* rules, then the catch-all; env applied (post_config) */
    /* Global only (main server): */
    dd_styles_t *styles;     /* DDPropagationStyle */
    double rate_limit;       /* DDRateLimit, < 0 = unset */
    const char *agent_url;   /* DDAgentURL */
    int flush_ms;            /* DDFlushInterval */
    apr_int64_t queue_items; /* DDQueueLimit */
    apr_int64_t queue_bytes;
    /* Tracer features (issue 15): header tags, client IP, error statuses, query strings.
     * Per server (S V); unset -> the environment variable -> the default. */
    apr_array_header_t *header_tags;         /* DDTraceHeaderTags: dd_header_tag_t, NULL = unset */
    int client_ip;                           /* DDTraceClientIP: UNSET, 0, 1 */
    const char *client_ip_header;            /* DDTraceClientIPHeader */
    const dd_status_set_t *error_statuses;   /* DDTraceServerErrorStatuses, NULL = unset */
    int query_string;                        /* DDTraceQueryString: UNSET, 0, 1 */
    const dd_qs_obfuscator_t *qs_obfuscator; /* DDTraceQueryStringObfuscation, NULL = unset */
    const dd_qs_obfuscator_t *resolved_qs; /* what applies, when query_string is on (post_config) */
    /* http.endpoint (issue 15): DDTraceResourceRenaming, ...AlwaysSimplified (UNSET, 0, 1),
     * and what applies (DD_ENDPOINT_*, post_config) */
    int resource_renaming, resource_renaming_always, endpoint;
    /* The spans' constant tags, encoded once per child (child_init: dd_trace_conf_prepare) */
    const struct dd_trace_fixed *trace_fixed;
    /* X-Ray (issue 17): DDXRay, DDXRaySegmentName, DDXRayDaemonAddress */
    dd_xray_srv_conf_t xray;
    /* Global only: W3C baggage and extraction (issue 15) */
    int extract_first;                    /* DDPropagationExtractFirst: UNSET, 0, 1 */
    apr_array_header_t *baggage_tag_keys; /* DDBaggageTagKeys: const char *, NULL = unset */
    apr_int64_t baggage_max_items;        /* DDBaggageMaxItems, UNSET */
    apr_int64_t baggage_max_bytes;        /* DDBaggageMaxBytes, UNSET */
    /* Global only: remote configuration (issue 13.3, mod_dd_proxy_rc.c) */
    int remote_config;      /* DDRemoteConfig: UNSET, 0, 1 */
    apr_int64_t rc_poll_ms; /* DDRemoteConfigPollInterval in ms, UNSET */
    int client_stats;                     /* DDClientStats: UNSET, 0, 1 (issue 13.2) */
} dd_srv_conf_t;

/* DDTrustInboundContext / DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT */
#define DD_TRUST_IGNORE 0   /* Off, "ignore": a new trace, the inbound context unused */
#define DD_TRUST_CONTINUE 1 /* On, "continue": the trace continues (the default) */
#define DD_TRUST_RESTART 2  /* Restart, "restart": a new trace, linked to the inbound one */

typedef struct {
    int trace; /* DDTrace, UNSET -> On */
    int trust; /* DDTrustInboundContext: DD_TRUST_*, UNSET -> the environment -> continue */
    /* DDTag: deduplicated (a later or deeper DDTag wins) when the configuration is read and
     * merged; the server's own set has DD_TAGS beneath it (post_config). */
    const dd_tagset_t *tags;
} dd_dir_conf_t;

/* What the environment says, read once in post_config (directives beat it). */
typedef struct {
    const char *service, *env, *version;
    const dd_tagset_t *tags; /* DD_TAGS */
    int inferred;
    const char *agent_url;
    dd_styles_t styles; /* DD_TRACE_PROPAGATION_STYLE, else the default */
    double sample_rate; /* DD_TRACE_SAMPLE_RATE, < 0 = unset */
    dd_rules_t *rules;  /* DD_TRACE_SAMPLING_RULES */
    double rate_limit;  /* DD_TRACE_RATE_LIMIT, else 100 */
    /* Tracer features (issue 15) */
    int trace_enabled;                     /* DD_TRACE_ENABLED and DD_APM_TRACING_ENABLED */
    apr_array_header_t *header_tags;       /* DD_TRACE_HEADER_TAGS, NULL = none */
    int client_ip;                         /* DD_TRACE_CLIENT_IP_ENABLED: UNSET, 0, 1 */
    const char *client_ip_header;          /* DD_TRACE_CLIENT_IP_HEADER */
    const dd_status_set_t *error_statuses; /* DD_TRACE_HTTP_SERVER_ERROR_STATUSES, NULL = 500-599 */
    int query_string;                      /* DD_HTTP_SERVER_TAG_QUERY_STRING: UNSET, 0, 1 */
    const char *qs_regexp; /* DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP, else the default */
    const dd_qs_obfuscator_t *qs_obfuscator; /* qs_regexp compiled, when some server needs it */
    int trust;                               /* DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT: DD_TRUST_* */
    int extract_first;                       /* DD_TRACE_PROPAGATION_EXTRACT_FIRST */
    apr_array_header_t *baggage_tag_keys;    /* DD_TRACE_BAGGAGE_TAG_KEYS, else the default */
    apr_int64_t baggage_max_items;           /* DD_TRACE_BAGGAGE_MAX_ITEMS, else 64 */
    apr_int64_t baggage_max_bytes;           /* DD_TRACE_BAGGAGE_MAX_BYTES, else 8192 */
    /* DD_TRACE_RESOURCE_RENAMING_ENABLED, DD_TRACE_RESOURCE_RENAMING_ALWAYS_SIMPLIFIED_ENDPOINT */
    int resource_renaming, resource_renaming_always;
    int remote_config;      /* DD_REMOTE_CONFIGURATION_ENABLED, else 1 */
    apr_int64_t rc_poll_ms; /* DD_REMOTE_CONFIG_POLL_INTERVAL_SECONDS, else 5 s */
    int client_stats; /* DD_TRACE_STATS_COMPUTATION_ENABLED, else 0 (issue 13.2) */
} dd_env_conf_t;

extern dd_env_conf_t dd_proxy_env;
/* Set when any DDTrace On appears, so DDTrace Off at server level can skip all work. */
extern int dd_proxy_any_trace_on;
extern const command_rec dd_proxy_cmds[];

void *dd_proxy_create_srv_conf(apr_pool_t *p, server_rec *s);
void *dd_proxy_merge_srv_conf(apr_pool_t *p, void *basev, void *addv);
void *dd_proxy_create_dir_conf(apr_pool_t *p, char *dir);
void *dd_proxy_merge_dir_conf(apr_pool_t *p, void *basev, void *addv);
/* Reads the environment fallbacks; reports bad values once (not in the first config pass). */
void dd_proxy_read_env(apr_pool_t *p, server_rec *s);
/* Resolves each server's feature settings against the environment (post_config). */
void dd_proxy_resolve_features(apr_pool_t *p, server_rec *s);

static inline dd_srv_conf_t *dd_proxy_srv_conf(server_rec *s)
{
    return ap_get_module_config(s->module_config, &dd_proxy_module);
}

/* How a request in d treats an inbound trace context: DD_TRUST_*. */
static inline int dd_proxy_trust(const dd_dir_conf_t *d)
{
    return d->trust != UNSET ? d->trust : dd_proxy_env.trust;
}

/* The trace of the request r belongs to (its first request's; NULL when it is not traced),
 * for the X-Ray glue. */
dd_trace_t *dd_proxy_request_trace(request_rec *r);

/* The counters every child adds to (shared memory once attached). */
extern dd_stats_t *dd_proxy_stats;
void dd_proxy_attach_stats(server_rec *s);
int dd_proxy_status_hook(request_rec *r, int flags);
int dd_proxy_status_handler(request_rec *r);

#endif
