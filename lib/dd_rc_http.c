/* SPDX-License-Identifier: Apache-2.0 */
/* dd_rc_http.c - the remote configuration poll's HTTP request (see dd_rc_http.h). One curl
 * handle, kept between polls (so its connection is reused), with the options the agent client
 * uses: no proxy, no signals, HTTP and HTTPS only, close-on-exec descriptors. */
#include "dd_rc_http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#define CONFIG_PATH "/v0.7/config"
#define CONNECT_TIMEOUT_MS 1000L

struct dd_rc_http {
    CURL *curl;
    struct curl_slist *headers;
    char *url;
};

typedef struct {
    char *buf;
    size_t len, cap; /* cap: max_body; more makes the transfer fail (CURLE_WRITE_ERROR) */
    int too_large;
} body_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
    body_t *b = ctx;
    size_t n = size * nmemb;
    char *nb;

    if (b->len + n > b->cap) {
        b->too_large = 1;
        return 0; /* stop reading a huge answer at once */
    }
    nb = realloc(b->buf, b->len + n + 1);
    if (!nb)
        return 0;
    memcpy(nb + b->len, data, n);
    b->buf = nb;
    b->len += n;
    b->buf[b->len] = '\0';
    return n;
}

dd_rc_http_t *dd_rc_http_create(const dd_agent_url_t *url)
{
    dd_rc_http_t *h = calloc(1, sizeof(*h));
    int ok;

    if (!h)
        return NULL;
    dd_agent_global_init();
    h->curl = curl_easy_init();
    h->url = malloc(strlen(url->base) + sizeof(CONFIG_PATH));
    ok = h->curl && h->url && dd_agent_curl_cloexec(h->curl) == 0;
    if (ok) {
        strcpy(h->url, url->base);
        strcat(h->url, CONFIG_PATH);
        h->headers = curl_slist_append(NULL, "Content-Type: application/json");
        ok = h->headers && (h->headers = curl_slist_append(h->headers, "Expect:")) != NULL;
    }
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_URL, h->url) == CURLE_OK;
    if (ok && url->is_unix)
        ok = curl_easy_setopt(h->curl, CURLOPT_UNIX_SOCKET_PATH, url->socket) == CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
#else
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_PROTOCOLS,
                                (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) == CURLE_OK;
#endif
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_NOPROXY, "*") == CURLE_OK;
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_POST, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, h->headers) == CURLE_OK;
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
    if (!ok) {
        dd_rc_http_destroy(h);
        return NULL;
    }
    return h;
}

void dd_rc_http_destroy(dd_rc_http_t *h)
{
    if (!h)
        return;
    if (h->curl)
        curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->headers);
    free(h->url);
    free(h);
}

int dd_rc_http_post(dd_rc_http_t *h, const char *body, size_t len, long timeout_ms, size_t max_body,
                    long *status, char **resp, size_t *resp_len, char *error, size_t size)
{
    body_t b = {NULL, 0, max_body, 0};
    CURLcode rc;

    *status = 0;
    *resp = NULL;
    *resp_len = 0;
    if (timeout_ms < 1)
        timeout_ms = 1;
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS,
                     timeout_ms < CONNECT_TIMEOUT_MS ? timeout_ms : CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &b);
    rc = curl_easy_perform(h->curl);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, NULL);
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status);
    if (b.too_large)
        snprintf(error, size, "answer over %zu bytes", max_body);
    else if (rc != CURLE_OK)
        snprintf(error, size, "%s", curl_easy_strerror(rc));
    else if (*status != 200)
        snprintf(error, size, "HTTP %ld", *status);
    else
        error[0] = '\0';
    if (error[0]) {
        free(b.buf);
        return -1;
    }
    *resp = b.buf;
    *resp_len = b.len;
    return 0;
}
