/* SPDX-License-Identifier: Apache-2.0 */
/* dd_obfuscate.c - query string obfuscation with PCRE2 (see dd_obfuscate.h).
 *
 * PCRE2 allocates its match data through a general context; ours allocates from the request
 * pool (and frees nothing), so a request makes no heap allocation and leaves nothing behind.
 * The compiled code is freed by a cleanup of the configuration pool.
 */
#include "dd_obfuscate.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>
#include <apr_strings.h>

/* dd-trace-py's (?ix) expression with the blanks its verbose form ignores taken out. */
const char dd_qs_default_regexp[] =
    "(?:(?:\"|%22)?)(?:(?:old[-_]?|new[-_]?)?p(?:ass)?w(?:or)?d(?:1|2)?|pass(?:[-_]?phrase)?"
    "|secret|(?:api[-_]?|private[-_]?|public[-_]?|access[-_]?|secret[-_]?|app(?:lication)?[-_]?)"
    "key(?:[-_]?id)?|token|consumer[-_]?(?:id|key|secret)|sign(?:ed|ature)?"
    "|auth(?:entication|orization)?)(?:(?:\\s|%20)*(?:=|%3D)[^&]+|(?:\"|%22)(?:\\s|%20)*(?::|%3A)"
    "(?:\\s|%20)*(?:\"|%22)(?:%2[^2]|%[^2]|[^\"%])+(?:\"|%22))"
    "|(?:bearer(?:\\s|%20)+[a-z0-9._\\-]+|token(?::|%3A)[a-z0-9]{13}|gh[opsu]_[0-9a-zA-Z]{36}"
    "|ey[I-L](?:[\\w=-]|%3D)+\\.ey[I-L](?:[\\w=-]|%3D)+(?:\\.(?:[\\w.+/=-]|%3D|%2F|%2B)+)?"
    "|-{5}BEGIN(?:[a-z\\s]|%20)+PRIVATE(?:\\s|%20)KEY-{5}[^\\-]+-{5}END(?:[a-z\\s]|%20)+PRIVATE"
    "(?:\\s|%20)KEY(?:-{5})?(?:\\n|%0A)?|(?:ssh-(?:rsa|dss)|ecdsa-[a-z0-9]+-[a-z0-9]+)"
    "(?:\\s|%20|%09)+(?:[a-z0-9/.+]|%2F|%5C|%2B){100,}(?:=|%3D)*(?:(?:\\s|%20|%09)+[a-z0-9._-]+)?)";

/* Generous for the default expression on a capped query (it needs a few thousand steps);
 * small enough that a catastrophic user expression gives up within about a millisecond. */
#define MATCH_LIMIT 200000
#define DEPTH_LIMIT 5000

struct dd_qs_obfuscator {
    pcre2_code *code; /* NULL: no obfuscation */
};

static apr_status_t free_code(void *data)
{
    pcre2_code_free(data);
    return APR_SUCCESS;
}

dd_qs_obfuscator_t *dd_qs_obfuscator_create(apr_pool_t *p, const char *regexp, const char **why,
                                            size_t *offset)
{
    dd_qs_obfuscator_t *o = apr_pcalloc(p, sizeof(*o));
    int err;
    PCRE2_SIZE at;
    if (!*regexp)
        return o;
    o->code =
        pcre2_compile((PCRE2_SPTR)regexp, PCRE2_ZERO_TERMINATED, PCRE2_CASELESS, &err, &at, NULL);
    if (!o->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        *why = apr_pstrdup(p, (const char *)msg);
        *offset = at;
        return NULL;
    }
    pcre2_jit_compile(o->code, PCRE2_JIT_COMPLETE); /* the interpreter runs where JIT cannot */
    apr_pool_cleanup_register(p, o->code, free_code, apr_pool_cleanup_null);
    return o;
}

static void *pool_malloc(PCRE2_SIZE size, void *data)
{
    return apr_palloc(data, size);
}

static void pool_free(void *block, void *data)
{
    (void)block;
    (void)data;
}

/* The result, grown in the pool (a redaction can make it longer than the query). */
typedef struct {
    apr_pool_t *p;
    char *s;
    size_t len, cap;
} buf_t;

static void buf_init(buf_t *b, apr_pool_t *p, size_t hint)
{
    b->p = p;
    b->cap = hint + 32;
    b->len = 0;
    b->s = apr_palloc(p, b->cap + 1);
    b->s[0] = '\0';
}

static void buf_put(buf_t *b, const char *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = (b->len + n) * 2;
        char *s2 = apr_palloc(b->p, cap + 1);
        memcpy(s2, b->s, b->len);
        b->s = s2;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

/* The query cut to whole parameters within DD_QS_CAP. */
static size_t capped_length(const char *query, size_t qlen, int *truncated)
{
    size_t n = DD_QS_CAP;
    if (qlen <= DD_QS_CAP)
        return qlen;
    *truncated = 1;
    if (query[n] == '&')
        return n;
    while (n > 0 && query[n - 1] != '&')
        n--;
    return n ? n - 1 : 0; /* without the trailing '&' */
}

const char *dd_qs_obfuscate(const dd_qs_obfuscator_t *o, apr_pool_t *p, const char *query,
                            size_t qlen, int *truncated)
{
    pcre2_general_context *gc;
    pcre2_match_context *mc;
    pcre2_match_data *md;
    buf_t b;
    size_t n = capped_length(query, qlen, truncated), at = 0;

    if (!o->code || n == 0)
        return apr_pstrmemdup(p, query, n);
    gc = pcre2_general_context_create(pool_malloc, pool_free, p);
    mc = gc ? pcre2_match_context_create(gc) : NULL;
    md = mc ? pcre2_match_data_create_from_pattern(o->code, gc) : NULL;
    if (!md)
        return DD_QS_REDACTED;
    pcre2_set_match_limit(mc, MATCH_LIMIT);
    pcre2_set_depth_limit(mc, DEPTH_LIMIT);
    buf_init(&b, p, n);
    while (at < n) {
        int rc = pcre2_match(o->code, (PCRE2_SPTR)query, n, at, 0, md, mc);
        PCRE2_SIZE *ov;
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0)
            return DD_QS_REDACTED; /* a limit: what we could not check is not shown */
        ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) { /* an empty match redacts nothing: move on one byte */
            if (ov[0] >= n)
                break;
            buf_put(&b, query + at, ov[0] + 1 - at);
            at = ov[0] + 1;
            continue;
        }
        buf_put(&b, query + at, ov[0] - at);
        buf_put(&b, DD_QS_REDACTED, sizeof(DD_QS_REDACTED) - 1);
        at = ov[1];
    }
    buf_put(&b, query + at, n - at);
    return b.s;
}
