/* SPDX-License-Identifier: MIT */
/*
 * latency_load.c - open-loop (fixed-rate) HTTP/1.1 load, for latency at
 * moderate load, corrected for coordinated omission.
 *
 *   latency_load [-t PORT:PATH]... [-s SLICE_MS] [-w SETTLE_MS] [-q STEAL_PCT]
 *                ADDR PORT PATH HOST RATE CONNS SECONDS [WARMUP_SECONDS]
 *
 * Request i is due at start + i/RATE whatever the server does. It goes to an
 * idle one of CONNS keep-alive connections (one request in flight on each, no
 * pipelining) or, when none is idle, waits in a queue; its latency runs from
 * its due time to the last byte of its response either way, so a stalled
 * server is charged for the requests it kept waiting. WARMUP_SECONDS (default
 * 1) run first at the same rate and are not recorded. ADDR is an IPv4
 * loopback address. One thread: epoll, and an absolute timerfd that fires
 * 50 us before each due time, the rest spent polling.
 *
 * Output is one line of key=value pairs:
 *   rate= sent= done= errors= achieved_rps= p50_us= p90_us= p99_us= p999_us=
 *   max_us= unfinished= conns=
 * done counts 2xx responses; errors counts other statuses and requests lost to
 * a closed connection or a malformed response; unfinished counts requests
 * still queued or in flight when the run stops, 2 s after the last one was
 * due: they enter the percentiles at their age then (a lower bound), errors do
 * not. achieved_rps is done over SECONDS, or over the time from the first
 * measured due time to the last 2xx if longer. Exit 2 on bad arguments or if
 * ADDR:PORT does not accept connections.
 *
 * Each -t adds a target: the same ADDR and HOST, another PORT and PATH, its
 * own CONNS connections. With several targets the run takes turns among
 * them: time is cut into slices of SLICE_MS (default 200), an epoch is one
 * slice of each target, and the order of the targets rotates from one epoch
 * to the next; a request goes to the target whose slice it falls due in.
 * Every target then sees the same machine, second by second, which back to
 * back runs cannot promise on a host whose neighbours come and go. The
 * first SETTLE_MS of each slice (default 20) are run but not measured: a
 * server idle while the others had their turns wakes up slower, which a
 * server under steady load does not. SECONDS
 * is per target (the run lasts their number times SECONDS; it and the
 * warm-up are rounded up to whole epochs), RATE holds throughout, and the
 * output is one line per target, starting target=K port=PORT (K is 0 for
 * PORT PATH, then the -t targets in order).
 *
 * -q STEAL_PCT leaves out of the percentiles of every target the requests
 * due in an epoch in which the hypervisor took more than STEAL_PCT % of all
 * CPUs' time (steal time, /proc/stat). With -q or several targets the
 * lines end epochs= (epochs with measured requests) excluded_epochs= kept=
 * (latencies in the percentiles).
 *
 * With LATENCY_HIST=FILE in the environment it also writes every latency
 * that entered the percentiles to FILE as a histogram, one "US COUNT" line
 * per microsecond that occurred, so that several runs can be pooled into one
 * distribution (bench/proxy_summary.py does, for the added p99); with
 * several targets, target K's to FILE.K. LATENCY_TRACE=FILE writes every
 * measured request as a "TARGET DUE_MS LATENCY_US KEPT" line (KEPT: 0 if it
 * was left out of the percentiles), to see when the slow ones came.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define NS 1000000000ull
#define DRAIN_NS (2 * NS)          /* wait for stragglers after the last due time */
#define RETRY_NS (100 * 1000000ull) /* reconnect back-off */
#define CONNECT_TIMEOUT_NS (3 * NS)
#define SPIN_NS 50000ull /* wake this early and poll: wake-ups run ~30 us late */
#define BUF_MIN 4096
#define BUF_MAX (64 * 1024) /* largest header block or chunk line accepted */
#define MAX_TRAILER (64 * 1024)
#define MAX_CONNS 10000
#define MAX_EVENTS 256
#define MAX_TARGETS 8
#define SLICE_MS 200 /* default: a target's turn */
#define SETTLE_MS 20 /* default: the start of a turn, not measured */

enum { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY };
enum { P_HEAD, P_BODY, P_CLOSE, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_END, P_TRAILER };

struct target;

struct conn {
    struct target *t;
    int fd;
    int state;
    int in_ring;      /* has an entry in the idle ring (possibly stale) */
    int want_out;     /* EPOLLOUT is armed */
    uint64_t retry_at; /* C_DOWN: when to reconnect */
    uint64_t idx, due; /* the request in flight and its scheduled time */
    size_t out_off;
    int ps;            /* response parser state */
    int status;
    int close_after;
    uint64_t body_left;
    size_t scan;       /* header bytes already searched for the blank line */
    size_t trailer;
    char *buf;
    size_t pos, len, cap;
};

static const char usage[] = "usage: latency_load [-t PORT:PATH]... [-s SLICE_MS] [-w SETTLE_MS] [-q STEAL_PCT] "
                            "ADDR PORT PATH HOST RATE CONNS SECONDS [WARMUP_SECONDS]";

struct sample {
    uint64_t ns;  /* from due time to the response's last byte */
    uint64_t idx; /* which request */
};

/* One server under load: its connections, its queue and its results. */
struct target {
    struct sockaddr_in addr;
    const char *port, *path;
    char *req;
    size_t req_len;
    struct conn **ring; /* idle connections, first in first out */
    int ring_head, ring_n;
    uint64_t *queue;    /* requests due and waiting for an idle connection, in order */
    size_t qhead, qlen, qcap;
    struct sample *lat;
    size_t nlat, caplat;
    uint64_t sent, done, errors, last_done;
};

static struct target g_targets[MAX_TARGETS];
static int g_ntargets;
static double g_rate;
static uint64_t g_t0, g_warm, g_total; /* requests [0, g_warm) are the warm-up */
static uint64_t g_slice_ns = SLICE_MS * 1000000ull, g_settle_ns = SETTLE_MS * 1000000ull;
static int g_ep = -1, g_tfd = -1, g_stat = -1;
static struct conn *g_conns; /* g_nconns per target, target by target */
static int g_nconns;
static int g_busy, g_down;
static uint64_t g_queued;
static double g_steal_max = -1; /* -q; below 0: no epoch is left out */
static uint64_t *g_steal, *g_steal_at; /* steal ticks and the time, read at each epoch's start */
static uint64_t g_nepochs, g_epochs_read;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

/* When request i falls due, from the start. */
static uint64_t offset_ns(uint64_t i)
{
    return (uint64_t)((double)i * 1e9 / g_rate);
}

static uint64_t due_ns(uint64_t i)
{
    return g_t0 + offset_ns(i);
}

/* The slice request i falls due in, counted from the start. */
static uint64_t slice_of(uint64_t i)
{
    return offset_ns(i) / g_slice_ns;
}

static uint64_t epoch_of(uint64_t i)
{
    return slice_of(i) / (uint64_t)g_ntargets;
}

/* The target whose turn it is when request i falls due: slice by slice, in
 * an order that moves on by one each epoch. */
static struct target *target_of(uint64_t i)
{
    uint64_t s = slice_of(i), n = (uint64_t)g_ntargets;

    return &g_targets[(s % n + s / n) % n];
}

static void cleanup(void)
{
    for (int i = 0; g_conns && i < g_nconns * g_ntargets; i++) {
        if (g_conns[i].fd >= 0)
            close(g_conns[i].fd);
        free(g_conns[i].buf);
    }
    free(g_conns);
    for (int k = 0; k < g_ntargets; k++) {
        free(g_targets[k].ring);
        free(g_targets[k].queue);
        free(g_targets[k].lat);
        free(g_targets[k].req);
    }
    free(g_steal);
    free(g_steal_at);
    if (g_stat >= 0)
        close(g_stat);
    if (g_tfd >= 0)
        close(g_tfd);
    if (g_ep >= 0)
        close(g_ep);
}

/* ---- steal time, epoch by epoch ------------------------------------------ */

/* Steal ticks of all CPUs so far: the eighth number of /proc/stat's "cpu" line. */
static uint64_t steal_ticks(void)
{
    char b[512];
    ssize_t n = pread(g_stat, b, sizeof(b) - 1, 0);
    unsigned long long v[8] = {0};

    if (n <= 0)
        return 0;
    b[n] = '\0';
    if (sscanf(b, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
               &v[7]) != 8)
        return 0;
    return v[7];
}

/* Reads steal time at the start of every epoch that has begun by now. */
static void steal_sample(uint64_t now)
{
    uint64_t epoch_ns = g_slice_ns * (uint64_t)g_ntargets;

    while (g_stat >= 0 && g_epochs_read < g_nepochs && now >= g_t0 + g_epochs_read * epoch_ns) {
        g_steal[g_epochs_read] = steal_ticks();
        g_steal_at[g_epochs_read++] = now;
    }
}

/* Did the hypervisor take more than g_steal_max % of the CPUs' time in epoch
 * e? The last epoch read counts up to `stop`, when the run ended. */
static int noisy(uint64_t e, uint64_t stop_ticks, uint64_t stop)
{
    static long hz, ncpu;
    uint64_t ticks, span;

    if (g_steal_max < 0 || e >= g_epochs_read)
        return 0;
    if (!hz) {
        hz = sysconf(_SC_CLK_TCK);
        ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    }
    ticks = (e + 1 < g_epochs_read ? g_steal[e + 1] : stop_ticks) - g_steal[e];
    span = (e + 1 < g_epochs_read ? g_steal_at[e + 1] : stop) - g_steal_at[e];
    return span > 0 && (double)ticks / (double)hz * 1e9 * 100 / ((double)span * (double)ncpu) > g_steal_max;
}

/* Does request i count? Not if it fell due while its target was settling
 * into its turn, or (-q) in an epoch the hypervisor spoiled. */
static int measured_req(uint64_t i, uint64_t stop_ticks, uint64_t stop)
{
    if (g_ntargets > 1 && offset_ns(i) % g_slice_ns < g_settle_ns)
        return 0;
    return !noisy(epoch_of(i), stop_ticks, stop);
}

/* ---- idle connections, first in first out ------------------------------- */

static void ring_push(struct conn *c)
{
    struct target *t = c->t;

    if (c->in_ring)
        return;
    c->in_ring = 1;
    t->ring[(t->ring_head + t->ring_n++) % g_nconns] = c;
}

static struct conn *ring_pop(struct target *t)
{
    while (t->ring_n) {
        struct conn *c = t->ring[t->ring_head];
        t->ring_head = (t->ring_head + 1) % g_nconns;
        t->ring_n--;
        c->in_ring = 0;
        if (c->state == C_IDLE)
            return c;
    }
    return NULL;
}

/* ---- requests due and waiting for a connection, per target --------------- */

static int enqueue(struct target *t, uint64_t idx)
{
    if (t->qhead == t->qlen) /* drained: start over at the front */
        t->qhead = t->qlen = 0;
    if (t->qlen == t->qcap) {
        if (t->qhead > 0) {
            memmove(t->queue, t->queue + t->qhead, (t->qlen - t->qhead) * sizeof(*t->queue));
            t->qlen -= t->qhead;
            t->qhead = 0;
        } else {
            size_t cap = t->qcap ? t->qcap * 2 : 1024;
            uint64_t *q = realloc(t->queue, cap * sizeof(*q));
            if (!q)
                return -1;
            t->queue = q;
            t->qcap = cap;
        }
    }
    t->queue[t->qlen++] = idx;
    g_queued++;
    return 0;
}

static uint64_t dequeue(struct target *t)
{
    g_queued--;
    return t->queue[t->qhead++];
}

/* ---- connections --------------------------------------------------------- */

static void watch(struct conn *c, int op, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};

    epoll_ctl(g_ep, op, c->fd, &ev);
}

static int conn_start(struct conn *c)
{
    int one = 1;

    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return -1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&c->t->addr, sizeof(c->t->addr)) < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(c->fd);
        c->fd = -1;
        errno = e;
        return -1;
    }
    c->state = C_CONNECTING;
    c->want_out = 1;
    watch(c, EPOLL_CTL_ADD, EPOLLOUT);
    return 0;
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->pos = c->len = 0;
}

static void conn_down(struct conn *c, uint64_t now)
{
    conn_close(c);
    c->state = C_DOWN;
    c->retry_at = now + RETRY_NS;
    g_down++;
}

/* The connection is unusable (closed, garbled, or the server asked): open a
 * new one. The caller has settled any request in flight. */
static void conn_retry(struct conn *c, uint64_t now)
{
    conn_close(c);
    if (conn_start(c) < 0)
        conn_down(c, now);
}

/* The request in flight on c is lost. */
static void conn_fail(struct conn *c, uint64_t now)
{
    if (c->state == C_BUSY) {
        g_busy--;
        if (c->idx >= g_warm)
            c->t->errors++;
    }
    conn_retry(c, now);
}

/* Returns 0 once a non-blocking connect has succeeded, else its errno. */
static int connect_result(struct conn *c)
{
    int err = 0;
    socklen_t l = sizeof(err);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l) < 0)
        return errno;
    return err;
}

static void conn_ready(struct conn *c)
{
    c->state = C_IDLE;
    c->want_out = 0;
    watch(c, EPOLL_CTL_MOD, EPOLLIN);
    ring_push(c);
}

/* ---- requests ------------------------------------------------------------ */

static int flush_req(struct conn *c)
{
    const struct target *t = c->t;

    while (c->out_off < t->req_len) {
        ssize_t n = send(c->fd, t->req + c->out_off, t->req_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out) {
                c->want_out = 1;
                watch(c, EPOLL_CTL_MOD, EPOLLIN | EPOLLOUT);
            }
            return 0;
        }
        if (n <= 0)
            return -1;
        c->out_off += (size_t)n;
    }
    if (c->want_out) {
        c->want_out = 0;
        watch(c, EPOLL_CTL_MOD, EPOLLIN);
    }
    return 0;
}

static void dispatch(struct conn *c, uint64_t idx, uint64_t now)
{
    c->state = C_BUSY;
    g_busy++;
    c->idx = idx;
    c->due = due_ns(idx);
    c->out_off = 0;
    c->ps = P_HEAD;
    c->status = 0;
    c->close_after = 0;
    c->body_left = 0;
    c->scan = 0;
    c->trailer = 0;
    if (idx >= g_warm)
        c->t->sent++;
    if (flush_req(c) < 0)
        conn_fail(c, now);
}

static void record(struct target *t, uint64_t idx, uint64_t lat)
{
    if (t->nlat == t->caplat) {
        size_t cap = t->caplat ? t->caplat * 2 : 65536;
        struct sample *p = realloc(t->lat, cap * sizeof(*p));
        if (!p)
            return; /* counted in done, just not in the percentiles */
        t->lat = p;
        t->caplat = cap;
    }
    t->lat[t->nlat++] = (struct sample){.ns = lat, .idx = idx};
}

static void finish(struct conn *c)
{
    struct target *t = c->t;
    uint64_t now = now_ns();

    g_busy--;
    if (c->idx >= g_warm) {
        if (c->status >= 200 && c->status < 300) {
            t->done++;
            t->last_done = now;
            record(t, c->idx, now > c->due ? now - c->due : 0);
        } else {
            t->errors++;
        }
    }
    /* Bytes beyond the response, or a request not fully written, leave the
     * connection out of step: start over rather than misparse. */
    if (c->close_after || c->pos < c->len || c->out_off < t->req_len) {
        c->state = C_CONNECTING;
        conn_retry(c, now);
    } else {
        c->state = C_IDLE;
        ring_push(c);
    }
}

/* ---- response parsing ---------------------------------------------------- */

/* Length of the header block at p (through its blank line), or 0 if the
 * blank line has not arrived; *scan remembers how far we looked. */
static size_t head_end(const char *p, size_t n, size_t *scan)
{
    for (size_t i = *scan; i < n; i++) {
        if (p[i] != '\n')
            continue;
        if (i + 1 >= n || (p[i + 1] == '\r' && i + 2 >= n)) {
            *scan = i;
            return 0;
        }
        if (p[i + 1] == '\n')
            return i + 2;
        if (p[i + 1] == '\r' && p[i + 2] == '\n')
            return i + 3;
    }
    *scan = n;
    return 0;
}

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = (char)(ch | 0x20);
    return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

static int span_ieq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* Does the comma-separated list v[0, n) hold tok (last: as its final item)? */
static int has_token(const char *v, size_t n, const char *tok, int last)
{
    int found = 0;
    size_t i = 0;

    while (i <= n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && is_ows(v[a]))
            a++;
        while (b > a && is_ows(v[b - 1]))
            b--;
        int eq = span_ieq(v + a, b - a, tok);
        if (last)
            found = b > a ? eq : found;
        else if (eq)
            return 1;
        i = j + 1;
    }
    return found;
}

/* Parses the header block p[0, n) into c's framing. -1: malformed. */
static int parse_head(struct conn *c, const char *p, size_t n)
{
    const char *end = p + n, *nl = memchr(p, '\n', n);
    size_t l = (size_t)(nl - p);
    int has_cl = 0, has_te = 0, chunked = 0, close = 0, keep_alive = 0;
    uint64_t cl = 0;

    if (l && p[l - 1] == '\r')
        l--;
    if (l < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return -1;
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return -1;
    if (l > 12 && p[12] != ' ')
        return -1;
    c->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');

    for (const char *line = nl + 1; line < end; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl)
            break;
        const char *le = nl;
        if (le > line && le[-1] == '\r')
            le--;
        if (le == line)
            break;
        if (is_ows(*line)) /* obsolete line folding: not framing, skip */
            continue;
        const char *colon = memchr(line, ':', (size_t)(le - line));
        if (!colon)
            return -1;
        const char *name = line, *v = colon + 1, *ve = le;
        size_t nlen = (size_t)(colon - line);
        while (v < ve && is_ows(*v))
            v++;
        while (ve > v && is_ows(ve[-1]))
            ve--;
        size_t vlen = (size_t)(ve - v);
        if (span_ieq(name, nlen, "content-length")) {
            uint64_t x = 0;
            if (vlen == 0 || vlen > 18)
                return -1;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return -1;
                x = x * 10 + (uint64_t)(v[i] - '0');
            }
            if (has_cl && x != cl)
                return -1;
            has_cl = 1;
            cl = x;
        } else if (span_ieq(name, nlen, "transfer-encoding")) {
            has_te = 1;
            chunked = has_token(v, vlen, "chunked", 1);
        } else if (span_ieq(name, nlen, "connection")) {
            close |= has_token(v, vlen, "close", 0);
            keep_alive |= has_token(v, vlen, "keep-alive", 0);
        }
    }

    c->close_after = close || (p[7] == '0' && !keep_alive);
    if (c->status < 200) {
        if (c->status == 101 || c->status < 100) /* no upgrades asked for */
            return -1;
        c->ps = P_HEAD; /* interim response: the real one follows */
        return 0;
    }
    c->body_left = 0;
    if (c->status == 204 || c->status == 304) {
        c->ps = P_BODY;
    } else if (has_te) {
        c->ps = chunked ? P_CHUNK_SIZE : P_CLOSE;
    } else if (has_cl) {
        c->ps = P_BODY;
        c->body_left = cl;
    } else {
        c->ps = P_CLOSE;
    }
    if (c->ps == P_CLOSE)
        c->close_after = 1;
    return 0;
}

/* Consumes buffered input. 1: response complete, 0: needs more, -1: bad. */
static int parse(struct conn *c)
{
    for (;;) {
        char *p = c->buf + c->pos, *nl;
        size_t avail = c->len - c->pos, n;

        switch (c->ps) {
        case P_HEAD:
            n = head_end(p, avail, &c->scan);
            if (!n)
                return 0;
            if (parse_head(c, p, n) < 0)
                return -1;
            c->pos += n;
            c->scan = 0;
            break;
        case P_BODY:
        case P_CHUNK_DATA:
            n = avail < c->body_left ? avail : (size_t)c->body_left;
            c->pos += n;
            c->body_left -= n;
            if (c->body_left)
                return 0;
            if (c->ps == P_BODY)
                return 1;
            c->ps = P_CHUNK_END;
            break;
        case P_CLOSE: /* the body runs to end of file */
            c->pos = c->len;
            return 0;
        case P_CHUNK_SIZE: {
            uint64_t size = 0;
            size_t i = 0;
            nl = memchr(p, '\n', avail);
            if (!nl)
                return 0;
            n = (size_t)(nl - p);
            for (int d; i < n && i < 15 && (d = hex_digit(p[i])) >= 0; i++) /* 15 digits: no overflow */
                size = size << 4 | (uint64_t)d;
            if (i == 0 || (i < n && p[i] != ';' && p[i] != '\r' && !is_ows(p[i])))
                return -1;
            c->pos += n + 1;
            c->body_left = size;
            c->ps = size ? P_CHUNK_DATA : P_TRAILER;
            break;
        }
        case P_CHUNK_END:
            if (avail < 1)
                return 0;
            if (p[0] == '\r') {
                if (avail < 2)
                    return 0;
                if (p[1] != '\n')
                    return -1;
                c->pos++;
            } else if (p[0] != '\n') {
                return -1;
            }
            c->pos++;
            c->ps = P_CHUNK_SIZE;
            break;
        case P_TRAILER:
            nl = memchr(p, '\n', avail);
            if (!nl)
                return 0;
            n = (size_t)(nl - p) + 1;
            c->pos += n;
            if (n == 1 || (n == 2 && p[0] == '\r'))
                return 1;
            c->trailer += n;
            if (c->trailer > MAX_TRAILER)
                return -1;
            break;
        default:
            return -1;
        }
    }
}

static void on_readable(struct conn *c, uint64_t now)
{
    for (int round = 0; round < 8; round++) {
        if (c->pos == c->len) {
            c->pos = c->len = 0;
        } else if (c->len == c->cap) {
            if (c->pos) {
                memmove(c->buf, c->buf + c->pos, c->len - c->pos);
                c->len -= c->pos;
                c->pos = 0;
            } else if (c->cap < BUF_MAX) {
                char *b = realloc(c->buf, c->cap * 2);
                if (!b) {
                    conn_fail(c, now);
                    return;
                }
                c->buf = b;
                c->cap *= 2;
            } else { /* a header block or chunk line too long */
                conn_fail(c, now);
                return;
            }
        }
        ssize_t n = read(c->fd, c->buf + c->len, c->cap - c->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            if (n == 0 && c->state == C_BUSY && c->ps == P_CLOSE)
                finish(c); /* close_after is set: it reconnects */
            else if (c->state == C_BUSY)
                conn_fail(c, now);
            else
                conn_retry(c, now);
            return;
        }
        if (c->state != C_BUSY) { /* nothing asked: out of step */
            conn_retry(c, now);
            return;
        }
        c->len += (size_t)n;
        int r = parse(c);
        if (r < 0) {
            conn_fail(c, now);
            return;
        }
        if (r > 0) {
            finish(c);
            return;
        }
    }
}

static void on_event(struct conn *c, uint32_t events, uint64_t now)
{
    if (c->state == C_CONNECTING) {
        if (connect_result(c) == 0)
            conn_ready(c);
        else
            conn_down(c, now);
        return;
    }
    if (c->state == C_DOWN || c->fd < 0)
        return;
    if ((events & EPOLLOUT) && c->state == C_BUSY && c->out_off < c->t->req_len && flush_req(c) < 0) {
        conn_fail(c, now);
        return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        on_readable(c, now);
}

/* ---- main ---------------------------------------------------------------- */

static int bad_args(const char *why)
{
    fprintf(stderr, "latency_load: %s; %s\n", why, usage);
    cleanup();
    return 2;
}

static int parse_num(const char *s, double lo, double hi, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(s, &end);
    return errno == 0 && end != s && *end == '\0' && *out >= lo && *out <= hi; /* NaN fails */
}

static int printable(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

/* The p-quantile (nearest rank: ceil(p * n) - 1) of n sorted latencies, in us. */
static double pct_us(const uint64_t *lat, size_t n, double p)
{
    double r = p * (double)n;
    size_t i = (size_t)r;

    if (!n)
        return 0;
    if ((double)i < r)
        i++;
    i = i ? i - 1 : 0;
    if (i >= n)
        i = n - 1;
    return (double)lat[i] / 1e3;
}

/* n sorted latencies as "US COUNT" lines: microseconds that occurred and how often. */
static int write_hist(const char *path, const uint64_t *lat, size_t n)
{
    FILE *f = fopen(path, "w");

    if (!f)
        return -1;
    for (size_t i = 0; i < n;) {
        uint64_t us = lat[i] / 1000, k = 0;
        while (i < n && lat[i] / 1000 == us)
            i++, k++;
        fprintf(f, "%llu %llu\n", (unsigned long long)us, (unsigned long long)k);
    }
    return fclose(f);
}

/* Every measured request as "TARGET DUE_MS LATENCY_US KEPT" lines, target by
 * target: when each fell due (from the start) and how long it took, to see
 * when the slow ones came. */
static int write_trace(const char *path, uint64_t stop_ticks, uint64_t stop)
{
    FILE *f = fopen(path, "w");

    if (!f)
        return -1;
    for (int k = 0; k < g_ntargets; k++)
        for (size_t j = 0; j < g_targets[k].nlat; j++) {
            const struct sample *x = &g_targets[k].lat[j];
            fprintf(f, "%d %.3f %.1f %d\n", k, (double)(due_ns(x->idx) - g_t0) / 1e6, (double)x->ns / 1e3,
                    measured_req(x->idx, stop_ticks, stop));
        }
    return fclose(f);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Adds a target: PORT, PATH as given, HOST shared. */
static const char *add_target(const char *port_s, const char *path, const char *host)
{
    struct target *t = &g_targets[g_ntargets];
    double port;
    size_t len;

    if (g_ntargets == MAX_TARGETS)
        return "too many targets (at most 8)";
    if (!parse_num(port_s, 1, 65535, &port) || port != (int)port)
        return "bad PORT";
    if (path[0] != '/' || !printable(path, 8192))
        return "PATH must start with / and hold no spaces or control bytes";
    t->addr.sin_family = AF_INET;
    t->addr.sin_port = htons((uint16_t)port);
    t->port = port_s;
    t->path = path;
    len = strlen(path) + strlen(host) + 64;
    t->req = malloc(len);
    if (!t->req)
        return "out of memory";
    t->req_len = (size_t)snprintf(t->req, len, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host);
    g_ntargets++;
    return NULL;
}

int main(int argc, char **argv)
{
    double conns, seconds, warmup = 1, slice_ms, settle_ms;
    struct epoll_event evs[MAX_EVENTS];
    struct rlimit rl;
    struct in_addr addr;
    const char *extra[MAX_TARGETS];
    const char *why;
    int nextra = 0, opt;

    while ((opt = getopt(argc, argv, "+t:s:w:q:")) != -1) {
        switch (opt) {
        case 't':
            if (nextra == MAX_TARGETS - 1)
                return bad_args("too many targets (at most 8)");
            if (!strchr(optarg, ':'))
                return bad_args("-t takes PORT:PATH");
            extra[nextra++] = optarg;
            break;
        case 's':
            if (!parse_num(optarg, 1, 1e6, &slice_ms))
                return bad_args("SLICE_MS must be a number of milliseconds in [1, 1e6]");
            g_slice_ns = (uint64_t)(slice_ms * 1e6);
            break;
        case 'w':
            if (!parse_num(optarg, 0, 1e6, &settle_ms))
                return bad_args("SETTLE_MS must be a number of milliseconds in [0, 1e6]");
            g_settle_ns = (uint64_t)(settle_ms * 1e6);
            break;
        case 'q':
            if (!parse_num(optarg, 0, 100, &g_steal_max))
                return bad_args("STEAL_PCT must be a percentage in [0, 100]");
            break;
        default:
            return bad_args("unknown option");
        }
    }
    argc -= optind - 1;
    argv += optind - 1;
    if (argc != 8 && argc != 9)
        return bad_args("wrong number of arguments");
    if (inet_pton(AF_INET, argv[1], &addr) != 1 || (ntohl(addr.s_addr) >> 24) != 127)
        return bad_args("ADDR must be an IPv4 loopback address");
    if (!printable(argv[4], 1024))
        return bad_args("bad HOST");
    if ((why = add_target(argv[2], argv[3], argv[4])))
        return bad_args(why);
    for (int k = 0; k < nextra; k++) {
        char *colon = strchr(extra[k], ':');
        *colon = '\0';
        if ((why = add_target(extra[k], colon + 1, argv[4])))
            return bad_args(why);
    }
    for (int k = 0; k < g_ntargets; k++)
        g_targets[k].addr.sin_addr = addr;
    if (g_ntargets > 1 && g_settle_ns >= g_slice_ns)
        return bad_args("SETTLE_MS must be shorter than SLICE_MS");
    if (!parse_num(argv[5], 1e-3, 1e8, &g_rate))
        return bad_args("RATE must be a number of requests per second in (0, 1e8]");
    if (!parse_num(argv[6], 1, MAX_CONNS, &conns) || conns != (int)conns || conns * g_ntargets > MAX_CONNS)
        return bad_args("CONNS must be an integer in [1, 10000], 10000 over all targets");
    g_nconns = (int)conns;
    if (!parse_num(argv[7], 1e-3, 1e6, &seconds))
        return bad_args("bad SECONDS");
    if (argc == 9 && !parse_num(argv[8], 0, 1e6, &warmup))
        return bad_args("bad WARMUP_SECONDS");
    double span = seconds * g_ntargets;
    if (g_ntargets > 1) {
        /* Whole epochs, so that every target gets the same share of both. */
        double epoch = (double)g_slice_ns * g_ntargets / 1e9;
        warmup = ceil(warmup / epoch) * epoch;
        span = ceil(span / epoch) * epoch;
    }
    g_warm = (uint64_t)(warmup * g_rate + 0.5);
    uint64_t measured = (uint64_t)(span * g_rate + 0.5);
    if (measured == 0)
        return bad_args("RATE * SECONDS is less than one request");
    if (g_warm + measured > ((uint64_t)1 << 34))
        return bad_args("RATE * (SECONDS + WARMUP_SECONDS) is too many requests");
    g_total = g_warm + measured;
    int nconns = g_nconns * g_ntargets;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 16) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nconns + 16)
            return bad_args("CONNS is above the descriptor limit");
    }
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake-ups on time, not up to 50 us late */

    int rings = 1;
    g_conns = calloc((size_t)nconns, sizeof(*g_conns));
    for (int k = 0; k < g_ntargets; k++)
        rings &= (g_targets[k].ring = calloc((size_t)g_nconns, sizeof(*g_targets[k].ring))) != NULL;
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    g_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (!g_conns || !rings || g_ep < 0 || g_tfd < 0) {
        fprintf(stderr, "latency_load: out of memory or descriptors\n");
        cleanup();
        return 1;
    }
    if (g_steal_max >= 0) {
        /* One reading per epoch start, from the first due time to the last and one for the drain. */
        g_nepochs = (due_ns(g_total) - due_ns(0)) / (g_slice_ns * (uint64_t)g_ntargets) + 2;
        g_steal = calloc(g_nepochs, sizeof(*g_steal));
        g_steal_at = calloc(g_nepochs, sizeof(*g_steal_at));
        g_stat = open("/proc/stat", O_RDONLY | O_CLOEXEC);
        if (!g_steal || !g_steal_at || g_stat < 0) {
            fprintf(stderr, "latency_load: cannot read /proc/stat for -q\n");
            cleanup();
            return 1;
        }
    }
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, g_tfd, &tev);
    for (int i = 0; i < nconns; i++) {
        struct conn *c = &g_conns[i];
        c->t = &g_targets[i / g_nconns];
        c->fd = -1;
        c->cap = BUF_MIN;
        c->buf = malloc(c->cap);
        if (!c->buf) {
            fprintf(stderr, "latency_load: out of memory\n");
            cleanup();
            return 1;
        }
    }

    /* Open every connection before the clock starts. */
    int ready = 0;
    uint64_t give_up = now_ns() + CONNECT_TIMEOUT_NS;
    for (int i = 0; i < nconns; i++)
        if (conn_start(&g_conns[i]) < 0) {
            fprintf(stderr, "latency_load: cannot connect to %s:%s: %s\n", argv[1], g_conns[i].t->port,
                    strerror(errno));
            cleanup();
            return 2;
        }
    while (ready < nconns) {
        uint64_t now = now_ns();
        if (now >= give_up) {
            fprintf(stderr, "latency_load: cannot connect to %s: timed out\n", argv[1]);
            cleanup();
            return 2;
        }
        int k = epoll_wait(g_ep, evs, MAX_EVENTS, (int)((give_up - now) / 1000000 + 1));
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            if (!c || c->state != C_CONNECTING)
                continue;
            int err = connect_result(c);
            if (err) {
                fprintf(stderr, "latency_load: cannot connect to %s:%s: %s\n", argv[1], c->t->port, strerror(err));
                cleanup();
                return 2;
            }
            conn_ready(c);
            ready++;
        }
    }

    g_t0 = now_ns();
    uint64_t mstart = due_ns(g_warm), deadline = due_ns(g_total) + DRAIN_NS;
    uint64_t epoch_ns = g_slice_ns * (uint64_t)g_ntargets;
    uint64_t next_due = 0, armed = 0, now = g_t0;
    for (;;) {
        now = now_ns();
        steal_sample(now);
        while (next_due < g_total && due_ns(next_due) <= now) {
            if (enqueue(target_of(next_due), next_due) < 0) {
                fprintf(stderr, "latency_load: out of memory\n");
                cleanup();
                return 1;
            }
            next_due++;
        }
        if (g_down)
            for (int i = 0; i < nconns; i++) {
                struct conn *c = &g_conns[i];
                if (c->state == C_DOWN && c->retry_at <= now) {
                    g_down--;
                    if (conn_start(c) < 0)
                        conn_down(c, now);
                }
            }
        for (int k = 0; k < g_ntargets; k++) {
            struct target *t = &g_targets[k];
            struct conn *c;
            while (t->qhead < t->qlen && (c = ring_pop(t)))
                dispatch(c, dequeue(t), now);
        }
        if ((next_due == g_total && g_queued == 0 && g_busy == 0) || now >= deadline)
            break;

        /* Sleep until the next request falls due, a reconnect, the next
         * epoch's steal reading or the deadline; network events cut it short. */
        uint64_t wake = deadline;
        if (next_due < g_total && due_ns(next_due) < wake)
            wake = due_ns(next_due);
        if (g_stat >= 0 && g_epochs_read < g_nepochs && g_t0 + g_epochs_read * epoch_ns < wake)
            wake = g_t0 + g_epochs_read * epoch_ns;
        for (int i = 0; g_down && i < nconns; i++)
            if (g_conns[i].state == C_DOWN && g_conns[i].retry_at < wake)
                wake = g_conns[i].retry_at;
        int timeout = -1;
        if (wake <= now + SPIN_NS) {
            timeout = 0; /* close enough: poll instead of trusting a wake-up */
        } else if (wake != armed) {
            uint64_t at = wake - SPIN_NS;
            struct itimerspec its = {.it_value = {.tv_sec = (time_t)(at / NS), .tv_nsec = (long)(at % NS)}};
            timerfd_settime(g_tfd, TFD_TIMER_ABSTIME, &its, NULL);
            armed = wake;
        }
        int k = epoll_wait(g_ep, evs, MAX_EVENTS, timeout);
        if (k < 0 && errno != EINTR) {
            perror("latency_load: epoll_wait");
            break;
        }
        now = now_ns();
        for (int i = 0; i < k; i++) {
            if (!evs[i].data.ptr) {
                uint64_t ticks;
                if (read(g_tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
                    perror("latency_load: timerfd");
                continue;
            }
            on_event(evs[i].data.ptr, evs[i].events, now);
        }
    }

    /* Requests still unanswered enter the percentiles at their age now, a
     * lower bound: leaving them out would flatter an overloaded server. */
    uint64_t stop = now_ns(), stop_ticks = g_stat >= 0 ? steal_ticks() : 0;
    for (int i = 0; i < nconns; i++)
        if (g_conns[i].state == C_BUSY && g_conns[i].idx >= g_warm)
            record(g_conns[i].t, g_conns[i].idx, stop - g_conns[i].due);
    for (int k = 0; k < g_ntargets; k++)
        for (size_t j = g_targets[k].qhead; j < g_targets[k].qlen; j++)
            if (g_targets[k].queue[j] >= g_warm)
                record(&g_targets[k], g_targets[k].queue[j], stop - due_ns(g_targets[k].queue[j]));
    for (uint64_t i = next_due > g_warm ? next_due : g_warm; i < g_total && due_ns(i) <= stop; i++)
        record(target_of(i), i, stop - due_ns(i));

    /* Epochs with measured requests, and those the hypervisor spoiled. */
    uint64_t first_epoch = epoch_of(g_warm), last_epoch = epoch_of(g_total - 1), excluded = 0;
    for (uint64_t e = first_epoch; e <= last_epoch; e++)
        excluded += noisy(e, stop_ticks, stop) != 0;

    const char *hist = getenv("LATENCY_HIST"), *trace = getenv("LATENCY_TRACE");
    uint64_t assigned[MAX_TARGETS] = {0}; /* measured requests that fell due in each target's turns */
    int status = 0;
    for (uint64_t i = g_warm; i < g_total; i++)
        assigned[target_of(i) - g_targets]++;
    if (trace && *trace && write_trace(trace, stop_ticks, stop) < 0)
        fprintf(stderr, "latency_load: %s: %s\n", trace, strerror(errno));
    for (int k = 0; k < g_ntargets; k++) {
        struct target *t = &g_targets[k];
        uint64_t *lat = malloc((t->nlat ? t->nlat : 1) * sizeof(*lat));
        size_t n = 0;
        if (!lat) {
            fprintf(stderr, "latency_load: out of memory\n");
            status = 1;
            break;
        }
        for (size_t j = 0; j < t->nlat; j++)
            if (measured_req(t->lat[j].idx, stop_ticks, stop))
                lat[n++] = t->lat[j].ns;
        qsort(lat, n, sizeof(*lat), cmp_u64);
        /* With one target, the run is its own: achieved_rps over SECONDS, or
         * up to the last 2xx if that took longer. */
        double window = seconds;
        if (g_ntargets == 1 && t->last_done > mstart && (double)(t->last_done - mstart) / 1e9 > window)
            window = (double)(t->last_done - mstart) / 1e9;
        if (hist && *hist) {
            char name[4096];
            if (g_ntargets == 1)
                snprintf(name, sizeof(name), "%s", hist);
            else
                snprintf(name, sizeof(name), "%s.%d", hist, k);
            if (write_hist(name, lat, n) < 0)
                fprintf(stderr, "latency_load: %s: %s\n", name, strerror(errno));
        }
        if (g_ntargets > 1)
            printf("target=%d port=%s ", k, t->port);
        printf("rate=%.10g sent=%llu done=%llu errors=%llu achieved_rps=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f "
               "p999_us=%.1f max_us=%.1f unfinished=%llu conns=%d",
               g_rate, (unsigned long long)t->sent, (unsigned long long)t->done, (unsigned long long)t->errors,
               (double)t->done / window, pct_us(lat, n, 0.5), pct_us(lat, n, 0.9), pct_us(lat, n, 0.99),
               pct_us(lat, n, 0.999), n ? (double)lat[n - 1] / 1e3 : 0.0,
               (unsigned long long)(assigned[k] - t->done - t->errors), g_nconns);
        if (g_steal_max >= 0 || g_ntargets > 1)
            printf(" epochs=%llu excluded_epochs=%llu kept=%zu", (unsigned long long)(last_epoch - first_epoch + 1),
                   (unsigned long long)excluded, n);
        printf("\n");
        free(lat);
    }
    cleanup();
    return status;
}
