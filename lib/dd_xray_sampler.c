/* SPDX-License-Identifier: Apache-2.0 */
/* dd_xray_sampler.c - X-Ray's sampling rules, reservoirs and targets, in memory every process
 * of the server shares (see dd_xray_sampler.h for the design and who writes what).
 *
 * Memory orders:
 * - The rules are double-buffered, each table with its own seqlock. The poller (holding the
 *   writer lock) writes the table readers are not directed to: seq odd, the words, seq even again
 * (release store), then `active` points at it (release). A reader loads active and that table's seq
 *   (acquire), copies the words and loads seq again (relaxed): equal and even means
 *   the copy is whole (Boehm, "Can seqlocks get along with programming language memory
 *   models?", 2012). A reader only meets a write when it was still reading a table from before
 *   the previous switch; it then retries on the current one. Every shared word is an atomic,
 *   so there is no data race for ThreadSanitizer to find. Instead of fences (which GCC's
 *   ThreadSanitizer does not model) the words are stored with release and loaded with acquire
 *   order: a release store keeps the odd seq before it, an acquire load keeps the second seq
 *   load after it. On x86-64 these are the same plain moves as relaxed ones.
 * - The writer lock (a CAS on a word holding its expiry second) keeps pollers apart; the
 *   poller's own fields (slot names and in_use) are touched only under it. A holder that died
 *   is replaced once the expiry passes.
 * - Counters are relaxed fetch_adds; the poller reads them with exchange(0). A target's quota is
 *   stored before its TTL (release) and read after it (acquire), so a reader that sees a new
 *   TTL also sees the quota that came with it.
 * - A slot's reservoir is one word, (second << 32) | (used << 1) | borrowed, updated by CAS: a
 *   new second resets both counts at once, as the Go SDK's reset() does.
 */
#include "dd_xray_sampler.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dd_sampler.h"
#include "dd_util.h"

#define MAGIC 0x6464787261793031ULL /* "ddxray01" */
#define RULE_WORDS ((sizeof(dd_xray_rule_t) + 7) / 8)
#define READ_TRIES 64
#define STALE_WRITER_S 10
#define DEFAULT_INTERVAL_S 10

_Static_assert(sizeof(dd_xray_rule_t) % 8 == 0, "rules are copied in 8-byte words");

typedef union {
    dd_xray_rule_t r;
    uint64_t w[RULE_WORDS];
} rule_words_t;

typedef struct {
    /* the poller's, under the write lock */
    char name[33];
    int in_use;
    /* everyone's */
    atomic_uint_fast64_t requests, sampled, borrowed;
    _Atomic uint64_t reservoir;   /* (second << 32) | (used << 1) | borrowed-this-second */
    _Atomic uint64_t rate_bits;   /* the fixed rate in force (a double's bits) */
    _Atomic int64_t quota;        /* requests per second X-Ray gave this server; 0 = none */
    _Atomic int64_t quota_ttl;    /* epoch s; the quota is used while now <= ttl */
    _Atomic int64_t interval;     /* s between reports */
    _Atomic int64_t refreshed_at; /* epoch s of the last target */
} slot_t;

struct dd_xray_sampler {
    uint64_t magic;
    uint64_t size;
    char client_id[32];      /* written once at init */
    _Atomic int64_t wlock;   /* 0, or the expiry second of the writer holding it */
    _Atomic uint64_t active; /* the table readers use: 0 or 1 */
    _Atomic uint64_t seq[2]; /* each table's seqlock */
    _Atomic uint64_t nrules[2];
    _Atomic int64_t rules_at; /* epoch s the rules were fetched at; 0 = none */
    _Atomic uint64_t rules[2][DD_XRAY_MAX_RULES][RULE_WORDS];
    slot_t slots[DD_XRAY_MAX_RULES];
    _Atomic uint64_t local_reservoir; /* (second << 32) | used, for the local default rule */
    _Atomic uint64_t lease;           /* (pid << 32) | expiry second */
    _Atomic int64_t next_rules_at, next_targets_at;
    atomic_int refresh_rules;
};

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, 8);
    return u;
}

static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, 8);
    return d;
}

static double random01(void)
{
    return (double)(dd_random_id(0) >> 11) * 0x1p-53;
}

size_t dd_xray_sampler_size(void)
{
    return sizeof(dd_xray_sampler_t);
}

dd_xray_sampler_t *dd_xray_sampler_init(void *mem, size_t size)
{
    dd_xray_sampler_t *s = mem;
    char hex[17];
    if (!mem || size < sizeof(*s))
        return NULL;
    memset(s, 0, sizeof(*s));
    s->magic = MAGIC;
    s->size = sizeof(*s);
    dd_u64_to_hex16(dd_random_id(0), hex);
    memcpy(s->client_id, hex, 16);
    dd_u64_to_hex16(dd_random_id(0), hex);
    memcpy(s->client_id + 16, hex, 8);
    s->client_id[24] = '\0';
    return s;
}

dd_xray_sampler_t *dd_xray_sampler_attach(void *mem, size_t size)
{
    dd_xray_sampler_t *s = mem;
    if (!mem || size < sizeof(*s) || s->magic != MAGIC || s->size != sizeof(*s))
        return NULL;
    return s;
}

const char *dd_xray_sampler_client_id(const dd_xray_sampler_t *s)
{
    return s->client_id;
}

int dd_xray_wildcard_match(const char *pattern, const char *text)
{
    return dd_glob_match(pattern, text);
}

/* ---- the writer lock ------------------------------------------------------------------ */

static int write_lock(dd_xray_sampler_t *s, int64_t now)
{
    int64_t cur = atomic_load_explicit(&s->wlock, memory_order_relaxed);
    if (cur != 0 && cur >= now)
        return 0;
    /* free, or its holder died (expired): take it */
    return atomic_compare_exchange_strong_explicit(&s->wlock, &cur, now + STALE_WRITER_S,
                                                   memory_order_acquire, memory_order_relaxed);
}

static void write_unlock(dd_xray_sampler_t *s)
{
    atomic_store_explicit(&s->wlock, 0, memory_order_release);
}

/* ---- the decision ----------------------------------------------------------------------- */

/* An empty request attribute matches any pattern (both SDKs). */
static int attr_match(const char *pattern, const char *value)
{
    return !value || !*value || dd_glob_match(pattern, value);
}

static int rule_applies(const dd_xray_rule_t *r, const dd_xray_sample_req_t *q)
{
    if (r->is_default)
        return 1;
    return attr_match(r->host, q->host) && attr_match(r->path, q->path) &&
           attr_match(r->method, q->method) && attr_match(r->service, q->service) &&
           attr_match(r->type, q->type);
}

static void copy_rule_out(dd_xray_sampler_t *s, uint64_t t, size_t i, rule_words_t *out)
{
    for (size_t k = 0; k < RULE_WORDS; k++)
        out->w[k] = atomic_load_explicit(&s->rules[t][i][k], memory_order_acquire);
}

/* The first rule that applies, copied whole into *out. Returns 1 (found), 0 (none), or -1
 * (no consistent copy: the poller kept writing). */
static int find_rule(dd_xray_sampler_t *s, const dd_xray_sample_req_t *q, rule_words_t *out)
{
    for (int tries = 0; tries < READ_TRIES; tries++) {
        uint64_t t = atomic_load_explicit(&s->active, memory_order_acquire) & 1;
        uint64_t s1 = atomic_load_explicit(&s->seq[t], memory_order_acquire), s2;
        uint64_t n;
        int found = 0;
        if (s1 & 1)
            continue;
        n = atomic_load_explicit(&s->nrules[t], memory_order_acquire);
        if (n > DD_XRAY_MAX_RULES)
            n = DD_XRAY_MAX_RULES;
        for (size_t i = 0; i < n && !found; i++) {
            copy_rule_out(s, t, i, out);
            out->r.name[sizeof(out->r.name) - 1] = '\0';       /* a torn copy is checked below, */
            out->r.service[sizeof(out->r.service) - 1] = '\0'; /* but must stay a string */
            out->r.type[sizeof(out->r.type) - 1] = '\0';
            out->r.host[sizeof(out->r.host) - 1] = '\0';
            out->r.method[sizeof(out->r.method) - 1] = '\0';
            out->r.path[sizeof(out->r.path) - 1] = '\0';
            found = rule_applies(&out->r, q);
        }
        s2 = atomic_load_explicit(&s->seq[t], memory_order_relaxed);
        if (s1 == s2)
            return found && out->r.slot >= 0 && out->r.slot < DD_XRAY_MAX_RULES;
    }
    return -1;
}

/* One from the quota this second, if any is left. */
static int reservoir_take(slot_t *sl, int64_t now, int64_t quota)
{
    uint64_t cur = atomic_load_explicit(&sl->reservoir, memory_order_relaxed), next;
    if (quota <= 0)
        return 0;
    if (quota > 0x3fffffff)
        quota = 0x3fffffff;
    do {
        uint64_t sec = cur >> 32, used = (cur >> 1) & 0x7fffffff, borrowed = cur & 1;
        if (sec != (uint64_t)(uint32_t)now) {
            sec = (uint32_t)now;
            used = 0;
            borrowed = 0;
        }
        if ((int64_t)used >= quota)
            return 0;
        next = (sec << 32) | ((used + 1) << 1) | borrowed;
    } while (!atomic_compare_exchange_weak_explicit(&sl->reservoir, &cur, next,
                                                    memory_order_relaxed, memory_order_relaxed));
    return 1;
}

/* One borrowed request per second while there is no quota. */
static int reservoir_borrow(slot_t *sl, int64_t now)
{
    uint64_t cur = atomic_load_explicit(&sl->reservoir, memory_order_relaxed), next;
    do {
        uint64_t sec = cur >> 32, used = (cur >> 1) & 0x7fffffff;
        if (sec != (uint64_t)(uint32_t)now) {
            sec = (uint32_t)now;
            used = 0;
        } else if (cur & 1) {
            return 0;
        }
        next = (sec << 32) | (used << 1) | 1;
    } while (!atomic_compare_exchange_weak_explicit(&sl->reservoir, &cur, next,
                                                    memory_order_relaxed, memory_order_relaxed));
    return 1;
}

static int local_default(dd_xray_sampler_t *s, int64_t now)
{
    uint64_t cur = atomic_load_explicit(&s->local_reservoir, memory_order_relaxed), next;
    do {
        uint64_t sec = cur >> 32, used = cur & 0xffffffff;
        if (sec != (uint64_t)(uint32_t)now) {
            sec = (uint32_t)now;
            used = 0;
        }
        if (used >= DD_XRAY_LOCAL_RESERVOIR)
            return random01() < DD_XRAY_LOCAL_RATE;
        next = (sec << 32) | (used + 1);
    } while (!atomic_compare_exchange_weak_explicit(&s->local_reservoir, &cur, next,
                                                    memory_order_relaxed, memory_order_relaxed));
    return 1;
}

/* The Go SDK's CentralizedRule.Sample. */
static int rule_sample(slot_t *sl, const dd_xray_rule_t *r, int64_t now)
{
    int64_t ttl;
    atomic_fetch_add_explicit(&sl->requests, 1, memory_order_relaxed);
    ttl = atomic_load_explicit(&sl->quota_ttl, memory_order_acquire);
    if (now > ttl) {
        if (r->reservoir_size > 0 && reservoir_borrow(sl, now)) {
            atomic_fetch_add_explicit(&sl->borrowed, 1, memory_order_relaxed);
            return 1;
        }
    } else if (reservoir_take(sl, now, atomic_load_explicit(&sl->quota, memory_order_relaxed))) {
        atomic_fetch_add_explicit(&sl->sampled, 1, memory_order_relaxed);
        return 1;
    }
    if (random01() < u2d(atomic_load_explicit(&sl->rate_bits, memory_order_relaxed))) {
        atomic_fetch_add_explicit(&sl->sampled, 1, memory_order_relaxed);
        return 1;
    }
    return 0;
}

static int rules_fresh(dd_xray_sampler_t *s, int64_t now)
{
    int64_t at = atomic_load_explicit(&s->rules_at, memory_order_relaxed);
    return at != 0 && at >= now - DD_XRAY_RULES_TTL_S;
}

void dd_xray_sample(dd_xray_sampler_t *s, const dd_xray_sample_req_t *req, int64_t now_s,
                    dd_xray_decision_t *out)
{
    rule_words_t rule;
    out->sampled = 0;
    out->rule[0] = '\0';
    if (rules_fresh(s, now_s) && find_rule(s, req, &rule) == 1) {
        out->sampled = rule_sample(&s->slots[rule.r.slot], &rule.r, now_s);
        if (out->sampled)
            memcpy(out->rule, rule.r.name, sizeof(out->rule));
        return;
    }
    out->sampled = local_default(s, now_s);
}

size_t dd_xray_sampler_rule_count(dd_xray_sampler_t *s, int64_t now_s)
{
    uint64_t t = atomic_load_explicit(&s->active, memory_order_acquire) & 1;
    return rules_fresh(s, now_s) ? (size_t)atomic_load_explicit(&s->nrules[t], memory_order_relaxed)
                                 : 0;
}

/* ---- rules ------------------------------------------------------------------------------ */

/* Copies a JSON string of at most max bytes into dst. Returns 0 when it is not one. */
static int get_str(json_t *o, const char *key, char *dst, size_t max)
{
    json_t *v = json_object_get(o, key);
    size_t n;
    if (!json_is_string(v))
        return 0;
    n = json_string_length(v);
    if (n > max || memchr(json_string_value(v), '\0', n))
        return 0;
    memcpy(dst, json_string_value(v), n);
    dst[n] = '\0';
    return 1;
}

static int get_int(json_t *o, const char *key, int64_t lo, int64_t hi, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    double d;
    if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < lo || i > hi)
            return 0;
        *out = i;
        return 1;
    }
    if (!json_is_real(v))
        return 0;
    d = json_real_value(v);
    if (!(d >= (double)lo && d <= (double)hi) || d != (double)(int64_t)d)
        return 0;
    *out = (int64_t)d;
    return 1;
}

static int get_num(json_t *o, const char *key, double *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v))
        return 0;
    *out = json_number_value(v);
    return 1;
}

/* One SamplingRule, as the Go SDK takes it (and the API's limits). */
static int parse_rule(json_t *sr, dd_xray_rule_t *r)
{
    json_t *attrs = json_object_get(sr, "Attributes");
    char arn[2];
    int64_t version, prio, size;

    memset(r, 0, sizeof(*r));
    if (!json_is_object(sr) || !get_str(sr, "RuleName", r->name, 32) || !r->name[0])
        return 0;
    if (!get_int(sr, "Version", 0, INT32_MAX, &version) || version != 1)
        return 0;
    if (attrs && !json_is_null(attrs) && !(json_is_object(attrs) && json_object_size(attrs) == 0))
        return 0; /* rules on attributes apply to spans with attributes: not ours */
    if (!get_str(sr, "ResourceARN", arn, 1) || strcmp(arn, "*") != 0)
        return 0;
    if (!get_num(sr, "FixedRate", &r->fixed_rate) || !(r->fixed_rate >= 0 && r->fixed_rate <= 1))
        return 0;
    if (!get_int(sr, "ReservoirSize", 0, INT32_MAX, &size))
        return 0;
    r->reservoir_size = size;
    r->is_default = strcmp(r->name, "Default") == 0;
    if (r->is_default) {
        r->priority = 10000; /* evaluated last, whatever it says */
        return 1;
    }
    if (!get_int(sr, "Priority", 1, 9999, &prio))
        return 0;
    r->priority = (int32_t)prio;
    return get_str(sr, "ServiceName", r->service, 64) && get_str(sr, "ServiceType", r->type, 64) &&
           get_str(sr, "Host", r->host, 64) && get_str(sr, "HTTPMethod", r->method, 10) &&
           get_str(sr, "URLPath", r->path, 128);
}

int dd_xray_rules_parse(const char *json, size_t len, dd_xray_rule_t *rules, size_t max, size_t *n,
                        char **next_token, unsigned *skipped)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr), *recs, *tok;
    size_t i;
    json_t *rec;

    *next_token = NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    recs = json_object_get(root, "SamplingRuleRecords");
    if (!json_is_array(recs)) {
        json_decref(root);
        return -1;
    }
    json_array_foreach(recs, i, rec)
    {
        dd_xray_rule_t r;
        if (!json_is_object(rec) || !parse_rule(json_object_get(rec, "SamplingRule"), &r)) {
            (*skipped)++;
            continue;
        }
        if (*n >= max) {
            (*skipped)++;
            continue;
        }
        rules[(*n)++] = r;
    }
    tok = json_object_get(root, "NextToken");
    if (json_is_string(tok) && json_string_length(tok) > 0 && json_string_length(tok) < 4096)
        *next_token = strdup(json_string_value(tok));
    json_decref(root);
    return 0;
}

static int rule_cmp(const void *a, const void *b)
{
    const dd_xray_rule_t *x = a, *y = b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return strcmp(x->name, y->name);
}

static void slot_reset(slot_t *sl, const char *name)
{
    strcpy(sl->name, name);
    sl->in_use = 1;
    atomic_store_explicit(&sl->requests, 0, memory_order_relaxed);
    atomic_store_explicit(&sl->sampled, 0, memory_order_relaxed);
    atomic_store_explicit(&sl->borrowed, 0, memory_order_relaxed);
    atomic_store_explicit(&sl->reservoir, 0, memory_order_relaxed);
    atomic_store_explicit(&sl->quota, 0, memory_order_relaxed);
    atomic_store_explicit(&sl->quota_ttl, 0, memory_order_relaxed);
    atomic_store_explicit(&sl->interval, DEFAULT_INTERVAL_S, memory_order_relaxed);
    atomic_store_explicit(&sl->refreshed_at, 0, memory_order_relaxed);
}

int dd_xray_sampler_set_rules(dd_xray_sampler_t *s, dd_xray_rule_t *rules, size_t n,
                              int64_t fetched_at)
{
    int keep[DD_XRAY_MAX_RULES] = {0};
    size_t defaults = 0;
    uint64_t t, v;

    qsort(rules, n, sizeof(*rules), rule_cmp);
    /* One Default at most (the last one sorted wins nothing: the first is kept). */
    for (size_t i = 0; i < n; i++) {
        if (rules[i].is_default && defaults++) {
            memmove(&rules[i], &rules[i + 1], (n - i - 1) * sizeof(*rules));
            n--;
            i--;
        }
    }
    if (n > DD_XRAY_MAX_RULES)
        n = DD_XRAY_MAX_RULES;
    if (!write_lock(s, fetched_at))
        return -1;
    /* Slots by name: an existing rule keeps its own, a new one takes a free one. */
    for (size_t i = 0; i < n; i++) {
        rules[i].slot = -1;
        for (int k = 0; k < DD_XRAY_MAX_RULES; k++) {
            if (s->slots[k].in_use && !keep[k] && strcmp(s->slots[k].name, rules[i].name) == 0) {
                rules[i].slot = k;
                keep[k] = 1;
                break;
            }
        }
    }
    for (int k = 0; k < DD_XRAY_MAX_RULES; k++)
        if (!keep[k])
            s->slots[k].in_use = 0;
    for (size_t i = 0; i < n; i++) {
        if (rules[i].slot >= 0)
            continue;
        for (int k = 0; k < DD_XRAY_MAX_RULES; k++) {
            if (!s->slots[k].in_use) {
                slot_reset(&s->slots[k], rules[i].name);
                rules[i].slot = k;
                break;
            }
        }
    }
    /* The table readers are not directed to; one still reading it from before the last
     * switch sees seq move and retries on the other. */
    t = (atomic_load_explicit(&s->active, memory_order_relaxed) & 1) ^ 1;
    v = atomic_load_explicit(&s->seq[t], memory_order_relaxed);
    atomic_store_explicit(&s->seq[t], v + 1, memory_order_relaxed);
    for (size_t i = 0; i < n; i++) {
        rule_words_t w;
        memset(&w, 0, sizeof(w));
        w.r = rules[i];
        atomic_store_explicit(&s->slots[w.r.slot].rate_bits, d2u(w.r.fixed_rate),
                              memory_order_relaxed);
        for (size_t k = 0; k < RULE_WORDS; k++)
            atomic_store_explicit(&s->rules[t][i][k], w.w[k], memory_order_release);
    }
    atomic_store_explicit(&s->nrules[t], n, memory_order_release);
    atomic_store_explicit(&s->seq[t], v + 2, memory_order_release);
    atomic_store_explicit(&s->active, t, memory_order_release);
    atomic_store_explicit(&s->rules_at, fetched_at, memory_order_relaxed);
    write_unlock(s);
    return 0;
}

/* ---- targets ---------------------------------------------------------------------------- */

char *dd_xray_targets_request(dd_xray_sampler_t *s, int64_t now_s, size_t *len)
{
    json_t *root = json_object(), *docs = json_array();
    char *out = NULL;
    int bad = !root || !docs;

    if (bad || !write_lock(s, now_s)) {
        json_decref(root);
        json_decref(docs);
        return NULL;
    }
    for (int k = 0; !bad && k < DD_XRAY_MAX_RULES; k++) {
        slot_t *sl = &s->slots[k];
        json_t *d;
        uint64_t req, smp, brw;
        if (!sl->in_use || atomic_load_explicit(&sl->requests, memory_order_relaxed) == 0 ||
            now_s < atomic_load_explicit(&sl->refreshed_at, memory_order_relaxed) +
                        atomic_load_explicit(&sl->interval, memory_order_relaxed))
            continue;
        req = atomic_exchange_explicit(&sl->requests, 0, memory_order_relaxed);
        smp = atomic_exchange_explicit(&sl->sampled, 0, memory_order_relaxed);
        brw = atomic_exchange_explicit(&sl->borrowed, 0, memory_order_relaxed);
        d = json_object();
        bad |= !d;
        if (!bad) {
            bad |= json_object_set_new(d, "RuleName", json_string(sl->name));
            bad |= json_object_set_new(d, "ClientID", json_string(s->client_id));
            bad |= json_object_set_new(d, "RequestCount", json_integer((json_int_t)req));
            bad |= json_object_set_new(d, "SampledCount", json_integer((json_int_t)smp));
            bad |= json_object_set_new(d, "BorrowCount", json_integer((json_int_t)brw));
            bad |= json_object_set_new(d, "Timestamp", json_integer((json_int_t)now_s));
            bad |= json_array_append_new(docs, d);
        }
    }
    write_unlock(s);
    if (!bad && json_array_size(docs) > 0 &&
        json_object_set(root, "SamplingStatisticsDocuments", docs) == 0)
        out = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(docs);
    json_decref(root);
    if (out)
        *len = strlen(out);
    return out;
}

static slot_t *slot_named(dd_xray_sampler_t *s, const char *name)
{
    for (int k = 0; k < DD_XRAY_MAX_RULES; k++)
        if (s->slots[k].in_use && strcmp(s->slots[k].name, name) == 0)
            return &s->slots[k];
    return NULL;
}

int dd_xray_targets_apply(dd_xray_sampler_t *s, const char *json, size_t len, int64_t now_s,
                          int *refresh_rules)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr), *docs, *un, *d;
    double lrm;
    size_t i;
    int partial = 0;

    *refresh_rules = 0;
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    docs = json_object_get(root, "SamplingTargetDocuments");
    un = json_object_get(root, "UnprocessedStatistics");
    if ((docs && !json_is_array(docs) && !json_is_null(docs)) ||
        (un && !json_is_array(un) && !json_is_null(un))) {
        json_decref(root);
        return -1;
    }
    if (!write_lock(s, now_s)) {
        json_decref(root);
        return 1;
    }
    json_array_foreach(docs, i, d)
    {
        char name[33];
        double rate, ttl;
        int64_t quota, interval;
        slot_t *sl;
        if (!json_is_object(d) || !get_str(d, "RuleName", name, 32) ||
            !get_num(d, "FixedRate", &rate) || !(rate >= 0 && rate <= 1) ||
            !(sl = slot_named(s, name))) {
            partial = 1;
            continue;
        }
        atomic_store_explicit(&sl->rate_bits, d2u(rate), memory_order_relaxed);
        if (get_int(d, "ReservoirQuota", 0, INT32_MAX, &quota))
            atomic_store_explicit(&sl->quota, quota, memory_order_relaxed); /* 0: none */
        if (get_num(d, "ReservoirQuotaTTL", &ttl) && ttl >= 0 && ttl < 1e12)
            atomic_store_explicit(&sl->quota_ttl, (int64_t)ttl, memory_order_release);
        if (get_int(d, "Interval", 1, 86400, &interval))
            atomic_store_explicit(&sl->interval, interval, memory_order_relaxed);
        atomic_store_explicit(&sl->refreshed_at, now_s, memory_order_relaxed);
    }
    write_unlock(s);
    json_array_foreach(un, i, d)
    {
        json_t *code = json_object_get(d, "ErrorCode");
        const char *c = json_is_string(code) ? json_string_value(code) : "";
        if (c[0] == '4')
            *refresh_rules = 1;
        else if (c[0] == '5')
            partial = 1;
    }
    if (get_num(root, "LastRuleModification", &lrm) &&
        lrm >= (double)atomic_load_explicit(&s->rules_at, memory_order_relaxed))
        *refresh_rules = 1;
    json_decref(root);
    return partial;
}

/* ---- the lease and the poller ----------------------------------------------------------- */

int dd_xray_sampler_lease(dd_xray_sampler_t *s, uint32_t pid, int64_t now_s, int64_t ttl_s)
{
    uint64_t cur = atomic_load_explicit(&s->lease, memory_order_acquire);
    uint64_t want = ((uint64_t)pid << 32) | (uint32_t)(now_s + ttl_s);
    uint32_t owner = (uint32_t)(cur >> 32);
    int64_t expiry = (int64_t)(cur & 0xffffffff);
    if (owner != pid && cur != 0 && expiry >= now_s)
        return 0;
    return atomic_compare_exchange_strong_explicit(&s->lease, &cur, want, memory_order_acq_rel,
                                                   memory_order_acquire);
}

void dd_xray_sampler_release(dd_xray_sampler_t *s, uint32_t pid)
{
    uint64_t cur = atomic_load_explicit(&s->lease, memory_order_acquire);
    if ((uint32_t)(cur >> 32) == pid)
        atomic_compare_exchange_strong_explicit(&s->lease, &cur, 0, memory_order_acq_rel,
                                                memory_order_relaxed);
}

static void poll_failed(const dd_xray_poll_conf_t *c, const char *what)
{
    if (c->stats)
        dd_stats_add(&c->stats->xray_sampling_errors, 1);
    if (c->on_error)
        c->on_error(c->on_error_ctx, what);
}

/* POSTs and checks for a 200 with a body. Returns the body (malloc'd) or NULL. */
static char *call(const dd_xray_poll_conf_t *c, const char *path, const char *body, size_t len,
                  size_t *resp_len)
{
    char err[160], what[256];
    long status = 0;
    char *resp = NULL;
    err[0] = '\0';
    if (c->api.post(c->api.ctx, path, body, len, c->timeout_ms, &status, &resp, resp_len, err,
                    sizeof(err)) != 0) {
        snprintf(what, sizeof(what), "%s: %s", path, err[0] ? err : "no answer");
        poll_failed(c, what);
        free(resp);
        return NULL;
    }
    if (status != 200 || !resp) {
        snprintf(what, sizeof(what), "%s: HTTP %ld", path, status);
        poll_failed(c, what);
        free(resp);
        return NULL;
    }
    return resp;
}

#define MAX_PAGES 10

static void fetch_rules(const dd_xray_poll_conf_t *c, int64_t now)
{
    dd_xray_sampler_t *s = c->sampler;
    dd_xray_rule_t *rules = malloc(sizeof(*rules) * DD_XRAY_MAX_RULES * 2);
    size_t n = 0;
    unsigned skipped = 0;
    char *token = NULL;
    int ok = rules != NULL;

    for (int page = 0; ok && page < MAX_PAGES; page++) {
        char *body, *resp;
        size_t rlen = 0;
        json_t *req = json_object();
        if (token)
            json_object_set_new(req, "NextToken", json_string(token));
        body = req ? json_dumps(req, JSON_COMPACT) : NULL;
        json_decref(req);
        free(token);
        token = NULL;
        resp = body ? call(c, "/GetSamplingRules", body, strlen(body), &rlen) : NULL;
        free(body);
        if (!resp) {
            ok = 0;
            break;
        }
        if (dd_xray_rules_parse(resp, rlen, rules, DD_XRAY_MAX_RULES * 2, &n, &token, &skipped) !=
            0) {
            poll_failed(c, "/GetSamplingRules: the answer is not a GetSamplingRules object");
            ok = 0;
        }
        free(resp);
        if (!token)
            break;
    }
    free(token);
    if (ok && dd_xray_sampler_set_rules(s, rules, n, now) == 0) {
        int64_t jitter = (int64_t)(dd_random_id(0) % 5);
        atomic_store_explicit(&s->next_rules_at, now + DD_XRAY_RULES_PERIOD_S - jitter,
                              memory_order_relaxed);
        atomic_store_explicit(&s->refresh_rules, 0, memory_order_relaxed);
        /* The first report soon after rules arrive, so a quota replaces borrowing early. */
        int64_t next = atomic_load_explicit(&s->next_targets_at, memory_order_relaxed);
        if (next == 0 || next > now + 2)
            atomic_store_explicit(&s->next_targets_at, now + 2, memory_order_relaxed);
        if (c->stats) {
            dd_stats_add(&c->stats->xray_sampling_rules_fetched, 1);
            dd_stats_add(&c->stats->xray_sampling_rules_skipped, skipped);
        }
    } else {
        atomic_store_explicit(&s->next_rules_at, now + DD_XRAY_RETRY_S, memory_order_relaxed);
    }
    free(rules);
}

static int report_targets(const dd_xray_poll_conf_t *c, int64_t now)
{
    dd_xray_sampler_t *s = c->sampler;
    size_t len = 0, rlen = 0;
    char *body = dd_xray_targets_request(s, now, &len), *resp;
    int refresh = 0, rc;

    atomic_store_explicit(&s->next_targets_at, now + DD_XRAY_TARGETS_PERIOD_S,
                          memory_order_relaxed);
    if (!body)
        return 0;
    resp = call(c, "/SamplingTargets", body, len, &rlen);
    free(body);
    if (!resp)
        return 1;
    rc = dd_xray_targets_apply(s, resp, rlen, now, &refresh);
    free(resp);
    if (rc < 0)
        poll_failed(c, "/SamplingTargets: the answer is not a SamplingTargets object");
    else if (c->stats)
        dd_stats_add(&c->stats->xray_sampling_targets_fetched, 1);
    if (refresh)
        atomic_store_explicit(&s->refresh_rules, 1, memory_order_relaxed);
    return 1;
}

int dd_xray_poll(const dd_xray_poll_conf_t *c, int64_t now_s)
{
    dd_xray_sampler_t *s = c->sampler;
    if (!s || !c->api.post || !dd_xray_sampler_lease(s, c->pid, now_s, DD_XRAY_LEASE_S))
        return 0;
    if (atomic_load_explicit(&s->refresh_rules, memory_order_relaxed) ||
        now_s >= atomic_load_explicit(&s->next_rules_at, memory_order_relaxed)) {
        fetch_rules(c, now_s);
        return 1;
    }
    if (atomic_load_explicit(&s->rules_at, memory_order_relaxed) != 0 &&
        now_s >= atomic_load_explicit(&s->next_targets_at, memory_order_relaxed)) {
        return report_targets(c, now_s);
    }
    return 0;
}
