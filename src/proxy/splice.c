/* SPDX-License-Identifier: MIT */
/*
 * splice.c - plain-TCP tunnels moved by the kernel (see splice.h).
 *
 * Each direction pumps: splice from the source socket into a pipe, then
 * from the pipe into the destination socket. A short read means the socket
 * is empty for now (the level-triggered poll says when there is more); a
 * short write means the destination is full: the bytes stay in the pipe,
 * the source is not read, and the destination is watched for room. That is
 * the same backpressure as the copying tunnel, with at most a pipe's worth
 * (64 KiB) in flight per direction. Poll interest only changes when a
 * direction blocks or unblocks, because every change costs epoll_ctl calls.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <poll.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "forward.h"
#include "proxy.h"
#include "listener.h"
#include "splice.h"
#include "stats.h"
#include "stream.h"
#include "worker.h"

#define SPLICE_PIPE_SIZE (256 * 1024)   /* asked for; the kernel may give the default 64 KiB */
#define SPLICE_BUDGET (1024 * 1024)     /* bytes per direction per wakeup, for fairness */

struct splice_dir {
    int pipe[2];      /* -1 while no pipe is held */
    size_t in_pipe;   /* bytes in the pipe, not yet written out */
    bool eof;         /* the source sent its FIN */
    bool shut;        /* we passed the FIN on */
};

struct splice_tunnel {
    struct conn *c;               /* borrowed */
    struct worker *w;             /* borrowed */
    uv_poll_t poll[2];            /* [0] the client's socket, [1] the upstream's */
    int fd[2];
    int events[2];                /* current poll interest */
    struct splice_dir dir[2];     /* [0] client -> upstream, [1] upstream -> client */
    unsigned handles;             /* poll handles initialised and not yet closed */
    bool no_pipe;                 /* a pump could not get a pipe (descriptors exhausted) */
};

static int pipe_get(struct worker *w, int p[2])
{
    if (w->npipes > 0) {
        w->npipes--;
        p[0] = w->pipes[w->npipes][0];
        p[1] = w->pipes[w->npipes][1];
        return 0;
    }
    if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
        return -errno;
    /* Bigger pipes mean fewer splices per megabyte; best effort (the
     * per-user pipe quota can refuse it). */
    (void)fcntl(p[1], F_SETPIPE_SZ, SPLICE_PIPE_SIZE);
    return 0;
}

static void pipe_put(struct worker *w, int p[2])
{
    if (p[0] < 0)
        return;
    if (w->npipes < WORKER_PIPES_MAX) {
        w->pipes[w->npipes][0] = p[0];
        w->pipes[w->npipes][1] = p[1];
        w->npipes++;
    } else {
        close(p[0]);
        close(p[1]);
    }
    p[0] = p[1] = -1;
}

/* A pipe that still holds bytes (a tunnel that failed) cannot be reused. */
static void pipe_drop(int p[2])
{
    if (p[0] < 0)
        return;
    close(p[0]);
    close(p[1]);
    p[0] = p[1] = -1;
}

void splice_pool_free(struct worker *w)
{
    while (w->npipes > 0) {
        w->npipes--;
        close(w->pipes[w->npipes][0]);
        close(w->pipes[w->npipes][1]);
    }
}

/* One non-blocking splice, EINTR retried: bytes moved, 0 at EOF, or -errno
 * (-EAGAIN: nothing can move now). */
static ssize_t move(int in, int out, size_t len)
{
    ssize_t n;

    do
        n = splice(in, NULL, out, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

/*
 * Reads the source with recv() into the (empty) pipe, for when splice moves
 * nothing though the socket is readable, or says EOF: at TCP urgent data,
 * splice(2) stops at the mark for good (EAGAIN, or 0 once the peer's FIN has
 * arrived too) while recv() steps over it as the copying tunnel does (the
 * urgent byte itself is not passed on, in either mode). So a 0 from splice
 * is an EOF only if recv() says so. Bytes read, 0 at EOF, or -errno.
 */
static ssize_t move_by_copy(struct splice_tunnel *st, int src, int pipe_w)
{
    ssize_t n, w;

    do
        n = recv(src, st->w->rbuf, PIPE_BUF, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return n < 0 ? -errno : 0;
    /* An empty pipe takes PIPE_BUF bytes whole, whatever its size. */
    do
        w = write(pipe_w, st->w->rbuf, (size_t)n);
    while (w < 0 && errno == EINTR);
    if (w != n)
        return w < 0 ? -errno : -EIO;
    return n;
}

/* Moves what it can of direction d; readable: the source's poll said so.
 * 0, or -errno when the tunnel is broken. */
static int pump(struct splice_tunnel *st, int d, bool readable)
{
    struct splice_dir *x = &st->dir[d];
    int src = st->fd[d], dst = st->fd[1 - d];
    size_t moved = 0;
    ssize_t n;
    int r;

    for (;;) {
        bool full = false;
        if (x->in_pipe == 0) {
            if (x->eof || moved >= SPLICE_BUDGET)
                break;
            if (x->pipe[0] < 0 && (r = pipe_get(st->w, x->pipe)) < 0) {
                log_warn("tunnel of client %s: no pipe: %s", st->c->ip, strerror(-r));
                st->no_pipe = true;
                return r;
            }
            n = move(src, x->pipe[1], SPLICE_PIPE_SIZE);
            if (n == 0 || (n == -EAGAIN && readable && moved == 0))
                n = move_by_copy(st, src, x->pipe[1]);
            if (n == -EAGAIN)
                break;
            if (n < 0)
                return (int)n;
            if (n == 0) {
                x->eof = true;
                break;
            }
            x->in_pipe = (size_t)n;
            full = n >= 64 * 1024; /* filled at least a default-sized pipe: there may be more */
        }
        n = move(x->pipe[0], dst, x->in_pipe);
        if (n == -EAGAIN)
            break;
        if (n < 0)
            return (int)n;
        x->in_pipe -= (size_t)n;
        moved += (size_t)n;
        if (d == 1)
            proxy_stats_bytes_out((uint64_t)n);
        if (x->in_pipe > 0 || !full)
            break; /* the destination is full, or the source is empty for now */
    }
    if (x->in_pipe == 0) {
        pipe_put(st->w, x->pipe);
        if (x->eof && !x->shut) {
            x->shut = true;
            if (shutdown(dst, SHUT_WR) < 0 && errno != ENOTCONN)
                return -errno;
        }
    }
    return 0;
}

/* Poll interest of socket i: read it while its direction's pipe is empty;
 * watch for room while the other direction has bytes for it. */
static void poll_cb(uv_poll_t *p, int status, int events);

static void set_interest(struct splice_tunnel *st)
{
    for (int i = 0; i < 2; i++) {
        int ev = 0;
        if (!st->dir[i].eof && st->dir[i].in_pipe == 0)
            ev |= UV_READABLE;
        if (st->dir[1 - i].in_pipe > 0)
            ev |= UV_WRITABLE;
        if (ev == st->events[i])
            continue;
        st->events[i] = ev;
        if (ev)
            uv_poll_start(&st->poll[i], ev, poll_cb);
        else
            uv_poll_stop(&st->poll[i]);
    }
}

static void release(struct splice_tunnel *st);

/*
 * Hands the tunnel back to the copying code, which needs no descriptors
 * beyond the two sockets: possible while both pipes are empty and neither
 * side has ended (else the tunnel is closed). True if done.
 */
static bool unsplice(struct splice_tunnel *st)
{
    struct conn *c = st->c;

    if (st->dir[0].in_pipe || st->dir[1].in_pipe || st->dir[0].eof || st->dir[1].eof)
        return false;
    c->splice = NULL;
    c->splice_failed = true;
    c->s.spliced = c->up->s.spliced = false;
    release(st); /* closes the poll handles: the sockets are libuv's TCP handles' again */
    stream_read(&c->s, true);
    stream_read(&c->up->s, true);
    log_info("tunnel of client %s: copying again", c->ip);
    return true;
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
    struct splice_tunnel *st = p->data;
    int i = p == &st->poll[0] ? 0 : 1;
    int r = status;

    if (r == 0 && events == 0)
        events = st->events[i]; /* a hang-up or error with nothing else: let the syscalls tell */
    if (r == 0 && (events & UV_READABLE))
        r = pump(st, i, true);
    if (r == 0 && (events & UV_WRITABLE))
        r = pump(st, 1 - i, false);
    if (r < 0 && st->no_pipe && unsplice(st))
        return;
    if (r < 0) {
        log_debug("tunnel of client %s: %s", st->c->ip, strerror(-r));
        conn_close(st->c); /* stops us first */
        return;
    }
    if (st->dir[0].shut && st->dir[1].shut) {
        conn_close(st->c);
        return;
    }
    set_interest(st);
}

/* Everything splice_ready asks but that both sockets are quiet. */
static bool splice_wanted(const struct conn *c)
{
    const struct upconn *up = c->up;

    return c->s.w->px->splice && c->bulk && up && !c->splice && !c->splice_failed && !c->s.tls && !up->s.tls &&
           c->s.queued == 0 && up->s.queued == 0 && c->s.in_len == 0 && up->s.in_len == 0 && !c->s.shut &&
           !up->s.shut && !c->s.ended && !up->s.ended && !c->s.closing && !up->s.closing;
}

bool splice_ready(const struct conn *c)
{
    /* Nothing of either stream's I/O may be pending: each socket gets a poll handle of its own. */
    return splice_wanted(c) && stream_is_quiet(&c->s) && stream_is_quiet(&c->up->s);
}

static void handle_closed(uv_handle_t *h)
{
    struct splice_tunnel *st = h->data;

    if (--st->handles == 0)
        free(st);
}

/* Gives back the pipes and closes the poll handles; st is freed once they are closed. */
static void release(struct splice_tunnel *st)
{
    unsigned n = st->handles;

    for (int i = 0; i < 2; i++) {
        if (st->dir[i].in_pipe == 0)
            pipe_put(st->w, st->dir[i].pipe);
        else
            pipe_drop(st->dir[i].pipe);
    }
    if (n == 0) {
        free(st);
        return;
    }
    for (unsigned i = 0; i < n; i++)
        uv_close((uv_handle_t *)&st->poll[i], handle_closed);
}

bool splice_start(struct conn *c)
{
    struct splice_tunnel *st;
    struct stream *s[2] = {&c->s, &c->up->s};
    int r = 0;

    if (!splice_wanted(c)) {
        if (c->up) {
            stream_hold(&c->s, false);
            stream_hold(&c->up->s, false);
        }
        return false;
    }
    if (!splice_ready(c)) {
        /* io_uring: a receive is in the kernel; cancel it and come back (ops->quiet). */
        stream_hold(&c->s, true);
        stream_hold(&c->up->s, true);
        return false;
    }
    st = xcalloc(1, sizeof(*st));
    st->c = c;
    st->w = c->s.w;
    for (int i = 0; i < 2; i++) {
        st->dir[i].pipe[0] = st->dir[i].pipe[1] = -1;
        stream_read(s[i], false); /* the TCP handle lets go of its socket */
        stream_hold(s[i], false);  /* not reading: nothing is started again */
    }
    for (int i = 0; i < 2 && r == 0; i++) {
        r = uv_fileno((uv_handle_t *)&s[i]->tcp, &st->fd[i]);
        if (r == 0)
            r = uv_poll_init_socket(&st->w->loop, &st->poll[i], st->fd[i]);
        if (r == 0) {
            st->poll[i].data = st;
            st->handles++;
        }
    }
    if (r < 0) {
        log_warn("tunnel of client %s stays in user space: %s", c->ip, uv_strerror(r));
        release(st);
        c->splice_failed = true;
        stream_read(&c->s, true);
        stream_read(&c->up->s, true);
        return false;
    }
    c->s.spliced = c->up->s.spliced = true;
    c->splice = st;
    proxy_stats_spliced();
    set_interest(st);
    return true;
}

void splice_stop(struct conn *c)
{
    struct splice_tunnel *st = c->splice;

    if (!st)
        return;
    c->splice = NULL;
    c->s.spliced = false;
    if (c->up)
        c->up->s.spliced = false;
    release(st);
}
