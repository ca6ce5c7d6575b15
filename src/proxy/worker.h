/* SPDX-License-Identifier: MIT */
/*
 * worker.h - one event loop of the proxy, on its own thread (one per
 * core). A worker owns its listening sockets (SO_REUSEPORT: the kernel
 * spreads new connections over the workers), its client and upstream
 * connections, its upstream connection pool, and the buffers every read on
 * the loop goes through. It talks to other threads only through the route
 * cache, the monitor's atomics, the controller link's outbox and its wake
 * descriptor.
 *
 * Each worker thread has its own descriptor table (unshare(CLONE_FILES)),
 * as nginx's worker processes do: the per-process descriptor limit then
 * bounds each worker rather than the whole proxy, and the kernel takes
 * its cheaper path for a table that has a single user on every read and
 * write. The table keeps only what the thread needs: stdio, its listening
 * sockets, its wake descriptor and the control loop's (which it wakes);
 * everything the worker opens afterwards exists only in its own table.
 * So a worker must not use libuv's thread pool (uv_fs_*, uv_getaddrinfo,
 * uv_queue_work): the pool's threads share the control thread's table, and
 * descriptors would cross between tables.
 */
#ifndef PLANE_PROXY_WORKER_H
#define PLANE_PROXY_WORKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "../common/buf.h"
#include "../common/list.h"
#include "forward.h"

struct proxy;
struct stream_ring;

#define WORKER_BUF_SIZE (64 * 1024) /* shared read buffer and TLS buffers */
#define WORKER_TICK_MS 1000         /* timeouts are checked this often */
#define WORKER_MAX_LISTENERS 2
#define WORKER_PIPES_MAX 64          /* idle pipes kept for splice tunnels */

struct listener {
    uv_tcp_t tcp;
    struct worker *w;
    bool https;    /* TLS on this port */
    bool redirect; /* answers every request with the HTTPS redirect (§16.6) */
};

struct worker {
    unsigned idx;
    struct proxy *px;                 /* borrowed; outlives the worker */
    uv_loop_t loop;
    uv_thread_t thread;
    int wake_fd;                      /* eventfd: route answers, drain and force requests */
    uv_poll_t wake;                   /* watches wake_fd */
    uv_sem_t table_ready;             /* posted once the thread has its descriptor table */
    bool own_fds;                     /* the thread has a descriptor table of its own */
    uv_timer_t tick;                  /* timeouts */
    struct listener listeners[WORKER_MAX_LISTENERS];
    int listen_fds[WORKER_MAX_LISTENERS]; /* bound by the main thread, -1 when unused */
    unsigned nlisteners;

    struct stream_ring *ring;         /* owned: plain TCP streams' io_uring; NULL on the epoll path */
    char *rbuf;                       /* owned: every plain read lands here first */
    char *ptbuf;                      /* owned: TLS plaintext */
    char *tlsbuf;                     /* owned: TLS ciphertext on its way out */
    struct buf scratch;               /* response heads being built */

    struct list_node conns;           /* client connections */
    struct list_node upconns;         /* upstream connections */
    unsigned nconns;
    struct pool pool;                 /* idle upstream connections by address */
    int pipes[WORKER_PIPES_MAX][2];   /* idle, empty pipes for splice tunnels */
    unsigned npipes;

    atomic_bool want_drain;           /* set by the control thread */
    atomic_bool want_force;
    atomic_bool finished;             /* the loop has ended (read by the control thread) */
    bool draining;                    /* no more listening; closing as exchanges end */
    bool stopped;                     /* handles closed; the loop is ending */
    bool alive;                       /* may be woken (under px->wake_lock) */
    bool joined;                      /* the control thread has joined the thread */
};

/* Makes worker idx with listening fds (owned by the worker from now on).
 * NULL when no wake descriptor can be made. */
struct worker *worker_new(struct proxy *px, unsigned idx, const int *fds, const bool *https,
                          const bool *redirect, unsigned nfds);
/* Runs the worker's loop on a new thread. 0 or -errno. Every async handle
 * of the control loop must exist by now: the worker keeps the control
 * loop's wake descriptor in its own table. */
int worker_start(struct worker *w);
/* Wakes the worker's loop from any thread (under px->wake_lock, while alive). */
void worker_wake(struct worker *w);
/* Waits for the thread and frees the worker. NULL is fine. */
void worker_join_free(struct worker *w);
/* Frees a worker whose thread never started. NULL is fine. */
void worker_free(struct worker *w);
/* The loop's time in milliseconds. */
static inline uint64_t worker_now(struct worker *w) { return uv_now(&w->loop); }
/* A client connection went away: the drain may be over. */
void worker_conn_gone(struct worker *w);

#endif
