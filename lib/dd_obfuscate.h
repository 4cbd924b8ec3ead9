/* SPDX-License-Identifier: Apache-2.0 */
/* dd_obfuscate.h - query strings for http.url, obfuscated as Datadog's tracers do it
 * (DD_TRACE_OBFUSCATION_QUERY_STRING_REGEXP): every match of a regular expression in the raw
 * query string is replaced with "<redacted>".
 *
 * The expression is compiled (PCRE2, JIT where available) once at configuration time; a
 * request only runs the match, on a query string capped at DD_QS_CAP bytes first (whole
 * parameters only, so no secret is cut in two and half of it shown), with PCRE2's match and
 * depth limits bounding the cost of an unlucky user-supplied expression.
 */
#ifndef DD_OBFUSCATE_H
#define DD_OBFUSCATE_H

#include <stddef.h>
#include <apr_pools.h>

/* dd-trace-py's default (ddtrace/internal/settings/_config.py), which the system-tests'
 * Test_StandardTagsUrl cases are written for. */
extern const char dd_qs_default_regexp[];

#define DD_QS_CAP 4096
#define DD_QS_REDACTED "<redacted>"

typedef struct dd_qs_obfuscator dd_qs_obfuscator_t;

/* Compiles regexp (case-insensitive, as the tracers compile theirs). The empty string means no
 * obfuscation (the query string is shown as it is), as in the tracers. The object lives as
 * long as p. Returns NULL with *why (and *offset, where in regexp) when it does not compile. */
dd_qs_obfuscator_t *dd_qs_obfuscator_create(apr_pool_t *p, const char *regexp, const char **why,
                                            size_t *offset);

/* The query (qlen bytes, without the '?') as http.url shows it, allocated in p. A query longer
 * than DD_QS_CAP is cut after its last whole parameter within the cap (or dropped when it has
 * none) and *truncated set. When the match fails (a limit was hit) the whole query is
 * replaced with "<redacted>": a query we could not check is never shown. */
const char *dd_qs_obfuscate(const dd_qs_obfuscator_t *o, apr_pool_t *p, const char *query,
                            size_t qlen, int *truncated);

#endif
