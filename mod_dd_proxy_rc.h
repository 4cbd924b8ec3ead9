/* SPDX-License-Identifier: Apache-2.0 */
/* mod_dd_proxy_rc.h - remote configuration's glue (issue 13.3): each child's flusher thread
 * polls the agent's /v0.7/config (lib/dd_rc.c) and publishes what applies to each server;
 * request threads read it through one atomic pointer. */
#ifndef MOD_DD_PROXY_RC_H
#define MOD_DD_PROXY_RC_H

#include "httpd.h"
#include "dd_agent.h"
#include "dd_sampler.h"
#include "dd_span.h"
#include "dd_trace.h"
#include "mod_dd_proxy.h"

/* What remote configuration sets for one server (NULL / -1: httpd's own configuration). */
typedef struct {
    const dd_rules_t *rules; /* the server's rules with the remote ones and rate in them */
    const dd_tagset_t *tags; /* tracing_tags */
    int enabled;             /* tracing_enabled: -1, 0, 1 */
} dd_proxy_rc_t;

/* child_init, before the flusher starts: sets the poller up (nothing when DDRemoteConfig is
 * Off). runtime_id and tracer_version are the child's. */
void dd_proxy_rc_child_init(server_rec *s, const dd_agent_url_t *url, const char *runtime_id,
                            const char *tracer_version);
/* The flusher thread: what /info said (1: /v0.7/config announced; 0: not, or no answer). */
void dd_proxy_rc_agent_info(int announced);
/* The flusher thread, at each tick: polls when the interval has passed. */
void dd_proxy_rc_tick(void);
/* Child exit, once the flusher is stopped; busy: a request thread may still be running. */
void dd_proxy_rc_child_exit(int busy);

/* Request threads: what applies to server configuration c now, or NULL. Valid for a short
 * while only (see mod_dd_proxy_rc.c): use it and drop it, never keep it in the request. */
const dd_proxy_rc_t *dd_proxy_rc_for(const dd_srv_conf_t *c);
/* Request threads: adds tags to the trace's spans (as dd_trace_apply_tags, before the
 * configured tags so they win), copied into the trace's pool. */
void dd_proxy_rc_apply_tags(dd_trace_t *t, const dd_tagset_t *tags);

#endif
