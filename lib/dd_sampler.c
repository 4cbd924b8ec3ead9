/* SPDX-License-Identifier: Apache-2.0 */
/* dd_sampler.c - the per-trace sampling decision (CONTRACT §5): user rules, the rate limiter
 * that guards rule keeps, and the agent's rates as the fallback.
 *
 * Rules are parsed once, at configuration time, into pool memory and are read-only afterwards,
 * so any number of request threads may match them. The limiter is the only shared mutable
 * state; it is lock-free (C11 atomics) and its invariants are stated next to its struct.
 */
#include "dd_sampler.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <apr_strings.h>
#include <jansson.h>

#include "dd_span.h"

/* ---------------------------------------------------------------------------------------- */
/* Rules                                                                                    */

typedef struct {
    const char *key;     /* meta key, matched exactly */
    const char *pattern; /* glob for its value */
} tag_rule_t;

typedef struct {
    const char *service; /* globs; NULL = any */
    const char *name;
    const char *resource;
    const tag_rule_t *tags; /* every one must match */
    int ntags;
    double rate;
    int mechanism; /* _dd.p.dm: DD_MECH_RULE, or a remote rule's (DD_MECH_REMOTE_*) */
} rule_t;

struct dd_rules {
    apr_array_header_t *rules; /* of rule_t, in match order */
};

/* Error messages quote keys from the input; this caps how much of one they show. */
#define MAX_QUOTED_KEY 64

static dd_rules_t *rules_make(apr_pool_t *p, int n)
{
    dd_rules_t *r = apr_palloc(p, sizeof(*r));
    r->rules = apr_array_make(p, n > 0 ? n : 1, sizeof(rule_t));
    return r;
}

/* Reads a glob field. Returns NULL on success, else the error. */
static const char *parse_glob(apr_pool_t *p, int n, const char *key, json_t *v, const char **out)
{
    if (!json_is_string(v))
        return apr_psprintf(p, "rule %d: '%s' must be a string", n, key);
    *out = apr_pstrdup(p, json_string_value(v));
    return NULL;
}

static const char *parse_tags(apr_pool_t *p, int n, json_t *v, rule_t *rule)
{
    const char *k;
    json_t *tv;
    tag_rule_t *tags;
    int i = 0;

    if (!json_is_object(v))
        return apr_psprintf(p, "rule %d: 'tags' must be an object", n);
    tags = apr_pcalloc(p, (json_object_size(v) + 1) * sizeof(*tags));
    json_object_foreach(v, k, tv)
    {
        if (!json_is_string(tv))
            return apr_psprintf(p, "rule %d: tag '%.*s' must be a string", n, MAX_QUOTED_KEY, k);
        tags[i].key = apr_pstrdup(p, k);
        tags[i].pattern = apr_pstrdup(p, json_string_value(tv));
        i++;
    }
    rule->tags = tags;
    rule->ntags = i;
    return NULL;
}

static const char *parse_rate(apr_pool_t *p, int n, json_t *v, rule_t *rule)
{
    double rate;

    if (!json_is_number(v))
        return apr_psprintf(p, "rule %d: sample_rate must be a number", n);
    rate = json_number_value(v);
    if (!(rate >= 0.0 && rate <= 1.0)) {
        char num[32];
        snprintf(num, sizeof(num), "%g", rate); /* apr_psprintf's %g writes -0.1 as "-.1" */
        return apr_psprintf(p, "rule %d: sample_rate %s is not in [0, 1]", n, num);
    }
    rule->rate = rate + 0.0; /* -0 becomes 0 */
    return NULL;
}

/* Fills rule from the n-th (1-based) element. Returns NULL on success, else the error. */
static const char *parse_rule(apr_pool_t *p, int n, json_t *obj, rule_t *rule)
{
    const char *k, *why = NULL;
    json_t *v;
    int has_rate = 0;

    if (!json_is_object(obj))
        return apr_psprintf(p, "rule %d: must be a JSON object", n);
    memset(rule, 0, sizeof(*rule));
    json_object_foreach(obj, k, v)
    {
        if (strcmp(k, "service") == 0) {
            why = parse_glob(p, n, k, v, &rule->service);
        } else if (strcmp(k, "name") == 0) {
            why = parse_glob(p, n, k, v, &rule->name);
        } else if (strcmp(k, "resource") == 0) {
            why = parse_glob(p, n, k, v, &rule->resource);
        } else if (strcmp(k, "tags") == 0) {
            why = parse_tags(p, n, v, rule);
        } else if (strcmp(k, "sample_rate") == 0) {
            why = parse_rate(p, n, v, rule);
            has_rate = 1;
        } else {
            why = apr_psprintf(p, "rule %d: unknown key '%.*s'", n, MAX_QUOTED_KEY, k);
        }
        if (why)
            return why;
    }
    if (!has_rate)
        return apr_psprintf(p, "rule %d: sample_rate is missing", n);
    rule->mechanism = DD_MECH_RULE;
    return NULL;
}

dd_rules_t *dd_rules_parse(apr_pool_t *p, const char *json, const char **err)
{
    json_error_t jerr;
    json_t *root;
    dd_rules_t *rules = NULL;
    const char *why = NULL;

    if (!json) {
        why = "no rules given";
        goto out;
    }
    /* DECODE_ANY: a scalar parses, so it gets "must be a list" rather than a syntax error.
     * REJECT_DUPLICATES: {"sample_rate":1,"sample_rate":0} is a mistake, not "last wins". */
    root = json_loads(json, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        why = apr_psprintf(p, "not valid JSON: %s at line %d column %d", jerr.text, jerr.line,
                           jerr.column);
        goto out;
    }
    if (!json_is_array(root)) {
        why = "must be a JSON list of rules";
    } else {
        size_t i, n = json_array_size(root);

        rules = rules_make(p, (int)n);
        for (i = 0; i < n && !why; i++)
            why = parse_rule(p, (int)i + 1, json_array_get(root, i), apr_array_push(rules->rules));
        if (why)
            rules = NULL;
    }
    json_decref(root); /* everything kept was copied into p */
out:
    if (err)
        *err = why;
    return rules;
}

dd_rules_t *dd_rules_add_catch_all(apr_pool_t *p, const dd_rules_t *rules, double rate)
{
    /* A new list, not an in-place append: one parsed list (DD_TRACE_SAMPLING_RULES, or a
     * server's rules inherited by its virtual hosts) is shared by servers whose DDSampleRate
     * differs, and each must see only its own catch-all. The rules themselves are shared. */
    int n = rules ? rules->rules->nelts : 0;
    dd_rules_t *out = rules_make(p, n + 1);
    rule_t *all;

    for (int i = 0; i < n; i++)
        *(rule_t *)apr_array_push(out->rules) = ((const rule_t *)rules->rules->elts)[i];
    all = apr_array_push(out->rules);
    memset(all, 0, sizeof(*all));
    all->rate = rate;
    all->mechanism = DD_MECH_RULE;
    return out;
}

/* Remote configuration's form (dd-trace-cpp config_manager.cpp parse_rule): service,
 * resource, sample_rate and provenance required; name optional; tags a list of
 * {"key", "value_glob"}. Other keys are ignored, as the tracers do. */
static const char *parse_rc_rule(apr_pool_t *p, int n, json_t *obj, rule_t *rule)
{
    json_t *v, *e;
    const char *why, *prov;
    size_t i;
    tag_rule_t *tags;

    if (!json_is_object(obj))
        return apr_psprintf(p, "rule %d: must be a JSON object", n);
    memset(rule, 0, sizeof(*rule));
    static const char *const req[] = {"service", "resource"};
    for (int k = 0; k < 2; k++) {
        if (!(v = json_object_get(obj, req[k])))
            return apr_psprintf(p, "rule %d: %s is missing", n, req[k]);
        if ((why = parse_glob(p, n, req[k], v, k ? &rule->resource : &rule->service)))
            return why;
    }
    if ((v = json_object_get(obj, "name")) && (why = parse_glob(p, n, "name", v, &rule->name)))
        return why;
    if (!(v = json_object_get(obj, "sample_rate")))
        return apr_psprintf(p, "rule %d: sample_rate is missing", n);
    if ((why = parse_rate(p, n, v, rule)))
        return why;
    prov = json_string_value(json_object_get(obj, "provenance"));
    if (!prov)
        return apr_psprintf(p, "rule %d: provenance must be a string", n);
    if (strcasecmp(prov, "customer") == 0)
        rule->mechanism = DD_MECH_REMOTE_USER;
    else if (strcasecmp(prov, "dynamic") == 0)
        rule->mechanism = DD_MECH_REMOTE_DYNAMIC;
    else
        return apr_psprintf(p, "rule %d: provenance '%.*s' is not customer or dynamic", n,
                            MAX_QUOTED_KEY, prov);
    if ((v = json_object_get(obj, "tags")) && !json_is_null(v)) {
        if (!json_is_array(v))
            return apr_psprintf(p, "rule %d: 'tags' must be a list", n);
        tags = apr_pcalloc(p, (json_array_size(v) + 1) * sizeof(*tags));
        json_array_foreach(v, i, e)
        {
            const char *k = json_string_value(json_object_get(e, "key"));
            const char *g = json_string_value(json_object_get(e, "value_glob"));
            if (!k || !g)
                return apr_psprintf(p, "rule %d: tag %d needs string key and value_glob", n,
                                    (int)i + 1);
            tags[i].key = apr_pstrdup(p, k);
            tags[i].pattern = apr_pstrdup(p, g);
        }
        rule->tags = tags;
        rule->ntags = (int)json_array_size(v);
    }
    return NULL;
}

dd_rules_t *dd_rules_parse_remote(apr_pool_t *p, const void *json_list, const char **err)
{
    const json_t *list = json_list;
    const char *why = NULL;
    dd_rules_t *rules;
    size_t n = json_array_size(list);

    if (!json_is_array(list)) {
        *err = "must be a JSON list of rules";
        return NULL;
    }
    rules = rules_make(p, (int)n);
    for (size_t i = 0; i < n && !why; i++)
        why = parse_rc_rule(p, (int)i + 1, json_array_get(list, i), apr_array_push(rules->rules));
    *err = why;
    return why ? NULL : rules;
}

static int is_catch_all(const rule_t *r)
{
    return !r->service && !r->name && !r->resource && r->ntags == 0;
}

dd_rules_t *dd_rules_override(apr_pool_t *p, const dd_rules_t *remote, const dd_rules_t *local,
                              int has_rate, double rate)
{
    int nr = remote ? remote->rules->nelts : 0, nl = local ? local->rules->nelts : 0;
    const rule_t *l = nl ? (const rule_t *)local->rules->elts : NULL;
    dd_rules_t *out = rules_make(p, nr + nl + 1);

    for (int i = 0; i < nr; i++)
        *(rule_t *)apr_array_push(out->rules) = ((const rule_t *)remote->rules->elts)[i];
    if (has_rate && nl && is_catch_all(&l[nl - 1]))
        nl--; /* the remote rate replaces the local catch-all (DDSampleRate) */
    for (int i = 0; i < nl; i++)
        *(rule_t *)apr_array_push(out->rules) = l[i];
    if (has_rate) {
        rule_t *all = apr_array_push(out->rules);
        memset(all, 0, sizeof(*all));
        all->rate = rate;
        all->mechanism = DD_MECH_RULE; /* as dd-trace-cpp: the rate is a rule, -3 */
    }
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* Globs                                                                                    */

static unsigned char fold(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* Length of the character at s (not at its end): a UTF-8 sequence, or a single byte when s
 * does not start a well-formed-looking one (so any byte string is a string of characters). */
static size_t char_len(const unsigned char *s)
{
    size_t want = s[0] >= 0xF0 && s[0] <= 0xF7 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC0 ? 2 : 1;
    size_t n = 1;

    if (s[0] >= 0xF8)
        return 1;
    while (n < want && (s[n] & 0xC0) == 0x80)
        n++;
    return n == want ? n : 1;
}

/* The classic iterative matcher: on a mismatch, go back to just after the last '*' and let
 * that star swallow one more character. An earlier star never needs revisiting (whatever it
 * could swallow, the last star can too), so the cost is O(len(pattern) * len(s)) at worst,
 * never exponential. '?' and the star's steps move by whole characters (char_len); literal
 * characters compare bytewise, folding ASCII case only. */
int dd_glob_match(const char *pattern, const char *s)
{
    const unsigned char *p = (const unsigned char *)(pattern ? pattern : "");
    const unsigned char *t = (const unsigned char *)(s ? s : "");
    const unsigned char *star_p = NULL, *star_t = NULL;

    while (*t) {
        if (*p == '*') {
            while (*p == '*')
                p++;
            if (!*p)
                return 1; /* a trailing star swallows the rest */
            star_p = p;
            star_t = t;
        } else if (*p == '?') {
            p++;
            t += char_len(t);
        } else if (*p && fold(*p) == fold(*t)) {
            p++;
            t++;
        } else if (star_p) {
            star_t += char_len(star_t);
            p = star_p;
            t = star_t;
        } else {
            return 0;
        }
    }
    while (*p == '*')
        p++;
    return *p == 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Matching and the decision                                                                */

static const char *meta_get(const apr_array_header_t *meta, const char *key)
{
    if (!meta)
        return NULL;
    for (int i = 0; i < meta->nelts; i++) {
        const dd_meta_t *m = &((const dd_meta_t *)meta->elts)[i];
        if (m->key && strcmp(m->key, key) == 0)
            return m->value;
    }
    return NULL;
}

static int rule_matches(const rule_t *r, const dd_sample_input_t *in)
{
    if (r->service && !dd_glob_match(r->service, in->service))
        return 0;
    if (r->name && !dd_glob_match(r->name, in->name))
        return 0;
    if (r->resource && !dd_glob_match(r->resource, in->resource))
        return 0;
    for (int i = 0; i < r->ntags; i++) {
        const char *v = meta_get(in->meta, r->tags[i].key);
        if (!v || !dd_glob_match(r->tags[i].pattern, v))
            return 0;
    }
    return 1;
}

static const rule_t *first_match(const dd_rules_t *rules, const dd_sample_input_t *in)
{
    if (!rules)
        return NULL;
    for (int i = 0; i < rules->rules->nelts; i++) {
        const rule_t *r = &((const rule_t *)rules->rules->elts)[i];
        if (rule_matches(r, in))
            return r;
    }
    return NULL;
}

#define KNUTH_FACTOR 1111111111111111111ULL

int dd_sample_keep(uint64_t trace_id_low, double rate)
{
    uint64_t hash = trace_id_low * KNUTH_FACTOR; /* unsigned: wraps mod 2^64 */

    if (!(rate > 0.0)) /* also NaN */
        return hash == 0;
    if (rate >= 1.0)
        return 1;
    /* rate < 1, so the product is below 2^64 and the conversion is defined; it is exact
     * because a double times a power of two only changes the exponent. */
    return hash <= (uint64_t)(rate * 18446744073709551616.0);
}

void dd_sample(const dd_rules_t *rules, dd_limiter_t *limiter, dd_rates_t *rates,
               const dd_sample_input_t *in, int64_t now_ns, dd_decision_t *out)
{
    const rule_t *r = first_match(rules, in);
    double rate;

    memset(out, 0, sizeof(*out));
    if (r) {
        out->mechanism = r->mechanism;
        out->rate = r->rate;
        if (!dd_sample_keep(in->trace_id_low, r->rate)) {
            out->priority = -1;
        } else if (limiter) {
            out->limiter_used = 1;
            out->priority = dd_limiter_allow(limiter, now_ns, &out->limit_psr) ? 2 : -1;
        } else {
            out->priority = 2;
        }
        return;
    }
    if (rates && dd_rates_lookup(rates, in->service, in->env, &rate)) {
        out->mechanism = 1;
        out->rate = rate;
    } else {
        out->mechanism = 0;
        out->rate = 1.0;
    }
    out->priority = dd_sample_keep(in->trace_id_low, out->rate) ? 1 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* The limiter                                                                              */

/* The token bucket is kept as GCRA ("generic cell rate algorithm"), which is the same bucket
 * expressed as one number: tat, the time at which the bucket would be full again. A call at
 * now is allowed when tat - now <= tolerance, and then moves tat to max(tat, now) + interval.
 * With interval = 1/rate and tolerance = (burst - 1) * interval this allows exactly the calls
 * a bucket of `burst` tokens refilled at `rate` would: at most burst + rate * (t - t0) calls
 * in any span [t0, t]. One word means one CAS per allowed call and no torn state.
 *
 * The effective rate (what _dd.limit_psr reports) is allowed/seen over the current and the
 * previous whole second of now_ns: like dd-trace-cpp's 10-second average, but over 1-2 s,
 * which is enough to say "about 1 in N" and keeps the state in two words. Each word packs
 * [second mod 2^28 | seen | allowed] (28/18/18 bits; the counts saturate at 262143 calls per
 * second per process, which only flattens the estimate). A word with seen = 0 is empty (the
 * initial state); any second replaces it. Otherwise seconds compare within half the 2^28 s
 * cycle, so only a process idle for over 4 years could mistake an old window for a new one.
 *
 * Memory order: every access is a relaxed atomic. Each word is self-contained (no other
 * memory is published through it), and all read-modify-writes of one atomic object are
 * totally ordered whatever the memory order, which is all the CAS loops rely on. */
struct dd_limiter {
    /* Immutable after create. */
    int deny_all;         /* rate 0 (or not a positive number) */
    int allow_all;        /* rate so high that an interval would be under 1 ns */
    int64_t interval_ns;  /* ns per token, rounded up so we never exceed the rate */
    int64_t tolerance_ns; /* (burst - 1) * interval_ns */

    _Atomic int64_t tat;   /* GCRA state; starts at INT64_MIN (a full bucket) */
    _Atomic uint64_t cur;  /* window counters of the newest second seen */
    _Atomic uint64_t prev; /* the second before a cur, when one was published */
};

#define NS_PER_S 1000000000LL
/* The slowest supported rate: one token per ~11.6 days. Slower rates are treated as this,
 * which keeps tat arithmetic far from overflow for any clock value near the present. */
#define MAX_INTERVAL_NS 1000000000000000LL

#define W_BITS 18
#define W_MAX ((1ULL << W_BITS) - 1)
#define W_EPOCH_BITS 28
#define W_EPOCH_MASK ((1ULL << W_EPOCH_BITS) - 1)
#define W_PACK(e, s, a) (((uint64_t)(e) << (2 * W_BITS)) | ((uint64_t)(s) << W_BITS) | (a))
#define W_EPOCH(w) ((w) >> (2 * W_BITS))
#define W_SEEN(w) (((w) >> W_BITS) & W_MAX)
#define W_ALLOWED(w) ((w)&W_MAX)

dd_limiter_t *dd_limiter_create(apr_pool_t *p, double per_second)
{
    dd_limiter_t *l = apr_pcalloc(p, sizeof(*l));
    double burst = per_second > 1.0 ? per_second : 1.0;

    if (!(per_second > 0.0)) {
        l->deny_all = 1;
    } else if (per_second >= (double)NS_PER_S) {
        l->allow_all = 1;
    } else {
        double interval = (double)NS_PER_S / per_second; /* rounded up below */
        if (interval < (double)MAX_INTERVAL_NS) {
            l->interval_ns = (int64_t)interval;
            if ((double)l->interval_ns < interval)
                l->interval_ns++;
        } else {
            l->interval_ns = MAX_INTERVAL_NS;
        }
        /* 0 for rates up to 1; else under rate * (1e9 / rate + 1) < 2e9 ns: no overflow */
        l->tolerance_ns = (int64_t)((burst - 1.0) * (double)l->interval_ns);
    }
    atomic_init(&l->tat, INT64_MIN);
    atomic_init(&l->cur, 0);
    atomic_init(&l->prev, 0);
    return l;
}

static int64_t sat_add(int64_t a, int64_t b) /* b >= 0 */
{
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static int bucket_take(dd_limiter_t *l, int64_t now)
{
    int64_t tat = atomic_load_explicit(&l->tat, memory_order_relaxed);

    for (;;) {
        int64_t t = tat > now ? tat : now;
        /* t >= now, so the unsigned difference is the exact distance */
        if ((uint64_t)t - (uint64_t)now > (uint64_t)l->tolerance_ns)
            return 0;
        if (atomic_compare_exchange_weak_explicit(&l->tat, &tat, sat_add(t, l->interval_ns),
                                                  memory_order_relaxed, memory_order_relaxed))
            return 1;
    }
}

/* Second a is newer than second b (mod 2^28, within half the cycle). */
static int epoch_newer(uint64_t a, uint64_t b)
{
    uint64_t d = (a - b) & W_EPOCH_MASK;
    return d != 0 && d < (1ULL << (W_EPOCH_BITS - 1));
}

/* Publishes a finished window as prev unless a newer one is there already. */
static void publish_prev(dd_limiter_t *l, uint64_t done)
{
    uint64_t old = atomic_load_explicit(&l->prev, memory_order_relaxed);

    if (W_SEEN(done) == 0)
        return;
    while (W_SEEN(old) == 0 || epoch_newer(W_EPOCH(done), W_EPOCH(old)))
        if (atomic_compare_exchange_weak_explicit(&l->prev, &old, done, memory_order_relaxed,
                                                  memory_order_relaxed))
            return;
}

/* Counts this call and returns allowed/seen over the current and previous second. */
static double window_count(dd_limiter_t *l, int64_t now, int allowed)
{
    uint64_t epoch = (uint64_t)(now / NS_PER_S) & W_EPOCH_MASK;
    uint64_t old = atomic_load_explicit(&l->cur, memory_order_relaxed), neu, prev;
    uint64_t seen, ok;
    int rotated;

    do {
        rotated = W_SEEN(old) == 0 || epoch_newer(epoch, W_EPOCH(old));
        if (rotated) {
            neu = W_PACK(epoch, 1, allowed ? 1 : 0);
        } else { /* this second, or a call whose clock read lags a little: count it here */
            uint64_t s = W_SEEN(old), a = W_ALLOWED(old);
            if (s < W_MAX)
                s++;
            if (allowed && a < W_MAX)
                a++;
            neu = W_PACK(W_EPOCH(old), s, a);
        }
    } while (!atomic_compare_exchange_weak_explicit(&l->cur, &old, neu, memory_order_relaxed,
                                                    memory_order_relaxed));
    if (rotated)
        publish_prev(l, old);

    seen = W_SEEN(neu);
    ok = W_ALLOWED(neu);
    prev = atomic_load_explicit(&l->prev, memory_order_relaxed);
    if (W_EPOCH(prev) == ((W_EPOCH(neu) - 1) & W_EPOCH_MASK)) {
        seen += W_SEEN(prev);
        ok += W_ALLOWED(prev);
    }
    return (double)ok / (double)seen; /* seen >= 1: this call */
}

int dd_limiter_allow(dd_limiter_t *l, int64_t now_ns, double *effective_rate)
{
    int allowed;
    double eff;

    if (!l) {
        if (effective_rate)
            *effective_rate = 1.0;
        return 1;
    }
    allowed = l->allow_all ? 1 : l->deny_all ? 0 : bucket_take(l, now_ns);
    eff = window_count(l, now_ns, allowed);
    if (effective_rate)
        *effective_rate = eff;
    return allowed;
}
