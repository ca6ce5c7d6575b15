/* SPDX-License-Identifier: MIT */
/*
 * h2_bridge.c - HTTP/2 client connections (see h2_bridge.h).
 *
 * Each request stream gets a socketpair: one end is adopted as a proxy
 * connection of its own (listener_adopt(), with the HTTP/2 client's address
 * and scheme, so x-forwarded-for/-proto are the client's), the other is a
 * struct stream here that writes the request h2.c made and reads back the
 * HTTP/1.1 response for h2.c to turn into frames. Backpressure crosses the
 * bridge both ways: h2.c acknowledges request body only once this end has
 * written it, and stops reading this end while the client lags behind.
 *
 * A socketpair whose exchange ended cleanly (h2.c says so) waits in its
 * session's idle list, as an upstream connection waits in the pool, and
 * carries a later stream's exchange: the adopted connection simply reads
 * its next request. At most H2_IDLE_PIPES wait per session; one that its
 * connection closes (idle timeout, shutdown) leaves the list.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "h2.h"
#include "h2_bridge.h"
#include "listener.h"
#include "proxy.h"
#include "stats.h"
#include "worker.h"

#define H2_IDLE_PIPES 16

/* What the bridge keeps per HTTP/2 connection: the session's io arg. */
struct h2_link {
    struct conn *c;         /* borrowed: the client connection */
    struct list_node idle;  /* of struct h2_pipe */
    unsigned nidle;
};

struct h2_pipe {
    struct stream s;        /* first: our end of the socketpair */
    struct h2_stream *st;   /* the exchange's stream; NULL while idle or once h2.c closed it */
    struct h2_link *link;   /* while idle */
    struct list_node node;  /* in link->idle while idle */
};

static struct h2_pipe *pipe_of(struct stream *s)
{
    return container_of(s, struct h2_pipe, s);
}

static void pipe_closed(uv_handle_t *h)
{
    free(pipe_of(h->data));
}

/* Closes p, taking it out of its session's idle list if it waits there. */
static void pipe_close(struct h2_pipe *p)
{
    if (p->link) {
        list_remove(&p->node);
        p->link->nidle--;
        p->link = NULL;
    }
    p->st = NULL;
    stream_close(&p->s, pipe_closed);
}

static void conn_after(struct conn *c)
{
    if (c->s.closing)
        return;
    if (h2_session_done(c->h2)) {
        conn_close(c);
        return;
    }
    c->deadline = h2_session_streams(c->h2) ? 0 : worker_now(c->s.w) + CONN_IDLE_TIMEOUT_MS;
    stream_read(&c->s, c->s.queued < H2_OUT_HIGH);
}

static void pipe_input(struct stream *s, const char *data, size_t len)
{
    struct h2_pipe *p = pipe_of(s);
    struct conn *c;

    if (!p->st) {
        pipe_close(p); /* bytes nobody asked for: the connection behind it is not in step */
        return;
    }
    c = ((struct h2_link *)h2_session_arg(h2_stream_session(p->st)))->c;
    if (!data) { /* input kept earlier: this end never keeps any, but be exact */
        size_t n = s->in_len;
        h2_stream_response(p->st, s->in, n);
        stream_consume(s, n);
    } else {
        h2_stream_response(p->st, data, len);
    }
    conn_after(c);
}

static void pipe_end(struct stream *s, int status)
{
    struct h2_pipe *p = pipe_of(s);
    struct conn *c;

    if (!p->st) {
        pipe_close(p);
        return;
    }
    c = ((struct h2_link *)h2_session_arg(h2_stream_session(p->st)))->c;
    h2_stream_response_end(p->st, status == UV_EOF ? 0 : status); /* io_close closes the pipe */
    conn_after(c);
}

static void pipe_drained(struct stream *s)
{
    struct h2_pipe *p = pipe_of(s);
    struct conn *c;

    if (!p->st)
        return;
    c = ((struct h2_link *)h2_session_arg(h2_stream_session(p->st)))->c;
    h2_stream_written(p->st);
    conn_after(c);
}

static const struct stream_ops pipe_ops = {.input = pipe_input, .end = pipe_end, .drained = pipe_drained};

/* ---- h2_io ---- */

static int io_send(struct h2_session *s, const uint8_t *data, size_t len)
{
    struct conn *c = ((struct h2_link *)h2_session_arg(s))->c;
    int r = stream_send(&c->s, (const char *)data, len);

    if (r < 0)
        return r; /* the caller sees the session broken and closes c */
    proxy_stats_bytes_out(len);
    return c->s.queued >= H2_OUT_HIGH ? 1 : 0;
}

static int io_open(struct h2_stream *st, const char *head, size_t len)
{
    struct h2_link *link = h2_session_arg(h2_stream_session(st));
    struct conn *c = link->c;
    struct h2_pipe *p;
    int fds[2], r;

    if (!list_empty(&link->idle)) {
        p = list_entry(link->idle.next, struct h2_pipe, node);
        list_remove(&p->node);
        link->nidle--;
        p->link = NULL;
        p->st = st;
        h2_stream_set_bridge(st, p);
        stream_read(&p->s, true);
        if ((r = stream_send(&p->s, head, len)) < 0) {
            pipe_close(p);
            return r;
        }
        return 0;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == -1) {
        log_warn("client %s: socketpair: %s", c->ip, strerror(errno));
        return -errno;
    }
    if (!listener_adopt(c->s.w, fds[1], c->ip, c->https)) {
        close(fds[0]);
        return -EIO; /* fds[1] was closed with the connection that could not be made */
    }
    p = xcalloc(1, sizeof(*p));
    stream_init(&p->s, c->s.w, &pipe_ops);
    if ((r = uv_tcp_open(&p->s.tcp, fds[0])) < 0) {
        close(fds[0]);
        stream_close(&p->s, pipe_closed);
        return r;
    }
    p->st = st;
    h2_stream_set_bridge(st, p);
    stream_read(&p->s, true);
    if ((r = stream_send(&p->s, head, len)) < 0) {
        p->st = NULL;
        stream_close(&p->s, pipe_closed);
        return r;
    }
    return 0;
}

static int io_write(struct h2_stream *st, const char *data, size_t len)
{
    struct h2_pipe *p = h2_stream_bridge(st);
    int r = stream_send(&p->s, data, len);

    if (r < 0)
        return r;
    return p->s.queued == 0 ? 1 : 0;
}

static void io_pause(struct h2_stream *st, bool paused)
{
    struct h2_pipe *p = h2_stream_bridge(st);

    stream_read(&p->s, !paused);
}

static void io_close(struct h2_stream *st, bool reuse)
{
    struct h2_pipe *p = h2_stream_bridge(st);
    struct h2_link *link = h2_session_arg(h2_stream_session(st));

    p->st = NULL;
    if (reuse && link->nidle < H2_IDLE_PIPES && p->s.queued == 0 && !p->s.ended && p->s.in_len == 0) {
        p->link = link;
        list_insert_tail(&link->idle, &p->node);
        link->nidle++;
        stream_read(&p->s, true); /* to see its connection close while it waits */
        return;
    }
    pipe_close(p); /* the adopted connection sees our FIN and ends */
}

static const struct h2_io bridge_io = {
    .send = io_send, .open = io_open, .write = io_write, .pause = io_pause, .close = io_close,
};

/* ---- the client connection ---- */

void h2_conn_start(struct conn *c)
{
    struct proxy *px = c->s.w->px;

    struct h2_link *link = xcalloc(1, sizeof(*link));

    link->c = c;
    list_init(&link->idle);
    c->state = CONN_H2;
    c->h2 = h2_session_new(&bridge_io, link, px->server_header);
    c->deadline = worker_now(c->s.w) + CONN_IDLE_TIMEOUT_MS;
    log_debug("client %s: HTTP/2", c->ip);
}

size_t h2_conn_input(struct conn *c, const char *data, size_t len)
{
    if (h2_session_recv(c->h2, (const uint8_t *)data, len) < 0) {
        h2_session_flush(c->h2); /* the GOAWAY, where nghttp2 made one */
        conn_close(c);
        return len;
    }
    conn_after(c);
    return len;
}

void h2_conn_drained(struct conn *c)
{
    if (h2_session_flush(c->h2) < 0) {
        conn_close(c);
        return;
    }
    conn_after(c);
}

void h2_conn_drain(struct conn *c)
{
    h2_session_shutdown(c->h2);
    conn_after(c);
}

void h2_conn_free(struct conn *c)
{
    struct h2_link *link = h2_session_arg(c->h2);
    struct list_node *pos, *tmp;

    h2_session_free(c->h2); /* closes (or idles) the pipes of open streams */
    c->h2 = NULL;
    list_for_each_safe(pos, tmp, &link->idle)
        pipe_close(list_entry(pos, struct h2_pipe, node));
    free(link);
}
