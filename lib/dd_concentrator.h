/* SPDX-License-Identifier: Apache-2.0 */
/* dd_concentrator.h - client-side APM stats (issue 13.2), as Datadog's tracers compute them.
 *
 * request threads: dd_cs_from_trace -> a fixed-size record per span, handed over through a
 *                  bounded lock-free ring (no lock, no malloc; full: counted and skipped)
 * flusher thread:  dd_cs_drain -> 10 s buckets aligned to 10 s, each a bounded table of
 *                  aggregation keys (service, name, resource, type, HTTP status, span kind,
 *                  synthetics, is_trace_root, env, version) with hits, errors, top-level hits,
 *                  total duration and ok / error DDSketches
 *                  dd_cs_flush -> a ClientStatsPayload (msgpack) per env and version for the
 *                  buckets that are over, to the sender (POST /v0.6/stats)
 *
 * Which spans count: top-level ones (the local root, or a span whose parent is in another
 * service), measured ones (metric _dd.measured), and those whose span.kind is server, client,
 * producer or consumer (the agent's compute_stats_by_span_kind). Strings are cut to the
 * record's bounds (a longer resource is aggregated on its first DD_CS_RESOURCE_MAX bytes).
 */
#ifndef DD_CONCENTRATOR_H
#define DD_CONCENTRATOR_H

#include <stddef.h>
#include <stdint.h>
#include "dd_stats.h"
#include "dd_trace.h"

#define DD_CS_BUCKET_NS (10LL * 1000000000LL)
#define DD_CS_SERVICE_MAX 100
#define DD_CS_NAME_MAX 100
#define DD_CS_RESOURCE_MAX 200
#define DD_CS_TYPE_MAX 32
#define DD_CS_KIND_MAX 16
#define DD_CS_ENV_MAX 64
#define DD_CS_VERSION_MAX 64
#define DD_CS_MAX_BUCKETS 4 /* open buckets at once (late spans go to the oldest) */

/* One span's part in the stats: what the aggregation key needs, copied. */
typedef struct {
    char service[DD_CS_SERVICE_MAX + 1];
    char name[DD_CS_NAME_MAX + 1];
    char resource[DD_CS_RESOURCE_MAX + 1];
    char type[DD_CS_TYPE_MAX + 1];
    char span_kind[DD_CS_KIND_MAX + 1];
    char env[DD_CS_ENV_MAX + 1];
    char version[DD_CS_VERSION_MAX + 1];
    uint32_t http_status;
    uint8_t error, top_level, is_trace_root, synthetics;
    int64_t end_ns;   /* start + duration, ns since the epoch: which bucket */
    int64_t duration; /* ns */
} dd_cs_span_t;

typedef struct dd_concentrator dd_concentrator_t;

typedef struct {
    size_t ring_items;   /* records the ring holds (rounded up to a power of two), >= 2 */
    size_t max_keys;     /* distinct keys per bucket; past it a span is counted and skipped */
    const char *service; /* the payload's Service (the main server's), may be NULL */
    const char *lang;    /* "c" */
    const char *tracer_version;
    const char *runtime_id;
    const char *hostname; /* may be NULL: "" */
    dd_stats_t *stats;    /* must not be NULL */
} dd_cs_conf_t;

/* Strings in conf are copied. Returns NULL when out of memory. */
dd_concentrator_t *dd_cs_create(const dd_cs_conf_t *conf);
void dd_cs_destroy(dd_concentrator_t *c);

/* Any thread: the stats records of a finished trace (its inferred span, if any, then its
 * server span), at most 2, in out. env and version: the trace's (may be NULL), for a span
 * without env / version tags. Returns how many spans count. */
size_t dd_cs_from_trace(const dd_trace_t *t, const char *env, const char *version,
                        dd_cs_span_t out[2]);

/* Any thread, never blocks: hands spans over. Returns how many fit (the rest are counted in
 * stats->cstats_spans_dropped). */
size_t dd_cs_push(dd_concentrator_t *c, const dd_cs_span_t *spans, size_t n);
/* Any thread: records waiting in the ring (approximate). For "past half full" wake-ups. */
size_t dd_cs_pending(const dd_concentrator_t *c);
size_t dd_cs_ring_items(const dd_concentrator_t *c);

/* The flusher thread only from here on. */

/* Aggregates one span (the ring's consumer does it for each record; tests call it directly). */
void dd_cs_add(dd_concentrator_t *c, const dd_cs_span_t *s);
/* Takes every record off the ring and aggregates it. Returns how many. */
size_t dd_cs_drain(dd_concentrator_t *c);

/* Sends a payload; returns 0 when the agent took it. */
typedef int (*dd_cs_send_fn)(void *ctx, const char *body, size_t len);

/* Sends the buckets that are over at now_ns (wall clock: a bucket [start, start + 10 s) is
 * over once now_ns >= start + 10 s), or all of them when force (child exit), and frees them.
 * Counts payloads sent / failed and buckets flushed. Returns the payloads sent. */
size_t dd_cs_flush(dd_concentrator_t *c, int64_t now_ns, int force, dd_cs_send_fn send, void *ctx);

/* Open buckets and keys (for tests and the status page). */
size_t dd_cs_buckets(const dd_concentrator_t *c);
size_t dd_cs_keys(const dd_concentrator_t *c);

#endif
