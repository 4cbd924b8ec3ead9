/* SPDX-License-Identifier: Apache-2.0 */
/* dd_flusher.h - the one background thread per child process that delivers traces.
 *
 * queue -> payloads -> sender. It wakes every interval_ms, or sooner when a producer calls
 * dd_flusher_wake() (the glue does so when the queue passes half full), drains the queue into
 * payloads of at most max_payload_bytes, and hands each to the sender. A failed send drops
 * that payload's chunks (counted); the flusher never retries into unbounded memory. On stop it
 * sends what is left, bounded by a deadline, and joins.
 */
#ifndef DD_FLUSHER_H
#define DD_FLUSHER_H

#include <stddef.h>
#include <apr_pools.h>
#include "dd_queue.h"
#include "dd_rates.h"
#include "dd_stats.h"

/* How payloads leave: a real agent (dd_agent_send) or a fake in tests. Returns 0 on success,
 * DD_SEND_UNDELIVERED for a failure after which the receiver cannot have the payload (it was
 * not all sent: sending it again makes no duplicate), any other value for other failures.
 * http_status/error describe a failure (error is a short string, may be NULL); body/body_len
 * is the response body for a success (may be NULL), owned by the sender until the next call. */
#define DD_SEND_UNDELIVERED 2

typedef struct {
    int (*send)(void *ctx, const char *payload, size_t len, size_t ntraces, long timeout_ms,
                long *http_status, const char **error, const char **body, size_t *body_len);
    void *ctx;
} dd_sender_t;

typedef struct dd_flusher dd_flusher_t;

typedef struct {
    dd_queue_t *queue;
    dd_sender_t sender;
    dd_rates_t *rates;         /* may be NULL: responses are not parsed */
    dd_stats_t *stats;         /* must not be NULL */
    long interval_ms;          /* >= 1 */
    size_t max_payload_bytes;  /* payloads are split to stay at or under this */
    long send_timeout_ms;      /* per payload */
    long stop_deadline_ms;     /* total time the final flush may take */
    /* Back-off on agent failures (issue 18.6): after a failed send (any kind: no connection,
     * TLS, timeout, a non-2xx answer), payloads are dropped without being tried (counted in
     * chunks_dropped.agent_error, not in agent_errors) until backoff_min_ms has passed; each
     * further failure in a row doubles the wait, up to backoff_max_ms; a success ends it. The
     * final flush at stop tries once more whatever the wait. backoff_min_ms <= 0: no back-off
     * (every payload is tried). */
    long backoff_min_ms;
    long backoff_max_ms;
    /* Called (from the flusher thread) after a failed send; may be NULL. For rate-limited
     * logging in the glue. */
    void (*on_error)(void *ctx, long http_status, const char *error);
    void *on_error_ctx;
    /* Other work that must leave from this thread and never from a request thread (X-Ray
     * segments over UDP, X-Ray's sampling API): called after each wake-up's drain, and once
     * more at the end of the final drain with final = 1 (then it should only send what it
     * holds, quickly). f lets it ask for early wake-ups (dd_flusher_wake). May be NULL. */
    void (*tick)(void *ctx, dd_flusher_t *f, int final);
    void *tick_ctx;
    /* Called once from the thread before its first wait (with tick_ctx); may be NULL. */
    void (*on_start)(void *ctx, dd_flusher_t *f);
    /* Child exit without a pause (issue 14). With detach set, dd_flusher_stop does not send
     * what is left itself: it ends a send in progress (interrupt, called with sender.ctx; may
     * be NULL), joins the thread, and hands what is left to a detached process (forked twice,
     * so nobody has to wait for it) that sends it within stop_deadline_ms, counting in stats
     * (shared memory) what it sent and what it could not, and exits. detach runs first in that
     * process: it closes what the process must not hold (listening sockets) and fills *sender
     * with a new sender; non-zero: nothing can be sent (the chunks are counted as dropped).
     * When fork fails, dd_flusher_stop sends in the calling thread, as without detach. */
    void (*interrupt)(void *ctx);
    int (*detach)(void *ctx, dd_sender_t *sender);
    void *detach_ctx;
} dd_flusher_conf_t;

/* Starts the thread. The flusher lives in pool p (its memory; the thread is joined by
 * dd_flusher_stop, not by the pool). Returns APR_SUCCESS or an APR error. */
int dd_flusher_start(apr_pool_t *p, const dd_flusher_conf_t *conf, dd_flusher_t **out);

/* Any thread; never blocks. Asks the flusher to drain now. */
void dd_flusher_wake(dd_flusher_t *f);

/* Sends what is left (within conf->stop_deadline_ms; in a detached process when conf->detach
 * is set) and joins the thread. Idempotent. */
void dd_flusher_stop(dd_flusher_t *f);

/* From the consumer's thread only (a tick): payloads from now on are at most max bytes
 * (what the agent says it takes); 0 or more than the configured limit keeps the configured
 * limit. */
void dd_flusher_set_max_payload(dd_flusher_t *f, size_t max);

/* Drains the queue once and sends, in the calling thread (what the thread does on each tick;
 * exposed for unit tests and benchmarks). Returns the number of chunks sent successfully. */
size_t dd_flusher_drain_once(dd_flusher_t *f, long timeout_ms);

/* The wait after `failures` failed sends in a row: 0 for none (or min_ms <= 0), else min_ms
 * doubled failures - 1 times, at most max_ms (never less than min_ms). */
long dd_flusher_backoff_ms(long min_ms, long max_ms, unsigned failures);

/* Creates a flusher without a thread (for dd_flusher_drain_once in tests/benchmarks). */
int dd_flusher_create(apr_pool_t *p, const dd_flusher_conf_t *conf, dd_flusher_t **out);

#endif
