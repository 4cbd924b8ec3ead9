/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_agent_response.c - libFuzzer target: any bytes as the agent's answer to a payload,
 * through the rate_by_service parser, then a lookup. */
#include <stddef.h>
#include "dd_rates.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static dd_rates_t *rates;
    unsigned rejected = 0;
    double rate;
    if (!rates)
        rates = dd_rates_create();
    dd_rates_update_json(rates, (const char *)data, size, &rejected);
    if (dd_rates_lookup(rates, "svc", "prod", &rate) && !(rate >= 0.0 && rate <= 1.0))
        __builtin_trap(); /* only rates in [0, 1] may ever be published */
    return 0;
}
