/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_remote_config.c - libFuzzer target: any bytes as what the agent's /v0.7/config sends
 * (issue 13.3). The first byte picks the way in. Odd: the bytes are a whole response for
 * dd_rc_process, twice on a fresh client; the next request must still be JSON, and a malformed
 * answer must leave the files held as they were. Even: they are one APM_TRACING file's content
 * for dd_rc_parse_apm (past the sha256 check a whole response would need), whose rate must be
 * in [0, 1] when it parses. */
#include <stddef.h>
#include <stdlib.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <jansson.h>
#include "dd_rc.h"

/* The state reported back is always JSON. */
static void request_is_json(dd_rc_client_t *c)
{
    char *req = dd_rc_request(c);
    json_t *j;
    if (!req || !(j = json_loads(req, 0, NULL)))
        __builtin_trap();
    json_decref(j);
    free(req);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static apr_pool_t *root;
    static const dd_rc_identity_t id = {.client_id = "c0ffee00-0000-4000-8000-000000000000",
                                        .runtime_id = "r",
                                        .language = "c",
                                        .tracer_version = "0",
                                        .service = "svc",
                                        .env = "prod",
                                        .app_version = "1"};
    apr_pool_t *p;

    if (!root) {
        apr_initialize();
        apr_pool_create(&root, NULL);
    }
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        /* A client of its own per input (its files live in APR pools, which LeakSanitizer
         * cannot see into): the answer twice, as a poll and the next one. */
        dd_rc_client_t *c = dd_rc_client_create(&id);
        dd_rc_result_t r;
        for (int round = 0; c && round < 2; round++) {
            int before = dd_rc_nfiles(c);
            if (dd_rc_process(c, (const char *)data + 1, size - 1, &r) == DD_RC_MALFORMED &&
                dd_rc_nfiles(c) != before)
                __builtin_trap(); /* a malformed answer changes nothing */
            request_is_json(c);
            (void)dd_rc_select(c, "svc", "prod");
        }
        dd_rc_client_destroy(c);
        return 0;
    }
    apr_pool_create(&p, root);
    {
        dd_rc_apm_t a;
        const char *err;
        if (dd_rc_parse_apm(p, (const char *)data + 1, size - 1, &a, &err) == 0) {
            if (a.has_rate && !(a.rate >= 0.0 && a.rate <= 1.0))
                __builtin_trap();
            (void)dd_rc_target_score(&a, "svc", "prod");
        }
    }
    apr_pool_destroy(p);
    return 0;
}
