/* SPDX-License-Identifier: Apache-2.0 */
/* test_flusher.c - unit tests for lib/dd_flusher.c with a fake sender: payload framing
 * (checked with msgpack-c, an independent decoder), splitting under max_payload_bytes,
 * oversize and failed chunks dropped and counted, wake-ups, the interval, stop (flushing the
 * rest, bounded by its deadline, idempotent), agent rates from a response, concurrent
 * producers waking the thread, and the exit hand-off to a detached process (issue 14). */
#include <msgpack.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "dd_flusher.h"
#include "dd_queue.h"
#include "dd_rates.h"
#include "dd_stats.h"
#include "unit.h"

#define MAX_CALLS 4096
#define MAX_IDS 200000

static apr_pool_t *pool;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* --- chunks: [id, "padding"] as msgpack, exactly len bytes (len >= 8) ---------------------- */

static char *make_chunk(uint32_t id, size_t len)
{
    unsigned char *c = malloc(len);
    size_t pad, off;

    c[0] = 0x92;
    c[1] = 0xce;
    c[2] = (unsigned char)(id >> 24);
    c[3] = (unsigned char)(id >> 16);
    c[4] = (unsigned char)(id >> 8);
    c[5] = (unsigned char)id;
    if (len - 8 <= 255) {
        pad = len - 8;
        c[6] = 0xd9;
        c[7] = (unsigned char)pad;
        off = 8;
    } else if (len - 9 <= 0xFFFF) {
        pad = len - 9;
        c[6] = 0xda;
        c[7] = (unsigned char)(pad >> 8);
        c[8] = (unsigned char)pad;
        off = 9;
    } else {
        pad = len - 11;
        c[6] = 0xdb;
        c[7] = (unsigned char)(pad >> 24);
        c[8] = (unsigned char)(pad >> 16);
        c[9] = (unsigned char)(pad >> 8);
        c[10] = (unsigned char)pad;
        off = 11;
    }
    memset(c + off, 'a' + (int)(id % 26), pad);
    return (char *)c;
}

/* --- the fake sender --------------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    /* behaviour */
    int fail;
    long fail_status;
    const char *fail_error;
    long sleep_ms; /* sleeps min(sleep_ms, timeout); fails as a timeout when cut short */
    const char *body;
    /* what it saw */
    int calls;
    size_t ntraces[MAX_CALLS];
    size_t lens[MAX_CALLS];
    long timeouts[MAX_CALLS];
    unsigned char first_bytes[MAX_CALLS][3];
    long long first_call_ms;
    int framing_errors;
    size_t nids;
    uint32_t ids[MAX_IDS]; /* chunk ids in the order they were delivered, successful or not */
} fake_t;

static fake_t fake;
static atomic_int fake_interrupted; /* set by fake_interrupt: a sleeping send fails at once */

static void fake_reset(void)
{
    pthread_mutex_destroy(&fake.mu);
    memset(&fake, 0, sizeof(fake));
    pthread_mutex_init(&fake.mu, NULL);
}

static int fake_calls(void)
{
    pthread_mutex_lock(&fake.mu);
    int n = fake.calls;
    pthread_mutex_unlock(&fake.mu);
    return n;
}

/* Decodes the payload with msgpack-c: one array of ntraces chunks, nothing after it. */
static void fake_decode(const char *payload, size_t len, size_t ntraces)
{
    msgpack_unpacked u;
    size_t off = 0;

    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, payload, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
        u.data.type != MSGPACK_OBJECT_ARRAY || u.data.via.array.size != ntraces) {
        fake.framing_errors++;
    } else {
        for (uint32_t i = 0; i < u.data.via.array.size; i++) {
            msgpack_object *c = &u.data.via.array.ptr[i];
            if (c->type != MSGPACK_OBJECT_ARRAY || c->via.array.size != 2 ||
                c->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
                fake.framing_errors++;
            } else if (fake.nids < MAX_IDS) {
                fake.ids[fake.nids++] = (uint32_t)c->via.array.ptr[0].via.u64;
            }
        }
    }
    msgpack_unpacked_destroy(&u);
}

static int fake_send(void *ctx, const char *payload, size_t len, size_t ntraces, long timeout_ms,
                     long *http_status, const char **error, const char **body, size_t *body_len)
{
    long slept = 0;
    (void)ctx;

    pthread_mutex_lock(&fake.mu);
    if (fake.calls == 0) {
        fake.first_call_ms = now_ms();
    }
    if (fake.calls < MAX_CALLS) {
        fake.ntraces[fake.calls] = ntraces;
        fake.lens[fake.calls] = len;
        fake.timeouts[fake.calls] = timeout_ms;
        memcpy(fake.first_bytes[fake.calls], payload, len < 3 ? len : 3);
    }
    fake.calls++;
    fake_decode(payload, len, ntraces);
    long want_sleep = fake.sleep_ms;
    pthread_mutex_unlock(&fake.mu);

    if (want_sleep > 0) {
        long until = timeout_ms > 0 && timeout_ms < want_sleep ? timeout_ms : want_sleep;
        for (slept = 0; slept < until && !atomic_load(&fake_interrupted); slept++) {
            sleep_ms(1);
        }
        if (slept < want_sleep) {
            *http_status = 0;
            *error = "timeout";
            return atomic_load(&fake_interrupted) ? DD_SEND_UNDELIVERED : -1;
        }
    }
    if (fake.fail) {
        *http_status = fake.fail_status;
        *error = fake.fail_error;
        return -1;
    }
    *http_status = 200;
    if (fake.body != NULL) {
        *body = fake.body;
        *body_len = strlen(fake.body);
    }
    return 0;
}

static int on_error_calls;
static long on_error_status;
static char on_error_msg[64];

static void on_error(void *ctx, long status, const char *error)
{
    (void)ctx;
    on_error_calls++;
    on_error_status = status;
    snprintf(on_error_msg, sizeof(on_error_msg), "%s", error ? error : "(null)");
}

/* --- set-up -------------------------------------------------------------------------------- */

typedef struct {
    dd_queue_t *q;
    dd_stats_t stats;
    dd_flusher_conf_t conf;
} rig_t;

static void rig_init(rig_t *r, size_t max_items, size_t max_payload)
{
    fake_reset();
    on_error_calls = 0;
    memset(r, 0, sizeof(*r));
    r->q = dd_queue_create(max_items, 1 << 24);
    r->conf.queue = r->q;
    r->conf.sender.send = fake_send;
    r->conf.stats = &r->stats;
    r->conf.interval_ms = 60000;
    r->conf.max_payload_bytes = max_payload;
    r->conf.send_timeout_ms = 2000;
    r->conf.stop_deadline_ms = 1000;
    r->conf.on_error = on_error;
}

static void push(rig_t *r, uint32_t id, size_t len)
{
    char *c = make_chunk(id, len);
    if (dd_queue_push(r->q, c, len) != DD_QUEUE_OK) {
        free(c);
        CHECK(!"push failed");
    }
}

static int ids_are(const uint32_t *want, size_t n)
{
    return fake.nids == n && memcmp(fake.ids, want, n * sizeof(*want)) == 0;
}

/* --- tests --------------------------------------------------------------------------------- */

static void test_framing(void)
{
    rig_t r;
    dd_flusher_t *f;
    const uint32_t want3[] = {1, 2, 3};
    size_t sent;

    rig_init(&r, 100, 1 << 20);
    CHECK(dd_flusher_create(pool, &r.conf, &f) == APR_SUCCESS);
    CHECK_U64(dd_flusher_drain_once(f, 100), 0); /* empty queue: nothing sent at all */
    CHECK(fake.calls == 0);

    push(&r, 1, 10);
    push(&r, 2, 20);
    push(&r, 3, 300);
    sent = dd_flusher_drain_once(f, 100);
    CHECK_U64(sent, 3);
    CHECK(fake.calls == 1);
    CHECK_U64(fake.ntraces[0], 3);
    CHECK_U64(fake.lens[0], 1 + 10 + 20 + 300);
    CHECK_U64(fake.first_bytes[0][0], 0x93);
    CHECK_U64(fake.timeouts[0], 100);
    CHECK(fake.framing_errors == 0);
    CHECK(ids_are(want3, 3));
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 3);
    CHECK_U64(dd_stats_get(&r.stats.payloads_sent), 1);
    CHECK_U64(dd_stats_get(&r.stats.bytes_sent), 331);
    CHECK_U64(dd_queue_count(r.q), 0);

    /* 20 chunks: array16 header. */
    for (uint32_t i = 0; i < 20; i++) {
        push(&r, 100 + i, 8 + i);
    }
    CHECK_U64(dd_flusher_drain_once(f, 100), 20);
    CHECK(fake.calls == 2);
    CHECK_U64(fake.ntraces[1], 20);
    CHECK_U64(fake.first_bytes[1][0], 0xdc);
    CHECK_U64(fake.first_bytes[1][1], 0);
    CHECK_U64(fake.first_bytes[1][2], 20);
    CHECK_U64(fake.lens[1], 3 + 20 * 8 + 190);
    CHECK(fake.framing_errors == 0);
    CHECK_U64(fake.nids, 23);
    CHECK_U64(dd_stats_get(&r.stats.payloads_sent), 2);
    CHECK_U64(dd_stats_get(&r.stats.bytes_sent), 331 + 3 + 160 + 190);
    CHECK_U64(dd_stats_get(&r.stats.chunks_dropped[DD_DROP_ENCODE_ERROR]), 0);

    dd_flusher_stop(f);
    dd_flusher_stop(f); /* idempotent */
    dd_queue_destroy(r.q);
}

/* A huge max_payload_bytes must not mean a huge buffer: it grows with what is sent. */
static void test_huge_payload_limit(void)
{
    rig_t r;
    dd_flusher_t *f;

    rig_init(&r, 100, (size_t)1 << 46);
    CHECK(dd_flusher_create(pool, &r.conf, &f) == APR_SUCCESS);
    push(&r, 7, 100000); /* past the first buffer size: it has to grow */
    push(&r, 8, 10);
    CHECK_U64(dd_flusher_drain_once(f, 100), 2);
    CHECK_U64(fake.lens[0], 1 + 100000 + 10);
    CHECK(fake.framing_errors == 0);
    dd_flusher_stop(f);
    dd_queue_destroy(r.q);
}

/* Sends n chunks of len bytes with max_payload and checks the payload sizes (in chunks). */
static void split_case(size_t n, size_t len, size_t max_payload, const size_t *want, int nwant)
{
    rig_t r;
    dd_flusher_t *f;
    uint32_t ids[64];

    rig_init(&r, 100, max_payload);
    CHECK(dd_flusher_create(pool, &r.conf, &f) == APR_SUCCESS);
    for (uint32_t i = 0; i < n; i++) {
        ids[i] = i;
        push(&r, i, len);
    }
    CHECK_U64(dd_flusher_drain_once(f, 100), n);
    CHECK_U64(fake.calls, nwant);
    for (int i = 0; i < nwant && i < fake.calls; i++) {
        CHECK_U64(fake.ntraces[i], want[i]);
        CHECK(fake.lens[i] <= max_payload);
    }
    CHECK(fake.framing_errors == 0);
    CHECK(ids_are(ids, n)); /* order kept across payloads */
    CHECK_U64(dd_stats_get(&r.stats.payloads_sent), nwant);
    dd_flusher_stop(f);
    dd_queue_destroy(r.q);
}

static void test_split(void)
{
    const size_t a[] = {3, 3, 3, 1}, b[] = {2, 2, 2, 2, 2}, c[] = {15, 1}, d[] = {16};

    split_case(10, 100, 301, a, 4); /* 1 + 3 x 100 = 301: exactly the limit is allowed */
    split_case(10, 100, 300, b, 5);
    /* The header grows from 1 to 3 bytes at 16 chunks: 16 x 8 + 3 = 131. */
    split_case(16, 8, 130, c, 2);
    split_case(16, 8, 131, d, 1);
}

static void test_oversize(void)
{
    rig_t r;
    dd_flusher_t *f;
    const uint32_t want[] = {0, 2, 3};

    rig_init(&r, 100, 301);
    CHECK(dd_flusher_create(pool, &r.conf, &f) == APR_SUCCESS);
    push(&r, 0, 100);
    push(&r, 1, 400); /* larger than any payload */
    push(&r, 2, 100);
    push(&r, 3, 300); /* 1 + 300 = 301: fits alone */
    push(&r, 4, 301); /* 1 + 301 = 302: never fits */
    CHECK_U64(dd_flusher_drain_once(f, 100), 3);
    CHECK_U64(dd_stats_get(&r.stats.chunks_dropped[DD_DROP_ENCODE_ERROR]), 2);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 3);
    CHECK(fake.calls == 2);
    CHECK_U64(fake.ntraces[0], 2);
    CHECK_U64(fake.ntraces[1], 1);
    CHECK(ids_are(want, 3));
    CHECK(fake.framing_errors == 0);
    CHECK_U64(dd_queue_count(r.q), 0);
    dd_flusher_stop(f);
    dd_queue_destroy(r.q);
}

static void test_send_failure(void)
{
    rig_t r;
    dd_flusher_t *f;
    time_t t0 = time(NULL);

    rig_init(&r, 100, 1 + 3 * 50);
    CHECK(dd_flusher_create(pool, &r.conf, &f) == APR_SUCCESS);
    fake.fail = 1;
    fake.fail_status = 503;
    fake.fail_error = "agent says no";
    for (uint32_t i = 0; i < 5; i++) {
        push(&r, i, 50);
    }
    CHECK_U64(dd_flusher_drain_once(f, 100), 0);
    CHECK(fake.calls == 2); /* 3 + 2, no retries */
    CHECK_U64(dd_stats_get(&r.stats.agent_errors), 2);
    CHECK_U64(dd_stats_get(&r.stats.chunks_dropped[DD_DROP_AGENT_ERROR]), 5);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 0);
    CHECK_U64(dd_stats_get(&r.stats.payloads_sent), 0);
    CHECK_U64(dd_stats_get(&r.stats.bytes_sent), 0);
    CHECK(atomic_load(&r.stats.last_agent_error_status) == 503);
    CHECK(atomic_load(&r.stats.last_agent_error_time) >= t0);
    CHECK(atomic_load(&r.stats.last_agent_error_time) <= time(NULL));
    CHECK(on_error_calls == 2);
    CHECK(on_error_status == 503);
    CHECK_STR(on_error_msg, "agent says no");
    CHECK_U64(dd_queue_count(r.q), 0);

    /* The agent is back: new chunks go out, the dropped ones are not retried. */
    fake.fail = 0;
    push(&r, 9, 50);
    CHECK_U64(dd_flusher_drain_once(f, 100), 1);
    CHECK(fake.calls == 3);
    CHECK_U64(fake.ntraces[2], 1);
    CHECK_U64(fake.ids[fake.nids - 1], 9);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 1);
    CHECK_U64(dd_stats_get(&r.stats.agent_errors), 2);
    dd_flusher_stop(f);
    dd_queue_destroy(r.q);
}

static void test_rates(void)
{
    rig_t r;
    dd_flusher_t *f;
    dd_rates_t *rates = dd_rates_create();
    double rate = -1;

    rig_init(&r, 100, 1 << 20);
    r.conf.rates = rates;
    fake.body = "{\"rate_by_service\":{\"service:web,env:prod\":0.25,\"service:,env:\":0.75,"
                "\"service:bad,env:\":\"x\",\"service:big,env:\":1.5}}";
    CHECK(dd_flusher_create(pool, &r.conf, &f) == APR_SUCCESS);
    CHECK(dd_rates_lookup(rates, "web", "prod", &rate) == 0);
    push(&r, 1, 10);
    CHECK_U64(dd_flusher_drain_once(f, 100), 1);
    CHECK(dd_rates_lookup(rates, "web", "prod", &rate) == 1 && rate == 0.25);
    CHECK(dd_rates_lookup(rates, "other", NULL, &rate) == 1 && rate == 0.75);
    CHECK_U64(dd_stats_get(&r.stats.agent_rates_rejected), 2);

    /* A garbage answer is ignored (the rates stay) and counted. */
    fake.body = "<html>not json";
    push(&r, 3, 10);
    CHECK_U64(dd_flusher_drain_once(f, 100), 1);
    CHECK(dd_rates_lookup(rates, "web", "prod", &rate) == 1 && rate == 0.25);
    CHECK_U64(dd_stats_get(&r.stats.agent_rates_rejected), 3);

    /* A failed send's body is not read. */
    fake.fail = 1;
    fake.body = "{\"rate_by_service\":{\"service:web,env:prod\":0.5}}";
    push(&r, 2, 10);
    CHECK_U64(dd_flusher_drain_once(f, 100), 0);
    CHECK(dd_rates_lookup(rates, "web", "prod", &rate) == 1 && rate == 0.25);
    dd_flusher_stop(f);
    dd_queue_destroy(r.q);
    dd_rates_destroy(rates);
}

/* Issue 18.6: every failure backs off. Within the wait, payloads are dropped (counted as
 * agent_error, not as agent_errors) without being tried; each failure in a row doubles the
 * wait up to the maximum; a success ends it; a stop tries once more. */
static void test_backoff_delays(void)
{
    CHECK(dd_flusher_backoff_ms(250, 5000, 0) == 0);
    CHECK(dd_flusher_backoff_ms(250, 5000, 1) == 250);
    CHECK(dd_flusher_backoff_ms(250, 5000, 2) == 500);
    CHECK(dd_flusher_backoff_ms(250, 5000, 3) == 1000);
    CHECK(dd_flusher_backoff_ms(250, 5000, 5) == 4000);
    CHECK(dd_flusher_backoff_ms(250, 5000, 6) == 5000);
    CHECK(dd_flusher_backoff_ms(250, 5000, 4000000000u) == 5000);
    CHECK(dd_flusher_backoff_ms(0, 5000, 3) == 0); /* no back-off */
    CHECK(dd_flusher_backoff_ms(-1, 5000, 3) == 0);
    CHECK(dd_flusher_backoff_ms(300, 100, 1) == 300); /* max below min: min */
    CHECK(dd_flusher_backoff_ms(300, 100, 9) == 300);
    CHECK(dd_flusher_backoff_ms(1L << 40, 1L << 41, 60) == 1L << 41); /* no overflow */
}

static void test_backoff(void)
{
    rig_t r;
    dd_flusher_t *f;
    long long t0;
    uint64_t inside = 0;

    rig_init(&r, 100, 1 + 3 * 50); /* 3 chunks a payload */
    r.conf.backoff_min_ms = 200;
    r.conf.backoff_max_ms = 400;
    CHECK(dd_flusher_create(pool, &r.conf, &f) == APR_SUCCESS);
    fake.fail = 1;
    fake.fail_status = 0;
    fake.fail_error = "SSL certificate problem: self-signed certificate";

    /* The first payload fails: the second of the same drain is not tried. */
    for (uint32_t i = 0; i < 5; i++) {
        push(&r, i, 50);
    }
    t0 = now_ms();
    CHECK_U64(dd_flusher_drain_once(f, 100), 0);
    CHECK(fake.calls == 1);
    CHECK_U64(dd_stats_get(&r.stats.agent_errors), 1);
    CHECK_U64(dd_stats_get(&r.stats.chunks_dropped[DD_DROP_AGENT_ERROR]), 5);
    CHECK(on_error_calls == 1);

    /* Flushes within the 200 ms wait drop without trying. */
    for (int k = 0; k < 5 && now_ms() - t0 < 150; k++) { /* margin: 50 ms */
        push(&r, 10 + (uint32_t)k, 50);
        inside++;
        CHECK_U64(dd_flusher_drain_once(f, 100), 0);
        sleep_ms(20);
    }
    CHECK(fake.calls == 1);
    CHECK_U64(dd_stats_get(&r.stats.agent_errors), 1);
    CHECK_U64(dd_queue_count(r.q), 0);

    /* After it: one try, which fails; the wait doubles to 400 ms (the maximum). */
    while (now_ms() - t0 < 250) {
        sleep_ms(5);
    }
    push(&r, 20, 50);
    t0 = now_ms();
    CHECK_U64(dd_flusher_drain_once(f, 100), 0);
    CHECK(fake.calls == 2);
    sleep_ms(250);
    push(&r, 21, 50);
    CHECK_U64(dd_flusher_drain_once(f, 100), 0);
    CHECK(fake.calls == 2); /* 250 ms after the second failure: still waiting */
    sleep_ms(200);
    push(&r, 22, 50);
    CHECK_U64(dd_flusher_drain_once(f, 100), 0);
    CHECK(fake.calls == 3); /* past 400 ms */
    CHECK_U64(dd_stats_get(&r.stats.agent_errors), 3);

    /* The agent is back: after the (maximum) wait, a success ends the back-off. */
    fake.fail = 0;
    sleep_ms(450);
    push(&r, 30, 50);
    CHECK_U64(dd_flusher_drain_once(f, 100), 1);
    CHECK(fake.calls == 4);
    push(&r, 31, 50);
    CHECK_U64(dd_flusher_drain_once(f, 100), 1);
    CHECK(fake.calls == 5);

    /* A new failure starts again from the minimum wait. */
    fake.fail = 1;
    push(&r, 40, 50);
    CHECK_U64(dd_flusher_drain_once(f, 100), 0);
    CHECK(fake.calls == 6);
    sleep_ms(250);
    push(&r, 41, 50);
    CHECK_U64(dd_flusher_drain_once(f, 100), 0);
    CHECK(fake.calls == 7);

    /* A stop within the wait tries once more (the agent answers now). */
    fake.fail = 0;
    push(&r, 50, 50);
    dd_flusher_stop(f);
    CHECK(fake.calls == 8);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 3);
    CHECK_U64(dd_stats_get(&r.stats.agent_errors), 5);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent) +
                  dd_stats_get(&r.stats.chunks_dropped[DD_DROP_AGENT_ERROR]),
              5 + inside + 3 + 2 + 2 + 1); /* every chunk sent or dropped, none kept */
    CHECK_U64(dd_queue_count(r.q), 0);
    dd_queue_destroy(r.q);
}

static int wait_for_calls(int n, long max_ms)
{
    long long until = now_ms() + max_ms;
    while (fake_calls() < n && now_ms() < until) {
        sleep_ms(5);
    }
    return fake_calls() >= n;
}

static void test_wake(void)
{
    rig_t r;
    dd_flusher_t *f;
    long long t0;

    rig_init(&r, 100, 1 << 20);
    r.conf.interval_ms = 60000;
    CHECK(dd_flusher_start(pool, &r.conf, &f) == APR_SUCCESS);
    push(&r, 1, 10);
    sleep_ms(150);
    CHECK(fake_calls() == 0); /* the interval is far away: nothing happens by itself */
    t0 = now_ms();
    dd_flusher_wake(f);
    CHECK(wait_for_calls(1, 3000));
    CHECK(fake.first_call_ms - t0 < 1000);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 1);

    /* A second wake-up works too (the pending flag was reset). */
    push(&r, 2, 10);
    dd_flusher_wake(f);
    CHECK(wait_for_calls(2, 3000));
    /* Waking many times in a row never blocks (at most one byte per wake-up is written). */
    t0 = now_ms();
    for (int i = 0; i < 200000; i++) {
        dd_flusher_wake(f);
    }
    CHECK(now_ms() - t0 < 2000);
    dd_flusher_stop(f);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 2);
    dd_flusher_wake(f); /* after stop: harmless */
    dd_queue_destroy(r.q);
}

static void test_interval(void)
{
    rig_t r;
    dd_flusher_t *f;
    long long t0;

    rig_init(&r, 100, 1 << 20);
    r.conf.interval_ms = 50;
    CHECK(dd_flusher_start(pool, &r.conf, &f) == APR_SUCCESS);
    t0 = now_ms();
    push(&r, 1, 10);
    CHECK(wait_for_calls(1, 3000));
    CHECK(fake.first_call_ms - t0 < 1000);
    push(&r, 2, 10);
    CHECK(wait_for_calls(2, 3000)); /* and again on the next tick */
    dd_flusher_stop(f);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 2);
    dd_queue_destroy(r.q);
}

static void test_stop_flushes(void)
{
    rig_t r;
    dd_flusher_t *f;
    const uint32_t want[] = {0, 1, 2, 3, 4, 5, 6};
    long long t0;

    rig_init(&r, 100, 1 << 20);
    CHECK(dd_flusher_start(pool, &r.conf, &f) == APR_SUCCESS);
    for (uint32_t i = 0; i < 7; i++) {
        push(&r, i, 20);
    }
    t0 = now_ms();
    dd_flusher_stop(f);
    CHECK(now_ms() - t0 < 1000);
    CHECK(fake.calls == 1);
    CHECK(ids_are(want, 7));
    CHECK(fake.timeouts[0] <= 1000 && fake.timeouts[0] > 0); /* cut to the stop deadline */
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 7);
    CHECK_U64(dd_queue_count(r.q), 0);
    dd_flusher_stop(f);
    CHECK(fake.calls == 1);
    dd_queue_destroy(r.q);
}

/* Each chunk its own payload, an agent that hangs: the first send times out at the deadline
 * and the rest is dropped without trying. */
static void test_stop_deadline(void)
{
    rig_t r;
    dd_flusher_t *f;
    long long t0, took;

    rig_init(&r, 100, 1 + 100);
    r.conf.send_timeout_ms = 5000;
    r.conf.stop_deadline_ms = 300;
    fake.sleep_ms = 3000;
    CHECK(dd_flusher_start(pool, &r.conf, &f) == APR_SUCCESS);
    for (uint32_t i = 0; i < 10; i++) {
        push(&r, i, 100);
    }
    t0 = now_ms();
    dd_flusher_stop(f);
    took = now_ms() - t0;
    printf("stop with a hung agent: %lld ms (deadline 300 ms)\n", took);
    CHECK(took >= 250);
    CHECK(took < 300 + 500);
    CHECK(fake.calls == 1);
    CHECK(fake.timeouts[0] <= 300);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 0);
    CHECK_U64(dd_stats_get(&r.stats.agent_errors), 1);
    CHECK_U64(dd_stats_get(&r.stats.chunks_dropped[DD_DROP_AGENT_ERROR]), 10);
    CHECK_U64(dd_queue_count(r.q), 0);
    dd_queue_destroy(r.q);
}

/* --- the exit hand-off (issue 14): a hung agent holds no stop ------------------------------ */

static void fake_interrupt(void *ctx)
{
    (void)ctx;
    atomic_store(&fake_interrupted, 1);
}

static int detach_ok(void *ctx, dd_sender_t *sender)
{
    (void)ctx;
    /* in the detached process: an agent that answers now */
    atomic_store(&fake_interrupted, 0);
    fake.sleep_ms = 0;
    sender->send = fake_send;
    return 0;
}

static int detach_fails(void *ctx, dd_sender_t *sender)
{
    (void)ctx;
    (void)sender;
    return -1;
}

static int wait_u64(atomic_uint_fast64_t *c, uint64_t want, long max_ms)
{
    long long until = now_ms() + max_ms;
    while (dd_stats_get(c) < want && now_ms() < until) {
        sleep_ms(5);
    }
    return dd_stats_get(c) == want;
}

/* The thread is mid-send to a hung agent when the child exits: dd_flusher_stop interrupts
 * that send and returns at once; a detached process sends the interrupted payload and the rest
 * of the queue (counted in shared memory), or counts them as dropped when it cannot. */
static void handoff_case(int (*detach)(void *, dd_sender_t *), int expect_sent)
{
    rig_t r;
    dd_flusher_t *f;
    long long t0, took;
    dd_stats_t *shm = mmap(NULL, sizeof(*shm), PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);

    CHECK(shm != MAP_FAILED);
    memset(shm, 0, sizeof(*shm));
    rig_init(&r, 100, 1 + 3 * 100); /* 3 chunks a payload */
    r.conf.stats = shm;
    r.conf.send_timeout_ms = 5000;
    r.conf.stop_deadline_ms = 2000;
    r.conf.interrupt = fake_interrupt;
    r.conf.detach = detach;
    atomic_store(&fake_interrupted, 0);
    fake.sleep_ms = 60000; /* hung */
    CHECK(dd_flusher_start(pool, &r.conf, &f) == APR_SUCCESS);
    for (uint32_t i = 0; i < 7; i++) {
        push(&r, i, 100);
    }
    dd_flusher_wake(f);
    CHECK(wait_for_calls(1, 3000)); /* the thread is in its first send, which hangs */
    t0 = now_ms();
    dd_flusher_stop(f);
    took = now_ms() - t0;
    printf("stop mid-send to a hung agent, with a hand-off: %lld ms\n", took);
    CHECK(took < 500); /* without the hand-off: the 2000 ms deadline */
    CHECK_U64(dd_stats_get(&shm->exit_flushes_detached), 1);
    CHECK_U64(dd_stats_get(&shm->exit_chunks_handed_off), 7);
    CHECK_U64(dd_stats_get(&shm->agent_errors), 0); /* the interrupted send is no failure */
    if (expect_sent) {
        CHECK(wait_u64(&shm->chunks_sent, 7, 5000));
        CHECK_U64(dd_stats_get(&shm->chunks_dropped[DD_DROP_AGENT_ERROR]), 0);
    } else {
        CHECK(wait_u64(&shm->chunks_dropped[DD_DROP_AGENT_ERROR], 7, 5000));
        CHECK_U64(dd_stats_get(&shm->chunks_sent), 0);
    }
    dd_flusher_stop(f); /* idempotent: no second hand-off */
    CHECK_U64(dd_stats_get(&shm->exit_flushes_detached), 1);
    dd_queue_destroy(r.q);
    munmap(shm, sizeof(*shm));
}

static void test_stop_hand_off(void)
{
    handoff_case(detach_ok, 1);
    handoff_case(detach_fails, 0);
}

/* Producers that keep pushing during stop cannot keep the final flush going past its
 * deadline. */
typedef struct {
    rig_t *r;
    atomic_bool *halt;
} pusher_t;

static void *pusher(void *p)
{
    pusher_t *a = p;
    long long until = now_ms() + 5000; /* a stop that ignores its deadline fails, not hangs */
    for (uint32_t i = 0; !atomic_load(a->halt) && now_ms() < until; i++) {
        char *c = make_chunk(i, 16);
        if (dd_queue_push(a->r->q, c, 16) != DD_QUEUE_OK) {
            free(c);
            sched_yield();
        }
    }
    return NULL;
}

static void test_stop_while_pushing(void)
{
    rig_t r;
    dd_flusher_t *f;
    pthread_t t[3];
    atomic_bool halt = false;
    pusher_t a = {&r, &halt};
    long long t0, took;

    rig_init(&r, 64, 1 + 16);
    r.conf.stop_deadline_ms = 200;
    fake.sleep_ms = 50; /* a slow agent */
    CHECK(dd_flusher_start(pool, &r.conf, &f) == APR_SUCCESS);
    for (int i = 0; i < 3; i++) {
        pthread_create(&t[i], NULL, pusher, &a);
    }
    sleep_ms(20);
    t0 = now_ms();
    dd_flusher_stop(f);
    took = now_ms() - t0;
    atomic_store(&halt, true);
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
    }
    printf("stop while producers push: %lld ms (deadline 200 ms)\n", took);
    CHECK(took < 200 + 500);
    CHECK(dd_stats_get(&r.stats.chunks_dropped[DD_DROP_AGENT_ERROR]) > 0);
    dd_queue_destroy(r.q); /* frees what was pushed after the final flush */
}

static void test_no_thread_stop(void)
{
    rig_t r;
    dd_flusher_t *f;

    rig_init(&r, 100, 1 << 20);
    CHECK(dd_flusher_create(pool, &r.conf, &f) == APR_SUCCESS);
    push(&r, 1, 10);
    push(&r, 2, 10);
    dd_flusher_stop(f); /* no thread: the caller sends what is left */
    CHECK(fake.calls == 1);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 2);
    dd_queue_destroy(r.q);
}

/* Destroying the pool without dd_flusher_stop still flushes and joins (pre-cleanup). */
static void test_pool_cleanup(void)
{
    rig_t r;
    dd_flusher_t *f;
    apr_pool_t *sub;

    rig_init(&r, 100, 1 << 20);
    apr_pool_create(&sub, pool);
    CHECK(dd_flusher_start(sub, &r.conf, &f) == APR_SUCCESS);
    push(&r, 1, 10);
    apr_pool_destroy(sub);
    CHECK(fake.calls == 1);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), 1);
    dd_queue_destroy(r.q);
}

static void test_bad_conf(void)
{
    rig_t r;
    dd_flusher_t *f = (dd_flusher_t *)&r; /* must be overwritten */

    rig_init(&r, 10, 1000);
    r.conf.queue = NULL;
    CHECK(dd_flusher_start(pool, &r.conf, &f) != APR_SUCCESS);
    CHECK(f == NULL);
    r.conf.queue = r.q;
    r.conf.interval_ms = 0;
    CHECK(dd_flusher_start(pool, &r.conf, &f) != APR_SUCCESS);
    r.conf.interval_ms = 10;
    r.conf.sender.send = NULL;
    CHECK(dd_flusher_create(pool, &r.conf, &f) != APR_SUCCESS);
    r.conf.sender.send = fake_send;
    r.conf.stats = NULL;
    CHECK(dd_flusher_start(pool, &r.conf, &f) != APR_SUCCESS);
    /* A failed start leaves NULL, and NULL is safe everywhere. */
    dd_flusher_wake(f);
    dd_flusher_stop(f);
    dd_queue_destroy(r.q);
}

/* Producers push and wake concurrently while the thread drains: every chunk is either sent
 * exactly once or counted as refused by the queue. */
#define PRODUCERS 4
#define PER_PRODUCER 20000

typedef struct {
    rig_t *r;
    dd_flusher_t *f;
    uint32_t id;
    unsigned refused;
} producer_t;

static void *producer(void *p)
{
    producer_t *a = p;
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        uint32_t id = a->id * PER_PRODUCER + i;
        char *c = make_chunk(id, 8 + i % 40);
        if (dd_queue_push(a->r->q, c, 8 + i % 40) != DD_QUEUE_OK) {
            free(c);
            a->refused++;
        }
        if (dd_queue_count(a->r->q) >= dd_queue_max_items(a->r->q) / 2) {
            dd_flusher_wake(a->f);
        }
    }
    return NULL;
}

static void test_concurrent(void)
{
    rig_t r;
    dd_flusher_t *f;
    pthread_t t[PRODUCERS];
    producer_t a[PRODUCERS];
    unsigned refused = 0;
    unsigned char *seen = calloc(PRODUCERS * PER_PRODUCER, 1);
    uint64_t dups = 0, nseen = 0;

    rig_init(&r, 256, 2000);
    r.conf.interval_ms = 20;
    CHECK(dd_flusher_start(pool, &r.conf, &f) == APR_SUCCESS);
    for (int i = 0; i < PRODUCERS; i++) {
        a[i] = (producer_t){&r, f, (uint32_t)i, 0};
        pthread_create(&t[i], NULL, producer, &a[i]);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        pthread_join(t[i], NULL);
        refused += a[i].refused;
    }
    dd_flusher_stop(f);
    for (size_t i = 0; i < fake.nids; i++) {
        if (fake.ids[i] < PRODUCERS * PER_PRODUCER && seen[fake.ids[i]]++) {
            dups++;
        }
        nseen++;
    }
    printf("concurrent: %u of %u chunks refused by the queue, %" PRIu64 " sent in %d payloads\n",
           refused, PRODUCERS * PER_PRODUCER, dd_stats_get(&r.stats.chunks_sent), fake.calls);
    CHECK(fake.framing_errors == 0);
    CHECK_U64(dups, 0);
    CHECK_U64(nseen + refused, PRODUCERS * PER_PRODUCER);
    CHECK_U64(dd_stats_get(&r.stats.chunks_sent), nseen);
    CHECK_U64(dd_stats_get(&r.stats.payloads_sent), fake.calls);
    CHECK_U64(dd_queue_count(r.q), 0);
    free(seen);
    dd_queue_destroy(r.q);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    pthread_mutex_init(&fake.mu, NULL);

    CHECK_STR(dd_drop_reason_name(DD_DROP_QUEUE_FULL), "queue_full");
    CHECK_STR(dd_drop_reason_name(DD_DROP_ENCODE_ERROR), "encode_error");
    CHECK_STR(dd_drop_reason_name(DD_DROP_AGENT_ERROR), "agent_error");

    test_framing();
    test_huge_payload_limit();
    test_split();
    test_oversize();
    test_send_failure();
    test_backoff_delays();
    test_backoff();
    test_rates();
    test_wake();
    test_interval();
    test_stop_flushes();
    test_stop_deadline();
    test_stop_hand_off();
    test_stop_while_pushing();
    test_no_thread_stop();
    test_pool_cleanup();
    test_bad_conf();
    test_concurrent();

    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
