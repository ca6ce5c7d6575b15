/* SPDX-License-Identifier: MIT */
/*
 * stream_uring.c - the proxy's plain TCP connections over io_uring (see
 * stream.h). Each worker has one ring, set up for a single submitter with
 * its completions run only when the worker asks (DEFER_TASKRUN), and an
 * eventfd the kernel signals when work for the ring is waiting; libuv
 * watches that eventfd, so timers, TLS, HTTP/2 bridges and splice stay on
 * the same loop. A stream's receive is multishot, armed once and left in
 * the kernel while the owner reads, each completion with a buffer the
 * kernel picks from the worker's provided-buffer ring; the buffer goes back
 * to the ring as soon as the owner's input callback has returned (what the
 * owner keeps it copies, as on the libuv path). Writes are copied into the
 * stream's out buffer (one send in the kernel at a time, the rest waits in
 * `next`). An owner that stops reading does not cancel the receive at once:
 * a tunnel pauses a side after every message until the other side's send
 * completes, and bytes seldom come in between. If they do, they wait in the
 * stream's input until the owner reads again, and the receive is cancelled
 * (armed again when the owner reads). A multishot receive also ends after
 * MSHOT_TOTAL bytes (and is armed again), which bounds what a paused stream
 * holds. A stream whose receives fill whole buffers (a bulk transfer, which
 * pauses often and has bytes waiting when it does) takes single-shot
 * receives instead, one at a time: its paused side then holds one buffer,
 * not a burst copied twice; a few short receives in a row take it back to
 * multishot. Kernels that refuse a limit on a multishot receive (it is
 * recent) get single-shot receives only; each worker asks at start.
 * New requests are submitted, and completions collected, once per loop
 * iteration (and again while collecting yields more), so one system call
 * serves many connections.
 *
 * A stream never has both paths active: it is attached right after its
 * socket connects or is accepted, before any read or write, and keeps its
 * TCP handle only for connect, accept, socket options and close. Nothing
 * the kernel still holds may be freed: the stream's close callback runs
 * only once every receive and send of it has completed (cancelled on
 * close) and its handle is closed.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "../common/buf.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "stream.h"
#include "worker.h"

#define RING_ENTRIES 1024
/* Completions the ring holds: every idle connection has a receive in the kernel, and a
 * stop cancels them all at once (the kernel keeps an overflow beyond it, at a cost). */
#define RING_CQ_ENTRIES 32768
#define RING_FLAGS (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)
#define RING_ROUNDS 8 /* submit-and-collect rounds per wakeup before yielding to the loop */
#define RING_BGID 0
#define BULK_EXIT 4    /* short receives in a row that end a stream's bulk transfer */
/* A multishot receive ends once it has brought this much (and is armed again
 * if the owner reads): the most a stream paused while it is armed can hold. */
#define MSHOT_TOTAL (4 * STREAM_RING_BUF)
#define OUT_MIN 4096   /* an out buffer's first size; buffers of this size are recycled */
#define SPARE_MAX 256  /* recycled out buffers kept per worker */

/* What a completion is for: the low bits of its user_data (streams are 8-aligned). */
enum { OP_NONE = 0, OP_RECV = 1, OP_SEND = 2, OP_MASK = 3 };

struct stream_ring {
    struct worker *w;            /* borrowed */
    struct io_uring ring;
    struct io_uring_buf_ring *br; /* owned (mmap): the provided receive buffers' ring */
    size_t br_size;
    char *bufs;                  /* owned: STREAM_RING_NBUFS * STREAM_RING_BUF */
    int efd;                     /* owned: signalled when completions wait */
    uv_poll_t poll;              /* watches efd */
    uv_prepare_t prepare;        /* submits before the loop blocks */
    struct list_node deliver;    /* streams with stashed input to hand over */
    unsigned inflight;           /* receives and sends in the kernel */
    unsigned handles;            /* open uv handles */
    unsigned gen;                /* submissions so far: an entry prepared since the last is still ours */
    bool stopping;
    bool reaping;                /* reap() is on the stack */
    bool mshot;                  /* multishot receives can be limited to MSHOT_TOTAL bytes */
    char *spare[SPARE_MAX];      /* owned: out buffers of OUT_MIN bytes, free for the taking */
    unsigned nspare;
};

static struct stream_ring *ring_of(const struct stream *s)
{
    return s->w->ring;
}

static void submit(struct stream_ring *r, bool get_events)
{
    r->gen++;
    if (get_events)
        io_uring_submit_and_get_events(&r->ring);
    else
        io_uring_submit(&r->ring);
}

static struct io_uring_sqe *get_sqe(struct stream_ring *r)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);

    if (!sqe) {
        /* The queue is full: hand it to the kernel now. */
        submit(r, false);
        sqe = io_uring_get_sqe(&r->ring);
    }
    if (!sqe)
        BUG("io_uring submission queue stays full");
    return sqe;
}

static void give_back(struct stream_ring *r, unsigned bid)
{
    io_uring_buf_ring_add(r->br, r->bufs + (size_t)bid * STREAM_RING_BUF, STREAM_RING_BUF, (unsigned short)bid,
                          io_uring_buf_ring_mask(STREAM_RING_NBUFS), 0);
    io_uring_buf_ring_advance(r->br, 1);
}

/* Arms the receive if the owner wants input and nothing stands in the way:
 * multishot, or one single-shot receive while the stream is in bulk. */
static void arm(struct stream *s)
{
    struct stream_ring *r = ring_of(s);
    struct io_uring_sqe *sqe;

    if (!s->reading || s->ur.recv_busy || s->ur.hold || s->ur.stashed || s->ur.stash_end || s->ended ||
        s->closing || s->spliced)
        return;
    sqe = get_sqe(r);
    if (s->ur.bulk || !r->mshot) {
        io_uring_prep_recv(sqe, s->ur.fd, NULL, STREAM_RING_BUF, 0);
    } else {
        io_uring_prep_recv_multishot(sqe, s->ur.fd, NULL, 0, 0);
        sqe->file_index = MSHOT_TOTAL; /* the kernel's optlen: the most it brings in all */
    }
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RING_BGID;
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)s | OP_RECV);
    s->ur.recv_busy = true;
    r->inflight++;
}

/* Asks the kernel to end the receive; its last completion comes without IORING_CQE_F_MORE. */
static void cancel_recv(struct stream *s)
{
    struct io_uring_sqe *sqe;

    if (!s->ur.recv_busy || s->ur.recv_cancel)
        return;
    sqe = get_sqe(ring_of(s));
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)s | OP_RECV, 0);
    io_uring_sqe_set_data64(sqe, OP_NONE);
    s->ur.recv_cancel = true;
}

/* Tracks whether the stream is in a bulk transfer from the size of what a
 * receive brought; a multishot receive still armed that fills a buffer is
 * ended, and the next one is single-shot. */
static void note_size(struct stream *s, int res)
{
    if (res == STREAM_RING_BUF) {
        s->ur.short_run = 0;
        if (!s->ur.bulk) {
            s->ur.bulk = true;
            cancel_recv(s); /* (nothing to end if this was the receive's last completion) */
        }
    } else if (s->ur.bulk && ++s->ur.short_run >= BULK_EXIT) {
        s->ur.bulk = false;
        s->ur.short_run = 0;
    }
}

static void prep_send(struct stream *s, struct io_uring_sqe *sqe)
{
    io_uring_prep_send(sqe, s->ur.fd, s->ur.out + s->ur.out_off, s->ur.out_len - s->ur.out_off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)s | OP_SEND);
}

static void send_out(struct stream *s)
{
    struct stream_ring *r = ring_of(s);
    struct io_uring_sqe *sqe = get_sqe(r);

    prep_send(s, sqe);
    s->ur.send_sqe = sqe;
    s->ur.send_gen = r->gen;
    s->ur.send_busy = true;
    r->inflight++;
}

/* Adds bufs to an out buffer; an idle stream holds none, so the first bytes take a spare one. */
static void append(struct stream_ring *r, char **p, size_t *len, size_t *cap, const uv_buf_t *bufs, unsigned n,
                   size_t total)
{
    if (!*p && total <= OUT_MIN && r->nspare > 0) {
        *p = r->spare[--r->nspare];
        *cap = OUT_MIN;
    }
    if (*len + total > *cap) {
        size_t c = *cap ? *cap : OUT_MIN;
        while (c < *len + total)
            c *= 2;
        *p = xrealloc(*p, c);
        *cap = c;
    }
    for (unsigned i = 0; i < n; i++) {
        memcpy(*p + *len, bufs[i].base, bufs[i].len);
        *len += bufs[i].len;
    }
}

/* Gives an empty out buffer back: kept for the next stream that writes, or freed. */
static void release(struct stream_ring *r, char **p, size_t *cap)
{
    if (*p && *cap == OUT_MIN && r->nspare < SPARE_MAX)
        r->spare[r->nspare++] = *p;
    else
        free(*p);
    *p = NULL;
    *cap = 0;
}

static void ring_maybe_done(struct stream_ring *r)
{
    if (!r->stopping || r->inflight > 0 || r->handles == 0 || uv_is_closing((uv_handle_t *)&r->poll))
        return;
    uv_close((uv_handle_t *)&r->poll, NULL);
    uv_close((uv_handle_t *)&r->prepare, NULL);
}

/* The stream is closed and the kernel has nothing of it: the owner may free it. */
static void try_finish(struct stream *s)
{
    if (!s->ur.tcp_closed || s->ur.recv_busy || s->ur.send_busy)
        return;
    release(ring_of(s), &s->ur.out, &s->ur.out_cap);
    release(ring_of(s), &s->ur.next, &s->ur.next_cap);
    s->ur.close_cb((uv_handle_t *)&s->tcp);
}

static void queue_deliver(struct stream *s)
{
    if (s->ur.deliver_queued)
        return;
    s->ur.deliver_queued = true;
    list_insert_tail(&ring_of(s)->deliver, &s->ur.deliver);
}

/*
 * A stream held for a splice hand-over (stream_uring_hold) is quiet once its
 * receive has ended, however it ended: the owner hears so, and either hands
 * the sockets over or lets both sides read again. Anything else re-arms.
 */
static void after_recv(struct stream *s, bool quiet)
{
    if (quiet && !s->closing && s->ops->quiet)
        s->ops->quiet(s);
    else
        arm(s);
}

/*
 * One completion of the receive: bytes (more may follow while
 * IORING_CQE_F_MORE is set) or its end (EOF, an error, no buffer left, a
 * cancellation).
 */
static void recv_done(struct stream_ring *r, struct stream *s, int res, unsigned flags)
{
    char *data = NULL;
    unsigned bid = 0;
    bool last = !(flags & IORING_CQE_F_MORE);
    bool quiet = false;

    if (last) {
        r->inflight--;
        s->ur.recv_busy = false;
        s->ur.recv_cancel = false;
        quiet = s->ur.quiet_due;
        s->ur.quiet_due = false;
    }
    if (flags & IORING_CQE_F_BUFFER) {
        bid = flags >> IORING_CQE_BUFFER_SHIFT;
        data = r->bufs + (size_t)bid * STREAM_RING_BUF;
    }
    if (s->closing) {
        if (data)
            give_back(r, bid);
        if (last)
            try_finish(s);
        return;
    }
    if (res > 0 && data) {
        s->ur.hold = false; /* bytes came first: the tunnel goes on copying */
        note_size(s, res);
        if (!s->reading) {
            /* The owner has paused: keep them for when it reads again, and receive no more till then. */
            stream_keep(s, data, (size_t)res);
            s->ur.stashed = true;
            cancel_recv(s);
        } else if (s->in_len > 0) {
            stream_keep(s, data, (size_t)res);
            s->ops->input(s, NULL, 0);
        } else {
            s->ops->input(s, data, (size_t)res);
        }
        give_back(r, bid);
        if (last)
            after_recv(s, quiet);
        return;
    }
    if (data)
        give_back(r, bid);
    if (!last)
        return; /* (an error always ends a multishot receive) */
    switch (res) {
    case -ENOBUFS: /* every buffer was taken: they are back by the next submission */
    case -EINTR:
    case -EAGAIN:
    case -ECANCELED:
        after_recv(s, quiet);
        return;
    }
    if (!s->reading || s->ur.stashed) {
        /* Not reading, or bytes kept while paused are not handed over yet: the end waits behind them. */
        s->ur.stash_end = true;
        s->ur.stash_status = res == 0 ? UV_EOF : res;
        if (s->reading)
            queue_deliver(s);
    } else {
        stream_report_end(s, res == 0 ? UV_EOF : res);
    }
    if (quiet)
        after_recv(s, true); /* (arm() refuses an ended stream) */
}

static void send_done(struct stream *s, int res)
{
    s->ur.send_busy = false;
    if (s->closing) {
        try_finish(s);
        return;
    }
    if (res == -EINTR || res == -EAGAIN) {
        send_out(s);
        return;
    }
    if (res <= 0) {
        s->ur.err = res < 0 ? res : UV_EPIPE;
        s->queued = 0;
        s->ur.out_len = s->ur.out_off = s->ur.next_len = 0;
        if (!s->ended) {
            s->ended = true;
            stream_read(s, false);
            s->ops->end(s, s->ur.err);
        } else {
            /* Ended already (the peer's FIN): the owner hears of it from its next
             * write, which fails; this makes it write again if it was waiting. */
            s->ops->drained(s);
        }
        return;
    }
    s->ur.out_off += (size_t)res;
    s->queued -= (size_t)res;
    if (s->ur.out_off < s->ur.out_len) {
        send_out(s); /* a short send: the rest, in order */
        return;
    }
    s->ur.out_len = s->ur.out_off = 0;
    if (s->ur.next_len > 0) {
        char *p = s->ur.out;
        size_t cap = s->ur.out_cap;
        s->ur.out = s->ur.next;
        s->ur.out_cap = s->ur.next_cap;
        s->ur.out_len = s->ur.next_len;
        s->ur.next = p;
        s->ur.next_cap = cap;
        s->ur.next_len = 0;
        send_out(s);
        return;
    }
    /* Everything is out: an idle connection holds no buffer (10,000 idle WebSockets). */
    release(ring_of(s), &s->ur.out, &s->ur.out_cap);
    release(ring_of(s), &s->ur.next, &s->ur.next_cap);
    if (s->ur.shut_pending) {
        s->ur.shut_pending = false;
        shutdown(s->ur.fd, SHUT_WR);
    }
    s->ops->drained(s);
}

static void complete(struct stream_ring *r, uint64_t ud, int res, unsigned flags)
{
    struct stream *s = (struct stream *)(uintptr_t)(ud & ~(uint64_t)OP_MASK);

    if ((ud & OP_MASK) == OP_NONE)
        return; /* a cancellation's own result */
    if ((ud & OP_MASK) == OP_RECV) {
        recv_done(r, s, res, flags);
    } else {
        r->inflight--;
        send_done(s, res);
    }
}

/* Hands stashed input to owners that want it again. */
static void deliver(struct stream_ring *r)
{
    while (!list_empty(&r->deliver)) {
        struct stream *s = container_of(r->deliver.next, struct stream, ur.deliver);
        list_remove(&s->ur.deliver);
        s->ur.deliver_queued = false;
        if (s->closing || !s->reading)
            continue; /* queued again when reading resumes */
        if (s->ur.stashed) {
            s->ur.stashed = false;
            if (s->in_len > 0)
                s->ops->input(s, NULL, 0);
            if (s->closing)
                continue;
        }
        if (s->ur.stash_end) {
            if (!s->reading)
                continue;
            s->ur.stash_end = false;
            stream_report_end(s, s->ur.stash_status);
            continue;
        }
        arm(s);
    }
}

/* Submits what is queued and handles what has completed, a few rounds. */
static void reap(struct stream_ring *r)
{
    struct io_uring_cqe *cqe;
    bool more = true;

    if (r->reaping)
        return;
    r->reaping = true;
    for (int round = 0; round < RING_ROUNDS && more; round++) {
        unsigned n = 0;
        deliver(r);
        /*
         * One call may run only so much deferred work (Linux 6.13 limits
         * each pass to 20 items and keeps the rest), so ask until a round
         * brings nothing back, and if the rounds run out first, come back
         * on the loop's next turn rather than count on another signal.
         */
        submit(r, true);
        while (io_uring_peek_cqe(&r->ring, &cqe) == 0) {
            uint64_t ud = cqe->user_data;
            int res = cqe->res;
            unsigned flags = cqe->flags;
            io_uring_cqe_seen(&r->ring, cqe);
            complete(r, ud, res, flags);
            n++;
        }
        more = n > 0 || !list_empty(&r->deliver);
    }
    if (more || io_uring_cq_ready(&r->ring) > 0 || io_uring_sq_ready(&r->ring) > 0) {
        /* Work may be left: make sure the loop comes back without sleeping. */
        eventfd_write(r->efd, 1);
    }
    r->reaping = false;
    ring_maybe_done(r);
}

static void poll_cb(uv_poll_t *p, int status, int events)
{
    struct stream_ring *r = p->data;
    eventfd_t v;

    (void)status;
    (void)events;
    /* Reset first: work that arrives after this signals again. */
    (void)eventfd_read(r->efd, &v);
    reap(r);
}

static void prepare_cb(uv_prepare_t *p)
{
    struct stream_ring *r = p->data;

    if (io_uring_sq_ready(&r->ring) > 0 || io_uring_cq_ready(&r->ring) > 0 || !list_empty(&r->deliver))
        reap(r);
}

/*
 * Can a multishot receive be limited to MSHOT_TOTAL bytes in all? Older
 * kernels refuse the limit (EINVAL at once); those, or any failure here,
 * keep single-shot receives, whose paused stream holds one buffer at most.
 * One armed on an empty socket pair is then cancelled; nothing here waits
 * for a completion that might not come (a refused entry stops the rest of
 * its submission), and none takes longer than a second.
 */
static bool mshot_limit_probe(struct io_uring *ring)
{
    struct __kernel_timespec ts = {.tv_sec = 1};
    struct io_uring_sqe *sqe;
    struct io_uring_cqe *cqe;
    const uint64_t probe = 8 | OP_NONE; /* (no stream is ever at 8; complete() ignores it) */
    int sv[2], recv_res = 0, seen = 0;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return false;
    sqe = io_uring_get_sqe(ring);
    io_uring_prep_recv_multishot(sqe, sv[0], NULL, 0, 0);
    sqe->file_index = MSHOT_TOTAL;
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = RING_BGID;
    io_uring_sqe_set_data64(sqe, probe);
    if (io_uring_submit(ring) == 1 && io_uring_peek_cqe(ring, &cqe) != 0) {
        /* Armed: cancel it, and collect both the cancellation's result and the receive's end. */
        sqe = io_uring_get_sqe(ring);
        io_uring_prep_cancel64(sqe, probe, 0);
        io_uring_sqe_set_data64(sqe, OP_NONE);
        if (io_uring_submit(ring) == 1) {
            while (seen < 2 && io_uring_wait_cqe_timeout(ring, &cqe, &ts) == 0) {
                if (cqe->user_data == probe)
                    recv_res = cqe->res;
                io_uring_cqe_seen(ring, cqe);
                seen++;
            }
        }
    } else {
        while (io_uring_peek_cqe(ring, &cqe) == 0) /* refused at once */
            io_uring_cqe_seen(ring, cqe);
    }
    close(sv[0]);
    close(sv[1]);
    return recv_res == -ECANCELED;
}

static int ring_init(struct io_uring *ring, unsigned entries)
{
    struct io_uring_params p;

    memset(&p, 0, sizeof(p));
    p.flags = RING_FLAGS | IORING_SETUP_CQSIZE;
    p.cq_entries = RING_CQ_ENTRIES;
    return io_uring_queue_init_params(entries, ring, &p);
}

bool stream_ring_multishot(const struct stream_ring *r)
{
    return r->mshot;
}

bool stream_ring_probe(struct buf *err)
{
    struct io_uring ring;
    FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
    int disabled = 0, rc;

    if (f) {
        if (fscanf(f, "%d", &disabled) != 1)
            disabled = 0;
        fclose(f);
    }
    if (disabled == 2) {
        buf_printf(err, "io_uring is disabled (kernel.io_uring_disabled = 2)");
        return false;
    }
    rc = ring_init(&ring, 8);
    if (rc < 0) {
        buf_printf(err, "io_uring_setup: %s", strerror(-rc));
        return false;
    }
    io_uring_queue_exit(&ring);
    return true;
}

struct stream_ring *stream_ring_new(struct worker *w)
{
    struct stream_ring *r = xcalloc(1, sizeof(*r));
    struct io_uring_buf_reg reg;
    int rc;

    r->w = w;
    r->efd = -1;
    list_init(&r->deliver);
    rc = ring_init(&r->ring, RING_ENTRIES);
    if (rc < 0) {
        log_warn("worker %u: io_uring_setup: %s; using epoll", w->idx, strerror(-rc));
        free(r);
        return NULL;
    }
    r->br_size = STREAM_RING_NBUFS * sizeof(struct io_uring_buf);
    r->br = mmap(NULL, r->br_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (r->br == MAP_FAILED) {
        rc = -errno;
        r->br = NULL;
        goto fail;
    }
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)(uintptr_t)r->br;
    reg.ring_entries = STREAM_RING_NBUFS;
    reg.bgid = RING_BGID;
    if ((rc = io_uring_register_buf_ring(&r->ring, &reg, 0)) < 0)
        goto fail;
    r->bufs = xmalloc((size_t)STREAM_RING_NBUFS * STREAM_RING_BUF);
    io_uring_buf_ring_init(r->br);
    for (unsigned i = 0; i < STREAM_RING_NBUFS; i++)
        io_uring_buf_ring_add(r->br, r->bufs + (size_t)i * STREAM_RING_BUF, STREAM_RING_BUF, (unsigned short)i,
                              io_uring_buf_ring_mask(STREAM_RING_NBUFS), (int)i);
    io_uring_buf_ring_advance(r->br, STREAM_RING_NBUFS);
    r->mshot = mshot_limit_probe(&r->ring);
    r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (r->efd < 0) {
        rc = -errno;
        goto fail;
    }
    if ((rc = io_uring_register_eventfd(&r->ring, r->efd)) < 0)
        goto fail;
    /* Saves a descriptor lookup on every submission; best effort. */
    (void)io_uring_register_ring_fd(&r->ring);
    uv_poll_init(&w->loop, &r->poll, r->efd);
    r->poll.data = r;
    uv_poll_start(&r->poll, UV_READABLE, poll_cb);
    uv_prepare_init(&w->loop, &r->prepare);
    r->prepare.data = r;
    uv_prepare_start(&r->prepare, prepare_cb);
    r->handles = 2;
    return r;
fail:
    log_warn("worker %u: cannot set up io_uring: %s; using epoll", w->idx, strerror(-rc));
    io_uring_queue_exit(&r->ring);
    if (r->br)
        munmap(r->br, r->br_size);
    if (r->efd >= 0)
        close(r->efd);
    free(r->bufs);
    free(r);
    return NULL;
}

void stream_ring_stop(struct stream_ring *r)
{
    if (!r || r->stopping)
        return;
    r->stopping = true;
    reap(r); /* submits the cancellations of what was just closed */
    ring_maybe_done(r);
}

void stream_ring_free(struct stream_ring *r)
{
    if (!r)
        return;
    io_uring_queue_exit(&r->ring);
    munmap(r->br, r->br_size);
    close(r->efd);
    free(r->bufs);
    while (r->nspare > 0)
        free(r->spare[--r->nspare]);
    free(r);
}

size_t stream_read_size(const struct stream *s)
{
    return s->uring ? STREAM_RING_BUF : WORKER_BUF_SIZE;
}

void stream_uring_attach(struct stream *s)
{
    uv_os_fd_t fd;

    if (!s->w->ring || s->tls || s->reading || s->queued ||
        uv_fileno((uv_handle_t *)&s->tcp, &fd) < 0)
        return;
    s->ur.fd = fd;
    s->uring = true;
    list_init(&s->ur.deliver);
}

void stream_uring_read(struct stream *s, bool on)
{
    s->reading = on;
    if (!on)
        return; /* the receive stays armed; what it brings is stashed, and then it is cancelled */
    if (s->ur.stashed || s->ur.stash_end)
        queue_deliver(s); /* handed over from the loop, not from inside the owner's call */
    else
        arm(s);
}

int stream_uring_write(struct stream *s, const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0;

    if (s->ur.err)
        return s->ur.err;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    if (s->ur.send_busy && s->ur.send_gen == ring_of(s)->gen && s->ur.next_len == 0) {
        /* The send is not submitted yet (and nothing waits behind it, as after a
         * short send): it takes these bytes too. */
        append(ring_of(s), &s->ur.out, &s->ur.out_len, &s->ur.out_cap, bufs, n, total);
        prep_send(s, s->ur.send_sqe);
    } else if (s->ur.send_busy) {
        append(ring_of(s), &s->ur.next, &s->ur.next_len, &s->ur.next_cap, bufs, n, total);
    } else {
        append(ring_of(s), &s->ur.out, &s->ur.out_len, &s->ur.out_cap, bufs, n, total);
        send_out(s);
    }
    s->queued += total;
    return 0;
}

void stream_uring_shutdown(struct stream *s)
{
    if (s->queued > 0)
        s->ur.shut_pending = true;
    else
        shutdown(s->ur.fd, SHUT_WR);
}

static void tcp_closed(uv_handle_t *h)
{
    struct stream *s = h->data;

    s->ur.tcp_closed = true;
    try_finish(s);
}

void stream_uring_close(struct stream *s, uv_close_cb cb)
{
    struct stream_ring *r = ring_of(s);

    s->ur.close_cb = cb;
    if (s->ur.deliver_queued) {
        list_remove(&s->ur.deliver);
        s->ur.deliver_queued = false;
    }
    if (s->ur.recv_busy || s->ur.send_busy) {
        /* By descriptor, while it is still ours: submitted now, before the handle closes it. */
        struct io_uring_sqe *sqe = get_sqe(r);
        io_uring_prep_cancel_fd(sqe, s->ur.fd, IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, OP_NONE);
        submit(r, false); /* what is queued to send goes first, as far as the socket takes it */
    }
    uv_close((uv_handle_t *)&s->tcp, tcp_closed);
}

void stream_uring_hold(struct stream *s, bool on)
{
    if (!on) {
        s->ur.quiet_due = false;
        if (s->ur.hold) {
            s->ur.hold = false;
            arm(s);
        }
        return;
    }
    if (s->ur.hold)
        return;
    s->ur.hold = true;
    if (s->ur.recv_busy) {
        s->ur.quiet_due = true;
        cancel_recv(s);
    }
}
