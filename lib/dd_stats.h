/* SPDX-License-Identifier: Apache-2.0 */
/* dd_stats.h - the module's own counters (CONTRACT §7).
 *
 * Plain C11 atomics in one struct, so the same struct can live in per-process memory (unit
 * tests) or in shared memory made before the children fork (httpd). Every update is a relaxed
 * fetch_add: counters order nothing, they only count.
 */
#ifndef DD_STATS_H
#define DD_STATS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "dd_gateway.h"

typedef enum {
    DD_DROP_QUEUE_FULL = 0,
    DD_DROP_ENCODE_ERROR,
    DD_DROP_AGENT_ERROR,
    DD_DROP_REASON_COUNT
} dd_drop_reason_t;

/* X-Ray (issue 17): why a segment document did not reach the daemon. */
typedef enum {
    DD_XRAY_DROP_QUEUE_FULL = 0,   /* the child's segment queue was full */
    DD_XRAY_DROP_SEND_ERROR,       /* the socket refused it (no daemon, no route, buffer full) */
    DD_XRAY_DROP_TOO_LARGE,        /* could not be made to fit a datagram */
    DD_XRAY_DROP_ENCODE_ERROR,     /* out of memory building it */
    DD_XRAY_DROP_SUBSEGMENT_LIMIT, /* proxied calls past DD_XRAY_MAX_SUBSEGMENTS per request */
    DD_XRAY_DROP_REASON_COUNT
} dd_xray_drop_reason_t;

typedef struct {
    atomic_uint_fast64_t requests_traced;
    atomic_uint_fast64_t inferred_spans;
    atomic_uint_fast64_t gateway_rejected[DD_GW_STATUS_COUNT]; /* by dd_gw_status_t */
    atomic_uint_fast64_t chunks_queued;
    atomic_uint_fast64_t chunks_dropped[DD_DROP_REASON_COUNT];
    atomic_uint_fast64_t chunks_sent;
    atomic_uint_fast64_t payloads_sent;
    atomic_uint_fast64_t bytes_sent;
    atomic_uint_fast64_t agent_errors;
    atomic_uint_fast64_t agent_rates_rejected;
    /* Child exit (issue 14): final flushes handed to a detached process, and their chunks
     * (what that process then sent or dropped is in chunks_sent / chunks_dropped). */
    /* Agent discovery (issue 13.1): GET /info answered, failed (404 from an older agent,
     * garbage, no answer); what it said last (0 until it said it). */
    atomic_uint_fast64_t agent_info_fetched;
    atomic_uint_fast64_t agent_info_errors;
    atomic_uint_fast64_t agent_client_drop_p0s;   /* 0 or 1 */
    atomic_uint_fast64_t agent_max_request_bytes; /* config.max_request_bytes */
    /* Client-side stats (issue 13.2): on (1) while the agent announces /v0.6/stats and
     * client_drop_p0s and DDClientStats allows it; stats payloads sent / failed, buckets
     * flushed, spans not aggregated (their bucket's key table was full; or the hand-over
     * ring was full, or a clock step put them in no open bucket), and the traces (and their
     * spans) with priority <= 0 not sent. */
    atomic_uint_fast64_t cstats_active;
    atomic_uint_fast64_t cstats_payloads_sent;
    atomic_uint_fast64_t cstats_payloads_failed;
    atomic_uint_fast64_t cstats_buckets;
    atomic_uint_fast64_t cstats_keys_dropped;
    atomic_uint_fast64_t cstats_spans_dropped;
    atomic_uint_fast64_t p0_traces_dropped;
    atomic_uint_fast64_t p0_spans_dropped;
    atomic_uint_fast64_t exit_flushes_detached;
    atomic_uint_fast64_t exit_chunks_handed_off;
    atomic_int_fast64_t last_agent_error_time; /* Unix seconds, 0 = never */
    atomic_int last_agent_error_status;        /* HTTP status, 0 = no answer */
    /* What went wrong last, for people: written and read under a try-lock (a writer or reader
     * that finds it taken skips; the text is diagnostics, never worth a wait). The lock word
     * is 0 when free, else its holder: pid << 32 | the monotonic second it took it. A process
     * that finds the holder gone (killed while copying) or holding it for over
     * DD_STATS_LOCK_STEAL_S takes it over, so a child's death never freezes the text. */
    _Atomic uint64_t last_agent_error_lock;
    char last_agent_error[128];

    /* X-Ray (issue 17): segments sent to the daemon over UDP, and X-Ray's sampling */
    atomic_uint_fast64_t xray_segments_sent; /* datagrams the socket took */
    atomic_uint_fast64_t xray_bytes_sent;
    atomic_uint_fast64_t xray_segments_dropped[DD_XRAY_DROP_REASON_COUNT];
    atomic_uint_fast64_t xray_segments_too_large; /* split into several documents (or cut) */
    atomic_uint_fast64_t xray_sampled;            /* requests X-Ray records */
    atomic_uint_fast64_t xray_not_sampled;
    atomic_uint_fast64_t xray_sampling_rules_fetched; /* GetSamplingRules answered */
    atomic_uint_fast64_t xray_sampling_targets_fetched;
    atomic_uint_fast64_t xray_sampling_errors;        /* calls that failed or answered garbage */
    atomic_uint_fast64_t xray_sampling_rules_skipped; /* rules not usable here */

    /* W3C baggage (issue 15): inbound headers dropped as malformed, and headers cut at the
     * item or byte limit (read or sent) */
    atomic_uint_fast64_t baggage_malformed;
    atomic_uint_fast64_t baggage_truncated;

    /* Remote configuration (issue 13.3), summed over the children (each polls): polls of
     * /v0.7/config, those without a 200 answer (none, slow, 404, too large), 200 answers that
     * were malformed (nothing changed), configurations acknowledged and those that could not
     * be applied (apply_state 3), traces not sent because tracing_enabled is false. What
     * applies now (0/1, the last child to apply a change writes them): */
    atomic_uint_fast64_t rc_polls;
    atomic_uint_fast64_t rc_poll_errors;
    atomic_uint_fast64_t rc_malformed;
    atomic_uint_fast64_t rc_configs_applied;
    atomic_uint_fast64_t rc_apply_errors;
    atomic_uint_fast64_t rc_traces_not_sent;
    atomic_uint_fast64_t rc_active_sample_rate;
    atomic_uint_fast64_t rc_active_sampling_rules;
    atomic_uint_fast64_t rc_active_tags;
    atomic_uint_fast64_t rc_active_tracing_disabled;
} dd_stats_t;

#define DD_STATS_LOCK_STEAL_S 2

/* The counters are shared by processes: their atomics must be the CPU's own, not a lock
 * table of libatomic's that each process has for itself (configure checks this too). */
_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2 && ATOMIC_LONG_LOCK_FREE == 2 &&
                   ATOMIC_INT_LOCK_FREE == 2,
               "the shared-memory counters need lock-free 64-bit atomics");

static inline void dd_stats_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline uint64_t dd_stats_get(atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

const char *dd_drop_reason_name(dd_drop_reason_t r);
const char *dd_xray_drop_reason_name(dd_xray_drop_reason_t r);

/* Records the last agent error's text (truncated to fit). Never waits. */
void dd_stats_set_error_text(dd_stats_t *s, const char *text);
/* Copies the last agent error's text into out (size n >= 1); "" when none or busy. */
void dd_stats_get_error_text(dd_stats_t *s, char *out, size_t n);

/* All counters as a JSON object (jansson), malloc'd and NUL-terminated; NULL when out of
 * memory. Free with free(). */
char *dd_stats_to_json(dd_stats_t *s);

#endif
