/* SPDX-License-Identifier: MIT */
/*
 * worker.c - the proxy's worker loops (see worker.h): thread start, the
 * one-second tick that enforces every timeout of the loop's connections,
 * wakeups from other threads, and the worker's part of a graceful
 * shutdown: stop accepting, close idle connections, let the others finish
 * their exchange, then close everything that is left and end the loop.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "forward.h"
#include "listener.h"
#include "proxy.h"
#include "worker.h"

static void check_done(struct worker *w);

static void tick_cb(uv_timer_t *t)
{
    struct worker *w = t->data;
    uint64_t now = worker_now(w);

    listener_tick(w, now);
    forward_tick(w, now);
}

static void async_cb(uv_async_t *a)
{
    struct worker *w = a->data;

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
    uv_timer_stop(&w->tick);
    uv_close((uv_handle_t *)&w->tick, NULL);
    uv_mutex_lock(&w->px->wake_lock);
    w->alive = false;
    uv_mutex_unlock(&w->px->wake_lock);
    uv_close((uv_handle_t *)&w->async, NULL);
}

void worker_conn_gone(struct worker *w)
{
    check_done(w);
}

struct worker *worker_new(struct proxy *px, unsigned idx, const int *fds, const bool *https,
                          const bool *redirect, unsigned nfds)
{
    struct worker *w = xcalloc(1, sizeof(*w));

    w->idx = idx;
    w->px = px;
    uv_loop_init(&w->loop);
    w->rbuf = xmalloc(WORKER_BUF_SIZE);
    if (px->tls) {
        w->ptbuf = xmalloc(WORKER_BUF_SIZE);
        w->tlsbuf = xmalloc(WORKER_BUF_SIZE);
    }
    buf_init(&w->scratch, 0);
    list_init(&w->conns);
    list_init(&w->upconns);
    for (unsigned i = 0; i < nfds && i < WORKER_MAX_LISTENERS; i++) {
        w->listen_fds[i] = fds[i];
        w->listeners[i].https = https[i];
        w->listeners[i].redirect = redirect[i];
        w->nlisteners++;
    }
    atomic_init(&w->want_drain, false);
    atomic_init(&w->want_force, false);
    atomic_init(&w->finished, false);
    uv_async_init(&w->loop, &w->async, async_cb);
    w->async.data = w;
    uv_timer_init(&w->loop, &w->tick);
    w->tick.data = w;
    w->alive = true;
    return w;
}

static void thread_main(void *arg)
{
    struct worker *w = arg;

    if (listener_start(w) < 0) {
        /* Could not listen: behave as if drained, so the process stops. */
        w->draining = true;
        listener_stop(w);
        check_done(w);
    } else {
        uv_timer_start(&w->tick, tick_cb, WORKER_TICK_MS, WORKER_TICK_MS);
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    atomic_store(&w->finished, true);
    uv_async_send(&w->px->worker_done);
}

int worker_start(struct worker *w)
{
    int r = uv_thread_create(&w->thread, thread_main, w);

    return r < 0 ? r : 0;
}

static void release(struct worker *w)
{
    for (unsigned i = 0; i < w->nlisteners; i++)
        if (w->listen_fds[i] >= 0)
            close(w->listen_fds[i]);
    uv_loop_close(&w->loop);
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
    uv_thread_join(&w->thread);
    release(w);
}

void worker_free(struct worker *w)
{
    if (!w)
        return;
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_close((uv_handle_t *)&w->tick, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    release(w);
}
