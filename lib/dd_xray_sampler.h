/* SPDX-License-Identifier: Apache-2.0 */
/* dd_xray_sampler.h - X-Ray's sampling, shared by every process of a server.
 *
 * X-Ray decides per request: Sampled=1/0 from upstream is obeyed (the glue does that); else
 * the first matching centralized rule (fetched from the daemon's GetSamplingRules, ordered by
 * priority, "Default" last) decides with its reservoir (X-Ray's quota from SamplingTargets, or
 * one borrowed request per second until a quota arrives) and then its fixed rate; with no
 * usable rules (none fetched yet, older than an hour, or none matching) the SDKs' local
 * default rule applies: one request per second, then 5 %. The Go SDK's semantics are followed
 * (ReservoirQuotaTTL and LastRuleModification in epoch seconds, a quota of 0 means none).
 *
 * "One per second" is per server: all of this lives in one block of memory that the glue
 * makes shared before the children fork (anonymous shared memory), and every field is an
 * atomic, so request threads in any process decide without a lock and without waiting:
 *
 *   rules     written only by the poller, under a seqlock (seq odd while writing); readers copy
 *             each rule out word by word with relaxed atomic loads and retry when seq moved
 *             (a bounded number of times, then the local default rule decides)
 *   slots     one per rule, found by name across rule refreshes: counters (fetch_add), the
 *             reservoir of the current second (one word: second, used, borrowed; CAS), the
 *             target (rate, quota, TTL, interval; plain atomic stores by the poller)
 *   lease     which process polls: (pid << 32 | expiry second), taken with a CAS when expired,
 *             renewed by its holder on each poll, released at its exit. One poller per server
 *             means one ClientID per server, so X-Ray's quota is the server's.
 *
 * The poller itself (dd_xray_poll) runs in the flusher thread of whichever child holds the
 * lease; it makes at most one API call per call, through an interface (dd_xray_api_t) that
 * unit tests fake.
 */
#ifndef DD_XRAY_SAMPLER_H
#define DD_XRAY_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "dd_stats.h"

#define DD_XRAY_MAX_RULES 64
#define DD_XRAY_RULES_TTL_S 3600    /* rules older than this are not used (both SDKs) */
#define DD_XRAY_RULES_PERIOD_S 300  /* GetSamplingRules every 5 minutes */
#define DD_XRAY_TARGETS_PERIOD_S 10 /* SamplingTargets every 10 s */
#define DD_XRAY_RETRY_S 10          /* after a failed call */
#define DD_XRAY_LEASE_S 30
#define DD_XRAY_LOCAL_RESERVOIR 1 /* the local default rule: 1 request per second, */
#define DD_XRAY_LOCAL_RATE 0.05   /* then 5 % */

/* A sampling rule as X-Ray's API describes it (limits from the SamplingRule type). */
typedef struct {
    char name[33];    /* RuleName, 1..32 */
    char service[65]; /* ServiceName: the segment name */
    char type[65];    /* ServiceType: the origin */
    char host[65];    /* Host */
    char method[17];  /* HTTPMethod (at most 10) */
    char path[129];   /* URLPath */
    char pad_[2];
    int32_t priority; /* 1..9999; the Default rule sorts last */
    int32_t is_default;
    int32_t slot; /* set by dd_xray_sampler_set_rules */
    int32_t pad2_;
    double fixed_rate;      /* 0..1 */
    int64_t reservoir_size; /* >= 0 */
} dd_xray_rule_t;

typedef struct dd_xray_sampler dd_xray_sampler_t;

/* Bytes the shared state needs. */
size_t dd_xray_sampler_size(void);
/* Sets up the state in mem (size >= dd_xray_sampler_size(), 8-byte aligned): no rules, a
 * fresh random ClientID. Call once, before any other process or thread uses it. */
dd_xray_sampler_t *dd_xray_sampler_init(void *mem, size_t size);
/* mem as left by dd_xray_sampler_init (e.g. kept across a graceful restart), or NULL when it
 * is not (another layout). */
dd_xray_sampler_t *dd_xray_sampler_attach(void *mem, size_t size);
/* The 24 lowercase hex digits X-Ray identifies this server's reports by. */
const char *dd_xray_sampler_client_id(const dd_xray_sampler_t *s);

/* ---- the decision (any thread, any process) --------------------------------------------- */

typedef struct {
    const char *host;    /* the Host header as sent */
    const char *method;  /* HTTP method */
    const char *path;    /* URL path, no query string (as the Go SDK matches) */
    const char *service; /* the segment name */
    const char *type;    /* the origin, or NULL / "" (matches any ServiceType) */
} dd_xray_sample_req_t;

typedef struct {
    int sampled;
    char rule[33]; /* the centralized rule that sampled it, or "" */
} dd_xray_decision_t;

void dd_xray_sample(dd_xray_sampler_t *s, const dd_xray_sample_req_t *req, int64_t now_s,
                    dd_xray_decision_t *out);

/* X-Ray's wildcard match: '*' any run, '?' one character, case-insensitive (ASCII); an empty
 * pattern matches only the empty text. */
int dd_xray_wildcard_match(const char *pattern, const char *text);

/* Whether rules fetched within DD_XRAY_RULES_TTL_S are held, and how many. */
size_t dd_xray_sampler_rule_count(dd_xray_sampler_t *s, int64_t now_s);

/* ---- the poller's side ------------------------------------------------------------------ */

/* Appends the usable rules of one GetSamplingRules answer to rules[*n..max) (jansson): Version
 * 1, ResourceARN "*", no Attributes, every field present and within X-Ray's limits. Rules
 * that are not are counted in *skipped. *next_token gets NextToken (malloc'd) or NULL.
 * Returns 0, or -1 when the answer is not a GetSamplingRules object. */
int dd_xray_rules_parse(const char *json, size_t len, dd_xray_rule_t *rules, size_t max, size_t *n,
                        char **next_token, unsigned *skipped);
/* Replaces the rules (sorted by priority then name, Default last; beyond DD_XRAY_MAX_RULES
 * dropped). A rule keeps its slot (reservoir, target, counters) across refreshes by name; its
 * rate goes back to the rule's FixedRate until the next target (as the Go SDK does). Returns
 * 0, or -1 when another writer holds the state (try again later). */
int dd_xray_sampler_set_rules(dd_xray_sampler_t *s, dd_xray_rule_t *rules, size_t n,
                              int64_t fetched_at);

/* The SamplingTargets request for the rules matched since their last report whose Interval
 * has passed (their counters are reset): malloc'd JSON, or NULL when there is nothing to
 * report. */
char *dd_xray_targets_request(dd_xray_sampler_t *s, int64_t now_s, size_t *len);
/* Applies a SamplingTargets answer. *refresh_rules is set when LastRuleModification is at or
 * after the rules' fetch time, or an UnprocessedStatistics entry has a 4xx code. Returns 0,
 * 1 when some entries were unusable or reported a 5xx code, -1 when the answer is not a
 * SamplingTargets object. */
int dd_xray_targets_apply(dd_xray_sampler_t *s, const char *json, size_t len, int64_t now_s,
                          int *refresh_rules);

/* Takes or renews the poller lease for pid until now_s + ttl_s. Returns 1 when pid holds it. */
int dd_xray_sampler_lease(dd_xray_sampler_t *s, uint32_t pid, int64_t now_s, int64_t ttl_s);
/* Gives the lease up (at process exit), when pid holds it. */
void dd_xray_sampler_release(dd_xray_sampler_t *s, uint32_t pid);

/* How the poller reaches the daemon's sampling API: POST path with body; on success returns
 * 0 with the HTTP status and a malloc'd response body (the caller frees it); else -1 with a
 * message in err. */
typedef struct {
    int (*post)(void *ctx, const char *path, const char *body, size_t len, long timeout_ms,
                long *status, char **resp, size_t *resp_len, char *err, size_t errlen);
    void *ctx;
} dd_xray_api_t;

typedef struct {
    dd_xray_sampler_t *sampler;
    dd_xray_api_t api;
    dd_stats_t *stats; /* xray_sampling_* counters */
    uint32_t pid;      /* this process, for the lease */
    long timeout_ms;   /* per call */
    /* Called after a failed call (for rate-limited logging); may be NULL. */
    void (*on_error)(void *ctx, const char *what);
    void *on_error_ctx;
} dd_xray_poll_conf_t;

/* One step of the centralized sampling client: when this process holds (or takes) the lease,
 * fetches the rules when due (all pages) or else reports to SamplingTargets when due. A
 * failure keeps what the state holds (rules expire after an hour) and retries after
 * DD_XRAY_RETRY_S. Returns 1 when it called the API. */
int dd_xray_poll(const dd_xray_poll_conf_t *c, int64_t now_s);

#endif
