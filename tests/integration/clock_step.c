/* SPDX-License-Identifier: Apache-2.0 */
/* clock_step.c - an LD_PRELOAD shim for test_215_clock_steps.py: steps the wall clock of the
 * process it is loaded into (and its children) without touching the machine's clock.
 *
 * CLOCK_REALTIME (and its coarse variant), gettimeofday() and time() return the real value
 * plus an offset in nanoseconds, read on every call from the first 8 bytes of the file named
 * by DD_TEST_CLOCK_STEP_FILE (mapped shared, so the test changes it while httpd runs).
 * CLOCK_MONOTONIC and every other clock are left alone, as a real clock step leaves them. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static int (*real_clock_gettime)(clockid_t, struct timespec *);
static volatile const int64_t *offset_ns;

__attribute__((constructor)) static void clock_step_init(void)
{
    const char *path = getenv("DD_TEST_CLOCK_STEP_FILE");
    int fd;
    void *m;

    if (!real_clock_gettime)
        real_clock_gettime =
            (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    if (!path || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return;
    m = mmap(NULL, sizeof(int64_t), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m != MAP_FAILED)
        offset_ns = m;
}

static int64_t offset(void)
{
    return offset_ns ? *offset_ns : 0;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    int rc;
    if (!real_clock_gettime) /* called before the constructor (a sanitizer runtime's start) */
        real_clock_gettime =
            (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    rc = real_clock_gettime(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)) {
        int64_t ns = (int64_t)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset();
        ts->tv_sec = (time_t)(ns / 1000000000LL);
        ts->tv_nsec = (long)(ns % 1000000000LL);
    }
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz)
{
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return -1;
    if (tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t)
        *t = ts.tv_sec;
    return ts.tv_sec;
}
