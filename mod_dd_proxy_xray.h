/* SPDX-License-Identifier: Apache-2.0 */
/* mod_dd_proxy_xray.h - the X-Ray glue's face to the rest of the module (issue 17).
 *
 * mod_dd_proxy_xray.c holds the X-Ray directives, its own hooks (registered from
 * register_hooks), the per-child segment queue and the flusher-thread work; the other files
 * only embed its server configuration, list its directives and call its tick and status rows.
 */
#ifndef MOD_DD_PROXY_XRAY_H
#define MOD_DD_PROXY_XRAY_H

#include "httpd.h"
#include "http_config.h"

#include "dd_flusher.h"

/* X-Ray's part of dd_srv_conf_t. */
typedef struct {
    int on;                   /* DDXRay, UNSET -> Off */
    const char *segment_name; /* DDXRaySegmentName, NULL -> AWS_XRAY_TRACING_NAME -> DDService */
    const char *daemon;       /* DDXRayDaemonAddress (main server), NULL -> env -> default */
    const char *name;         /* the segment name in force (post_config) */
} dd_xray_srv_conf_t;

void dd_proxy_xray_srv_init(dd_xray_srv_conf_t *c);
void dd_proxy_xray_srv_merge(dd_xray_srv_conf_t *c, const dd_xray_srv_conf_t *base,
                             const dd_xray_srv_conf_t *add);

const char *dd_proxy_xray_set_on(cmd_parms *cmd, void *dir, const char *arg);
const char *dd_proxy_xray_set_daemon(cmd_parms *cmd, void *dir, const char *a1, const char *a2);
const char *dd_proxy_xray_set_name(cmd_parms *cmd, void *dir, const char *arg);

#define DD_PROXY_XRAY_CMDS                                                                         \
    AP_INIT_TAKE1("DDXRay", dd_proxy_xray_set_on, NULL, RSRC_CONF,                                 \
                  "On|Off: record AWS X-Ray segments (default Off)"),                              \
        AP_INIT_TAKE12("DDXRayDaemonAddress", dd_proxy_xray_set_daemon, NULL, RSRC_CONF,           \
                       "host:port, or tcp:host:port udp:host:port (default 127.0.0.1:2000)"),      \
        AP_INIT_TAKE1("DDXRaySegmentName", dd_proxy_xray_set_name, NULL, RSRC_CONF,                \
                      "the X-Ray segment name (default the DDService name)")

void dd_proxy_xray_register_hooks(apr_pool_t *p);

/* The flusher thread's X-Ray work (dd_flusher_conf_t.tick): segments to the daemon, and the
 * sampling API when this child polls. */
void dd_proxy_xray_flusher_tick(void *ctx, dd_flusher_t *f, int final);

/* X-Ray's rows of the status page (inside the module's table; flags as mod_status gives). */
void dd_proxy_xray_status_rows(request_rec *r, int flags);

#endif
