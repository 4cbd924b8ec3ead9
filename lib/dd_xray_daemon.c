/* SPDX-License-Identifier: Apache-2.0 */
/* dd_xray_daemon.c - the X-Ray daemon's address, UDP datagrams to it, and HTTP calls to its
 * sampling proxy (libcurl, one easy handle kept per child, like the agent client).
 */
#include "dd_xray_daemon.h"

#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <apr_strings.h>
#include <curl/curl.h>

/* ---- the address ------------------------------------------------------------------------ */

static int is_host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

/* "host:port" or "[v6]:port" in s[0..n). */
static int parse_hostport(apr_pool_t *p, const char *s, size_t n, const char **host, unsigned *port,
                          const char **err)
{
    const char *colon, *h = s, *end;
    size_t hn;
    unsigned long v = 0;

    if (n > 0 && s[0] == '[') {
        end = memchr(s, ']', n);
        if (!end || end == s + 1 || (size_t)(end - s) + 1 >= n || end[1] != ':') {
            *err = "an IPv6 address must be written [address]:port";
            return -1;
        }
        for (const char *c = s + 1; c < end; c++)
            if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') ||
                  (*c >= 'A' && *c <= 'F') || *c == ':' || *c == '.')) {
                *err = "the IPv6 address holds a character that is not hex, ':' or '.'";
                return -1;
            }
        h = s + 1;
        hn = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = memchr(s, ':', n);
        if (!colon) {
            *err = "expected host:port";
            return -1;
        }
        if (memchr(colon + 1, ':', (size_t)(s + n - colon - 1))) {
            *err = "expected host:port (write an IPv6 address as [address]:port)";
            return -1;
        }
        hn = (size_t)(colon - s);
        if (hn == 0) {
            *err = "the host is missing";
            return -1;
        }
        for (size_t i = 0; i < hn; i++)
            if (!is_host_char(s[i])) {
                *err = "the host holds a character that is not a letter, digit, '-', '.' or '_'";
                return -1;
            }
    }
    end = s + n;
    if (colon + 1 == end || end - colon - 1 > 5) {
        *err = "the port must be a number in 1..65535";
        return -1;
    }
    for (const char *c = colon + 1; c < end; c++) {
        if (*c < '0' || *c > '9') {
            *err = "the port must be a number in 1..65535";
            return -1;
        }
        v = v * 10 + (unsigned long)(*c - '0');
    }
    if (v < 1 || v > 65535) {
        *err = "the port must be a number in 1..65535";
        return -1;
    }
    *host = apr_pstrmemdup(p, h, hn);
    *port = (unsigned)v;
    return 0;
}

int dd_xray_addr_parse(apr_pool_t *p, const char *s, dd_xray_addr_t *out, const char **err)
{
    const char *words[3];
    size_t lens[3], n = 0;
    int have_udp = 0, have_tcp = 0;

    memset(out, 0, sizeof(*out));
    if (!s) {
        *err = "empty address";
        return -1;
    }
    for (const char *c = s; *c;) {
        while (*c == ' ' || *c == '\t')
            c++;
        if (!*c)
            break;
        if (n == 3) {
            *err = "too many words (use host:port, or tcp:host:port udp:host:port)";
            return -1;
        }
        words[n] = c;
        while (*c && *c != ' ' && *c != '\t')
            c++;
        lens[n] = (size_t)(c - words[n]);
        n++;
    }
    if (n == 0) {
        *err = "empty address";
        return -1;
    }
    if (n == 1) {
        if (lens[0] >= 4 &&
            (strncasecmp(words[0], "udp:", 4) == 0 || strncasecmp(words[0], "tcp:", 4) == 0)) {
            *err = "with udp: or tcp:, give both (tcp:host:port udp:host:port)";
            return -1;
        }
        if (parse_hostport(p, words[0], lens[0], &out->udp_host, &out->udp_port, err) != 0)
            return -1;
        out->tcp_host = out->udp_host;
        out->tcp_port = out->udp_port;
        return 0;
    }
    if (n != 2) {
        *err = "expected host:port, or tcp:host:port udp:host:port";
        return -1;
    }
    for (size_t i = 0; i < 2; i++) {
        int udp = lens[i] > 4 && strncasecmp(words[i], "udp:", 4) == 0;
        int tcp = lens[i] > 4 && strncasecmp(words[i], "tcp:", 4) == 0;
        if ((!udp && !tcp) || (udp && have_udp) || (tcp && have_tcp)) {
            *err = "expected one tcp:host:port and one udp:host:port";
            return -1;
        }
        if (parse_hostport(p, words[i] + 4, lens[i] - 4, udp ? &out->udp_host : &out->tcp_host,
                           udp ? &out->udp_port : &out->tcp_port, err) != 0)
            return -1;
        have_udp |= udp;
        have_tcp |= tcp;
    }
    return 0;
}

/* ---- UDP -------------------------------------------------------------------------------- */

struct dd_xray_udp {
    int fd;
};

dd_xray_udp_t *dd_xray_udp_open(const char *host, unsigned port, char *err, size_t errlen)
{
    struct addrinfo hints, *res = NULL, *ai;
    char service[8];
    dd_xray_udp_t *u;
    int rc, fd = -1, saved = 0;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    snprintf(service, sizeof(service), "%u", port);
    rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", host, gai_strerror(rc));
        return NULL;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open a UDP socket to %s:%u: %s", host, port,
                 strerror(saved ? saved : EINVAL));
        return NULL;
    }
    u = malloc(sizeof(*u));
    if (!u) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    u->fd = fd;
    return u;
}

int dd_xray_udp_send(dd_xray_udp_t *u, const char *data, size_t len)
{
    ssize_t n;
    if (!u)
        return EBADF;
    n = send(u->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0)
        return errno ? errno : EIO;
    return (size_t)n == len ? 0 : EMSGSIZE;
}

void dd_xray_udp_close(dd_xray_udp_t *u)
{
    if (!u)
        return;
    close(u->fd);
    free(u);
}

/* ---- the sampling API ------------------------------------------------------------------- */

#define BODY_CAP (1024 * 1024)
#define CONNECT_TIMEOUT_MS 500L

struct dd_xray_http {
    CURL *curl;
    char base[300];
    struct curl_slist *headers;
    char errbuf[CURL_ERROR_SIZE];
};

typedef struct {
    char *buf;
    size_t len, cap;
    int over;
} body_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
    body_t *b = ctx;
    size_t n = size * nmemb;
    if (b->over || b->len + n > BODY_CAP) {
        b->over = 1;
        return 0; /* stop: no sampling answer is this large */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *nb;
        while (cap < b->len + n + 1)
            cap *= 2;
        nb = realloc(b->buf, cap);
        if (!nb) {
            b->over = 1;
            return 0;
        }
        b->buf = nb;
        b->cap = cap;
    }
    memcpy(b->buf + b->len, data, n);
    b->len += n;
    b->buf[b->len] = '\0';
    return n;
}

/* Close-on-exec sockets (libcurl's own socket() calls are not). */
static curl_socket_t open_socket(void *ctx, curlsocktype purpose, struct curl_sockaddr *a)
{
    (void)ctx;
    (void)purpose;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

dd_xray_http_t *dd_xray_http_create(const char *host, unsigned port)
{
    dd_xray_http_t *h = calloc(1, sizeof(*h));
    struct curl_slist *l;
    int ok;
    if (!h)
        return NULL;
    snprintf(h->base, sizeof(h->base), strchr(host, ':') ? "http://[%s]:%u" : "http://%s:%u", host,
             port);
    h->curl = curl_easy_init();
    l = curl_slist_append(NULL, "Content-Type: application/json");
    if (l) {
        h->headers = l;
        l = curl_slist_append(h->headers, "Expect:");
    }
    ok = h->curl && l;
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_NOPROXY, "*") == CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_PROTOCOLS_STR, "http") == CURLE_OK;
#else
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_PROTOCOLS, (long)CURLPROTO_HTTP) == CURLE_OK;
#endif
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_POST, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, h->headers) == CURLE_OK;
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_ERRORBUFFER, h->errbuf) == CURLE_OK;
    ok = ok && curl_easy_setopt(h->curl, CURLOPT_OPENSOCKETFUNCTION, open_socket) == CURLE_OK;
    if (!ok) {
        dd_xray_http_destroy(h);
        return NULL;
    }
    return h;
}

void dd_xray_http_destroy(dd_xray_http_t *h)
{
    if (!h)
        return;
    if (h->curl)
        curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->headers);
    free(h);
}

int dd_xray_http_post(void *ctx, const char *path, const char *body, size_t len, long timeout_ms,
                      long *status, char **resp, size_t *resp_len, char *err, size_t errlen)
{
    dd_xray_http_t *h = ctx;
    body_t b = {NULL, 0, 0, 0};
    char url[512];
    CURLcode rc;

    *status = 0;
    *resp = NULL;
    *resp_len = 0;
    if (timeout_ms < 1)
        timeout_ms = 1;
    snprintf(url, sizeof(url), "%s%s", h->base, path);
    h->errbuf[0] = '\0';
    curl_easy_setopt(h->curl, CURLOPT_URL, url);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h->curl, CURLOPT_CONNECTTIMEOUT_MS,
                     timeout_ms < CONNECT_TIMEOUT_MS ? timeout_ms : CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, &b);
    rc = curl_easy_perform(h->curl);
    curl_easy_setopt(h->curl, CURLOPT_WRITEDATA, NULL);
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status);
    if (rc != CURLE_OK) {
        snprintf(err, errlen, "%s",
                 b.over ? "the answer is over 1 MiB"
                        : (h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc)));
        free(b.buf);
        return -1;
    }
    *resp = b.buf ? b.buf : strdup("");
    *resp_len = b.len;
    return 0;
}
