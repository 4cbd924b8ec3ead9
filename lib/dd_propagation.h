/* SPDX-License-Identifier: Apache-2.0 */
/* dd_propagation.h - trace context in and out of HTTP headers (CONTRACT §4).
 *
 * Extraction reads inbound headers in the configured order of styles; the first style that
 * yields a valid context wins, and malformed headers are simply not a context (never an error
 * for the request). Injection writes the outbound headers of every configured style, replacing
 * inbound ones, so mod_proxy forwards our span as the parent.
 */
#ifndef DD_PROPAGATION_H
#define DD_PROPAGATION_H

#include <stdint.h>
#include <apr_pools.h>
#include <apr_tables.h>
#include "dd_context.h"

typedef enum {
    DD_STYLE_DATADOG = 1,
    DD_STYLE_TRACECONTEXT,
    DD_STYLE_B3MULTI,
    DD_STYLE_XRAY,
    DD_STYLE_BAGGAGE, /* W3C baggage (dd_baggage.h): items, not a trace context */
} dd_style_t;

#define DD_STYLES_MAX 5

typedef struct {
    int n;                           /* 0 = none */
    dd_style_t order[DD_STYLES_MAX]; /* no duplicates */
    int extract_first;               /* DD_TRACE_PROPAGATION_EXTRACT_FIRST: the first context
                                        found is all there is (no tracestate merge, no links) */
} dd_styles_t;

/* Parses "datadog tracecontext" (names separated by spaces and/or commas, case-insensitive;
 * "b3" is accepted as b3multi; "none" alone means no style). Duplicates are ignored. On error
 * returns -1 with a message naming the bad word in *err (pool-allocated). extract_first is 0. */
int dd_styles_parse(apr_pool_t *p, const char *s, dd_styles_t *out, const char **err);

/* A style's name as DDPropagationStyle spells it ("datadog", "tracecontext" ...). */
const char *dd_style_name(dd_style_t style);

/* The default: datadog tracecontext baggage (the tracers' DD_TRACE_PROPAGATION_STYLE). */
void dd_styles_default(dd_styles_t *out);

/* Is style one of *styles? */
int dd_styles_have(const dd_styles_t *styles, dd_style_t style);

/* What extraction can tell beyond dd_context_t. */
typedef struct {
    dd_context_t ctx;
    dd_style_t style; /* the style that won */
    const char
        *tracestate; /* inbound tracestate without the dd= member (for re-injection), or NULL */
    const char *xray_extra;        /* xray: the header's other fields (Lineage=...), or NULL */
    const char *propagation_error; /* e.g. "extract_max_size", "decoding_error": set as
                                      _dd.propagation_error on the root; or NULL */
    const char *w3c_parent;        /* _dd.parent_id for the root (16 hex): tracestate dd= p:, or
                                      (W3C re-parenting) the datadog parent id; or NULL */
    apr_array_header_t *links;     /* dd_span_link_t: contexts of other traces the request also
                                      carried (reason terminated_context), or NULL */
    const char *link_tracestate;   /* the inbound tracestate header, whole, when the context came
                                      with one (tracecontext, or merged from it): what a link to
                                      this context carries; or NULL */
} dd_extracted_t;

/* The span link to x itself that DD_TRACE_PROPAGATION_BEHAVIOR_EXTRACT=restart puts on the new
 * trace's root (attributes reason = propagation_behavior_extract, context_headers = the style
 * that won), as dd-trace-js does; allocated from p. */
apr_array_header_t *dd_restart_links(apr_pool_t *p, const dd_extracted_t *x);

/* Each style on its own: returns 1 and fills *out when the headers hold a valid context of
 * that style, else 0 (out untouched on 0 except scratch). */
int dd_extract_datadog(apr_pool_t *p, const apr_table_t *h, dd_extracted_t *out);
int dd_extract_tracecontext(apr_pool_t *p, const apr_table_t *h, dd_extracted_t *out);
int dd_extract_b3multi(apr_pool_t *p, const apr_table_t *h, dd_extracted_t *out);
int dd_extract_xray(apr_pool_t *p, const apr_table_t *h, dd_extracted_t *out);

/* Tries the styles in order; returns 1 with the first valid context, as Datadog's tracers do
 * (dd-trace-js TextMapPropagator, DD_TRACE_PROPAGATION_EXTRACT_FIRST=false):
 * - a tracecontext context of the same 128-bit trace as the first one lends it its tracestate
 *   (other vendors' members), its priority when the first had none, and, when its parent id
 *   differs, its parent: the first context's parent then goes to w3c_parent (tracestate p:
 *   when sent, else the x-datadog-parent-id, as 16 hex);
 * - a context of another trace id in a later style becomes a span link (attributes reason =
 *   terminated_context, context_headers = the style's name). */
int dd_extract(apr_pool_t *p, const apr_table_t *h, const dd_styles_t *styles, dd_extracted_t *out);

/* What to inject: this process's span as the parent. */
typedef struct {
    uint64_t trace_id_high;
    uint64_t trace_id_low;
    uint64_t span_id;               /* the server span */
    int priority;                   /* DD_PRIORITY_UNSET when undecided */
    const char *origin;             /* or NULL */
    const apr_array_header_t *tags; /* dd_meta_t: _dd.p.* trace tags (incl. _dd.p.dm; _dd.p.tid is
                                       derived from trace_id_high), or NULL */
    const char *tracestate;         /* other vendors' tracestate members to keep, or NULL */
    const char *baggage;            /* the baggage header to send (style baggage), or NULL: none */
} dd_inject_t;

/* Writes the headers of every style in *styles into h, replacing inbound ones. The values
 * are allocated from p, and the datadog and tracecontext ones (and in->origin) are put into h
 * without a copy (apr_table_setn): p and in->origin must live as long as h (in httpd: r->pool
 * and r->headers_in). Returns 1 when x-datadog-tags had to be left out because it would pass 512
 * bytes (the caller marks the root _dd.propagation_error=inject_max_size), else 0. */
int dd_inject(apr_pool_t *p, apr_table_t *h, const dd_styles_t *styles, const dd_inject_t *in);

#define DD_TAGS_MAX_BYTES 512

#endif
