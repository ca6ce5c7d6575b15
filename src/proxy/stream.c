/* SPDX-License-Identifier: MIT */
/*
 * stream.c - the proxy's connections (see stream.h): the libuv path, and
 * the calls that hand s->uring streams to stream_uring.c.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "stream.h"
#include "tls.h"
#include "worker.h"

struct wchunk {
    uv_write_t req;
    struct stream *s;
    size_t len;
    char data[];
};

static void write_done(uv_write_t *req, int status)
{
    struct wchunk *ch = req->data;
    struct stream *s = ch->s;

    s->queued -= ch->len;
    free(ch);
    if (s->closing)
        return;
    if (status < 0) {
        if (!s->ended) {
            s->ended = true;
            stream_read(s, false);
            s->ops->end(s, status);
        }
        return;
    }
    if (s->queued == 0)
        s->ops->drained(s);
}

/* The plain-TCP write of bufs (ciphertext for TLS streams). */
static int raw_write(struct stream *s, const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0, done = 0, skip;
    struct wchunk *ch;
    uv_buf_t b;
    int r;

    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    if (s->closing)
        return UV_EPIPE;
    if (s->queued == 0) {
        r = uv_try_write((uv_stream_t *)&s->tcp, bufs, n);
        if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS)
            return r;
        done = r > 0 ? (size_t)r : 0;
        if (done == total)
            return 0;
    }
    ch = xmalloc(sizeof(*ch) + total - done);
    ch->s = s;
    ch->len = total - done;
    ch->req.data = ch;
    skip = done;
    total = 0;
    for (unsigned i = 0; i < n; i++) {
        if (skip >= bufs[i].len) {
            skip -= bufs[i].len;
            continue;
        }
        memcpy(ch->data + total, bufs[i].base + skip, bufs[i].len - skip);
        total += bufs[i].len - skip;
        skip = 0;
    }
    b = uv_buf_init(ch->data, (unsigned)ch->len);
    r = uv_write(&ch->req, (uv_stream_t *)&s->tcp, &b, 1, write_done);
    if (r < 0) {
        free(ch);
        return r;
    }
    s->queued += ch->len;
    return 0;
}

/* Sends whatever ciphertext the TLS session has produced. */
static int tls_flush(struct stream *s)
{
    size_t n;
    int r;

    while ((n = tls_conn_take(s->tls, s->w->tlsbuf, WORKER_BUF_SIZE)) > 0) {
        uv_buf_t b = uv_buf_init(s->w->tlsbuf, (unsigned)n);
        if ((r = raw_write(s, &b, 1)) < 0)
            return r;
    }
    return 0;
}

int stream_write(struct stream *s, const uv_buf_t *bufs, unsigned n)
{
    if (s->closing)
        return UV_EPIPE;
    if (s->spliced)
        return UV_EBUSY;
    if (s->uring)
        return stream_uring_write(s, bufs, n);
    if (!s->tls)
        return raw_write(s, bufs, n);
    for (unsigned i = 0; i < n; i++)
        if (bufs[i].len && tls_conn_write(s->tls, bufs[i].base, bufs[i].len) < 0)
            return UV_EPROTO;
    return tls_flush(s);
}

int stream_send(struct stream *s, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);

    return stream_write(s, &b, 1);
}

void stream_keep(struct stream *s, const char *data, size_t len)
{
    if (len == 0)
        return;
    if (s->in_len + len > s->in_cap) {
        size_t cap = s->in_cap ? s->in_cap : STREAM_IN_GROW;
        while (cap < s->in_len + len)
            cap *= 2;
        s->in = xrealloc(s->in, cap);
        s->in_cap = cap;
    }
    memcpy(s->in + s->in_len, data, len);
    s->in_len += len;
}

void stream_used(struct stream *s, bool from_in, const char *data, size_t len, size_t used)
{
    if (from_in)
        stream_consume(s, used);
    else
        stream_keep(s, data + used, len - used);
}

void stream_consume(struct stream *s, size_t n)
{
    if (n >= s->in_len) {
        free(s->in);
        s->in = NULL;
        s->in_len = s->in_cap = 0;
        return;
    }
    memmove(s->in, s->in + n, s->in_len - n);
    s->in_len -= n;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct stream *s = h->data;

    (void)hint;
    if (!s->tls && s->in_len > 0) {
        /* Bytes are waiting: read behind them so the input stays contiguous. */
        if (s->in_cap - s->in_len < STREAM_IN_GROW) {
            s->in_cap = s->in_len + STREAM_IN_GROW * 4;
            s->in = xrealloc(s->in, s->in_cap);
        }
        *b = uv_buf_init(s->in + s->in_len, (unsigned)(s->in_cap - s->in_len));
        return;
    }
    *b = uv_buf_init(s->w->rbuf, WORKER_BUF_SIZE);
}

void stream_report_end(struct stream *s, int status)
{
    if (s->ended || s->closing)
        return;
    s->ended = true;
    stream_read(s, false);
    s->ops->end(s, status);
}

static void tls_input(struct stream *s, const char *data, size_t n)
{
    int r;

    tls_conn_feed(s->tls, data, n);
    for (;;) {
        r = tls_conn_read(s->tls, s->w->ptbuf, WORKER_BUF_SIZE);
        if (r <= 0)
            break;
        if (s->in_len > 0) {
            stream_keep(s, s->w->ptbuf, (size_t)r);
            s->ops->input(s, NULL, 0);
        } else {
            s->ops->input(s, s->w->ptbuf, (size_t)r);
        }
        if (s->closing || s->ended)
            return;
    }
    if (tls_flush(s) < 0) {
        stream_report_end(s, UV_EPIPE);
        return;
    }
    if (r == TLS_EOF)
        stream_report_end(s, UV_EOF);
    else if (r == TLS_ERROR)
        stream_report_end(s, UV_EPROTO);
}

static void on_read(uv_stream_t *h, ssize_t n, const uv_buf_t *b)
{
    struct stream *s = h->data;

    if (n == 0 || s->closing)
        return;
    if (n < 0) {
        stream_report_end(s, (int)n);
        return;
    }
    if (s->tls) {
        tls_input(s, b->base, (size_t)n);
    } else if (b->base == s->w->rbuf) {
        s->ops->input(s, b->base, (size_t)n);
    } else {
        s->in_len += (size_t)n;
        s->ops->input(s, NULL, 0);
    }
}

void stream_init(struct stream *s, struct worker *w, const struct stream_ops *ops)
{
    s->w = w;
    s->ops = ops;
    uv_tcp_init(&w->loop, &s->tcp);
    s->tcp.data = s;
}

void stream_read(struct stream *s, bool on)
{
    if (on == s->reading || s->closing || s->spliced || (on && s->ended))
        return;
    if (s->uring) {
        stream_uring_read(s, on);
        return;
    }
    if (on) {
        if (uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read) == 0)
            s->reading = true;
    } else {
        uv_read_stop((uv_stream_t *)&s->tcp);
        s->reading = false;
    }
}

static void shutdown_done(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

void stream_shutdown(struct stream *s)
{
    uv_shutdown_t *req;

    if (s->shut || s->closing || s->spliced)
        return;
    s->shut = true;
    if (s->uring) {
        stream_uring_shutdown(s);
        return;
    }
    if (s->tls) {
        tls_conn_shutdown(s->tls);
        tls_flush(s);
    }
    req = xmalloc(sizeof(*req));
    if (uv_shutdown(req, (uv_stream_t *)&s->tcp, shutdown_done) < 0)
        free(req);
}

void stream_close(struct stream *s, uv_close_cb cb)
{
    if (s->closing)
        return;
    s->closing = true;
    s->reading = false;
    free(s->in);
    s->in = NULL;
    s->in_len = s->in_cap = 0;
    tls_conn_free(s->tls);
    s->tls = NULL;
    if (s->uring) {
        stream_uring_close(s, cb);
        return;
    }
    uv_close((uv_handle_t *)&s->tcp, cb);
}

bool stream_is_quiet(const struct stream *s)
{
    if (s->uring)
        return !s->ur.recv_busy && !s->ur.send_busy && !s->ur.stashed && !s->ur.stash_end;
    /* Nothing of the TCP handle may be pending in libuv's poller: no write in progress. */
    return !(s->tcp.io_watcher.pevents & POLLOUT);
}

void stream_hold(struct stream *s, bool on)
{
    if (s->uring)
        stream_uring_hold(s, on);
}
