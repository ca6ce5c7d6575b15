/* SPDX-License-Identifier: MIT */
/*
 * stream.h - one TCP connection of the proxy, either side: a libuv TCP
 * handle, optional TLS, an input buffer that only holds bytes the owner
 * could not use yet, and writes that never wait for memory to be free.
 *
 * Reads land in the worker's shared buffer; the owner handles them from
 * there and gives back what it could not use (stream_keep()), so an idle
 * connection holds no buffer at all. Writes are tried at once and only
 * the part the kernel did not take is copied and queued; `queued` is what
 * the owner looks at to stop reading the other side (backpressure), and
 * ops->drained() says when to start again.
 */
#ifndef PLANE_PROXY_STREAM_H
#define PLANE_PROXY_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct stream;
struct tls_conn;
struct worker;

#define STREAM_IN_GROW (16 * 1024) /* free room offered to a read into the stream's own buffer */

struct stream_ops {
    /*
     * Input arrived. data/len are transient (the worker's buffer) unless data
     * is NULL, which means "look at s->in". Whatever the owner does not use
     * of transient data it must keep with stream_keep() before returning.
     */
    void (*input)(struct stream *s, const char *data, size_t len);
    /* The peer closed (UV_EOF) or the connection failed (another UV error). Once. */
    void (*end)(struct stream *s, int status);
    /* Every queued write has completed. */
    void (*drained)(struct stream *s);
};

struct stream {
    uv_tcp_t tcp;
    struct worker *w;             /* borrowed; owns the loop */
    const struct stream_ops *ops;
    struct tls_conn *tls;         /* owned; NULL for plain TCP */
    char *in;                     /* owned: bytes the owner has yet to use; NULL when empty */
    size_t in_len, in_cap;
    size_t queued;                /* bytes in writes that have not completed */
    bool reading;                 /* uv_read_start is in effect */
    bool ended;                   /* ops->end has run */
    bool closing;                 /* stream_close was called */
    bool shut;                    /* our FIN was sent (or is queued) */
    bool spliced;                 /* the socket belongs to a splice tunnel: no reads or writes here */
};

/* Initialises the TCP handle on the worker's loop. */
void stream_init(struct stream *s, struct worker *w, const struct stream_ops *ops);
/* Starts/stops reading; both are no-ops if already so. */
void stream_read(struct stream *s, bool on);
/*
 * Writes bufs in order: what the socket takes now is sent at once, the
 * rest is copied and queued. 0, or a UV error (the stream is then broken:
 * the caller should close it).
 */
int stream_write(struct stream *s, const uv_buf_t *bufs, unsigned n);
/* Convenience: one buffer. */
int stream_send(struct stream *s, const char *data, size_t len);
/* Appends to s->in (the part of transient input the owner did not use). */
void stream_keep(struct stream *s, const char *data, size_t len);
/* Drops the first n bytes of s->in; the buffer is freed when it empties. */
void stream_consume(struct stream *s, size_t n);
/* The owner used `used` bytes of the input it handled, data[0..len): from_in
 * (it was s->in): those bytes go; else (transient) the rest is kept. */
void stream_used(struct stream *s, bool from_in, const char *data, size_t len, size_t used);
/* Sends our FIN once every queued write is out (TLS: close_notify first). */
void stream_shutdown(struct stream *s);
/* Closes the handle; cb runs once it is closed (free the owner there). */
void stream_close(struct stream *s, uv_close_cb cb);

#endif
