/* SPDX-License-Identifier: MIT */
/*
 * ready_probe.c - the §14.8 readiness probe on libuv (see ready_probe.h).
 * One attempt at a time: connect, write the HEAD request, read 5 bytes. A
 * libuv timer bounds each attempt to 1 s; retries are spaced by a timerfd,
 * because libuv timers count whole milliseconds and a backend that starts
 * in 1 ms should not be found ready 2 ms later.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/net.h"
#include "../common/xalloc.h"
#include "ready_probe.h"

#define ATTEMPT_TIMEOUT_MS 1000 /* §14.8: 1 s read timeout */
#define MIN_RETRY_US 200
#define MAX_RETRY_US 100000 /* §14.8 poll interval */

static const char probe_request[] = "HEAD / HTTP/1.1\r\nHost: localhost\r\n\r\n";

struct attempt {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    char got[5];
    size_t ngot;
    struct ready_probe *probe; /* borrowed; NULL once the attempt is over */
};

struct ready_probe {
    uv_loop_t *loop;
    struct sockaddr_storage addr;
    uint64_t deadline; /* uv_now() value */
    uv_timer_t timer;  /* bounds the current attempt */
    uv_poll_t retry;   /* the timerfd that spaces attempts */
    int retry_fd;
    struct attempt *attempt; /* the one in progress, or NULL */
    uint64_t started_us; /* uv_hrtime() / 1000 at the start */
    unsigned refs; /* handles and attempts not yet closed */
    bool done;
    ready_probe_fn *cb;
    void *arg;
};

static void probe_unref(struct ready_probe *p)
{
    if (--p->refs == 0)
        free(p);
}

static void attempt_closed(uv_handle_t *h)
{
    struct attempt *a = container_of((uv_tcp_t *)h, struct attempt, tcp);
    struct ready_probe *p = h->data;

    free(a);
    probe_unref(p);
}

/* Ends the current attempt; its handle closes in the background. */
static void attempt_end(struct ready_probe *p)
{
    struct attempt *a = p->attempt;

    if (!a)
        return;
    p->attempt = NULL;
    a->probe = NULL;
    a->tcp.data = p;
    uv_close((uv_handle_t *)&a->tcp, attempt_closed);
}

static void timer_closed(uv_handle_t *h)
{
    probe_unref(h->data);
}

static void retry_closed(uv_handle_t *h)
{
    struct ready_probe *p = h->data;

    close(p->retry_fd);
    probe_unref(p);
}

static void probe_finish(struct ready_probe *p, int status, const char *error)
{
    if (p->done)
        return;
    p->done = true;
    attempt_end(p);
    uv_close((uv_handle_t *)&p->timer, timer_closed);
    uv_close((uv_handle_t *)&p->retry, retry_closed);
    p->cb(p->arg, status, error);
}

static void attempt_start(struct ready_probe *p);
static void attempt_failed(struct ready_probe *p);

/*
 * How long to wait before the next attempt: an eighth of the time spent so
 * far, between 0.2 ms and 100 ms. A refused connect on loopback costs
 * microseconds, so polling a fresh backend often is cheap, and one that
 * takes seconds is polled at the spec's 100 ms.
 */
static void schedule_retry(struct ready_probe *p)
{
    uint64_t now = uv_now(p->loop);
    uint64_t us = (uv_hrtime() / 1000 - p->started_us) / 8;
    struct itimerspec its = {0};

    if (us < MIN_RETRY_US)
        us = MIN_RETRY_US;
    if (us > MAX_RETRY_US)
        us = MAX_RETRY_US;
    if (now + us / 1000 > p->deadline)
        us = (p->deadline - now) * 1000 + 1;
    its.it_value.tv_sec = (time_t)(us / 1000000);
    its.it_value.tv_nsec = (long)(us % 1000000) * 1000;
    timerfd_settime(p->retry_fd, 0, &its, NULL);
}

static void retry_cb(uv_poll_t *h, int status, int events)
{
    struct ready_probe *p = h->data;
    uint64_t expirations;

    (void)status;
    (void)events;
    if (read(p->retry_fd, &expirations, sizeof(expirations)) != sizeof(expirations) || p->done || p->attempt)
        return;
    attempt_start(p);
}

/* The attempt ran out of time: count it as failed. */
static void timer_cb(uv_timer_t *t)
{
    struct ready_probe *p = t->data;

    if (p->attempt)
        attempt_failed(p);
}

static void attempt_failed(struct ready_probe *p)
{
    attempt_end(p);
    uv_timer_stop(&p->timer);
    if (uv_now(p->loop) >= p->deadline) {
        probe_finish(p, -ETIMEDOUT, "backend did not become ready in time");
        return;
    }
    schedule_retry(p);
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct attempt *a = container_of((uv_tcp_t *)h, struct attempt, tcp);

    (void)suggested;
    buf->base = a->got + a->ngot;
    buf->len = sizeof(a->got) - a->ngot;
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct attempt *a = container_of((uv_tcp_t *)s, struct attempt, tcp);
    struct ready_probe *p = a->probe;

    (void)buf;
    if (!p || nread == 0)
        return;
    if (nread < 0) {
        attempt_failed(p);
        return;
    }
    a->ngot += (size_t)nread;
    if (a->ngot < sizeof(a->got))
        return;
    if (memcmp(a->got, "HTTP/", 5) == 0)
        probe_finish(p, 0, NULL);
    else
        attempt_failed(p);
}

static void write_cb(uv_write_t *w, int status)
{
    struct attempt *a = container_of(w, struct attempt, write);

    if (status < 0 && a->probe)
        attempt_failed(a->probe);
}

static void connect_cb(uv_connect_t *c, int status)
{
    struct attempt *a = container_of(c, struct attempt, connect);
    struct ready_probe *p = a->probe;
    uv_buf_t b = uv_buf_init((char *)probe_request, sizeof(probe_request) - 1);

    if (!p)
        return;
    if (status < 0 || uv_write(&a->write, (uv_stream_t *)&a->tcp, &b, 1, write_cb) < 0 ||
        uv_read_start((uv_stream_t *)&a->tcp, alloc_cb, read_cb) < 0)
        attempt_failed(p);
}

static void attempt_start(struct ready_probe *p)
{
    struct attempt *a = xcalloc(1, sizeof(*a));

    a->probe = p;
    uv_tcp_init(p->loop, &a->tcp);
    p->refs++;
    p->attempt = a;
    uv_timer_start(&p->timer, timer_cb, ATTEMPT_TIMEOUT_MS, 0);
    if (uv_tcp_connect(&a->connect, &a->tcp, (struct sockaddr *)&p->addr, connect_cb) < 0)
        attempt_failed(p);
}

struct ready_probe *ready_probe_start(uv_loop_t *loop, const char *address, unsigned timeout_ms,
                                      ready_probe_fn *cb, void *arg, struct buf *err)
{
    struct ready_probe *p;
    struct sockaddr_storage sa;

    if (!address || net_addr_parse(address, &sa) < 0) {
        buf_printf(err, "invalid backend address '%s'", address ? address : "");
        return NULL;
    }
    p = xcalloc(1, sizeof(*p));
    p->loop = loop;
    p->addr = sa;
    p->deadline = uv_now(loop) + timeout_ms;
    p->started_us = uv_hrtime() / 1000;
    p->cb = cb;
    p->arg = arg;
    p->retry_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (p->retry_fd == -1) {
        buf_printf(err, "timerfd_create: %s", strerror(errno));
        free(p);
        return NULL;
    }
    uv_timer_init(loop, &p->timer);
    p->timer.data = p;
    uv_poll_init(loop, &p->retry, p->retry_fd);
    p->retry.data = p;
    uv_poll_start(&p->retry, UV_READABLE, retry_cb);
    p->refs = 2; /* the timer and the retry poll */
    attempt_start(p);
    return p;
}

void ready_probe_stop(struct ready_probe *p, int status, const char *error)
{
    probe_finish(p, status, error);
}
