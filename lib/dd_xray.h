/* SPDX-License-Identifier: Apache-2.0 */
/* dd_xray.h - AWS X-Ray: trace ids, the X-Amzn-Trace-Id header, and segment documents.
 *
 * inbound X-Amzn-Trace-Id -> dd_xray_header_t (this hop's view of the caller's context);
 * request facts + ids -> dd_xray_segment_t -> one or more UDP datagrams for the daemon
 * ({"format": "json", "version": 1}\n + a segment document, X-Ray's "segment documents"
 * reference). Nothing here does I/O; dd_xray_daemon.c sends what this builds.
 */
#ifndef DD_XRAY_H
#define DD_XRAY_H

#include <stddef.h>
#include <stdint.h>
#include <apr_pools.h>

/* The daemon header every datagram starts with (X-Ray's "Sending trace data to X-Ray"). */
#define DD_XRAY_DAEMON_HEADER "{\"format\": \"json\", \"version\": 1}\n"
/* A datagram's largest size, daemon header included: the daemon and the OpenTelemetry
 * receiver read 64 KiB buffers and a segment document "can be up to 64 kB"; 65000 also stays
 * under UDP's 65507-byte IPv4 payload. */
#define DD_XRAY_MAX_DATAGRAM 65000
/* Subsegments one request records (more proxied calls are counted, not recorded); a page
 * of server-side includes can proxy that many. */
#define DD_XRAY_MAX_SUBSEGMENTS 256
/* "Values must be strings (up to 250 characters)"; names up to 200. */
#define DD_XRAY_MAX_VALUE_CHARS 250
#define DD_XRAY_MAX_NAME_CHARS 200
/* Fields other than Root/Parent/Sampled/Self kept from an inbound header (as the Node SDK
 * bounds them), re-sent downstream as the Go SDK does. */
#define DD_XRAY_MAX_EXTRA_BYTES 256

/* ---- trace ids ------------------------------------------------------------------------- */

/* A trace id is 128 bits: "1-" + the top 32 bits (8 hex, Unix seconds) + "-" + the other 96
 * (24 hex). Writes the 35 characters plus NUL. */
void dd_xray_trace_id_format(uint64_t hi, uint64_t lo, char out[36]);
/* Parses exactly "1-<8 hex>-<24 hex>" (either case) from s[0..n). The low 64 bits must not be
 * 0 (they are the Datadog wire trace id). Returns 1 on success. */
int dd_xray_trace_id_parse(const char *s, size_t n, uint64_t *hi, uint64_t *lo);
/* The X-Ray trace id for a Datadog trace (hi, lo) that started at start_s (Unix seconds): the
 * same 128 bits when the top 32 are a time X-Ray accepts (28 days back to 5 minutes ahead of
 * start_s, as the OpenTelemetry exporter checks), else 1-<start_s>-00000000<lo> (what
 * dd-trace-java's xray style writes), so a 64-bit or random 128-bit Datadog id still gives a
 * current X-Ray trace id that contains the Datadog one. */
void dd_xray_trace_id_for(uint64_t hi, uint64_t lo, int64_t start_s, uint64_t *xhi, uint64_t *xlo);

/* ---- X-Amzn-Trace-Id ------------------------------------------------------------------- */

typedef enum {
    DD_XRAY_SAMPLED_NONE = 0, /* absent or an unknown value: this hop decides */
    DD_XRAY_SAMPLED_NO,       /* Sampled=0 */
    DD_XRAY_SAMPLED_YES,      /* Sampled=1 */
    DD_XRAY_SAMPLED_ASK,      /* Sampled=?: decide, and say the decision in the response */
} dd_xray_sampled_t;

typedef struct {
    int has_root;
    uint64_t root_hi, root_lo;
    uint64_t parent; /* the caller's (sub)segment id; 0 = none (a Root-only header) */
    dd_xray_sampled_t sampled;
    const char *extra; /* other fields, "Key=value;Key2=value2" (e.g. Lineage), or NULL */
} dd_xray_header_t;

/* Parses an X-Amzn-Trace-Id value: fields split on ';', "key=value" with optional blanks,
 * keys case-insensitive. Returns 1 and fills *out when the value is usable; returns 0 (and
 * *out says "no header") when it is not: a repeated Root/Parent/Sampled, a malformed Root or
 * Parent, a Parent without a Root, or a ',' (httpd joins a repeated header with ", ", and two
 * headers are not one context). Self (an ALB's own hop) is dropped; other fields are kept in
 * extra when they are printable tokens and fit DD_XRAY_MAX_EXTRA_BYTES (in order; a field that
 * does not fit is left out). extra is allocated from p. */
int dd_xray_header_parse(apr_pool_t *p, const char *value, dd_xray_header_t *out);

/* "Root=<trace>;Parent=<16 hex>;Sampled=<1|0>[;<extra>]", allocated from p. */
const char *dd_xray_header_format(apr_pool_t *p, uint64_t hi, uint64_t lo, uint64_t parent,
                                  int sampled, const char *extra);
/* The response header for Sampled=? (what the SDKs' middleware answers):
 * "Root=<trace>;Sampled=<1|0>". */
const char *dd_xray_response_header(apr_pool_t *p, uint64_t hi, uint64_t lo, int sampled);

/* ---- names and values ------------------------------------------------------------------- */

/* s made a valid segment name: characters X-Ray does not allow (anything but letters,
 * numbers, space separators and _ . : / % & # = + - @) removed, cut to 200 characters. NULL
 * when nothing is left. *changed (when given) says whether anything was removed or cut.
 * Non-ASCII letters, numbers and spaces are recognised by the C library's C.UTF-8 character
 * classes (close to Unicode's L, N and Z categories); without that locale, non-ASCII
 * characters are removed. */
const char *dd_xray_name_clean(apr_pool_t *p, const char *s, int *changed);
/* s as valid UTF-8 (bad bytes become U+FFFD) cut to max_chars characters. NULL for NULL. */
const char *dd_xray_value(apr_pool_t *p, const char *s, size_t max_chars);

/* The most specific origin X-Ray knows for this host, from what the host shows without a
 * network call (the SDKs' plugins ask the metadata services instead): Elastic Beanstalk (its
 * X-Ray environment file), ECS (ECS_CONTAINER_METADATA_URI[_V4] in the environment), EC2 (the
 * DMI board asset tag, which is the instance id on Nitro instances, or the DMI vendor
 * "Amazon EC2"). sysroot prefixes the file paths ("" in production). NULL when none; an EC2
 * instance id goes in *ec2_instance_id (or NULL). */
const char *dd_xray_origin_detect(apr_pool_t *p, const char *sysroot, const char **ec2_instance_id);

/* ---- segment documents ------------------------------------------------------------------ */

/* A proxied call: the subsegment whose id went downstream as Parent. */
typedef struct {
    uint64_t id;
    const char *name;   /* the backend's host */
    const char *method; /* may be NULL */
    const char *url;    /* without query string, may be NULL */
    int64_t start_us, end_us;
    int status;             /* 0: no answer (the call failed before one) */
    int64_t content_length; /* < 0: unknown */
    int failed;             /* the call itself failed (no backend answer): fault */
} dd_xray_subsegment_t;

/* One request's segment. Strings are plain C strings; the builder cleans and caps them. */
typedef struct {
    const char *name; /* a valid name (dd_xray_name_clean) */
    uint64_t id;
    uint64_t trace_hi, trace_lo;
    uint64_t parent_id; /* 0 = none */
    int64_t start_us, end_us;
    const char *method, *url, *user_agent, *client_ip; /* may be NULL */
    int x_forwarded_for;                               /* client_ip came from X-Forwarded-For */
    int status;                                        /* 0 = unknown */
    int64_t content_length;
    const char *origin;          /* AWS::EC2::Instance, ... or NULL */
    const char *ec2_instance_id; /* aws.ec2.instance_id, or NULL */
    const char *service_version; /* service.version, or NULL */
    const char *sdk_version;     /* aws.xray.sdk_version */
    const char *rule_name;       /* aws.xray.rule_name: the centralized rule that sampled it */
    /* The Datadog trace, for annotations (indexed: filter expressions) and metadata (the form
     * datadog-lambda writes for Datadog's X-Ray integration). */
    const char *dd_trace_id;  /* as Datadog's log correlation writes it: 32 hex / decimal */
    uint64_t dd_trace_id_low; /* decimal in dd_trace_id_64 and metadata trace-id */
    uint64_t dd_span_id;      /* the server span */
    int dd_priority;          /* DD_PRIORITY_UNSET-like values (< -100) are left out */
    const dd_xray_subsegment_t *subsegments;
    size_t nsubsegments;
} dd_xray_segment_t;

/* The datagrams of one segment, each malloc'd and starting with DD_XRAY_DAEMON_HEADER. */
typedef struct {
    char *data[DD_XRAY_MAX_SUBSEGMENTS + 1];
    size_t len[DD_XRAY_MAX_SUBSEGMENTS + 1];
    size_t n;
    int split;     /* the whole document passed the limit: subsegments were sent on their own */
    unsigned lost; /* documents that could not be made small enough (or out of memory) */
} dd_xray_datagrams_t;

/* Builds the segment document(s): one datagram when the whole document fits max_datagram;
 * else the segment without its subsegments plus one datagram per subsegment (type
 * "subsegment", with trace_id and parent_id), as the SDKs stream subsegments. A document still
 * too large (never with the caps above; counted in lost) is left out. Cleaned strings are
 * allocated from p (the request's pool: no pool of its own, whose global allocator would take a
 * lock); the datagrams are malloc'd. Returns 0, or -1 when not even the segment itself could
 * be made. Free with dd_xray_datagrams_free. */
int dd_xray_segment_encode(apr_pool_t *p, const dd_xray_segment_t *seg, size_t max_datagram,
                           dd_xray_datagrams_t *out);
void dd_xray_datagrams_free(dd_xray_datagrams_t *d);

#endif
