/* SPDX-License-Identifier: Apache-2.0 */
/* test_queue.c - unit tests for lib/dd_queue.c: single-thread semantics (FIFO, exact item and
 * byte limits, ownership, wrap-around), exact limits under contention, and a multi-producer
 * stress test with a concurrent consumer. Run it under ASan (leaks: destroy must free what it
 * holds) and TSan (the memory orders). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dd_queue.h"
#include "unit.h"

static char *item(const char *s)
{
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    memcpy(p, s, n + 1);
    return p;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_create_args(void)
{
    dd_queue_t *q;

    CHECK(dd_queue_create(0, 10) == NULL);
    CHECK(dd_queue_create(10, 0) == NULL);
    CHECK(dd_queue_create(SIZE_MAX, 10) == NULL);
    q = dd_queue_create(5, 100);
    CHECK(q != NULL);
    CHECK_U64(dd_queue_max_items(q), 5);
    CHECK_U64(dd_queue_max_bytes(q), 100);
    CHECK_U64(dd_queue_count(q), 0);
    CHECK_U64(dd_queue_bytes(q), 0);
    dd_queue_destroy(q);
    dd_queue_destroy(NULL);
}

static void test_fifo(void)
{
    dd_queue_t *q = dd_queue_create(8, 1000);
    char *d = NULL;
    size_t len = 0;
    const char *words[] = {"one", "two", "three", "four", "five"};

    CHECK(dd_queue_pop(q, &d, &len) == 0);
    for (int i = 0; i < 5; i++) {
        CHECK(dd_queue_push(q, item(words[i]), strlen(words[i])) == DD_QUEUE_OK);
    }
    CHECK_U64(dd_queue_count(q), 5);
    CHECK_U64(dd_queue_bytes(q), 3 + 3 + 5 + 4 + 4);
    for (int i = 0; i < 5; i++) {
        CHECK(dd_queue_pop(q, &d, &len) == 1);
        CHECK_STR(d, words[i]);
        CHECK_U64(len, strlen(words[i]));
        free(d);
    }
    CHECK(dd_queue_pop(q, &d, &len) == 0);
    CHECK_U64(dd_queue_count(q), 0);
    CHECK_U64(dd_queue_bytes(q), 0);
    dd_queue_destroy(q);
}

/* max_items = 3 is not a power of two: the ring has 4 cells, the limit must still be 3. Many
 * rounds wrap the sequence numbers around the ring many times. */
static void test_item_limit_exact(void)
{
    dd_queue_t *q = dd_queue_create(3, 1 << 20);
    char *d;
    size_t len;

    for (int round = 0; round < 50; round++) {
        char *extra = item("x");
        int ok = 1;
        for (int i = 0; i < 3; i++) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%d-%d", round, i);
            ok &= dd_queue_push(q, item(buf), strlen(buf)) == DD_QUEUE_OK;
        }
        CHECK(ok);
        CHECK(dd_queue_push(q, extra, 1) == DD_QUEUE_FULL_ITEMS);
        CHECK_U64(dd_queue_count(q), 3);
        /* Pop one, then exactly one fits again. */
        CHECK(dd_queue_pop(q, &d, &len) == 1);
        free(d);
        CHECK(dd_queue_push(q, extra, 1) == DD_QUEUE_OK);
        extra = item("y");
        CHECK(dd_queue_push(q, extra, 1) == DD_QUEUE_FULL_ITEMS);
        free(extra);
        while (dd_queue_pop(q, &d, &len)) {
            free(d);
        }
    }
    dd_queue_destroy(q);

    q = dd_queue_create(1, 100);
    for (int i = 0; i < 10; i++) {
        char *a = item("a"), *b = item("b");
        CHECK(dd_queue_push(q, a, 1) == DD_QUEUE_OK);
        CHECK(dd_queue_push(q, b, 1) == DD_QUEUE_FULL_ITEMS);
        free(b);
        CHECK(dd_queue_pop(q, &d, &len) == 1);
        CHECK(d == a);
        free(d);
        CHECK(dd_queue_pop(q, &d, &len) == 0);
    }
    dd_queue_destroy(q);
}

static void test_byte_limit_exact(void)
{
    dd_queue_t *q = dd_queue_create(100, 10);
    char *d;
    size_t len;
    char *big = malloc(11), *four = malloc(4), *six = malloc(6), *one = malloc(1);

    CHECK(dd_queue_push(q, big, 11) == DD_QUEUE_FULL_BYTES); /* larger than the whole limit */
    CHECK_U64(dd_queue_count(q), 0);                         /* the item place was given back */
    CHECK(dd_queue_push(q, four, 4) == DD_QUEUE_OK);
    CHECK(dd_queue_push(q, six, 6) == DD_QUEUE_OK); /* exactly 10: allowed */
    CHECK_U64(dd_queue_bytes(q), 10);
    CHECK(dd_queue_push(q, one, 1) == DD_QUEUE_FULL_BYTES);
    CHECK_U64(dd_queue_count(q), 2);
    CHECK_U64(dd_queue_bytes(q), 10);
    CHECK(dd_queue_pop(q, &d, &len) == 1);
    CHECK(d == four && len == 4);
    free(d);
    CHECK_U64(dd_queue_bytes(q), 6);
    CHECK(dd_queue_push(q, one, 1) == DD_QUEUE_OK);
    CHECK(dd_queue_push(q, big, 4) == DD_QUEUE_FULL_BYTES); /* 6 + 1 + 4 = 11 */
    CHECK(dd_queue_push(q, big, 3) == DD_QUEUE_OK);         /* 6 + 1 + 3 = 10 */
    CHECK_U64(dd_queue_bytes(q), 10);
    CHECK(dd_queue_push(q, NULL, 0) == DD_QUEUE_OK); /* empty items take a place, no bytes */
    CHECK_U64(dd_queue_count(q), 4);
    dd_queue_destroy(q); /* frees six, one, big (ASan reports a leak otherwise) */
}

/* A refused item stays the caller's: the queue neither frees it nor hands it out later. */
static void test_ownership(void)
{
    dd_queue_t *q = dd_queue_create(2, 1000);
    char *a = item("a"), *b = item("b"), *c = item("c");
    char *d;
    size_t len;

    CHECK(dd_queue_push(q, a, 1) == DD_QUEUE_OK);
    CHECK(dd_queue_push(q, b, 1) == DD_QUEUE_OK);
    CHECK(dd_queue_push(q, c, 1) == DD_QUEUE_FULL_ITEMS);
    c[0] = 'C'; /* still ours: ASan reports a use-after-free if the queue freed it */
    CHECK(dd_queue_pop(q, &d, &len) == 1 && d == a);
    free(d);
    CHECK(dd_queue_pop(q, &d, &len) == 1 && d == b);
    free(d);
    CHECK(dd_queue_pop(q, &d, &len) == 0);
    free(c);
    dd_queue_destroy(q);
}

/* destroy frees what is still queued: under ASan, LeakSanitizer fails the run otherwise. */
static void test_destroy_frees(void)
{
    dd_queue_t *q = dd_queue_create(16, 1 << 20);
    char *d;
    size_t len;

    for (int i = 0; i < 16; i++) {
        CHECK(dd_queue_push(q, malloc(1000), 1000) == DD_QUEUE_OK);
    }
    /* Leave a wrapped ring behind too. */
    for (int i = 0; i < 5; i++) {
        CHECK(dd_queue_pop(q, &d, &len) == 1);
        free(d);
        CHECK(dd_queue_push(q, malloc(10), 10) == DD_QUEUE_OK);
    }
    CHECK_U64(dd_queue_count(q), 16);
    dd_queue_destroy(q);
}

/* --- exact limits under contention: no consumer, many producers race for the last places -- */

#define RACE_THREADS 4
#define RACE_ATTEMPTS 5000

typedef struct {
    dd_queue_t *q;
    size_t len;
    pthread_barrier_t *start;
    unsigned ok, full_items, full_bytes;
} race_arg_t;

static void *race_producer(void *p)
{
    race_arg_t *a = p;
    pthread_barrier_wait(a->start);
    for (int i = 0; i < RACE_ATTEMPTS; i++) {
        char *buf = malloc(a->len);
        switch (dd_queue_push(a->q, buf, a->len)) {
        case DD_QUEUE_OK:
            a->ok++;
            break;
        case DD_QUEUE_FULL_ITEMS:
            a->full_items++;
            free(buf);
            break;
        case DD_QUEUE_FULL_BYTES:
            a->full_bytes++;
            free(buf);
            break;
        }
    }
    return NULL;
}

static void race(size_t max_items, size_t max_bytes, size_t len, unsigned want_ok,
                 int want_items_full)
{
    dd_queue_t *q = dd_queue_create(max_items, max_bytes);
    pthread_t t[RACE_THREADS];
    race_arg_t a[RACE_THREADS];
    pthread_barrier_t start;
    unsigned ok = 0, fi = 0, fb = 0;

    pthread_barrier_init(&start, NULL, RACE_THREADS);
    for (int i = 0; i < RACE_THREADS; i++) {
        a[i] = (race_arg_t){q, len, &start, 0, 0, 0};
        pthread_create(&t[i], NULL, race_producer, &a[i]);
    }
    for (int i = 0; i < RACE_THREADS; i++) {
        pthread_join(t[i], NULL);
        ok += a[i].ok;
        fi += a[i].full_items;
        fb += a[i].full_bytes;
    }
    pthread_barrier_destroy(&start);
    CHECK_U64(ok, want_ok);
    CHECK_U64(ok + fi + fb, RACE_THREADS * RACE_ATTEMPTS);
    CHECK_U64(want_items_full ? fb : fi, 0);
    CHECK_U64(dd_queue_count(q), want_ok);
    CHECK_U64(dd_queue_bytes(q), (uint64_t)want_ok * len);
    dd_queue_destroy(q);
}

static void test_limits_under_contention(void)
{
    race(1000, SIZE_MAX, 16, 1000, 1); /* the item limit decides */
    race(1000, 16, 16, 1, 0);          /* one item fills the bytes */
    race(20000, 1000 * 16, 16, 1000, 0);
    race(3, SIZE_MAX, 1, 3, 1);
}

/* --- stress: 4 producers x 200000 pushes, one consumer popping concurrently ---------------- */

#define STRESS_PRODUCERS 4
#define STRESS_PUSHES 200000

typedef struct {
    uint32_t producer;
    uint32_t seq;
} stress_hdr_t;

typedef struct {
    dd_queue_t *q;
    uint32_t id;
    unsigned char *pushed; /* [STRESS_PUSHES]: 1 when the queue took it */
    uint64_t ok, full_items, full_bytes, attempted;
} producer_arg_t;

typedef struct {
    dd_queue_t *q;
    atomic_int *producers_done;
    int pause; /* let the queue fill up every 65536 pops */
    unsigned char *popped[STRESS_PRODUCERS];
    int64_t last_seq[STRESS_PRODUCERS];
    uint64_t pops, order_errors, dup_errors, bad_items, over_limit;
} consumer_arg_t;

/* Mostly 16 bytes, one in 16 is 1 KiB: with 64 items / 4 KiB limits, either limit can be
 * the one that refuses a push, depending on the mix in the queue at the time. */
static size_t stress_len(uint32_t producer, uint32_t seq)
{
    return (seq + producer) % 16 == 0 ? 1024 : 16;
}

static void *stress_producer(void *p)
{
    producer_arg_t *a = p;
    for (uint32_t i = 0; i < STRESS_PUSHES; i++) {
        size_t len = stress_len(a->id, i);
        char *buf = malloc(len);
        stress_hdr_t h = {a->id, i};
        memcpy(buf, &h, sizeof(h));
        memset(buf + sizeof(h), (int)(i & 0xff), len - sizeof(h));
        a->attempted++;
        switch (dd_queue_push(a->q, buf, len)) {
        case DD_QUEUE_OK:
            a->ok++;
            a->pushed[i] = 1;
            break;
        case DD_QUEUE_FULL_ITEMS:
            a->full_items++;
            free(buf);
            sched_yield(); /* let the consumer run (the test box may have 2 CPUs) */
            break;
        case DD_QUEUE_FULL_BYTES:
            a->full_bytes++;
            free(buf);
            sched_yield();
            break;
        }
    }
    return NULL;
}

static int consume_one(consumer_arg_t *c)
{
    char *d;
    size_t len;
    stress_hdr_t h;

    if (dd_queue_count(c->q) > dd_queue_max_items(c->q) ||
        dd_queue_bytes(c->q) > dd_queue_max_bytes(c->q)) {
        c->over_limit++;
    }
    if (!dd_queue_pop(c->q, &d, &len)) {
        return 0;
    }
    memcpy(&h, d, sizeof(h));
    if (h.producer >= STRESS_PRODUCERS || h.seq >= STRESS_PUSHES ||
        len != stress_len(h.producer, h.seq) ||
        (unsigned char)d[len - 1] != (unsigned char)(h.seq & 0xff)) {
        c->bad_items++;
    } else {
        if ((int64_t)h.seq <= c->last_seq[h.producer]) {
            c->order_errors++;
        }
        c->last_seq[h.producer] = h.seq;
        if (c->popped[h.producer][h.seq]++) {
            c->dup_errors++;
        }
    }
    c->pops++;
    free(d);
    return 1;
}

/* Lets the producers fill the queue, then sleeps a little so that some of them certainly
 * meet it full. */
static void fall_behind(consumer_arg_t *c)
{
    while (!atomic_load(c->producers_done) && dd_queue_count(c->q) < dd_queue_max_items(c->q) &&
           dd_queue_bytes(c->q) + 16 <= dd_queue_max_bytes(c->q)) {
        sched_yield();
    }
    usleep(1000);
}

static void *stress_consumer(void *p)
{
    consumer_arg_t *c = p;
    for (;;) {
        int done = atomic_load(c->producers_done);
        if (consume_one(c)) {
            if (c->pause && c->pops % 65536 == 0) {
                fall_behind(c);
            }
            continue;
        }
        if (done) {
            /* Every producer had returned before this empty pop: nothing is in flight. */
            break;
        }
    }
    return NULL;
}

static void stress(size_t max_items, size_t max_bytes, int pause)
{
    dd_queue_t *q = dd_queue_create(max_items, max_bytes);
    pthread_t pt[STRESS_PRODUCERS], ct;
    producer_arg_t pa[STRESS_PRODUCERS];
    consumer_arg_t ca;
    atomic_int done = 0;
    uint64_t ok = 0, fi = 0, fb = 0, attempted = 0, missing = 0, extra = 0;
    double t0, t1;

    memset(&ca, 0, sizeof(ca));
    ca.q = q;
    ca.producers_done = &done;
    ca.pause = pause;
    for (int i = 0; i < STRESS_PRODUCERS; i++) {
        ca.popped[i] = calloc(STRESS_PUSHES, 1);
        ca.last_seq[i] = -1;
        pa[i] = (producer_arg_t){q, (uint32_t)i, calloc(STRESS_PUSHES, 1), 0, 0, 0, 0};
    }
    t0 = now_s();
    pthread_create(&ct, NULL, stress_consumer, &ca);
    for (int i = 0; i < STRESS_PRODUCERS; i++) {
        pthread_create(&pt[i], NULL, stress_producer, &pa[i]);
    }
    for (int i = 0; i < STRESS_PRODUCERS; i++) {
        pthread_join(pt[i], NULL);
    }
    atomic_store(&done, 1);
    pthread_join(ct, NULL);
    t1 = now_s();

    for (int i = 0; i < STRESS_PRODUCERS; i++) {
        ok += pa[i].ok;
        fi += pa[i].full_items;
        fb += pa[i].full_bytes;
        attempted += pa[i].attempted;
        for (int s = 0; s < STRESS_PUSHES; s++) {
            missing += pa[i].pushed[s] && !ca.popped[i][s];
            extra += !pa[i].pushed[s] && ca.popped[i][s];
        }
        free(pa[i].pushed);
        free(ca.popped[i]);
    }
    CHECK_U64(attempted, (uint64_t)STRESS_PRODUCERS * STRESS_PUSHES);
    CHECK_U64(ok + fi + fb, attempted);
    CHECK_U64(ca.pops, ok);
    CHECK_U64(missing, 0);
    CHECK_U64(extra, 0);
    CHECK_U64(ca.dup_errors, 0);
    CHECK_U64(ca.order_errors, 0);
    CHECK_U64(ca.bad_items, 0);
    CHECK_U64(ca.over_limit, 0);
    if (pause) {
        CHECK(fi + fb > 0); /* the limits were actually reached */
    }
    CHECK_U64(dd_queue_count(q), 0);
    CHECK_U64(dd_queue_bytes(q), 0);
    printf("stress: %d producers x %d pushes, 1 consumer%s, limits %zu items / %zu bytes: "
           "%.3f s, %.0f pushes/s, %.0f items/s through; ok %" PRIu64 ", full_items %" PRIu64
           ", full_bytes %" PRIu64 "\n",
           STRESS_PRODUCERS, STRESS_PUSHES, pause ? " (pausing)" : "", max_items, max_bytes,
           t1 - t0, (double)attempted / (t1 - t0), (double)ok / (t1 - t0), ok, fi, fb);
    dd_queue_destroy(q);
}

int main(void)
{
    test_create_args();
    test_fifo();
    test_item_limit_exact();
    test_byte_limit_exact();
    test_ownership();
    test_destroy_frees();
    test_limits_under_contention();
    /* Small limits and a consumer that falls behind now and then: pushes meet a full queue
     * (in items or in bytes, whichever the mix of sizes hits first). */
    stress(64, 4096, 1);
    /* The module's defaults and a consumer going flat out: the throughput figure. */
    stress(4096, 16 << 20, 0);
    UNIT_DONE();
}
