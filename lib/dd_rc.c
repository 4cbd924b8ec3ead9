/* SPDX-License-Identifier: Apache-2.0 */
/* dd_rc.c - remote configuration's protocol for APM_TRACING (see dd_rc.h).
 *
 * The client holds the files the agent last sent that it applies, each in a pool of its own
 * (a removed or replaced file frees its memory), plus what the next request reports:
 * targets_version, the opaque backend state, the last response's error. dd_rc_process checks
 * a whole response into a staging list first and commits it only when every part is good, so
 * a bad response never leaves half of a new state behind.
 */
#include "dd_rc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <apr_base64.h>
#include <apr_strings.h>
#include <jansson.h>

#include "dd_sha256.h"

#define PRODUCT "APM_TRACING"

typedef struct {
    dd_rc_file_t f;
    apr_pool_t *pool; /* the file's memory */
} held_t;

struct dd_rc_client {
    apr_pool_t *pool; /* unmanaged: the client's own allocator, the flusher thread's alone */
    dd_rc_identity_t id;
    long long targets_version;
    char *backend_state; /* malloc'd; NULL until the agent sent one */
    char error[256];     /* the last response's problem, "" when none */
    held_t files[DD_RC_MAX_FILES];
    int nfiles; /* sorted by path */
};

/* --- base64 --------------------------------------------------------------------------------- */

static int b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

int dd_rc_base64_decode(apr_pool_t *p, const char *in, size_t len, char **out, size_t *out_len)
{
    size_t pad = 0;
    char *buf, *src;
    int n;

    /* apr_base64_decode decodes anything, mapping bad characters to zero bits: check first */
    if (len % 4 != 0 || len > 4 * (size_t)(DD_RC_MAX_BODY / 3 + 1))
        return -1;
    while (pad < 2 && pad < len && in[len - 1 - pad] == '=')
        pad++;
    for (size_t i = 0; i < len - pad; i++)
        if (!b64_char((unsigned char)in[i]))
            return -1;
    src = apr_pstrmemdup(p, in, len);
    buf = apr_palloc(p, (size_t)apr_base64_decode_len(src) + 1);
    n = apr_base64_decode(buf, src);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    *out = buf;
    *out_len = (size_t)n;
    return 0;
}

/* --- one file's lib_config ------------------------------------------------------------------ */

static int bad(apr_pool_t *p, const char **err, const char *fmt, const char *what)
{
    *err = apr_psprintf(p, fmt, what);
    return -1;
}

static int parse_tags(apr_pool_t *p, json_t *v, dd_rc_apm_t *out, const char **err)
{
    dd_tagset_t *t = dd_tagset_make(p);
    json_t *e;
    size_t i;

    if (!json_is_array(v))
        return bad(p, err, "%s must be a list of \"key:value\"", "tracing_tags");
    json_array_foreach(v, i, e)
    {
        const char *s = json_string_value(e), *colon;
        if (!s)
            return bad(p, err, "%s must be a list of \"key:value\"", "tracing_tags");
        colon = strchr(s, ':');
        if (colon == s || !*s)
            continue; /* no key: skipped, as DD_TAGS' parser does */
        if (colon)
            dd_tagset_put(t, apr_pstrmemdup(p, s, (size_t)(colon - s)), apr_pstrdup(p, colon + 1));
        else
            dd_tagset_put(t, apr_pstrdup(p, s), "");
    }
    out->tags = t;
    return 0;
}

static int parse_lib_config(apr_pool_t *p, json_t *lc, dd_rc_apm_t *out, const char **err)
{
    json_t *v;
    const char *why;

    if (!json_is_object(lc))
        return bad(p, err, "%s must be an object", "lib_config");
    if ((v = json_object_get(lc, "tracing_sampling_rate")) && !json_is_null(v)) {
        double r = json_number_value(v);
        if (!json_is_number(v) || !(r >= 0.0 && r <= 1.0))
            return bad(p, err, "%s must be a number in [0, 1]", "tracing_sampling_rate");
        out->has_rate = 1;
        out->rate = r + 0.0;
    }
    if ((v = json_object_get(lc, "tracing_sampling_rules")) && !json_is_null(v)) {
        if (!(out->rules = dd_rules_parse_remote(p, v, &why)))
            return bad(p, err, "tracing_sampling_rules: %s", why);
    }
    if ((v = json_object_get(lc, "tracing_tags")) && !json_is_null(v) &&
        parse_tags(p, v, out, err) != 0)
        return -1;
    if ((v = json_object_get(lc, "tracing_enabled")) && !json_is_null(v)) {
        if (!json_is_boolean(v))
            return bad(p, err, "%s must be true or false", "tracing_enabled");
        out->enabled = json_is_true(v);
    }
    return 0;
}

static const char *target_field(apr_pool_t *p, json_t *st, const char *key, const char **err)
{
    json_t *v = json_object_get(st, key);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        bad(p, err, "service_target.%s must be a string", key);
        return NULL;
    }
    return apr_pstrdup(p, json_string_value(v));
}

int dd_rc_parse_apm(apr_pool_t *p, const char *content, size_t len, dd_rc_apm_t *out,
                    const char **err)
{
    json_error_t jerr;
    json_t *root = json_loadb(content, len, JSON_REJECT_DUPLICATES, &jerr), *st;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    out->enabled = -1;
    *err = NULL;
    if (!json_is_object(root)) {
        *err = root ? "not a JSON object" : apr_psprintf(p, "not valid JSON: %s", jerr.text);
        goto done;
    }
    st = json_object_get(root, "service_target");
    if (st && !json_is_null(st) && !json_is_object(st)) {
        bad(p, err, "%s must be an object", "service_target");
        goto done;
    }
    out->service = target_field(p, st, "service", err);
    out->env = target_field(p, st, "env", err);
    if (*err)
        goto done;
    if (!json_object_get(root, "lib_config")) {
        bad(p, err, "%s is missing", "lib_config");
        goto done;
    }
    rc = parse_lib_config(p, json_object_get(root, "lib_config"), out, err);
done:
    json_decref(root);
    return rc;
}

static int wild(const char *s)
{
    return !s || strcmp(s, "*") == 0;
}

int dd_rc_target_score(const dd_rc_apm_t *a, const char *service, const char *env)
{
    int s_named = !wild(a->service), e_named = !wild(a->env);
    if (s_named && (!service || strcmp(a->service, service) != 0))
        return 0;
    if (e_named && (!env || strcmp(a->env, env) != 0))
        return 0;
    return 1 + (s_named ? 2 : 0) + (e_named ? 1 : 0);
}

/* --- the client ----------------------------------------------------------------------------- */

dd_rc_client_t *dd_rc_client_create(const dd_rc_identity_t *id)
{
    apr_pool_t *p;
    dd_rc_client_t *c;

    if (apr_pool_create_unmanaged_ex(&p, NULL, NULL) != APR_SUCCESS)
        return NULL;
    c = apr_pcalloc(p, sizeof(*c));
    c->pool = p;
#define COPY(f) c->id.f = apr_pstrdup(p, id->f ? id->f : "")
    COPY(client_id);
    COPY(runtime_id);
    COPY(language);
    COPY(tracer_version);
    COPY(service);
    COPY(env);
    COPY(app_version);
#undef COPY
    return c;
}

void dd_rc_client_destroy(dd_rc_client_t *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->nfiles; i++)
        apr_pool_destroy(c->files[i].pool);
    free(c->backend_state);
    apr_pool_destroy(c->pool);
}

int dd_rc_nfiles(const dd_rc_client_t *c)
{
    return c->nfiles;
}

const dd_rc_file_t *dd_rc_file(const dd_rc_client_t *c, int i)
{
    return i >= 0 && i < c->nfiles ? &c->files[i].f : NULL;
}

/* The capability bits, big-endian, without leading zero bytes (as dd-trace-py sends them),
 * base64. */
static void capabilities(char out[16])
{
    unsigned long long caps = DD_RC_CAP_APM_TRACING_SAMPLE_RATE |
                              DD_RC_CAP_APM_TRACING_CUSTOM_TAGS | DD_RC_CAP_APM_TRACING_ENABLED |
                              DD_RC_CAP_APM_TRACING_SAMPLE_RULES;
    unsigned char bytes[8];
    int n = 0, skip = 0;
    for (int i = 7; i >= 0; i--)
        bytes[n++] = (unsigned char)(caps >> (8 * i));
    while (skip < 7 && bytes[skip] == 0)
        skip++;
    apr_base64_encode(out, (const char *)bytes + skip, n - skip);
}

char *dd_rc_request(dd_rc_client_t *c)
{
    json_t *root = json_object(), *client = json_object(), *state = json_object();
    json_t *tracer = json_object(), *states = json_array(), *cached = json_array();
    char caps[16];
    char *out = NULL;
    int e = !root || !client || !state || !tracer || !states || !cached;

    capabilities(caps);
    for (int i = 0; !e && i < c->nfiles; i++) {
        const dd_rc_file_t *f = &c->files[i].f;
        json_t *cs =
            json_pack("{s:s, s:I, s:s, s:i}", "id", f->id, "version", (json_int_t)f->version,
                      "product", f->product, "apply_state", f->apply_state);
        json_t *ct =
            json_pack("{s:s, s:I, s:[{s:s, s:s}]}", "path", f->path, "length", (json_int_t)f->len,
                      "hashes", "algorithm", "sha256", "hash", f->hash);
        if (cs && f->apply_error)
            e |= json_object_set_new(cs, "apply_error", json_string(f->apply_error));
        e |= !cs || !ct || json_array_append_new(states, cs) || json_array_append_new(cached, ct);
    }
    if (!e) {
        e |= json_object_set_new(state, "root_version", json_integer(1));
        e |= json_object_set_new(state, "targets_version", json_integer(c->targets_version));
        e |= json_object_set(state, "config_states", states);
        e |= json_object_set_new(state, "has_error", json_boolean(c->error[0] != '\0'));
        e |= json_object_set_new(state, "error", json_string(c->error));
        e |= json_object_set_new(state, "backend_client_state",
                                 json_string(c->backend_state ? c->backend_state : ""));
        e |= json_object_set_new(tracer, "runtime_id", json_string(c->id.runtime_id));
        e |= json_object_set_new(tracer, "language", json_string(c->id.language));
        e |= json_object_set_new(tracer, "tracer_version", json_string(c->id.tracer_version));
        e |= json_object_set_new(tracer, "service", json_string(c->id.service));
        e |= json_object_set_new(tracer, "env", json_string(c->id.env));
        e |= json_object_set_new(tracer, "app_version", json_string(c->id.app_version));
        e |= json_object_set(client, "state", state);
        e |= json_object_set_new(client, "id", json_string(c->id.client_id));
        e |= json_object_set_new(client, "products", json_pack("[s]", PRODUCT));
        e |= json_object_set_new(client, "is_tracer", json_true());
        e |= json_object_set(client, "client_tracer", tracer);
        e |= json_object_set_new(client, "capabilities", json_string(caps));
        e |= json_object_set(root, "client", client);
        e |= json_object_set(root, "cached_target_files", cached);
    }
    if (!e)
        out = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    json_decref(client);
    json_decref(state);
    json_decref(tracer);
    json_decref(states);
    json_decref(cached);
    return out;
}

/* --- a response ----------------------------------------------------------------------------- */

/* ^(datadog/\d+|employee)/<product>/<id>/<name>$ (dd-trace-cpp parse_config_path). Fills
 * product and id (in p). */
static int parse_path(apr_pool_t *p, const char *path, const char **product, const char **id)
{
    const char *s = path, *parts[3];
    size_t lens[3];

    if (strncmp(s, "datadog/", 8) == 0) {
        s += 8;
        if (*s < '0' || *s > '9')
            return -1;
        while (*s >= '0' && *s <= '9')
            s++;
    } else if (strncmp(s, "employee", 8) == 0) {
        s += 8;
    } else {
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        if (*s++ != '/')
            return -1;
        parts[i] = s;
        while (*s && *s != '/')
            s++;
        lens[i] = (size_t)(s - parts[i]);
        if (lens[i] == 0)
            return -1;
    }
    if (*s)
        return -1;
    *product = apr_pstrmemdup(p, parts[0], lens[0]);
    *id = apr_pstrmemdup(p, parts[1], lens[1]);
    return 0;
}

static const held_t *find(const dd_rc_client_t *c, const char *path)
{
    for (int i = 0; i < c->nfiles; i++)
        if (strcmp(c->files[i].f.path, path) == 0)
            return &c->files[i];
    return NULL;
}

static json_t *target_file(json_t *files, const char *path)
{
    json_t *e;
    size_t i;
    json_array_foreach(files, i, e)
    {
        const char *pth = json_string_value(json_object_get(e, "path"));
        if (pth && strcmp(pth, path) == 0)
            return e;
    }
    return NULL;
}

typedef struct {
    apr_pool_t *tmp; /* the response's scratch memory */
    held_t staged[DD_RC_MAX_FILES];
    int nstaged;
    const char *error;
} stage_t;

static int reject(stage_t *st, const char *fmt, const char *what)
{
    st->error = apr_psprintf(st->tmp, fmt, what);
    return -1;
}

/* One client_configs entry: kept (same hash as held), or staged as a new file. */
static int stage_config(dd_rc_client_t *c, stage_t *st, json_t *targets, json_t *files,
                        json_t *entry)
{
    const char *path = json_string_value(entry), *product, *id, *hash, *why;
    json_t *meta, *tf, *v;
    const held_t *old;
    held_t *h;
    char *raw, got[65];
    size_t rawlen;
    dd_rc_apm_t apm;

    if (!path)
        return reject(st, "%s", "client_configs must be a list of paths");
    if (parse_path(st->tmp, path, &product, &id) != 0)
        return reject(st, "%s is an invalid configuration path", path);
    if (strcmp(product, PRODUCT) != 0)
        return 0; /* not asked for: ignored */
    meta = json_object_get(targets, path);
    hash = json_string_value(json_object_get(json_object_get(meta, "hashes"), "sha256"));
    v = json_object_get(json_object_get(meta, "custom"), "v");
    if (!json_is_object(meta) || !hash || !json_is_integer(v) ||
        !json_is_integer(json_object_get(meta, "length")))
        return reject(st, "target %s has no sha256, length or custom.v", path);
    if (st->nstaged == DD_RC_MAX_FILES)
        return reject(st, "more than %s configurations", apr_itoa(st->tmp, DD_RC_MAX_FILES));
    h = &st->staged[st->nstaged];
    old = find(c, path);
    if (old && strcmp(old->f.hash, hash) == 0) {
        *h = *old; /* unchanged: the held file moves over as it is */
        h->pool = NULL;
        st->nstaged++;
        return 0;
    }
    if (!(tf = target_file(files, path)) || !json_is_string(json_object_get(tf, "raw")))
        return reject(st, "target %s missing from target_files", path);
    v = json_object_get(tf, "raw");
    if (dd_rc_base64_decode(st->tmp, json_string_value(v), json_string_length(v), &raw, &rawlen) !=
        0)
        return reject(st, "target %s is not base64", path);
    if (rawlen > DD_RC_MAX_FILE_BYTES)
        return reject(st, "target %s is too large", path);
    dd_sha256_hex(raw, rawlen, got);
    if ((json_int_t)rawlen != json_integer_value(json_object_get(meta, "length")) ||
        strcasecmp(got, hash) != 0)
        return reject(st, "target %s does not match its length and sha256", path);

    if (apr_pool_create_unmanaged_ex(&h->pool, NULL, NULL) != APR_SUCCESS)
        return reject(st, "%s", "out of memory");
    st->nstaged++; /* owned by the stage from here: freed with it on a later rejection */
    h->f.path = apr_pstrdup(h->pool, path);
    h->f.id = apr_pstrdup(h->pool, id);
    h->f.product = PRODUCT;
    h->f.version =
        (long long)json_integer_value(json_object_get(json_object_get(meta, "custom"), "v"));
    h->f.hash = apr_pstrdup(h->pool, hash);
    h->f.content = apr_pstrmemdup(h->pool, raw, rawlen);
    h->f.len = rawlen;
    h->f.apply_state = DD_RC_STATE_ACKNOWLEDGED;
    h->f.apply_error = NULL;
    if (dd_rc_parse_apm(st->tmp, raw, rawlen, &apm, &why) != 0) {
        h->f.apply_state = DD_RC_STATE_ERROR;
        h->f.apply_error = apr_pstrdup(h->pool, why);
    }
    return 0;
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const held_t *)a)->f.path, ((const held_t *)b)->f.path);
}

/* Validates the whole response into st. 0: st holds the new set of files (or nothing to do
 * when *unchanged). */
static int stage(dd_rc_client_t *c, stage_t *st, const char *body, size_t len, long long *version,
                 const char **backend, int *unchanged)
{
    json_error_t jerr;
    json_t *root, *targets = NULL, *configs, *files, *signed_, *v, *e;
    char *raw;
    size_t rawlen, i;
    int rc = -1;

    *unchanged = 0;
    if (len > DD_RC_MAX_BODY)
        return reject(st, "%s", "the response is too large");
    if (len == 0) {
        *unchanged = 1;
        return 0;
    }
    root = json_loadb(body, len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return reject(st, "%s", "the response is not a JSON object");
    }
    if (json_object_size(root) == 0) {
        *unchanged = 1;
        rc = 0;
        goto done;
    }
    v = json_object_get(root, "targets");
    if (!json_is_string(v)) {
        reject(st, "%s", "targets is missing");
        goto done;
    }
    if (dd_rc_base64_decode(st->tmp, json_string_value(v), json_string_length(v), &raw, &rawlen) !=
        0) {
        reject(st, "%s", "targets is not base64");
        goto done;
    }
    targets = json_loadb(raw, rawlen, 0, &jerr);
    signed_ = json_object_get(targets, "signed");
    v = json_object_get(signed_, "version");
    if (!json_is_object(json_object_get(signed_, "targets")) || !json_is_integer(v)) {
        reject(st, "%s", "targets has no signed.targets and signed.version");
        goto done;
    }
    *version = (long long)json_integer_value(v);
    v = json_object_get(json_object_get(signed_, "custom"), "opaque_backend_state");
    *backend = json_is_string(v) ? apr_pstrdup(st->tmp, json_string_value(v)) : NULL;
    configs = json_object_get(root, "client_configs");
    files = json_object_get(root, "target_files");
    if ((configs && !json_is_null(configs) && !json_is_array(configs)) ||
        (files && !json_is_null(files) && !json_is_array(files))) {
        reject(st, "%s", "client_configs and target_files must be lists");
        goto done;
    }
    json_array_foreach(configs, i, e)
    {
        if (stage_config(c, st, json_object_get(signed_, "targets"), files, e) != 0)
            goto done;
    }
    qsort(st->staged, (size_t)st->nstaged, sizeof(held_t), by_path);
    for (int k = 1; k < st->nstaged; k++)
        if (strcmp(st->staged[k - 1].f.path, st->staged[k].f.path) == 0) {
            reject(st, "%s is listed twice", st->staged[k].f.path);
            goto done;
        }
    rc = 0;
done:
    json_decref(targets);
    json_decref(root);
    return rc;
}

dd_rc_status_t dd_rc_process(dd_rc_client_t *c, const char *body, size_t len, dd_rc_result_t *r)
{
    stage_t *st;
    apr_pool_t *tmp;
    long long version = c->targets_version;
    const char *backend = NULL;
    int unchanged, changed = 0;
    dd_rc_status_t status;

    memset(r, 0, sizeof(*r));
    if (apr_pool_create_unmanaged_ex(&tmp, NULL, NULL) != APR_SUCCESS) {
        r->error = "out of memory";
        return DD_RC_MALFORMED;
    }
    st = apr_pcalloc(tmp, sizeof(*st));
    st->tmp = tmp;
    if (stage(c, st, body, len, &version, &backend, &unchanged) != 0) {
        for (int i = 0; i < st->nstaged; i++)
            if (st->staged[i].pool)
                apr_pool_destroy(st->staged[i].pool);
        snprintf(c->error, sizeof(c->error), "%s", st->error ? st->error : "malformed");
        r->error = c->error;
        status = DD_RC_MALFORMED;
        goto out;
    }
    c->error[0] = '\0';
    if (unchanged) {
        status = DD_RC_UNCHANGED;
        goto out;
    }
    /* Commit: held files not carried over (removed or replaced) are freed. */
    for (int i = 0; i < c->nfiles; i++) {
        int kept = 0;
        for (int k = 0; k < st->nstaged && !kept; k++)
            kept = !st->staged[k].pool && strcmp(st->staged[k].f.path, c->files[i].f.path) == 0;
        if (!kept) {
            int replaced = 0;
            for (int k = 0; k < st->nstaged && !replaced; k++)
                replaced = strcmp(st->staged[k].f.path, c->files[i].f.path) == 0;
            r->removed += !replaced;
            apr_pool_destroy(c->files[i].pool);
            changed = 1;
        }
    }
    for (int k = 0; k < st->nstaged; k++) {
        held_t *h = &st->staged[k];
        if (!h->pool) { /* carried over: its pool is the held one's */
            h->pool = find(c, h->f.path)->pool;
            continue;
        }
        changed = 1;
        if (h->f.apply_state == DD_RC_STATE_ACKNOWLEDGED)
            r->applied++;
        else
            r->apply_errors++;
    }
    memcpy(c->files, st->staged, sizeof(held_t) * (size_t)st->nstaged);
    c->nfiles = st->nstaged;
    c->targets_version = version;
    if (backend && (!c->backend_state || strcmp(backend, c->backend_state) != 0)) {
        char *copy = strdup(backend);
        if (copy) {
            free(c->backend_state);
            c->backend_state = copy;
        }
    }
    status = changed ? DD_RC_CHANGED : DD_RC_UNCHANGED;
out:
    apr_pool_destroy(tmp);
    return status;
}

const dd_rc_file_t *dd_rc_select(const dd_rc_client_t *c, const char *service, const char *env)
{
    const dd_rc_file_t *best = NULL;
    int best_score = 0;
    apr_pool_t *tmp;

    if (c->nfiles == 0 || apr_pool_create_unmanaged_ex(&tmp, NULL, NULL) != APR_SUCCESS)
        return NULL;
    for (int i = 0; i < c->nfiles; i++) {
        const dd_rc_file_t *f = &c->files[i].f;
        dd_rc_apm_t a;
        const char *why;
        int score;
        if (f->apply_state != DD_RC_STATE_ACKNOWLEDGED ||
            dd_rc_parse_apm(tmp, f->content, f->len, &a, &why) != 0)
            continue;
        score = dd_rc_target_score(&a, service, env);
        if (score > best_score) {
            best = f;
            best_score = score;
        }
    }
    apr_pool_destroy(tmp);
    return best;
}
