/*
 * A tiny test runner for the unit tests (libuv's task.h style): each ASSERT prints both
 * operands and the location, counts the failure and returns from the test function. Each test
 * file has a main() that runs its tests with SB_RUN and ends with SB_TEST_SUMMARY().
 */
#ifndef SB_TEST_H
#define SB_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int sb_test_failures;
static int sb_test_passed;
static int sb_test_current_failed;

#define SB__FAIL(...)                                                                              \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        sb_test_current_failed = 1;                                                                \
        return;                                                                                    \
    } while (0)

#define ASSERT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond))                                                                               \
            SB__FAIL("assertion failed: %s", #cond);                                               \
    } while (0)

#define ASSERT_EQ(a, b)                                                                            \
    do {                                                                                           \
        long long sb__a = (long long)(a), sb__b = (long long)(b);                                  \
        if (sb__a != sb__b)                                                                        \
            SB__FAIL("%s == %s: %lld != %lld", #a, #b, sb__a, sb__b);                              \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *sb__a = (a), *sb__b = (b);                                                     \
        if (sb__a == NULL || sb__b == NULL || strcmp(sb__a, sb__b) != 0)                           \
            SB__FAIL("%s == %s: \"%s\" != \"%s\"", #a, #b, sb__a ? sb__a : "(null)",               \
                     sb__b ? sb__b : "(null)");                                                    \
    } while (0)

#define ASSERT_MEM_EQ(a, alen, b, blen)                                                            \
    do {                                                                                           \
        size_t sb__al = (alen), sb__bl = (blen);                                                   \
        if (sb__al != sb__bl || memcmp((a), (b), sb__al) != 0)                                     \
            SB__FAIL("%s == %s: \"%.*s\" != \"%.*s\"", #a, #b, (int)sb__al, (const char *)(a),     \
                     (int)sb__bl, (const char *)(b));                                              \
    } while (0)

#define SB_RUN(fn)                                                                                 \
    do {                                                                                           \
        sb_test_current_failed = 0;                                                                \
        fn();                                                                                      \
        if (sb_test_current_failed) {                                                              \
            fprintf(stderr, "FAIL %s\n", #fn);                                                     \
            sb_test_failures++;                                                                    \
        } else {                                                                                   \
            sb_test_passed++;                                                                      \
        }                                                                                          \
    } while (0)

#define SB_TEST_SUMMARY()                                                                          \
    (printf("%d passed, %d failed\n", sb_test_passed, sb_test_failures), sb_test_failures != 0)

#endif
