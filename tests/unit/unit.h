/* SPDX-License-Identifier: Apache-2.0 */
/* unit.h - the smallest test harness that can fail: CHECK records a failure with its line and
 * goes on; each test file's main() ends with UNIT_DONE(), which prints a summary line and
 * returns non-zero when anything failed. */
#ifndef UNIT_H
#define UNIT_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int unit_failures;
static int unit_checks;

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        unit_checks++;                                                                         \
        if (!(cond)) {                                                                         \
            unit_failures++;                                                                   \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);           \
        }                                                                                      \
    } while (0)

#define CHECK_STR(a, b)                                                                        \
    do {                                                                                       \
        const char *unit_a_ = (a), *unit_b_ = (b);                                             \
        unit_checks++;                                                                         \
        if ((unit_a_ == NULL) != (unit_b_ == NULL) ||                                          \
            (unit_a_ && strcmp(unit_a_, unit_b_) != 0)) {                                      \
            unit_failures++;                                                                   \
            fprintf(stderr, "%s:%d: CHECK_STR failed: %s == \"%s\", expected \"%s\"\n",       \
                    __FILE__, __LINE__, #a, unit_a_ ? unit_a_ : "(null)",                      \
                    unit_b_ ? unit_b_ : "(null)");                                             \
        }                                                                                      \
    } while (0)

#define CHECK_U64(a, b)                                                                        \
    do {                                                                                       \
        uint64_t unit_a_ = (uint64_t)(a), unit_b_ = (uint64_t)(b);                             \
        unit_checks++;                                                                         \
        if (unit_a_ != unit_b_) {                                                              \
            unit_failures++;                                                                   \
            fprintf(stderr, "%s:%d: CHECK_U64 failed: %s == %" PRIu64 ", expected %" PRIu64    \
                            "\n",                                                              \
                    __FILE__, __LINE__, #a, unit_a_, unit_b_);                                 \
        }                                                                                      \
    } while (0)

#define UNIT_DONE()                                                                            \
    do {                                                                                       \
        printf("%s: %d checks, %d failed\n", __FILE__, unit_checks, unit_failures);           \
        return unit_failures ? 1 : 0;                                                          \
    } while (0)

#endif
