/* SPDX-License-Identifier: Apache-2.0 */
/* test_rates.c - unit tests for dd_rates: parsing agent responses, lookups with the fallback
 * key, rejection of bad entries, whole-table replacement, and a reader/writer stress test
 * (run it under ThreadSanitizer too) that must never observe a mix of two tables. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dd_rates.h"
#include "unit.h"

static int update(dd_rates_t *r, const char *json, unsigned *rejected)
{
    return dd_rates_update_json(r, json, strlen(json), rejected);
}

/* Returns the rate found, or -1.0 when not found. */
static double look(dd_rates_t *r, const char *service, const char *env)
{
    double rate = -2.0;
    if (!dd_rates_lookup(r, service, env, &rate))
        return -1.0;
    return rate;
}

static void test_lookup(void)
{
    dd_rates_t *r = dd_rates_create();
    unsigned rej = 0;

    CHECK(r != NULL);
    CHECK(look(r, "web", "prod") == -1.0); /* empty table */
    CHECK(update(r,
                 "{\"rate_by_service\":{\"service:web,env:prod\":0.25,"
                 "\"service:web,env:\":0.5,\"service:,env:\":0.75,\"service:one,env:x\":1}}",
                 &rej) == 0);
    CHECK_U64(rej, 0);
    CHECK(look(r, "web", "prod") == 0.25);      /* exact */
    CHECK(look(r, "web", "") == 0.5);           /* env empty */
    CHECK(look(r, "web", NULL) == 0.5);         /* env NULL is the same as empty */
    CHECK(look(r, "web", "staging") == 0.75);   /* fallback key */
    CHECK(look(r, "other", "prod") == 0.75);    /* fallback key */
    CHECK(look(r, "one", "x") == 1.0);          /* integer value */
    CHECK(look(r, "Web", "prod") == 0.75);      /* keys match exactly, as the agent sends them */
    CHECK(look(r, "web,env:prod", "") == 0.75); /* no aliasing through the separator */
    CHECK(look(r, "web", "prod,") == 0.75);

    /* without a default key, unknown services are not found */
    CHECK(update(r, "{\"rate_by_service\":{\"service:web,env:prod\":0}}", &rej) == 0);
    CHECK(look(r, "web", "prod") == 0.0);
    CHECK(look(r, "web", "") == -1.0);
    CHECK(look(r, "x", "y") == -1.0);
    CHECK(look(NULL, "x", "y") == -1.0);
    CHECK(dd_rates_lookup(r, "web", "prod", NULL) == 0);
    CHECK_U64(rej, 0);
    dd_rates_destroy(r);
    dd_rates_destroy(NULL);
}

static void test_invalid_json(void)
{
    dd_rates_t *r = dd_rates_create();
    unsigned rej = 0;
    static const char *bad[] = {
        "",
        "not json",
        "{\"rate_by_service\":{\"service:,env:\":0.1}", /* truncated */
        "{\"rate_by_service\":{}} trailing",
        "[1,2]",
        "\"string\"",
        "0.5",
        "null",
        "{\"rate_by_service\":{\"service:a\\u0000,env:\":0.1}}", /* jansson: NUL in key */
    };

    CHECK(update(r, "{\"rate_by_service\":{\"service:,env:\":0.5}}", &rej) == 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(update(r, bad[i], &rej) == -1);
        CHECK(look(r, "a", "b") == 0.5); /* unchanged */
    }
    CHECK(dd_rates_update_json(r, NULL, 0, &rej) == -1);
    CHECK(dd_rates_update_json(NULL, "{}", 2, &rej) == -1);
    /* len is honoured: the same bytes with a shorter length are not valid JSON */
    CHECK(dd_rates_update_json(r, "{\"rate_by_service\":{}}", 10, &rej) == -1);
    CHECK(look(r, "a", "b") == 0.5);
    CHECK_U64(rej, 0);

    /* objects without rate_by_service are fine and change nothing */
    CHECK(update(r, "{}", &rej) == 0);
    CHECK(update(r, "{\"other\":1}", &rej) == 0);
    CHECK(look(r, "a", "b") == 0.5);
    CHECK_U64(rej, 0);

    /* rate_by_service that is not an object: counted, table kept */
    CHECK(update(r, "{\"rate_by_service\":[0.1]}", &rej) == 0);
    CHECK(update(r, "{\"rate_by_service\":null}", &rej) == 0);
    CHECK(look(r, "a", "b") == 0.5);
    CHECK_U64(rej, 2);
    dd_rates_destroy(r);
}

static void test_rejected_values(void)
{
    dd_rates_t *r = dd_rates_create();
    unsigned rej = 5;

    CHECK(update(r,
                 "{\"rate_by_service\":{"
                 "\"service:neg,env:\":-0.1,"
                 "\"service:big,env:\":1.5,"
                 "\"service:two,env:\":2,"
                 "\"service:str,env:\":\"0.5\","
                 "\"service:nul,env:\":null,"
                 "\"service:bool,env:\":true,"
                 "\"service:obj,env:\":{},"
                 "\"service:arr,env:\":[0.5],"
                 "\"service:zero,env:\":0.0,"
                 "\"service:negzero,env:\":-0.0,"
                 "\"service:one,env:\":1.0,"
                 "\"service:tiny,env:\":1e-300}}",
                 &rej) == 0);
    CHECK_U64(rej, 5 + 8); /* added to what was there */
    CHECK(look(r, "neg", "") == -1.0);
    CHECK(look(r, "big", "") == -1.0);
    CHECK(look(r, "two", "") == -1.0);
    CHECK(look(r, "str", "") == -1.0);
    CHECK(look(r, "nul", "") == -1.0);
    CHECK(look(r, "bool", "") == -1.0);
    CHECK(look(r, "obj", "") == -1.0);
    CHECK(look(r, "arr", "") == -1.0);
    CHECK(look(r, "zero", "") == 0.0);
    CHECK(look(r, "negzero", "") == 0.0);
    CHECK(look(r, "one", "") == 1.0);
    CHECK(look(r, "tiny", "") == 1e-300);
    CHECK(update(r, "{\"rate_by_service\":{\"service:,env:\":7}}", NULL) == 0); /* NULL ok */
    dd_rates_destroy(r);
}

static void test_replacement(void)
{
    dd_rates_t *r = dd_rates_create();
    unsigned rej = 0;

    CHECK(update(r, "{\"rate_by_service\":{\"service:a,env:\":0.1,\"service:b,env:\":0.2}}",
                 &rej) == 0);
    CHECK(look(r, "a", "") == 0.1);
    CHECK(look(r, "b", "") == 0.2);
    CHECK(update(r, "{\"rate_by_service\":{\"service:b,env:\":0.3,\"service:c,env:\":0.4}}",
                 &rej) == 0);
    CHECK(look(r, "a", "") == -1.0); /* gone */
    CHECK(look(r, "b", "") == 0.3);  /* new value */
    CHECK(look(r, "c", "") == 0.4);  /* added */
    /* the same table again (the usual case) keeps working */
    CHECK(update(r, "{\"rate_by_service\":{\"service:b,env:\":0.3,\"service:c,env:\":0.4}}",
                 &rej) == 0);
    CHECK(look(r, "b", "") == 0.3);
    CHECK(look(r, "c", "") == 0.4);
    /* an empty rate_by_service empties the table */
    CHECK(update(r, "{\"rate_by_service\":{}}", &rej) == 0);
    CHECK(look(r, "b", "") == -1.0);
    CHECK(look(r, "c", "") == -1.0);
    CHECK_U64(rej, 0);
    dd_rates_destroy(r);
}

/* More keys than the table holds: the first ones stay, the rest are counted as rejected. */
static void test_capacity(void)
{
    dd_rates_t *r = dd_rates_create();
    size_t n = 2000, cap = 64 + n * 40;
    char *json = malloc(cap), *p = json;
    unsigned rej = 0, found = 0, first_missing = 0;
    char svc[32];

    p += sprintf(p, "{\"rate_by_service\":{");
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%s\"service:s%zu,env:e\":0.5", i ? "," : "", i);
    sprintf(p, "}}");
    CHECK(update(r, json, &rej) == 0);
    for (size_t i = 0; i < n; i++) {
        snprintf(svc, sizeof(svc), "s%zu", i);
        if (look(r, svc, "e") == 0.5) {
            found++;
            if (first_missing)
                first_missing = 2; /* a later key was kept after an earlier one was not */
        } else if (!first_missing) {
            first_missing = 1;
        }
    }
    CHECK(found > 0 && found < n);
    CHECK_U64(found + rej, n);
    CHECK(first_missing == 1); /* the kept keys are the first ones in the document */
    CHECK(look(r, "s0", "e") == 0.5);
    CHECK(look(r, "s1999", "e") == -1.0);
    free(json);
    dd_rates_destroy(r);
}

/* --- stress: one writer alternates two tables, readers must see one of them whole ---------
 *
 * Table A holds "service:sI,env:e" = I/1000 for I < NKEYS and the default 0.5; table B holds
 * only the default 0.75. Looking up (sI, e) gives I/1000 under A and 0.75 under B; any other
 * answer (0.5: exact key already gone but default not yet updated, or a value from another
 * key) means the reader saw half of each. Not found is allowed (the reader gave up). */

#define NKEYS 200
#define NREADERS 3

static dd_rates_t *stress_rates;
static atomic_int stress_stop;
static atomic_int stress_bad;
static atomic_long stress_seen_a, stress_seen_b, stress_not_found;

static void *reader_main(void *arg)
{
    unsigned seed = (unsigned)(size_t)arg;
    char svc[16];

    while (!atomic_load(&stress_stop)) {
        unsigned i = (seed = seed * 1103515245u + 12345u) % NKEYS;
        double rate;

        snprintf(svc, sizeof(svc), "s%u", i);
        if (!dd_rates_lookup(stress_rates, svc, "e", &rate))
            atomic_fetch_add(&stress_not_found, 1);
        else if (rate == (double)i / 1000.0)
            atomic_fetch_add(&stress_seen_a, 1);
        else if (rate == 0.75)
            atomic_fetch_add(&stress_seen_b, 1);
        else
            atomic_fetch_add(&stress_bad, 1);
    }
    return NULL;
}

static void test_stress(void)
{
    pthread_t readers[NREADERS];
    char *table_a = malloc(64 + NKEYS * 40), *p = table_a;
    const char *table_b = "{\"rate_by_service\":{\"service:,env:\":0.75}}";
    struct timespec t0, t;
    long iterations = 0;

    p += sprintf(p, "{\"rate_by_service\":{\"service:,env:\":0.5");
    for (int i = 0; i < NKEYS; i++)
        p += sprintf(p, ",\"service:s%d,env:e\":%.3f", i, i / 1000.0);
    sprintf(p, "}}");

    stress_rates = dd_rates_create();
    CHECK(update(stress_rates, table_a, NULL) == 0);
    for (size_t i = 0; i < NREADERS; i++)
        CHECK(pthread_create(&readers[i], NULL, reader_main, (void *)(i + 1)) == 0);

    /* At least 2000 replacements, and on until every kind of answer was seen (or 10 s). */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        CHECK(update(stress_rates, (iterations & 1) ? table_a : table_b, NULL) == 0);
        iterations++;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec >= 10)
            break;
        if (iterations >= 2000 && atomic_load(&stress_seen_a) > 1000 &&
            atomic_load(&stress_seen_b) > 1000)
            break;
    }
    atomic_store(&stress_stop, 1);
    for (size_t i = 0; i < NREADERS; i++)
        pthread_join(readers[i], NULL);

    printf("stress: %ld replacements; lookups: %ld table A, %ld table B, %ld not found, %d "
           "mixed\n",
           iterations, atomic_load(&stress_seen_a), atomic_load(&stress_seen_b),
           atomic_load(&stress_not_found), atomic_load(&stress_bad));
    CHECK(atomic_load(&stress_bad) == 0);
    CHECK(atomic_load(&stress_seen_a) > 0);
    CHECK(atomic_load(&stress_seen_b) > 0);
    dd_rates_destroy(stress_rates);
    free(table_a);
}

int main(void)
{
    test_lookup();
    test_invalid_json();
    test_rejected_values();
    test_replacement();
    test_capacity();
    test_stress();
    UNIT_DONE();
}
