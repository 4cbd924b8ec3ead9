/* SPDX-License-Identifier: Apache-2.0 */
/* dd_rates.c - the agent's rate_by_service as a lock-free table for request threads.
 *
 * The flusher thread (the only writer) parses each agent response with jansson and, when the
 * rates changed, rewrites a fixed open-addressing table of (key hash, rate bits) pairs under a
 * seqlock. Request threads read it without locks, allocation or system calls: they hash the
 * key, probe, and retry when a write overlapped their read. After a bounded number of retries
 * they give up and report "not found" (the sampler then falls back to its default rate), so a
 * request never spins for long behind the writer.
 */
#include "dd_rates.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* Geometry. SLOTS is a power of two and at most half of the slots hold keys, so linear probes
 * stay short and every probe sequence reaches an empty slot. The agent sends one key per
 * (service, env) pair it has seen: a handful in practice. Keys past MAX_KEYS are rejected. */
#define SLOTS 1024u
#define MAX_KEYS (SLOTS / 2)

/* How many times a reader retries a read that raced the writer before giving up. A table
 * rewrite touches at most 2 * SLOTS words, so a few dozen retries cover it unless the reader
 * is descheduled, and then giving up (rate not found) is the right answer anyway. */
#define MAX_READ_ATTEMPTS 64

/* A slot's key is the FNV-1a 64 hash of the full key string, never 0 (0 marks an empty
 * slot). We store hashes, not strings: two different keys colliding in 64 bits is possible in
 * theory and accepted - the worst outcome is one service sampled at another's rate. */
typedef struct {
    uint64_t key;
    uint64_t bits; /* the rate, a double, as its bit pattern */
} entry_t;

struct dd_rates {
    /* The published table, read by any thread.
     *
     * Invariant: seq is odd exactly while the writer rewrites keys[]/bits[]; each completed
     * rewrite adds 2.
     * Writer: seq = s+1 (relaxed), slot stores (release), seq = s+2 (release).
     * Reader: s1 = seq (acquire), must be even; slot loads (acquire); s2 = seq (relaxed);
     * the read counts only when s1 == s2.
     * Why it is enough: a reader that loads any value from rewrite W synchronizes with that
     * release store, which is sequenced after W's seq = s+1, so its later load of seq sees
     * s+1 or newer and s2 != s1. A reader whose s1 acquired W's final s+2 sees every slot of
     * W (or newer values, which again change seq). Every shared access is atomic, so the
     * scheme is also exactly what ThreadSanitizer checks. */
    _Atomic uint64_t seq;
    _Atomic uint64_t keys[SLOTS];
    _Atomic uint64_t bits[SLOTS];

    /* Writer side only, under wlock (there is one writer by design; the lock just makes a
     * second one harmless). cur mirrors what is published; next is built from a response. */
    pthread_mutex_t wlock;
    entry_t cur[SLOTS];
    entry_t next[SLOTS];

    uint64_t default_key; /* key_hash("", ""): the agent's fallback "service:,env:" */
};

#define FNV_OFFSET 14695981039346656037ULL
#define FNV_PRIME 1099511628211ULL

static uint64_t fnv_add(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= FNV_PRIME;
    }
    return h;
}

static uint64_t fnv_final(uint64_t h)
{
    return h ? h : 1; /* 0 means "empty slot" */
}

/* The hash of "service:<service>,env:<env>", without building the string. */
static uint64_t key_hash(const char *service, const char *env)
{
    uint64_t h = FNV_OFFSET;
    h = fnv_add(h, "service:");
    h = fnv_add(h, service ? service : "");
    h = fnv_add(h, ",env:");
    h = fnv_add(h, env ? env : "");
    return fnv_final(h);
}

dd_rates_t *dd_rates_create(void)
{
    dd_rates_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->wlock, NULL) != 0) {
        free(r);
        return NULL;
    }
    atomic_init(&r->seq, 0);
    r->default_key = key_hash("", "");
    for (unsigned i = 0; i < SLOTS; i++) {
        atomic_init(&r->keys[i], 0);
        atomic_init(&r->bits[i], 0);
    }
    return r;
}

void dd_rates_destroy(dd_rates_t *r)
{
    if (!r)
        return;
    pthread_mutex_destroy(&r->wlock);
    free(r);
}

/* Inserts into r->next. Returns 1 when added, 0 when the hash was already there (a second key
 * with the same 64-bit hash: the first one stays). */
static int next_insert(dd_rates_t *r, uint64_t h, double rate)
{
    unsigned i = (unsigned)h & (SLOTS - 1);
    uint64_t bits;

    while (r->next[i].key != 0) {
        if (r->next[i].key == h)
            return 0;
        i = (i + 1) & (SLOTS - 1);
    }
    memcpy(&bits, &rate, sizeof(bits));
    r->next[i].key = h;
    r->next[i].bits = bits;
    return 1;
}

/* Fills r->next from a rate_by_service object. Returns the number of rejected entries. */
static unsigned build_next(dd_rates_t *r, json_t *rbs)
{
    const char *key;
    json_t *val;
    unsigned nkeys = 0, rejected = 0;

    memset(r->next, 0, sizeof(r->next));
    /* jansson refuses keys with a NUL byte when parsing, so key is the whole key; it keeps
     * keys in document order, so "the first ones" below means the first in the response. */
    json_object_foreach(rbs, key, val)
    {
        double rate;

        if (!json_is_number(val)) {
            rejected++;
            continue;
        }
        rate = json_number_value(val);
        if (!(rate >= 0.0 && rate <= 1.0)) { /* also false for NaN */
            rejected++;
            continue;
        }
        if (nkeys == MAX_KEYS) {
            rejected++;
            continue;
        }
        rate += 0.0; /* -0.0 becomes 0.0, so equal tables compare equal bytewise */
        if (next_insert(r, fnv_final(fnv_add(FNV_OFFSET, key)), rate))
            nkeys++;
    }
    return rejected;
}

/* Makes r->next the published table. Only slots that differ are stored. */
static void publish_next(dd_rates_t *r)
{
    uint64_t s = atomic_load_explicit(&r->seq, memory_order_relaxed);

    atomic_store_explicit(&r->seq, s + 1, memory_order_relaxed);
    for (unsigned i = 0; i < SLOTS; i++) {
        if (r->next[i].key != r->cur[i].key)
            atomic_store_explicit(&r->keys[i], r->next[i].key, memory_order_release);
        if (r->next[i].bits != r->cur[i].bits)
            atomic_store_explicit(&r->bits[i], r->next[i].bits, memory_order_release);
    }
    atomic_store_explicit(&r->seq, s + 2, memory_order_release);
    memcpy(r->cur, r->next, sizeof(r->cur));
}

int dd_rates_update_json(dd_rates_t *r, const char *body, size_t len, unsigned *rejected)
{
    json_error_t jerr;
    json_t *root, *rbs;
    unsigned nrej = 0;

    if (!r || !body)
        return -1;
    root = json_loadb(body, len, 0, &jerr);
    if (!root)
        return -1;
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    rbs = json_object_get(root, "rate_by_service"); /* borrowed from root */
    if (rbs && !json_is_object(rbs)) {
        nrej = 1; /* present but unusable: count it, keep the table */
    } else if (rbs) {
        pthread_mutex_lock(&r->wlock);
        nrej = build_next(r, rbs);
        if (memcmp(r->next, r->cur, sizeof(r->cur)) != 0)
            publish_next(r); /* unchanged rates (the usual case) cost readers nothing */
        pthread_mutex_unlock(&r->wlock);
    }
    json_decref(root);
    if (rejected)
        *rejected += nrej;
    return 0;
}

/* Probes the published table for h. Any answer may be torn; the caller validates with seq. */
static int probe(dd_rates_t *r, uint64_t h, uint64_t *bits)
{
    unsigned i = (unsigned)h & (SLOTS - 1);

    /* Bounded by SLOTS: a torn view need not contain an empty slot where we expect one. */
    for (unsigned n = 0; n < SLOTS; n++) {
        uint64_t k = atomic_load_explicit(&r->keys[i], memory_order_acquire);
        if (k == 0)
            return 0;
        if (k == h) {
            *bits = atomic_load_explicit(&r->bits[i], memory_order_acquire);
            return 1;
        }
        i = (i + 1) & (SLOTS - 1);
    }
    return 0;
}

int dd_rates_lookup(dd_rates_t *r, const char *service, const char *env, double *rate)
{
    uint64_t h_exact, h_default;

    if (!r || !rate)
        return 0;
    h_exact = key_hash(service, env);
    h_default = r->default_key;
    for (int attempt = 0; attempt < MAX_READ_ATTEMPTS; attempt++) {
        uint64_t s1, s2, bits = 0;
        int found;

        s1 = atomic_load_explicit(&r->seq, memory_order_acquire);
        if (s1 & 1)
            continue; /* a rewrite is in progress */
        found = probe(r, h_exact, &bits) || probe(r, h_default, &bits);
        s2 = atomic_load_explicit(&r->seq, memory_order_relaxed);
        if (s1 != s2)
            continue;
        if (found)
            memcpy(rate, &bits, sizeof(*rate));
        return found;
    }
    return 0;
}
