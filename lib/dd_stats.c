/* dd_stats.c - names for the module's own counters (CONTRACT §7), as the status pages show
 * them. The counters themselves are plain atomics in dd_stats.h. */
#include "dd_stats.h"

const char *dd_drop_reason_name(dd_drop_reason_t r)
{
    switch (r) {
    case DD_DROP_QUEUE_FULL:
        return "queue_full";
    case DD_DROP_ENCODE_ERROR:
        return "encode_error";
    case DD_DROP_AGENT_ERROR:
        return "agent_error";
    case DD_DROP_REASON_COUNT:
        break;
    }
    return "unknown";
}
