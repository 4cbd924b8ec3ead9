/* SPDX-License-Identifier: Apache-2.0 */
/* dd_endpoint.c - http.endpoint from a URL path (see dd_endpoint.h). */
#include "dd_endpoint.h"

#include <string.h>

/* The placeholders, in precedence order: the lowest viable bit wins. */
enum {
    T_INT = 1 << 0,
    T_INT_ID = 1 << 1,
    T_HEX = 1 << 2,
    T_HEX_ID = 1 << 3,
    T_STR = 1 << 4,
    T_ALL = (1 << 5) - 1,
    T_NUMERIC = T_INT | T_INT_ID | T_HEX | T_HEX_ID,
};

static const char *const placeholder[] = {"{param:int}", "{param:int_id}", "{param:hex}",
                                          "{param:hex_id}", "{param:str}"};
#define LONGEST_PLACEHOLDER (sizeof("{param:hex_id}") - 1)

/* The placeholder for a non-empty segment, or NULL when it stays as it is. */
static const char *replacement(const char *seg, size_t n)
{
    unsigned viable = T_ALL;
    int special = 0, digit = 0;

    if (n < 2)
        viable &= ~T_NUMERIC;
    else if (n < 3)
        viable &= ~(T_INT_ID | T_HEX | T_HEX_ID);
    else if (n < 6)
        viable &= ~(T_HEX | T_HEX_ID);
    if (seg[0] == '0')
        viable &= ~T_INT;
    for (size_t i = 0; i < n; i++) {
        char c = seg[i];
        if (c >= '0' && c <= '9')
            digit = 1;
        else if ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))
            viable &= ~(T_INT | T_INT_ID);
        else if (c == '.' || c == '_' || c == '-')
            viable &= ~(T_INT | T_HEX);
        else if (c != '\0' && strchr("%&'()*+,:=@", c)) {
            special = 1;
            viable &= ~T_NUMERIC;
        } else
            viable &= ~T_NUMERIC;
    }
    if (!special && n < 20)
        viable &= ~T_STR;
    if (!digit) /* dd-trace-cpp asks this of hex and hex_id only, not of int_id */
        viable &= ~(T_HEX | T_HEX_ID);
    for (int b = 0; b < 5; b++)
        if (viable & (1u << b))
            return placeholder[b];
    return NULL;
}

const char *dd_endpoint_infer(apr_pool_t *p, const char *path, size_t len)
{
    const char *q = memchr(path, '?', len), *end, *s;
    char *out, *o;
    int count = 0, final_slash = 1;

    if (q)
        len = (size_t)(q - path);
    if (len == 0 || path[0] != '/')
        return "/";
    end = path + len;
    /* each kept segment costs "/" and at most max(its length, a placeholder) */
    o = out = apr_palloc(p, len + DD_ENDPOINT_MAX_SEGMENTS * (LONGEST_PLACEHOLDER + 1) + 2);
    for (s = path + 1; s < end;) {
        const char *slash = memchr(s, '/', (size_t)(end - s)), *seg = s, *ph;
        size_t n;
        if (slash) {
            n = (size_t)(slash - s);
            s = slash + 1;
        } else {
            n = (size_t)(end - s);
            s = end;
            final_slash = 0;
        }
        if (n == 0)
            continue;
        *o++ = '/';
        if ((ph = replacement(seg, n))) {
            size_t m = strlen(ph);
            memcpy(o, ph, m);
            o += m;
        } else {
            memcpy(o, seg, n);
            o += n;
        }
        if (++count >= DD_ENDPOINT_MAX_SEGMENTS)
            break;
    }
    if (o == out)
        return "/";
    if (final_slash)
        *o++ = '/';
    *o = '\0';
    return out;
}
