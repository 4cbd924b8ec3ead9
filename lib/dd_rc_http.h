/* SPDX-License-Identifier: Apache-2.0 */
/* dd_rc_http.h - POST /v0.7/config to the agent (remote configuration, issue 13.3), on a
 * connection of its own so that the trace connection is left as it is. Used by the flusher
 * thread alone. */
#ifndef DD_RC_HTTP_H
#define DD_RC_HTTP_H

#include <stddef.h>
#include "dd_agent.h"

typedef struct dd_rc_http dd_rc_http_t;

/* Call from child_init (before threads run: the handle's descriptors are made close-on-exec,
 * see dd_agent_curl_cloexec). NULL when out of memory or libcurl fails. */
dd_rc_http_t *dd_rc_http_create(const dd_agent_url_t *url);
void dd_rc_http_destroy(dd_rc_http_t *h);

/* Posts body (JSON) within timeout_ms. Returns 0 for a 200 answer of at most max_body bytes,
 * with the body in *resp (malloc'd, NUL-terminated; free()) and its length; -1 otherwise with
 * *status (0: no answer) and error filled ("HTTP 404", curl's message, "answer too large"). */
int dd_rc_http_post(dd_rc_http_t *h, const char *body, size_t len, long timeout_ms, size_t max_body,
                    long *status, char **resp, size_t *resp_len, char *error, size_t size);

#endif
