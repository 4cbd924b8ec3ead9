/* SPDX-License-Identifier: Apache-2.0 */
/* dd_context.h - a trace context: what continues a trace across a process boundary.
 *
 * Extracted from inbound headers (dd_propagation.c) and injected into outbound ones. A context
 * with trace_id_low == 0 is "none".
 */
#ifndef DD_CONTEXT_H
#define DD_CONTEXT_H

#include <stdint.h>
#include <apr_tables.h>

#define DD_PRIORITY_UNSET (-128)

typedef struct {
    uint64_t trace_id_high; /* 0 for a 64-bit id */
    uint64_t trace_id_low;
    uint64_t parent_id;       /* the caller's span id; 0 = none */
    int priority;             /* sampling priority, DD_PRIORITY_UNSET when not given */
    const char *origin;       /* _dd.origin, or NULL */
    apr_array_header_t *tags; /* dd_meta_t: _dd.p.* propagated tags (not _dd.p.tid), or NULL */
} dd_context_t;

#endif
