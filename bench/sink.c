/* SPDX-License-Identifier: Apache-2.0 */
/* sink.c - a tiny, fast HTTP/1.1 server for the benchmarks, in two roles:
 *
 *   sink agent  PORT   a stand-in Datadog agent: accepts PUT/POST /v0.4/traces, reads the body
 *                      (Content-Length), counts payloads, bytes and X-Datadog-Trace-Count, and
 *                      answers 200 with a rate_by_service JSON as the agent does. GET /stats
 *                      answers {"payloads":N,"bytes":N,"traces":N,"requests":N}.
 *   sink agent-cstats PORT
 *                      the same, as an agent that takes client-side stats (issue 13.2): GET
 *                      /info announces /v0.6/stats and client_drop_p0s, POST /v0.6/stats is
 *                      counted apart ("stats" in GET /stats), and the rate for every service is
 *                      0.01 (the agent keeping about 1 % of traces).
 *   sink static PORT   the backend behind mod_proxy: answers every GET with the same 1 KB
 *                      body (keep-alive, Content-Length).
 *
 * One thread, epoll, non-blocking sockets, keep-alive, pipelining-safe: it costs far less CPU
 * per request than httpd, so it is never what limits a benchmark. PORT 0 picks a free port;
 * the port is printed on stdout ("PORT n") once listening. It binds 127.0.0.1 only and exits
 * on SIGTERM/SIGINT, or by itself after --max-seconds (default 3600).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define HDR_MAX (64 * 1024)
#define AGENT_ANSWER "{\"rate_by_service\":{\"service:,env:\":1}}"
#define CSTATS_ANSWER "{\"rate_by_service\":{\"service:,env:\":0.01}}"
#define CSTATS_INFO                                                                           \
    "{\"version\":\"7.52.0\",\"endpoints\":[\"/v0.4/traces\",\"/v0.6/stats\",\"/info\"],"  \
    "\"client_drop_p0s\":true,\"config\":{\"max_request_bytes\":25000000}}"

typedef struct {
    int fd;
    char *in;          /* request bytes not yet consumed */
    size_t in_len;
    size_t body_left;  /* body bytes still to skip for the current request */
    int answer_after_body; /* 1: the current request's answer goes out when its body is read */
    int close_after;   /* Connection: close was asked */
    char *out;         /* answer bytes not yet written */
    size_t out_len, out_cap;
    int polling_out;   /* EPOLLOUT is in the interest set */
} conn_t;

static int agent_mode;
static int cstats_mode; /* agent-cstats */
static unsigned long long n_stats;
static char trace_answer[256];
static size_t trace_answer_len;
static volatile sig_atomic_t stop;
static unsigned long long n_payloads, n_bytes, n_traces, n_requests;
static char static_answer[2048];
static size_t static_answer_len;
static conn_t *conns[MAX_CONNS];

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void conn_close(int ep, conn_t *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->fd < MAX_CONNS)
        conns[c->fd] = NULL;
    free(c->in);
    free(c->out);
    free(c);
}

static int out_append(conn_t *c, const char *data, size_t len)
{
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap * 2 : 4096;
        while (cap < c->out_len + len)
            cap *= 2;
        char *n = realloc(c->out, cap);
        if (!n)
            return -1;
        c->out = n;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
    return 0;
}

/* Writes what it can; returns -1 when the connection is dead. */
static int out_flush(conn_t *c)
{
    size_t done = 0;
    while (done < c->out_len) {
        ssize_t n = write(c->fd, c->out + done, c->out_len - done);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)n;
    }
    memmove(c->out, c->out + done, c->out_len - done);
    c->out_len -= done;
    return 0;
}

/* The value of header `name` in the header block [h, h+len), or NULL. */
static const char *header(const char *h, size_t len, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *end = h + len, *line = memchr(h, '\n', len); /* skip the request line */
    while (line && line + 1 < end) {
        const char *s = line + 1, *e = memchr(s, '\n', (size_t)(end - s));
        if (!e)
            break;
        if ((size_t)(e - s) > nl && s[nl] == ':' && strncasecmp(s, name, nl) == 0) {
            const char *v = s + nl + 1;
            while (v < e && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = e;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        line = e;
    }
    return NULL;
}

static void answer(conn_t *c, const char *req, size_t hlen)
{
    if (!agent_mode) {
        out_append(c, static_answer, static_answer_len);
        return;
    }
    if (hlen > 10 && strncmp(req, "GET /stats", 10) == 0) {
        char body[256], resp[512];
        int bl = snprintf(body, sizeof(body),
                          "{\"payloads\":%llu,\"bytes\":%llu,\"traces\":%llu,\"requests\":%llu,"
                          "\"stats\":%llu}",
                          n_payloads, n_bytes, n_traces, n_requests, n_stats);
        int rl = snprintf(resp, sizeof(resp),
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Content-Length: %d\r\n\r\n%s",
                          bl, body);
        out_append(c, resp, (size_t)rl);
        return;
    }
    if (cstats_mode && hlen > 9 && strncmp(req, "GET /info", 9) == 0) {
        char resp[512];
        int rl = snprintf(resp, sizeof(resp),
                          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          "Content-Length: %zu\r\n\r\n%s",
                          sizeof(CSTATS_INFO) - 1, CSTATS_INFO);
        out_append(c, resp, (size_t)rl);
        return;
    }
    out_append(c, trace_answer, trace_answer_len);
}

/* Consumes complete requests from c->in. Returns -1 on a protocol error. */
static int process(conn_t *c)
{
    size_t pos = 0;
    for (;;) {
        if (c->body_left) {
            size_t take = c->in_len - pos < c->body_left ? c->in_len - pos : c->body_left;
            pos += take;
            c->body_left -= take;
            if (c->body_left)
                break;
            if (c->answer_after_body) {
                c->answer_after_body = 0;
                out_append(c, trace_answer, trace_answer_len);
            }
            continue;
        }
        const char *req = c->in + pos;
        size_t avail = c->in_len - pos;
        const char *end = memmem(req, avail, "\r\n\r\n", 4);
        if (!end) {
            if (avail > HDR_MAX)
                return -1;
            break;
        }
        size_t hlen = (size_t)(end - req) + 4, vl = 0;
        const char *v = header(req, hlen, "Content-Length", &vl);
        unsigned long long body = v ? strtoull(v, NULL, 10) : 0;
        if (header(req, hlen, "Transfer-Encoding", &vl))
            return -1; /* not needed by anything we serve */
        v = header(req, hlen, "Connection", &vl);
        if (v && vl == 5 && strncasecmp(v, "close", 5) == 0)
            c->close_after = 1;
        n_requests++;
        pos += hlen;
        if (agent_mode && (strncmp(req, "POST ", 5) == 0 || strncmp(req, "PUT ", 4) == 0)) {
            const char *tc = header(req, hlen, "X-Datadog-Trace-Count", &vl);
            if (strncmp(req, "POST /v0.6/stats", 16) == 0) {
                n_stats++;
                c->body_left = body;
                c->answer_after_body = 1;
                continue;
            }
            n_payloads++;
            n_bytes += body;
            n_traces += tc ? strtoull(tc, NULL, 10) : 0;
            c->body_left = body;
            c->answer_after_body = 1;
            continue;
        }
        c->body_left = body;
        answer(c, req, hlen);
    }
    memmove(c->in, c->in + pos, c->in_len - pos);
    c->in_len -= pos;
    return 0;
}

int main(int argc, char **argv)
{
    int port, lfd, ep, one = 1;
    double max_seconds = 3600;
    struct sockaddr_in a;
    socklen_t al = sizeof(a);
    struct sigaction sa;
    struct timespec t0, now;

    if (argc < 3 ||
        (strcmp(argv[1], "agent") && strcmp(argv[1], "agent-cstats") && strcmp(argv[1], "static"))) {
        fprintf(stderr, "usage: %s agent|agent-cstats|static PORT [--max-seconds S]\n", argv[0]);
        return 2;
    }
    cstats_mode = strcmp(argv[1], "agent-cstats") == 0;
    agent_mode = cstats_mode || strcmp(argv[1], "agent") == 0;
    {
        const char *a = cstats_mode ? CSTATS_ANSWER : AGENT_ANSWER;
        trace_answer_len = (size_t)snprintf(trace_answer, sizeof(trace_answer),
                                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                            "Content-Length: %zu\r\n\r\n%s",
                                            strlen(a), a);
    }
    port = atoi(argv[2]);
    if (argc >= 5 && strcmp(argv[3], "--max-seconds") == 0)
        max_seconds = atof(argv[4]);

    char body[1024];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (char)('a' + i % 26);
    body[sizeof(body) - 1] = '\n';
    static_answer_len = (size_t)snprintf(static_answer, sizeof(static_answer),
                                         "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n"
                                         "Content-Length: %zu\r\n\r\n",
                                         sizeof(body));
    memcpy(static_answer + static_answer_len, body, sizeof(body));
    static_answer_len += sizeof(body);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(lfd, 1024) != 0) {
        perror("bind/listen");
        return 1;
    }
    getsockname(lfd, (struct sockaddr *)&a, &al);
    printf("PORT %d\n", ntohs(a.sin_port));
    fflush(stdout);

    ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    clock_gettime(CLOCK_MONOTONIC, &t0);

    while (!stop) {
        struct epoll_event evs[256];
        int n = epoll_wait(ep, evs, 256, 500);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((double)(now.tv_sec - t0.tv_sec) > max_seconds)
            break;
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int cfd;
                while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    if (cfd >= MAX_CONNS) {
                        close(cfd);
                        continue;
                    }
                    conn_t *c = calloc(1, sizeof(*c));
                    c->fd = cfd;
                    c->in = malloc(HDR_MAX + 65536);
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    conns[cfd] = c;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.fd = cfd};
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &cev);
                }
                continue;
            }
            conn_t *c = fd < MAX_CONNS ? conns[fd] : NULL;
            if (!c)
                continue;
            int dead = 0;
            if (evs[i].events & EPOLLIN) {
                for (;;) {
                    size_t room = HDR_MAX + 65536 - c->in_len;
                    ssize_t r = read(fd, c->in + c->in_len, room);
                    if (r > 0) {
                        c->in_len += (size_t)r;
                        if (process(c) != 0) {
                            dead = 1;
                            break;
                        }
                        if ((size_t)r < room)
                            break; /* level-triggered: epoll says when there is more */
                        continue;
                    }
                    if (r == 0)
                        dead = 1;
                    else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                        dead = 1;
                    break;
                }
            }
            if (!dead && c->out_len && out_flush(c) != 0)
                dead = 1;
            if (!dead && c->close_after && !c->out_len)
                dead = 1;
            if (!dead && (evs[i].events & (EPOLLHUP | EPOLLERR)))
                dead = 1;
            if (!dead) {
                if ((c->out_len != 0) != c->polling_out) { /* only when it changes */
                    c->polling_out = c->out_len != 0;
                    struct epoll_event cev = {
                        .events = EPOLLIN | EPOLLRDHUP | (c->polling_out ? EPOLLOUT : 0),
                        .data.fd = fd};
                    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &cev);
                }
            } else {
                conn_close(ep, c);
            }
        }
    }
    fprintf(stderr, "sink %s: %llu requests, %llu payloads, %llu bytes, %llu traces\n", argv[1],
            n_requests, n_payloads, n_bytes, n_traces);
    return 0;
}
