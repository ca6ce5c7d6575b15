/* SPDX-License-Identifier: MIT */
/*
 * worker.c - the proxy's worker loops (see worker.h): thread start, the
 * one-second tick that enforces every timeout of the loop's connections,
 * wakeups from other threads, and the worker's part of a graceful
 * shutdown: stop accepting, close idle connections, let the others finish
 * their exchange, then close everything that is left and end the loop.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <dirent.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "forward.h"
#include "listener.h"
#include "proxy.h"
#include "splice.h"
#include "stream.h"
#include "worker.h"

static void check_done(struct worker *w);

static void tick_cb(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t now = worker_now(w);

    listener_tick(w, now);
    forward_tick(w, now);
}

static void wake_cb(uv_poll_t *p, int status, int events)
{
    struct worker *w = p->data;
    uint64_t n;

    (void)events;
    if (status < 0) {
        /* libuv stopped the handle: start it again, or later wakeups are lost. */
        log_error("worker %u: wake descriptor: %s", w->idx, uv_strerror(status));
        uv_poll_start(p, UV_READABLE, wake_cb);
    }
    while (read(w->wake_fd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
    if (w->stopped)
        return;
    listener_route_answers(w);
    if (atomic_load(&w->want_force)) {
        if (!w->draining)
            listener_stop(w);
        w->draining = true;
        listener_close_all(w);
        forward_close_idle(w);
        check_done(w);
    } else if (atomic_load(&w->want_drain) && !w->draining) {
        w->draining = true;
        listener_drain(w);
        forward_close_idle(w);
        check_done(w);
    }
}

static void check_done(struct worker *w)
{
    struct list_node *pos, *tmp;

    if (!w->draining || w->nconns > 0 || w->stopped)
        return;
    w->stopped = true;
    list_for_each_safe(pos, tmp, &w->upconns)
        forward_close(list_entry(pos, struct upconn, node));
    stream_ring_stop(w->ring); /* its handles close once the kernel has let go of the streams */
    uv_timer_stop(&w->tick);
    uv_close((uv_handle_t *)&w->tick, NULL);
    uv_mutex_lock(&w->px->wake_lock);
    w->alive = false;
    uv_mutex_unlock(&w->px->wake_lock);
    uv_close((uv_handle_t *)&w->wake, NULL);
}

void worker_wake(struct worker *w)
{
    uint64_t one = 1;

    /* EAGAIN means the counter is already huge: the worker is awake anyway. */
    while (write(w->wake_fd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
}

void worker_conn_gone(struct worker *w)
{
    check_done(w);
}

struct worker *worker_new(struct proxy *px, unsigned idx, const int *fds, const bool *https,
                          const bool *redirect, unsigned nfds)
{
    struct worker *w;
    int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

    if (wake_fd < 0)
        return NULL;
    w = xcalloc(1, sizeof(*w));
    w->idx = idx;
    w->px = px;
    w->wake_fd = wake_fd;
    uv_sem_init(&w->table_ready, 0);
    w->rbuf = xmalloc(WORKER_BUF_SIZE);
    if (px->tls) {
        w->ptbuf = xmalloc(WORKER_BUF_SIZE);
        w->tlsbuf = xmalloc(WORKER_BUF_SIZE);
    }
    buf_init(&w->scratch, 0);
    list_init(&w->conns);
    list_init(&w->upconns);
    for (unsigned i = 0; i < WORKER_MAX_LISTENERS; i++)
        w->listen_fds[i] = -1;
    for (unsigned i = 0; i < nfds && i < WORKER_MAX_LISTENERS; i++) {
        w->listen_fds[i] = fds[i];
        w->listeners[i].https = https[i];
        w->listeners[i].redirect = redirect[i];
        w->nlisteners++;
    }
    atomic_init(&w->want_drain, false);
    atomic_init(&w->want_force, false);
    atomic_init(&w->finished, false);
    w->alive = true;
    return w;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;

    return (x > y) - (x < y);
}

static bool kept(const int *keep, unsigned n, int fd)
{
    for (unsigned i = 0; i < n; i++)
        if (keep[i] == fd)
            return true;
    return false;
}

/* Without close_range (before Linux 5.9): the descriptors this thread's table
 * has, from /proc/thread-self/fd (not /proc/self: that is the process's). */
static void close_listed_but(const int *keep, unsigned n)
{
    DIR *d = opendir("/proc/thread-self/fd");
    int *fds = NULL;
    size_t nfds = 0, cap = 0;
    struct dirent *e;

    if (!d) {
        log_warn("cannot list this worker's descriptors: %s", strerror(errno));
        return;
    }
    while ((e = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(e->d_name, &end, 10);
        if (*end || end == e->d_name || fd == dirfd(d) || kept(keep, n, (int)fd))
            continue;
        if (nfds == cap)
            fds = xrealloc(fds, (cap = cap ? 2 * cap : 64) * sizeof(*fds));
        fds[nfds++] = (int)fd;
    }
    closedir(d);
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    free(fds);
}

/* Closes every descriptor of the calling thread's table but the n in keep. */
static void close_all_but(int *keep, unsigned n)
{
    unsigned lo = 0;

    qsort(keep, n, sizeof(*keep), cmp_int);
    for (unsigned i = 0; i <= n; i++) {
        unsigned hi = i < n ? (unsigned)keep[i] : ~0u; /* close [lo, hi) */
        if (hi > lo && close_range(lo, hi - 1, 0) < 0) {
            close_listed_but(keep, n);
            return;
        }
        if (i < n)
            lo = (unsigned)keep[i] + 1;
    }
}

/*
 * Gives the calling worker thread a descriptor table of its own holding
 * only what it needs. The copy unshare() makes holds a reference to every
 * file the process had open; dropping the ones the worker does not use
 * means a file the control thread closes really closes (a socket sends its
 * FIN) instead of living on in the worker's copy. Signals go to the control
 * thread, never here: a handler running on this thread would write to the
 * control loop's signal pipe through a descriptor this table no longer has.
 */
static bool own_descriptor_table(struct worker *w)
{
    uv_loop_t *ctl = w->px->control;
    int keep[3 + 2 + 2 + WORKER_MAX_LISTENERS];
    unsigned n = 0;

    /* The control loop's async descriptors: the worker wakes that loop. */
    if (!ctl || ctl->async_io_watcher.fd < 0)
        return false;
    if (unshare(CLONE_FILES) < 0) {
        log_warn("worker %u shares the process's descriptor table: unshare: %s", w->idx,
                 strerror(errno));
        return false;
    }
    for (int fd = 0; fd < 3; fd++)
        keep[n++] = fd;
    keep[n++] = ctl->async_io_watcher.fd;
    if (ctl->async_wfd >= 0 && ctl->async_wfd != ctl->async_io_watcher.fd)
        keep[n++] = ctl->async_wfd;
    keep[n++] = w->wake_fd;
    for (unsigned i = 0; i < w->nlisteners; i++)
        if (w->listen_fds[i] >= 0)
            keep[n++] = w->listen_fds[i];
    close_all_but(keep, n);
    return true;
}

static void thread_main(void *arg)
{
    struct worker *w = arg;
    sigset_t all;
    int r;

    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    w->own_fds = own_descriptor_table(w);
    uv_sem_post(&w->table_ready); /* from here on the worker owns its listening sockets */

    /* The loop is made here, so its descriptors live in this thread's table. */
    if ((r = uv_loop_init(&w->loop)) < 0)
        fatalx("worker %u: cannot make its event loop: %s", w->idx, uv_strerror(r));
    uv_poll_init(&w->loop, &w->wake, w->wake_fd);
    w->wake.data = w;
    uv_poll_start(&w->wake, UV_READABLE, wake_cb);
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    if (w->px->io_uring)
        w->ring = stream_ring_new(w);
    if (listener_start(w) < 0) {
        /* Could not listen: behave as if drained, so the process stops. */
        w->draining = true;
        listener_stop(w);
        check_done(w);
    } else {
        uv_timer_start(&w->tick, tick_cb, WORKER_TICK_MS, WORKER_TICK_MS);
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    stream_ring_free(w->ring);
    w->ring = NULL;
    splice_pool_free(w);
    if (uv_loop_close(&w->loop) < 0)
        log_error("worker %u: handles left open at exit", w->idx);
    atomic_store(&w->finished, true);
    uv_async_send(&w->px->worker_done);
}

int worker_start(struct worker *w)
{
    int fds[WORKER_MAX_LISTENERS];
    int r;

    memcpy(fds, w->listen_fds, sizeof(fds));
    if ((r = uv_thread_create(&w->thread, thread_main, w)) < 0)
        return r;
    uv_sem_wait(&w->table_ready);
    /* The worker's own table has its listening sockets: close ours, so a
     * drained worker's socket leaves the SO_REUSEPORT group at once. */
    if (w->own_fds)
        for (unsigned i = 0; i < w->nlisteners; i++)
            close(fds[i]);
    return 0;
}

static void release(struct worker *w)
{
    /* Listening sockets never handed to the loop are ours to close only
     * while the worker shares our table; its own table went with it. */
    for (unsigned i = 0; i < w->nlisteners; i++)
        if (!w->own_fds && w->listen_fds[i] >= 0)
            close(w->listen_fds[i]);
    close(w->wake_fd);
    uv_sem_destroy(&w->table_ready);
    buf_release(&w->scratch);
    free(w->rbuf);
    free(w->ptbuf);
    free(w->tlsbuf);
    free(w);
}

void worker_join_free(struct worker *w)
{
    if (!w)
        return;
    if (!w->joined)
        uv_thread_join(&w->thread);
    release(w);
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    release(w);
}
