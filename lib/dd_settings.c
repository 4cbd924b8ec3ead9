/* SPDX-License-Identifier: Apache-2.0 */
/* dd_settings.c - tracer-style settings: booleans, DD_TAGS, header tags, error statuses.
 *
 * Configuration time only: allocations come from the configuration pool and nothing here is
 * on the request path except the inline dd_status_set_has.
 */
#include "dd_settings.h"
#include "dd_span.h"

#include <string.h>
#include <strings.h>
#include <apr_strings.h>

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* A trimmed copy of s[0..n). */
static char *trimmed(apr_pool_t *p, const char *s, size_t n)
{
    while (n && is_blank(*s))
        s++, n--;
    while (n && is_blank(s[n - 1]))
        n--;
    return apr_pstrmemdup(p, s, n);
}

int dd_parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    char buf[8];
    size_t n;
    while (is_blank(*s))
        s++;
    n = strlen(s);
    while (n && is_blank(s[n - 1]))
        n--;
    if (n == 0 || n >= sizeof(buf))
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(buf, yes[i]) == 0)
            return *out = 1, 1;
        if (strcasecmp(buf, no[i]) == 0)
            return *out = 0, 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* DD_TAGS                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static void put_tag(apr_array_header_t *tags, const char *key, const char *value)
{
    dd_meta_t *m = (dd_meta_t *)tags->elts;
    for (int i = 0; i < tags->nelts; i++) {
        if (strcmp(m[i].key, key) == 0) {
            m[i].value = value; /* a repeated key keeps its last value */
            dd_meta_measure(&m[i]);
            return;
        }
    }
    m = apr_array_push(tags);
    *m = (dd_meta_t){key, value, 0, 0};
    dd_meta_measure(m);
}

apr_array_header_t *dd_parse_tags(apr_pool_t *p, const char *s)
{
    apr_array_header_t *tags = apr_array_make(p, 4, sizeof(dd_meta_t));
    char sep = strchr(s, ',') ? ',' : ' ';
    const char *start = s;
    for (;;) {
        const char *end = strchr(start, sep);
        size_t n = end ? (size_t)(end - start) : strlen(start);
        char *entry = trimmed(p, start, n), *colon = strchr(entry, ':');
        const char *key = entry, *value = "";
        if (colon) {
            *colon = '\0';
            key = trimmed(p, entry, strlen(entry));
            value = trimmed(p, colon + 1, strlen(colon + 1));
        }
        if (*key)
            put_tag(tags, key, value);
        if (!end)
            break;
        start = end + 1;
    }
    return tags;
}

const char *dd_tags_get(const apr_array_header_t *tags, const char *key)
{
    const dd_meta_t *m = (const dd_meta_t *)tags->elts;
    for (int i = 0; i < tags->nelts; i++)
        if (strcmp(m[i].key, key) == 0)
            return m[i].value;
    return NULL;
}

void dd_tags_remove(apr_array_header_t *tags, const char *key)
{
    dd_meta_t *m = (dd_meta_t *)tags->elts;
    int o = 0;
    for (int i = 0; i < tags->nelts; i++)
        if (strcmp(m[i].key, key) != 0)
            m[o++] = m[i];
    tags->nelts = o;
}

/* ---------------------------------------------------------------------------------------- */
/* Header tags                                                                              */
/* ---------------------------------------------------------------------------------------- */

/* RFC 9110 tchar. */
static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int is_token(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!is_tchar((unsigned char)*s))
            return 0;
    return 1;
}

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

/* prefix + the header name lowercased, characters outside [a-z0-9_-:/] as '_'. */
static const char *default_tag(apr_pool_t *p, const char *prefix, const char *header)
{
    char *t = apr_pstrcat(p, prefix, header, NULL), *c = t + strlen(prefix);
    for (; *c; c++) {
        unsigned char u = (unsigned char)*c;
        if (u >= 'A' && u <= 'Z')
            *c = (char)(u + 32);
        else if (!((u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || strchr("_-:/", u)))
            *c = '_';
    }
    return t;
}

static int parse_header_tag(apr_pool_t *p, const char *entry, dd_header_tag_t *ht, const char **why)
{
    const char *colon = strchr(entry, ':');
    const char *header = colon ? trimmed(p, entry, (size_t)(colon - entry)) : entry;
    const char *tag = colon ? trimmed(p, colon + 1, strlen(colon + 1)) : NULL;

    if (colon && !*header)
        return *why = "a ':' with no header name before it", -1;
    if (colon && !*tag)
        return *why = "a ':' with no tag name after it", -1;
    if (strcmp(header, "*") == 0)
        return *why = "wildcards are not supported: name each header", -1;
    if (!is_token(header))
        return *why = "not an HTTP header name", -1;
    if (tag && has_control(tag))
        return *why = "the tag name has a control character", -1;
    ht->header = header;
    ht->request_tag = tag ? tag : default_tag(p, "http.request.headers.", header);
    ht->response_tag = tag ? tag : default_tag(p, "http.response.headers.", header);
    ht->request_klen = (uint32_t)strlen(ht->request_tag);
    ht->response_klen = (uint32_t)strlen(ht->response_tag);
    return 0;
}

int dd_header_tags_parse(apr_pool_t *p, const char *s, apr_array_header_t **tags, const char **bad,
                         const char **why)
{
    const char *start = s;
    if (!*tags)
        *tags = apr_array_make(p, 4, sizeof(dd_header_tag_t));
    for (;;) {
        const char *end = strchr(start, ',');
        char *entry = trimmed(p, start, end ? (size_t)(end - start) : strlen(start));
        if (*entry) {
            dd_header_tag_t ht;
            if (parse_header_tag(p, entry, &ht, why) != 0) {
                *bad = entry;
                return -1;
            }
            *(dd_header_tag_t *)apr_array_push(*tags) = ht;
        }
        if (!end)
            return 0;
        start = end + 1;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Error statuses                                                                           */
/* ---------------------------------------------------------------------------------------- */

/* Three digits 100..599 at *s; advances *s. */
static int parse_status(const char **s, int *out)
{
    const char *c = *s;
    if (!(c[0] >= '1' && c[0] <= '5' && c[1] >= '0' && c[1] <= '9' && c[2] >= '0' && c[2] <= '9'))
        return 0;
    *out = (c[0] - '0') * 100 + (c[1] - '0') * 10 + (c[2] - '0');
    *s = c + 3;
    return 1;
}

int dd_status_set_parse(const char *s, dd_status_set_t *set, const char **why)
{
    char buf[512], *o = buf;
    const char *c;
    memset(set, 0, sizeof(*set));
    for (c = s; *c; c++) { /* blanks are ignored anywhere, as dd-trace-js does */
        if (is_blank(*c))
            continue;
        if (o == buf + sizeof(buf) - 1)
            return *why = "too long", -1;
        *o++ = *c;
    }
    *o = '\0';
    if (!buf[0])
        return *why = "empty", -1;
    for (c = buf;;) {
        int a, b;
        if (!parse_status(&c, &a))
            return *why = "expected status codes (100..599) or ranges like 500-599, "
                          "separated by commas",
                   -1;
        b = a;
        if (*c == '-') {
            c++;
            if (!parse_status(&c, &b))
                return *why = "a range needs two status codes (100..599), like 500-599", -1;
        }
        if (a > b) {
            int t = a;
            a = b;
            b = t;
        }
        for (int v = a; v <= b; v++)
            set->bits[v >> 6] |= 1ULL << (v & 63);
        if (!*c)
            return 0;
        if (*c != ',' || !c[1])
            return *why = "expected status codes (100..599) or ranges like 500-599, "
                          "separated by commas",
                   -1;
        c++;
    }
}
