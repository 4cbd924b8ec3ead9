/* SPDX-License-Identifier: Apache-2.0 */
/* dd_agent.h - the Datadog agent client: URL parsing and one POST /v0.4/traces with libcurl.
 *
 * Used only by the flusher thread (one dd_agent_t per child process; not thread-safe).
 */
#ifndef DD_AGENT_H
#define DD_AGENT_H

#include <stddef.h>
#include <apr_pools.h>

typedef struct {
    int is_unix;        /* 1 for unix:///path.sock */
    const char *base;   /* "http://host:port" or "https://host:port", the port always written
                         * (80/443 when the URL had none); for unix: "http://localhost" */
    const char *socket; /* unix socket path, or NULL */
} dd_agent_url_t;

/* Parses http://host[:port], https://host[:port] or unix:///absolute/path.sock. A trailing
 * "/" is allowed; any other path, a query, user info or another scheme is an error. On error
 * returns -1 and a message (pool-allocated) in *err. */
int dd_agent_url_parse(apr_pool_t *p, const char *url, dd_agent_url_t *out, const char **err);

/* Resolves the agent URL from the environment as Datadog tracers do: DD_TRACE_AGENT_URL, else
 * DD_AGENT_HOST + DD_TRACE_AGENT_PORT, else http://localhost:8126. Never NULL. */
const char *dd_agent_url_from_env(apr_pool_t *p);

typedef struct dd_agent dd_agent_t;

/* Initializes libcurl once per process (pthread_once; later calls do nothing). dd_agent_create
 * calls it too, but curl_global_init is not thread-safe with respect to other libcurl users in
 * the process on libcurl < 7.84, so the glue should call this early (child_init), before any
 * thread runs. libcurl is never de-initialized: other modules may share it. */
void dd_agent_global_init(void);

/* Creates a client for url (copied). tracer_version goes in Datadog-Meta-Tracer-Version,
 * lang_version in Datadog-Meta-Lang-Version (httpd's version); either may be NULL (header
 * left out). container_id may be NULL. Returns NULL when out of memory or when libcurl
 * cannot be initialized. */
dd_agent_t *dd_agent_create(const dd_agent_url_t *url, const char *tracer_version,
                            const char *lang_version, const char *container_id);
void dd_agent_destroy(dd_agent_t *a);

/* Any thread: makes the send in progress, if any, fail at once (its socket is shut down; curl
 * opens a new one for the next send). For child exit, so a hung agent holds nothing. */
void dd_agent_interrupt(dd_agent_t *a);

/* Makes every descriptor libcurl opens for this CURL handle (a CURL *) close-on-exec, so that
 * a CGI or any program an httpd child execs inherits none of them: the connections (opened with
 * SOCK_CLOEXEC through CURLOPT_OPENSOCKETFUNCTION), and the wake-up socket pair of the multi
 * handle that curl_easy_perform keeps inside the handle (libcurl 7.88 makes it without
 * CLOEXEC and no option reaches it: an empty transfer makes libcurl create it now, and the
 * descriptors that appeared meanwhile are marked). Call it right after curl_easy_init, before
 * other threads run (child_init), for every handle. Left over: the short-lived socket pair of
 * libcurl's threaded resolver while it resolves a host name (not for an IP address, "localhost"
 * or a unix socket). Returns 0, or -1 when the callback could not be set. */
int dd_agent_curl_cloexec(void *curl);

typedef struct {
    long http_status; /* 0 when no HTTP answer came (a cut-off answer keeps its status) */
    char error[256];  /* "" on success; else what went wrong (curl's message or "HTTP 500") */
    char *body;       /* the response body (NUL-terminated, capped at 64 KiB), or NULL */
    size_t body_len;
    int undelivered; /* on failure: 1 when the agent cannot have the whole payload (it was not
                      * all sent), so sending it again cannot make a duplicate */
} dd_agent_result_t;

/* What the agent's GET /info says (issue 13.1): the Datadog agent 7.28+ answers it; older
 * agents answer 404. Fields the answer lacks stay 0. */
typedef struct {
    char version[64];            /* "7.52.0", or "" */
    int v05_traces;              /* endpoints announced */
    int stats;                   /* /v0.6/stats: client-side stats accepted */
    int remote_config;           /* /v0.7/config */
    int client_drop_p0s;         /* it accepts that the tracer drops unsampled traces */
    int span_meta_structs;
    size_t peer_tags;            /* how many peer tags it aggregates on */
    long long max_request_bytes; /* config.max_request_bytes: the largest payload it takes */
} dd_agent_info_t;

/* Parses an /info body. Returns 0 for a JSON object (whatever fields it has), -1 otherwise. */
int dd_agent_info_parse(const char *body, size_t len, dd_agent_info_t *out);

/* GET /info within timeout_ms, on a connection of its own (the trace connection is left as
 * it is). Returns 0 and fills *out when the agent answered 200 with a JSON object; -1 with
 * error filled otherwise (a 404 from an older agent, garbage, no answer). */
int dd_agent_info(dd_agent_t *a, long timeout_ms, dd_agent_info_t *out, char *error, size_t size);

/* POSTs one payload (a msgpack array of ntraces chunks) to /v0.4/traces within timeout_ms.
 * Returns 0 when the agent answered 2xx, -1 otherwise; *res says what happened. Free
 * res->body with free(). */
int dd_agent_send(dd_agent_t *a, const char *body, size_t len, size_t ntraces, long timeout_ms,
                  dd_agent_result_t *res);

/* Client-side stats (issue 13.2). From the flusher thread, before a dd_agent_send: on = 1 adds
 * Datadog-Client-Computed-Stats: yes and the Datadog-Client-Dropped-P0-Traces / -Spans counts
 * to the next trace payloads (until called again); on = 0 leaves them out. */
void dd_agent_set_client_stats(dd_agent_t *a, int on, unsigned long long p0_traces,
                               unsigned long long p0_spans);

/* POSTs one stats payload (a msgpack ClientStatsPayload) to /v0.6/stats within timeout_ms, on
 * a connection of its own. Returns 0 when the agent answered 2xx, -1 otherwise (res->error;
 * res->body is always NULL). */
int dd_agent_send_stats(dd_agent_t *a, const char *body, size_t len, long timeout_ms,
                        dd_agent_result_t *res);

/* Reads this process's container id from /proc/self/cgroup, or NULL. malloc'd. */
char *dd_agent_container_id(void);
/* The same from a file in /proc/self/cgroup format (for tests). */
char *dd_agent_container_id_from_file(const char *path);

#endif
