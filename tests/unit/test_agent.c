/* SPDX-License-Identifier: Apache-2.0 */
/* test_agent.c - unit tests for dd_agent: URL parsing (good URLs and what each bad one is
 * told), agent URL resolution from the environment, container id parsing, and real sends to a
 * small HTTP server run in a thread of this test, on 127.0.0.1 and on a unix socket. The
 * server records what arrives and answers as each test asks: normally, with 500, garbage,
 * nothing (stall), or half an answer. Loopback only. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_pools.h>

#include "dd_agent.h"
#include "unit.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

static apr_pool_t *pool;

/* --- URL parsing ----------------------------------------------------------------------------- */

static void test_url_good(void)
{
    static const struct {
        const char *url, *base, *socket;
    } cases[] = {
        {"http://localhost:8126", "http://localhost:8126", NULL},
        {"http://localhost:8126/", "http://localhost:8126", NULL},
        {"http://agent", "http://agent:80", NULL},
        {"http://agent/", "http://agent:80", NULL},
        {"https://agent.example.com", "https://agent.example.com:443", NULL},
        {"https://agent.example.com:8443/", "https://agent.example.com:8443", NULL},
        {"HTTP://Agent-1.local:1", "http://Agent-1.local:1", NULL},
        {"http://dd_agent:65535", "http://dd_agent:65535", NULL},
        {"http://127.0.0.1:8126", "http://127.0.0.1:8126", NULL},
        {"http://[::1]:8126", "http://[::1]:8126", NULL},
        {"http://[::1]", "http://[::1]:80", NULL},
        {"http://[fe80::1%25eth0]:8126", "http://[fe80::1%25eth0]:8126", NULL},
        {"http://[::ffff:10.0.0.1]:8126/", "http://[::ffff:10.0.0.1]:8126", NULL},
        {"http://h:08126", "http://h:8126", NULL},
        {"unix:///var/run/datadog/apm.socket", "http://localhost", "/var/run/datadog/apm.socket"},
        {"UNIX:///tmp/a.sock", "http://localhost", "/tmp/a.sock"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dd_agent_url_t u;
        const char *err = NULL;
        int rc = dd_agent_url_parse(pool, cases[i].url, &u, &err);

        CHECK(rc == 0);
        if (rc != 0) {
            fprintf(stderr, "  url %s: %s\n", cases[i].url, err ? err : "(no message)");
            continue;
        }
        CHECK_STR(u.base, cases[i].base);
        CHECK_STR(u.socket, cases[i].socket);
        CHECK(u.is_unix == (cases[i].socket != NULL));
    }
}

static void test_url_bad(void)
{
    static const struct {
        const char *url, *message; /* message: a part of the error that names the problem */
    } cases[] = {
        {"", "empty URL"},
        {"localhost:8126", "missing scheme"},
        {"localhost", "missing scheme"},
        {"//localhost:8126", "missing scheme"},
        {"://localhost", "missing scheme"},
        {"a/b://c", "missing scheme"},
        {"ftp://agent", "unsupported scheme 'ftp' (use http://, https:// or unix://)"},
        {"http+unix:///x.sock", "unsupported scheme 'http+unix'"},
        {"httpx://agent", "unsupported scheme 'httpx'"},
        {"http://", "missing host"},
        {"http:///", "missing host"},
        {"http://:8126", "missing host"},
        {"http://agent:", "missing port"},
        {"http://agent:/", "missing port"},
        {"http://agent:0", "invalid port '0'"},
        {"http://agent:65536", "invalid port '65536'"},
        {"http://agent:99999999999999999999999", "invalid port '99999999999999999999999'"},
        {"http://agent:80a", "invalid port '80a'"},
        {"http://agent:-1", "invalid port '-1'"},
        {"http://agent:+80", "invalid port '+80'"},
        {"http://agent:80:81", "invalid port '80:81'"},
        {"http://user@agent:8126", "user info"},
        {"http://user:pw@agent", "user info"},
        {"http://agent:8126/v0.4/traces", "a path ('/v0.4/traces') is not allowed"},
        {"http://agent//", "a path ('//') is not allowed"},
        {"http://agent?x=1", "query string"},
        {"http://agent:8126/?x=1", "query string"},
        {"http://agent#frag", "fragment"},
        {"http://agent/#", "fragment"},
        {"http://ag ent", "space or control character"},
        {"http://agent\n", "space or control character"},
        {"http://ag!ent", "invalid character '!' in the host name"},
        {"http://ag\xc3\xa9nt", "invalid character \\xc3 in the host name"},
        {"http://[::1", "unterminated IPv6"},
        {"http://[::1]x", "unexpected 'x' after the IPv6 address"},
        {"http://[]:80", "invalid IPv6 address '[]'"},
        {"http://[agent]:80", "invalid IPv6 address '[agent]'"},
        {"http://[fe80::1%eth0]", "invalid IPv6 address"},
        {"unix://var/run/apm.socket", "must be absolute"},
        {"unix://localhost/var/run/apm.socket", "must be absolute"},
        {"unix://", "must be absolute"},
        {"unix:///", "not a directory"},
        {"unix:///var/run/", "not a directory"},
        {"unix:///tmp/a.sock?x", "query string"},
        {"unix:///tmp/a.sock#x", "fragment"},
        {"unix:///tmp/"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock",
         "too long"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        dd_agent_url_t u;
        const char *err = NULL;
        int rc = dd_agent_url_parse(pool, cases[i].url, &u, &err);

        CHECK(rc == -1);
        CHECK(err != NULL && strstr(err, cases[i].message) != NULL);
        if (rc != -1 || !err || !strstr(err, cases[i].message))
            fprintf(stderr, "  url \"%s\": rc %d, message \"%s\", expected \"%s\"\n", cases[i].url,
                    rc, err ? err : "(none)", cases[i].message);
    }
    /* a NULL url, and a NULL err pointer, are handled */
    {
        dd_agent_url_t u;
        const char *err = NULL;
        CHECK(dd_agent_url_parse(pool, NULL, &u, &err) == -1);
        CHECK_STR(err, "empty URL");
        CHECK(dd_agent_url_parse(pool, "ftp://x", &u, NULL) == -1);
    }
    /* 107 bytes is the longest unix socket path; 108 is too long */
    {
        char url[256] = "unix:///";
        dd_agent_url_t u;
        const char *err = NULL;

        memset(url + 8, 'a', 106);
        url[8 + 106] = '\0';
        CHECK(dd_agent_url_parse(pool, url, &u, &err) == 0);
        CHECK_U64(strlen(u.socket), 107);
        strcat(url, "a");
        CHECK(dd_agent_url_parse(pool, url, &u, &err) == -1);
        CHECK(err && strstr(err, "(108 bytes, at most 107)"));
    }
}

/* --- environment ------------------------------------------------------------------------------ */

static void clear_env(void)
{
    unsetenv("DD_TRACE_AGENT_URL");
    unsetenv("DD_AGENT_HOST");
    unsetenv("DD_TRACE_AGENT_PORT");
}

static void test_env(void)
{
    clear_env();
    CHECK_STR(dd_agent_url_from_env(pool), "http://localhost:8126");
    setenv("DD_AGENT_HOST", "dd-agent", 1);
    CHECK_STR(dd_agent_url_from_env(pool), "http://dd-agent:8126");
    setenv("DD_TRACE_AGENT_PORT", "9126", 1);
    CHECK_STR(dd_agent_url_from_env(pool), "http://dd-agent:9126");
    unsetenv("DD_AGENT_HOST");
    CHECK_STR(dd_agent_url_from_env(pool), "http://localhost:9126");
    setenv("DD_AGENT_HOST", "::1", 1);
    CHECK_STR(dd_agent_url_from_env(pool), "http://[::1]:9126");
    setenv("DD_AGENT_HOST", "[fd00::2]", 1);
    CHECK_STR(dd_agent_url_from_env(pool), "http://[fd00::2]:9126");
    setenv("DD_AGENT_HOST", "", 1); /* empty means unset */
    setenv("DD_TRACE_AGENT_PORT", "", 1);
    CHECK_STR(dd_agent_url_from_env(pool), "http://localhost:8126");
    /* the URL wins over host and port */
    setenv("DD_AGENT_HOST", "other", 1);
    setenv("DD_TRACE_AGENT_PORT", "1", 1);
    setenv("DD_TRACE_AGENT_URL", "unix:///var/run/datadog/apm.socket", 1);
    CHECK_STR(dd_agent_url_from_env(pool), "unix:///var/run/datadog/apm.socket");
    setenv("DD_TRACE_AGENT_URL", "", 1);
    CHECK_STR(dd_agent_url_from_env(pool), "http://other:1");
    /* what comes from the environment still goes through the parser */
    {
        dd_agent_url_t u;
        const char *err = NULL;
        setenv("DD_TRACE_AGENT_PORT", "port", 1);
        CHECK(dd_agent_url_parse(pool, dd_agent_url_from_env(pool), &u, &err) == -1);
        CHECK(err && strstr(err, "invalid port 'port'"));
    }
    clear_env();
}

/* --- container id ------------------------------------------------------------------------------
 */

#define ID64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static char *cid_from(const char *content)
{
    char path[] = "/tmp/dd_agent_cgroup_XXXXXX";
    int fd = mkstemp(path);
    char *id;

    if (fd < 0)
        return strdup("mkstemp failed");
    if (write(fd, content, strlen(content)) != (ssize_t)strlen(content)) {
        close(fd);
        unlink(path);
        return strdup("write failed");
    }
    close(fd);
    id = dd_agent_container_id_from_file(path);
    unlink(path);
    return id;
}

static void check_cid(const char *content, const char *expected, int line)
{
    char *id = cid_from(content);
    int ok = (id == NULL) == (expected == NULL) && (!id || strcmp(id, expected) == 0);

    CHECK(ok);
    if (!ok)
        fprintf(stderr, "  (line %d) container id %s, expected %s\n", line, id ? id : "NULL",
                expected ? expected : "NULL");
    free(id);
}

static void test_container_id(void)
{
    char *id;

    /* cgroup v1, docker */
    check_cid("12:memory:/docker/" ID64 "\n11:cpu:/docker/" ID64 "\n", ID64, __LINE__);
    /* a later line holds it; the first lines do not */
    check_cid("13:name=systemd:/\n12:pids:/user.slice\n4:memory:/docker/" ID64 "\n", ID64,
              __LINE__);
    /* kubernetes v1 */
    check_cid("5:cpuset:/kubepods/besteffort/pod3d274242-8ee0-11e9-a8a6-1e68d864ef1a/" ID64 "\n",
              ID64, __LINE__);
    /* cgroup v2 systemd scopes */
    check_cid("0::/system.slice/docker-" ID64 ".scope\n", ID64, __LINE__);
    check_cid("0::/kubepods.slice/kubepods-burstable.slice/"
              "kubepods-burstable-pod2d3da189_6407_48e3_9ab6_78188d75e609.slice/"
              "cri-containerd-" ID64 ".scope\n",
              ID64, __LINE__);
    /* no trailing newline */
    check_cid("0::/docker/" ID64, ID64, __LINE__);
    /* none */
    check_cid("0::/\n", NULL, __LINE__);
    check_cid("", NULL, __LINE__);
    check_cid("4:memory:/process_api/2d5b087f8feeb63e540e0e9aacc71be4\n", NULL, __LINE__);
    /* 63 or 65 hex digits, upper case, or a non-hex digit are not ids */
    check_cid("0::/docker/" ID64 "0\n", NULL, __LINE__);
    check_cid("0::/docker/123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n", NULL,
              __LINE__);
    check_cid("0::/docker/0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef\n", NULL,
              __LINE__);
    check_cid("0::/docker/0123456789abcdeg0123456789abcdef0123456789abcdef0123456789abcdef\n", NULL,
              __LINE__);
    /* the id must be the last path component (not a parent directory) */
    check_cid("0::/docker/" ID64 "/init.scope\n", NULL, __LINE__);
    /* a line without the two colons is skipped */
    check_cid("garbage " ID64 "\n1:cpu:/docker/" ID64 "\n", ID64, __LINE__);
    CHECK(dd_agent_container_id_from_file("/nonexistent/cgroup") == NULL);

    /* this process: whatever it is, it is NULL or 64 hex digits */
    id = dd_agent_container_id();
    CHECK(id == NULL || (strlen(id) == 64 && strspn(id, "0123456789abcdef") == 64));
    free(id);
}

/* --- a tiny HTTP server -------------------------------------------------------------------------
 */

enum srv_mode {
    SRV_ANSWER,    /* answer resp_status with resp_body, keep the connection */
    SRV_STALL,     /* read the request, never answer */
    SRV_GARBAGE,   /* answer bytes that are not HTTP, close */
    SRV_CLOSE_MID, /* answer half a response, close */
};

typedef struct {
    int lfd;
    pthread_t thread;
    atomic_int stop;
    atomic_int mode;
    int resp_status;
    const char *resp_body;
    size_t resp_len;

    pthread_mutex_t lock; /* guards what follows (written by the server thread) */
    int accepts, requests;
    char *head; /* the last request's line and headers (NUL-terminated) */
    char *body; /* its body */
    size_t body_len;
} server_t;

static int wait_readable(server_t *s, int fd)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, 20);

        if (atomic_load(&s->stop))
            return 0;
        if (n > 0)
            return 1;
        if (n < 0 && errno != EINTR)
            return 0;
    }
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n <= 0)
            return;
        data += n;
        len -= (size_t)n;
    }
}

/* Reads one request (head + Content-Length body). Returns 0 on EOF, error or stop. */
static int read_request(server_t *s, int fd, char **head_out, char **body_out, size_t *blen)
{
    size_t cap = 4096, len = 0, hlen, clen = 0, total;
    char *buf = malloc(cap), *eoh = NULL, *cl;

    while (!eoh) {
        ssize_t n;
        if (len + 1 >= cap)
            buf = realloc(buf, cap *= 2);
        if (!wait_readable(s, fd) || (n = recv(fd, buf + len, cap - len - 1, 0)) <= 0) {
            free(buf);
            return 0;
        }
        len += (size_t)n;
        buf[len] = '\0';
        eoh = strstr(buf, "\r\n\r\n");
    }
    hlen = (size_t)(eoh - buf) + 4;
    for (cl = buf; (cl = strchr(cl, '\n')) != NULL && cl < eoh;)
        if (strncasecmp(++cl, "Content-Length:", 15) == 0)
            clen = strtoul(cl + 15, NULL, 10);
    total = hlen + clen;
    if (cap < total + 1)
        buf = realloc(buf, cap = total + 1);
    while (len < total) {
        ssize_t n;
        if (!wait_readable(s, fd) || (n = recv(fd, buf + len, total - len, 0)) <= 0) {
            free(buf);
            return 0;
        }
        len += (size_t)n;
    }
    *head_out = malloc(hlen + 1);
    memcpy(*head_out, buf, hlen);
    (*head_out)[hlen] = '\0';
    *body_out = malloc(clen + 1);
    memcpy(*body_out, buf + hlen, clen);
    *blen = clen;
    free(buf);
    return 1;
}

static void serve_connection(server_t *s, int fd)
{
    char *head, *body;
    size_t blen;
    char rhead[256];

    while (read_request(s, fd, &head, &body, &blen)) {
        int status;
        const char *rbody;
        size_t rlen;

        pthread_mutex_lock(&s->lock);
        free(s->head);
        free(s->body);
        s->head = head;
        s->body = body;
        s->body_len = blen;
        s->requests++;
        status = s->resp_status;
        rbody = s->resp_body;
        rlen = s->resp_len;
        pthread_mutex_unlock(&s->lock);

        switch (atomic_load(&s->mode)) {
        case SRV_ANSWER:
            snprintf(rhead, sizeof(rhead),
                     "HTTP/1.1 %d Whatever\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     status, rlen);
            send_all(fd, rhead, strlen(rhead));
            send_all(fd, rbody, rlen);
            break;
        case SRV_STALL:
            wait_readable(s, fd); /* until the client gives up (EOF) or the test ends */
            return;
        case SRV_GARBAGE:
            send_all(fd, "SSH-2.0-OpenSSH_9.2\r\nthis is not http\r\n\r\n", 41);
            return;
        case SRV_CLOSE_MID:
            snprintf(rhead, sizeof(rhead),
                     "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"rate_by");
            send_all(fd, rhead, strlen(rhead));
            return;
        }
    }
}

static void *server_main(void *arg)
{
    server_t *s = arg;

    while (wait_readable(s, s->lfd)) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&s->lock);
        s->accepts++;
        pthread_mutex_unlock(&s->lock);
        serve_connection(s, fd);
        close(fd);
    }
    return NULL;
}

static void server_answer(server_t *s, int status, const char *body, size_t len)
{
    pthread_mutex_lock(&s->lock);
    s->resp_status = status;
    s->resp_body = body;
    s->resp_len = len;
    pthread_mutex_unlock(&s->lock);
    atomic_store(&s->mode, SRV_ANSWER);
}

/* Starts a server on 127.0.0.1 (unix_path NULL; *port is set) or on a unix socket. */
static int server_start(server_t *s, const char *unix_path, int *port)
{
    memset(s, 0, sizeof(*s));
    pthread_mutex_init(&s->lock, NULL);
    server_answer(s, 200, "{}", 2);
    if (unix_path) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        unlink(unix_path);
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", unix_path);
        s->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&sun, sizeof(sun)) != 0)
            return -1;
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET};
        socklen_t slen = sizeof(sin);
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        s->lfd = socket(AF_INET, SOCK_STREAM, 0);
        if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
            getsockname(s->lfd, (struct sockaddr *)&sin, &slen) != 0)
            return -1;
        *port = ntohs(sin.sin_port);
    }
    if (listen(s->lfd, 16) != 0)
        return -1;
    return pthread_create(&s->thread, NULL, server_main, s) == 0 ? 0 : -1;
}

static void server_stop(server_t *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->thread, NULL);
    close(s->lfd);
    free(s->head);
    free(s->body);
    pthread_mutex_destroy(&s->lock);
}

/* The value of header name in head (a malloc'd copy), or NULL. Fails the test (returns the
 * string "(duplicate)") when the header appears twice. */
static char *header(const char *head, const char *name)
{
    size_t nlen = strlen(name);
    char *found = NULL;

    for (const char *l = strstr(head, "\r\n"); l && l[2] != '\r'; l = strstr(l + 2, "\r\n")) {
        const char *line = l + 2, *v, *end = strstr(line, "\r\n");
        if (strncasecmp(line, name, nlen) != 0 || line[nlen] != ':')
            continue;
        if (found) {
            free(found);
            return strdup("(duplicate)");
        }
        for (v = line + nlen + 1; *v == ' '; v++)
            ;
        found = strndup(v, (size_t)(end - v));
    }
    return found;
}

static void check_header(const char *head, const char *name, const char *expected)
{
    char *v = header(head ? head : "", name);
    CHECK_STR(v, expected);
    if ((v == NULL) != (expected == NULL) || (v && strcmp(v, expected) != 0))
        fprintf(stderr, "  header %s\n", name);
    free(v);
}

static long elapsed_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

static dd_agent_t *client_for(const char *url_text, const char *container_id)
{
    dd_agent_url_t url;
    const char *err = NULL;

    if (dd_agent_url_parse(pool, url_text, &url, &err) != 0) {
        fprintf(stderr, "  url %s: %s\n", url_text, err);
        return NULL;
    }
    return dd_agent_create(&url, "0.1.0", "2.4.57", container_id);
}

/* A payload with every byte value, NULs included. */
static char *payload(size_t len)
{
    char *b = malloc(len);
    for (size_t i = 0; i < len; i++)
        b[i] = (char)(i * 7 + (i >> 8));
    return b;
}

/* One send and everything the server saw. expect_host is the Host header. */
static void check_send(server_t *s, dd_agent_t *a, size_t len, size_t ntraces,
                       const char *expect_host, const char *container_id)
{
    char *body = payload(len), count[32], clen[32];
    dd_agent_result_t res;
    int rc = dd_agent_send(a, body, len, ntraces, 5000, &res);

    CHECK(rc == 0);
    CHECK_U64(res.http_status, 200);
    CHECK_STR(res.error, "");
    CHECK_U64(res.body_len, strlen("{\"rate_by_service\":{\"service:,env:\":0.5}}"));
    CHECK_STR(res.body, "{\"rate_by_service\":{\"service:,env:\":0.5}}");
    free(res.body);

    pthread_mutex_lock(&s->lock);
    CHECK(s->head != NULL);
    CHECK(s->head && strncmp(s->head, "POST /v0.4/traces HTTP/1.1\r\n", 28) == 0);
    snprintf(count, sizeof(count), "%zu", ntraces);
    snprintf(clen, sizeof(clen), "%zu", len);
    check_header(s->head, "Host", expect_host);
    check_header(s->head, "Content-Type", "application/msgpack");
    check_header(s->head, "Content-Length", clen);
    check_header(s->head, "X-Datadog-Trace-Count", count);
    check_header(s->head, "Datadog-Meta-Lang", "c");
    check_header(s->head, "Datadog-Meta-Lang-Version", "2.4.57");
    check_header(s->head, "Datadog-Meta-Tracer-Version", "0.1.0");
    check_header(s->head, "Datadog-Container-ID", container_id);
    check_header(s->head, "Expect", NULL);
    check_header(s->head, "Transfer-Encoding", NULL);
    check_header(s->head, "Proxy-Connection", NULL);
    CHECK_U64(s->body_len, len);
    CHECK(s->body && s->body_len == len && memcmp(s->body, body, len) == 0);
    pthread_mutex_unlock(&s->lock);
    free(body);
}

static const char rates_json[] = "{\"rate_by_service\":{\"service:,env:\":0.5}}";

static void test_send_tcp(void)
{
    server_t s;
    int port = 0;
    char url[64], host[32];
    dd_agent_t *a;
    dd_agent_result_t res;
    struct timespec t0;
    long ms;

    CHECK(server_start(&s, NULL, &port) == 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    snprintf(host, sizeof(host), "127.0.0.1:%d", port);
    /* a proxy in the environment must not be used for the agent */
    setenv("http_proxy", "http://127.0.0.1:1", 1);
    setenv("HTTP_PROXY", "http://127.0.0.1:1", 1);
    a = client_for(url, ID64);
    CHECK(a != NULL);
    if (!a) {
        server_stop(&s);
        return;
    }
    server_answer(&s, 200, rates_json, strlen(rates_json));

    /* small, then 2 MiB (where curl would otherwise send "Expect: 100-continue"), then an
     * empty payload; all on the one connection */
    check_send(&s, a, 100, 3, host, ID64);
    check_send(&s, a, 2 * 1024 * 1024, 12345, host, ID64);
    check_send(&s, a, 0, 0, host, ID64);
    pthread_mutex_lock(&s.lock);
    CHECK_U64(s.requests, 3);
    CHECK_U64(s.accepts, 1); /* kept alive */
    pthread_mutex_unlock(&s.lock);

    /* a NULL body is an empty POST, not a read from stdin */
    CHECK(dd_agent_send(a, NULL, 10, 0, 2000, &res) == 0);
    free(res.body);
    pthread_mutex_lock(&s.lock);
    CHECK_U64(s.body_len, 0);
    pthread_mutex_unlock(&s.lock);

    /* a response body over 64 KiB is cut at 64 KiB, NUL-terminated, and the connection is
     * still usable afterwards */
    {
        /* static: the server thread may still be inside send() when the client is done */
        static char rb[100 * 1024];
        size_t big = sizeof(rb);
        memset(rb, 'x', big);
        server_answer(&s, 200, rb, big);
        CHECK(dd_agent_send(a, "x", 1, 1, 5000, &res) == 0);
        CHECK_U64(res.body_len, 64 * 1024);
        CHECK(res.body && res.body[64 * 1024] == '\0' && res.body[0] == 'x' &&
              res.body[64 * 1024 - 1] == 'x');
        free(res.body);
        server_answer(&s, 200, rates_json, strlen(rates_json));
        check_send(&s, a, 10, 1, host, ID64);
        pthread_mutex_lock(&s.lock);
        CHECK_U64(s.accepts, 1);
        pthread_mutex_unlock(&s.lock);
    }

    /* an empty answer: success, no body */
    server_answer(&s, 200, "", 0);
    CHECK(dd_agent_send(a, "x", 1, 1, 5000, &res) == 0);
    CHECK(res.body == NULL && res.body_len == 0);
    CHECK_STR(res.error, "");

    /* 500: an error, with the status and the agent's body */
    server_answer(&s, 500, "{\"error\":\"boom\"}", 16);
    CHECK(dd_agent_send(a, "x", 1, 1, 5000, &res) == -1);
    CHECK_U64(res.http_status, 500);
    CHECK_STR(res.error, "HTTP 500");
    CHECK_STR(res.body, "{\"error\":\"boom\"}");
    free(res.body);

    /* other non-2xx answers are errors too */
    server_answer(&s, 413, "", 0);
    CHECK(dd_agent_send(a, "x", 1, 1, 5000, &res) == -1);
    CHECK_U64(res.http_status, 413);
    CHECK_STR(res.error, "HTTP 413");
    free(res.body);
    server_answer(&s, 202, "{}", 2);
    CHECK(dd_agent_send(a, "x", 1, 1, 5000, &res) == 0); /* any 2xx is fine */
    free(res.body);

    /* garbage: an error, no status, no body */
    atomic_store(&s.mode, SRV_GARBAGE);
    CHECK(dd_agent_send(a, "x", 1, 1, 5000, &res) == -1);
    CHECK_U64(res.http_status, 0);
    CHECK(res.error[0] != '\0');
    CHECK(res.body == NULL);
    printf("garbage answer: %s\n", res.error);

    /* half an answer, then the server closes: an error, no body */
    atomic_store(&s.mode, SRV_CLOSE_MID);
    CHECK(dd_agent_send(a, "x", 1, 1, 5000, &res) == -1);
    CHECK(res.error[0] != '\0' && strcmp(res.error, "HTTP 200") != 0);
    CHECK(res.body == NULL);
    printf("closed mid-answer: %s (status %ld)\n", res.error, res.http_status);

    /* a server that never answers: back within the timeout (plus slack) */
    atomic_store(&s.mode, SRV_STALL);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(dd_agent_send(a, "x", 1, 1, 300, &res) == -1);
    ms = elapsed_ms(&t0);
    CHECK(ms >= 250 && ms < 300 + 700);
    CHECK(strstr(res.error, "timed out") != NULL);
    CHECK_U64(res.http_status, 0);
    CHECK(res.body == NULL);
    printf("stalled server: %s (after %ld ms)\n", res.error, ms);

    /* and the same client works again when the server does */
    server_answer(&s, 200, rates_json, strlen(rates_json));
    check_send(&s, a, 50, 2, host, ID64);

    dd_agent_destroy(a);
    server_stop(&s);
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");

    /* no container id: no header; no versions: no headers */
    CHECK(server_start(&s, NULL, &port) == 0);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
    snprintf(host, sizeof(host), "127.0.0.1:%d", port);
    {
        dd_agent_url_t u;
        const char *err;
        CHECK(dd_agent_url_parse(pool, url, &u, &err) == 0);
        a = dd_agent_create(&u, NULL, "2.4.57\r\nX-Evil: 1", NULL);
    }
    CHECK(a != NULL);
    server_answer(&s, 200, "{}", 2);
    CHECK(a && dd_agent_send(a, "x", 1, 1, 5000, &res) == 0);
    free(res.body);
    pthread_mutex_lock(&s.lock);
    check_header(s.head, "Datadog-Container-ID", NULL);
    check_header(s.head, "Datadog-Meta-Tracer-Version", NULL);
    check_header(s.head, "Datadog-Meta-Lang-Version", "2.4.57X-Evil: 1"); /* no injection */
    check_header(s.head, "X-Evil", NULL);
    pthread_mutex_unlock(&s.lock);
    dd_agent_destroy(a);
    server_stop(&s);
}

static void test_send_refused(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t slen = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port;
    char url[64];
    dd_agent_t *a;
    dd_agent_result_t res;
    struct timespec t0;
    long ms;

    /* a port that was free a moment ago and has no listener */
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sin, &slen) == 0);
    port = ntohs(sin.sin_port);
    close(fd);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    a = client_for(url, NULL);
    CHECK(a != NULL);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK(a && dd_agent_send(a, "x", 1, 1, 5000, &res) == -1);
    ms = elapsed_ms(&t0);
    CHECK(ms < 1000);
    CHECK_U64(res.http_status, 0);
    CHECK(res.error[0] != '\0');
    CHECK(res.body == NULL);
    printf("refused: %s\n", res.error);
    dd_agent_destroy(a);

    /* a missing unix socket */
    a = client_for("unix:///tmp/dd_agent_test_does_not_exist.sock", NULL);
    CHECK(a != NULL);
    CHECK(a && dd_agent_send(a, "x", 1, 1, 5000, &res) == -1);
    CHECK_U64(res.http_status, 0);
    CHECK_STR(res.error, "Failed to connect to unix socket "
                         "/tmp/dd_agent_test_does_not_exist.sock: no such file");
    dd_agent_destroy(a);

    /* NULL client */
    CHECK(dd_agent_send(NULL, "x", 1, 1, 5000, &res) == -1);
    CHECK(res.error[0] != '\0');
    dd_agent_destroy(NULL);
}

static void test_send_unix(void)
{
    server_t s;
    char path[64], url[80];
    dd_agent_t *a;
    dd_agent_result_t res;

    snprintf(path, sizeof(path), "/tmp/dd_agent_test.%d.sock", (int)getpid());
    snprintf(url, sizeof(url), "unix://%s", path);
    CHECK(server_start(&s, path, NULL) == 0);
    a = client_for(url, ID64);
    CHECK(a != NULL);
    if (a) {
        server_answer(&s, 200, rates_json, strlen(rates_json));
        check_send(&s, a, 1000, 7, "localhost", ID64);
        check_send(&s, a, 2 * 1024 * 1024, 8, "localhost", ID64);
        pthread_mutex_lock(&s.lock);
        CHECK_U64(s.accepts, 1);
        pthread_mutex_unlock(&s.lock);

        server_answer(&s, 500, "no", 2);
        CHECK(dd_agent_send(a, "x", 1, 1, 5000, &res) == -1);
        CHECK_U64(res.http_status, 500);
        CHECK_STR(res.error, "HTTP 500");
        CHECK_STR(res.body, "no");
        free(res.body);

        atomic_store(&s.mode, SRV_STALL);
        CHECK(dd_agent_send(a, "x", 1, 1, 200, &res) == -1);
        CHECK(strstr(res.error, "timed out") != NULL);
    }
    dd_agent_destroy(a);
    server_stop(&s);
    unlink(path);
}

/* Whether fd is a socket whose local port is port (the test server's side of a connection). */
static int local_port_is(int fd, int port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    return getsockname(fd, (struct sockaddr *)&sin, &len) == 0 && sin.sin_family == AF_INET &&
           ntohs(sin.sin_port) == port;
}

/* Every descriptor the client made (its connection, libcurl's own socket pair) is close-on-exec
 * once it has sent, so a CGI forked and exec'd by httpd inherits none (issue 18 item 3). */
static void test_descriptors_close_on_exec(void)
{
    enum { N = 1024 };
    static unsigned char inherited_before[N];
    server_t s;
    int port = 0, leaks = 0;
    char url[64], host[32];
    dd_agent_t *a;

    CHECK(server_start(&s, NULL, &port) == 0);
    for (int fd = 0; fd < N; fd++) {
        int fl = fcntl(fd, F_GETFD);
        inherited_before[fd] = fl != -1 && !(fl & FD_CLOEXEC);
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", port);
    snprintf(host, sizeof(host), "127.0.0.1:%d", port);
    a = client_for(url, NULL);
    CHECK(a != NULL);
    if (a) {
        server_answer(&s, 200, rates_json, strlen(rates_json));
        check_send(&s, a, 100, 1, host, NULL); /* the connection stays open after it */
        for (int fd = 3; fd < N; fd++) {
            int fl = fcntl(fd, F_GETFD);
            if (fl != -1 && !(fl & FD_CLOEXEC) && !inherited_before[fd] &&
                !local_port_is(fd, port)) {
                fprintf(stderr, "descriptor %d is not close-on-exec\n", fd);
                leaks++;
            }
        }
        CHECK(leaks == 0);
        dd_agent_destroy(a);
    }
    server_stop(&s);
}

/* GET /info's answer (issue 13.1): the fields used, an agent that says little, and garbage. */
static void test_info_parse(void)
{
    dd_agent_info_t in;
    const char *full =
        "{\"version\":\"7.52.0\",\"endpoints\":[\"/v0.4/traces\",\"/v0.5/traces\",\"/v0.6/stats\","
        "\"/v0.7/config\",7],\"client_drop_p0s\":true,\"span_meta_structs\":false,"
        "\"peer_tags\":[\"peer.service\",\"db.instance\"],\"config\":{\"max_request_bytes\":25000000}}";

    CHECK(dd_agent_info_parse(full, strlen(full), &in) == 0);
    CHECK_STR(in.version, "7.52.0");
    CHECK(in.v05_traces && in.stats && in.remote_config && in.client_drop_p0s);
    CHECK(!in.span_meta_structs);
    CHECK(in.peer_tags == 2);
    CHECK(in.max_request_bytes == 25000000);
    CHECK(dd_agent_info_parse("{}", 2, &in) == 0); /* an agent that says nothing: all 0 */
    CHECK(!in.stats && !in.client_drop_p0s && in.max_request_bytes == 0 && !in.version[0]);
    CHECK(dd_agent_info_parse("{\"config\":{\"max_request_bytes\":-5},\"version\":7}", 47, &in) ==
          0);
    CHECK(in.max_request_bytes == 0 && !in.version[0]);
    CHECK(dd_agent_info_parse("[1,2]", 5, &in) == -1);
    CHECK(dd_agent_info_parse("\x00\xff{{", 5, &in) == -1);
    CHECK(dd_agent_info_parse(NULL, 0, &in) == -1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    apr_initialize();
    apr_pool_create(&pool, NULL);
    dd_agent_global_init();
    dd_agent_global_init(); /* twice is fine */

    test_url_good();
    test_url_bad();
    test_info_parse();
    test_env();
    test_container_id();
    test_send_tcp();
    test_send_refused();
    test_send_unix();
    test_descriptors_close_on_exec();

    apr_pool_destroy(pool);
    apr_terminate();
    UNIT_DONE();
}
