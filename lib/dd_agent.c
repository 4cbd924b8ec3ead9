/* SPDX-License-Identifier: Apache-2.0 */
/* dd_agent.c - the Datadog agent client: agent URL parsing and resolution, the container id,
 * and one POST /v0.4/traces per payload with libcurl's easy interface.
 *
 * The flusher thread owns one dd_agent_t. Its CURL handle is reused for every send, so the
 * TCP (or unix socket) connection to the agent stays open between flushes. Nothing here
 * prints; every outcome is returned to the caller.
 */
#include "dd_agent.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <apr_strings.h>
#include <curl/curl.h>
#include <jansson.h>

#define TRACES_PATH "/v0.4/traces"
#define INFO_PATH "/info"
#define STATS_PATH "/v0.6/stats"
#define BODY_CAP (64 * 1024)     /* response bytes kept; the rest is read and dropped */
#define CONNECT_TIMEOUT_MS 1000L /* the agent is local: a slow connect means it is down */
#define CA_CACHE_S 3600L         /* the CA bundle is parsed again after an hour */

/* --- URL parsing --------------------------------------------------------------------------- */

static int fail(apr_pool_t *p, const char **err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(apr_pool_t *p, const char **err, const char *fmt, ...)
{
    va_list ap;

    if (err) {
        va_start(ap, fmt);
        *err = apr_pvsprintf(p, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* A character for a message: itself when printable ASCII, else its hex escape. */
static const char *show_char(apr_pool_t *p, unsigned char c)
{
    return (c > 0x20 && c < 0x7f) ? apr_psprintf(p, "'%c'", c) : apr_psprintf(p, "\\x%02x", c);
}

/* ASCII only, whatever the process locale says about other bytes. */
static int is_host_char(unsigned char c)
{
    return (c < 0x80 && isalnum(c)) || c == '-' || c == '.' || c == '_';
}

/* Inside "[...]": an IPv6 address, optionally with a %25-encoded zone (fe80::1%25eth0). */
static int valid_ipv6_literal(const char *s, size_t len)
{
    int colons = 0;
    size_t i;

    for (i = 0; i < len && s[i] != '%'; i++) {
        if (s[i] == ':')
            colons++;
        else if (!isxdigit((unsigned char)s[i]) && s[i] != '.')
            return 0;
    }
    if (colons < 2)
        return 0;
    if (i == len)
        return 1;
    if (len - i < 4 || strncmp(s + i, "%25", 3) != 0)
        return 0;
    for (i += 3; i < len; i++)
        if (!is_host_char((unsigned char)s[i]) && s[i] != '~')
            return 0;
    return 1;
}

/* unix:///absolute/path.sock - rest is what follows "unix://". */
static int parse_unix(apr_pool_t *p, const char *rest, dd_agent_url_t *out, const char **err)
{
    size_t len = strlen(rest);
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;

    if (strchr(rest, '?'))
        return fail(p, err, "a query string is not allowed");
    if (strchr(rest, '#'))
        return fail(p, err, "a fragment is not allowed");
    if (rest[0] != '/')
        return fail(p, err,
                    "the socket path must be absolute, with nothing between unix:// and it "
                    "(unix:///path/to/apm.socket)");
    if (rest[len - 1] == '/')
        return fail(p, err, "the socket path must name a socket, not a directory");
    if (len > max)
        return fail(p, err, "the socket path is too long (%lu bytes, at most %lu)",
                    (unsigned long)len, (unsigned long)max);
    out->is_unix = 1;
    out->base = "http://localhost";
    out->socket = apr_pstrdup(p, rest);
    return 0;
}

int dd_agent_url_parse(apr_pool_t *p, const char *url, dd_agent_url_t *out, const char **err)
{
    const char *sep, *rest, *host, *host_end, *tail, *s;
    const char *scheme;
    size_t scheme_len;
    unsigned long port;

    memset(out, 0, sizeof(*out));
    if (!url || !*url)
        return fail(p, err, "empty URL");
    for (s = url; *s; s++)
        if ((unsigned char)*s <= 0x20 || *s == 0x7f)
            return fail(p, err, "the URL contains a space or control character");

    /* scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) followed by "://" */
    sep = strstr(url, "://");
    scheme_len = sep ? (size_t)(sep - url) : 0;
    for (size_t i = 0; sep && i < scheme_len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (!(isalpha(c) || (i > 0 && (isdigit(c) || c == '+' || c == '-' || c == '.'))))
            sep = NULL;
    }
    if (!sep || scheme_len == 0)
        return fail(p, err,
                    "missing scheme (use http://host:port, https://host:port or "
                    "unix:///path/to/apm.socket)");
    rest = sep + 3;
    if (scheme_len == 4 && strncasecmp(url, "unix", 4) == 0)
        return parse_unix(p, rest, out, err);
    if (scheme_len == 4 && strncasecmp(url, "http", 4) == 0) {
        scheme = "http";
        port = 80;
    } else if (scheme_len == 5 && strncasecmp(url, "https", 5) == 0) {
        scheme = "https";
        port = 443;
    } else {
        return fail(p, err, "unsupported scheme '%.*s' (use http://, https:// or unix://)",
                    (int)(scheme_len > 32 ? 32 : scheme_len), url);
    }

    /* authority: host[:port], up to the first '/', '?' or '#' */
    tail = rest + strcspn(rest, "/?#");
    if (memchr(rest, '@', (size_t)(tail - rest)))
        return fail(p, err, "user info (user@) is not allowed");
    host = rest;
    if (*host == '[') {
        host_end = memchr(host, ']', (size_t)(tail - host));
        if (!host_end)
            return fail(p, err, "unterminated IPv6 address (missing ']')");
        if (!valid_ipv6_literal(host + 1, (size_t)(host_end - host - 1)))
            return fail(p, err, "invalid IPv6 address '%.*s'", (int)(host_end - host + 1), host);
        host_end++;
        if (host_end != tail && *host_end != ':')
            return fail(p, err, "unexpected %s after the IPv6 address",
                        show_char(p, (unsigned char)*host_end));
    } else {
        for (host_end = host; host_end < tail && *host_end != ':'; host_end++)
            if (!is_host_char((unsigned char)*host_end))
                return fail(p, err, "invalid character %s in the host name",
                            show_char(p, (unsigned char)*host_end));
    }
    if (host_end == host)
        return fail(p, err, "missing host name");

    if (host_end < tail) { /* ":port" */
        const char *ps = host_end + 1;
        size_t plen = (size_t)(tail - ps);

        port = 0;
        for (size_t i = 0; i < plen && port <= 65535; i++) {
            if (!isdigit((unsigned char)ps[i])) {
                port = 0;
                break;
            }
            port = port * 10 + (unsigned long)(ps[i] - '0');
        }
        if (plen == 0)
            return fail(p, err, "missing port number after ':'");
        if (port == 0 || port > 65535)
            return fail(p, err, "invalid port '%.*s' (must be a number from 1 to 65535)",
                        (int)(plen > 32 ? 32 : plen), ps);
    }

    /* nothing may follow but a single "/" */
    if (strchr(tail, '?'))
        return fail(p, err, "a query string is not allowed");
    if (strchr(tail, '#'))
        return fail(p, err, "a fragment is not allowed");
    if (*tail && strcmp(tail, "/") != 0)
        return fail(p, err,
                    "a path ('%.64s') is not allowed: the URL ends after host[:port], the "
                    "module adds " TRACES_PATH,
                    tail);

    out->is_unix = 0;
    out->base = apr_psprintf(p, "%s://%.*s:%lu", scheme, (int)(host_end - host), host, port);
    out->socket = NULL;
    return 0;
}

const char *dd_agent_url_from_env(apr_pool_t *p)
{
    const char *url = getenv("DD_TRACE_AGENT_URL");
    const char *host = getenv("DD_AGENT_HOST");
    const char *port = getenv("DD_TRACE_AGENT_PORT");

    if (url && *url)
        return apr_pstrdup(p, url);
    if (!host || !*host)
        host = "localhost";
    if (!port || !*port)
        port = "8126";
    if (strchr(host, ':') && host[0] != '[') /* a bare IPv6 address */
        return apr_psprintf(p, "http://[%s]:%s", host, port);
    return apr_psprintf(p, "http://%s:%s", host, port);
}

/* --- container id -------------------------------------------------------------------------- */

/* A container id is 64 lowercase hex digits, the end of the last component of a cgroup path,
 * optionally prefixed ("docker-", "cri-containerd-", ...) and suffixed ".scope":
 *   v1: 12:memory:/docker/<id>   or   .../kubepods/besteffort/pod<uuid>/<id>
 *   v2: 0::/system.slice/docker-<id>.scope */
static int is_lower_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int id_in_path(const char *path, size_t len, char out[65])
{
    const char *comp = path, *end = path + len, *id;

    for (const char *s = path; s < end; s++)
        if (*s == '/')
            comp = s + 1;
    if ((size_t)(end - comp) > 6 && memcmp(end - 6, ".scope", 6) == 0)
        end -= 6;
    if (end - comp < 64)
        return 0;
    id = end - 64;
    if (id > comp && is_lower_hex(id[-1]))
        return 0; /* part of a longer hex run */
    for (int i = 0; i < 64; i++)
        if (!is_lower_hex(id[i]))
            return 0;
    memcpy(out, id, 64);
    out[64] = '\0';
    return 1;
}

char *dd_agent_container_id_from_file(const char *path)
{
    enum { MAX_READ = 64 * 1024 };
    char *buf, *line, *next, id[65];
    size_t n;
    FILE *f = fopen(path, "re");

    if (!f)
        return NULL;
    buf = malloc(MAX_READ + 1);
    if (!buf) {
        fclose(f);
        return NULL;
    }
    n = fread(buf, 1, MAX_READ, f);
    fclose(f);
    buf[n] = '\0';
    for (line = buf; line && *line; line = next) {
        char *nl = strchr(line, '\n');
        const char *p1, *p2;

        next = nl ? nl + 1 : NULL;
        if (nl)
            *nl = '\0';
        /* hierarchy-id:controllers:path */
        p1 = strchr(line, ':');
        p2 = p1 ? strchr(p1 + 1, ':') : NULL;
        if (p2 && id_in_path(p2 + 1, strlen(p2 + 1), id)) {
            free(buf);
            return strdup(id);
        }
    }
    free(buf);
    return NULL;
}

char *dd_agent_container_id(void)
{
    return dd_agent_container_id_from_file("/proc/self/cgroup");
}

/* --- the client ---------------------------------------------------------------------------- */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init_once(void)
{
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

void dd_agent_global_init(void)
{
    pthread_once(&global_once, global_init_once);
}

struct dd_agent {
    CURL *curl;
    char *url;                  /* base + TRACES_PATH */
    char *info_url;             /* base + INFO_PATH */
    CURL *info_curl;            /* made at the first dd_agent_info */
    char *socket;               /* unix socket path, or NULL */
    struct curl_slist *headers; /* the headers that never change */
    /* X-Datadog-Trace-Count changes per send: one list node kept here, in front of headers,
     * so a send allocates nothing (curl only reads the list; struct curl_slist is public). */
    struct curl_slist count_node;
    char count_line[48];
    /* Client-side stats (issue 13.2): Datadog-Client-Computed-Stats and the dropped-P0 counts,
     * three more nodes linked between count_node and headers while on (no allocation). */
    struct curl_slist cs_node[3];
    char cs_line[3][64];
    char *stats_url;  /* base + STATS_PATH */
    CURL *stats_curl; /* made at the first dd_agent_send_stats */
    char errbuf[CURL_ERROR_SIZE]; /* curl's detailed message for the last failure */
    /* The socket curl talks to the agent on, or -1: dd_agent_interrupt() shuts it down from
     * another thread. The lock keeps curl from closing it (and the number from being reused)
     * between the interrupt's read of it and its shutdown(). */
    pthread_mutex_t sock_lock;
    int sock;
    int lock_made;
};

/* "Name: value" with control characters dropped from value, or NULL when out of memory. */
static char *header_line(const char *name, const char *value)
{
    size_t nlen = strlen(name), vlen = strlen(value), j = nlen + 2;
    char *line = malloc(nlen + 2 + vlen + 1);

    if (!line)
        return NULL;
    memcpy(line, name, nlen);
    memcpy(line + nlen, ": ", 2);
    for (size_t i = 0; i < vlen; i++)
        if ((unsigned char)value[i] >= 0x20 && value[i] != 0x7f)
            line[j++] = value[i];
    line[j] = '\0';
    return line;
}

/* Appends line (copied) to *list. Returns 0 when out of memory (*list is unchanged). */
static int append_line(struct curl_slist **list, const char *line)
{
    struct curl_slist *l = curl_slist_append(*list, line);

    if (!l)
        return 0;
    *list = l;
    return 1;
}

/* Appends "name: value" (value may be NULL: nothing is added). Returns 0 when out of memory. */
static int add_header(struct curl_slist **list, const char *name, const char *value)
{
    char *line;
    int ok;

    if (!value)
        return 1;
    line = header_line(name, value);
    if (!line)
        return 0;
    ok = append_line(list, line);
    free(line);
    return ok;
}

/* Response body capture, at most BODY_CAP bytes plus a NUL. */
typedef struct {
    char *buf;
    size_t len, alloc;
    int stopped; /* out of memory once: keep the prefix we have, add no later bytes */
} capture_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ctx)
{
    capture_t *c = ctx;
    size_t n = size * nmemb, keep = n;

    if (!c || c->stopped)
        return n;
    if (c->len + keep > BODY_CAP)
        keep = BODY_CAP - c->len;
    if (keep && c->len + keep + 1 > c->alloc) {
        size_t want = c->alloc ? c->alloc : 1024;
        char *nb;

        while (want < c->len + keep + 1)
            want *= 2;
        if (want > BODY_CAP + 1)
            want = BODY_CAP + 1;
        nb = realloc(c->buf, want);
        if (!nb) {
            c->stopped = 1; /* the rest is dropped, as for an over-long body */
            return n;
        }
        c->buf = nb;
        c->alloc = want;
    }
    if (keep) {
        memcpy(c->buf + c->len, data, keep);
        c->len += keep;
        c->buf[c->len] = '\0';
    }
    return n; /* consume everything, so the connection stays usable */
}

/* --- close-on-exec -------------------------------------------------------------------------- */

/* ctx: the dd_agent_t whose socket it is (recorded for dd_agent_interrupt), or NULL. */
static curl_socket_t open_cloexec(void *ctx, curlsocktype purpose, struct curl_sockaddr *addr)
{
    dd_agent_t *a = ctx;
    curl_socket_t fd;
    (void)purpose;
#ifdef SOCK_CLOEXEC
    fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);
#else
    fd = socket(addr->family, addr->socktype, addr->protocol);
    if (fd >= 0)
        fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    if (a && fd >= 0) {
        pthread_mutex_lock(&a->sock_lock);
        a->sock = fd;
        pthread_mutex_unlock(&a->sock_lock);
    }
    return fd >= 0 ? fd : CURL_SOCKET_BAD;
}

static int close_recorded(void *ctx, curl_socket_t fd)
{
    dd_agent_t *a = ctx;
    pthread_mutex_lock(&a->sock_lock);
    if (a->sock == fd)
        a->sock = -1;
    close(fd);
    pthread_mutex_unlock(&a->sock_lock);
    return 0;
}

void dd_agent_interrupt(dd_agent_t *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->sock_lock);
    if (a->sock >= 0)
        shutdown(a->sock, SHUT_RDWR); /* curl's poll wakes up at once and the transfer fails */
    pthread_mutex_unlock(&a->sock_lock);
}

#define FD_SCAN 4096 /* descriptors looked at when /proc/self/fd cannot be read */

/* Marks 1 in open[fd] for every descriptor below n that is open now. */
static void open_fds(unsigned char *open, int n)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    memset(open, 0, (size_t)n);
    if (!d) {
        for (int fd = 0; fd < n; fd++)
            open[fd] = fcntl(fd, F_GETFD) != -1;
        return;
    }
    while ((e = readdir(d)) != NULL) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] >= '0' && e->d_name[0] <= '9' && fd < n && fd != dirfd(d))
            open[fd] = 1;
    }
    closedir(d);
}

int dd_agent_curl_cloexec(void *curl)
{
    unsigned char *before = malloc(FD_SCAN), *after = malloc(FD_SCAN);
    int rc = -1;

    if (curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, open_cloexec) != CURLE_OK || !before ||
        !after)
        goto out;
    /* No URL yet: the transfer fails at once, without any network, but curl_easy_perform has
     * made its multi handle (and that handle's socket pair), which it keeps for the next one. */
    open_fds(before, FD_SCAN);
    curl_easy_perform(curl);
    open_fds(after, FD_SCAN);
    for (int fd = 0; fd < FD_SCAN; fd++) {
        int fl;
        if (after[fd] && !before[fd] && (fl = fcntl(fd, F_GETFD)) != -1 && !(fl & FD_CLOEXEC))
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
    rc = 0;
out:
    free(before);
    free(after);
    return rc;
}

/* TLS state kept from one attempt to the next (issue 18.6). The handle keeps its connections
 * and its TLS session cache; libcurl 7.87+ (OpenSSL) also keeps the certificate store it
 * parsed from the CA bundle, for CURLOPT_CA_CACHE_TIMEOUT, but only a store that comes from a
 * bundle file alone. Debian's libcurl also has a CA directory (--with-ca-path=/etc/ssl/certs),
 * so it parsed the whole bundle again at every connection: about 50 ms of CPU per attempt at
 * an https agent whose handshake fails. When the bundle can be read, the directory is left
 * out (update-ca-certificates fills both with the same certificates). */
static int keep_tls_state(CURL *curl)
{
#if LIBCURL_VERSION_NUM >= 0x075700 /* 7.87.0 */
    char *cainfo = NULL;

    if (curl_easy_setopt(curl, CURLOPT_CA_CACHE_TIMEOUT, CA_CACHE_S) != CURLE_OK)
        return 1; /* a TLS backend without the cache: nothing more to keep */
    if (curl_easy_getinfo(curl, CURLINFO_CAINFO, &cainfo) == CURLE_OK && cainfo &&
        access(cainfo, R_OK) == 0)
        return curl_easy_setopt(curl, CURLOPT_CAPATH, NULL) == CURLE_OK;
#else
    (void)curl;
#endif
    return 1;
}

dd_agent_t *dd_agent_create(const dd_agent_url_t *url, const char *tracer_version,
                            const char *lang_version, const char *container_id)
{
    dd_agent_t *a;
    int ok = 1;

    if (!url || !url->base || (url->is_unix && !url->socket))
        return NULL;
    dd_agent_global_init();
    if (global_rc != CURLE_OK)
        return NULL;
    a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->sock = -1;
    if (pthread_mutex_init(&a->sock_lock, NULL) != 0) {
        free(a);
        return NULL;
    }
    a->lock_made = 1;
    a->curl = curl_easy_init();
    a->url = malloc(strlen(url->base) + sizeof(TRACES_PATH));
    a->info_url = malloc(strlen(url->base) + sizeof(INFO_PATH));
    a->stats_url = malloc(strlen(url->base) + sizeof(STATS_PATH));
    if (url->is_unix)
        a->socket = strdup(url->socket);
    if (!a->curl || !a->url || !a->info_url || !a->stats_url || (url->is_unix && !a->socket) || dd_agent_curl_cloexec(a->curl)) {
        dd_agent_destroy(a);
        return NULL;
    }
    strcpy(a->url, url->base);
    strcat(a->url, TRACES_PATH);
    strcpy(a->info_url, url->base);
    strcat(a->info_url, INFO_PATH);
    strcpy(a->stats_url, url->base);
    strcat(a->stats_url, STATS_PATH);

    ok = ok && add_header(&a->headers, "Content-Type", "application/msgpack");
    ok = ok && add_header(&a->headers, "Datadog-Meta-Lang", "c");
    ok = ok && add_header(&a->headers, "Datadog-Meta-Lang-Version", lang_version);
    ok = ok && add_header(&a->headers, "Datadog-Meta-Tracer-Version", tracer_version);
    ok = ok && add_header(&a->headers, "Datadog-Container-ID",
                          container_id && *container_id ? container_id : NULL);
    /* No "Expect: 100-continue": curl would wait up to 1 s for the agent's go-ahead on big
     * bodies. */
    ok = ok && append_line(&a->headers, "Expect:");
    if (!ok) {
        dd_agent_destroy(a);
        return NULL;
    }
    a->count_node.data = a->count_line;
    a->count_node.next = a->headers;
    for (int i = 0; i < 3; i++) {
        a->cs_node[i].data = a->cs_line[i];
        a->cs_node[i].next = i < 2 ? &a->cs_node[i + 1] : a->headers;
    }

    ok = ok && curl_easy_setopt(a->curl, CURLOPT_URL, a->url) == CURLE_OK;
    if (a->socket)
        ok = ok && curl_easy_setopt(a->curl, CURLOPT_UNIX_SOCKET_PATH, a->socket) == CURLE_OK;
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85.0 */
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK;
#else
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_PROTOCOLS,
                                (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) == CURLE_OK;
#endif
    /* we run in a thread: no signals (and so no alarm()-based DNS timeouts) */
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
    /* the agent is reached directly, whatever http_proxy/HTTPS_PROXY say */
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_NOPROXY, "*") == CURLE_OK;
    ok = ok &&
         curl_easy_setopt(a->curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1) == CURLE_OK;
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_POST, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_HTTPHEADER, &a->count_node) == CURLE_OK;
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_ERRORBUFFER, a->errbuf) == CURLE_OK;
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK;
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_OPENSOCKETDATA, a) == CURLE_OK;
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_CLOSESOCKETFUNCTION, close_recorded) == CURLE_OK;
    ok = ok && curl_easy_setopt(a->curl, CURLOPT_CLOSESOCKETDATA, a) == CURLE_OK;
    ok = ok && keep_tls_state(a->curl);
    if (!ok) {
        dd_agent_destroy(a);
        return NULL;
    }
    return a;
}

void dd_agent_destroy(dd_agent_t *a)
{
    if (!a)
        return;
    if (a->curl)
        curl_easy_cleanup(a->curl);
    if (a->info_curl)
        curl_easy_cleanup(a->info_curl);
    if (a->stats_curl)
        curl_easy_cleanup(a->stats_curl);
    free(a->info_url);
    free(a->stats_url);
    if (a->lock_made)
        pthread_mutex_destroy(&a->sock_lock);
    curl_slist_free_all(a->headers);
    free(a->socket);
    free(a->url);
    free(a);
}

/* curl's message, except for a unix socket that cannot be reached: curl would name
 * "localhost port 80", which is not where we tried to go. */
static void describe_failure(dd_agent_t *a, CURLcode rc, char *out, size_t size)
{
    long os_errno = 0;
    const char *why;

    if (a->socket && rc == CURLE_COULDNT_CONNECT) {
        curl_easy_getinfo(a->curl, CURLINFO_OS_ERRNO, &os_errno);
        switch (os_errno) {
        case ENOENT:
            why = "no such file";
            break;
        case ECONNREFUSED:
            why = "connection refused (nothing listens)";
            break;
        case EACCES:
            why = "permission denied";
            break;
        case ENOTSOCK:
            why = "not a socket";
            break;
        default:
            why = curl_easy_strerror(rc);
        }
        snprintf(out, size, "Failed to connect to unix socket %s: %s", a->socket, why);
        return;
    }
    snprintf(out, size, "%s", a->errbuf[0] ? a->errbuf : curl_easy_strerror(rc));
}

int dd_agent_send(dd_agent_t *a, const char *body, size_t len, size_t ntraces, long timeout_ms,
                  dd_agent_result_t *res)
{
    capture_t cap = {0};
    CURLcode rc;
    long status = 0;

    if (!res)
        return -1;
    memset(res, 0, sizeof(*res));
    if (!a) {
        snprintf(res->error, sizeof(res->error), "no agent client");
        return -1;
    }
    if (timeout_ms < 1)
        timeout_ms = 1;
    snprintf(a->count_line, sizeof(a->count_line), "X-Datadog-Trace-Count: %zu", ntraces);
    a->errbuf[0] = '\0';

    /* POSTFIELDS is not copied; a NULL body would make curl read the request from stdin. */
    curl_easy_setopt(a->curl, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(a->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    curl_easy_setopt(a->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(a->curl, CURLOPT_CONNECTTIMEOUT_MS,
                     timeout_ms < CONNECT_TIMEOUT_MS ? timeout_ms : CONNECT_TIMEOUT_MS);
    curl_easy_setopt(a->curl, CURLOPT_WRITEDATA, &cap);

    rc = curl_easy_perform(a->curl);
    curl_easy_setopt(a->curl, CURLOPT_WRITEDATA, NULL); /* cap is about to go out of scope */
    curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &status);
    res->http_status = status;
    if (rc != CURLE_OK) {
        curl_off_t up = 0;
        curl_easy_getinfo(a->curl, CURLINFO_SIZE_UPLOAD_T, &up);
        res->undelivered = status == 0 && (up < 0 || (size_t)up < len);
        /* no complete answer: status is what curl saw (0 when nothing), the body is dropped */
        describe_failure(a, rc, res->error, sizeof(res->error));
        free(cap.buf);
        return -1;
    }
    res->body = cap.buf;
    res->body_len = cap.len;
    if (status < 200 || status > 299) {
        snprintf(res->error, sizeof(res->error), "HTTP %ld", status);
        return -1;
    }
    return 0;
}

/* --- agent discovery: GET /info (issue 13.1) ------------------------------------------------ */

int dd_agent_info_parse(const char *body, size_t len, dd_agent_info_t *out)
{
    json_t *root, *v, *e;
    const char *s;
    size_t i;

    memset(out, 0, sizeof(*out));
    root = body ? json_loadb(body, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(root)) {
        json_decref(root);
        return -1;
    }
    if ((s = json_string_value(json_object_get(root, "version"))) != NULL)
        snprintf(out->version, sizeof(out->version), "%s", s);
    json_array_foreach(json_object_get(root, "endpoints"), i, e)
    {
        if (!(s = json_string_value(e)))
            continue;
        out->v05_traces |= strcmp(s, "/v0.5/traces") == 0;
        out->stats |= strcmp(s, "/v0.6/stats") == 0;
        out->remote_config |= strcmp(s, "/v0.7/config") == 0;
    }
    out->client_drop_p0s = json_is_true(json_object_get(root, "client_drop_p0s"));
    out->span_meta_structs = json_is_true(json_object_get(root, "span_meta_structs"));
    out->peer_tags = json_array_size(json_object_get(root, "peer_tags"));
    v = json_object_get(json_object_get(root, "config"), "max_request_bytes");
    if (json_is_integer(v) && json_integer_value(v) > 0)
        out->max_request_bytes = (long long)json_integer_value(v);
    json_decref(root);
    return 0;
}

int dd_agent_info(dd_agent_t *a, long timeout_ms, dd_agent_info_t *out, char *error, size_t size)
{
    capture_t cap = {0};
    CURLcode rc;
    long status = 0;
    int ok = 1;

    memset(out, 0, sizeof(*out));
    snprintf(error, size, "no agent client");
    if (!a)
        return -1;
    if (!a->info_curl) {
        a->info_curl = curl_easy_init();
        ok = a->info_curl && dd_agent_curl_cloexec(a->info_curl) == 0;
        ok = ok && curl_easy_setopt(a->info_curl, CURLOPT_URL, a->info_url) == CURLE_OK;
        if (ok && a->socket)
            ok = curl_easy_setopt(a->info_curl, CURLOPT_UNIX_SOCKET_PATH, a->socket) == CURLE_OK;
        ok = ok && curl_easy_setopt(a->info_curl, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
        ok = ok && curl_easy_setopt(a->info_curl, CURLOPT_NOPROXY, "*") == CURLE_OK;
        ok = ok && curl_easy_setopt(a->info_curl, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
        ok = ok && keep_tls_state(a->info_curl);
        if (!ok) {
            if (a->info_curl)
                curl_easy_cleanup(a->info_curl);
            a->info_curl = NULL;
            return -1;
        }
    }
    curl_easy_setopt(a->info_curl, CURLOPT_TIMEOUT_MS, timeout_ms < 1 ? 1L : timeout_ms);
    curl_easy_setopt(a->info_curl, CURLOPT_CONNECTTIMEOUT_MS,
                     timeout_ms < CONNECT_TIMEOUT_MS ? timeout_ms : CONNECT_TIMEOUT_MS);
    curl_easy_setopt(a->info_curl, CURLOPT_WRITEDATA, &cap);
    rc = curl_easy_perform(a->info_curl);
    curl_easy_setopt(a->info_curl, CURLOPT_WRITEDATA, NULL);
    curl_easy_getinfo(a->info_curl, CURLINFO_RESPONSE_CODE, &status);
    if (rc != CURLE_OK)
        snprintf(error, size, "%s", curl_easy_strerror(rc));
    else if (status != 200)
        snprintf(error, size, "HTTP %ld", status);
    else if (dd_agent_info_parse(cap.buf, cap.len, out) != 0)
        snprintf(error, size, "not a JSON object");
    else
        error[0] = '\0';
    free(cap.buf);
    return error[0] ? -1 : 0;
}


/* --- client-side stats (issue 13.2) ------------------------------------------------------- */

void dd_agent_set_client_stats(dd_agent_t *a, int on, unsigned long long p0_traces,
                               unsigned long long p0_spans)
{
    if (!a)
        return;
    if (!on) {
        a->count_node.next = a->headers;
        return;
    }
    snprintf(a->cs_line[0], sizeof(a->cs_line[0]), "Datadog-Client-Computed-Stats: yes");
    snprintf(a->cs_line[1], sizeof(a->cs_line[1]), "Datadog-Client-Dropped-P0-Traces: %llu",
             p0_traces);
    snprintf(a->cs_line[2], sizeof(a->cs_line[2]), "Datadog-Client-Dropped-P0-Spans: %llu",
             p0_spans);
    a->count_node.next = &a->cs_node[0];
}

int dd_agent_send_stats(dd_agent_t *a, const char *body, size_t len, long timeout_ms,
                        dd_agent_result_t *res)
{
    capture_t cap = {0};
    CURLcode rc;
    long status = 0;
    int ok = 1;

    memset(res, 0, sizeof(*res));
    snprintf(res->error, sizeof(res->error), "no agent client");
    if (!a)
        return -1;
    if (!a->stats_curl) {
        a->stats_curl = curl_easy_init();
        ok = a->stats_curl && dd_agent_curl_cloexec(a->stats_curl) == 0;
        ok = ok && curl_easy_setopt(a->stats_curl, CURLOPT_URL, a->stats_url) == CURLE_OK;
        if (ok && a->socket)
            ok = curl_easy_setopt(a->stats_curl, CURLOPT_UNIX_SOCKET_PATH, a->socket) == CURLE_OK;
        ok = ok && curl_easy_setopt(a->stats_curl, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
        ok = ok && curl_easy_setopt(a->stats_curl, CURLOPT_NOPROXY, "*") == CURLE_OK;
        ok = ok && curl_easy_setopt(a->stats_curl, CURLOPT_POST, 1L) == CURLE_OK;
        /* the fixed headers (Content-Type: application/msgpack, Datadog-Meta-*, container) */
        ok = ok && curl_easy_setopt(a->stats_curl, CURLOPT_HTTPHEADER, a->headers) == CURLE_OK;
        ok = ok && curl_easy_setopt(a->stats_curl, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK;
        ok = ok && keep_tls_state(a->stats_curl);
        if (!ok) {
            if (a->stats_curl)
                curl_easy_cleanup(a->stats_curl);
            a->stats_curl = NULL;
            return -1;
        }
    }
    if (timeout_ms < 1)
        timeout_ms = 1;
    curl_easy_setopt(a->stats_curl, CURLOPT_POSTFIELDS, body ? body : "");
    curl_easy_setopt(a->stats_curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    curl_easy_setopt(a->stats_curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(a->stats_curl, CURLOPT_CONNECTTIMEOUT_MS,
                     timeout_ms < CONNECT_TIMEOUT_MS ? timeout_ms : CONNECT_TIMEOUT_MS);
    curl_easy_setopt(a->stats_curl, CURLOPT_WRITEDATA, &cap);
    rc = curl_easy_perform(a->stats_curl);
    curl_easy_setopt(a->stats_curl, CURLOPT_WRITEDATA, NULL);
    curl_easy_getinfo(a->stats_curl, CURLINFO_RESPONSE_CODE, &status);
    res->http_status = status;
    free(cap.buf); /* the agent answers "OK" or nothing worth keeping */
    if (rc != CURLE_OK) {
        snprintf(res->error, sizeof(res->error), "%s", curl_easy_strerror(rc));
        return -1;
    }
    if (status < 200 || status > 299) {
        snprintf(res->error, sizeof(res->error), "HTTP %ld", status);
        return -1;
    }
    res->error[0] = '\0';
    return 0;
}
