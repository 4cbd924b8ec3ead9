/* SPDX-License-Identifier: Apache-2.0 */
/* dd_settings.h - the forms of Datadog tracer settings, parsed as the tracers parse them.
 *
 * Shared by the directives and the environment fallbacks (mod_dd_proxy_config.c), so that
 * `DDTraceHeaderTags x-request-id:req.id` and `DD_TRACE_HEADER_TAGS=x-request-id:req.id` mean
 * the same. Everything here runs at configuration time; what the request path needs
 * (dd_status_set_has) is a bit test.
 */
#ifndef DD_SETTINGS_H
#define DD_SETTINGS_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>

/* A boolean as the tracers write it: true/false, 1/0, yes/no, on/off (any case, surrounding
 * blanks ignored). Returns 1 and sets *out, or 0 when s is none of these. */
int dd_parse_bool(const char *s, int *out);

/* DD_TAGS (dd-trace-py parse_tags_str, dd-trace-cpp parse_tags): entries separated by commas
 * when the string has one, else by spaces; each entry key[:value] split on its first ':' (so a
 * value may hold ':'), key and value trimmed; an entry without ':' is a key with the empty
 * value; entries with an empty key are skipped; a repeated key keeps its last value. Returns
 * dd_meta_t entries (measured), never NULL. */
apr_array_header_t *dd_parse_tags(apr_pool_t *p, const char *s);
/* The value of key in such a list, or NULL; and the list without that key. */
const char *dd_tags_get(const apr_array_header_t *tags, const char *key);
void dd_tags_remove(apr_array_header_t *tags, const char *key);

/* DD_TRACE_HEADER_TAGS: header[:tag] entries. Without a tag, a request header becomes
 * http.request.headers.<name> and a response header http.response.headers.<name>, where
 * <name> is the header name lowercased with every character outside [a-z0-9_-:/] replaced
 * by '_' (dd-trace-py _normalize_tag_name); with a tag, both become that tag. */
typedef struct {
    const char *header;       /* a header name (token), matched case-insensitively */
    const char *request_tag;  /* tag names, with their lengths */
    const char *response_tag; /* (the same string when the entry names a tag) */
    uint32_t request_klen, response_klen;
} dd_header_tag_t;

/* Parses entries separated by commas (and blanks around them) into *tags (an array of
 * dd_header_tag_t, created when NULL). An entry is trimmed and split on its first ':'; it is
 * invalid when the header is not an HTTP token, is '*', or when a ':' has nothing before or
 * after it (the system-tests' leading/trailing colon cases). On an invalid entry returns -1
 * with *bad = that entry and *why, and adds nothing more. */
int dd_header_tags_parse(apr_pool_t *p, const char *s, apr_array_header_t **tags, const char **bad,
                         const char **why);

/* HTTP status codes that make a server span an error (DD_TRACE_HTTP_SERVER_ERROR_STATUSES):
 * "500-599", "500-599,429", "400-403, 500" ... Blanks are ignored; each item is a code or a
 * range of codes in 100..599, either way round (dd-trace-js http-error-statuses.js). */
typedef struct {
    uint64_t bits[10]; /* bit c set: status c is an error (c < 640) */
} dd_status_set_t;

/* Returns 0 and fills *set, or -1 (and *why) when s is not such a list. */
int dd_status_set_parse(const char *s, dd_status_set_t *set, const char **why);

static inline int dd_status_set_has(const dd_status_set_t *set, int status)
{
    return status >= 0 && status < 640 && ((set->bits[status >> 6] >> (status & 63)) & 1);
}

#endif
