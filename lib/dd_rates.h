/* SPDX-License-Identifier: Apache-2.0 */
/* dd_rates.h - the agent's rate_by_service, published by the flusher, read by requests.
 *
 * One writer (the flusher thread) replaces the whole table after each agent response; any
 * number of readers look up a rate without taking a lock (seqlock over atomics: a reader that
 * races a write retries). Keys are "service:<s>,env:<e>" as the agent sends them.
 */
#ifndef DD_RATES_H
#define DD_RATES_H

#include <stddef.h>

typedef struct dd_rates dd_rates_t;

dd_rates_t *dd_rates_create(void); /* malloc'd; NULL when out of memory */
void dd_rates_destroy(dd_rates_t *r);

/* Parses an agent response body with jansson and, when it holds a rate_by_service object,
 * replaces the table with its valid entries. Entries whose value is not a number in [0, 1]
 * are skipped and added to *rejected (may be NULL). Returns 0 when the body was a JSON object
 * (with or without rate_by_service), -1 when it was not JSON or not an object (the table is
 * left as it was). */
int dd_rates_update_json(dd_rates_t *r, const char *body, size_t len, unsigned *rejected);

/* Looks up "service:<service>,env:<env>" (env may be NULL or ""), then "service:,env:".
 * Returns 1 and stores the rate when found, else 0. */
int dd_rates_lookup(dd_rates_t *r, const char *service, const char *env, double *rate);

#endif
