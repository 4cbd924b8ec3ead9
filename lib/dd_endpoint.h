/* SPDX-License-Identifier: Apache-2.0 */
/* dd_endpoint.h - http.endpoint (resource renaming): a URL path with the segments that look
 * like parameters replaced by placeholders, as dd-trace-cpp's infer_endpoint does it
 * (src/datadog/endpoint_inferral.cpp), byte for byte.
 *
 * The path is cut at the first '?' (dd-trace-cpp takes the path from http.url, without the
 * query). Then: no leading '/' -> "/"; empty segments are skipped; at most 8 segments are
 * kept; a trailing '/' stays when the path ended with one or had more than 8 segments.
 * Each segment becomes the first placeholder that fits, else stays as it is:
 *   {param:int}     [1-9][0-9]+               2 or more digits, the first not 0
 *   {param:int_id}  [0-9._-]{3,}              3 or more (dd-trace-cpp wants no digit in it)
 *   {param:hex}     [A-Fa-f0-9]{6,}           6 or more, with a decimal digit
 *   {param:hex_id}  [A-Fa-f0-9._-]{6,}        6 or more, with a decimal digit
 *   {param:str}     .{20,} | .*[%&'()*+,:=@].*
 * dd-trace-js 5.132 (calculateHttpEndpoint) differs in two ways: it drops the trailing '/',
 * and its {param:int_id} needs a digit ("/a/..." stays "/a/..." there, "/a/{param:int_id}"
 * here). */
#ifndef DD_ENDPOINT_H
#define DD_ENDPOINT_H

#include <stddef.h>
#include <apr_pools.h>

/* When http.endpoint is set (dd-trace-cpp's HttpEndpointCalculationMode). */
#define DD_ENDPOINT_OFF 0      /* never (DDTraceResourceRenaming Off, the default) */
#define DD_ENDPOINT_FALLBACK 1 /* when the span has no http.route */
#define DD_ENDPOINT_ALWAYS 2   /* also next to http.route (...AlwaysSimplified On) */

#define DD_ENDPOINT_MAX_SEGMENTS 8

/* The endpoint of the path's first len bytes (NUL-terminated, in p). Linear in len. */
const char *dd_endpoint_infer(apr_pool_t *p, const char *path, size_t len);

#endif
