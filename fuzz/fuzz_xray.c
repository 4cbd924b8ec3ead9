/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_xray.c - libFuzzer target for the X-Ray parsers (issue 17): X-Amzn-Trace-Id, and the
 * daemon's GetSamplingRules and SamplingTargets answers.
 *
 * The input's first byte picks the parser; the rest is its input.
 *   header:  dd_xray_header_parse must not crash; what it accepts formats back into a header
 *            that parses to the same Root, Parent, decision and extra fields, the extra fields
 *            printable and within DD_XRAY_MAX_EXTRA_BYTES; a segment built with the header's
 *            ids and the input as every string field encodes to valid datagrams
 *   rules:   dd_xray_rules_parse, then the rules installed and a request sampled
 *   targets: dd_xray_targets_apply on a sampler holding one rule, then a report built
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <jansson.h>

#include "dd_xray.h"
#include "dd_xray_sampler.h"

static apr_pool_t *root_pool;
static void *sampler_mem;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    apr_initialize();
    apr_pool_create(&root_pool, NULL);
    sampler_mem = malloc(dd_xray_sampler_size());
    return 0;
}

static void fuzz_header(apr_pool_t *p, const char *s)
{
    dd_xray_header_t h, back;
    dd_xray_segment_t seg;
    dd_xray_datagrams_t d;
    const char *out;

    if (!dd_xray_header_parse(p, s, &h))
        return;
    if (h.extra) {
        if (strlen(h.extra) > DD_XRAY_MAX_EXTRA_BYTES)
            abort();
        for (const char *c = h.extra; *c; c++)
            if (*c <= 0x20 || *c >= 0x7f || *c == ',')
                abort();
    }
    if (!h.has_root)
        return;
    out = dd_xray_header_format(p, h.root_hi, h.root_lo, h.parent ? h.parent : 1,
                                h.sampled == DD_XRAY_SAMPLED_YES, h.extra);
    if (!dd_xray_header_parse(p, out, &back) || back.root_hi != h.root_hi ||
        back.root_lo != h.root_lo || back.parent != (h.parent ? h.parent : 1) ||
        (back.extra == NULL) != (h.extra == NULL) || (h.extra && strcmp(back.extra, h.extra)))
        abort();
    memset(&seg, 0, sizeof(seg));
    seg.name = dd_xray_name_clean(p, s, NULL);
    seg.id = h.parent ? h.parent : 1;
    seg.trace_hi = h.root_hi;
    seg.trace_lo = h.root_lo;
    seg.method = seg.url = seg.user_agent = seg.client_ip = s;
    seg.dd_trace_id = s;
    seg.status = 200;
    seg.content_length = -1;
    if (dd_xray_segment_encode(p, &seg, DD_XRAY_MAX_DATAGRAM, &d) == 0) {
        for (size_t i = 0; i < d.n; i++) {
            json_error_t err;
            json_t *j;
            size_t hl = strlen(DD_XRAY_DAEMON_HEADER);
            if (d.len[i] > DD_XRAY_MAX_DATAGRAM || memcmp(d.data[i], DD_XRAY_DAEMON_HEADER, hl))
                abort();
            j = json_loadb(d.data[i] + hl, d.len[i] - hl, 0, &err);
            if (!json_is_object(j))
                abort();
            json_decref(j);
        }
    }
    dd_xray_datagrams_free(&d);
}

static void fuzz_rules(const char *s, size_t n)
{
    dd_xray_rule_t rules[DD_XRAY_MAX_RULES * 2];
    size_t count = 0;
    char *tok = NULL;
    unsigned skipped = 0;
    dd_xray_sampler_t *x = dd_xray_sampler_init(sampler_mem, dd_xray_sampler_size());
    dd_xray_sample_req_t q = {"h.example", "GET", "/a/b", "svc", "AWS::EC2::Instance"};
    dd_xray_decision_t dec;

    if (dd_xray_rules_parse(s, n, rules, DD_XRAY_MAX_RULES * 2, &count, &tok, &skipped) == 0) {
        if (count > DD_XRAY_MAX_RULES * 2)
            abort();
        dd_xray_sampler_set_rules(x, rules, count, 1800000000);
        dd_xray_sample(x, &q, 1800000000, &dec);
    }
    free(tok);
}

static void fuzz_targets(const char *s, size_t n)
{
    const char *one = "{\"SamplingRuleRecords\":[{\"SamplingRule\":{\"RuleName\":\"r\","
                      "\"ResourceARN\":\"*\",\"Priority\":1,\"FixedRate\":0.5,\"ReservoirSize\":1,"
                      "\"ServiceName\":\"*\",\"ServiceType\":\"*\",\"Host\":\"*\","
                      "\"HTTPMethod\":\"*\",\"URLPath\":\"*\",\"Version\":1}}]}";
    dd_xray_rule_t rules[2];
    size_t count = 0, len;
    char *tok = NULL, *req;
    unsigned skipped = 0;
    int refresh;
    dd_xray_sampler_t *x = dd_xray_sampler_init(sampler_mem, dd_xray_sampler_size());
    dd_xray_sample_req_t q = {"h", "GET", "/", "svc", NULL};
    dd_xray_decision_t dec;

    dd_xray_rules_parse(one, strlen(one), rules, 2, &count, &tok, &skipped);
    dd_xray_sampler_set_rules(x, rules, count, 1800000000);
    dd_xray_sample(x, &q, 1800000000, &dec);
    dd_xray_targets_apply(x, s, n, 1800000001, &refresh);
    for (int i = 0; i < 4; i++)
        dd_xray_sample(x, &q, 1800000002, &dec);
    req = dd_xray_targets_request(x, 1800000100, &len);
    free(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    apr_pool_t *p;
    char *s;
    if (size < 1)
        return 0;
    apr_pool_create(&p, root_pool);
    s = apr_pstrmemdup(p, (const char *)data + 1, size - 1);
    switch (data[0] % 3) {
    case 0:
        fuzz_header(p, s);
        break;
    case 1:
        fuzz_rules((const char *)data + 1, size - 1);
        break;
    default:
        fuzz_targets((const char *)data + 1, size - 1);
    }
    apr_pool_destroy(p);
    return 0;
}
