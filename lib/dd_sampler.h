/* SPDX-License-Identifier: Apache-2.0 */
/* dd_sampler.h - trace sampling as Datadog tracers do it (CONTRACT §5).
 *
 * Rules (DDSamplingRules / DD_TRACE_SAMPLING_RULES, then DDSampleRate as a catch-all) are
 * parsed once when the configuration is read. The limiter is a token bucket per child
 * process. The decision is made once per trace, on its local root.
 */
#ifndef DD_SAMPLER_H
#define DD_SAMPLER_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>
#include "dd_rates.h"

typedef struct dd_rules dd_rules_t;

/* Parses a JSON list of rules: [{"service":"glob","name":"glob","resource":"glob",
 * "tags":{"k":"glob"},"sample_rate":0.5}, ...]. service/name/resource/tags are optional,
 * sample_rate is required and in [0, 1]; any other key is an error. Globs: '*' any run, '?'
 * one character, matched case-insensitively. Returns NULL with a message naming the problem
 * in *err (e.g. "rule 2: sample_rate 1.5 is not in [0, 1]"). json may be "[]" (no rules). */
dd_rules_t *dd_rules_parse(apr_pool_t *p, const char *json, const char **err);

/* Returns a new list: the rules of `rules` (may be NULL; it is not changed, so one parsed list
 * can be shared by several servers) followed by a catch-all rule with this rate (DDSampleRate). */
dd_rules_t *dd_rules_add_catch_all(apr_pool_t *p, const dd_rules_t *rules, double rate);

/* Remote configuration's rules (APM_TRACING lib_config.tracing_sampling_rules, a jansson
 * list): [{"service","name","resource","tags":[{"key","value_glob"}],"sample_rate",
 * "provenance":"customer"|"dynamic"}]; their mechanism is DD_MECH_REMOTE_USER or
 * DD_MECH_REMOTE_DYNAMIC. NULL with *err on a bad one. */
dd_rules_t *dd_rules_parse_remote(apr_pool_t *p, const void *json_list, const char **err);

/* What remote configuration makes of a server's rules, as dd-trace-cpp's ConfigManager does:
 * the remote rules (may be NULL) first, then the local ones; with has_rate, a catch-all at the
 * end with that rate, replacing the local catch-all (DDSampleRate) when there is one. */
dd_rules_t *dd_rules_override(apr_pool_t *p, const dd_rules_t *remote, const dd_rules_t *local,
                              int has_rate, double rate);

/* Glob match, exposed for tests: '*' and '?', case-insensitive. */
int dd_glob_match(const char *pattern, const char *s);

/* The token bucket: rate per second, burst = rate. Thread-safe, lock-free (atomics). */
typedef struct dd_limiter dd_limiter_t;
dd_limiter_t *dd_limiter_create(apr_pool_t *p, double per_second);
/* Takes a token at now_ns, a monotonic clock (a wall clock that steps back an hour would deny
 * everything for that hour); returns 1 when allowed. *effective_rate gets the fraction of
 * requests allowed over the recent window (what _dd.limit_psr carries). */
int dd_limiter_allow(dd_limiter_t *l, int64_t now_ns, double *effective_rate);

/* What the root span looks like, for matching. */
typedef struct {
    const char *service;
    const char *name;
    const char *resource;
    const apr_array_header_t *meta; /* dd_meta_t of the root span */
    const char *env;                /* for the agent's rate key */
    uint64_t trace_id_low;
} dd_sample_input_t;

/* Sampling mechanisms (_dd.p.dm is "-" and the number): Datadog's SamplingMechanism. */
#define DD_MECH_DEFAULT 0
#define DD_MECH_AGENT 1
#define DD_MECH_RULE 3
#define DD_MECH_REMOTE_USER 11    /* a rule set through remote configuration */
#define DD_MECH_REMOTE_DYNAMIC 12 /* an adaptive rule the backend computed */
#define DD_MECH_IS_RULE(m) ((m) == DD_MECH_RULE || (m) >= DD_MECH_REMOTE_USER)

typedef struct {
    int priority;     /* 2/-1 (rule), 1/0 (agent or default) */
    int mechanism;    /* DD_MECH_*: 0 default, 1 agent rate, 3 rule, 11/12 remote rule */
    double rate;      /* the rule's or the agent's rate */
    int limiter_used; /* 1: limit_psr is meaningful */
    double limit_psr;
} dd_decision_t;

/* The decision when no inbound priority exists: rules (then the limiter), else the agent's
 * rate for the root's service and env, else 1.0. rules, limiter and rates may be NULL. */
void dd_sample(const dd_rules_t *rules, dd_limiter_t *limiter, dd_rates_t *rates,
               const dd_sample_input_t *in, int64_t now_ns, dd_decision_t *out);

/* The keep test: (id * 1111111111111111111) mod 2^64 <= rate * 2^64. */
int dd_sample_keep(uint64_t trace_id_low, double rate);

#endif
