/* SPDX-License-Identifier: MIT */
/*
 * test_stream_uring.c - the proxy's io_uring streams (src/proxy/stream_uring.c)
 * on a worker-like loop of their own, over loopback socket pairs: the
 * orderings a proxy under load produces and integration tests rarely hit.
 * Skipped where the kernel offers no ring with what the proxy needs.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/common/buf.h"
#include "../../src/common/xalloc.h"
#include "../../src/proxy/stream.h"
#include "../../src/proxy/worker.h"
#include "test.h"

/* A worker with nothing but its loop and its ring. */
static struct worker *ring_worker(void)
{
    struct buf why = BUF_INIT;

    if (!stream_ring_probe(&why)) {
        printf("  (no io_uring here: %s)\n", buf_cstr(&why));
        buf_release(&why);
        return NULL;
    }
    struct worker *w = xcalloc(1, sizeof(*w));
    ASSERT_OK(uv_loop_init(&w->loop));
    w->ring = stream_ring_new(w);
    ASSERT_NOT_NULL(w->ring);
    return w;
}

static int closed;
static void on_closed(uv_handle_t *h)
{
    (void)h;
    closed++;
}

/* Closes the streams, lets the kernel give everything back, frees the worker. */
static void ring_worker_free(struct worker *w, struct stream **s, int n)
{
    closed = 0;
    for (int i = 0; i < n; i++)
        stream_close(s[i], on_closed);
    stream_ring_stop(w->ring);
    for (int i = 0; i < 2000 && closed < n; i++)
        uv_run(&w->loop, UV_RUN_NOWAIT);
    ASSERT_EQ(closed, n);
    uv_run(&w->loop, UV_RUN_DEFAULT); /* the ring's own handles */
    stream_ring_free(w->ring);
    ASSERT_OK(uv_loop_close(&w->loop));
    free(w);
}

/* A connected pair on loopback: *ours (for a stream) and *peer (the test's end). */
static void tcp_pair(int *ours, int *peer, int peer_rcvbuf, int our_sndbuf)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM, 0);

    ASSERT_OK(bind(l, (struct sockaddr *)&sa, sizeof(sa)));
    ASSERT_OK(listen(l, 4));
    ASSERT_OK(getsockname(l, (struct sockaddr *)&sa, &len));
    *peer = socket(AF_INET, SOCK_STREAM, 0);
    if (peer_rcvbuf)
        setsockopt(*peer, SOL_SOCKET, SO_RCVBUF, &peer_rcvbuf, sizeof(peer_rcvbuf));
    ASSERT_OK(connect(*peer, (struct sockaddr *)&sa, sizeof(sa)));
    *ours = accept(l, NULL, NULL);
    ASSERT_TRUE(*ours >= 0);
    if (our_sndbuf)
        setsockopt(*ours, SOL_SOCKET, SO_SNDBUF, &our_sndbuf, sizeof(our_sndbuf));
    close(l);
}

static void attach(struct stream *s, struct worker *w, const struct stream_ops *ops, int fd)
{
    stream_init(s, w, ops);
    ASSERT_OK(uv_tcp_open(&s->tcp, fd));
    stream_uring_attach(s);
    ASSERT_TRUE(s->uring);
}

static void nop_input(struct stream *s, const char *d, size_t n)
{
    (void)s, (void)d, (void)n;
}
static void nop_end(struct stream *s, int status)
{
    (void)s, (void)status;
}
static void nop_drained(struct stream *s)
{
    (void)s;
}

/* ---- a write made while bytes wait behind a short send keeps its place ---- */

static struct stream order_s, order_t;

/* Another connection's input makes the owner write to order_s. */
static void order_t_input(struct stream *t, const char *d, size_t n)
{
    char c[100];

    (void)t, (void)d, (void)n;
    memset(c, 'C', sizeof(c));
    ASSERT_OK(stream_send(&order_s, c, sizeof(c)));
}

TEST(stream_uring_keeps_write_order_after_short_send)
{
    static const struct stream_ops sops = {nop_input, nop_end, nop_drained, NULL};
    static const struct stream_ops tops = {order_t_input, nop_end, nop_drained, NULL};
    struct worker *w = ring_worker();
    int a, pa, t, pt;

    if (!w)
        return;
    tcp_pair(&a, &pa, 4096, 4096); /* small buffers: A's send completes short */
    tcp_pair(&t, &pt, 0, 0);
    attach(&order_s, w, &sops, a);
    attach(&order_t, w, &tops, t);
    stream_read(&order_t, true);

    size_t na = 300000, want = na + 200, got = 0;
    char *a_bytes = xmalloc(na), *all = xmalloc(want + 1), b[100];
    memset(a_bytes, 'A', na);
    memset(b, 'B', sizeof(b));
    ASSERT_OK(stream_send(&order_s, a_bytes, na));
    test_run_for(&w->loop, 20);
    ASSERT_OK(stream_send(&order_s, b, sizeof(b))); /* waits behind A */
    /* The peer takes a little, so A's send completes short; then order_t's peer writes, in the same turn. */
    for (int i = 0; i < 50 && got < 20000; i++) {
        ssize_t r;
        while ((r = recv(pa, all + got, 4096, MSG_DONTWAIT)) > 0)
            got += (size_t)r;
        usleep(1000);
    }
    ASSERT_EQ(send(pt, "x", 1, 0), 1);
    usleep(20000);
    for (int i = 0; i < 5000 && got < want; i++) {
        ssize_t r = recv(pa, all + got, want + 1 - got, MSG_DONTWAIT);
        if (r > 0)
            got += (size_t)r;
        uv_run(&w->loop, UV_RUN_NOWAIT);
        if (r <= 0)
            usleep(500);
    }
    ASSERT_EQ(got, want);
    for (size_t i = 0; i < na; i++)
        if (all[i] != 'A')
            ASSERT_EQ(i, na);
    for (size_t i = na; i < na + 100; i++)
        ASSERT_EQ(all[i], 'B'); /* written before C: sent before C */
    for (size_t i = na + 100; i < want; i++)
        ASSERT_EQ(all[i], 'C');
    free(a_bytes);
    free(all);
    close(pa);
    close(pt);
    struct stream *streams[] = {&order_s, &order_t};
    ring_worker_free(w, streams, 2);
}

/* ---- a held stream is quiet however its receive ends (here: no buffer left) ---- */

#define FILLERS 80 /* more receives completing at once than the ring has buffers */
static struct stream held_x, held_y, fillers[FILLERS];
static int x_quiet_calls;

static void x_quiet(struct stream *s)
{
    x_quiet_calls++;
    stream_hold(s, false);
}
/* As a tunnel does when the other side drains: hold x for a splice hand-over. */
static void y_input(struct stream *s, const char *d, size_t n)
{
    (void)s, (void)d, (void)n;
    stream_hold(&held_x, true);
}

TEST(stream_uring_held_stream_hears_quiet_after_enobufs)
{
    static const struct stream_ops fops = {nop_input, nop_end, nop_drained, NULL};
    static const struct stream_ops xops = {nop_input, nop_end, nop_drained, x_quiet};
    static const struct stream_ops yops = {y_input, nop_end, nop_drained, NULL};
    struct worker *w = ring_worker();
    int fd, peer_x, peer_y, peer_f[FILLERS];
    static char big[16384];

    if (!w)
        return;
    x_quiet_calls = 0;
    tcp_pair(&fd, &peer_y, 0, 0);
    attach(&held_y, w, &yops, fd);
    for (int i = 0; i < FILLERS; i++) {
        tcp_pair(&fd, &peer_f[i], 0, 0);
        attach(&fillers[i], w, &fops, fd);
    }
    tcp_pair(&fd, &peer_x, 0, 0);
    attach(&held_x, w, &xops, fd);
    /* Data waits in every socket before any receive is armed: armed together, they complete at
     * submission, y's first (its input holds x), and the buffers run out before x's. */
    ASSERT_EQ(send(peer_y, "y", 1, 0), 1);
    for (int i = 0; i < FILLERS; i++)
        ASSERT_EQ(send(peer_f[i], big, sizeof(big), 0), (ssize_t)sizeof(big));
    ASSERT_EQ(send(peer_x, "x", 1, 0), 1);
    usleep(50000);
    stream_read(&held_y, true);
    for (int i = 0; i < FILLERS; i++)
        stream_read(&fillers[i], true);
    stream_read(&held_x, true);
    for (int i = 0; i < 50; i++) {
        uv_run(&w->loop, UV_RUN_NOWAIT);
        usleep(2000);
    }
    /* Either x's receive got its bytes or x heard it is quiet (and read again): never held with nothing armed. */
    ASSERT_FALSE(held_x.ur.hold && !held_x.ur.recv_busy && x_quiet_calls == 0);

    close(peer_x);
    close(peer_y);
    for (int i = 0; i < FILLERS; i++)
        close(peer_f[i]);
    struct stream *streams[FILLERS + 2] = {&held_x, &held_y};
    for (int i = 0; i < FILLERS; i++)
        streams[i + 2] = &fillers[i];
    ring_worker_free(w, streams, FILLERS + 2);
}

/* ---- a paused stream: the receive stays armed, then stops at the first bytes, and nothing is lost ---- */

static struct stream pause_s;
static char *pause_got;
static size_t pause_len, pause_inputs;

/* As a tunnel does: take the bytes, then pause until the other side's send completes. */
static void pause_input(struct stream *s, const char *d, size_t n)
{
    if (!d) {
        d = s->in;
        n = s->in_len;
    }
    if (n > 0)
        memcpy(pause_got + pause_len, d, n);
    pause_len += n;
    pause_inputs++;
    if (s->in_len > 0)
        stream_consume(s, s->in_len);
    stream_read(s, false);
}

static void pump(int fd, const char *p, size_t total, size_t *sent)
{
    while (*sent < total) {
        ssize_t r = send(fd, p + *sent, total - *sent, MSG_DONTWAIT);
        if (r <= 0)
            break;
        *sent += (size_t)r;
    }
}

TEST(stream_uring_paused_stream_keeps_order_and_bounds_what_it_holds)
{
    static const struct stream_ops ops = {pause_input, nop_end, nop_drained, NULL};
    struct worker *w = ring_worker();
    size_t total = 32u << 20, sent = 0; /* more than the sockets' buffers hold */
    char *want;
    int fd, peer;
    bool mshot;

    if (!w)
        return;
    mshot = stream_ring_multishot(w->ring);
    printf("  (receives: %s)\n", mshot ? "multishot, limited" : "single-shot");
    want = xmalloc(total);
    pause_got = xmalloc(total);
    pause_len = pause_inputs = 0;
    for (size_t i = 0; i < total; i++)
        want[i] = (char)(i % 251);
    tcp_pair(&fd, &peer, 0, 0);
    attach(&pause_s, w, &ops, fd);
    stream_read(&pause_s, true);

    /* One message; the owner pauses and reads again with nothing in between: the receive is never cancelled. */
    ASSERT_EQ(send(peer, want, 1000, 0), 1000);
    sent = 1000;
    for (int i = 0; i < 200 && pause_len < 1000; i++)
        test_run_for(&w->loop, 5);
    ASSERT_EQ(pause_len, 1000);
    ASSERT_FALSE(pause_s.reading);
    ASSERT_EQ(pause_s.ur.recv_busy, mshot); /* (single-shot: none until the owner reads) */
    stream_read(&pause_s, true);
    test_run_for(&w->loop, 20);
    ASSERT_TRUE(pause_s.ur.recv_busy);
    ASSERT_FALSE(pause_s.ur.recv_cancel);
    ASSERT_EQ(pause_inputs, 1);

    /* Bytes while paused: kept, not handed over, and the receive stops, leaving the rest in the socket. */
    pause_input(&pause_s, NULL, 0); /* (an owner pausing on its own: no bytes) */
    pause_inputs = 0;
    for (int i = 0; i < 40; i++) {
        pump(peer, want, total, &sent);
        test_run_for(&w->loop, 5);
    }
    ASSERT_EQ(pause_inputs, 0);
    ASSERT_EQ(pause_len, 1000);
    ASSERT_TRUE(pause_s.in_len > 0);
    ASSERT_FALSE(pause_s.ur.recv_busy);
    /* (multishot: what is left of its total, 4 buffers, as the stream_uring.c says) */
    ASSERT_TRUE(pause_s.in_len <= (size_t)(mshot ? 4 : 1) * STREAM_RING_BUF);
    ASSERT_TRUE(sent < total); /* the socket's buffers filled: the kernel holds the rest, not us */

    /* Reading again: everything, in order. */
    for (int i = 0; i < 400000 && pause_len < total; i++) {
        pump(peer, want, total, &sent);
        if (!pause_s.reading)
            stream_read(&pause_s, true);
        uv_run(&w->loop, UV_RUN_NOWAIT);
        if (pause_len < sent && i % 64 == 63)
            usleep(200);
    }
    ASSERT_EQ(sent, total);
    ASSERT_EQ(pause_len, total);
    ASSERT_OK(memcmp(pause_got, want, total));
    close(peer);
    free(want);
    free(pause_got);
    struct stream *streams[] = {&pause_s};
    ring_worker_free(w, streams, 1);
}

/* ---- a bulk transfer takes single-shot receives: a paused side holds one buffer ---- */

static struct stream bulk_s;
static char *bulk_got;
static size_t bulk_len;

static void bulk_input(struct stream *s, const char *d, size_t n)
{
    if (!d) {
        d = s->in;
        n = s->in_len;
    }
    memcpy(bulk_got + bulk_len, d, n);
    bulk_len += n;
    if (s->in_len > 0)
        stream_consume(s, s->in_len);
}

TEST(stream_uring_bulk_stream_takes_single_shot_receives)
{
    static const struct stream_ops ops = {bulk_input, nop_end, nop_drained, NULL};
    struct worker *w = ring_worker();
    size_t first = 256u << 10, more = 8u << 20, total = first + more, sent = 0;
    char *want;
    int fd, peer;

    if (!w)
        return;
    want = xmalloc(total);
    bulk_got = xmalloc(total + 1000);
    bulk_len = 0;
    for (size_t i = 0; i < total; i++)
        want[i] = (char)(i % 253);
    tcp_pair(&fd, &peer, 0, 0);
    attach(&bulk_s, w, &ops, fd);
    stream_read(&bulk_s, true);
    test_run_for(&w->loop, 5);
    ASSERT_FALSE(bulk_s.ur.bulk);

    /* Bytes waiting in the socket fill whole buffers: bulk. */
    pump(peer, want, first, &sent);
    ASSERT_EQ(sent, first);
    for (int i = 0; i < 200 && bulk_len < first; i++)
        test_run_for(&w->loop, 5);
    ASSERT_EQ(bulk_len, first);
    ASSERT_TRUE(bulk_s.ur.bulk);

    /* Paused while its receive is in the kernel: what that one receive brings, and nothing more. */
    test_run_for(&w->loop, 5);
    ASSERT_TRUE(bulk_s.ur.recv_busy);
    stream_read(&bulk_s, false);
    for (int i = 0; i < 40; i++) {
        pump(peer, want, total, &sent);
        test_run_for(&w->loop, 5);
    }
    ASSERT_EQ(bulk_len, first);
    ASSERT_TRUE(bulk_s.in_len > 0);
    ASSERT_TRUE(bulk_s.in_len <= (size_t)STREAM_RING_BUF);
    ASSERT_FALSE(bulk_s.ur.recv_busy);
    ASSERT_TRUE(sent < total); /* the rest is in the socket */

    /* Reading again: everything, in order. */
    stream_read(&bulk_s, true);
    for (int i = 0; i < 400000 && bulk_len < total; i++) {
        pump(peer, want, total, &sent);
        uv_run(&w->loop, UV_RUN_NOWAIT);
        if (bulk_len < sent && i % 64 == 63)
            usleep(200);
    }
    ASSERT_EQ(bulk_len, total);
    ASSERT_OK(memcmp(bulk_got, want, total));

    /* Short messages, one at a time: back to multishot. */
    for (int m = 0; m < 5; m++) {
        size_t at = bulk_len;
        ASSERT_EQ(send(peer, want, 100, 0), 100);
        for (int i = 0; i < 200 && bulk_len < at + 100; i++)
            test_run_for(&w->loop, 5);
        ASSERT_EQ(bulk_len, at + 100);
    }
    ASSERT_FALSE(bulk_s.ur.bulk);
    ASSERT_TRUE(bulk_s.ur.recv_busy);
    close(peer);
    free(want);
    free(bulk_got);
    struct stream *streams[] = {&bulk_s};
    ring_worker_free(w, streams, 1);
}

/* ---- the end of a stream never overtakes bytes kept while it was paused ---- */

/*
 * A paused stream's receive stays armed: bytes that come are kept, and the
 * receive is cancelled. If in the same batch of completions another
 * connection makes the owner read again (a tunnel's other side drains) and
 * then the peer's FIN comes (collected in the kernel's second pass of
 * deferred work), the end must wait until the kept bytes are handed over.
 * The FIN is sent from a thread woken by a send submitted in the same
 * system call, so it lands while the kernel is busy with the other
 * connections' receives; a few trials make the interleaving near certain.
 */
#include <pthread.h>

#define KE_FILLERS 15 /* receives the kernel works through after x's (62 of the 64 buffers in all) */
static struct stream ke_s, ke_x, ke_p, ke_f[KE_FILLERS];
static size_t ke_got, ke_got_at_end;
static bool ke_ended;
static int ke_peer_s, ke_peer_p, ke_spin;

/* As a tunnel does: take the bytes, then pause until the other side's send completes. */
static void ke_s_input(struct stream *s, const char *d, size_t n)
{
    if (!d) {
        n = s->in_len;
        stream_consume(s, n);
    }
    ke_got += n;
    stream_read(s, false);
}
static void ke_s_end(struct stream *s, int status)
{
    (void)s, (void)status;
    ke_got_at_end = ke_got;
    ke_ended = true;
}
/* The other side: its completion lets s read again. */
static void ke_x_input(struct stream *s, const char *d, size_t n)
{
    (void)s, (void)d, (void)n;
    stream_read(&ke_s, true);
}
static void *ke_fin_sender(void *arg)
{
    char c;

    (void)arg;
    if (recv(ke_peer_p, &c, 1, 0) == 1) {
        for (volatile int i = 0; i < ke_spin; i++)
            ;
        shutdown(ke_peer_s, SHUT_WR);
    }
    return NULL;
}

TEST(stream_uring_end_waits_behind_bytes_kept_while_paused)
{
    static const struct stream_ops sops = {ke_s_input, ke_s_end, nop_drained, NULL};
    static const struct stream_ops xops = {ke_x_input, nop_end, nop_drained, NULL};
    static const struct stream_ops nops = {nop_input, nop_end, nop_drained, NULL};
    static char big[4 * 16384], d[100];
    int early = 0;

    for (int trial = 0; trial < 60; trial++) {
        struct worker *w = ring_worker();
        int fd, peer_x, peer_f[KE_FILLERS];
        pthread_t th;

        if (!w)
            return;
        if (!stream_ring_multishot(w->ring)) { /* (single-shot receives keep nothing while paused) */
            ring_worker_free(w, NULL, 0);
            return;
        }
        memset(&ke_s, 0, sizeof(ke_s));
        memset(&ke_x, 0, sizeof(ke_x));
        memset(&ke_p, 0, sizeof(ke_p));
        memset(ke_f, 0, sizeof(ke_f));
        ke_got = ke_got_at_end = 0;
        ke_ended = false;
        ke_spin = (trial % 20) * 500;
        tcp_pair(&fd, &ke_peer_s, 0, 0);
        attach(&ke_s, w, &sops, fd);
        tcp_pair(&fd, &peer_x, 0, 0);
        attach(&ke_x, w, &xops, fd);
        tcp_pair(&fd, &ke_peer_p, 0, 0);
        attach(&ke_p, w, &nops, fd);
        for (int i = 0; i < KE_FILLERS; i++) {
            tcp_pair(&fd, &peer_f[i], 0, 0);
            attach(&ke_f[i], w, &nops, fd);
            stream_read(&ke_f[i], true);
        }
        stream_read(&ke_s, true);
        stream_read(&ke_x, true);
        test_run_for(&w->loop, 5);
        /* One message: s takes it and pauses, its receive left armed. */
        ASSERT_EQ(send(ke_peer_s, "a", 1, 0), 1);
        for (int i = 0; i < 100 && ke_got < 1; i++)
            test_run_for(&w->loop, 1);
        ASSERT_EQ(ke_got, 1);
        ASSERT_TRUE(ke_s.ur.recv_busy && !ke_s.reading);
        /* While the loop is away: bytes for s, then for x, then for the fillers. */
        ASSERT_EQ(send(ke_peer_s, d, sizeof(d), 0), (ssize_t)sizeof(d));
        ASSERT_EQ(send(peer_x, "x", 1, 0), 1);
        for (int i = 0; i < KE_FILLERS; i++)
            ASSERT_EQ(send(peer_f[i], big, sizeof(big), 0), (ssize_t)sizeof(big));
        ASSERT_OK(pthread_create(&th, NULL, ke_fin_sender, NULL));
        usleep(2000);
        ASSERT_OK(stream_send(&ke_p, "g", 1)); /* wakes the thread from the next submission */
        for (int i = 0; i < 500 && !ke_ended; i++) {
            uv_run(&w->loop, UV_RUN_NOWAIT);
            if (!ke_ended && !ke_s.reading)
                stream_read(&ke_s, true); /* (the other side drains again) */
            usleep(200);
        }
        ASSERT_OK(pthread_join(th, NULL));
        ASSERT_TRUE(ke_ended);
        if (ke_got_at_end < 1 + sizeof(d))
            early++;
        ASSERT_EQ(ke_got, 1 + sizeof(d));
        close(ke_peer_s);
        close(peer_x);
        close(ke_peer_p);
        for (int i = 0; i < KE_FILLERS; i++)
            close(peer_f[i]);
        struct stream *streams[KE_FILLERS + 3] = {&ke_s, &ke_x, &ke_p};
        for (int i = 0; i < KE_FILLERS; i++)
            streams[i + 3] = &ke_f[i];
        ring_worker_free(w, streams, KE_FILLERS + 3);
        ASSERT_EQ(early, 0); /* the end came while 100 bytes were still kept from the owner */
    }
}
