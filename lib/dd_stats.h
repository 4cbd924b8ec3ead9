/* dd_stats.h - the module's own counters (CONTRACT §7).
 *
 * Plain C11 atomics in one struct, so the same struct can live in per-process memory (unit
 * tests) or in shared memory made before the children fork (httpd). Every update is a relaxed
 * fetch_add: counters order nothing, they only count.
 */
#ifndef DD_STATS_H
#define DD_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include "dd_gateway.h"

typedef enum {
    DD_DROP_QUEUE_FULL = 0,
    DD_DROP_ENCODE_ERROR,
    DD_DROP_AGENT_ERROR,
    DD_DROP_REASON_COUNT
} dd_drop_reason_t;

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
    atomic_int_fast64_t last_agent_error_time; /* Unix seconds, 0 = never */
    atomic_int last_agent_error_status;        /* HTTP status, 0 = no answer */
} dd_stats_t;

static inline void dd_stats_add(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

static inline uint64_t dd_stats_get(atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

const char *dd_drop_reason_name(dd_drop_reason_t r);

#endif
