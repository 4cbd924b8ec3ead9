/* SPDX-License-Identifier: Apache-2.0 */
/* dd_rc.h - remote configuration (issue 13.3): the client side of the agent's POST /v0.7/config
 * for the APM_TRACING product, as dd-trace-cpp's remote_config::Manager and ConfigManager do it.
 *
 * state -> request JSON -> (the glue posts it) -> response -> checked -> files held -> state.
 * A response is checked whole before anything changes: targets and files base64, JSON, each
 * file's length and sha256 against the signed targets. A bad response changes nothing (the
 * files held stay applied) and the next request says has_error with why. Each APM_TRACING
 * file's lib_config is parsed when it arrives: apply_state 2 (acknowledged), or 3 with the
 * error. No I/O and no logging; one client per child, used by its flusher thread alone.
 */
#ifndef DD_RC_H
#define DD_RC_H

#include <stddef.h>
#include <apr_pools.h>
#include "dd_sampler.h"
#include "dd_span.h"

/* Capabilities announced (big-endian bits of client.capabilities). */
#define DD_RC_CAP_APM_TRACING_SAMPLE_RATE (1ULL << 12)
#define DD_RC_CAP_APM_TRACING_CUSTOM_TAGS (1ULL << 15)
#define DD_RC_CAP_APM_TRACING_ENABLED (1ULL << 19)
#define DD_RC_CAP_APM_TRACING_SAMPLE_RULES (1ULL << 29)

#define DD_RC_STATE_ACKNOWLEDGED 2
#define DD_RC_STATE_ERROR 3

/* Bounds on what one response may hold; more is a malformed response. */
#define DD_RC_MAX_BODY (1024 * 1024)
#define DD_RC_MAX_FILES 64
#define DD_RC_MAX_FILE_BYTES (64 * 1024)

/* Who is asking (client.id, client.client_tracer); copied. NULL fields are sent as "". */
typedef struct {
    const char *client_id; /* a UUID, this child's */
    const char *runtime_id;
    const char *language;
    const char *tracer_version;
    const char *service;
    const char *env;
    const char *app_version;
} dd_rc_identity_t;

/* One APM_TRACING file's lib_config, and whom it is for. */
typedef struct {
    int has_rate;
    double rate;               /* tracing_sampling_rate, when has_rate */
    const dd_rules_t *rules;   /* tracing_sampling_rules, NULL when not set */
    const dd_tagset_t *tags;   /* tracing_tags ("k:v" entries), NULL when not set */
    int enabled;               /* tracing_enabled: -1 not set, 0, 1 */
    const char *service, *env; /* service_target; NULL (or "*") is any */
} dd_rc_apm_t;

/* Parses a file's content ({"lib_config": {...}, "service_target": {...}}) into p. Null values
 * are "not set". Returns 0, or -1 with *err (in p). */
int dd_rc_parse_apm(apr_pool_t *p, const char *content, size_t len, dd_rc_apm_t *out,
                    const char **err);

/* service_target matches service and env (a NULL env matches only a wildcard). Returns 0 for
 * no match, else a score: 1 org-wide, 2 env, 3 service, 4 both named. */
int dd_rc_target_score(const dd_rc_apm_t *a, const char *service, const char *env);

/* A file held: what the state reports and the glue applies. */
typedef struct {
    const char *path, *id, *product;
    long long version; /* targets' custom.v */
    const char *hash;  /* sha256, hex */
    const char *content;
    size_t len;
    int apply_state; /* DD_RC_STATE_* */
    const char *apply_error;
} dd_rc_file_t;

typedef struct dd_rc_client dd_rc_client_t;

dd_rc_client_t *dd_rc_client_create(const dd_rc_identity_t *id); /* NULL: out of memory */
void dd_rc_client_destroy(dd_rc_client_t *c);

/* The next request's JSON body, malloc'd and NUL-terminated (free()), or NULL. */
char *dd_rc_request(dd_rc_client_t *c);

typedef enum { DD_RC_UNCHANGED = 0, DD_RC_CHANGED, DD_RC_MALFORMED } dd_rc_status_t;

typedef struct {
    const char *error; /* DD_RC_MALFORMED: why (valid until the next call) */
    int applied;       /* files that arrived and were acknowledged */
    int apply_errors;  /* files that arrived and could not be applied */
    int removed;       /* files no longer in client_configs */
} dd_rc_result_t;

/* Takes a response body (200). DD_RC_CHANGED: the files held changed (arrived, replaced,
 * removed); DD_RC_MALFORMED: nothing changed, the next request reports the error. "{}" (or an
 * empty body) is the agent's "nothing new since targets_version": unchanged. Targets without
 * client_configs: every file held is removed (dd-trace-cpp reverts them). */
dd_rc_status_t dd_rc_process(dd_rc_client_t *c, const char *body, size_t len, dd_rc_result_t *r);

/* The files held, in path order. */
int dd_rc_nfiles(const dd_rc_client_t *c);
const dd_rc_file_t *dd_rc_file(const dd_rc_client_t *c, int i);

/* The acknowledged file for service/env with the best dd_rc_target_score (the first in path
 * order among equals), or NULL. */
const dd_rc_file_t *dd_rc_select(const dd_rc_client_t *c, const char *service, const char *env);

/* Base64 as the agent writes it (standard alphabet, padded): decodes into p, NUL-terminated.
 * Returns -1 for anything else (a character out of the alphabet, a bad length). */
int dd_rc_base64_decode(apr_pool_t *p, const char *in, size_t len, char **out, size_t *out_len);

#endif
