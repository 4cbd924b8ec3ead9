/* SPDX-License-Identifier: Apache-2.0 */
/* dd_headers.c - header tags and client IP resolution (see dd_headers.h).
 *
 * Both run only when configured (the glue does not call them otherwise), so a server without
 * header tags or client IP resolution pays nothing for them.
 */
#include "dd_headers.h"
#include "dd_util.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>
#include <apr_strings.h>

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* ---------------------------------------------------------------------------------------- */
/* Header tags                                                                              */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    apr_pool_t *p;
    const char *joined;
} join_ctx_t;

static int join_value(void *data, const char *key, const char *value)
{
    join_ctx_t *j = data;
    (void)key;
    j->joined = j->joined ? apr_pstrcat(j->p, j->joined, ", ", value, NULL) : value;
    return 1;
}

/* Every value of name in t (and t2), joined with ", "; NULL when absent. */
static const char *header_value(apr_pool_t *p, const apr_table_t *t, const apr_table_t *t2,
                                const char *name)
{
    join_ctx_t j = {p, NULL};
    apr_table_do(join_value, &j, t, name, NULL);
    if (t2)
        apr_table_do(join_value, &j, t2, name, NULL);
    return j.joined;
}

void dd_header_tags_collect(apr_pool_t *p, const apr_array_header_t *config, int response,
                            const apr_table_t *headers, const apr_table_t *headers2,
                            apr_array_header_t **out, int *truncated)
{
    const dd_header_tag_t *ht = (const dd_header_tag_t *)config->elts;
    for (int i = 0; i < config->nelts; i++) {
        const char *v = header_value(p, headers, headers2, ht[i].header);
        size_t n;
        dd_meta_t *m;
        if (!v)
            continue;
        while (is_blank(*v))
            v++;
        n = strlen(v);
        while (n && is_blank(v[n - 1]))
            n--;
        if (v[n] != '\0')
            v = apr_pstrmemdup(p, v, n);
        if (!*out)
            *out = apr_array_make(p, config->nelts, sizeof(dd_meta_t));
        m = apr_array_push(*out);
        m->key = response ? ht[i].response_tag : ht[i].request_tag;
        m->klen = response ? ht[i].response_klen : ht[i].request_klen;
        m->value = dd_str_clean(p, v, n, DD_CAP_VALUE, truncated);
        m->vlen = 0; /* the encoder checks it */
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Addresses                                                                                */
/* ---------------------------------------------------------------------------------------- */

/* Parses s[0..n) as an address with optional brackets and port; *off and *len get where the
 * bare address is in s. */
static int parse_addr(const char *s, size_t n, dd_ip_t *ip, size_t *off, size_t *len)
{
    char buf[64];
    size_t a = 0, l = n;
    const char *colon;

    while (a < n && is_blank(s[a]))
        a++;
    while (l > a && is_blank(s[l - 1]))
        l--;
    l -= a;
    if (l == 0 || l >= sizeof(buf))
        return 0;
    if (s[a] == '[') { /* [v6] or [v6]:port */
        const char *close = memchr(s + a, ']', l);
        if (!close)
            return 0;
        size_t after = l - (size_t)(close - (s + a)) - 1;
        if (after && close[1] != ':')
            return 0;
        l = (size_t)(close - (s + a)) - 1;
        a++;
    } else if ((colon = memchr(s + a, ':', l)) &&
               !memchr(colon + 1, ':', l - (size_t)(colon + 1 - (s + a)))) {
        l = (size_t)(colon - (s + a)); /* one ':': IPv4 with a port */
    }
    memcpy(buf, s + a, l);
    buf[l] = '\0';
    memset(ip, 0, sizeof(*ip));
    if (inet_pton(AF_INET, buf, ip->b) == 1) {
        ip->v6 = 0;
    } else if (inet_pton(AF_INET6, buf, ip->b) == 1) {
        ip->v6 = 1;
    } else {
        return 0;
    }
    *off = a;
    *len = l;
    return 1;
}

int dd_ip_parse(const char *s, size_t n, dd_ip_t *ip)
{
    size_t off, len;
    return parse_addr(s, n, ip, &off, &len);
}

int dd_ip_is_public(const dd_ip_t *ip)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    const unsigned char *b = ip->b;
    if (ip->v6 && memcmp(b, mapped, 12) == 0)
        b += 12; /* ::ffff:a.b.c.d is a.b.c.d */
    else if (ip->v6) {
        static const unsigned char zero[16];
        if (memcmp(b, zero, 15) == 0 && (b[15] == 0 || b[15] == 1))
            return 0;              /* :: and ::1 */
        if ((b[0] & 0xfe) == 0xfc) /* fc00::/7 unique local */
            return 0;
        if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) /* fe80::/10 link-local */
            return 0;
        if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) /* fec0::/10 site-local */
            return 0;
        return 1;
    }
    return !(b[0] == 0 ||                            /* 0.0.0.0/8 */
             b[0] == 10 ||                           /* 10/8 */
             b[0] == 127 ||                          /* loopback */
             (b[0] == 172 && (b[1] & 0xf0) == 16) || /* 172.16/12 */
             (b[0] == 192 && b[1] == 168) ||         /* 192.168/16 */
             (b[0] == 169 && b[1] == 254) ||         /* link-local */
             (b[0] == 100 && (b[1] & 0xc0) == 64));  /* 100.64/10 */
}

/* ---------------------------------------------------------------------------------------- */
/* Client IP                                                                                */
/* ---------------------------------------------------------------------------------------- */

const char *const dd_client_ip_headers[] = {
    "x-forwarded-for",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "forwarded",
    "forwarded-for",
    "x-cluster-client-ip",
    "fastly-client-ip",
    "cf-connecting-ip",
    "cf-connecting-ipv6",
    NULL,
};

typedef struct {
    const char *found; /* the first valid address, or the first public one */
    size_t found_len;
    int found_public;
} search_t;

/* Considers one candidate s[0..n); returns 1 when it is public (the search is over). */
static int consider(search_t *st, const char *s, size_t n)
{
    dd_ip_t ip;
    size_t off, len;
    if (!parse_addr(s, n, &ip, &off, &len))
        return 0;
    if (!st->found || dd_ip_is_public(&ip)) {
        st->found = s + off;
        st->found_len = len;
        st->found_public = dd_ip_is_public(&ip);
    }
    return st->found_public;
}

/* A comma-separated list of addresses. */
static int search_list(search_t *st, const char *v)
{
    for (;;) {
        const char *end = strchr(v, ',');
        size_t n = end ? (size_t)(end - v) : strlen(v);
        if (consider(st, v, n))
            return 1;
        if (!end)
            return 0;
        v = end + 1;
    }
}

/* Forwarded (RFC 7239): for= values of each element, quoted or not, in order. */
static int search_forwarded(search_t *st, const char *v)
{
    const char *c = v;
    while (*c) {
        const char *key, *val;
        size_t klen, vlen;
        while (*c == ' ' || *c == '\t' || *c == ';' || *c == ',')
            c++;
        key = c;
        while (*c && *c != '=' && *c != ';' && *c != ',')
            c++;
        klen = (size_t)(c - key);
        while (klen && is_blank(key[klen - 1]))
            klen--;
        if (*c != '=')
            continue; /* a pair without a value: skipped */
        c++;
        while (is_blank(*c))
            c++;
        if (*c == '"') {
            val = ++c;
            while (*c && *c != '"')
                c += (*c == '\\' && c[1]) ? 2 : 1;
            vlen = (size_t)(c - val);
            if (*c)
                c++;
        } else {
            val = c;
            while (*c && *c != ';' && *c != ',')
                c++;
            vlen = (size_t)(c - val);
        }
        if (klen == 3 && strncasecmp(key, "for", 3) == 0 && consider(st, val, vlen))
            return 1;
    }
    return 0;
}

const char *dd_client_ip_resolve(apr_pool_t *p, const apr_table_t *headers, const char *header,
                                 const char *peer)
{
    const char *one[2] = {header, NULL};
    const char *const *names = header ? one : dd_client_ip_headers;
    search_t st = {NULL, 0, 0};
    dd_ip_t peer_ip;
    int peer_ok = peer && dd_ip_parse(peer, strlen(peer), &peer_ip);

    for (; *names; names++) {
        const char *v = apr_table_get(headers, *names);
        if (!v)
            continue;
        if (strcasecmp(*names, "forwarded") == 0 ? search_forwarded(&st, v) : search_list(&st, v))
            break;
    }
    if (st.found && (st.found_public || !peer_ok || !dd_ip_is_public(&peer_ip)))
        return apr_pstrmemdup(p, st.found, st.found_len);
    return peer_ok ? peer : NULL;
}
