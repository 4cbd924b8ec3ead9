/* SPDX-License-Identifier: Apache-2.0 */
/* test_xray.c - lib/dd_xray.c (trace ids, X-Amzn-Trace-Id, names, segment documents) and the
 * address/UDP parts of lib/dd_xray_daemon.c. Segment documents are parsed back with jansson
 * and checked field by field against X-Ray's segment document rules. */
#include "unit.h"
#include "dd_xray.h"
#include "dd_xray_daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <apr_file_io.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <jansson.h>

static apr_pool_t *pool;

#define ROOT "1-5759e988-bd862e3fe1be46a994272793"
#define PARENT "53995c3f42cd8ad8"

/* ---- ids --------------------------------------------------------------------------------- */

static void test_trace_ids(void)
{
    char out[36];
    uint64_t hi, lo;

    dd_xray_trace_id_format(0x5759e988bd862e3fULL, 0xe1be46a994272793ULL, out);
    CHECK_STR(out, ROOT);
    CHECK(dd_xray_trace_id_parse(ROOT, 35, &hi, &lo));
    CHECK_U64(hi, 0x5759e988bd862e3fULL);
    CHECK_U64(lo, 0xe1be46a994272793ULL);
    CHECK(dd_xray_trace_id_parse("1-5759E988-BD862E3FE1BE46A994272793", 35, &hi, &lo));
    CHECK_U64(lo, 0xe1be46a994272793ULL);
    CHECK(!dd_xray_trace_id_parse("2-5759e988-bd862e3fe1be46a994272793", 35, &hi, &lo));
    CHECK(!dd_xray_trace_id_parse("1-5759e988-bd862e3f0000000000000000", 35, &hi, &lo));
    CHECK(!dd_xray_trace_id_parse("1-5759e98g-bd862e3fe1be46a994272793", 35, &hi, &lo));
    CHECK(!dd_xray_trace_id_parse(ROOT, 34, &hi, &lo));

    /* A Datadog 128-bit id (time << 32) is the X-Ray id itself */
    int64_t now = 1800000000;
    uint64_t dd_hi = (uint64_t)now << 32, xhi, xlo;
    dd_xray_trace_id_for(dd_hi, 42, now, &xhi, &xlo);
    CHECK_U64(xhi, dd_hi);
    CHECK_U64(xlo, 42);
    dd_xray_trace_id_format(xhi, xlo, out);
    CHECK_STR(out, "1-6b49d200-00000000000000000000002a");
    /* 64-bit, random 128-bit, old and future ids: the start time, then 00000000 + low 64 */
    uint64_t odd[] = {0, 0x4bf92f3577b34da6ULL, (uint64_t)(now - 29 * 86400) << 32,
                      (uint64_t)(now + 301) << 32};
    for (size_t i = 0; i < sizeof(odd) / sizeof(*odd); i++) {
        dd_xray_trace_id_for(odd[i], 42, now, &xhi, &xlo);
        CHECK_U64(xhi, (uint64_t)now << 32);
        CHECK_U64(xlo, 42);
    }
    dd_xray_trace_id_for((uint64_t)(now - 27 * 86400) << 32, 42, now, &xhi, &xlo);
    CHECK_U64(xhi, (uint64_t)(now - 27 * 86400) << 32);
}

/* ---- the header -------------------------------------------------------------------------- */

static int parse(const char *v, dd_xray_header_t *h)
{
    return dd_xray_header_parse(pool, v, h);
}

static void test_header_parse(void)
{
    dd_xray_header_t h;

    CHECK(parse("Root=" ROOT ";Parent=" PARENT ";Sampled=1", &h));
    CHECK(h.has_root);
    CHECK_U64(h.root_hi, 0x5759e988bd862e3fULL);
    CHECK_U64(h.root_lo, 0xe1be46a994272793ULL);
    CHECK_U64(h.parent, 0x53995c3f42cd8ad8ULL);
    CHECK(h.sampled == DD_XRAY_SAMPLED_YES);
    CHECK_STR(h.extra, NULL);

    CHECK(parse("Root=" ROOT ";Sampled=0", &h) && h.sampled == DD_XRAY_SAMPLED_NO && !h.parent);
    CHECK(parse("Root=" ROOT ";Sampled=?", &h) && h.sampled == DD_XRAY_SAMPLED_ASK);
    CHECK(parse("Root=" ROOT, &h) && h.sampled == DD_XRAY_SAMPLED_NONE && h.has_root);
    CHECK(parse("Root=" ROOT ";Sampled=yes", &h) && h.sampled == DD_XRAY_SAMPLED_NONE);
    CHECK(parse("Sampled=?", &h) && !h.has_root && h.sampled == DD_XRAY_SAMPLED_ASK);
    CHECK(parse("", &h) && !h.has_root);
    /* keys in any case, blanks, empty fields, bare words */
    CHECK(parse(" root = " ROOT " ; PARENT=" PARENT ";;flag; sampled=1 ", &h));
    CHECK(h.has_root && h.parent == 0x53995c3f42cd8ad8ULL && h.sampled == DD_XRAY_SAMPLED_YES);

    /* Self is dropped, other fields kept in order */
    CHECK(parse("Self=1-67891234-12456789abcdef012345678;Root=" ROOT
                ";Lineage=a87bd80c:1|68fd508a:5;Parent=" PARENT ";CalledFrom=app",
                &h));
    CHECK_STR(h.extra, "Lineage=a87bd80c:1|68fd508a:5;CalledFrom=app");
    /* fields that are not tokens are not forwarded */
    CHECK(parse("Root=" ROOT ";bad key=1;k=v\x01;k2=\xc3\xa9;ok=1", &h));
    CHECK_STR(h.extra, "ok=1");

    /* 100 fields and an 8 KB value: still the context, extras within 256 bytes */
    {
        char *v = apr_pstrcat(pool, "Root=", ROOT, ";Parent=", PARENT, NULL);
        for (int i = 0; i < 100; i++)
            v = apr_psprintf(pool, "%s;Field%d=value%d", v, i, i);
        CHECK(parse(v, &h) && h.has_root && h.parent);
        CHECK(h.extra && strlen(h.extra) <= DD_XRAY_MAX_EXTRA_BYTES);
        CHECK(h.extra && strncmp(h.extra, "Field0=value0;Field1=value1", 27) == 0);
        char *big = apr_palloc(pool, 8200);
        memset(big, 'a', 8199);
        big[8199] = '\0';
        v = apr_pstrcat(pool, "Root=", ROOT, ";Big=", big, ";Sampled=1", NULL);
        CHECK(parse(v, &h) && h.sampled == DD_XRAY_SAMPLED_YES && h.extra == NULL);
    }

    const char *bad[] = {
        "Root=" ROOT ";Root=" ROOT,
        "Root=" ROOT ";Parent=" PARENT ";Parent=" PARENT,
        "Root=" ROOT ";Sampled=1;Sampled=0",
        "Root=" ROOT ";Parent=" PARENT ", Root=" ROOT, /* httpd-joined */
        "Root=1-5759e988-bd862e3fe1be46a99427279",     /* 23 hex */
        "Root=1-5759e98g-bd862e3fe1be46a994272793",    /* bad hex */
        "Root=1-5759e988-bd862e3f0000000000000000",    /* zero low half */
        "Root=" ROOT ";Parent=53995c3f42cd8ad",        /* 15 hex */
        "Root=" ROOT ";Parent=0000000000000000",
        "Root=" ROOT ";Parent=zzzzzzzzzzzzzzzz",
        "Parent=" PARENT ";Sampled=1", /* a parent in no trace */
        "Root=",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        int ok = parse(bad[i], &h);
        CHECK(!ok);
        CHECK(!h.has_root && !h.parent && h.sampled == DD_XRAY_SAMPLED_NONE);
        if (ok)
            fprintf(stderr, "  accepted: %s\n", bad[i]);
    }
    CHECK(!dd_xray_header_parse(pool, NULL, &h));
}

static void test_header_format(void)
{
    CHECK_STR(dd_xray_header_format(pool, 0x5759e988bd862e3fULL, 0xe1be46a994272793ULL,
                                    0x53995c3f42cd8ad8ULL, 1, NULL),
              "Root=" ROOT ";Parent=" PARENT ";Sampled=1");
    CHECK_STR(dd_xray_header_format(pool, 0x5759e988bd862e3fULL, 0xe1be46a994272793ULL, 0xa, 0,
                                    "Lineage=x:1"),
              "Root=" ROOT ";Parent=000000000000000a;Sampled=0;Lineage=x:1");
    CHECK_STR(dd_xray_response_header(pool, 0x5759e988bd862e3fULL, 0xe1be46a994272793ULL, 1),
              "Root=" ROOT ";Sampled=1");
    /* what goes out parses back to the same thing */
    dd_xray_header_t h;
    CHECK(parse(dd_xray_header_format(pool, 1, 2, 3, 1, "A=b;C=d"), &h));
    CHECK(h.root_hi == 1 && h.root_lo == 2 && h.parent == 3 && h.sampled == DD_XRAY_SAMPLED_YES);
    CHECK_STR(h.extra, "A=b;C=d");
}

/* ---- names and values ---------------------------------------------------------------------- */

static void test_names(void)
{
    int changed;
    CHECK_STR(dd_xray_name_clean(pool, "my-svc_1.example.com:8080/a%b&c#d=e+f@g", &changed),
              "my-svc_1.example.com:8080/a%b&c#d=e+f@g");
    CHECK(!changed);
    CHECK_STR(dd_xray_name_clean(pool, "orders httpd", &changed), "orders httpd");
    CHECK(!changed);
    CHECK_STR(dd_xray_name_clean(pool, "bad!name*with$chars\\", &changed), "badnamewithchars");
    CHECK(changed);
    CHECK_STR(dd_xray_name_clean(pool, "tab\there\n", &changed), "tabhere");
    CHECK(dd_xray_name_clean(pool, "!!!", &changed) == NULL && changed);
    /* letters of other scripts stay, other symbols go; bad UTF-8 goes */
    CHECK_STR(dd_xray_name_clean(pool, "caf\xc3\xa9-\xe4\xb8\xad\xe2\x98\x83", &changed),
              "caf\xc3\xa9-\xe4\xb8\xad");
    CHECK(changed);
    CHECK_STR(dd_xray_name_clean(pool,
                                 "a\xff"
                                 "b",
                                 &changed),
              "ab");
    CHECK(changed);
    /* 200 characters at most (characters, not bytes) */
    char long_name[301];
    memset(long_name, 'n', 300);
    long_name[300] = '\0';
    const char *c = dd_xray_name_clean(pool, long_name, &changed);
    CHECK(c && strlen(c) == 200 && changed);
    char *wide = apr_palloc(pool, 2 * 250 + 1);
    for (int i = 0; i < 250; i++)
        memcpy(wide + 2 * i, "\xc3\xa9", 2);
    wide[500] = '\0';
    c = dd_xray_name_clean(pool, wide, &changed);
    CHECK(c && strlen(c) == 400 && changed);

    /* values: valid UTF-8, at most n characters */
    CHECK_STR(dd_xray_value(pool, "abc", 250), "abc");
    CHECK_STR(dd_xray_value(pool, "abcdef", 3), "abc");
    CHECK_STR(dd_xray_value(pool, "\xc3\xa9\xc3\xa9\xc3\xa9", 2), "\xc3\xa9\xc3\xa9");
    CHECK_STR(dd_xray_value(pool, "a\xff", 10), "a\xef\xbf\xbd");
    CHECK(dd_xray_value(pool, NULL, 10) == NULL);
}

/* ---- segment documents --------------------------------------------------------------------- */

static const char *S(json_t *o, const char *path)
{
    char *copy = apr_pstrdup(pool, path), *state, *k;
    json_t *v = o;
    for (k = apr_strtok(copy, ".", &state); k && v; k = apr_strtok(NULL, ".", &state))
        v = json_object_get(v, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static json_t *J(json_t *o, const char *path)
{
    char *copy = apr_pstrdup(pool, path), *state, *k;
    json_t *v = o;
    for (k = apr_strtok(copy, ".", &state); k && v; k = apr_strtok(NULL, ".", &state))
        v = json_object_get(v, k);
    return v;
}

/* The datagram's header, and its document parsed. */
static json_t *doc(const char *data, size_t len)
{
    size_t h = strlen(DD_XRAY_DAEMON_HEADER);
    json_error_t err;
    CHECK(len > h && memcmp(data, DD_XRAY_DAEMON_HEADER, h) == 0);
    CHECK(strchr(data + h, '\n') == NULL); /* compact: one line */
    json_t *j = json_loadb(data + h, len - h, JSON_REJECT_DUPLICATES, &err);
    CHECK(json_is_object(j));
    if (!j)
        fprintf(stderr, "  not JSON: %s (%s)\n", data + h, err.text);
    return j;
}

static dd_xray_segment_t base_segment(void)
{
    dd_xray_segment_t s;
    memset(&s, 0, sizeof(s));
    s.name = "orders-httpd";
    s.id = 0x1234567890abcdefULL;
    s.trace_hi = 0x5759e988bd862e3fULL;
    s.trace_lo = 0xe1be46a994272793ULL;
    s.parent_id = 0x53995c3f42cd8ad8ULL;
    s.start_us = 1800000000123456LL;
    s.end_us = 1800000000223457LL;
    s.method = "GET";
    s.url = "http://api.example.com/orders/42";
    s.user_agent = "curl/8.0";
    s.client_ip = "203.0.113.7";
    s.x_forwarded_for = 1;
    s.status = 200;
    s.content_length = 11;
    s.sdk_version = "0.1.0";
    s.dd_trace_id = "5759e988bd862e3fe1be46a994272793";
    s.dd_trace_id_low = 0xe1be46a994272793ULL;
    s.dd_span_id = 0x1234567890abcdefULL;
    s.dd_priority = 1;
    return s;
}

static void test_segment_fields(void)
{
    dd_xray_segment_t s = base_segment();
    dd_xray_datagrams_t d;
    json_t *j;

    CHECK(dd_xray_segment_encode(pool, &s, DD_XRAY_MAX_DATAGRAM, &d) == 0);
    CHECK(d.n == 1 && !d.split && !d.lost);
    j = doc(d.data[0], d.len[0]);
    CHECK_STR(S(j, "name"), "orders-httpd");
    CHECK_STR(S(j, "id"), "1234567890abcdef");
    CHECK_STR(S(j, "trace_id"), ROOT);
    CHECK_STR(S(j, "parent_id"), PARENT);
    /* epoch seconds with the microseconds */
    CHECK(json_is_real(J(j, "start_time")) &&
          (int64_t)(json_real_value(J(j, "start_time")) * 1e6 + 0.5) == 1800000000123456LL);
    CHECK(json_is_real(J(j, "end_time")) &&
          (int64_t)(json_real_value(J(j, "end_time")) * 1e6 + 0.5) == 1800000000223457LL);
    CHECK(strstr(d.data[0], "\"start_time\":1800000000.123456") != NULL);
    CHECK_STR(S(j, "http.request.method"), "GET");
    CHECK_STR(S(j, "http.request.url"), "http://api.example.com/orders/42");
    CHECK_STR(S(j, "http.request.user_agent"), "curl/8.0");
    CHECK_STR(S(j, "http.request.client_ip"), "203.0.113.7");
    CHECK(json_is_true(J(j, "http.request.x_forwarded_for")));
    CHECK(json_integer_value(J(j, "http.response.status")) == 200);
    CHECK(json_integer_value(J(j, "http.response.content_length")) == 11);
    CHECK(!J(j, "error") && !J(j, "throttle") && !J(j, "fault") && !J(j, "in_progress"));
    CHECK(!J(j, "origin") && !J(j, "service") && !J(j, "subsegments") && !J(j, "type"));
    CHECK_STR(S(j, "aws.xray.sdk"), "mod_dd_proxy");
    CHECK_STR(S(j, "aws.xray.sdk_version"), "0.1.0");
    CHECK(!J(j, "aws.xray.rule_name"));
    CHECK_STR(S(j, "annotations.dd_trace_id"), "5759e988bd862e3fe1be46a994272793");
    CHECK_STR(S(j, "annotations.dd_trace_id_64"), "16266516598257821587");
    CHECK_STR(S(j, "annotations.dd_span_id"), "1311768467294899695");
    CHECK_STR(S(j, "metadata.datadog.trace.trace-id"), "16266516598257821587");
    CHECK_STR(S(j, "metadata.datadog.trace.parent-id"), "1311768467294899695");
    CHECK_STR(S(j, "metadata.datadog.trace.sampling-priority"), "1");
    /* the daemon finds ids with "id":"(.*?)" */
    CHECK(strstr(d.data[0], "\"id\":\"1234567890abcdef\"") != NULL);
    json_decref(j);
    dd_xray_datagrams_free(&d);

    /* no parent, no user agent, no xff; origin, version, rule name, EC2 */
    s.parent_id = 0;
    s.user_agent = NULL;
    s.x_forwarded_for = 0;
    s.origin = "AWS::EC2::Instance";
    s.ec2_instance_id = "i-0123456789abcdef0";
    s.service_version = "1.2.3";
    s.rule_name = "orders";
    s.content_length = -1;
    s.dd_priority = -128;
    CHECK(dd_xray_segment_encode(pool, &s, DD_XRAY_MAX_DATAGRAM, &d) == 0);
    j = doc(d.data[0], d.len[0]);
    CHECK(!J(j, "parent_id") && !J(j, "http.request.user_agent"));
    CHECK(!J(j, "http.request.x_forwarded_for") && !J(j, "http.response.content_length"));
    CHECK_STR(S(j, "origin"), "AWS::EC2::Instance");
    CHECK_STR(S(j, "aws.ec2.instance_id"), "i-0123456789abcdef0");
    CHECK_STR(S(j, "service.version"), "1.2.3");
    CHECK_STR(S(j, "aws.xray.rule_name"), "orders");
    CHECK(!J(j, "metadata.datadog.trace.sampling-priority"));
    json_decref(j);
    dd_xray_datagrams_free(&d);

    /* error, throttle, fault */
    struct {
        int status, error, throttle, fault;
    } st[] = {{200, 0, 0, 0}, {302, 0, 0, 0}, {404, 1, 0, 0}, {429, 1, 1, 0},
              {499, 1, 0, 0}, {500, 0, 0, 1}, {503, 0, 0, 1}, {599, 0, 0, 1}};
    for (size_t i = 0; i < sizeof(st) / sizeof(*st); i++) {
        s.status = st[i].status;
        CHECK(dd_xray_segment_encode(pool, &s, DD_XRAY_MAX_DATAGRAM, &d) == 0);
        j = doc(d.data[0], d.len[0]);
        CHECK(json_is_true(J(j, "error")) == st[i].error);
        CHECK(json_is_true(J(j, "throttle")) == st[i].throttle);
        CHECK(json_is_true(J(j, "fault")) == st[i].fault);
        json_decref(j);
        dd_xray_datagrams_free(&d);
    }

    /* hostile strings: escaped, valid UTF-8, at most 250 characters */
    char *ua = apr_palloc(pool, 9000);
    memset(ua, '"', 8999);
    ua[8999] = '\0';
    s = base_segment();
    s.user_agent = ua;
    s.url = "http://h/\xff\xfe\x01";
    CHECK(dd_xray_segment_encode(pool, &s, DD_XRAY_MAX_DATAGRAM, &d) == 0);
    j = doc(d.data[0], d.len[0]);
    CHECK(S(j, "http.request.user_agent") && strlen(S(j, "http.request.user_agent")) == 250);
    CHECK_STR(S(j, "http.request.url"), "http://h/\xef\xbf\xbd\xef\xbf\xbd\x01");
    json_decref(j);
    dd_xray_datagrams_free(&d);
}

static void test_subsegments(void)
{
    dd_xray_segment_t s = base_segment();
    dd_xray_subsegment_t subs[DD_XRAY_MAX_SUBSEGMENTS];
    dd_xray_datagrams_t d;
    json_t *j, *arr;

    memset(subs, 0, sizeof(subs));
    for (int i = 0; i < DD_XRAY_MAX_SUBSEGMENTS; i++) {
        subs[i].id = 0x1000 + (uint64_t)i;
        subs[i].name = "127.0.0.1";
        subs[i].method = "POST";
        subs[i].url = "http://127.0.0.1:8080/backend";
        subs[i].start_us = s.start_us + 10;
        subs[i].end_us = s.start_us + 90;
        subs[i].status = i == 1 ? 503 : i == 2 ? 429 : 200;
        subs[i].content_length = i == 0 ? 11 : -1;
        subs[i].failed = i == 3;
    }
    s.subsegments = subs;
    s.nsubsegments = 4;
    CHECK(dd_xray_segment_encode(pool, &s, DD_XRAY_MAX_DATAGRAM, &d) == 0);
    CHECK(d.n == 1 && !d.split);
    j = doc(d.data[0], d.len[0]);
    arr = J(j, "subsegments");
    CHECK(json_array_size(arr) == 4);
    json_t *s0 = json_array_get(arr, 0);
    CHECK_STR(S(s0, "id"), "0000000000001000");
    CHECK_STR(S(s0, "name"), "127.0.0.1");
    CHECK_STR(S(s0, "namespace"), "remote");
    CHECK_STR(S(s0, "http.request.method"), "POST");
    CHECK_STR(S(s0, "http.request.url"), "http://127.0.0.1:8080/backend");
    CHECK(json_integer_value(J(s0, "http.response.status")) == 200);
    CHECK(json_integer_value(J(s0, "http.response.content_length")) == 11);
    CHECK(!J(s0, "type") && !J(s0, "trace_id") && !J(s0, "parent_id") && !J(s0, "traced"));
    CHECK((int64_t)(json_real_value(J(s0, "start_time")) * 1e6 + 0.5) == s.start_us + 10);
    CHECK(json_is_true(J(json_array_get(arr, 1), "fault")));
    CHECK(json_is_true(J(json_array_get(arr, 2), "throttle")));
    CHECK(json_is_true(J(json_array_get(arr, 2), "error")));
    CHECK(json_is_true(J(json_array_get(arr, 3), "fault")));
    json_decref(j);
    dd_xray_datagrams_free(&d);

    /* Over the limit: the segment alone, then every subsegment as its own document */
    s.nsubsegments = DD_XRAY_MAX_SUBSEGMENTS;
    CHECK(dd_xray_segment_encode(pool, &s, 4000, &d) == 0);
    CHECK(d.split && !d.lost);
    CHECK(d.n == 1 + DD_XRAY_MAX_SUBSEGMENTS);
    for (size_t i = 0; i < d.n; i++)
        CHECK(d.len[i] <= 4000);
    j = doc(d.data[0], d.len[0]);
    CHECK(!J(j, "subsegments") && S(j, "name") && S(j, "annotations.dd_span_id"));
    json_decref(j);
    j = doc(d.data[5], d.len[5]);
    CHECK_STR(S(j, "type"), "subsegment");
    CHECK_STR(S(j, "trace_id"), ROOT);
    CHECK_STR(S(j, "parent_id"), "1234567890abcdef");
    CHECK_STR(S(j, "id"), "0000000000001004");
    CHECK(J(j, "start_time") && J(j, "end_time"));
    json_decref(j);
    dd_xray_datagrams_free(&d);

    /* The segment alone does not fit: nothing, all counted */
    CHECK(dd_xray_segment_encode(pool, &s, 200, &d) == -1);
    CHECK(d.n == 0 && d.lost == 1 + DD_XRAY_MAX_SUBSEGMENTS);
    /* more than the maximum: only the maximum is encoded */
    dd_xray_subsegment_t many[DD_XRAY_MAX_SUBSEGMENTS + 5];
    memset(many, 0, sizeof(many));
    for (size_t i = 0; i < sizeof(many) / sizeof(*many); i++)
        many[i] = subs[0];
    s.subsegments = many;
    s.nsubsegments = sizeof(many) / sizeof(*many);
    CHECK(dd_xray_segment_encode(pool, &s, DD_XRAY_MAX_DATAGRAM, &d) == 0);
    CHECK(d.n >= 1);
    j = doc(d.data[0], d.len[0]);
    size_t count = d.split ? d.n - 1 : json_array_size(J(j, "subsegments"));
    CHECK(count == DD_XRAY_MAX_SUBSEGMENTS);
    json_decref(j);
    dd_xray_datagrams_free(&d);
}

/* ---- origin ------------------------------------------------------------------------------ */

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_origin(void)
{
    char dir[] = "/tmp/ddxray-origin-XXXXXX";
    const char *inst;
    CHECK(mkdtemp(dir) != NULL);
    unsetenv("ECS_CONTAINER_METADATA_URI_V4");
    unsetenv("ECS_CONTAINER_METADATA_URI");
    CHECK(dd_xray_origin_detect(pool, dir, &inst) == NULL && inst == NULL);
    const char *dmi = apr_pstrcat(pool, dir, "/sys/devices/virtual/dmi/id", NULL);
    CHECK(apr_dir_make_recursive(dmi, APR_OS_DEFAULT, pool) == APR_SUCCESS);
    write_file(apr_pstrcat(pool, dmi, "/sys_vendor", NULL), "Amazon EC2\n");
    CHECK_STR(dd_xray_origin_detect(pool, dir, &inst), "AWS::EC2::Instance");
    CHECK(inst == NULL);
    write_file(apr_pstrcat(pool, dmi, "/board_asset_tag", NULL), "i-0123456789abcdef0\n");
    CHECK_STR(dd_xray_origin_detect(pool, dir, &inst), "AWS::EC2::Instance");
    CHECK_STR(inst, "i-0123456789abcdef0");
    setenv("ECS_CONTAINER_METADATA_URI_V4", "http://169.254.170.2/v4/abc", 1);
    CHECK_STR(dd_xray_origin_detect(pool, dir, &inst), "AWS::ECS::Container");
    unsetenv("ECS_CONTAINER_METADATA_URI_V4");
    const char *eb = apr_pstrcat(pool, dir, "/var/elasticbeanstalk/xray", NULL);
    CHECK(apr_dir_make_recursive(eb, APR_OS_DEFAULT, pool) == APR_SUCCESS);
    write_file(apr_pstrcat(pool, eb, "/environment.conf", NULL), "{}");
    CHECK_STR(dd_xray_origin_detect(pool, dir, &inst), "AWS::ElasticBeanstalk::Environment");
    CHECK(system(apr_pstrcat(pool, "rm -rf ", dir, NULL)) == 0);
}

/* ---- the daemon's address and UDP ---------------------------------------------------------- */

static void test_address(void)
{
    dd_xray_addr_t a;
    const char *err;
    CHECK(dd_xray_addr_parse(pool, "127.0.0.1:2000", &a, &err) == 0);
    CHECK_STR(a.udp_host, "127.0.0.1");
    CHECK(a.udp_port == 2000 && a.tcp_port == 2000);
    CHECK_STR(a.tcp_host, "127.0.0.1");
    CHECK(dd_xray_addr_parse(pool, "xray-daemon.local:3000", &a, &err) == 0);
    CHECK_STR(a.udp_host, "xray-daemon.local");
    CHECK(dd_xray_addr_parse(pool, " tcp:10.0.0.1:2001  udp:10.0.0.2:2002 ", &a, &err) == 0);
    CHECK_STR(a.tcp_host, "10.0.0.1");
    CHECK(a.tcp_port == 2001);
    CHECK_STR(a.udp_host, "10.0.0.2");
    CHECK(a.udp_port == 2002);
    CHECK(dd_xray_addr_parse(pool, "UDP:h1:1 TCP:h2:2", &a, &err) == 0);
    CHECK_STR(a.udp_host, "h1");
    CHECK_STR(a.tcp_host, "h2");
    CHECK(dd_xray_addr_parse(pool, "[::1]:2000", &a, &err) == 0);
    CHECK_STR(a.udp_host, "::1");
    const char *bad[] = {
        "",        "   ",           "127.0.0.1",       "127.0.0.1:",      ":2000",     "h:0",
        "h:65536", "h:20x0",        "::1:2000",        "[::1]",           "[::1]2000", "[zz]:1",
        "udp:h:1", "tcp:h:1",       "udp:h:1 udp:h:2", "tcp:h:1 tcp:h:2", "h:1 h:2",   "a b c d",
        "h o:1",   "udp:h:1 tcp:h", "h\x01:1",         "http://h:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        err = NULL;
        int rc = dd_xray_addr_parse(pool, bad[i], &a, &err);
        CHECK(rc == -1 && err && *err);
        if (rc == 0)
            fprintf(stderr, "  accepted: '%s'\n", bad[i]);
    }
}

static void test_udp(void)
{
    int rx = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    char buf[70000], err[256];
    dd_xray_udp_t *u;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(rx, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    CHECK(getsockname(rx, (struct sockaddr *)&sa, &sl) == 0);
    u = dd_xray_udp_open("127.0.0.1", ntohs(sa.sin_port), err, sizeof(err));
    CHECK(u != NULL);
    if (!u)
        return;
    CHECK(dd_xray_udp_send(u, "hello", 5) == 0);
    CHECK(recv(rx, buf, sizeof(buf), 0) == 5 && memcmp(buf, "hello", 5) == 0);
    /* close-on-exec and non-blocking: the only fd the UDP client opened is the newest one */
    int fd = dup(0);
    close(fd);
    CHECK(fd > 0);
    for (int f = 3; f < fd; f++) {
        int fl = fcntl(f, F_GETFD), st = fcntl(f, F_GETFL);
        struct stat sb;
        if (fl < 0 || fstat(f, &sb) != 0 || !S_ISSOCK(sb.st_mode) || f == rx)
            continue;
        CHECK(fl & FD_CLOEXEC);
        CHECK(st & O_NONBLOCK);
    }
    /* too large for a datagram: an error, not a crash */
    memset(buf, 'x', sizeof(buf));
    CHECK(dd_xray_udp_send(u, buf, sizeof(buf)) == EMSGSIZE);
    dd_xray_udp_close(u);
    /* nobody listens: refused on a later send (connected socket), never blocking */
    close(rx);
    u = dd_xray_udp_open("127.0.0.1", ntohs(sa.sin_port), err, sizeof(err));
    CHECK(u != NULL);
    int rc = 0;
    for (int i = 0; i < 5 && rc == 0; i++) {
        rc = dd_xray_udp_send(u, "x", 1);
        usleep(1000);
    }
    CHECK(rc == ECONNREFUSED);
    dd_xray_udp_close(u);
    CHECK(dd_xray_udp_open("no-such-host.invalid", 2000, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "no-such-host.invalid") != NULL);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    test_trace_ids();
    test_header_parse();
    test_header_format();
    test_names();
    test_segment_fields();
    test_subsegments();
    test_origin();
    test_address();
    test_udp();
    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
