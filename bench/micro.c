/* SPDX-License-Identifier: Apache-2.0 */
/* micro.c - microbenchmark of lib/ alone (issue 7).
 *
 * Part 1, per request (ns): what a traced request costs the module, step by step, on a
 * realistic header table (every x-dd-proxy* header API Gateway REST sends, plus what API
 * Gateway forwards anyway: Host, User-Agent, Accept, X-Forwarded-*, X-Amzn-Trace-Id). Every
 * iteration gets a fresh APR subpool of a per-"connection" pool whose allocator has no mutex,
 * as httpd's event MPM gives each request, and a fresh copy of the header table in it.
 *
 * The steps are measured by prefixes: level k runs steps 1..k, and step k costs
 * level(k) - level(k-1). Levels are interleaved inside every repetition (so drift hits them
 * alike) and the median over repetitions is reported. Level 0 is httpd's own work (pool,
 * header table) and is subtracted: the module's cost is level(last) - level(0).
 *   1 parse    dd_gateway_parse
 *   2 start    dd_trace_start (inferred span + server span)
 *   3 sample   dd_trace_sample (agent rates table filled as after a real agent answer)
 *   4 finish   dd_trace_finish
 *   5 encode   dd_trace_encode (the chunk is freed outside the timed batch)
 *   6 enqueue  dd_queue_push (the queue is drained outside the timed batch)
 * A seventh level, "glue", does everything mod_dd_proxy.c does for one request (strip,
 * context extraction, ids as strings in notes and subprocess env, injection for mod_proxy,
 * counters, the queue's half-full check) on top of the six steps.
 *
 * Part 2, the flusher (spans/s): the queue is filled (untimed) with real encoded chunks, then
 * dd_flusher_drain_once() is timed, (a) with a fake dd_sender_t that only counts bytes and
 * parses a real agent answer, (b) with dd_agent_send() (libcurl) to an HTTP sink in a thread
 * of this process on 127.0.0.1 that reads each body and answers like the agent. Both the
 * wall time and the CPU time of the draining thread are reported; "one core" is the CPU one.
 *
 * Build (bench/run.sh --micro does it):
 *   gcc -std=gnu11 -O2 -Ilib $(pkg-config --cflags apr-1 apr-util-1 jansson libcurl msgpack)
 *       bench/micro.c lib/dd_*.c -o micro $(pkg-config --libs ...) -lpthread
 * Run: ./micro [--quick] [--reps N] [--batches N] [--rounds N] [--no-http]
 *   (--reps 1 --batches 1 --rounds 2 --no-http is small enough for valgrind --tool=callgrind)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <apr_general.h>
#include <apr_pools.h>
#include <apr_strings.h>
#include <apr_tables.h>

#include "dd_agent.h"
#include "dd_encode.h"
#include "dd_flusher.h"
#include "dd_gateway.h"
#include "dd_propagation.h"
#include "dd_queue.h"
#include "dd_rates.h"
#include "dd_sampler.h"
#include "dd_stats.h"
#include "dd_trace.h"
#include "dd_util.h"

#define BATCH 4096 /* iterations between two clock reads; also the queue's item limit */
#define AGENT_ANSWER "{\"rate_by_service\":{\"service:,env:\":1,\"service:orders-httpd,env:prod\":1}}"

static double now_s(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* --- the request ------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    const char *headers[24][2]; /* x-dd-proxy-request-time-ms is added with the current time */
    int gateway;
} scenario_t;

/* What API Gateway forwards to an HTTP integration on its own. */
#define COMMON_HEADERS                                                                        \
    {"Host", "orders.internal.example.com"},                                                  \
        {"User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like "      \
                       "Gecko) Chrome/124.0.0.0 Safari/537.36"},                              \
        {"Accept", "application/json"}, {"Accept-Encoding", "gzip, deflate, br"},             \
        {"X-Amzn-Trace-Id", "Root=1-6745a1b2-3c4d5e6f7a8b9c0d1e2f3a4b"},                       \
        {"X-Forwarded-For", "203.0.113.7"}, {"X-Forwarded-Port", "443"},                      \
        {"X-Forwarded-Proto", "https"}

static const scenario_t scenarios[] = {
    {"aws-apigateway",
     {COMMON_HEADERS,
      {"x-dd-proxy", "aws-apigateway"},
      {"x-dd-proxy-domain-name", "a1b2c3d4e5.execute-api.eu-west-3.amazonaws.com"},
      {"x-dd-proxy-httpmethod", "GET"},
      {"x-dd-proxy-path", "/prod/orders/42"},
      {"x-dd-proxy-stage", "prod"},
      {"x-dd-proxy-region", "eu-west-3"},
      {"x-dd-proxy-resource-path", "/orders/{id}"},
      {"x-dd-proxy-account-id", "123456789012"},
      {"x-dd-proxy-api-id", "a1b2c3d4e5"},
      {"x-dd-proxy-user", "AIDACKCEVSQ6C2EXAMPLE"},
      {NULL, NULL}},
     1},
    {"aws-httpapi",
     {COMMON_HEADERS,
      {"x-dd-proxy", "aws-httpapi"},
      {"x-dd-proxy-domain-name", "f6g7h8i9j0.execute-api.us-east-1.amazonaws.com"},
      {"x-dd-proxy-httpmethod", "GET"},
      {"x-dd-proxy-path", "/orders/42"},
      {"x-dd-proxy-stage", "$default"},
      {"x-dd-proxy-region", "us-east-1"},
      {"x-dd-proxy-resource-path", "/orders/{id}"},
      {"x-dd-proxy-account-id", "123456789012"},
      {"x-dd-proxy-api-id", "f6g7h8i9j0"},
      {NULL, NULL}},
     1},
    {"azure-apim",
     {COMMON_HEADERS,
      {"x-dd-proxy", "azure-apim"},
      {"x-dd-proxy-domain-name", "orders-apim.azure-api.net"},
      {"x-dd-proxy-httpmethod", "GET"},
      {"x-dd-proxy-path", "/orders/{id}"},
      {"x-dd-proxy-region", "West Europe"},
      {NULL, NULL}},
     1},
    /* as many headers and about as many bytes as aws-apigateway, none of them the module's
     * (the same set as bench/wrk.lua's "none") */
    {"no gateway",
     {COMMON_HEADERS,
      {"X-Request-Id", "0f8e6a4c-3b2d-4e1f-9a7b-5c6d7e8f9a0b"},
      {"X-Correlation-Id", "c0ffee00-1234-4abc-8def-0123456789ab"},
      {"X-Client-Version", "4.2.1"},
      {"X-Tenant", "acme-eu-west"},
      {"X-Api-Key-Id", "key-01HF3JX9ZK8Q"},
      {"Accept-Language", "en-GB,en;q=0.9"},
      {"Cache-Control", "no-cache"},
      {"Pragma", "no-cache"},
      {"X-Requested-With", "XMLHttpRequest"},
      {"X-Feature-Flags", "checkout-v2,dark-mode"},
      {"Origin", "https://shop.example.com"},
      {NULL, NULL}},
     0},
};
#define NSCEN (sizeof(scenarios) / sizeof(scenarios[0]))

/* Everything that lives as long as the process (a child's globals and configuration). */
typedef struct {
    apr_pool_t *conn;       /* the "connection" pool: request pools are its children */
    apr_table_t *templ[NSCEN];
    dd_trace_conf_t conf;
    dd_request_info_t req;
    dd_limiter_t *limiter;
    dd_rates_t *rates;
    dd_queue_t *queue;
    dd_styles_t styles;
    dd_stats_t stats;
} world_t;

static void world_init(world_t *w, apr_pool_t *global)
{
    apr_allocator_t *alloc;
    char ms[32];

    /* As httpd's event MPM makes a connection's pool: its own allocator, no mutex. */
    apr_allocator_create(&alloc);
    apr_allocator_max_free_set(alloc, 0);
    apr_pool_create_ex(&w->conn, NULL, NULL, alloc);
    apr_allocator_owner_set(alloc, w->conn);

    snprintf(ms, sizeof(ms), "%lld", (long long)(dd_now_ns() / 1000000));
    for (size_t s = 0; s < NSCEN; s++) {
        w->templ[s] = apr_table_make(global, 32);
        for (int i = 0; scenarios[s].headers[i][0]; i++)
            apr_table_add(w->templ[s], scenarios[s].headers[i][0], scenarios[s].headers[i][1]);
        if (scenarios[s].gateway)
            apr_table_add(w->templ[s], "x-dd-proxy-request-time-ms", apr_pstrdup(global, ms));
    }

    memset(&w->conf, 0, sizeof(w->conf));
    w->conf.service = "orders-httpd";
    w->conf.env = "prod";
    w->conf.version = "1.4.2";
    w->conf.trace_id_128 = 1;
    dd_trace_conf_prepare(global, &w->conf); /* as child_init does */
    memset(&w->req, 0, sizeof(w->req));
    w->req.method = "GET";
    w->req.scheme = "http";
    w->req.host = "orders.internal.example.com";
    w->req.port = 80;
    w->req.path = "/api/orders/42";
    w->req.user_agent = scenarios[0].headers[1][1];
    w->req.client_ip = "10.0.12.34";

    w->limiter = dd_limiter_create(global, 100);
    w->rates = dd_rates_create();
    dd_rates_update_json(w->rates, AGENT_ANSWER, strlen(AGENT_ANSWER), NULL);
    w->queue = dd_queue_create(BATCH, 64u << 20);
    dd_styles_default(&w->styles);
    memset(&w->stats, 0, sizeof(w->stats));
}

enum { L_BASE, L_PARSE, L_START, L_SAMPLE, L_FINISH, L_ENCODE, L_ENQUEUE, L_GLUE, L_COUNT };
static const char *const level_names[L_COUNT] = {
    "httpd's own (pool + header table)", "parse", "start", "sample", "finish",
    "encode",                            "enqueue", "glue"};

/* One request, doing steps up to `level`. Returns the chunk (or NULL) through *chunk. */
static void one_request(world_t *w, int scen, int level, char **chunk_out)
{
    apr_pool_t *rp;
    apr_table_t *h, *notes, *env;
    dd_gateway_t gw;
    dd_gw_status_t gst = DD_GW_ABSENT;
    dd_trace_t *t;
    dd_extracted_t inbound;
    int has_inbound = 0;
    dd_request_info_t req = w->req;
    char *chunk;
    size_t len;
    int64_t start_ns = dd_now_ns();

    *chunk_out = NULL;
    apr_pool_create(&rp, w->conn);
    h = apr_table_copy(rp, w->templ[scen]);
    notes = apr_table_make(rp, 5); /* httpd makes r->notes and r->subprocess_env anyway */
    env = apr_table_make(rp, 15);
    req.start_ns = start_ns;
    req.start_mono_ns = dd_mono_ns();
    if (level >= L_PARSE) {
        gst = dd_gateway_parse(rp, h, start_ns / 1000000, &gw);
        if (level == L_GLUE) {
            dd_gateway_strip(h);
            if (gst == DD_GW_OK)
                dd_stats_add(&w->stats.inferred_spans, 1);
            has_inbound = dd_extract(rp, h, &w->styles, &inbound);
            req.user_agent = apr_table_get(h, "User-Agent");
        }
    }
    if (level >= L_START) {
        t = dd_trace_start(rp, &w->conf, &req, gst == DD_GW_OK ? &gw : NULL,
                           has_inbound ? &inbound.ctx : NULL);
        if (level >= L_SAMPLE)
            dd_trace_sample(t, &w->conf, w->limiter, w->rates, dd_mono_ns());
        if (level == L_GLUE) {
            dd_inject_t in;
            const char *tid = dd_trace_id_string(rp, t), *sid = dd_span_id_string(rp, t);
            apr_table_setn(notes, "dd.trace_id", tid);
            apr_table_setn(notes, "dd.span_id", sid);
            apr_table_setn(env, "DD_TRACE_ID", tid);
            apr_table_setn(env, "DD_SPAN_ID", sid);
            dd_trace_inject_input(t, NULL, &in);
            dd_inject(rp, h, &w->styles, &in);
        }
        if (level >= L_FINISH) {
            dd_trace_finish(t, dd_mono_ns(), 200, "200 OK", NULL);
            if (level == L_GLUE)
                dd_stats_add(&w->stats.requests_traced, 1);
        }
        if (level >= L_ENCODE && dd_trace_encode(t, &chunk, &len) == 0) {
            if (level >= L_ENQUEUE) {
                if (dd_queue_push(w->queue, chunk, len) != DD_QUEUE_OK) {
                    free(chunk);
                    fprintf(stderr, "queue full: the benchmark is broken\n");
                    exit(1);
                }
                if (level == L_GLUE) {
                    dd_stats_add(&w->stats.chunks_queued, 1);
                    if (dd_queue_count(w->queue) > dd_queue_max_items(w->queue) / 2)
                        dd_stats_add(&w->stats.payloads_sent, 0); /* dd_flusher_wake's check */
                }
            } else {
                *chunk_out = chunk;
            }
        }
    }
    apr_pool_destroy(rp);
}

/* ns per request at `level`, over `batches` batches of BATCH requests. Chunks and the queue
 * are emptied between batches, outside the clock. */
static double run_level(world_t *w, int scen, int level, int batches)
{
    static char *chunks[BATCH];
    double total = 0;
    for (int b = 0; b < batches; b++) {
        double t0 = now_s(CLOCK_THREAD_CPUTIME_ID);
        for (int i = 0; i < BATCH; i++)
            one_request(w, scen, level, &chunks[i]);
        total += now_s(CLOCK_THREAD_CPUTIME_ID) - t0;
        for (int i = 0; i < BATCH; i++)
            free(chunks[i]);
        char *d;
        size_t n;
        while (dd_queue_pop(w->queue, &d, &n))
            free(d);
    }
    return total * 1e9 / ((double)batches * BATCH);
}

/* The vCPU's clock right now, in GHz: a chain of dependent adds runs one per cycle. A VM's
 * vCPU does not always run at the same speed (this machine has been seen between 1.4 and
 * 2.3 GHz by this loop within an hour), so ns are also given as cycles: ns x the clock
 * measured next to them. 0 when not on x86-64. */
static double clock_ghz(void)
{
#if defined(__x86_64__)
    const long n = 20000000;
    uint64_t x = 0;
    double t0 = now_s(CLOCK_THREAD_CPUTIME_ID), t;
    for (long i = 0; i < n; i++)
        __asm__ volatile("add $1, %0" : "+r"(x));
    t = now_s(CLOCK_THREAD_CPUTIME_ID) - t0;
    return t > 0 ? (double)n / t / 1e9 : 0;
#else
    return 0;
#endif
}

#define NOMINAL_GHZ 2.5 /* this machine's CPU as /proc/cpuinfo names it */

static void part1(world_t *w, int reps, int batches, double *pipeline_ns, double *glue_ns,
                  double *pipeline_cycles)
{
    double res[NSCEN][L_COUNT][64], ghz[64], cyc[NSCEN][64], ghz_sorted[64];
    double med[NSCEN][L_COUNT];
    size_t chunk_bytes[NSCEN];

    for (size_t s = 0; s < NSCEN; s++) {
        char *c = NULL;
        size_t len = 0;
        apr_pool_t *rp;
        apr_pool_create(&rp, w->conn);
        dd_gateway_t gw;
        dd_gw_status_t st = dd_gateway_parse(rp, w->templ[s], dd_now_ns() / 1000000, &gw);
        if ((st == DD_GW_OK) != scenarios[s].gateway) {
            fprintf(stderr, "scenario %s: dd_gateway_parse says %s\n", scenarios[s].name,
                    dd_gateway_status_name(st));
            exit(1);
        }
        w->req.start_ns = dd_now_ns();
        w->req.start_mono_ns = dd_mono_ns();
        dd_trace_t *t = dd_trace_start(rp, &w->conf, &w->req, st == DD_GW_OK ? &gw : NULL, NULL);
        dd_trace_sample(t, &w->conf, w->limiter, w->rates, dd_mono_ns());
        dd_trace_finish(t, dd_mono_ns(), 200, "200 OK", NULL);
        dd_trace_encode(t, &c, &len);
        chunk_bytes[s] = len;
        free(c);
        apr_pool_destroy(rp);
        for (int l = 0; l < L_COUNT; l++)
            run_level(w, (int)s, l, 2); /* warm-up */
    }
    for (int r = 0; r < reps; r++) {
        double before = clock_ghz();
        for (size_t s = 0; s < NSCEN; s++)
            for (int l = 0; l < L_COUNT; l++)
                res[s][l][r] = run_level(w, (int)s, l, batches);
        ghz[r] = (before + clock_ghz()) / 2;
        for (size_t s = 0; s < NSCEN; s++)
            cyc[s][r] = (res[s][L_ENQUEUE][r] - res[s][L_BASE][r]) * ghz[r];
    }
    for (size_t s = 0; s < NSCEN; s++)
        for (int l = 0; l < L_COUNT; l++)
            med[s][l] = median(res[s][l], reps);

    printf("== per request: ns (median of %d runs of %d requests each)\n", reps, batches * BATCH);
    printf("%-36s", "step");
    for (size_t s = 0; s < NSCEN; s++)
        printf(" %14s", scenarios[s].name);
    printf("\n");
    for (int l = 0; l < L_COUNT; l++) {
        printf("%-36s", l == L_BASE ? level_names[l]
                        : l == L_GLUE ? "glue extras (strip, extract, ids, inject)"
                                      : level_names[l]);
        for (size_t s = 0; s < NSCEN; s++) {
            double v = l == L_BASE ? med[s][l]
                       : l == L_GLUE ? med[s][L_GLUE] - med[s][L_ENQUEUE]
                                     : med[s][l] - med[s][l - 1];
            printf(" %14.0f", v);
        }
        printf("\n");
    }
    printf("%-36s", "= parse..enqueue (module, target 2000)");
    for (size_t s = 0; s < NSCEN; s++)
        printf(" %14.0f", med[s][L_ENQUEUE] - med[s][L_BASE]);
    printf("\n%-36s", "= all the glue does per request");
    for (size_t s = 0; s < NSCEN; s++)
        printf(" %14.0f", med[s][L_GLUE] - med[s][L_BASE]);
    printf("\n%-36s", "chunk bytes");
    for (size_t s = 0; s < NSCEN; s++)
        printf(" %14zu", chunk_bytes[s]);
    printf("\n");
    /* machine-readable lines for run.sh */
    for (size_t s = 0; s < NSCEN; s++) {
        printf("RESULT micro scenario=%s", scenarios[s].name[0] == 'n' ? "none" : scenarios[s].name);
        for (int l = 1; l < L_COUNT; l++)
            printf(" %s=%.0f", level_names[l],
                   l == L_GLUE ? med[s][L_GLUE] - med[s][L_ENQUEUE] : med[s][l] - med[s][l - 1]);
        printf(" pipeline=%.0f glue_total=%.0f base=%.0f chunk_bytes=%zu\n",
               med[s][L_ENQUEUE] - med[s][L_BASE], med[s][L_GLUE] - med[s][L_BASE], med[s][L_BASE],
               chunk_bytes[s]);
    }
    memcpy(ghz_sorted, ghz, sizeof(double) * (size_t)reps);
    if (ghz[0] > 0) {
        double lo = ghz[0], hi = ghz[0];
        for (int r = 1; r < reps; r++)
            lo = ghz[r] < lo ? ghz[r] : lo, hi = ghz[r] > hi ? ghz[r] : hi;
        printf("\nvCPU clock during these runs (a 1-cycle-per-iteration loop next to each "
               "repetition): median %.2f GHz (%.2f-%.2f)\n",
               median(ghz_sorted, reps), lo, hi);
        printf("%-36s", "= parse..enqueue in cycles");
        for (size_t s = 0; s < NSCEN; s++)
            printf(" %14.0f", median(cyc[s], reps));
        printf("\n%-36s", "  = ns at the nominal 2.5 GHz");
        for (size_t s = 0; s < NSCEN; s++)
            printf(" %14.0f", median(cyc[s], reps) / NOMINAL_GHZ);
        printf("\n");
        for (size_t s = 0; s < NSCEN; s++)
            printf("RESULT cycles scenario=%s pipeline_cycles=%.0f ghz=%.2f\n",
                   scenarios[s].name[0] == 'n' ? "none" : scenarios[s].name,
                   median(cyc[s], reps), median(ghz_sorted, reps));
    }
    *pipeline_ns = med[0][L_ENQUEUE] - med[0][L_BASE];
    *glue_ns = med[0][L_GLUE] - med[0][L_BASE];
    *pipeline_cycles = ghz[0] > 0 ? median(cyc[0], reps) : 0;
}

/* --- part 2: the flusher ----------------------------------------------------------------- */

typedef struct {
    size_t bytes, payloads, traces;
} counting_t;

static int counting_send(void *ctx, const char *payload, size_t len, size_t ntraces,
                         long timeout_ms, long *http_status, const char **error, const char **body,
                         size_t *body_len)
{
    counting_t *c = ctx;
    (void)payload;
    (void)timeout_ms;
    c->bytes += len;
    c->payloads++;
    c->traces += ntraces;
    *http_status = 200;
    *error = NULL;
    *body = AGENT_ANSWER; /* the flusher parses it as it would the agent's */
    *body_len = sizeof(AGENT_ANSWER) - 1;
    return 0;
}

/* The real agent client, as mod_dd_proxy.c's agent_send wraps it. */
static int agent_send(void *ctx, const char *payload, size_t len, size_t ntraces, long timeout_ms,
                      long *http_status, const char **error, const char **body, size_t *body_len)
{
    static dd_agent_result_t res;
    int rc;
    free(res.body);
    memset(&res, 0, sizeof(res));
    rc = dd_agent_send(ctx, payload, len, ntraces, timeout_ms, &res);
    *http_status = res.http_status;
    *error = res.error;
    *body = res.body;
    *body_len = res.body_len;
    return rc;
}

/* A minimal agent on 127.0.0.1: reads each request's headers and Content-Length body and
 * answers 200 with the agent's JSON. One connection at a time (libcurl keeps one open). */
typedef struct {
    int lfd;
    int port;
    size_t bytes, requests;
} sink_t;

static void *sink_main(void *arg)
{
    sink_t *s = arg;
    static char buf[1 << 16];
    char answer[256];
    int alen = snprintf(answer, sizeof(answer),
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        "Content-Length: %zu\r\n\r\n%s",
                        sizeof(AGENT_ANSWER) - 1, AGENT_ANSWER);
    for (;;) {
        int fd = accept(s->lfd, NULL, NULL);
        size_t have = 0;
        if (fd < 0)
            return NULL;
        for (;;) {
            char *end;
            ssize_t n;
            size_t body, hlen;
            while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
                if (have == sizeof(buf) ||
                    (n = read(fd, buf + have, sizeof(buf) - have)) <= 0)
                    goto closed;
                have += (size_t)n;
            }
            hlen = (size_t)(end - buf) + 4;
            char *cl = memmem(buf, hlen, "Content-Length:", 15);
            if (!cl)
                cl = memmem(buf, hlen, "content-length:", 15);
            body = cl ? strtoull(cl + 15, NULL, 10) : 0;
            s->bytes += body;
            s->requests++;
            /* skip the body: what is buffered, then read the rest */
            size_t buffered = have - hlen;
            if (buffered >= body) {
                memmove(buf, buf + hlen + body, buffered - body);
                have = buffered - body;
            } else {
                size_t left = body - buffered;
                while (left) {
                    n = read(fd, buf, left < sizeof(buf) ? left : sizeof(buf));
                    if (n <= 0)
                        goto closed;
                    left -= (size_t)n;
                }
                have = 0;
            }
            if (write(fd, answer, (size_t)alen) != (ssize_t)alen)
                goto closed;
        }
    closed:
        close(fd);
    }
}

static int sink_start(sink_t *s)
{
    struct sockaddr_in a = {0};
    socklen_t al = sizeof(a);
    pthread_t th;
    int one = 1;
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s->lfd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s->lfd, 16) != 0)
        return -1;
    getsockname(s->lfd, (struct sockaddr *)&a, &al);
    s->port = ntohs(a.sin_port);
    return pthread_create(&th, NULL, sink_main, s) == 0 ? 0 : -1;
}

/* Fills the queue with n copies of chunk (each its own malloc'd block, as requests make). */
static void fill_queue(dd_queue_t *q, const char *chunk, size_t len, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *c = malloc(len);
        memcpy(c, chunk, len);
        if (dd_queue_push(q, c, len) != DD_QUEUE_OK) {
            fprintf(stderr, "fill_queue: queue full\n");
            exit(1);
        }
    }
}

typedef struct {
    double wall_spans_s, cpu_spans_s, mb_s;
    size_t payload_bytes;
} flush_result_t;

/* Times dd_flusher_drain_once over `rounds` full queues of `items` chunks. */
static flush_result_t flush_bench(world_t *w, apr_pool_t *p, dd_sender_t sender, size_t items,
                                  int rounds, size_t max_payload, const char *chunk, size_t len,
                                  size_t *bytes_counter)
{
    dd_queue_t *q = dd_queue_create(items, 1u << 30);
    dd_flusher_conf_t fc;
    dd_flusher_t *f;
    dd_stats_t stats;
    double wall = 0, cpu = 0;
    size_t sent = 0, b0 = *bytes_counter;
    flush_result_t r;

    memset(&stats, 0, sizeof(stats));
    memset(&fc, 0, sizeof(fc));
    fc.queue = q;
    fc.sender = sender;
    fc.rates = w->rates;
    fc.stats = &stats;
    fc.interval_ms = 1000;
    fc.max_payload_bytes = max_payload;
    fc.send_timeout_ms = 10000;
    fc.stop_deadline_ms = 2000;
    if (dd_flusher_create(p, &fc, &f) != APR_SUCCESS) {
        fprintf(stderr, "dd_flusher_create failed\n");
        exit(1);
    }
    fill_queue(q, chunk, len, items); /* warm-up round */
    dd_flusher_drain_once(f, 10000);
    b0 = *bytes_counter;
    for (int i = 0; i < rounds; i++) {
        fill_queue(q, chunk, len, items);
        double t0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
        sent += dd_flusher_drain_once(f, 10000);
        cpu += now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
        wall += now_s(CLOCK_MONOTONIC) - t0;
    }
    if (sent != items * (size_t)rounds) {
        fprintf(stderr, "flusher sent %zu of %zu chunks\n", sent, items * (size_t)rounds);
        exit(1);
    }
    r.wall_spans_s = 2.0 * (double)sent / wall;
    r.cpu_spans_s = 2.0 * (double)sent / cpu;
    r.mb_s = (double)(*bytes_counter - b0) / wall / 1e6;
    r.payload_bytes = (*bytes_counter - b0) / (size_t)dd_stats_get(&stats.payloads_sent);
    dd_queue_destroy(q);
    return r;
}

static void part2(world_t *w, apr_pool_t *global, int rounds, int http, double *best_cpu)
{
    char *chunk;
    size_t len;
    apr_pool_t *rp;
    dd_gateway_t gw;
    counting_t counting = {0};
    dd_sender_t fake = {counting_send, &counting};
    flush_result_t r;

    apr_pool_create(&rp, global);
    dd_gateway_parse(rp, w->templ[0], dd_now_ns() / 1000000, &gw);
    w->req.start_ns = dd_now_ns();
    w->req.start_mono_ns = dd_mono_ns();
    dd_trace_t *t = dd_trace_start(rp, &w->conf, &w->req, &gw, NULL);
    dd_trace_sample(t, &w->conf, w->limiter, w->rates, dd_mono_ns());
    dd_trace_finish(t, dd_mono_ns(), 200, "200 OK", NULL);
    dd_trace_encode(t, &chunk, &len);

    printf("\n== flusher: dd_flusher_drain_once, chunks of 2 spans (%zu bytes), 4096 per drain\n",
           len);
    printf("%-44s %14s %14s %10s %12s\n", "sender", "spans/s wall", "spans/s 1 CPU", "MB/s",
           "payload B");
    r = flush_bench(w, rp, fake, BATCH, rounds, 4u << 20, chunk, len, &counting.bytes);
    printf("%-44s %14.0f %14.0f %10.1f %12zu\n", "fake (counts bytes), 4 MiB payloads",
           r.wall_spans_s, r.cpu_spans_s, r.mb_s, r.payload_bytes);
    printf("RESULT flusher sender=fake wall_spans_s=%.0f cpu_spans_s=%.0f mb_s=%.1f\n",
           r.wall_spans_s, r.cpu_spans_s, r.mb_s);
    *best_cpu = r.cpu_spans_s;

    if (http) {
        sink_t sink = {0};
        dd_agent_url_t url;
        const char *err;
        char base[64];
        if (sink_start(&sink) != 0) {
            fprintf(stderr, "cannot start the local sink: %s\n", strerror(errno));
            exit(1);
        }
        snprintf(base, sizeof(base), "http://127.0.0.1:%d", sink.port);
        dd_agent_url_parse(rp, base, &url, &err);
        dd_agent_global_init();
        dd_agent_t *agent = dd_agent_create(&url, "0.1.0", "2.4", NULL);
        dd_sender_t real = {agent_send, agent};
        struct {
            const char *name;
            size_t max;
        } sizes[] = {{"dd_agent_send -> 127.0.0.1 sink, 4 MiB", 4u << 20},
                     {"dd_agent_send -> 127.0.0.1 sink, 64 KiB", 64u << 10}};
        for (size_t i = 0; i < 2; i++) {
            r = flush_bench(w, rp, real, BATCH, rounds, sizes[i].max, chunk, len, &sink.bytes);
            printf("%-44s %14.0f %14.0f %10.1f %12zu\n", sizes[i].name, r.wall_spans_s,
                   r.cpu_spans_s, r.mb_s, r.payload_bytes);
            printf("RESULT flusher sender=http payload_max=%zu wall_spans_s=%.0f cpu_spans_s=%.0f "
                   "mb_s=%.1f\n",
                   sizes[i].max, r.wall_spans_s, r.cpu_spans_s, r.mb_s);
        }
        dd_agent_destroy(agent);
    }
    free(chunk);
    apr_pool_destroy(rp);
}

int main(int argc, char **argv)
{
    apr_pool_t *global;
    world_t w;
    int reps = 5, batches = 10, rounds = 100, http = 1;
    int only_scen = -1, only_level = -1, only_n = 0;
    double pipeline, glue, flush_cpu, pipeline_cycles;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            reps = 3;
            batches = 4;
            rounds = 20;
        } else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1 || reps > 64)
                reps = 7;
        } else if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc) {
            batches = atoi(argv[++i]);
            if (batches < 1)
                batches = 1;
        } else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
            rounds = atoi(argv[++i]);
            if (rounds < 1)
                rounds = 1;
        } else if (strcmp(argv[i], "--only") == 0 && i + 3 < argc) {
            /* --only SCENARIO LEVEL N: run N requests of one scenario (0..3) at one level
             * (0..7) and nothing else, for valgrind --tool=callgrind (instructions). */
            only_scen = atoi(argv[++i]);
            only_level = atoi(argv[++i]);
            only_n = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--no-http") == 0) {
            http = 0;
        } else {
            fprintf(stderr, "usage: %s [--quick] [--reps N] [--batches N] [--rounds N] [--no-http]\n", argv[0]);
            return 2;
        }
    }
    /* A batch holds 4096 chunks (5 MB) until it ends; glibc would give that memory back to the
     * kernel after every batch and fault it in again during the next one, a cost of the
     * batching (0.3 page faults per request) rather than of the code measured. */
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    apr_initialize();
    apr_pool_create(&global, NULL);
    world_init(&w, global);

    if (only_scen >= 0) {
        if (only_scen >= (int)NSCEN || only_level < 0 || only_level >= L_COUNT || only_n < 1) {
            fprintf(stderr, "--only: scenario 0..%d, level 0..%d, n >= 1\n", (int)NSCEN - 1,
                    L_COUNT - 1);
            return 2;
        }
        for (int i = 0; i < only_n; i += BATCH)
            run_level(&w, only_scen, only_level, 1);
        return 0;
    }
    part1(&w, reps, batches, &pipeline, &glue, &pipeline_cycles);
    part2(&w, global, rounds, http, &flush_cpu);

    printf("\ntargets: parse+spans+encode+enqueue %.0f ns as measured (<= 2000: %s), %.0f cycles = "
           "%.0f ns at the nominal %.1f GHz (%s); flusher %.0f spans/s on one core (>= 500000: "
           "%s)\n",
           pipeline, pipeline <= 2000 ? "met" : "MISSED", pipeline_cycles,
           pipeline_cycles / NOMINAL_GHZ, NOMINAL_GHZ,
           pipeline_cycles > 0 && pipeline_cycles / NOMINAL_GHZ <= 2000 ? "met" : "MISSED",
           flush_cpu, flush_cpu >= 500000 ? "met" : "MISSED");
    apr_pool_destroy(global);
    apr_terminate();
    return 0;
}
