/* SPDX-License-Identifier: Apache-2.0 */
/* dd_baggage.c - the W3C baggage header, read and written as Datadog's tracers do
 * (dd_baggage.h). */
#include "dd_baggage.h"

#include <string.h>
#include <apr_strings.h>

#include "dd_span.h"
#include "dd_util.h"

/* RFC 7230 tchar: dd-trace-js's baggageTokenExpr /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/ */
static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A key: one or more tchars. */
static int valid_key(const char *k, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!is_tchar((unsigned char)k[i]))
            return 0;
    return 1;
}

/* JavaScript's String.prototype.trim for the ASCII white space a header can hold. */
static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static void trim(const char **s, const char **e)
{
    while (*s < *e && is_space((unsigned char)**s))
        (*s)++;
    while (*e > *s && is_space((unsigned char)(*e)[-1]))
        (*e)--;
}

/* Percent-decodes [s, e): each valid %XX becomes its byte, anything else stays; then valid
 * UTF-8 (U+FFFD for what is not). That is decodeURIComponent where it succeeds, and
 * dd-trace-js's fallback where it throws. */
static const char *decode_value(apr_pool_t *p, const char *s, const char *e)
{
    size_t len = (size_t)(e - s);
    char *out;
    size_t o = 0;
    int dummy = 0;

    if (!memchr(s, '%', len))
        return dd_str_clean(p, apr_pstrmemdup(p, s, len), len, len * 3 + 1, &dummy);
    out = apr_palloc(p, len + 1);
    for (const char *q = s; q < e; q++) {
        uint64_t byte;
        if (*q == '%' && e - q >= 3 && dd_parse_u64_hex(q + 1, 2, &byte)) {
            out[o++] = (char)byte;
            q += 2;
        } else {
            out[o++] = *q;
        }
    }
    out[o] = '\0';
    return dd_str_clean(p, out, o, o * 3 + 1, &dummy);
}

static void put_item(apr_array_header_t *items, const char *key, size_t klen, const char *value)
{
    dd_meta_t *m;
    for (int i = 0; i < items->nelts; i++) {
        m = &((dd_meta_t *)items->elts)[i];
        if (m->klen == klen && memcmp(m->key, key, klen) == 0) {
            m->value = value;
            m->vlen = (uint32_t)strlen(value);
            return;
        }
    }
    m = apr_array_push(items);
    m->key = key;
    m->klen = (uint32_t)klen;
    m->value = value;
    m->vlen = (uint32_t)strlen(value);
}

dd_baggage_status_t dd_baggage_extract(apr_pool_t *p, const char *header,
                                       const dd_baggage_limits_t *lim, apr_array_header_t **items)
{
    apr_array_header_t *out = NULL;
    dd_baggage_status_t status = DD_BAGGAGE_OK;
    size_t bytes = 0;
    int count = 0;
    const char *start, *end;

    *items = NULL;
    if (!header || !*header)
        return DD_BAGGAGE_NONE;
    end = header + strlen(header);
    for (start = header; start <= end;) {
        const char *comma, *mend, *eq, *ks, *ke, *vs, *ve;
        if (count >= lim->max_items) {
            status = DD_BAGGAGE_TRUNCATED;
            break;
        }
        comma = memchr(start, ',', (size_t)(end - start));
        if (!comma)
            comma = end;
        /* the comma's byte is charged before an empty member is skipped, as the tracer does,
         * so that ",,,,a=b" cannot be read for free */
        bytes += (size_t)(comma - start) + 1;
        if (bytes > lim->max_bytes) {
            status = DD_BAGGAGE_TRUNCATED;
            break;
        }
        if (comma == start) {
            start = comma + 1;
            continue;
        }
        mend = memchr(start, ';', (size_t)(comma - start));
        if (!mend)
            mend = comma;
        eq = memchr(start, '=', (size_t)(mend - start));
        ks = start;
        start = comma + 1;
        if (!eq) {
            ke = mend;
            trim(&ks, &ke);
            if (ks == ke)
                continue; /* white space only */
            return DD_BAGGAGE_MALFORMED;
        }
        ke = eq;
        vs = eq + 1;
        ve = mend;
        trim(&ks, &ke);
        trim(&vs, &ve);
        if (vs == ve || !valid_key(ks, (size_t)(ke - ks)))
            return DD_BAGGAGE_MALFORMED;
        if (!out)
            out = apr_array_make(p, 8, sizeof(dd_meta_t));
        put_item(out, apr_pstrmemdup(p, ks, (size_t)(ke - ks)), (size_t)(ke - ks),
                 decode_value(p, vs, ve));
        count++;
    }
    if (!out)
        return status == DD_BAGGAGE_TRUNCATED ? DD_BAGGAGE_TRUNCATED : DD_BAGGAGE_NONE;
    *items = out;
    return status;
}

/* encodeURIComponent leaves A-Z a-z 0-9 - _ . ! ~ * ' ( ) as they are. */
static int uri_unreserved(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
        return 1;
    return c && strchr("-_.!~*'()", c) != NULL;
}

char *dd_baggage_encode(apr_pool_t *p, const apr_array_header_t *items,
                        const dd_baggage_limits_t *lim, int *truncated)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t cap = 0, o = 0;
    int count = 0;
    char *out;

    if (!items || items->nelts == 0)
        return NULL;
    for (int i = 0; i < items->nelts; i++) {
        const dd_meta_t *m = &((const dd_meta_t *)items->elts)[i];
        cap += strlen(m->key) + 3 * strlen(m->value) + 2;
    }
    out = apr_palloc(p, cap + 1);
    for (int i = 0; i < items->nelts; i++) {
        const dd_meta_t *m = &((const dd_meta_t *)items->elts)[i];
        size_t klen = strlen(m->key), at = o;
        if (!valid_key(m->key, klen))
            continue;
        memcpy(out + o, m->key, klen);
        o += klen;
        out[o++] = '=';
        for (const unsigned char *v = (const unsigned char *)m->value; *v; v++) {
            if (uri_unreserved(*v)) {
                out[o++] = (char)*v;
            } else {
                out[o++] = '%';
                out[o++] = hex[*v >> 4];
                out[o++] = hex[*v & 15];
            }
        }
        out[o++] = ',';
        /* the tracer counts each item with its comma, the last one's too */
        if (++count > lim->max_items || o > lim->max_bytes) {
            o = at;
            *truncated = 1;
            break;
        }
    }
    if (o == 0)
        return NULL;
    out[o - 1] = '\0'; /* the last comma */
    return out;
}

int dd_baggage_tag_key(const apr_array_header_t *keys, const char *key)
{
    for (int i = 0; keys && i < keys->nelts; i++) {
        const char *k = ((const char **)keys->elts)[i];
        if (strcmp(k, "*") == 0 || strcmp(k, key) == 0)
            return 1;
    }
    return 0;
}

apr_array_header_t *dd_baggage_tag_keys_parse(apr_pool_t *p, const char *s)
{
    apr_array_header_t *keys = apr_array_make(p, 4, sizeof(const char *));
    const char *q = s ? s : "";
    while (*q) {
        size_t n;
        while (*q == ',' || is_space((unsigned char)*q))
            q++;
        n = strcspn(q, ", \t\r\n\v\f");
        if (n)
            *(const char **)apr_array_push(keys) = apr_pstrmemdup(p, q, n);
        q += n;
    }
    return keys;
}
