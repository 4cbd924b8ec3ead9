/* SPDX-License-Identifier: Apache-2.0 */
/* test_sampler.c - unit tests for dd_sampler: rule parsing (good lists and every kind of bad
 * one, with the message each gives), globs (including patterns that would take exponential
 * time in a naive matcher), rule order and tag matching, the catch-all, keep/drop decisions
 * checked against the formula computed here independently (128-bit integer arithmetic), the
 * agent-rate fallback with a real dd_rates_t, and the limiter: bursts, a steady rate over
 * simulated time, its effective-rate estimate, and a 4-thread stress test (run it under
 * ThreadSanitizer too) that must never let through more than the bucket allows. */
#include <math.h> /* NAN only: no libm */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "dd_rates.h"
#include "dd_sampler.h"
#include "dd_span.h"
#include "unit.h"

static apr_pool_t *pool;

static double absd(double x)
{
    return x < 0 ? -x : x;
}

#define T0 (1700000000LL * 1000000000LL) /* a fixed "now", ns */
#define MS 1000000LL
#define SEC 1000000000LL

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * SEC + ts.tv_nsec;
}

static dd_rules_t *parse_ok(const char *json)
{
    const char *err = "not set";
    dd_rules_t *r = dd_rules_parse(pool, json, &err);
    CHECK(r != NULL);
    CHECK_STR(err, NULL);
    if (!r)
        fprintf(stderr, "  parsing %s: %s\n", json, err ? err : "(null)");
    return r;
}

/* A sample input for service/name/resource with an optional meta list. */
static dd_sample_input_t input(const char *service, const char *name, const char *resource,
                               const apr_array_header_t *meta, uint64_t id)
{
    dd_sample_input_t in;
    memset(&in, 0, sizeof(in));
    in.service = service;
    in.name = name;
    in.resource = resource;
    in.meta = meta;
    in.env = "prod";
    in.trace_id_low = id;
    return in;
}

/* The rate of the rule that matched, or -1 when none did. */
static double matched_rate(const dd_rules_t *rules, const dd_sample_input_t *in)
{
    dd_decision_t d;
    dd_sample(rules, NULL, NULL, in, T0, &d);
    return d.mechanism == 3 ? d.rate : -1.0;
}

/* ---------------------------------------------------------------------------------------- */

static void test_parse_good(void)
{
    dd_rules_t *r;
    dd_sample_input_t in;
    const char *err = "not set";

    r = parse_ok("[]");
    in = input("web", "httpd.request", "GET /", NULL, 1);
    CHECK(matched_rate(r, &in) == -1.0); /* no rules: nothing matches */
    r = parse_ok("  [ ]\n");
    CHECK(matched_rate(r, &in) == -1.0);

    r = parse_ok("[{\"service\":\"web\",\"name\":\"httpd.request\",\"resource\":\"GET /\","
                 "\"tags\":{},\"sample_rate\":0.25},"
                 "{\"sample_rate\":0},{\"sample_rate\":1},{\"sample_rate\":1e-3}]");
    CHECK(matched_rate(r, &in) == 0.25);
    in.service = "other";
    CHECK(matched_rate(r, &in) == 0.0); /* integer 0, the second rule */

    r = parse_ok("[{\"sample_rate\":1}]"); /* integer 1 */
    CHECK(matched_rate(r, &in) == 1.0);
    r = parse_ok("[{\"sample_rate\":-0.0}]"); /* -0 is in [0, 1] */
    CHECK(matched_rate(r, &in) == 0.0);

    /* err may be NULL */
    CHECK(dd_rules_parse(pool, "[]", NULL) != NULL);
    CHECK(dd_rules_parse(pool, "{}", NULL) == NULL);
    /* strings are copied: the JSON text may go away */
    {
        char *json = strdup("[{\"service\":\"copied\",\"tags\":{\"k\":\"v*\"},"
                            "\"sample_rate\":0.5}]");
        dd_span_t *span = dd_span_create(pool);
        r = dd_rules_parse(pool, json, &err);
        memset(json, 'x', strlen(json));
        free(json);
        in.service = "copied";
        in.meta = span->meta;
        dd_span_set_meta(span, "k", "value");
        CHECK(matched_rate(r, &in) == 0.5);
    }
}

static void test_parse_bad(void)
{
    static const struct {
        const char *json, *msg;
    } cases[] = {
        {"{\"sample_rate\":1}", "must be a JSON list of rules"},
        {"5", "must be a JSON list of rules"},
        {"\"[]\"", "must be a JSON list of rules"},
        {"null", "must be a JSON list of rules"},
        {"[1]", "rule 1: must be a JSON object"},
        {"[{\"sample_rate\":1},[]]", "rule 2: must be a JSON object"},
        {"[{\"sample_rate\":1},\"x\"]", "rule 2: must be a JSON object"},
        {"[{\"sample_rate\":1.5}]", "rule 1: sample_rate 1.5 is not in [0, 1]"},
        {"[{\"sample_rate\":-0.1}]", "rule 1: sample_rate -0.1 is not in [0, 1]"},
        {"[{\"sample_rate\":2}]", "rule 1: sample_rate 2 is not in [0, 1]"},
        {"[{\"sample_rate\":\"0.5\"}]", "rule 1: sample_rate must be a number"},
        {"[{\"sample_rate\":null}]", "rule 1: sample_rate must be a number"},
        {"[{\"sample_rate\":true}]", "rule 1: sample_rate must be a number"},
        {"[{\"sample_rate\":[0.5]}]", "rule 1: sample_rate must be a number"},
        {"[{\"sample_rate\":1},{\"sample_rate\":1},{\"service\":5,\"sample_rate\":1}]",
         "rule 3: 'service' must be a string"},
        {"[{\"name\":[\"x\"],\"sample_rate\":1}]", "rule 1: 'name' must be a string"},
        {"[{\"resource\":null,\"sample_rate\":1}]", "rule 1: 'resource' must be a string"},
        {"[{\"service\":{},\"sample_rate\":1}]", "rule 1: 'service' must be a string"},
        {"[{\"tags\":[],\"sample_rate\":1}]", "rule 1: 'tags' must be an object"},
        {"[{\"tags\":\"k:v\",\"sample_rate\":1}]", "rule 1: 'tags' must be an object"},
        {"[{\"tags\":{\"a\":\"x\",\"k\":1},\"sample_rate\":1}]",
         "rule 1: tag 'k' must be a string"},
        {"[{\"tags\":{\"k\":null},\"sample_rate\":1}]", "rule 1: tag 'k' must be a string"},
        {"[{\"sample_rate\":1},{\"sample_rate\":1,\"foo\":1}]", "rule 2: unknown key 'foo'"},
        {"[{\"Service\":\"x\",\"sample_rate\":1}]", "rule 1: unknown key 'Service'"},
        {"[{\"provenance\":\"customer\",\"sample_rate\":1}]", "rule 1: unknown key 'provenance'"},
        {"[{\"service\":\"x\"}]", "rule 1: sample_rate is missing"},
        {"[{\"sample_rate\":1},{}]", "rule 2: sample_rate is missing"},
        /* the first problem in document order is the one reported */
        {"[{\"foo\":1,\"service\":2}]", "rule 1: unknown key 'foo'"},
        {"[{\"sample_rate\":7,\"foo\":1}]", "rule 1: sample_rate 7 is not in [0, 1]"},
        /* keys in messages are capped */
        {"[{\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\":1}]",
         "rule 1: unknown key 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk'"},
    };
    /* not JSON at all: the message carries jansson's text and position */
    static const char *not_json[] = {
        "",
        "[",
        "[{\"sample_rate\":1}",
        "[] x",
        "[{\"sample_rate\":1,}]",
        "[{'sample_rate':1}]",
        "[{\"service\":\"a\\u0000b\",\"sample_rate\":1}]", /* NUL inside a glob */
        "[{\"sample_rate\":1,\"sample_rate\":0}]",         /* duplicate key */
        "[{\"sample_rate\":1e400}]",
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *err = NULL;
        CHECK(dd_rules_parse(pool, cases[i].json, &err) == NULL);
        if (cases[i].msg)
            CHECK_STR(err, cases[i].msg);
        else
            CHECK(err != NULL);
    }
    for (size_t i = 0; i < sizeof(not_json) / sizeof(not_json[0]); i++) {
        const char *err = NULL;
        CHECK(dd_rules_parse(pool, not_json[i], &err) == NULL);
        CHECK(err != NULL && strncmp(err, "not valid JSON: ", 16) == 0);
        CHECK(err != NULL && strstr(err, " at line 1 column ") != NULL);
        if (err && strncmp(err, "not valid JSON: ", 16) != 0)
            fprintf(stderr, "  %s: %s\n", not_json[i], err);
    }
    {
        const char *err = NULL;
        CHECK(dd_rules_parse(pool, "[\n{\"sample_rate\":1},\n x]", &err) == NULL);
        CHECK(err != NULL && strstr(err, " at line 3 column ") != NULL);
        err = NULL;
        CHECK(dd_rules_parse(pool, NULL, &err) == NULL);
        CHECK_STR(err, "no rules given");
    }
}

/* ---------------------------------------------------------------------------------------- */

static void test_glob(void)
{
    static const struct {
        const char *pattern, *s;
        int match;
    } cases[] = {
        {"", "", 1},
        {"", "a", 0},
        {"a", "", 0},
        {"*", "", 1},
        {"*", "anything at all", 1},
        {"**", "", 1},
        {"?", "", 0},
        {"?", "a", 1},
        {"??", "a", 0},
        {"*?", "", 0},
        {"*?*", "x", 1},
        {"a?c", "abc", 1},
        {"a?c", "ac", 0},
        {"a?c", "abbc", 0},
        {"a*c", "ac", 1},
        {"a*c", "abbbc", 1},
        {"a*c", "abbbd", 0},
        {"a*c", "acb", 0},
        {"*b", "aaab", 1},
        {"*b", "aaabx", 0},
        {"a*b*c", "axxbyyc", 1},
        {"a*b*c", "axxbyy", 0},
        {"*ab*ab", "xabyabab", 1}, /* the star must backtrack past a partial match */
        {"a*ba", "abba", 1},
        {"web", "web", 1},
        {"WEB", "web", 1},
        {"web", "WeB", 1},
        {"web", "web2", 0},
        {"web", "we", 0},
        {"*.example.com", "api.EXAMPLE.com", 1},
        {"*.example.com", "example.com", 0},
        {"get /users/?", "GET /users/1", 1},
        {"get /users/?", "GET /users/12", 0},
        {"GET /users/*", "GET /users/12/orders", 1},
        /* a character is a UTF-8 sequence; a stray byte counts as one character */
        {"?", "\xc3\xa9", 1},
        {"??", "\xc3\xa9", 0},
        {"caf?", "caf\xc3\xa9", 1},
        {"caf\xc3\xa9", "caf\xc3\xa9", 1},
        {"?", "\xe2\x82\xac", 1},     /* 3-byte sequence */
        {"?", "\xf0\x9f\x98\x80", 1}, /* 4-byte sequence */
        {"*?", "\xf0\x9f\x98\x80", 1},
        {"??", "\xf0\x9f\x98\x80", 0},
        {"?", "\xff", 1},
        {"??", "\xff\xfe", 1},
        {"?x", "\xc3x", 1}, /* a lead byte without its continuation */
        {"??", "\xc3", 0},
        {"??x", "\xe2\x82x", 1}, /* a cut-short sequence is one character per byte */
        {"*x", "\xc3\xa9x", 1},
        {"*\xa9", "\xc3\xa9", 0}, /* a star never swallows half a character */
        {"?\xa9", "\xc3\xa9", 0},
        {"\xc3\x89", "\xc3\xa9", 0}, /* case folding is ASCII only */
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int got = dd_glob_match(cases[i].pattern, cases[i].s);
        CHECK(got == cases[i].match);
        if (got != cases[i].match)
            fprintf(stderr, "  glob '%s' vs '%s': %d\n", cases[i].pattern, cases[i].s, got);
    }
    /* a missing value is the empty string */
    CHECK(dd_glob_match("*", NULL) == 1);
    CHECK(dd_glob_match("?", NULL) == 0);
    CHECK(dd_glob_match(NULL, "") == 1);
}

static void test_glob_pathological(void)
{
    size_t n = 100000;
    char *as = malloc(n + 1);
    double t;

    memset(as, 'a', n);
    as[n] = 0;
    t = mono_s();
    as[10000] = 0; /* 10k 'a's first */
    CHECK(dd_glob_match("a*a*a*a*a*b", as) == 0);
    CHECK(dd_glob_match("a*a*a*a*a*a", as) == 1);
    CHECK(dd_glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b*", as) == 0);
    as[10000] = 'a'; /* then 100k */
    CHECK(dd_glob_match("a*a*a*a*a*b", as) == 0);
    CHECK(dd_glob_match("*?*?*?*?*?*?*?*?*?*?*b", as) == 0);
    CHECK(dd_glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b*", as) == 0);
    CHECK(dd_glob_match("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*", as) == 1);
    t = mono_s() - t;
    CHECK(t < 1.0); /* milliseconds in practice; a backtracking matcher takes forever */
    free(as);
}

/* ---------------------------------------------------------------------------------------- */

static void test_first_match(void)
{
    dd_rules_t *r =
        parse_ok("[{\"service\":\"web\",\"sample_rate\":0.1},"
                 "{\"service\":\"w*\",\"sample_rate\":0.2},"
                 "{\"name\":\"httpd.*\",\"sample_rate\":0.3},"
                 "{\"resource\":\"GET /health*\",\"sample_rate\":0.4},"
                 "{\"service\":\"*\",\"name\":\"aws.apigateway\",\"sample_rate\":0.5}]");
    dd_sample_input_t in = input("web", "httpd.request", "GET /", NULL, 1);

    CHECK(matched_rate(r, &in) == 0.1); /* rules 1 and 2 and 3 match: the first wins */
    in.service = "WEB";
    CHECK(matched_rate(r, &in) == 0.1); /* case-insensitive */
    in.service = "www";
    CHECK(matched_rate(r, &in) == 0.2);
    in.service = "api";
    CHECK(matched_rate(r, &in) == 0.3);
    in.name = "other";
    CHECK(matched_rate(r, &in) == -1.0);
    in.resource = "GET /healthz";
    CHECK(matched_rate(r, &in) == 0.4);
    in.resource = "POST /healthz";
    in.name = "aws.apigateway";
    CHECK(matched_rate(r, &in) == 0.5);
    in.name = NULL; /* no name: only rules without a name condition (or '*') can match */
    CHECK(matched_rate(r, &in) == -1.0);
}

static void test_tags(void)
{
    dd_span_t *span = dd_span_create(pool);
    dd_rules_t *r = parse_ok("[{\"tags\":{\"http.method\":\"G?T\",\"stage\":\"prod*\"},"
                             "\"sample_rate\":0.5},"
                             "{\"tags\":{\"http.method\":\"*\"},\"sample_rate\":0.25}]");
    dd_sample_input_t in = input("web", "httpd.request", "GET /", span->meta, 1);

    CHECK(matched_rate(r, &in) == -1.0); /* no tags at all */
    dd_span_set_meta(span, "http.method", "GET");
    CHECK(matched_rate(r, &in) == 0.25); /* stage missing: rule 1 needs both */
    dd_span_set_meta(span, "stage", "production");
    CHECK(matched_rate(r, &in) == 0.5);
    dd_span_set_meta(span, "stage", "dev");
    CHECK(matched_rate(r, &in) == 0.25);
    dd_span_set_meta(span, "stage", "PROD");
    dd_span_set_meta(span, "http.method", "get");
    CHECK(matched_rate(r, &in) == 0.5);
    dd_span_set_meta(span, "http.method", "POST");
    CHECK(matched_rate(r, &in) == 0.25);
    dd_span_set_meta(span, "http.method", NULL);
    CHECK(matched_rate(r, &in) == -1.0); /* missing key: no match, even against '*' */
    /* tag keys match exactly (not as globs, not case-folded) */
    dd_span_set_meta(span, "HTTP.METHOD", "GET");
    CHECK(matched_rate(r, &in) == -1.0);
}

static void test_catch_all(void)
{
    dd_rules_t *r = parse_ok("[{\"service\":\"a\",\"sample_rate\":0.5}]");
    dd_rules_t *all0 = dd_rules_add_catch_all(pool, r, 0.0);
    dd_rules_t *all1 = dd_rules_add_catch_all(pool, r, 1.0);
    dd_rules_t *only = dd_rules_add_catch_all(pool, NULL, 0.3);
    dd_sample_input_t a = input("a", "n", "r", NULL, 1);
    dd_sample_input_t b = input("b", "n", "r", NULL, 1);

    CHECK(matched_rate(r, &b) == -1.0); /* the parsed list itself is unchanged */
    CHECK(matched_rate(all0, &a) == 0.5);
    CHECK(matched_rate(all0, &b) == 0.0);
    CHECK(matched_rate(all1, &a) == 0.5);
    CHECK(matched_rate(all1, &b) == 1.0); /* each list has its own catch-all */
    CHECK(matched_rate(only, &a) == 0.3);
    CHECK(matched_rate(only, &b) == 0.3);
    b.service = NULL;
    b.name = NULL;
    b.resource = NULL;
    CHECK(matched_rate(only, &b) == 0.3); /* matches even an empty input */
}

/* ---------------------------------------------------------------------------------------- */

#define K 1111111111111111111ULL

static uint64_t hash_of(uint64_t id)
{
    return (uint64_t)(((unsigned __int128)id * K) & 0xFFFFFFFFFFFFFFFFULL);
}

/* The id whose hash is h (K is odd, so it has an inverse mod 2^64: Newton's iteration). */
static uint64_t id_for_hash(uint64_t h)
{
    uint64_t inv = K;
    for (int i = 0; i < 6; i++)
        inv *= 2 - K * inv;
    return h * inv;
}

/* floor(rate * 2^64), exactly, from the double's bits: rate = mant * 2^(exp - 1075). */
static unsigned __int128 threshold_of(double rate)
{
    uint64_t bits;
    int exp;
    unsigned __int128 mant;
    int shift;

    if (!(rate > 0))
        return 0;
    memcpy(&bits, &rate, sizeof(bits));
    exp = (int)((bits >> 52) & 0x7FF);
    mant = bits & ((1ULL << 52) - 1);
    if (exp != 0)
        mant |= 1ULL << 52; /* normal numbers have the implicit leading 1 */
    else
        exp = 1; /* subnormals */
    shift = exp - 1075 + 64;
    if (shift >= 0)
        return shift < 74 ? mant << shift : ~(unsigned __int128)0;
    return shift > -128 ? mant >> -shift : 0;
}

static int expected_keep(uint64_t id, double rate)
{
    return (unsigned __int128)hash_of(id) <= threshold_of(rate);
}

static void test_keep_formula(void)
{
    static const double rates[] = {0, 0.1, 0.5, 0.9, 1};
    uint64_t ids[64];
    size_t nids = 0;
    dd_rates_t *agent = dd_rates_create();
    unsigned kept[5] = {0};

    /* fixed ids, and for every rate the ids right at and just past its threshold */
    static const uint64_t fixed[] = {1,
                                     2,
                                     3,
                                     12345,
                                     1111111111111111111ULL,
                                     0x7FFFFFFFFFFFFFFFULL,
                                     0x8000000000000000ULL,
                                     0xFFFFFFFFFFFFFFFFULL,
                                     0x0123456789ABCDEFULL,
                                     0xDEADBEEFCAFEBABEULL,
                                     5577006791947779410ULL,
                                     8674665223082153551ULL,
                                     6129484611666145821ULL,
                                     4037200794235010051ULL,
                                     3916589616287113937ULL,
                                     6334824724549167320ULL,
                                     605394647632969758ULL,
                                     1443635317331776148ULL,
                                     894385949183117216ULL,
                                     2775422040480279449ULL};
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
        ids[nids++] = fixed[i];
    for (size_t r = 1; r < 4; r++) {
        uint64_t th = (uint64_t)threshold_of(rates[r]);
        ids[nids++] = id_for_hash(th);
        ids[nids++] = id_for_hash(th + 1);
    }
    ids[nids++] = id_for_hash(1);
    CHECK(hash_of(id_for_hash(12345)) == 12345); /* the inverse is right */

    /* anchors computed by hand: hash(1) = K = 0.0602...*2^64 */
    CHECK(dd_sample_keep(1, 0.0602) == 0);
    CHECK(dd_sample_keep(1, 0.0603) == 1);
    CHECK(dd_sample_keep(id_for_hash(1ULL << 63), 0.5) == 1);       /* <= is inclusive */
    CHECK(dd_sample_keep(id_for_hash((1ULL << 63) + 1), 0.5) == 0); /* just past */
    CHECK(dd_sample_keep(0, 0.0) == 1); /* hash 0 <= 0: the formula keeps id 0 at rate 0 */
    CHECK(dd_sample_keep(0xFFFFFFFFFFFFFFFFULL, 1.0) == 1);
    CHECK(dd_sample_keep(id_for_hash(0xFFFFFFFFFFFFFFFFULL), 1.0) == 1);
    CHECK(dd_sample_keep(id_for_hash(0xFFFFFFFFFFFFFFFFULL), 0.9999999999) == 0);
    CHECK(dd_sample_keep(12345, 2.0) == 1);  /* out of range: clamped */
    CHECK(dd_sample_keep(12345, -1.0) == 0); /* out of range: clamped */
    CHECK(dd_sample_keep(12345, NAN) == 0);

    for (size_t r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
        dd_rules_t *rules = dd_rules_add_catch_all(pool, NULL, rates[r]);
        char json[128];

        snprintf(json, sizeof(json), "{\"rate_by_service\":{\"service:web,env:prod\":%.17g}}",
                 rates[r]);
        CHECK(dd_rates_update_json(agent, json, strlen(json), NULL) == 0);
        for (size_t i = 0; i < nids; i++) {
            dd_sample_input_t in = input("web", "httpd.request", "GET /", NULL, ids[i]);
            int exp = expected_keep(ids[i], rates[r]);
            dd_decision_t d;

            CHECK(dd_sample_keep(ids[i], rates[r]) == exp);

            dd_sample(rules, NULL, NULL, &in, T0, &d); /* a rule, no limiter */
            CHECK(d.priority == (exp ? 2 : -1));
            CHECK(d.mechanism == 3);
            CHECK(d.rate == rates[r]);
            CHECK(d.limiter_used == 0);

            dd_sample(NULL, NULL, agent, &in, T0, &d); /* the agent's rate */
            CHECK(d.priority == (exp ? 1 : 0));
            CHECK(d.mechanism == 1);
            CHECK(d.rate == rates[r]);
            CHECK(d.limiter_used == 0);
            kept[r] += (unsigned)exp;
        }
    }
    /* the id list exercises both outcomes for the fractional rates */
    CHECK(kept[0] == 0);
    CHECK(kept[1] > 0 && kept[1] < nids);
    CHECK(kept[2] > 0 && kept[2] < nids);
    CHECK(kept[3] > 0 && kept[3] < nids);
    CHECK(kept[4] == nids);
    dd_rates_destroy(agent);
}

/* Over many random ids the kept fraction is the rate. */
static void test_keep_fraction(void)
{
    uint64_t x = 88172645463325252ULL, kept = 0, n = 200000;

    for (uint64_t i = 0; i < n; i++) {
        x ^= x << 13; /* xorshift64 */
        x ^= x >> 7;
        x ^= x << 17;
        kept += (uint64_t)dd_sample_keep(x, 0.3);
    }
    CHECK(kept > n * 29 / 100 && kept < n * 31 / 100);
}

static void test_agent_fallback(void)
{
    dd_rates_t *agent = dd_rates_create();
    dd_rules_t *rules = parse_ok("[{\"service\":\"gw.example.com\",\"sample_rate\":0}]");
    dd_sample_input_t in = input("web", "httpd.request", "GET /", NULL, 1);
    const char *body = "{\"rate_by_service\":{\"service:web,env:prod\":0.0602,"
                       "\"service:,env:\":0.0603}}";
    dd_decision_t d;

    /* nothing at all: default 1.0, mechanism 0 */
    dd_sample(NULL, NULL, NULL, &in, T0, &d);
    CHECK(d.priority == 1 && d.mechanism == 0 && d.rate == 1.0 && !d.limiter_used);
    /* an empty table: still the default */
    dd_sample(rules, NULL, agent, &in, T0, &d);
    CHECK(d.priority == 1 && d.mechanism == 0 && d.rate == 1.0);

    CHECK(dd_rates_update_json(agent, body, strlen(body), NULL) == 0);
    dd_sample(rules, NULL, agent, &in, T0, &d); /* the exact key; hash(1) is above 0.0602 */
    CHECK(d.priority == 0 && d.mechanism == 1 && d.rate == 0.0602);
    in.env = "staging";
    dd_sample(rules, NULL, agent, &in, T0, &d); /* the default key */
    CHECK(d.priority == 1 && d.mechanism == 1 && d.rate == 0.0603);
    in.env = NULL;
    in.service = "other";
    dd_sample(rules, NULL, agent, &in, T0, &d);
    CHECK(d.priority == 1 && d.mechanism == 1 && d.rate == 0.0603);
    in.service = "gw.example.com"; /* a rule wins over the agent */
    dd_sample(rules, NULL, agent, &in, T0, &d);
    CHECK(d.priority == -1 && d.mechanism == 3 && d.rate == 0.0);
    dd_rates_destroy(agent);
}

static void test_sample_with_limiter(void)
{
    dd_limiter_t *l = dd_limiter_create(pool, 1);
    dd_rules_t *keep = dd_rules_add_catch_all(pool, NULL, 1.0);
    dd_rules_t *drop = dd_rules_add_catch_all(pool, NULL, 0.0);
    dd_sample_input_t in = input("web", "httpd.request", "GET /", NULL, 12345);
    dd_decision_t d;

    /* a rule drop does not consult the limiter: it neither takes a token nor counts */
    dd_sample(drop, l, NULL, &in, T0, &d);
    CHECK(d.priority == -1 && d.mechanism == 3 && d.rate == 0.0);
    CHECK(d.limiter_used == 0 && d.limit_psr == 0.0);

    dd_sample(keep, l, NULL, &in, T0, &d);
    CHECK(d.priority == 2 && d.mechanism == 3 && d.rate == 1.0);
    CHECK(d.limiter_used == 1 && d.limit_psr == 1.0); /* 1 of 1 */
    dd_sample(keep, l, NULL, &in, T0, &d);            /* the bucket is empty */
    CHECK(d.priority == -1 && d.mechanism == 3 && d.rate == 1.0);
    CHECK(d.limiter_used == 1 && d.limit_psr == 0.5); /* 1 of 2 */
    dd_sample(keep, l, NULL, &in, T0 + SEC, &d);      /* refilled */
    CHECK(d.priority == 2 && d.limiter_used == 1);
    CHECK(absd(d.limit_psr - 2.0 / 3.0) < 1e-12); /* this second and the last */

    /* the agent path never uses the limiter */
    dd_sample(NULL, l, NULL, &in, T0 + SEC, &d);
    CHECK(d.priority == 1 && d.limiter_used == 0);
}

/* ---------------------------------------------------------------------------------------- */

static void test_limiter_burst(void)
{
    dd_limiter_t *l = dd_limiter_create(pool, 100);
    unsigned allowed = 0;
    double eff = -1;

    for (int i = 0; i < 10000; i++)
        allowed += (unsigned)dd_limiter_allow(l, T0, &eff);
    CHECK_U64(allowed, 100); /* the burst is the rate */
    CHECK(absd(eff - 0.01) < 1e-12);
    /* 10 ms later one token is back, and only one */
    CHECK(dd_limiter_allow(l, T0 + 10 * MS, NULL) == 1);
    CHECK(dd_limiter_allow(l, T0 + 10 * MS, NULL) == 0);
    CHECK(dd_limiter_allow(l, T0 + 19 * MS, NULL) == 0);
    CHECK(dd_limiter_allow(l, T0 + 20 * MS, NULL) == 1);
    /* a long pause refills to the burst, not beyond */
    allowed = 0;
    for (int i = 0; i < 1000; i++)
        allowed += (unsigned)dd_limiter_allow(l, T0 + 3600 * SEC, NULL);
    CHECK_U64(allowed, 100);
}

static void test_limiter_rate(void)
{
    dd_limiter_t *l = dd_limiter_create(pool, 100);
    unsigned per_second[5] = {0}, total = 0;
    double eff = -1;

    /* 10 calls every ms (10000/s offered) for 5 simulated seconds */
    for (int64_t ms = 0; ms < 5000; ms++)
        for (int i = 0; i < 10; i++)
            per_second[ms / 1000] += (unsigned)dd_limiter_allow(l, T0 + ms * MS, &eff);
    for (int s = 0; s < 5; s++)
        total += per_second[s];
    CHECK(per_second[0] >= 199 && per_second[0] <= 200); /* burst + one second of refill */
    for (int s = 1; s < 5; s++)
        CHECK(per_second[s] >= 99 && per_second[s] <= 101);
    CHECK(total <= 100 + 100 * 5);
    CHECK(total >= 595);
    CHECK(eff > 0.009 && eff < 0.011); /* ~100 of 10000 per second */
    if (total < 595 || total > 600)
        fprintf(stderr, "  limiter let %u through\n", total);
}

static void test_limiter_light_load(void)
{
    dd_limiter_t *l = dd_limiter_create(pool, 100);
    unsigned allowed = 0;
    double eff = -1, min_eff = 2;

    /* 50/s against a limit of 100/s: everything passes, the effective rate is 1 */
    for (int i = 0; i < 150; i++) {
        allowed += (unsigned)dd_limiter_allow(l, T0 + i * 20 * MS, &eff);
        if (eff < min_eff)
            min_eff = eff;
    }
    CHECK_U64(allowed, 150);
    CHECK(min_eff == 1.0);
}

/* The effective-rate windows, at several clock values: the window state keeps the second
 * modulo 2^28, so these include today's clock (past half that cycle, where a fresh limiter
 * must still start a window) and a second that wraps the cycle during the test. */
static void limiter_windows_at(int64_t base)
{
    dd_limiter_t *l = dd_limiter_create(pool, 1);
    unsigned allowed = 0;
    double eff = -1;

    for (int i = 0; i < 10; i++) /* second 0: 1 of 10 */
        allowed += (unsigned)dd_limiter_allow(l, base + i * MS, &eff);
    CHECK_U64(allowed, 1);
    CHECK(absd(eff - 0.1) < 1e-12);
    for (int i = 0; i < 10; i++) /* second 1: 1 of 10 more; both seconds count */
        allowed += (unsigned)dd_limiter_allow(l, base + 1500 * MS + i * MS, &eff);
    CHECK_U64(allowed, 2);
    CHECK(absd(eff - 0.1) < 1e-12);
    for (int i = 0; i < 5; i++) /* second 2: 0 of 5 */
        allowed += (unsigned)dd_limiter_allow(l, base + 2100 * MS + i * MS, &eff);
    CHECK_U64(allowed, 2);
    CHECK(absd(eff - 1.0 / 15.0) < 1e-12); /* seconds 1 and 2; second 0 has aged out */
    /* second 4 after a quiet second 3: only its own call counts */
    CHECK(dd_limiter_allow(l, base + 4000 * MS, &eff) == 1);
    CHECK(eff == 1.0);
    /* a call whose clock lags (read before another thread's) counts in the newest second */
    CHECK(dd_limiter_allow(l, base + 3999 * MS, &eff) == 0);
    CHECK(absd(eff - 0.5) < 1e-12);
}

static void test_limiter_windows(void)
{
    static const int64_t seconds[] = {
        0,
        1700000000LL,
        1795000000LL,
        1999999999LL,
        (1LL << 27),
        (1LL << 28) - 2,
        (1LL << 28) + (1LL << 27) - 1,
    };
    for (size_t i = 0; i < sizeof(seconds) / sizeof(seconds[0]); i++)
        limiter_windows_at(seconds[i] * SEC);
}

static void test_limiter_edges(void)
{
    dd_limiter_t *zero = dd_limiter_create(pool, 0);
    dd_limiter_t *neg = dd_limiter_create(pool, -5);
    dd_limiter_t *nan = dd_limiter_create(pool, NAN);
    dd_limiter_t *half = dd_limiter_create(pool, 0.5);
    dd_limiter_t *three = dd_limiter_create(pool, 3);
    dd_limiter_t *huge = dd_limiter_create(pool, 1e12);
    dd_limiter_t *tiny = dd_limiter_create(pool, 1e-30);
    unsigned allowed = 0;
    double eff = -1;

    for (int i = 0; i < 1000; i++) {
        int64_t now = T0 + i * 100 * MS;
        allowed += (unsigned)dd_limiter_allow(zero, now, &eff);
        allowed += (unsigned)dd_limiter_allow(neg, now, NULL);
        allowed += (unsigned)dd_limiter_allow(nan, now, NULL);
    }
    CHECK_U64(allowed, 0); /* a rate of 0 allows nothing */
    CHECK(eff == 0.0);

    CHECK(dd_limiter_allow(half, T0, &eff) == 1); /* burst of 1 */
    CHECK(dd_limiter_allow(half, T0, &eff) == 0);
    CHECK(dd_limiter_allow(half, T0 + 1999 * MS, &eff) == 0);
    CHECK(dd_limiter_allow(half, T0 + 2000 * MS, &eff) == 1); /* one every 2 s */

    /* 3/s: a token every 333333333.3 ns, rounded up so the rate is never exceeded */
    for (int i = 0; i < 3; i++)
        CHECK(dd_limiter_allow(three, T0, NULL) == 1);
    CHECK(dd_limiter_allow(three, T0, NULL) == 0);
    CHECK(dd_limiter_allow(three, T0 + 333333333, NULL) == 0);
    CHECK(dd_limiter_allow(three, T0 + 333333334, NULL) == 1);

    allowed = 0;
    for (int i = 0; i < 10000; i++)
        allowed += (unsigned)dd_limiter_allow(huge, T0, &eff);
    CHECK_U64(allowed, 10000);
    CHECK(eff == 1.0);

    CHECK(dd_limiter_allow(tiny, T0, NULL) == 1);
    CHECK(dd_limiter_allow(tiny, T0 + 3600 * SEC, NULL) == 0);
    CHECK(dd_limiter_allow(tiny, INT64_MAX, NULL) == 1); /* no overflow at the far end */
    CHECK(dd_limiter_allow(NULL, T0, &eff) == 1);
}

/* ---------------------------------------------------------------------------------------- */

#define STRESS_THREADS 4
#define STRESS_RATE 1000.0
#define STRESS_NS (300 * MS)

typedef struct {
    dd_limiter_t *l;
    int64_t start;
    _Atomic unsigned *allowed;
    _Atomic unsigned *calls;
    _Atomic int *bad_eff;
} stress_arg_t;

static void *stress_thread(void *v)
{
    stress_arg_t *a = v;
    unsigned allowed = 0, calls = 0;
    int64_t now;

    while ((now = mono_ns()) - a->start < STRESS_NS) {
        double eff = -1;
        allowed += (unsigned)dd_limiter_allow(a->l, now, &eff);
        calls++;
        if (!(eff >= 0.0 && eff <= 1.0))
            atomic_fetch_add(a->bad_eff, 1);
    }
    atomic_fetch_add(a->allowed, allowed);
    atomic_fetch_add(a->calls, calls);
    return NULL;
}

static void test_limiter_threads(void)
{
    dd_limiter_t *l = dd_limiter_create(pool, STRESS_RATE);
    _Atomic unsigned allowed = 0, calls = 0;
    _Atomic int bad_eff = 0;
    pthread_t th[STRESS_THREADS];
    stress_arg_t arg;
    int64_t t0, t1;
    double bound;

    arg.l = l;
    arg.allowed = &allowed;
    arg.calls = &calls;
    arg.bad_eff = &bad_eff;
    t0 = mono_ns(); /* every call's clock reading is at or after t0 */
    arg.start = t0;
    for (int i = 0; i < STRESS_THREADS; i++)
        CHECK(pthread_create(&th[i], NULL, stress_thread, &arg) == 0);
    for (int i = 0; i < STRESS_THREADS; i++)
        pthread_join(th[i], NULL);
    t1 = mono_ns(); /* ... and before t1 */

    bound = STRESS_RATE /* burst */ + STRESS_RATE * (double)(t1 - t0) / 1e9;
    CHECK((double)atomic_load(&allowed) <= bound);
    CHECK(atomic_load(&allowed) >= (unsigned)STRESS_RATE); /* at least the burst */
    CHECK(atomic_load(&calls) > atomic_load(&allowed));    /* the limit was actually hit */
    CHECK(atomic_load(&bad_eff) == 0);
    printf("limiter stress: %u of %u calls allowed in %.3f s (bound %.1f)\n", atomic_load(&allowed),
           atomic_load(&calls), (double)(t1 - t0) / 1e9, bound);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);

    test_parse_good();
    test_parse_bad();
    test_glob();
    test_glob_pathological();
    test_first_match();
    test_tags();
    test_catch_all();
    test_keep_formula();
    test_keep_fraction();
    test_agent_fallback();
    test_sample_with_limiter();
    test_limiter_burst();
    test_limiter_rate();
    test_limiter_light_load();
    test_limiter_windows();
    test_limiter_edges();
    test_limiter_threads();

    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
