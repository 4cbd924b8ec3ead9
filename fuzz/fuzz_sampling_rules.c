/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_sampling_rules.c - libFuzzer target for the sampling rules parser and matcher.
 *
 * Each input is a DDSamplingRules / DD_TRACE_SAMPLING_RULES value: it is parsed (it must never
 * crash, leak or read out of bounds, and a failure must come with a message); when it parses,
 * the rules are matched against a fixed root span, with and without a catch-all, and the
 * decision must be one of the documented outcomes. The input is also used as a glob, against
 * itself and a fixed string, to exercise the matcher on arbitrary bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "dd_sampler.h"
#include "dd_span.h"

static apr_pool_t *root_pool;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    apr_initialize();
    apr_pool_create(&root_pool, NULL);
    return 0;
}

static void check_decision(const dd_decision_t *d)
{
    int ok = d->mechanism == 3 ? (d->priority == 2 || d->priority == -1)
                               : (d->mechanism == 0 || d->mechanism == 1) &&
                                     (d->priority == 1 || d->priority == 0);
    if (!ok || !(d->rate >= 0.0 && d->rate <= 1.0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    char *json;
    const char *err = NULL;
    dd_rules_t *rules;

    apr_pool_create(&p, root_pool);
    json = apr_palloc(p, size + 1);
    memcpy(json, data, size);
    json[size] = 0;

    rules = dd_rules_parse(p, json, &err);
    if (!rules && !err)
        abort(); /* a failure always says why */
    if (rules) {
        dd_span_t *span = dd_span_create(p);
        dd_limiter_t *limiter = dd_limiter_create(p, 10);
        dd_sample_input_t in;
        dd_decision_t d;

        dd_span_set_meta(span, "http.method", "GET");
        dd_span_set_meta(span, "stage", "prod");
        dd_span_set_meta(span, "component", "aws-apigateway");
        memset(&in, 0, sizeof(in));
        in.service = "gw.example.com";
        in.name = "aws.apigateway";
        in.resource = "GET /users/{id}";
        in.meta = span->meta;
        in.env = "prod";
        in.trace_id_low = 0x0123456789abcdefULL;
        dd_sample(rules, limiter, NULL, &in, 1700000000LL * 1000000000LL, &d);
        check_decision(&d);
        dd_sample(dd_rules_add_catch_all(p, rules, 0.5), limiter, NULL, &in,
                  1700000000LL * 1000000000LL, &d);
        if (d.mechanism != 3) /* the catch-all matches whatever the rules did not */
            abort();
        check_decision(&d);
    }
    (void)dd_glob_match(json, json);
    (void)dd_glob_match(json, "GET /users/12345/orders/\xc3\xa9t\xc3\xa9");
    (void)dd_glob_match("*a*?*", json);

    apr_pool_destroy(p);
    return 0;
}
