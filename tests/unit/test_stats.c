/* SPDX-License-Identifier: Apache-2.0 */
/* test_stats.c - the counters as JSON, and the last agent error's text. */
#include "unit.h"
#include "dd_stats.h"
#include "dd_util.h"

#include <stdlib.h>
#include <jansson.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* A child that dies while it holds the last-error lock (here: it crashes reading the text it
 * was given, half of which lies on an unreadable page) must not leave the text frozen for
 * everyone else: the lock is taken over (issue 16 item 7). */
static void test_holder_dies(void)
{
    long page = sysconf(_SC_PAGESIZE);
    dd_stats_t *s =
        mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    char *two =
        mmap(NULL, (size_t)page * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char text[sizeof(s->last_agent_error)];
    int status = 0;
    pid_t pid;

    CHECK(s != MAP_FAILED && two != MAP_FAILED);
    if (s == MAP_FAILED || two == MAP_FAILED)
        return;
    memset(s, 0, sizeof(*s));
    memset(two, 'x', (size_t)page); /* no NUL before the unreadable page */
    CHECK(mprotect(two + page, (size_t)page, PROT_NONE) == 0);
    pid = fork();
    if (pid == 0) {
        FILE *quiet = freopen("/dev/null", "w", stderr); /* a sanitizer's crash report */
        (void)quiet;
        dd_stats_set_error_text(s, two + page - 10); /* dies inside, holding the lock */
        _exit(0);
    }
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(!(WIFEXITED(status) && WEXITSTATUS(status) == 0)); /* it did crash */
    dd_stats_set_error_text(s, "after the crash");
    dd_stats_get_error_text(s, text, sizeof(text));
    CHECK_STR(text, "after the crash");

    /* a live holder (pid 1) keeps the lock while it is fresh, loses it past the bound */
    uint64_t now = (uint64_t)(dd_mono_ms() / 1000);
    atomic_store(&s->last_agent_error_lock, (1ULL << 32) | now);
    dd_stats_set_error_text(s, "while held");
    CHECK(atomic_load(&s->last_agent_error_lock) == ((1ULL << 32) | now));
    atomic_store(&s->last_agent_error_lock, (1ULL << 32) | (now - DD_STATS_LOCK_STEAL_S - 1));
    dd_stats_set_error_text(s, "taken over");
    CHECK(atomic_load(&s->last_agent_error_lock) == 0);
    dd_stats_get_error_text(s, text, sizeof(text));
    CHECK_STR(text, "taken over");
    munmap(two, (size_t)page * 2);
    munmap(s, sizeof(*s));
}

int main(void)
{
    static dd_stats_t s; /* zeroed, as shared memory is */
    char text[sizeof(s.last_agent_error)];
    json_error_t err;

    dd_stats_add(&s.requests_traced, 3);
    dd_stats_add(&s.gateway_rejected[DD_GW_BAD_TIME], 2);
    dd_stats_add(&s.chunks_dropped[DD_DROP_QUEUE_FULL], 5);
    atomic_store(&s.last_agent_error_time, 1700000000);
    atomic_store(&s.last_agent_error_status, 503);
    dd_stats_set_error_text(&s, "HTTP 503");
    dd_stats_get_error_text(&s, text, sizeof(text));
    CHECK_STR(text, "HTTP 503");

    char *out = dd_stats_to_json(&s);
    CHECK(out != NULL);
    json_t *j = out ? json_loads(out, 0, &err) : NULL;
    CHECK(j != NULL);
    if (j) {
        CHECK(json_integer_value(json_object_get(j, "requests_traced")) == 3);
        json_t *rej = json_object_get(j, "gateway_headers_rejected");
        CHECK(json_integer_value(json_object_get(rej, "bad_time")) == 2);
        CHECK(json_object_get(rej, "ok") == NULL && json_object_get(rej, "absent") == NULL);
        CHECK(json_object_get(rej, "untrusted_peer") != NULL);
        json_t *drop = json_object_get(j, "chunks_dropped");
        CHECK(json_integer_value(json_object_get(drop, "queue_full")) == 5);
        json_t *last = json_object_get(j, "last_agent_error");
        CHECK(json_integer_value(json_object_get(last, "http_status")) == 503);
        CHECK(json_integer_value(json_object_get(last, "time")) == 1700000000);
        CHECK_STR(json_string_value(json_object_get(last, "message")), "HTTP 503");
        json_decref(j);
    }
    free(out);

    /* an over-long or non-UTF-8 error text never breaks the document */
    char longer[400];
    memset(longer, 'x', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    dd_stats_set_error_text(&s, longer);
    dd_stats_get_error_text(&s, text, sizeof(text));
    CHECK(strlen(text) == sizeof(text) - 1);
    dd_stats_set_error_text(&s, "bad \xff byte");
    out = dd_stats_to_json(&s);
    CHECK(out != NULL);
    free(out);
    test_holder_dies();
    UNIT_DONE();
}
