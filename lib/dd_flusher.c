/* SPDX-License-Identifier: Apache-2.0 */
/* dd_flusher.c - the background thread that takes encoded chunks off the queue and delivers
 * them to the agent (CONTRACT §6).
 *
 * queue -> payload buffer -> sender. A payload is a msgpack array header followed by the
 * chunks' bytes as they are. The buffer keeps 5 bytes free in front of the chunks, so the
 * header, whose length depends on the final count, is written last, right before them, and
 * nothing is moved. The buffer is reused from one payload to the next and never grows past
 * max_payload_bytes.
 *
 * Waking up: producers must never block, so dd_flusher_wake() writes at most one byte into a
 * non-blocking pipe per wake-up (an atomic "wake pending" flag lets only the first caller
 * write); the thread polls the pipe with the time left until its next tick as the timeout.
 */
#include "dd_flusher.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <apr_errno.h>
#include <apr_thread_proc.h>
#include <apr_time.h>

#include "dd_encode.h"

#define DD_HDR_MAX 5         /* longest msgpack array header */
#define DD_BUF_INITIAL 65536 /* first size of the payload buffer */
#define DD_ROUNDS_PER_WAKE 4 /* drain rounds (each at most max_items chunks) per wake-up */
#define DD_GRACE_TICKS 200   /* 50 ms of 250 us before a stop interrupts the send in progress */

struct dd_flusher {
    dd_flusher_conf_t conf;
    apr_thread_t *thread; /* NULL for dd_flusher_create, or before the thread started */
    int wake_rd, wake_wr; /* the wake-up pipe, both ends non-blocking; -1 when closed */

    /* Producers set it (exchange, acq_rel) and only the one that turned it on writes a byte;
     * the thread empties the pipe first and then turns it off (exchange, acq_rel). The
     * exchanges pair up, so the thread sees every chunk pushed before a wake it consumed; a
     * wake that comes after the thread emptied the pipe writes a new byte. */
    atomic_bool wake_pending;
    atomic_bool stopping;
    atomic_bool stop_called; /* dd_flusher_stop is idempotent */
    /* Set by dd_flusher_stop when conf.detach hands the rest to a detached process: the thread
     * sends nothing more and keeps what it holds (the payload being built, the queue). */
    atomic_bool handoff;
    atomic_bool thread_done; /* the thread has left flusher_main's loop and is about to return */
    atomic_bool last_failed; /* the last send failed: a stop interrupts the next one at once */
    /* Monotonic milliseconds by which the final flush must be over; 0 until stop. Read before
     * every send, so a stop that arrives while the thread is sending still bounds the rest. */
    atomic_llong stop_at_ms;

    /* The consumer's alone (the thread, or the caller of dd_flusher_drain_once). */
    unsigned char *buf; /* DD_HDR_MAX free bytes, then the chunks of the payload being built */
    size_t cap;         /* allocated size of buf */
    size_t used;        /* bytes of chunks after the DD_HDR_MAX gap */
    size_t nchunks;     /* chunks in the payload being built */
    size_t max_payload_conf; /* conf.max_payload_bytes as configured (the agent may lower it) */
    unsigned failures;       /* failed sends in a row */
    long long retry_at_ms;   /* monotonic ms before which no payload is tried; 0: none */
};

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static size_t header_len(size_t n)
{
    return n < 16 ? 1 : n <= 0xFFFF ? 3 : 5;
}

/* --- the payload being built ------------------------------------------------------------- */

static int payload_fits(const dd_flusher_t *f, size_t len)
{
    size_t max = f->conf.max_payload_bytes;
    size_t hdr = header_len(f->nchunks + 1);
    return hdr <= max && f->used <= max - hdr && len <= max - hdr - f->used;
}

/* Makes room for len more bytes of chunks. The caller checked payload_fits, so the buffer
 * never needs more than DD_HDR_MAX + max_payload_bytes. */
static int payload_reserve(dd_flusher_t *f, size_t len)
{
    size_t need = DD_HDR_MAX + f->used + len;
    size_t limit = DD_HDR_MAX + f->conf.max_payload_bytes;
    size_t cap = f->cap ? f->cap : DD_BUF_INITIAL;
    unsigned char *nb;

    if (need <= f->cap) {
        return 1;
    }
    while (cap < need) {
        cap = cap > limit / 2 ? limit : cap * 2;
    }
    if (cap > limit) {
        cap = limit;
    }
    nb = realloc(f->buf, cap);
    if (nb == NULL) {
        return 0;
    }
    f->buf = nb;
    f->cap = cap;
    return 1;
}

static void drop(dd_flusher_t *f, dd_drop_reason_t why, size_t n)
{
    dd_stats_add(&f->conf.stats->chunks_dropped[why], n);
}

static int handing_off(dd_flusher_t *f)
{
    return atomic_load_explicit(&f->handoff, memory_order_acquire);
}

/* The timeout for the next send: timeout_ms, cut to what is left of the stop deadline once
 * dd_flusher_stop has set one. Returns 0 when that deadline has passed. */
static int send_timeout(dd_flusher_t *f, long timeout_ms, long *out)
{
    long long stop_at = atomic_load_explicit(&f->stop_at_ms, memory_order_acquire);
    if (stop_at != 0) {
        long long left = stop_at - now_ms();
        if (left <= 0) {
            return 0;
        }
        if (timeout_ms <= 0 || left < timeout_ms) {
            timeout_ms = (long)left;
        }
    }
    *out = timeout_ms;
    return 1;
}

long dd_flusher_backoff_ms(long min_ms, long max_ms, unsigned failures)
{
    long wait = min_ms;

    if (min_ms <= 0 || failures == 0) {
        return 0;
    }
    if (max_ms < min_ms) {
        max_ms = min_ms;
    }
    for (unsigned i = 1; i < failures && wait < max_ms; i++) {
        wait = wait > max_ms / 2 ? max_ms : wait * 2;
    }
    return wait < max_ms ? wait : max_ms;
}

/* Inside the back-off after a failure: the payload is not tried. */
static int backing_off(const dd_flusher_t *f)
{
    return f->retry_at_ms != 0 && now_ms() < f->retry_at_ms;
}

/* After a send: a success ends the back-off, a failure makes it longer. */
static void backoff_update(dd_flusher_t *f, int failed)
{
    long wait;

    if (!failed) {
        f->failures = 0;
        f->retry_at_ms = 0;
        return;
    }
    if (f->failures < 64) {
        f->failures++;
    }
    wait = dd_flusher_backoff_ms(f->conf.backoff_min_ms, f->conf.backoff_max_ms, f->failures);
    f->retry_at_ms = wait > 0 ? now_ms() + wait : 0;
}

static void record_failure(dd_flusher_t *f, size_t n, long status, const char *error)
{
    dd_stats_t *st = f->conf.stats;

    dd_stats_add(&st->agent_errors, 1);
    drop(f, DD_DROP_AGENT_ERROR, n);
    atomic_store_explicit(&st->last_agent_error_time, (int_fast64_t)time(NULL),
                          memory_order_relaxed);
    atomic_store_explicit(&st->last_agent_error_status, (int)status, memory_order_relaxed);
    if (f->conf.on_error != NULL) {
        f->conf.on_error(f->conf.on_error_ctx, status, error);
    }
}

/* Sends the payload being built, if any, and starts a new one. Returns the chunks sent. */
static size_t payload_send(dd_flusher_t *f, long timeout_ms)
{
    size_t n = f->nchunks, hlen, len;
    unsigned char hdr[DD_HDR_MAX];
    const char *payload, *error = NULL, *body = NULL;
    size_t body_len = 0;
    long status = 0, timeout;
    dd_stats_t *st = f->conf.stats;
    int rc;

    if (n == 0 || handing_off(f)) {
        return 0; /* nothing, or kept for the detached process */
    }
    len = f->used;
    f->nchunks = 0;
    f->used = 0;
    if (!send_timeout(f, timeout_ms, &timeout)) {
        drop(f, DD_DROP_AGENT_ERROR, n); /* the stop deadline passed: no time left to send */
        return 0;
    }
    if (backing_off(f)) {
        drop(f, DD_DROP_AGENT_ERROR, n); /* the agent failed a moment ago: not tried again yet */
        return 0;
    }

    hlen = dd_encode_array_header(n, hdr);
    memcpy(f->buf + DD_HDR_MAX - hlen, hdr, hlen);
    payload = (const char *)f->buf + DD_HDR_MAX - hlen;
    len += hlen;

    rc = f->conf.sender.send(f->conf.sender.ctx, payload, len, n, timeout, &status, &error, &body,
                             &body_len);
    if (rc != 0) {
        if (handing_off(f) && rc == DD_SEND_UNDELIVERED) {
            /* Interrupted by the stop before the agent had it all: the chunks are still in
             * buf, for the detached process. (Sent whole, its fate is unknown: counted as
             * dropped below, rather than risk sending a trace twice.) */
            f->nchunks = n;
            f->used = len - hlen;
            return 0;
        }
        atomic_store_explicit(&f->last_failed, true, memory_order_relaxed);
        backoff_update(f, 1);
        record_failure(f, n, status, error);
        return 0;
    }
    atomic_store_explicit(&f->last_failed, false, memory_order_relaxed);
    backoff_update(f, 0);
    dd_stats_add(&st->chunks_sent, n);
    dd_stats_add(&st->payloads_sent, 1);
    dd_stats_add(&st->bytes_sent, len);
    if (f->conf.rates != NULL && body != NULL && body_len > 0) {
        unsigned rejected = 0;
        if (dd_rates_update_json(f->conf.rates, body, body_len, &rejected) != 0)
            rejected++; /* not a JSON object at all: one answer ignored */
        dd_stats_add(&st->agent_rates_rejected, rejected);
    }
    return n;
}

/* Adds one popped chunk to the payload being built (sending that payload first when the chunk
 * does not fit) and frees it. Returns the chunks sent on the way. */
static size_t payload_add(dd_flusher_t *f, char *data, size_t len, long timeout_ms)
{
    size_t sent = 0;

    if (header_len(1) > f->conf.max_payload_bytes ||
        len > f->conf.max_payload_bytes - header_len(1)) {
        drop(f, DD_DROP_ENCODE_ERROR, 1); /* could never be sent: over the payload limit */
        free(data);
        return 0;
    }
    if (!payload_fits(f, len)) {
        sent += payload_send(f, timeout_ms);
        if (!payload_fits(f, len)) { /* kept for a hand-off: the chunk goes back to the queue */
            if (dd_queue_push(f->conf.queue, data, len) != DD_QUEUE_OK) {
                drop(f, DD_DROP_QUEUE_FULL, 1);
                free(data);
            }
            return sent;
        }
    }
    if (!payload_reserve(f, len)) {
        /* Out of memory: send what we have, which leaves more room, and try once more. */
        sent += payload_send(f, timeout_ms);
        if (!payload_reserve(f, len)) {
            drop(f, DD_DROP_ENCODE_ERROR, 1);
            free(data);
            return sent;
        }
    }
    memcpy(f->buf + DD_HDR_MAX + f->used, data, len);
    f->used += len;
    f->nchunks++;
    free(data);
    return sent;
}

/* --- draining ---------------------------------------------------------------------------- */

/* One round: pops at most max_items chunks (so producers that keep pushing cannot keep the
 * round going forever), sends them in payloads, and returns the chunks sent. *popped tells
 * how many came off the queue. */
static size_t drain_round(dd_flusher_t *f, long timeout_ms, size_t *popped)
{
    size_t limit = dd_queue_max_items(f->conf.queue), n = 0, sent = 0, len;
    char *data;

    while (n < limit && !handing_off(f) && dd_queue_pop(f->conf.queue, &data, &len)) {
        n++;
        sent += payload_add(f, data, len, timeout_ms);
    }
    sent += payload_send(f, timeout_ms);
    *popped = n;
    return sent;
}

void dd_flusher_set_max_payload(dd_flusher_t *f, size_t max)
{
    if (f == NULL) {
        return;
    }
    if (max < 64 || max > f->max_payload_conf) {
        max = f->max_payload_conf; /* nonsense, or more than httpd's configuration allows */
    }
    if (f->used == 0) {
        f->conf.max_payload_bytes = max; /* between payloads: nothing to re-split */
    }
}

size_t dd_flusher_drain_once(dd_flusher_t *f, long timeout_ms)
{
    size_t popped;
    return drain_round(f, timeout_ms, &popped);
}

static void run_tick(dd_flusher_t *f, int final)
{
    if (f->conf.tick != NULL) {
        f->conf.tick(f->conf.tick_ctx, f, final);
    }
}

/* On stop: rounds until the queue is empty. Once the deadline has passed, rounds only drop
 * (payload_send sees no time left), and one such round is the last. A back-off in progress
 * does not hold the first payload back (one more try before the chunks are gone); a failure
 * of that one holds the rest back. The caller runs the final tick. */
static void final_drain(dd_flusher_t *f)
{
    long long stop_at = atomic_load_explicit(&f->stop_at_ms, memory_order_acquire);
    int past_deadline;
    size_t popped;

    f->retry_at_ms = 0;

    do {
        past_deadline = now_ms() >= stop_at;
        drain_round(f, f->conf.send_timeout_ms, &popped);
    } while (popped > 0 && !past_deadline);
}

/* --- the thread -------------------------------------------------------------------------- */

/* Empties the pipe, then lets the next dd_flusher_wake() write again. In that order: a wake
 * that lands in between finds the flag still set and writes nothing, but its chunks are
 * already visible to the drain that follows (the exchange below reads its exchange). */
static void consume_wake(dd_flusher_t *f)
{
    char tmp[64];
    while (read(f->wake_rd, tmp, sizeof(tmp)) > 0) {
    }
    atomic_exchange_explicit(&f->wake_pending, false, memory_order_acq_rel);
}

static void *APR_THREAD_FUNC flusher_main(apr_thread_t *t, void *data)
{
    dd_flusher_t *f = data;
    long long next = now_ms() + f->conf.interval_ms;

    pthread_setname_np(pthread_self(), "dd-flusher"); /* for top, perf and the benchmarks */
    if (f->conf.on_start != NULL) {
        f->conf.on_start(f->conf.tick_ctx, f);
    }

    while (!atomic_load_explicit(&f->stopping, memory_order_acquire)) {
        struct pollfd pfd = {.fd = f->wake_rd, .events = POLLIN, .revents = 0};
        long long wait = next - now_ms();
        int woken = 0;

        if (wait < 0) {
            wait = 0;
        }
        if (poll(&pfd, 1, wait > INT32_MAX ? INT32_MAX : (int)wait) > 0) {
            consume_wake(f);
            woken = 1;
        }
        if (atomic_load_explicit(&f->stopping, memory_order_acquire)) {
            break;
        }
        if (!woken && now_ms() < next) {
            continue; /* EINTR, or a poll that returned early */
        }
        /* Inside a back-off the chunks wait in the queue (its bounds apply: what does not fit
         * is counted queue_full), so an agent that is back within the wait loses nothing. */
        for (int round = 0; round < DD_ROUNDS_PER_WAKE && !backing_off(f); round++) {
            size_t popped;
            drain_round(f, f->conf.send_timeout_ms, &popped);
            if (popped == 0 || dd_queue_count(f->conf.queue) == 0 ||
                atomic_load_explicit(&f->stopping, memory_order_acquire)) {
                break;
            }
        }
        run_tick(f, 0);
        next = now_ms() + f->conf.interval_ms;
        if (f->retry_at_ms != 0 && f->retry_at_ms > now_ms() && f->retry_at_ms < next)
            next = f->retry_at_ms; /* the wait ends before the interval does */
    }
    if (!handing_off(f)) {
        final_drain(f);
    }
    run_tick(f, 1); /* X-Ray's last datagrams: quick, and from this process alone */
    atomic_store_explicit(&f->thread_done, true, memory_order_release);
    /* Returning ends the thread as well as apr_thread_exit() would, without pthread_exit()'s
     * forced unwinding (which AddressSanitizer mistakes for stack misuse). */
    (void)t;
    return NULL;
}

/* --- life cycle -------------------------------------------------------------------------- */

static void close_pipe(dd_flusher_t *f)
{
    if (f->wake_rd >= 0) {
        close(f->wake_rd);
        f->wake_rd = -1;
    }
    if (f->wake_wr >= 0) {
        close(f->wake_wr);
        f->wake_wr = -1;
    }
}

/* A pre-cleanup: it runs before the pool destroys its subpools, the thread's among them. */
static apr_status_t flusher_cleanup(void *data)
{
    dd_flusher_t *f = data;

    dd_flusher_stop(f);
    close_pipe(f);
    free(f->buf);
    f->buf = NULL;
    f->cap = 0;
    return APR_SUCCESS;
}

static int set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    int fdfl = fcntl(fd, F_GETFD);
    return fl >= 0 && fdfl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0 &&
           fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) == 0;
}

int dd_flusher_create(apr_pool_t *p, const dd_flusher_conf_t *conf, dd_flusher_t **out)
{
    dd_flusher_t *f;
    int fds[2];

    *out = NULL;
    if (conf == NULL || conf->queue == NULL || conf->stats == NULL || conf->sender.send == NULL ||
        conf->interval_ms < 1 || conf->max_payload_bytes < 1) {
        return APR_EINVAL;
    }
    f = apr_pcalloc(p, sizeof(*f));
    f->conf = *conf;
    if (f->conf.stop_deadline_ms < 0) {
        f->conf.stop_deadline_ms = 0;
    }
    if (f->conf.max_payload_bytes > SIZE_MAX / 4) {
        f->conf.max_payload_bytes = SIZE_MAX / 4; /* keeps the buffer arithmetic in range */
    }
    f->max_payload_conf = f->conf.max_payload_bytes;
    f->wake_rd = f->wake_wr = -1;
    atomic_init(&f->wake_pending, false);
    atomic_init(&f->stopping, false);
    atomic_init(&f->stop_called, false);
    atomic_init(&f->handoff, false);
    atomic_init(&f->thread_done, false);
    atomic_init(&f->last_failed, false);
    atomic_init(&f->stop_at_ms, 0);
    if (pipe(fds) != 0) {
        return APR_FROM_OS_ERROR(errno);
    }
    f->wake_rd = fds[0];
    f->wake_wr = fds[1];
    if (!set_flags(f->wake_rd) || !set_flags(f->wake_wr)) {
        int err = errno;
        close_pipe(f);
        return APR_FROM_OS_ERROR(err);
    }
    apr_pool_pre_cleanup_register(p, f, flusher_cleanup);
    *out = f;
    return APR_SUCCESS;
}

int dd_flusher_start(apr_pool_t *p, const dd_flusher_conf_t *conf, dd_flusher_t **out)
{
    dd_flusher_t *f;
    sigset_t all, old;
    apr_status_t rv;

    rv = dd_flusher_create(p, conf, &f);
    if (rv != APR_SUCCESS) {
        *out = NULL;
        return rv;
    }
    /* The thread starts with every asynchronous signal blocked, so signals meant for the
     * process (httpd's SIGTERM, SIGHUP...) go to the threads that expect them, never to this
     * one. Synchronous signals stay unblocked (as apr_setup_signal_thread does): a fault here
     * must reach the installed handler (AddressSanitizer's report, httpd's core dump); a
     * blocked SIGSEGV is forced to its default action and the process just dies silently. */
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGABRT);
    sigdelset(&all, SIGTRAP);
    sigdelset(&all, SIGSYS);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rv = apr_thread_create(&f->thread, NULL, flusher_main, f, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rv != APR_SUCCESS) {
        /* Make the pool cleanup's stop a no-op: this flusher never consumed anything. */
        f->thread = NULL;
        atomic_store(&f->stop_called, true);
        *out = NULL;
        return rv;
    }
    *out = f;
    return APR_SUCCESS;
}

void dd_flusher_wake(dd_flusher_t *f)
{
    if (f == NULL) {
        return;
    }
    if (!atomic_exchange_explicit(&f->wake_pending, true, memory_order_acq_rel)) {
        ssize_t w = write(f->wake_wr, "w", 1); /* non-blocking; a full pipe wakes anyway */
        (void)w;
    }
}

/* In the detached process: a new sender, a new deadline, the final drain. alarm() bounds its
 * life whatever happens (a lock some other thread of the child held at fork time, say). */
static void detached_flush(dd_flusher_t *f)
{
    sigset_t alrm;
    size_t left = f->nchunks + dd_queue_count(f->conf.queue);

    /* httpd signals its whole process group at a restart or stop (prefork: SIGUSR1, SIGHUP,
     * SIGTERM, SIGWINCH): they are for the children, and this process ends by itself. */
    signal(SIGUSR1, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGWINCH, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, SIG_DFL);
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    sigprocmask(SIG_UNBLOCK, &alrm, NULL);
    alarm((unsigned)(f->conf.stop_deadline_ms / 1000) + 2);
    atomic_store_explicit(&f->handoff, false, memory_order_release);
    if (f->conf.detach(f->conf.detach_ctx, &f->conf.sender) != 0) {
        drop(f, DD_DROP_AGENT_ERROR, left);
        return;
    }
    atomic_store_explicit(&f->stop_at_ms, now_ms() + f->conf.stop_deadline_ms,
                          memory_order_release);
    final_drain(f);
}

/* After the thread is joined: what it kept goes to a grandchild (the intermediate child exits
 * at once, so this process waits for nothing and the grandchild is nobody's to reap but
 * init's). This process forgets the chunks; the queue's copies are freed with the queue. */
static void hand_off(dd_flusher_t *f)
{
    size_t left = f->nchunks + dd_queue_count(f->conf.queue);
    pid_t pid;

    if (left == 0) {
        return;
    }
    pid = fork();
    if (pid < 0) { /* no process to hand it to: send it here, as without detach */
        atomic_store_explicit(&f->handoff, false, memory_order_release);
        final_drain(f);
        return;
    }
    if (pid == 0) {
        if (fork() > 0) {
            _exit(0);
        }
        detached_flush(f); /* in the grandchild, or here when the second fork failed */
        _exit(0);
    }
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    dd_stats_add(&f->conf.stats->exit_flushes_detached, 1);
    dd_stats_add(&f->conf.stats->exit_chunks_handed_off, left);
    f->nchunks = 0;
    f->used = 0;
}

void dd_flusher_stop(dd_flusher_t *f)
{
    apr_status_t rv;
    ssize_t w;
    int detach, grace;

    if (f == NULL || atomic_exchange(&f->stop_called, true)) {
        return;
    }
    detach = f->conf.detach != NULL && f->thread != NULL;
    if (detach) {
        atomic_store_explicit(&f->handoff, true, memory_order_release);
    }
    atomic_store_explicit(&f->stop_at_ms, now_ms() + f->conf.stop_deadline_ms,
                          memory_order_release);
    atomic_store_explicit(&f->stopping, true, memory_order_release);
    if (f->thread == NULL) {
        final_drain(f); /* no thread: the caller is the consumer */
        run_tick(f, 1);
        return;
    }
    /* Straight to the pipe, past wake_pending: that flag may be set by a wake-up whose byte
     * the thread has already read. */
    w = write(f->wake_wr, "s", 1);
    (void)w;
    /* an agent whose last answer was a failure gets no grace: it is not answering now */
    grace = atomic_load_explicit(&f->last_failed, memory_order_relaxed) ? 0 : DD_GRACE_TICKS;
    /* A hand-off interrupts the send in progress, again until the thread is out: a send that
     * began just after one interrupt is ended by the next. */
    for (int i = 0; detach && f->conf.interrupt != NULL &&
                    !atomic_load_explicit(&f->thread_done, memory_order_acquire);
         i++) {
        if (i >= grace && i % 20 == 0) { /* a healthy agent answers within the grace */
            f->conf.interrupt(f->conf.sender.ctx);
        }
        apr_sleep(250); /* µs: a child's exit is what a prefork restart waits for */
    }
    apr_thread_join(&rv, f->thread);
    if (detach) {
        hand_off(f);
    }
}
