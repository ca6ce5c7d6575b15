/* SPDX-License-Identifier: MIT */
/*
 * test_main.c - the unit test runner. Each test runs in a forked child and
 * is killed after a timeout, since event-loop code hangs rather than
 * crashes. `unit_tests [NAME...]` runs the named tests (or substrings of
 * names) only. The last line is "N passed, N failed".
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../src/common/buf.h"
#include "../../src/common/log.h"
#include "../../src/common/xalloc.h"
#include "../../src/drone/fence.h"
#include "test.h"
#include "test_list.h"

#define X(name) void test_##name(void);
TEST_LIST(X)
#undef X

static const struct {
    const char *name;
    void (*fn)(void);
} tests[] = {
#define X(name) {#name, test_##name},
    TEST_LIST(X)
#undef X
};

void test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "  FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

struct until {
    bool (*cond)(void *arg);
    void *arg;
    bool met;
};

static void until_check(uv_check_t *h)
{
    struct until *u = h->data;

    if (u->cond(u->arg)) {
        u->met = true;
        uv_stop(h->loop);
    }
}

static void until_timeout(uv_timer_t *t)
{
    uv_stop(t->loop);
}

static void until_poll(uv_timer_t *t)
{
    struct until *u = t->data;

    if (u->cond(u->arg)) {
        u->met = true;
        uv_stop(t->loop);
    }
}

bool test_run_until(uv_loop_t *loop, unsigned ms, bool (*cond)(void *arg), void *arg)
{
    struct until u = {cond, arg, false};
    uv_timer_t deadline, poll_timer;
    uv_check_t check;

    if (cond(arg))
        return true;
    uv_timer_init(loop, &deadline);
    uv_timer_init(loop, &poll_timer);
    uv_check_init(loop, &check);
    check.data = &u;
    poll_timer.data = &u;
    uv_timer_start(&deadline, until_timeout, ms, 0);
    uv_timer_start(&poll_timer, until_poll, 1, 1);
    uv_check_start(&check, until_check);
    while (!u.met) {
        uv_run(loop, UV_RUN_DEFAULT);
        if (!uv_is_active((uv_handle_t *)&deadline))
            break;
    }
    uv_close((uv_handle_t *)&deadline, NULL);
    uv_close((uv_handle_t *)&poll_timer, NULL);
    uv_close((uv_handle_t *)&check, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    return u.met || cond(arg);
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

void test_run_for(uv_loop_t *loop, unsigned ms)
{
    test_run_until(loop, ms, never, NULL);
}

char *test_tmpdir(void)
{
    char *d = xstrdup("/tmp/plane-unit-XXXXXX");

    if (!mkdtemp(d))
        test_fail(__FILE__, __LINE__, "mkdtemp: %s", strerror(errno));
    return d;
}

static int http_get_blocking(unsigned port, const char *path, const char *headers, int *status, char **body)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    struct buf req = BUF_INIT, resp = BUF_INIT;
    char chunk[4096];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ssize_t n;

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
        close(fd);
        return -errno;
    }
    buf_printf(&req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n%s\r\n", path, port,
               headers ? headers : "");
    if (write(fd, req.data, req.len) != (ssize_t)req.len) {
        close(fd);
        buf_release(&req);
        return -EIO;
    }
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (poll(&pfd, 1, 5000) == 1 && (n = read(fd, chunk, sizeof(chunk))) > 0)
        buf_append(&resp, chunk, (size_t)n);
    close(fd);
    buf_release(&req);
    *status = 0;
    sscanf(buf_cstr(&resp), "HTTP/1.%*d %d", status);
    const char *b = strstr(buf_cstr(&resp), "\r\n\r\n");
    *body = xstrdup(b ? b + 4 : "");
    buf_release(&resp);
    return 0;
}

struct http_job {
    unsigned port;
    const char *path, *headers;
    int *status;
    char **body;
    int rc;
    volatile int done;
};

static void *http_thread(void *arg)
{
    struct http_job *j = arg;

    j->rc = http_get_blocking(j->port, j->path, j->headers, j->status, j->body);
    __atomic_store_n(&j->done, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static bool http_done(void *arg)
{
    return __atomic_load_n(&((struct http_job *)arg)->done, __ATOMIC_SEQ_CST);
}

int test_http_get(uv_loop_t *loop, unsigned port, const char *path, const char *headers, int *status, char **body)
{
    struct http_job j = {port, path, headers, status, body, 0, 0};
    pthread_t t;

    if (!loop)
        return http_get_blocking(port, path, headers, status, body);
    pthread_create(&t, NULL, http_thread, &j);
    test_run_until(loop, 10000, http_done, &j);
    pthread_join(t, NULL);
    return j.rc;
}

static bool selected(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]))
            return true;
    return false;
}

int main(int argc, char **argv)
{
    const char *t = getenv("UNIT_TIMEOUT");
    int timeout = t ? atoi(t) : 20;
    int passed = 0, failed = 0;

    /* The fence tests start this runner as the lease fence's keeper (as the drone starts plane). */
    if (argc == 2 && strcmp(argv[1], "fence-keeper") == 0)
        return fence_keeper_main(1, argv + 1);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IONBF, 0);
    for (size_t i = 0; i < ARRAY_SIZE(tests); i++) {
        if (!selected(tests[i].name, argc, argv))
            continue;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pid_t pid = fork();
        if (pid == 0) {
            setpgid(0, 0);
            setenv("PLANE_LOG", "warn", 0);
            log_init("unit");
            alarm((unsigned)timeout);
            tests[i].fn();
            exit(0);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        kill(-pid, SIGKILL); /* anything the test left behind */
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            passed++;
            printf("ok   %-50s %5ld ms\n", tests[i].name, ms);
        } else {
            failed++;
            if (WIFSIGNALED(st))
                printf("FAIL %-50s (signal %d%s)\n", tests[i].name, WTERMSIG(st),
                       WTERMSIG(st) == SIGALRM ? ", timed out" : "");
            else
                printf("FAIL %-50s (exit %d)\n", tests[i].name, WEXITSTATUS(st));
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
