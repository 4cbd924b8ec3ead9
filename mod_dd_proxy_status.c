/* SPDX-License-Identifier: Apache-2.0 */
/* mod_dd_proxy_status.c - the module's own counters (CONTRACT §7): one dd_stats_t in shared
 * memory that every child updates with atomics, shown in mod_status (server-status and ?auto)
 * and as JSON from `SetHandler dd-proxy-status`. */
#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_protocol.h"
#include "util_time.h"
#include "mod_status.h"

#include <stdlib.h>
#include <string.h>
#include <apr_shm.h>
#include <apr_strings.h>

#include "mod_dd_proxy.h"

APLOG_USE_MODULE(dd_proxy);

/* The counters live in anonymous shared memory made once, before the first children fork, and
 * kept across graceful restarts (ap_retained_data), so every child adds to the same numbers.
 * Until then (or if shared memory is refused) they count in this process only. */
static dd_stats_t process_stats;
dd_stats_t *dd_proxy_stats = &process_stats;

void dd_proxy_attach_stats(server_rec *s)
{
    apr_shm_t **shm = ap_retained_data_get("mod_dd_proxy_stats");
    apr_status_t rv;
    if (!shm) {
        shm = ap_retained_data_create("mod_dd_proxy_stats", sizeof(*shm));
        rv = apr_shm_create(shm, sizeof(dd_stats_t), NULL, s->process->pool);
        if (rv != APR_SUCCESS) {
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, s,
                         DDLOGNO(1020) "cannot create shared memory for the counters; each "
                                       "process will count on its own");
            *shm = NULL;
            return;
        }
        memset(apr_shm_baseaddr_get(*shm), 0, sizeof(dd_stats_t));
    }
    if (*shm)
        dd_proxy_stats = apr_shm_baseaddr_get(*shm);
}

/* ---------------------------------------------------------------------------------------- */
/* The module's own counters: mod_status and SetHandler dd-proxy-status                      */
/* ---------------------------------------------------------------------------------------- */

int dd_proxy_status_hook(request_rec *r, int flags)
{
    char text[sizeof(dd_proxy_stats->last_agent_error)];
    apr_int64_t when =
        atomic_load_explicit(&dd_proxy_stats->last_agent_error_time, memory_order_relaxed);
    struct {
        const char *name;
        atomic_uint_fast64_t *c;
    } rows[] = {
        {"RequestsTraced", &dd_proxy_stats->requests_traced},
        {"InferredSpans", &dd_proxy_stats->inferred_spans},
        {"ChunksQueued", &dd_proxy_stats->chunks_queued},
        {"ChunksSent", &dd_proxy_stats->chunks_sent},
        {"PayloadsSent", &dd_proxy_stats->payloads_sent},
        {"BytesSent", &dd_proxy_stats->bytes_sent},
        {"AgentErrors", &dd_proxy_stats->agent_errors},
        {"AgentRatesRejected", &dd_proxy_stats->agent_rates_rejected},
        {"AgentInfoFetched", &dd_proxy_stats->agent_info_fetched},
        {"AgentInfoErrors", &dd_proxy_stats->agent_info_errors},
        {"ClientStatsActive", &dd_proxy_stats->cstats_active},
        {"ClientStatsPayloadsSent", &dd_proxy_stats->cstats_payloads_sent},
        {"ClientStatsPayloadsFailed", &dd_proxy_stats->cstats_payloads_failed},
        {"ClientStatsBuckets", &dd_proxy_stats->cstats_buckets},
        {"ClientStatsKeysDropped", &dd_proxy_stats->cstats_keys_dropped},
        {"ClientStatsSpansDropped", &dd_proxy_stats->cstats_spans_dropped},
        {"P0TracesDropped", &dd_proxy_stats->p0_traces_dropped},
        {"P0SpansDropped", &dd_proxy_stats->p0_spans_dropped},
        {"ExitFlushesDetached", &dd_proxy_stats->exit_flushes_detached},
        {"ExitChunksHandedOff", &dd_proxy_stats->exit_chunks_handed_off},
        {"BaggageMalformed", &dd_proxy_stats->baggage_malformed},
        {"BaggageTruncated", &dd_proxy_stats->baggage_truncated},
        /* remote configuration (issue 13.3) */
        {"RemoteConfigPolls", &dd_proxy_stats->rc_polls},
        {"RemoteConfigPollErrors", &dd_proxy_stats->rc_poll_errors},
        {"RemoteConfigMalformed", &dd_proxy_stats->rc_malformed},
        {"RemoteConfigApplied", &dd_proxy_stats->rc_configs_applied},
        {"RemoteConfigApplyErrors", &dd_proxy_stats->rc_apply_errors},
        {"RemoteConfigTracesNotSent", &dd_proxy_stats->rc_traces_not_sent},
        {"RemoteConfigActiveSampleRate", &dd_proxy_stats->rc_active_sample_rate},
        {"RemoteConfigActiveSamplingRules", &dd_proxy_stats->rc_active_sampling_rules},
        {"RemoteConfigActiveTags", &dd_proxy_stats->rc_active_tags},
        {"RemoteConfigActiveTracingDisabled", &dd_proxy_stats->rc_active_tracing_disabled},
    };
    const char *row_fmt = (flags & AP_STATUS_SHORT) ? "DDProxy%s: %" APR_UINT64_T_FMT "\n"
                                                    : "<tr><td>%s</td><td>%" APR_UINT64_T_FMT
                                                      "</td></tr>\n";
    dd_stats_get_error_text(dd_proxy_stats, text, sizeof(text));

    if (!(flags & AP_STATUS_SHORT))
        ap_rputs("<hr />\n<h2>mod_dd_proxy</h2>\n<table>\n", r);
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        ap_rprintf(r, row_fmt, rows[i].name, (apr_uint64_t)dd_stats_get(rows[i].c));
    for (int i = DD_GW_NO_PROXY; i < DD_GW_STATUS_COUNT; i++)
        ap_rprintf(r, row_fmt,
                   apr_pstrcat(r->pool, "GatewayRejected_",
                               dd_gateway_status_name((dd_gw_status_t)i), NULL),
                   (apr_uint64_t)dd_stats_get(&dd_proxy_stats->gateway_rejected[i]));
    for (int i = 0; i < DD_DROP_REASON_COUNT; i++)
        ap_rprintf(
            r, row_fmt,
            apr_pstrcat(r->pool, "ChunksDropped_", dd_drop_reason_name((dd_drop_reason_t)i), NULL),
            (apr_uint64_t)dd_stats_get(&dd_proxy_stats->chunks_dropped[i]));
    dd_proxy_xray_status_rows(r, flags); /* X-Ray (issue 17) */
    if (flags & AP_STATUS_SHORT) {
        ap_rprintf(r, "DDProxyLastAgentErrorTime: %" APR_INT64_T_FMT "\n", when);
        return OK;
    }
    ap_rprintf(
        r, "<tr><td>LastAgentError</td><td>%s</td></tr>\n</table>\n",
        when ? ap_escape_html(r->pool, apr_psprintf(r->pool, "%s at %s", text,
                                                    ap_ht_time(r->pool, apr_time_from_sec(when),
                                                               "%Y-%m-%dT%H:%M:%SZ", 1)))
             : "none");
    return OK;
}

int dd_proxy_status_handler(request_rec *r)
{
    char *json;
    if (!r->handler || strcmp(r->handler, "dd-proxy-status") != 0)
        return DECLINED;
    if (r->method_number != M_GET)
        return HTTP_METHOD_NOT_ALLOWED;
    json = dd_stats_to_json(dd_proxy_stats);
    if (!json)
        return HTTP_INTERNAL_SERVER_ERROR;
    ap_set_content_type(r, "application/json");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    ap_rputs(json, r);
    ap_rputs("\n", r);
    free(json);
    return OK;
}
