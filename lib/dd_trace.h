/* SPDX-License-Identifier: Apache-2.0 */
/* dd_trace.h - one request's trace: the spans it makes and how they end.
 *
 * request facts (+ gateway, + inbound context) -> spans -> finished -> encoded chunk.
 * dd_trace_start makes the inferred span (when a gateway was seen) and the server span, with
 * ids; dd_trace_finish sets status, errors and durations and copies what the inferred span
 * takes from the server span; dd_trace_encode produces the chunk for the queue.
 */
#ifndef DD_TRACE_H
#define DD_TRACE_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>
#include "dd_span.h"
#include "dd_gateway.h"
#include "dd_context.h"
#include "dd_propagation.h"
#include "dd_rates.h"
#include "dd_sampler.h"
#include "dd_settings.h"

/* What the configuration says, resolved (directive, else environment, else default). */
typedef struct {
    const char *service;     /* never NULL */
    const char *env;         /* DDEnv / DD_ENV (or DD_TAGS' env:), may be NULL */
    const char *version;     /* DDVersion / DD_VERSION (or DD_TAGS' version:), may be NULL */
    int user_tag;            /* DDInferredProxyUserTag */
    int trace_id_128;        /* generate 128-bit trace ids */
    const dd_rules_t *rules; /* sampling rules incl. the DDSampleRate catch-all, or NULL */
    /* Server error statuses (DDTraceServerErrorStatuses): NULL = 500-599. */
    const dd_status_set_t *error_statuses;
    /* http.endpoint on the server span (DDTraceResourceRenaming): DD_ENDPOINT_* */
    int endpoint;
    /* The process's runtime tags on every span, as dd-trace-cpp (httpd-datadog) sends them:
     * meta runtime-id and language, metric process_id. NULL / 0: not sent. */
    const char *runtime_id; /* dd_runtime_id() of this child process */
    long pid;
    /* The tags above that every span starts with, encoded once (dd_trace_conf_prepare), or
     * NULL: each trace then encodes them itself. */
    const struct dd_trace_fixed *fixed;
} dd_trace_conf_t;

/* Encodes what every span of conf starts with (component, span.kind, env, version,
 * runtime-id, language, process_id; name, service and type) once, in p, into conf->fixed.
 * Call it once conf is filled (a child's runtime id and pid included); a conf whose service,
 * env, version, runtime id or pid changed since is noticed, and its traces encode their own. */
void dd_trace_conf_prepare(apr_pool_t *p, dd_trace_conf_t *conf);

/* A runtime id for this process: a random UUID (version 4), 36 characters and a NUL. */
void dd_runtime_id(char out[37]);

/* The facts about the request httpd read. */
typedef struct {
    int64_t start_ns;       /* r->request_time, ns since the epoch (the spans' start) */
    int64_t start_mono_ns;  /* the same instant on the monotonic clock (dd_mono_ns) */
    const char *method;     /* NULL (with path) when httpd could not read the request line */
    const char *scheme;     /* "http" or "https" */
    const char *host;       /* Host header's name, else ServerName */
    unsigned port;          /* 0 or the default port: not shown in http.url */
    const char *path;       /* without query string; NULL when unknown */
    const char *user_agent; /* may be NULL */
    const char *client_ip;  /* may be NULL */
    /* Tracer features (DDTraceClientIP, DDTraceQueryString, DDTraceHeaderTags): */
    const char *network_client_ip;  /* the TCP peer, or NULL: no network.client.ip */
    const char *query;              /* shown in http.url after '?' (obfuscated), or NULL */
    const apr_array_header_t *tags; /* dd_meta_t for the server span (header tags), or NULL */
    int truncated;                  /* one of those values was cut to its cap */
} dd_request_info_t;

typedef struct {
    apr_pool_t *pool;
    dd_span_t *inferred; /* NULL when no gateway */
    dd_span_t *server;
    dd_context_t parent;                   /* the inbound context (trace_id_low == 0: none) */
    int64_t start_mono_ns;                 /* the server span's start on the monotonic clock */
    int priority;                          /* decided sampling priority */
    const dd_status_set_t *error_statuses; /* conf->error_statuses */
    const char *tid_hex; /* _dd.p.tid's value (the high 64 bits in hex), or NULL */
} dd_trace_t;

/* Builds the spans. gw may be NULL (no inferred span); parent may be NULL (new trace). */
dd_trace_t *dd_trace_start(apr_pool_t *p, const dd_trace_conf_t *conf, const dd_request_info_t *req,
                           const dd_gateway_t *gw, const dd_context_t *parent);

/* Adds the configured tags (DDTag over DD_TAGS, merged at configuration) to both spans, once
 * per trace, before the sampling decision (rules may match them). Tags the module sets itself
 * win: DDEnv/DD_ENV over a tag "env" (and version likewise), http.url, span.kind ... are never
 * replaced; a tag "env" is the trace's env when neither DDEnv nor DD_ENV is set. Time linear
 * in the number of tags. */
void dd_trace_apply_tags(dd_trace_t *t, const dd_tagset_t *tags);

/* Makes the sampling decision for the local root and records it there (CONTRACT §5): an
 * inbound priority is kept as is; else conf->rules (a keep must pass the limiter), else the
 * agent's rate for the root's service and env (the env the root shows), else 1.0. limiter and rates
 * may be NULL. now_mono_ns is the monotonic clock (dd_mono_ns): the limiter must not see clock
 * steps. */
void dd_trace_sample(dd_trace_t *t, const dd_trace_conf_t *conf, dd_limiter_t *limiter,
                     dd_rates_t *rates, int64_t now_mono_ns);

/* What to inject downstream: this trace with the server span as the parent. tracestate is the
 * inbound one's other members (may be NULL). */
void dd_trace_inject_input(const dd_trace_t *t, const char *tracestate, dd_inject_t *out);

/* Ends the trace at end_mono_ns (the monotonic clock, like req->start_mono_ns: durations are
 * monotonic differences, so a wall-clock step never makes one negative or an hour long) with
 * the final HTTP status. The inferred span ends with the server span (its start + duration).
 * status_line and error_notes may be NULL; the error message is error_notes when given, else
 * the status line. The status is an error when it is in conf->error_statuses (500-599 without
 * one). */
void dd_trace_finish(dd_trace_t *t, int64_t end_mono_ns, int status, const char *status_line,
                     const char *error_notes);

/* Encodes the trace's spans as one chunk (see dd_encode_chunk). */
int dd_trace_encode(const dd_trace_t *t, char **out, size_t *out_len);

/* The local root: the inferred span when there is one, else the server span. */
dd_span_t *dd_trace_root(const dd_trace_t *t);

/* _dd.p.ksr's value for a rate, as dd-trace-js's formatKnuthRate writes it: "%.6f" without
 * trailing zeros (and without a trailing '.'), rate clamped to [0, 1]; *len (may be NULL) gets
 * its length. Exposed for tests. */
const char *dd_knuth_rate(apr_pool_t *p, double rate, uint32_t *len);

/* Log correlation (CONTRACT §3.3): 32 lowercase hex for a 128-bit trace id, decimal for a
 * 64-bit one; the server span's id in decimal. */
const char *dd_trace_id_string(apr_pool_t *p, const dd_trace_t *t);
const char *dd_span_id_string(apr_pool_t *p, const dd_trace_t *t);

#endif
