/* SPDX-License-Identifier: Apache-2.0 */
/* test_xray_sampler.c - lib/dd_xray_sampler.c: X-Ray's rule matching, reservoirs, targets,
 * the poller (against a fake sampling API) and the lease; the shared state under threads
 * (run under ThreadSanitizer by check.sh) and across processes (fork over shared memory). */
#include "unit.h"
#include "dd_xray_sampler.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <apr_general.h>
#include <apr_strings.h>
#include <jansson.h>

#define NOW 1800000000LL

static dd_xray_sampler_t *fresh(void)
{
    static void *mem;
    free(mem);
    mem = aligned_alloc(64, (dd_xray_sampler_size() + 63) / 64 * 64);
    return dd_xray_sampler_init(mem, dd_xray_sampler_size());
}

/* A SamplingRuleRecord. */
static char *rule_json(const char *name, int prio, double rate, int size, const char *svc,
                       const char *type, const char *host, const char *method, const char *path)
{
    char *s;
    int n = asprintf(&s,
                     "{\"SamplingRule\":{\"RuleName\":\"%s\",\"RuleARN\":\"arn:aws:xray:r:1:"
                     "sampling-rule/%s\",\"ResourceARN\":\"*\",\"Priority\":%d,\"FixedRate\":%g,"
                     "\"ReservoirSize\":%d,\"ServiceName\":\"%s\",\"ServiceType\":\"%s\","
                     "\"Host\":\"%s\",\"HTTPMethod\":\"%s\",\"URLPath\":\"%s\",\"Version\":1,"
                     "\"Attributes\":{}},\"CreatedAt\":1.7e9,\"ModifiedAt\":1.7e9}",
                     name, name, prio, rate, size, svc, type, host, method, path);
    return n < 0 ? NULL : s;
}

static char *records(const char *a, const char *b, const char *c)
{
    char *s;
    int n = asprintf(&s, "{\"SamplingRuleRecords\":[%s%s%s%s%s]}", a ? a : "", b ? "," : "",
                     b ? b : "", c ? "," : "", c ? c : "");
    return n < 0 ? NULL : s;
}

static int load(dd_xray_sampler_t *s, const char *json, int64_t now, unsigned *skipped)
{
    dd_xray_rule_t rules[DD_XRAY_MAX_RULES * 2];
    size_t n = 0;
    char *tok = NULL;
    unsigned sk = 0;
    int rc = dd_xray_rules_parse(json, strlen(json), rules, DD_XRAY_MAX_RULES * 2, &n, &tok, &sk);
    free(tok);
    if (skipped)
        *skipped = sk;
    if (rc != 0)
        return -1;
    return dd_xray_sampler_set_rules(s, rules, n, now);
}

static int decide(dd_xray_sampler_t *s, const char *host, const char *method, const char *path,
                  const char *svc, int64_t now, char *rule)
{
    dd_xray_sample_req_t q = {host, method, path, svc, NULL};
    dd_xray_decision_t d;
    dd_xray_sample(s, &q, now, &d);
    if (rule)
        strcpy(rule, d.rule);
    return d.sampled;
}

static void test_wildcards(void)
{
    CHECK(dd_xray_wildcard_match("*", ""));
    CHECK(dd_xray_wildcard_match("*", "anything"));
    CHECK(dd_xray_wildcard_match("", ""));
    CHECK(!dd_xray_wildcard_match("", "x"));
    CHECK(dd_xray_wildcard_match("/api/*", "/api/orders/1"));
    CHECK(!dd_xray_wildcard_match("/api/*", "/apx/orders"));
    CHECK(dd_xray_wildcard_match("GET", "get"));
    CHECK(dd_xray_wildcard_match("*.EXAMPLE.com", "api.example.COM"));
    CHECK(dd_xray_wildcard_match("/a?c", "/abc"));
    CHECK(!dd_xray_wildcard_match("/a?c", "/ac"));
    CHECK(dd_xray_wildcard_match("*a*b*c*", "xxaxxbxxcxx"));
    CHECK(!dd_xray_wildcard_match("*a*b*c*", "xxcxxbxxaxx"));
}

static void test_local_default(void)
{
    dd_xray_sampler_t *s = fresh();
    int kept = 0;
    CHECK(strlen(dd_xray_sampler_client_id(s)) == 24);
    CHECK(dd_xray_sampler_rule_count(s, NOW) == 0);
    /* the first request of each second, then about 5 % */
    for (int sec = 0; sec < 20; sec++) {
        char rule[40];
        CHECK(decide(s, "h", "GET", "/", "svc", NOW + sec, rule) == 1);
        CHECK_STR(rule, "");
        for (int i = 0; i < 999; i++)
            kept += decide(s, "h", "GET", "/", "svc", NOW + sec, NULL);
    }
    /* 19,980 draws at 5 %: 999 expected, sigma 31 */
    CHECK(kept > 999 - 160 && kept < 999 + 160);
    if (!(kept > 839 && kept < 1159))
        fprintf(stderr, "  local default kept %d of 19980 past the reservoir\n", kept);
}

static void test_rules_parse(void)
{
    dd_xray_rule_t rules[8];
    size_t n = 0;
    char *tok = NULL;
    unsigned skipped = 0;
    char *good = rule_json("orders", 10, 0.5, 3, "orders-*", "*", "*.example.com", "GET", "/o/*");
    char *def = rule_json("Default", 10000, 0.05, 1, "*", "*", "*", "*", "*");
    char *v2 = rule_json("v2", 1, 1, 1, "*", "*", "*", "*", "*");
    char *json;
    v2[strlen(v2) - strlen("1,\"Attributes\":{}},\"CreatedAt\":1.7e9,\"ModifiedAt\":1.7e9}")] = '2';
    json = records(good, def, v2);
    CHECK(dd_xray_rules_parse(json, strlen(json), rules, 8, &n, &tok, &skipped) == 0);
    CHECK(n == 2 && skipped == 1 && tok == NULL);
    CHECK_STR(rules[0].name, "orders");
    CHECK(rules[0].priority == 10 && rules[0].fixed_rate == 0.5 && rules[0].reservoir_size == 3);
    CHECK_STR(rules[0].service, "orders-*");
    CHECK_STR(rules[0].host, "*.example.com");
    CHECK_STR(rules[0].method, "GET");
    CHECK_STR(rules[0].path, "/o/*");
    CHECK(!rules[0].is_default && rules[1].is_default);
    free(json);

    /* not usable: another resource, attributes, missing / over-long / wrong-typed fields */
    const char *bad[] = {
        "{\"RuleName\":\"a\",\"ResourceARN\":\"arn:x\",\"Priority\":1,\"FixedRate\":1,"
        "\"ReservoirSize\":1,\"ServiceName\":\"*\",\"ServiceType\":\"*\",\"Host\":\"*\","
        "\"HTTPMethod\":\"*\",\"URLPath\":\"*\",\"Version\":1}",
        "{\"RuleName\":\"a\",\"ResourceARN\":\"*\",\"Priority\":1,\"FixedRate\":1,"
        "\"ReservoirSize\":1,\"ServiceName\":\"*\",\"ServiceType\":\"*\",\"Host\":\"*\","
        "\"HTTPMethod\":\"*\",\"URLPath\":\"*\",\"Version\":1,\"Attributes\":{\"k\":\"v\"}}",
        "{\"RuleName\":\"a\",\"ResourceARN\":\"*\",\"Priority\":1,\"FixedRate\":1,"
        "\"ReservoirSize\":1,\"ServiceName\":\"*\",\"ServiceType\":\"*\",\"Host\":\"*\","
        "\"HTTPMethod\":\"*\",\"Version\":1}",
        "{\"RuleName\":\"a\",\"ResourceARN\":\"*\",\"Priority\":1,\"FixedRate\":1.5,"
        "\"ReservoirSize\":1,\"ServiceName\":\"*\",\"ServiceType\":\"*\",\"Host\":\"*\","
        "\"HTTPMethod\":\"*\",\"URLPath\":\"*\",\"Version\":1}",
        "{\"RuleName\":\"a\",\"ResourceARN\":\"*\",\"Priority\":0,\"FixedRate\":1,"
        "\"ReservoirSize\":1,\"ServiceName\":\"*\",\"ServiceType\":\"*\",\"Host\":\"*\","
        "\"HTTPMethod\":\"*\",\"URLPath\":\"*\",\"Version\":1}",
        "{\"RuleName\":\"a\",\"ResourceARN\":\"*\",\"Priority\":1,\"FixedRate\":1,"
        "\"ReservoirSize\":-1,\"ServiceName\":\"*\",\"ServiceType\":\"*\",\"Host\":\"*\","
        "\"HTTPMethod\":\"*\",\"URLPath\":\"*\",\"Version\":1}",
        "{\"RuleName\":\"a\",\"ResourceARN\":\"*\",\"Priority\":1,\"FixedRate\":1,"
        "\"ReservoirSize\":1,\"ServiceName\":\"*\",\"ServiceType\":\"*\",\"Host\":\"*\","
        "\"HTTPMethod\":\"GETGETGETGET\",\"URLPath\":\"*\",\"Version\":1}",
        "{\"RuleName\":\"abcdefghijklmnopqrstuvwxyz0123456\",\"ResourceARN\":\"*\","
        "\"Priority\":1,\"FixedRate\":1,\"ReservoirSize\":1,\"ServiceName\":\"*\","
        "\"ServiceType\":\"*\",\"Host\":\"*\",\"HTTPMethod\":\"*\",\"URLPath\":\"*\","
        "\"Version\":1}",
        "{\"RuleName\":5}",
        "\"not an object\"",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        n = 0;
        skipped = 0;
        char *j;
        CHECK(asprintf(&j, "{\"SamplingRuleRecords\":[{\"SamplingRule\":%s},5]}", bad[i]) > 0);
        CHECK(dd_xray_rules_parse(j, strlen(j), rules, 8, &n, &tok, &skipped) == 0);
        CHECK(n == 0 && skipped == 2);
        free(j);
    }
    /* NextToken; garbage answers */
    json = "{\"SamplingRuleRecords\":[],\"NextToken\":\"page2\"}";
    n = 0;
    CHECK(dd_xray_rules_parse(json, strlen(json), rules, 8, &n, &tok, &skipped) == 0);
    CHECK_STR(tok, "page2");
    free(tok);
    const char *garbage[] = {"",
                             "not json",
                             "[]",
                             "{}",
                             "{\"SamplingRuleRecords\":5}",
                             "null",
                             "{\"SamplingRuleRecords\":[],\"SamplingRuleRecords\":[]}"};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(*garbage); i++)
        CHECK(dd_xray_rules_parse(garbage[i], strlen(garbage[i]), rules, 8, &n, &tok, &skipped) ==
              -1);
    free(good);
    free(def);
    free(v2);
}

static void test_matching(void)
{
    dd_xray_sampler_t *s = fresh();
    char rule[40];
    char *a = rule_json("api", 5, 1, 0, "shop", "*", "*.example.com", "POST", "/api/*");
    char *b = rule_json("none", 1, 0, 0, "*", "*", "*", "*", "/health");
    char *d = rule_json("Default", 0, 0, 0, "*", "*", "*", "*", "*");
    char *json = records(a, b, d);
    CHECK(load(s, json, NOW, NULL) == 0);
    CHECK(dd_xray_sampler_rule_count(s, NOW) == 3);
    /* matches "api" (rate 1) on every attribute, case-insensitively */
    CHECK(decide(s, "www.EXAMPLE.com", "post", "/api/orders", "shop", NOW, rule) == 1);
    CHECK_STR(rule, "api");
    /* each attribute that differs sends it to Default (rate 0, no reservoir) */
    CHECK(decide(s, "www.example.org", "POST", "/api/o", "shop", NOW, rule) == 0);
    CHECK(decide(s, "www.example.com", "GET", "/api/o", "shop", NOW, NULL) == 0);
    CHECK(decide(s, "www.example.com", "POST", "/other", "shop", NOW, NULL) == 0);
    CHECK(decide(s, "www.example.com", "POST", "/api/o", "other", NOW, NULL) == 0);
    /* an attribute the request does not have matches anything */
    CHECK(decide(s, NULL, "POST", "/api/o", "shop", NOW, NULL) == 1);
    /* priority: "none" (1) before "api" (5) */
    CHECK(decide(s, "www.example.com", "POST", "/health", "shop", NOW, NULL) == 0);
    /* service type: a rule for another origin does not apply to a known origin */
    char *t = rule_json("ec2only", 1, 1, 0, "*", "AWS::EC2::Instance", "*", "*", "*");
    free(json);
    json = records(t, d, NULL);
    CHECK(load(s, json, NOW, NULL) == 0);
    dd_xray_sample_req_t q = {"h", "GET", "/", "svc", "AWS::ECS::Container"};
    dd_xray_decision_t dec;
    dd_xray_sample(s, &q, NOW, &dec);
    CHECK(dec.sampled == 0);
    q.type = "AWS::EC2::Instance";
    dd_xray_sample(s, &q, NOW, &dec);
    CHECK(dec.sampled == 1);
    CHECK_STR(dec.rule, "ec2only");
    q.type = NULL; /* no origin: ServiceType ignored */
    dd_xray_sample(s, &q, NOW, &dec);
    CHECK(dec.sampled == 1);
    /* no Default and nothing matches: the local default rule (first of the second kept) */
    free(json);
    json = records(b, NULL, NULL);
    CHECK(load(s, json, NOW, NULL) == 0);
    CHECK(decide(s, "h", "GET", "/x", "svc", NOW + 1, rule) == 1);
    CHECK_STR(rule, "");
    CHECK(decide(s, "h", "GET", "/health", "svc", NOW + 1, NULL) == 0);
    /* rules older than an hour are not used */
    CHECK(dd_xray_sampler_rule_count(s, NOW + 3601) == 0);
    CHECK(decide(s, "h", "GET", "/health", "svc", NOW + 3601, NULL) == 1);
    free(a);
    free(b);
    free(d);
    free(t);
    free(json);
}

static void test_reservoir(void)
{
    dd_xray_sampler_t *s = fresh();
    char *r = rule_json("r", 1, 0, 5, "*", "*", "*", "*", "*");
    char *r0 = rule_json("r0", 1, 0, 0, "*", "*", "*", "*", "*");
    char *json = records(r, NULL, NULL), *req;
    size_t len;
    int kept;
    CHECK(load(s, json, NOW, NULL) == 0);
    /* no quota yet: one borrowed per second (ReservoirSize > 0), FixedRate 0 for the rest */
    for (int sec = 0; sec < 3; sec++) {
        kept = 0;
        for (int i = 0; i < 50; i++)
            kept += decide(s, "h", "GET", "/", "svc", NOW + sec, NULL);
        CHECK(kept == 1);
    }
    /* the report: 150 requests, 3 borrowed, none sampled from a quota */
    req = dd_xray_targets_request(s, NOW + 3, &len);
    CHECK(req != NULL);
    if (req) {
        json_t *j = json_loads(req, 0, NULL), *d0;
        d0 = json_array_get(json_object_get(j, "SamplingStatisticsDocuments"), 0);
        CHECK_STR(json_string_value(json_object_get(d0, "RuleName")), "r");
        CHECK_STR(json_string_value(json_object_get(d0, "ClientID")), dd_xray_sampler_client_id(s));
        CHECK(json_integer_value(json_object_get(d0, "RequestCount")) == 150);
        CHECK(json_integer_value(json_object_get(d0, "BorrowCount")) == 3);
        CHECK(json_integer_value(json_object_get(d0, "SampledCount")) == 0);
        CHECK(json_integer_value(json_object_get(d0, "Timestamp")) == NOW + 3);
        json_decref(j);
        free(req);
    }
    /* counters were reset: nothing to report */
    CHECK(dd_xray_targets_request(s, NOW + 3, &len) == NULL);

    /* a quota of 3 per second until NOW + 10 */
    int refresh = -1;
    const char *t = "{\"SamplingTargetDocuments\":[{\"RuleName\":\"r\",\"FixedRate\":0,"
                    "\"ReservoirQuota\":3,\"ReservoirQuotaTTL\":1800000010.0,\"Interval\":10}],"
                    "\"LastRuleModification\":1700000000,\"UnprocessedStatistics\":[]}";
    CHECK(dd_xray_targets_apply(s, t, strlen(t), NOW + 3, &refresh) == 0);
    CHECK(refresh == 0);
    for (int sec = 4; sec <= 10; sec++) {
        kept = 0;
        for (int i = 0; i < 50; i++)
            kept += decide(s, "h", "GET", "/", "svc", NOW + sec, NULL);
        CHECK(kept == 3);
    }
    /* rule reported only after its Interval */
    CHECK(dd_xray_targets_request(s, NOW + 12, &len) == NULL);
    req = dd_xray_targets_request(s, NOW + 13, &len);
    CHECK(req && strstr(req, "\"SampledCount\":21") && strstr(req, "\"BorrowCount\":0"));
    free(req);
    /* the TTL passed (epoch seconds, not milliseconds): borrowing again */
    kept = 0;
    for (int i = 0; i < 50; i++)
        kept += decide(s, "h", "GET", "/", "svc", NOW + 11, NULL);
    CHECK(kept == 1);
    /* a quota of 0 means none: with the TTL current, no borrowing, FixedRate only */
    t = "{\"SamplingTargetDocuments\":[{\"RuleName\":\"r\",\"FixedRate\":0,\"ReservoirQuota\":0,"
        "\"ReservoirQuotaTTL\":1800000100}]}";
    CHECK(dd_xray_targets_apply(s, t, strlen(t), NOW + 12, &refresh) == 0);
    kept = 0;
    for (int i = 0; i < 50; i++)
        kept += decide(s, "h", "GET", "/", "svc", NOW + 13, NULL);
    CHECK(kept == 0);
    /* FixedRate from the target: 1 keeps all */
    t = "{\"SamplingTargetDocuments\":[{\"RuleName\":\"r\",\"FixedRate\":1}]}";
    CHECK(dd_xray_targets_apply(s, t, strlen(t), NOW + 13, &refresh) == 0);
    CHECK(decide(s, "h", "GET", "/", "svc", NOW + 14, NULL) == 1);
    /* refresh the rules: the same rule keeps its slot (its quota), its rate returns to the
     * rule's FixedRate (0) */
    CHECK(load(s, json, NOW + 14, NULL) == 0);
    kept = 0;
    for (int i = 0; i < 50; i++)
        kept += decide(s, "h", "GET", "/", "svc", NOW + 15, NULL);
    CHECK(kept == 0); /* quota 0 still current until 1800000100 */
    /* ReservoirSize 0: no borrowing */
    free(json);
    json = records(r0, NULL, NULL);
    CHECK(load(s, json, NOW + 20, NULL) == 0);
    CHECK(decide(s, "h", "GET", "/", "svc", NOW + 20, NULL) == 0);

    /* refresh triggers: LastRuleModification at/after the fetch; a 4xx; 5xx / bad entries */
    t = "{\"SamplingTargetDocuments\":[],\"LastRuleModification\":1800000020}";
    CHECK(dd_xray_targets_apply(s, t, strlen(t), NOW + 21, &refresh) == 0 && refresh == 1);
    t = "{\"SamplingTargetDocuments\":[],\"LastRuleModification\":1800000019.5}";
    CHECK(dd_xray_targets_apply(s, t, strlen(t), NOW + 21, &refresh) == 0 && refresh == 0);
    t = "{\"UnprocessedStatistics\":[{\"RuleName\":\"r0\",\"ErrorCode\":\"400\"}]}";
    CHECK(dd_xray_targets_apply(s, t, strlen(t), NOW + 21, &refresh) == 0 && refresh == 1);
    t = "{\"UnprocessedStatistics\":[{\"RuleName\":\"r0\",\"ErrorCode\":\"500\"}]}";
    CHECK(dd_xray_targets_apply(s, t, strlen(t), NOW + 21, &refresh) == 1 && refresh == 0);
    t = "{\"SamplingTargetDocuments\":[{\"RuleName\":\"unknown\",\"FixedRate\":1},5]}";
    CHECK(dd_xray_targets_apply(s, t, strlen(t), NOW + 21, &refresh) == 1);
    const char *garbage[] = {"", "<html>", "[]", "{\"SamplingTargetDocuments\":5}", "7"};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(*garbage); i++)
        CHECK(dd_xray_targets_apply(s, garbage[i], strlen(garbage[i]), NOW, &refresh) == -1);
    free(r);
    free(r0);
    free(json);
}

static void test_lease(void)
{
    dd_xray_sampler_t *s = fresh();
    CHECK(dd_xray_sampler_lease(s, 100, NOW, 30));
    CHECK(dd_xray_sampler_lease(s, 100, NOW + 10, 30)); /* renewed */
    CHECK(!dd_xray_sampler_lease(s, 200, NOW + 39, 30));
    CHECK(dd_xray_sampler_lease(s, 200, NOW + 41, 30)); /* expired: taken over */
    CHECK(!dd_xray_sampler_lease(s, 100, NOW + 42, 30));
    dd_xray_sampler_release(s, 100); /* not the holder: nothing */
    CHECK(!dd_xray_sampler_lease(s, 100, NOW + 42, 30));
    dd_xray_sampler_release(s, 200);
    CHECK(dd_xray_sampler_lease(s, 100, NOW + 42, 30));
}

/* ---- the poller against a fake API -------------------------------------------------------- */

typedef struct {
    int calls;
    char paths[32][32];
    char *bodies[32];
    const char *rules[4]; /* pages */
    const char *targets;
    int fail;    /* -1: no answer; else an HTTP status */
    int garbage; /* answer "not json" */
} fake_api_t;

static int fake_post(void *ctx, const char *path, const char *body, size_t len, long timeout_ms,
                     long *status, char **resp, size_t *resp_len, char *err, size_t errlen)
{
    fake_api_t *f = ctx;
    const char *out;
    (void)len;
    (void)timeout_ms;
    if (f->calls < 32) {
        snprintf(f->paths[f->calls], sizeof(f->paths[0]), "%s", path);
        f->bodies[f->calls] = strdup(body);
    }
    f->calls++;
    if (f->fail < 0) {
        snprintf(err, errlen, "Connection refused");
        return -1;
    }
    *status = f->fail ? f->fail : 200;
    if (f->garbage) {
        out = "not json";
    } else if (strcmp(path, "/GetSamplingRules") == 0) {
        int page = strstr(body, "page2") ? 1 : 0;
        out = f->rules[page];
    } else {
        out = f->targets;
    }
    *resp = strdup(out);
    *resp_len = strlen(out);
    return 0;
}

static void test_poller(void)
{
    dd_xray_sampler_t *s = fresh();
    dd_stats_t stats;
    fake_api_t f;
    char *r1 = rule_json("one", 1, 0, 1, "*", "*", "*", "*", "/one");
    char *r2 = rule_json("two", 2, 0, 1, "*", "*", "*", "*", "*");
    char *p1, *p2;
    dd_xray_poll_conf_t c;

    memset(&f, 0, sizeof(f));
    memset(&stats, 0, sizeof(stats));
    CHECK(asprintf(&p1, "{\"SamplingRuleRecords\":[%s],\"NextToken\":\"page2\"}", r1) > 0);
    CHECK(asprintf(&p2, "{\"SamplingRuleRecords\":[%s]}", r2) > 0);
    f.rules[0] = p1;
    f.rules[1] = p2;
    f.targets = "{\"SamplingTargetDocuments\":[{\"RuleName\":\"two\",\"FixedRate\":0,"
                "\"ReservoirQuota\":2,\"ReservoirQuotaTTL\":1800000300}],"
                "\"LastRuleModification\":1700000000}";
    memset(&c, 0, sizeof(c));
    c.sampler = s;
    c.api.post = fake_post;
    c.api.ctx = &f;
    c.stats = &stats;
    c.pid = 7;
    c.timeout_ms = 100;

    /* first: the rules, both pages */
    CHECK(dd_xray_poll(&c, NOW) == 1);
    CHECK(f.calls == 2);
    CHECK_STR(f.paths[0], "/GetSamplingRules");
    CHECK_STR(f.bodies[0], "{}");
    CHECK_STR(f.bodies[1], "{\"NextToken\":\"page2\"}");
    CHECK(dd_xray_sampler_rule_count(s, NOW) == 2);
    CHECK(stats.xray_sampling_rules_fetched == 1);
    /* another process does not poll while we hold the lease */
    c.pid = 8;
    CHECK(dd_xray_poll(&c, NOW + 1) == 0);
    c.pid = 7;
    /* nothing more until the first report, 2 s after the rules */
    CHECK(dd_xray_poll(&c, NOW + 1) == 0);
    CHECK(decide(s, "h", "GET", "/x", "svc", NOW + 1, NULL) == 1); /* borrowed, rule "two" */
    CHECK(dd_xray_poll(&c, NOW + 2) == 1);
    CHECK(f.calls == 3);
    CHECK_STR(f.paths[2], "/SamplingTargets");
    CHECK(strstr(f.bodies[2], "\"RuleName\":\"two\"") && strstr(f.bodies[2], "\"BorrowCount\":1"));
    CHECK(strstr(f.bodies[2], "\"one\"") == NULL); /* not matched since: not reported */
    CHECK(stats.xray_sampling_targets_fetched == 1);
    int kept = 0;
    for (int i = 0; i < 20; i++)
        kept += decide(s, "h", "GET", "/x", "svc", NOW + 3, NULL);
    CHECK(kept == 2);
    /* every 10 s after that */
    CHECK(dd_xray_poll(&c, NOW + 11) == 0);
    CHECK(dd_xray_poll(&c, NOW + 12) == 1);
    /* LastRuleModification after our fetch: the rules again, at the next poll */
    f.targets = "{\"SamplingTargetDocuments\":[],\"LastRuleModification\":1800000030}";
    decide(s, "h", "GET", "/x", "svc", NOW + 21, NULL);
    CHECK(dd_xray_poll(&c, NOW + 22) == 1);
    int before = f.calls;
    CHECK(dd_xray_poll(&c, NOW + 23) == 1);
    CHECK(f.calls == before + 2 && strcmp(f.paths[before], "/GetSamplingRules") == 0);

    /* failures: counted, the rules kept, retried after 10 s */
    f.fail = -1;
    CHECK(dd_xray_poll(&c, NOW + 400) == 1);
    CHECK(stats.xray_sampling_errors == 1);
    CHECK(dd_xray_sampler_rule_count(s, NOW + 400) == 2);
    CHECK(dd_xray_poll(&c, NOW + 405) == 0);
    f.fail = 500;
    CHECK(dd_xray_poll(&c, NOW + 410) == 1);
    CHECK(stats.xray_sampling_errors == 2);
    f.fail = 0;
    f.garbage = 1;
    CHECK(dd_xray_poll(&c, NOW + 420) == 1);
    CHECK(stats.xray_sampling_errors == 3);
    CHECK(dd_xray_sampler_rule_count(s, NOW + 420) == 2);
    /* still failing an hour later: the local default rule decides */
    CHECK(dd_xray_sampler_rule_count(s, NOW + 23 + 3601) == 0);
    f.garbage = 0;
    CHECK(dd_xray_poll(&c, NOW + 430) == 1);
    CHECK(dd_xray_sampler_rule_count(s, NOW + 430) == 2);
    for (int i = 0; i < 32 && i < f.calls; i++)
        free(f.bodies[i]);
    free(p1);
    free(p2);
    free(r1);
    free(r2);
}

/* ---- concurrency ------------------------------------------------------------------------ */

typedef struct {
    dd_xray_sampler_t *s;
    int64_t now;
    int n;
    int kept;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < w->n; i++)
        w->kept += decide(w->s, "h", "GET", "/", "svc", w->now, NULL);
    return NULL;
}

typedef struct {
    dd_xray_sampler_t *s;
    const char *json;
    atomic_int *stop;
} writer_t;

static void *writer(void *arg)
{
    writer_t *w = arg;
    int64_t now = NOW;
    while (!atomic_load(w->stop)) {
        load(w->s, w->json, now, NULL);
        const char *t = "{\"SamplingTargetDocuments\":[{\"RuleName\":\"q\",\"FixedRate\":0,"
                        "\"ReservoirQuota\":4,\"ReservoirQuotaTTL\":1800000500}]}";
        int refresh;
        dd_xray_targets_apply(w->s, t, strlen(t), now, &refresh);
        size_t len;
        free(dd_xray_targets_request(w->s, now + 100, &len));
    }
    return NULL;
}

static void test_threads(void)
{
    dd_xray_sampler_t *s = fresh();
    char *q = rule_json("q", 1, 0, 1, "*", "*", "*", "*", "*");
    char *json = records(q, NULL, NULL);
    const char *t = "{\"SamplingTargetDocuments\":[{\"RuleName\":\"q\",\"FixedRate\":0,"
                    "\"ReservoirQuota\":4,\"ReservoirQuotaTTL\":1800000500}]}";
    int refresh, total = 0;
    pthread_t th[8], wt;
    worker_t w[8];
    atomic_int stop = 0;
    writer_t wr = {s, json, &stop};

    CHECK(load(s, json, NOW, NULL) == 0);
    CHECK(dd_xray_targets_apply(s, t, strlen(t), NOW, &refresh) == 0);
    /* 8 threads in the same second, the poller rewriting rules and targets all along: exactly
     * the quota, never more (a reader that cannot get a whole copy uses the local rule, which
     * keeps one; hence quota + at most 1) */
    pthread_create(&wt, NULL, writer, &wr);
    for (int i = 0; i < 8; i++) {
        w[i] = (worker_t){s, NOW + 1, 2000, 0};
        pthread_create(&th[i], NULL, worker, &w[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        total += w[i].kept;
    }
    atomic_store(&stop, 1);
    pthread_join(wt, NULL);
    CHECK(total >= 4 && total <= 5);
    if (total < 4 || total > 5)
        fprintf(stderr, "  8 threads kept %d in one second (quota 4)\n", total);

    /* the local default rule's reservoir: 1 per second across threads */
    s = fresh();
    total = 0;
    for (int i = 0; i < 8; i++) {
        w[i] = (worker_t){s, NOW, 1, 0};
        pthread_create(&th[i], NULL, worker, &w[i]);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        total += w[i].kept;
    }
    CHECK(total >= 1);
    free(q);
    free(json);
}

/* n processes decide `each` times at now on one shared mapping, as httpd's children do;
 * returns how many they kept in all. */
static int in_processes(void *mem, size_t size, int n, int each, int64_t now)
{
    int *kept = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    pid_t pids[8];
    int total = 0;
    CHECK(kept != MAP_FAILED);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            dd_xray_sampler_t *c = dd_xray_sampler_attach(mem, size);
            int k = 0;
            for (int j = 0; c && j < each; j++)
                k += decide(c, "h", "GET", "/", "svc", now, NULL);
            kept[i] = c ? k : -1000;
            _exit(0);
        }
    }
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        total += kept[i];
    }
    munmap(kept, 4096);
    return total;
}

/* Four processes: one borrowed request per second for the server, then the server's quota. */
static void test_processes(void)
{
    size_t size = dd_xray_sampler_size();
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    dd_xray_sampler_t *s = dd_xray_sampler_init(mem, size);
    char *q = rule_json("q", 1, 0, 1, "*", "*", "*", "*", "*");
    char *json = records(q, NULL, NULL);
    const char *t = "{\"SamplingTargetDocuments\":[{\"RuleName\":\"q\",\"FixedRate\":0,"
                    "\"ReservoirQuota\":3,\"ReservoirQuotaTTL\":1800000500}]}";
    int refresh, total;

    CHECK(mem != MAP_FAILED);
    CHECK(load(s, json, NOW, NULL) == 0);
    total = in_processes(mem, size, 4, 500, NOW + 1);
    CHECK(total == 1);
    CHECK(dd_xray_targets_apply(s, t, strlen(t), NOW + 1, &refresh) == 0);
    total = in_processes(mem, size, 4, 500, NOW + 3);
    CHECK(total == 3);
    if (total != 3)
        fprintf(stderr, "  4 processes kept %d in one second (quota 3)\n", total);
    munmap(mem, size);
    free(q);
    free(json);
}

int main(void)
{
    apr_initialize();
    test_wildcards();
    test_local_default();
    test_rules_parse();
    test_matching();
    test_reservoir();
    test_lease();
    test_poller();
    test_threads();
    test_processes();
    apr_terminate();
    UNIT_DONE();
}
