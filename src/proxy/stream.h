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
 *
 * A plain TCP stream may instead do its I/O through the worker's io_uring
 * (stream_uring.c, once stream_uring_attach() was called): receives land
 * in buffers the kernel picks from a ring the worker provides, writes are
 * copied and sent by the kernel, and one system call per loop iteration
 * serves every connection of the worker. The owner sees the same calls and
 * callbacks either way; only timing differs (with io_uring every write is
 * queued until the kernel reports it sent).
 */
#ifndef PLANE_PROXY_STREAM_H
#define PLANE_PROXY_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "../common/list.h"

struct buf;
struct stream;
struct stream_ring;
struct tls_conn;
struct worker;

#define STREAM_IN_GROW (16 * 1024) /* free room offered to a read into the stream's own buffer */
#define STREAM_RING_BUF (16 * 1024)   /* io_uring: size of each receive buffer the worker provides */
#define STREAM_RING_NBUFS 64          /* io_uring: receive buffers per worker (a power of two) */

struct stream_ops {
    /*
     * Input arrived. data/len are transient (the worker's buffer) unless data
     * is NULL, which means "look at s->in". Whatever the owner does not use
     * of transient data it must keep with stream_keep() before returning.
     */
    void (*input)(struct stream *s, const char *data, size_t len);
    /* The peer closed (UV_EOF) or the connection failed (another UV error). Once. */
    void (*end)(struct stream *s, int status);
    /* Every queued write has completed (io_uring: or one failed after ->end: the next write fails). */
    void (*drained)(struct stream *s);
    /* Optional: a receive cancelled by stream_hold() is gone; the stream is quiet. */
    void (*quiet)(struct stream *s);
};

/* The io_uring side of a stream (stream_uring.c); all zero on the libuv path. */
struct stream_uring {
    int fd;                       /* the socket (owned by the TCP handle) */
    bool recv_busy;               /* a receive is armed in the kernel (multishot: until its last completion) */
    bool recv_cancel;             /* its cancellation is submitted */
    bool bulk;                    /* receives fill whole buffers: they are single-shot (see arm()) */
    unsigned char short_run;      /* bulk: short receives in a row */
    bool quiet_due;               /* stream_hold cancelled it: ->quiet runs when it ends */
    bool send_busy;               /* a send is in the kernel */
    bool hold;                    /* no new receive: the stream is being handed to splice */
    bool stashed;                 /* s->in has bytes that came while not reading, unseen by the owner */
    bool stash_end;               /* the end (stash_status) came while not reading */
    bool deliver_queued;          /* on the ring's list of stashes to hand over */
    bool shut_pending;            /* send our FIN once the queue is empty */
    bool tcp_closed;              /* stream_close: the handle is closed */
    int stash_status;
    int err;                      /* a send failed: later writes fail with it */
    char *out;                    /* owned: bytes being sent, out[off..len) still to go */
    size_t out_len, out_off, out_cap;
    void *send_sqe;               /* the send's entry while not yet submitted (send_gen is current) */
    unsigned send_gen;
    char *next;                   /* owned: bytes written while a send is in the kernel */
    size_t next_len, next_cap;
    uv_close_cb close_cb;         /* stream_close's, run once the kernel holds nothing of ours */
    struct list_node deliver;     /* in the ring's stash list */
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
    bool uring;                   /* I/O through the worker's io_uring, not libuv */
    struct stream_uring ur;
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
/* Nothing of the stream's I/O is pending (splice may take its socket). */
bool stream_is_quiet(const struct stream *s);
/* Bytes a single read delivers at most: an input this long means more may be waiting. */
size_t stream_read_size(const struct stream *s);
/*
 * io_uring: on, no new receive is started and the one in the kernel is
 * cancelled (ops->quiet follows once it has ended, however it ended; bytes
 * that came first are handed over before, and end the hold); off, reading resumes
 * as the owner asked. No-op on the libuv path.
 */
void stream_hold(struct stream *s, bool on);
/* Ends the stream for the owner (ops->end) unless it has ended or is closing. */
void stream_report_end(struct stream *s, int status);

/* ---- the io_uring backend (stream_uring.c) ---- */

/*
 * The worker's ring: made on the worker's thread after its loop. NULL
 * (with the reason logged) when the kernel refuses; the worker then stays
 * on libuv's epoll.
 */
struct stream_ring *stream_ring_new(struct worker *w);
/* The worker is ending: the ring's handles close once the kernel holds nothing of ours. */
void stream_ring_stop(struct stream_ring *r);
/* After the loop has ended. NULL is fine. */
void stream_ring_free(struct stream_ring *r);
/* Whether the ring's receives may be multishot: the kernel ends one after a
 * set total (a recent addition); without that every receive is single-shot. */
bool stream_ring_multishot(const struct stream_ring *r);
/* True if a ring with what stream_ring_new needs can be made here; else why not in err. */
bool stream_ring_probe(struct buf *err);
/* Moves a connected plain TCP stream that has never read or written to the worker's ring. */
void stream_uring_attach(struct stream *s);
/* The io_uring halves of stream.c's calls, for s->uring streams. */
void stream_uring_read(struct stream *s, bool on);
int stream_uring_write(struct stream *s, const uv_buf_t *bufs, unsigned n);
void stream_uring_shutdown(struct stream *s);
void stream_uring_close(struct stream *s, uv_close_cb cb);
void stream_uring_hold(struct stream *s, bool on);

#endif
