/* SPDX-License-Identifier: Apache-2.0 */
/* test_rc.c - unit tests for dd_rc (remote configuration, APM_TRACING) and dd_sha256: SHA-256
 * test vectors, base64, the request's shape, responses built as the agent builds them (base64
 * targets, sha256 of each file), the state the next request reports, and malformed responses
 * (bad base64, bad JSON, hash or length mismatch, wrong types, too large) that change nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_base64.h>
#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <jansson.h>

#include "dd_rc.h"
#include "dd_sampler.h"
#include "dd_sha256.h"
#include "unit.h"

static apr_pool_t *pool;

static void test_sha256(void)
{
    char hex[65];
    char *million = malloc(1000000);
    dd_sha256_hex("", 0, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    dd_sha256_hex("abc", 3, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    dd_sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, hex);
    CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    dd_sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnop"
                  "qklmnopqrlmnopqrsmnopqrstnopqrstu",
                  112, hex);
    CHECK_STR(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    memset(million, 'a', 1000000);
    dd_sha256_hex(million, 1000000, hex);
    CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* 55, 63 and 64 bytes: the padding's edges */
    dd_sha256_hex(million, 55, hex);
    CHECK_STR(hex, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
    dd_sha256_hex(million, 64, hex);
    CHECK_STR(hex, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
    free(million);
}

static void test_base64(void)
{
    char *out;
    size_t n;
    CHECK(dd_rc_base64_decode(pool, "aGVsbG8=", 8, &out, &n) == 0);
    CHECK(n == 5 && memcmp(out, "hello", 5) == 0);
    CHECK(dd_rc_base64_decode(pool, "", 0, &out, &n) == 0 && n == 0);
    CHECK(dd_rc_base64_decode(pool, "aGVsbG8", 7, &out, &n) != 0);  /* length */
    CHECK(dd_rc_base64_decode(pool, "aGV*bG8=", 8, &out, &n) != 0); /* alphabet */
    CHECK(dd_rc_base64_decode(pool, "aG=sbG8=", 8, &out, &n) != 0); /* '=' inside */
}

/* --- responses as the agent makes them ------------------------------------------------------ */

static char *b64(const char *s, size_t n)
{
    char *out = apr_palloc(pool, (apr_size_t)apr_base64_encode_len((int)n));
    apr_base64_encode(out, s, (int)n);
    return out;
}

typedef struct {
    const char *path, *content;
    long long v;
    int send_file; /* include in target_files */
    int bad_hash;  /* sign a wrong hash */
} file_t;

/* The body of a /v0.7/config answer: targets signed (base64 JSON) with version, the files'
 * sha256 and lengths; target_files; client_configs (NULL: left out). */
static char *response(long long version, const file_t *files, int n, int with_configs)
{
    json_t *targets = json_object(), *root = json_object(), *tf = json_array(), *cc = json_array();
    char *t, *out;
    for (int i = 0; i < n; i++) {
        char hex[65];
        size_t len = strlen(files[i].content);
        dd_sha256_hex(files[i].content, len, hex);
        if (files[i].bad_hash)
            hex[0] = hex[0] == '0' ? '1' : '0';
        json_object_set_new(targets, files[i].path,
                            json_pack("{s:{s:I}, s:{s:s}, s:I}", "custom", "v",
                                      (json_int_t)files[i].v, "hashes", "sha256", hex, "length",
                                      (json_int_t)len));
        if (files[i].send_file)
            json_array_append_new(tf, json_pack("{s:s, s:s}", "path", files[i].path, "raw",
                                                b64(files[i].content, len)));
        json_array_append_new(cc, json_string(files[i].path));
    }
    json_t *signed_ =
        json_pack("{s:{s:s, s:o, s:I, s:{s:s}}}", "signed", "_type", "targets", "targets", targets,
                  "version", (json_int_t)version, "custom", "opaque_backend_state", "b3BhcXVl");
    char *dumped;
    t = json_dumps(signed_, JSON_COMPACT);
    json_decref(signed_);
    json_object_set_new(root, "targets", json_string(b64(t, strlen(t))));
    json_object_set_new(root, "target_files", tf);
    if (with_configs)
        json_object_set_new(root, "client_configs", cc);
    else
        json_decref(cc);
    free(t);
    dumped = json_dumps(root, JSON_COMPACT);
    out = apr_pstrdup(pool, dumped);
    free(dumped);
    json_decref(root);
    return out;
}

#define PATH1 "datadog/2/APM_TRACING/cfg-1/config"
#define PATH2 "datadog/2/APM_TRACING/cfg-2/config"
#define CONTENT1                                                                                   \
    "{\"lib_config\":{\"tracing_sampling_rate\":0.5,\"tracing_tags\":[\"team:edge\",\"x:1:2\"],"   \
    "\"tracing_enabled\":true,\"tracing_sampling_rules\":[{\"service\":\"web\",\"resource\":"      \
    "\"*\",\"sample_rate\":0,\"provenance\":\"customer\",\"tags\":[{\"key\":\"a\","                \
    "\"value_glob\":\"b*\"}]}]},\"service_target\":{\"service\":\"web\",\"env\":\"prod\"}}"
#define CONTENT2                                                                                   \
    "{\"lib_config\":{\"tracing_enabled\":false},\"service_target\":{\"service\":\"*\",\"env\":"   \
    "\"*\"}}"

static dd_rc_client_t *client(void)
{
    dd_rc_identity_t id = {"client-uuid", "runtime-uuid", "c", "1.2.3", "web", "prod", "v9"};
    return dd_rc_client_create(&id);
}

static json_t *request_json(dd_rc_client_t *c)
{
    char *s = dd_rc_request(c);
    json_t *j = s ? json_loads(s, 0, NULL) : NULL;
    free(s);
    return j;
}

static void test_request_shape(void)
{
    dd_rc_client_t *c = client();
    json_t *j = request_json(c), *cl, *st, *tr;
    unsigned char caps[8];
    int n;
    CHECK(j != NULL);
    cl = json_object_get(j, "client");
    st = json_object_get(cl, "state");
    tr = json_object_get(cl, "client_tracer");
    CHECK_STR(json_string_value(json_object_get(cl, "id")), "client-uuid");
    CHECK(json_is_true(json_object_get(cl, "is_tracer")));
    CHECK_STR(json_string_value(json_array_get(json_object_get(cl, "products"), 0)), "APM_TRACING");
    CHECK(json_array_size(json_object_get(cl, "products")) == 1);
    CHECK(json_integer_value(json_object_get(st, "root_version")) == 1);
    CHECK(json_integer_value(json_object_get(st, "targets_version")) == 0);
    CHECK(json_array_size(json_object_get(st, "config_states")) == 0);
    CHECK(json_is_false(json_object_get(st, "has_error")));
    CHECK_STR(json_string_value(json_object_get(st, "backend_client_state")), "");
    CHECK_STR(json_string_value(json_object_get(tr, "runtime_id")), "runtime-uuid");
    CHECK_STR(json_string_value(json_object_get(tr, "language")), "c");
    CHECK_STR(json_string_value(json_object_get(tr, "tracer_version")), "1.2.3");
    CHECK_STR(json_string_value(json_object_get(tr, "service")), "web");
    CHECK_STR(json_string_value(json_object_get(tr, "env")), "prod");
    CHECK_STR(json_string_value(json_object_get(tr, "app_version")), "v9");
    CHECK(json_array_size(json_object_get(j, "cached_target_files")) == 0);
    /* capabilities: big-endian bits 12, 15, 19, 29 */
    CHECK_STR(json_string_value(json_object_get(cl, "capabilities")), "IAiQAA==");
    n = apr_base64_decode((char *)caps, json_string_value(json_object_get(cl, "capabilities")));
    CHECK(n == 4 && caps[0] == 0x20 && caps[1] == 0x08 && caps[2] == 0x90 && caps[3] == 0);
    json_decref(j);
    dd_rc_client_destroy(c);
}

static void test_apply_and_report(void)
{
    dd_rc_client_t *c = client();
    file_t f[2] = {{PATH1, CONTENT1, 3, 1, 0},
                   {PATH2, "{\"lib_config\":{\"tracing_sampling_rate\":\"x\"}}", 1, 1, 0}};
    dd_rc_result_t r;
    json_t *j, *st, *cs;
    const dd_rc_file_t *sel;
    dd_rc_apm_t a;
    const char *err;

    CHECK(dd_rc_process(c, response(7, f, 2, 1), strlen(response(7, f, 2, 1)), &r) ==
          DD_RC_CHANGED);
    CHECK(r.applied == 1 && r.apply_errors == 1 && r.removed == 0);
    CHECK(dd_rc_nfiles(c) == 2);
    j = request_json(c);
    st = json_object_get(json_object_get(j, "client"), "state");
    CHECK(json_integer_value(json_object_get(st, "targets_version")) == 7);
    CHECK_STR(json_string_value(json_object_get(st, "backend_client_state")), "b3BhcXVl");
    CHECK(json_is_false(json_object_get(st, "has_error")));
    cs = json_object_get(st, "config_states");
    CHECK(json_array_size(cs) == 2);
    CHECK_STR(json_string_value(json_object_get(json_array_get(cs, 0), "id")), "cfg-1");
    CHECK(json_integer_value(json_object_get(json_array_get(cs, 0), "version")) == 3);
    CHECK_STR(json_string_value(json_object_get(json_array_get(cs, 0), "product")), "APM_TRACING");
    CHECK(json_integer_value(json_object_get(json_array_get(cs, 0), "apply_state")) == 2);
    CHECK(json_object_get(json_array_get(cs, 0), "apply_error") == NULL);
    CHECK(json_integer_value(json_object_get(json_array_get(cs, 1), "apply_state")) == 3);
    CHECK(json_string_value(json_object_get(json_array_get(cs, 1), "apply_error")) != NULL);
    {
        json_t *ct = json_array_get(json_object_get(j, "cached_target_files"), 0);
        char hex[65];
        dd_sha256_hex(CONTENT1, strlen(CONTENT1), hex);
        CHECK_STR(json_string_value(json_object_get(ct, "path")), PATH1);
        CHECK(json_integer_value(json_object_get(ct, "length")) == (json_int_t)strlen(CONTENT1));
        CHECK_STR(json_string_value(json_object_get(
                      json_array_get(json_object_get(ct, "hashes"), 0), "algorithm")),
                  "sha256");
        CHECK_STR(json_string_value(
                      json_object_get(json_array_get(json_object_get(ct, "hashes"), 0), "hash")),
                  hex);
    }
    json_decref(j);

    /* selection by service_target; the lib_config parsed */
    sel = dd_rc_select(c, "web", "prod");
    CHECK(sel && strcmp(sel->path, PATH1) == 0);
    CHECK(dd_rc_select(c, "other", "prod") == NULL);
    CHECK(dd_rc_select(c, "web", NULL) == NULL);
    CHECK(dd_rc_parse_apm(pool, sel->content, sel->len, &a, &err) == 0);
    CHECK(a.has_rate && a.rate == 0.5);
    CHECK(a.enabled == 1);
    CHECK(a.rules != NULL);
    CHECK_STR(dd_tagset_get(a.tags, "team"), "edge");
    CHECK_STR(dd_tagset_get(a.tags, "x"), "1:2");

    /* the same again, files left out as the agent does for cached ones: unchanged */
    f[0].send_file = f[1].send_file = 0;
    {
        char *b = response(8, f, 2, 1);
        CHECK(dd_rc_process(c, b, strlen(b), &r) == DD_RC_UNCHANGED);
        CHECK(dd_rc_nfiles(c) == 2);
    }
    /* "{}": nothing new */
    CHECK(dd_rc_process(c, "{}", 2, &r) == DD_RC_UNCHANGED && dd_rc_nfiles(c) == 2);
    /* one removed from client_configs */
    {
        char *b = response(9, f, 1, 1);
        CHECK(dd_rc_process(c, b, strlen(b), &r) == DD_RC_CHANGED);
        CHECK(r.removed == 1 && dd_rc_nfiles(c) == 1);
    }
    /* replaced: a new hash and version */
    {
        file_t g = {PATH1, CONTENT2, 4, 1, 0};
        char *b = response(10, &g, 1, 1);
        CHECK(dd_rc_process(c, b, strlen(b), &r) == DD_RC_CHANGED);
        CHECK(r.applied == 1 && r.removed == 0 && dd_rc_nfiles(c) == 1);
        CHECK(dd_rc_file(c, 0)->version == 4);
        sel = dd_rc_select(c, "anything", NULL);
        CHECK(sel != NULL);
        CHECK(dd_rc_parse_apm(pool, sel->content, sel->len, &a, &err) == 0 && a.enabled == 0);
    }
    /* targets without client_configs: all removed */
    {
        char *b = response(11, f, 0, 0);
        CHECK(dd_rc_process(c, b, strlen(b), &r) == DD_RC_CHANGED);
        CHECK(dd_rc_nfiles(c) == 0);
    }
    dd_rc_client_destroy(c);
}

static int has_error(dd_rc_client_t *c, const char *want)
{
    json_t *j = request_json(c);
    json_t *st = json_object_get(json_object_get(j, "client"), "state");
    const char *e = json_string_value(json_object_get(st, "error"));
    int ok = json_is_true(json_object_get(st, "has_error")) && e && strstr(e, want) != NULL;
    if (!ok)
        fprintf(stderr, "error reported: %s (wanted %s)\n", e ? e : "(none)", want);
    json_decref(j);
    return ok;
}

static void test_malformed(void)
{
    dd_rc_client_t *c = client();
    file_t f = {PATH1, CONTENT1, 3, 1, 0};
    dd_rc_result_t r;
    char *good = response(5, &f, 1, 1), *b;
    static const char *const bodies[][2] = {
        {"not json", "not a JSON object"},
        {"[1,2]", "not a JSON object"},
        {"{\"targets\": 12}", "targets is missing"},
        {"{\"targets\": \"@@@@\"}", "not base64"},
        {"{\"targets\": \"bm90IGpzb24=\"}", "signed.targets"}, /* "not json" */
        {"{\"targets\": \"e30=\"}", "signed.targets"},         /* "{}" */
    };

    CHECK(dd_rc_process(c, good, strlen(good), &r) == DD_RC_CHANGED);
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        CHECK(dd_rc_process(c, bodies[i][0], strlen(bodies[i][0]), &r) == DD_RC_MALFORMED);
        CHECK(has_error(c, bodies[i][1]));
        CHECK(dd_rc_nfiles(c) == 1); /* the last good state stays */
    }
    /* a file whose hash does not match */
    {
        file_t g = {PATH1, CONTENT2, 4, 1, 1};
        b = response(6, &g, 1, 1);
        CHECK(dd_rc_process(c, b, strlen(b), &r) == DD_RC_MALFORMED);
        CHECK(has_error(c, "sha256"));
        CHECK(dd_rc_file(c, 0)->version == 3);
    }
    /* a new file announced but not sent */
    {
        file_t g = {PATH2, CONTENT2, 1, 0, 0};
        b = response(6, &g, 1, 1);
        CHECK(dd_rc_process(c, b, strlen(b), &r) == DD_RC_MALFORMED);
        CHECK(has_error(c, "missing from target_files"));
    }
    /* a bad path */
    {
        file_t g = {"datadog/x/APM_TRACING/a/config", CONTENT2, 1, 1, 0};
        b = response(6, &g, 1, 1);
        CHECK(dd_rc_process(c, b, strlen(b), &r) == DD_RC_MALFORMED);
        CHECK(has_error(c, "invalid configuration path"));
    }
    /* another product is ignored, not an error */
    {
        file_t g[2] = {{PATH1, CONTENT1, 3, 0, 0}, {"datadog/2/ASM_DD/a/config", "{}", 1, 1, 0}};
        b = response(6, g, 2, 1);
        CHECK(dd_rc_process(c, b, strlen(b), &r) == DD_RC_UNCHANGED);
        CHECK(dd_rc_nfiles(c) == 1);
    }
    /* wrong types */
    b = "{\"targets\":\"e30=\",\"client_configs\":{}}";
    CHECK(dd_rc_process(c, b, strlen(b), &r) == DD_RC_MALFORMED);
    /* too large */
    {
        size_t n = DD_RC_MAX_BODY + 10;
        char *huge = malloc(n);
        memset(huge, ' ', n);
        huge[0] = '{';
        huge[n - 1] = '}';
        CHECK(dd_rc_process(c, huge, n, &r) == DD_RC_MALFORMED);
        CHECK(has_error(c, "too large"));
        free(huge);
    }
    CHECK(dd_rc_nfiles(c) == 1);
    /* a good response clears the error */
    f.send_file = 0;
    b = response(7, &f, 1, 1);
    CHECK(dd_rc_process(c, b, strlen(b), &r) == DD_RC_UNCHANGED);
    {
        json_t *j = request_json(c);
        json_t *st = json_object_get(json_object_get(j, "client"), "state");
        CHECK(json_is_false(json_object_get(st, "has_error")));
        CHECK(json_integer_value(json_object_get(st, "targets_version")) == 7);
        json_decref(j);
    }
    dd_rc_client_destroy(c);
}

static void test_parse_apm(void)
{
    dd_rc_apm_t a;
    const char *err;
    static const char *const bad[] = {
        "{}", /* no lib_config */
        "{\"lib_config\": 1}",
        "{\"lib_config\": {\"tracing_sampling_rate\": 1.5}}",
        "{\"lib_config\": {\"tracing_enabled\": \"no\"}}",
        "{\"lib_config\": {\"tracing_tags\": \"a:b\"}}",
        "{\"lib_config\": {\"tracing_tags\": [1]}}",
        "{\"lib_config\": {\"tracing_sampling_rules\": [{\"service\":\"a\",\"sample_rate\":1,"
        "\"provenance\":\"customer\"}]}}", /* no resource */
        "{\"lib_config\": {\"tracing_sampling_rules\": [{\"service\":\"a\",\"resource\":\"*\","
        "\"sample_rate\":1,\"provenance\":\"who\"}]}}",
        "{\"lib_config\": {}, \"service_target\": {\"service\": 1}}",
        "{\"lib_config\": {}, \"service_target\": []}",
        "not json",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK(dd_rc_parse_apm(pool, bad[i], strlen(bad[i]), &a, &err) == -1);
        CHECK(err != NULL);
    }
    /* nulls are "not set" */
    {
        const char *s = "{\"lib_config\":{\"tracing_sampling_rate\":null,\"tracing_tags\":null,"
                        "\"tracing_enabled\":null,\"tracing_sampling_rules\":null}}";
        CHECK(dd_rc_parse_apm(pool, s, strlen(s), &a, &err) == 0);
        CHECK(!a.has_rate && !a.rules && !a.tags && a.enabled == -1);
        CHECK(dd_rc_target_score(&a, "any", NULL) == 1);
    }
}

/* Remote rules in front of the local ones; the remote rate replaces the local catch-all; the
 * mechanism of the rule that decides (11 customer, 12 dynamic, 3 for the rate). */
static void test_rules_override(void)
{
    const char *err;
    json_t *list = json_loads("[{\"service\":\"web\",\"resource\":\"GET /a\",\"sample_rate\":0,"
                              "\"provenance\":\"customer\"},{\"service\":\"web\",\"resource\":"
                              "\"GET /d\",\"sample_rate\":1,\"provenance\":\"dynamic\"}]",
                              0, NULL);
    dd_rules_t *remote = dd_rules_parse_remote(pool, list, &err);
    dd_rules_t *local = dd_rules_add_catch_all(
        pool, dd_rules_parse(pool, "[{\"resource\":\"GET /l\",\"sample_rate\":1}]", &err), 0.0);
    dd_rules_t *both = dd_rules_override(pool, remote, local, 1, 1.0);
    dd_sample_input_t in = {"web", "http.request", "GET /a", NULL, NULL, 42};
    dd_decision_t d;

    CHECK(remote != NULL);
    dd_sample(both, NULL, NULL, &in, 0, &d);
    CHECK(d.mechanism == DD_MECH_REMOTE_USER && d.priority == -1);
    in.resource = "GET /d";
    dd_sample(both, NULL, NULL, &in, 0, &d);
    CHECK(d.mechanism == DD_MECH_REMOTE_DYNAMIC && d.priority == 2);
    in.resource = "GET /l";
    dd_sample(both, NULL, NULL, &in, 0, &d);
    CHECK(d.mechanism == DD_MECH_RULE && d.priority == 2 && d.rate == 1.0);
    in.resource = "GET /other"; /* the remote rate, not the local catch-all's 0 */
    dd_sample(both, NULL, NULL, &in, 0, &d);
    CHECK(d.mechanism == DD_MECH_RULE && d.rate == 1.0 && d.priority == 2);
    /* without a remote rate the local catch-all stays */
    both = dd_rules_override(pool, remote, local, 0, 0);
    dd_sample(both, NULL, NULL, &in, 0, &d);
    CHECK(d.rate == 0.0 && d.priority == -1);
    json_decref(list);
}

int main(void)
{
    apr_initialize();
    apr_pool_create(&pool, NULL);
    test_sha256();
    test_base64();
    test_request_shape();
    test_apply_and_report();
    test_malformed();
    test_parse_apm();
    test_rules_override();
    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
