/* SPDX-License-Identifier: MIT */
/*
 * test.h - the unit test harness: TEST(name) defines a test, listed in
 * test_list.h; assertions print both sides and end the (forked) test.
 */
#ifndef PLANE_TEST_H
#define PLANE_TEST_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define TEST(name)                                                                                      \
    void test_##name(void);                                                                             \
    void test_##name(void)

void test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4), noreturn));

#define ASSERT_TRUE(c)                                                                                  \
    do {                                                                                                \
        if (!(c))                                                                                       \
            test_fail(__FILE__, __LINE__, "expected true: %s", #c);                                     \
    } while (0)
#define ASSERT_FALSE(c) ASSERT_TRUE(!(c))
#define ASSERT_EQ(a, b)                                                                                 \
    do {                                                                                                \
        long long a_ = (long long)(a), b_ = (long long)(b);                                             \
        if (a_ != b_)                                                                                   \
            test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, a_, b_);                    \
    } while (0)
#define ASSERT_NE(a, b)                                                                                 \
    do {                                                                                                \
        long long a_ = (long long)(a), b_ = (long long)(b);                                             \
        if (a_ == b_)                                                                                   \
            test_fail(__FILE__, __LINE__, "%s != %s: both %lld", #a, #b, a_);                           \
    } while (0)
#define ASSERT_OK(rc) ASSERT_EQ((rc), 0)
#define ASSERT_STR_EQ(a, b)                                                                             \
    do {                                                                                                \
        const char *a_ = (a), *b_ = (b);                                                                \
        if (!a_ || !b_ || strcmp(a_, b_) != 0)                                                          \
            test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)",     \
                      b_ ? b_ : "(null)");                                                              \
    } while (0)
#define ASSERT_CONTAINS(hay, needle)                                                                    \
    do {                                                                                                \
        const char *h_ = (hay), *n_ = (needle);                                                         \
        if (!h_ || !strstr(h_, n_))                                                                     \
            test_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_);    \
    } while (0)
#define ASSERT_NULL(p) ASSERT_TRUE((p) == NULL)
#define ASSERT_NOT_NULL(p) ASSERT_TRUE((p) != NULL)

/* Runs loop until cond(arg) is true; false if ms passed first. */
bool test_run_until(uv_loop_t *loop, unsigned ms, bool (*cond)(void *arg), void *arg);
/* Runs loop for ms milliseconds. */
void test_run_for(uv_loop_t *loop, unsigned ms);
/* A fresh empty directory under /tmp; owned by caller. */
char *test_tmpdir(void);
/*
 * HTTP/1.1 GET to 127.0.0.1:port with extra header lines ("Name: v\r\n..."),
 * made from a thread while loop runs (the server may live on it). 0 or -errno;
 * body is owned by the caller.
 */
int test_http_get(uv_loop_t *loop, unsigned port, const char *path, const char *headers, int *status,
                  char **body);

#endif
