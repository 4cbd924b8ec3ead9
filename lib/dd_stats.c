/* SPDX-License-Identifier: Apache-2.0 */
/* dd_stats.c - names for the module's own counters (CONTRACT §7), as the status pages show
 * them. The counters themselves are plain atomics in dd_stats.h. */
#include "dd_stats.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <jansson.h>

#include "dd_util.h"

const char *dd_drop_reason_name(dd_drop_reason_t r)
{
    switch (r) {
    case DD_DROP_QUEUE_FULL:
        return "queue_full";
    case DD_DROP_ENCODE_ERROR:
        return "encode_error";
    case DD_DROP_AGENT_ERROR:
        return "agent_error";
    case DD_DROP_REASON_COUNT:
        break;
    }
    return "unknown";
}

/* X-Ray (issue 17) */
const char *dd_xray_drop_reason_name(dd_xray_drop_reason_t r)
{
    switch (r) {
    case DD_XRAY_DROP_QUEUE_FULL:
        return "queue_full";
    case DD_XRAY_DROP_SEND_ERROR:
        return "send_error";
    case DD_XRAY_DROP_TOO_LARGE:
        return "too_large";
    case DD_XRAY_DROP_ENCODE_ERROR:
        return "encode_error";
    case DD_XRAY_DROP_SUBSEGMENT_LIMIT:
        return "subsegment_limit";
    case DD_XRAY_DROP_REASON_COUNT:
        break;
    }
    return "unknown";
}

/* A JSON object of counters, one member a row. */
typedef struct {
    const char *k;
    atomic_uint_fast64_t *c;
} counter_row_t;

static json_t *rows_json(const counter_row_t *rows, size_t n)
{
    json_t *x = json_object();
    int bad = !x;
    for (size_t i = 0; !bad && i < n; i++)
        bad |= json_object_set_new(x, rows[i].k, json_integer((json_int_t)dd_stats_get(rows[i].c)));
    if (bad) {
        json_decref(x);
        return NULL;
    }
    return x;
}

/* X-Ray (issue 17): its counters as the "xray" object (flat, as every object here is one level
 * deep), the drops by reason beside it as "xray_segments_dropped". */
static json_t *xray_json(dd_stats_t *s)
{
    const counter_row_t rows[] = {
        {"segments_sent", &s->xray_segments_sent},
        {"bytes_sent", &s->xray_bytes_sent},
        {"segments_too_large", &s->xray_segments_too_large},
        {"sampled", &s->xray_sampled},
        {"not_sampled", &s->xray_not_sampled},
        {"sampling_rules_fetched", &s->xray_sampling_rules_fetched},
        {"sampling_targets_fetched", &s->xray_sampling_targets_fetched},
        {"sampling_errors", &s->xray_sampling_errors},
        {"sampling_rules_skipped", &s->xray_sampling_rules_skipped},
    };
    return rows_json(rows, sizeof(rows) / sizeof(rows[0]));
}

/* Remote configuration (issue 13.3), as "remote_config". */
static json_t *rc_json(dd_stats_t *s)
{
    const counter_row_t rows[] = {
        {"polls", &s->rc_polls},
        {"poll_errors", &s->rc_poll_errors},
        {"malformed", &s->rc_malformed},
        {"configs_applied", &s->rc_configs_applied},
        {"apply_errors", &s->rc_apply_errors},
        {"traces_not_sent", &s->rc_traces_not_sent},
        {"active_sample_rate", &s->rc_active_sample_rate},
        {"active_sampling_rules", &s->rc_active_sampling_rules},
        {"active_tags", &s->rc_active_tags},
        {"active_tracing_disabled", &s->rc_active_tracing_disabled},
    };
    return rows_json(rows, sizeof(rows) / sizeof(rows[0]));
}

static json_t *xray_drops_json(dd_stats_t *s)
{
    json_t *drop = json_object();
    int bad = !drop;
    for (int i = 0; !bad && i < DD_XRAY_DROP_REASON_COUNT; i++)
        bad |= json_object_set_new(
            drop, dd_xray_drop_reason_name((dd_xray_drop_reason_t)i),
            json_integer((json_int_t)dd_stats_get(&s->xray_segments_dropped[i])));
    if (bad) {
        json_decref(drop);
        return NULL;
    }
    return drop;
}

/* Copies at most n - 1 bytes of src and terminates. */
static void copy_text(char *dst, size_t n, const char *src)
{
    size_t len = strnlen(src, n - 1);
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* The lock word of this process taking the lock now. */
static uint64_t lock_word(void)
{
    uint64_t sec = (uint64_t)(dd_mono_ms() / 1000) & 0xFFFFFFFFu;
    return ((uint64_t)(uint32_t)getpid() << 32) | (sec ? sec : 1); /* never 0: that is free */
}

/* Whether the holder in word is dead or has held the lock too long to be alive and copying. */
static int holder_gone(uint64_t word, uint64_t now)
{
    pid_t pid = (pid_t)(word >> 32);
    uint32_t age = (uint32_t)now - (uint32_t)word; /* seconds, modulo 2^32 */
    return age > DD_STATS_LOCK_STEAL_S || (kill(pid, 0) == -1 && errno == ESRCH);
}

static int lock_take(dd_stats_t *s, uint64_t *me)
{
    uint64_t held = 0;
    *me = lock_word();
    if (atomic_compare_exchange_strong_explicit(&s->last_agent_error_lock, &held, *me,
                                                memory_order_acquire, memory_order_relaxed))
        return 1;
    /* held: take it over only from a holder that is gone, and only if it is still that one */
    return holder_gone(held, *me) &&
           atomic_compare_exchange_strong_explicit(&s->last_agent_error_lock, &held, *me,
                                                   memory_order_acquire, memory_order_relaxed);
}

static void lock_give(dd_stats_t *s, uint64_t me)
{
    /* a CAS, not a store: if it was taken over meanwhile, the new holder keeps it */
    atomic_compare_exchange_strong_explicit(&s->last_agent_error_lock, &me, 0, memory_order_release,
                                            memory_order_relaxed);
}

void dd_stats_set_error_text(dd_stats_t *s, const char *text)
{
    uint64_t me;
    if (!lock_take(s, &me))
        return;
    copy_text(s->last_agent_error, sizeof(s->last_agent_error), text ? text : "");
    lock_give(s, me);
}

void dd_stats_get_error_text(dd_stats_t *s, char *out, size_t n)
{
    uint64_t me;
    out[0] = '\0';
    if (!lock_take(s, &me))
        return;
    copy_text(out, n, s->last_agent_error);
    lock_give(s, me);
}

static int put_u64(json_t *obj, const char *key, atomic_uint_fast64_t *c)
{
    /* json_int_t is signed 64-bit: counters will not pass 2^63 in this universe. */
    return json_object_set_new(obj, key, json_integer((json_int_t)dd_stats_get(c)));
}

char *dd_stats_to_json(dd_stats_t *s)
{
    json_t *o = json_object(), *rej = json_object(), *drop = json_object(), *last = json_object();
    char text[sizeof(s->last_agent_error)];
    char *out = NULL;
    int bad = !o || !rej || !drop || !last;

    for (int i = 0; !bad && i < DD_GW_STATUS_COUNT; i++) {
        if (i == DD_GW_OK || i == DD_GW_ABSENT)
            continue; /* not rejections */
        bad |= put_u64(rej, dd_gateway_status_name((dd_gw_status_t)i), &s->gateway_rejected[i]);
    }
    for (int i = 0; !bad && i < DD_DROP_REASON_COUNT; i++)
        bad |= put_u64(drop, dd_drop_reason_name((dd_drop_reason_t)i), &s->chunks_dropped[i]);
    dd_stats_get_error_text(s, text, sizeof(text));
    if (!bad) {
        bad |= put_u64(o, "requests_traced", &s->requests_traced);
        bad |= put_u64(o, "inferred_spans", &s->inferred_spans);
        bad |= json_object_set(o, "gateway_headers_rejected", rej);
        bad |= put_u64(o, "chunks_queued", &s->chunks_queued);
        bad |= json_object_set(o, "chunks_dropped", drop);
        bad |= put_u64(o, "chunks_sent", &s->chunks_sent);
        bad |= put_u64(o, "payloads_sent", &s->payloads_sent);
        bad |= put_u64(o, "bytes_sent", &s->bytes_sent);
        bad |= put_u64(o, "agent_errors", &s->agent_errors);
        bad |= put_u64(o, "agent_rates_rejected", &s->agent_rates_rejected);
        bad |= put_u64(o, "agent_info_fetched", &s->agent_info_fetched);
        bad |= put_u64(o, "agent_info_errors", &s->agent_info_errors);
        bad |= put_u64(o, "agent_client_drop_p0s", &s->agent_client_drop_p0s);
        bad |= put_u64(o, "agent_max_request_bytes", &s->agent_max_request_bytes);
        bad |= put_u64(o, "client_stats_active", &s->cstats_active);
        bad |= put_u64(o, "client_stats_payloads_sent", &s->cstats_payloads_sent);
        bad |= put_u64(o, "client_stats_payloads_failed", &s->cstats_payloads_failed);
        bad |= put_u64(o, "client_stats_buckets", &s->cstats_buckets);
        bad |= put_u64(o, "client_stats_keys_dropped", &s->cstats_keys_dropped);
        bad |= put_u64(o, "client_stats_spans_dropped", &s->cstats_spans_dropped);
        bad |= put_u64(o, "p0_traces_dropped", &s->p0_traces_dropped);
        bad |= put_u64(o, "p0_spans_dropped", &s->p0_spans_dropped);
        bad |= put_u64(o, "exit_flushes_detached", &s->exit_flushes_detached);
        bad |= put_u64(o, "exit_chunks_handed_off", &s->exit_chunks_handed_off);
        bad |= put_u64(o, "baggage_malformed", &s->baggage_malformed);
        bad |= put_u64(o, "baggage_truncated", &s->baggage_truncated);
        bad |= json_object_set_new(last, "time",
                                   json_integer((json_int_t)atomic_load_explicit(
                                       &s->last_agent_error_time, memory_order_relaxed)));
        bad |= json_object_set_new(
            last, "http_status",
            json_integer(atomic_load_explicit(&s->last_agent_error_status, memory_order_relaxed)));
        json_t *msg = json_string(text); /* NULL for invalid UTF-8: say nothing then */
        bad |= json_object_set_new(last, "message", msg ? msg : json_string(""));
        bad |= json_object_set(o, "last_agent_error", last);
        bad |= json_object_set_new(o, "xray", xray_json(s)); /* X-Ray (issue 17) */
        bad |= json_object_set_new(o, "xray_segments_dropped", xray_drops_json(s));
        bad |= json_object_set_new(o, "remote_config", rc_json(s)); /* issue 13.3 */
    }
    if (!bad)
        out = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(rej);
    json_decref(drop);
    json_decref(last);
    json_decref(o);
    return out;
}
