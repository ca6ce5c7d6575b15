/* SPDX-License-Identifier: MIT */
/*
 * latency_load.c - open-loop (fixed-rate) HTTP/1.1 load, for latency at
 * moderate load, corrected for coordinated omission.
 *
 *   latency_load ADDR PORT PATH HOST RATE CONNS SECONDS [WARMUP_SECONDS]
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
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
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

enum { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY };
enum { P_HEAD, P_BODY, P_CLOSE, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_END, P_TRAILER };

struct conn {
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

static const char usage[] = "usage: latency_load ADDR PORT PATH HOST RATE CONNS SECONDS [WARMUP_SECONDS]";

static struct sockaddr_in g_addr;
static char *g_req;
static size_t g_req_len;
static double g_rate;
static uint64_t g_t0, g_warm, g_total; /* requests [0, g_warm) are the warm-up */
static int g_ep = -1, g_tfd = -1;
static struct conn *g_conns;
static int g_nconns;
static struct conn **g_ring;
static int g_ring_head, g_ring_n;
static int g_busy, g_down;
static uint64_t *g_lat;
static size_t g_nlat, g_caplat;
static uint64_t g_sent, g_done, g_errors, g_last_done;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static uint64_t due_ns(uint64_t i)
{
    return g_t0 + (uint64_t)((double)i * 1e9 / g_rate);
}

static void cleanup(void)
{
    for (int i = 0; g_conns && i < g_nconns; i++) {
        if (g_conns[i].fd >= 0)
            close(g_conns[i].fd);
        free(g_conns[i].buf);
    }
    free(g_conns);
    free(g_ring);
    free(g_lat);
    free(g_req);
    if (g_tfd >= 0)
        close(g_tfd);
    if (g_ep >= 0)
        close(g_ep);
}

/* ---- idle connections, first in first out ------------------------------- */

static void ring_push(struct conn *c)
{
    if (c->in_ring)
        return;
    c->in_ring = 1;
    g_ring[(g_ring_head + g_ring_n++) % g_nconns] = c;
}

static struct conn *ring_pop(void)
{
    while (g_ring_n) {
        struct conn *c = g_ring[g_ring_head];
        g_ring_head = (g_ring_head + 1) % g_nconns;
        g_ring_n--;
        c->in_ring = 0;
        if (c->state == C_IDLE)
            return c;
    }
    return NULL;
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
    if (connect(c->fd, (struct sockaddr *)&g_addr, sizeof(g_addr)) < 0 && errno != EINPROGRESS) {
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
            g_errors++;
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
    while (c->out_off < g_req_len) {
        ssize_t n = send(c->fd, g_req + c->out_off, g_req_len - c->out_off, MSG_NOSIGNAL);
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
        g_sent++;
    if (flush_req(c) < 0)
        conn_fail(c, now);
}

static void record(uint64_t lat)
{
    if (g_nlat == g_caplat) {
        size_t cap = g_caplat ? g_caplat * 2 : 65536;
        uint64_t *p = realloc(g_lat, cap * sizeof(*p));
        if (!p)
            return; /* counted in done, just not in the percentiles */
        g_lat = p;
        g_caplat = cap;
    }
    g_lat[g_nlat++] = lat;
}

static void finish(struct conn *c)
{
    uint64_t now = now_ns();

    g_busy--;
    if (c->idx >= g_warm) {
        if (c->status >= 200 && c->status < 300) {
            g_done++;
            g_last_done = now;
            record(now > c->due ? now - c->due : 0);
        } else {
            g_errors++;
        }
    }
    /* Bytes beyond the response, or a request not fully written, leave the
     * connection out of step: start over rather than misparse. */
    if (c->close_after || c->pos < c->len || c->out_off < g_req_len) {
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
    if ((events & EPOLLOUT) && c->state == C_BUSY && c->out_off < g_req_len && flush_req(c) < 0) {
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

static double pct_us(double p)
{
    double r = p * (double)g_nlat;
    size_t i = (size_t)r;

    if (!g_nlat)
        return 0;
    if ((double)i < r) /* nearest rank: ceil(p * n) - 1 */
        i++;
    i = i ? i - 1 : 0;
    if (i >= g_nlat)
        i = g_nlat - 1;
    return (double)g_lat[i] / 1e3;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    double port, conns, seconds, warmup = 1;
    struct epoll_event evs[MAX_EVENTS];
    struct rlimit rl;

    if (argc != 8 && argc != 9)
        return bad_args("wrong number of arguments");
    g_addr.sin_family = AF_INET;
    if (inet_pton(AF_INET, argv[1], &g_addr.sin_addr) != 1 || (ntohl(g_addr.sin_addr.s_addr) >> 24) != 127)
        return bad_args("ADDR must be an IPv4 loopback address");
    if (!parse_num(argv[2], 1, 65535, &port) || port != (int)port)
        return bad_args("bad PORT");
    g_addr.sin_port = htons((uint16_t)port);
    if (argv[3][0] != '/' || !printable(argv[3], 8192))
        return bad_args("PATH must start with / and hold no spaces or control bytes");
    if (!printable(argv[4], 1024))
        return bad_args("bad HOST");
    if (!parse_num(argv[5], 1e-3, 1e8, &g_rate))
        return bad_args("RATE must be a number of requests per second in (0, 1e8]");
    if (!parse_num(argv[6], 1, MAX_CONNS, &conns) || conns != (int)conns)
        return bad_args("CONNS must be an integer in [1, 10000]");
    g_nconns = (int)conns;
    if (!parse_num(argv[7], 1e-3, 1e6, &seconds))
        return bad_args("bad SECONDS");
    if (argc == 9 && !parse_num(argv[8], 0, 1e6, &warmup))
        return bad_args("bad WARMUP_SECONDS");
    g_warm = (uint64_t)(warmup * g_rate + 0.5);
    uint64_t measured = (uint64_t)(seconds * g_rate + 0.5);
    if (measured == 0)
        return bad_args("RATE * SECONDS is less than one request");
    if (g_warm + measured > ((uint64_t)1 << 34))
        return bad_args("RATE * (SECONDS + WARMUP_SECONDS) is too many requests");
    g_total = g_warm + measured;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)g_nconns + 16) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)g_nconns + 16)
            return bad_args("CONNS is above the descriptor limit");
    }
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake-ups on time, not up to 50 us late */

    size_t rl_len = strlen(argv[3]) + strlen(argv[4]) + 64;
    g_req = malloc(rl_len);
    g_conns = calloc((size_t)g_nconns, sizeof(*g_conns));
    g_ring = calloc((size_t)g_nconns, sizeof(*g_ring));
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    g_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (!g_req || !g_conns || !g_ring || g_ep < 0 || g_tfd < 0) {
        fprintf(stderr, "latency_load: out of memory or descriptors\n");
        cleanup();
        return 1;
    }
    g_req_len = (size_t)snprintf(g_req, rl_len, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", argv[3], argv[4]);
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, g_tfd, &tev);
    for (int i = 0; i < g_nconns; i++) {
        struct conn *c = &g_conns[i];
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
    for (int i = 0; i < g_nconns; i++)
        if (conn_start(&g_conns[i]) < 0) {
            fprintf(stderr, "latency_load: cannot connect to %s:%s: %s\n", argv[1], argv[2], strerror(errno));
            cleanup();
            return 2;
        }
    while (ready < g_nconns) {
        uint64_t now = now_ns();
        if (now >= give_up) {
            fprintf(stderr, "latency_load: cannot connect to %s:%s: timed out\n", argv[1], argv[2]);
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
                fprintf(stderr, "latency_load: cannot connect to %s:%s: %s\n", argv[1], argv[2], strerror(err));
                cleanup();
                return 2;
            }
            conn_ready(c);
            ready++;
        }
    }

    g_t0 = now_ns();
    uint64_t mstart = due_ns(g_warm), deadline = due_ns(g_total) + DRAIN_NS;
    uint64_t next_due = 0, next_send = 0, armed = 0;
    for (;;) {
        uint64_t now = now_ns();
        while (next_due < g_total && due_ns(next_due) <= now)
            next_due++;
        if (g_down)
            for (int i = 0; i < g_nconns; i++) {
                struct conn *c = &g_conns[i];
                if (c->state == C_DOWN && c->retry_at <= now) {
                    g_down--;
                    if (conn_start(c) < 0)
                        conn_down(c, now);
                }
            }
        while (next_send < next_due) {
            struct conn *c = ring_pop();
            if (!c)
                break;
            dispatch(c, next_send++, now);
        }
        if ((next_send == g_total && g_busy == 0) || now >= deadline)
            break;

        /* Sleep until the next due request (if a connection could take it),
         * a reconnect, or the deadline; network events cut it short. */
        uint64_t wake = deadline;
        if (g_ring_n && next_due < g_total && due_ns(next_due) < wake)
            wake = due_ns(next_due);
        for (int i = 0; g_down && i < g_nconns; i++)
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
    uint64_t stop = now_ns();
    for (int i = 0; i < g_nconns; i++)
        if (g_conns[i].state == C_BUSY && g_conns[i].idx >= g_warm)
            record(stop - g_conns[i].due);
    for (uint64_t i = next_send > g_warm ? next_send : g_warm; i < g_total && due_ns(i) <= stop; i++)
        record(stop - due_ns(i));

    double window = g_last_done > mstart ? (double)(g_last_done - mstart) / 1e9 : 0;
    if (window < seconds)
        window = seconds;
    if (g_nlat)
        qsort(g_lat, g_nlat, sizeof(*g_lat), cmp_u64);
    printf("rate=%.10g sent=%llu done=%llu errors=%llu achieved_rps=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f "
           "p999_us=%.1f max_us=%.1f unfinished=%llu conns=%d\n",
           g_rate, (unsigned long long)g_sent, (unsigned long long)g_done, (unsigned long long)g_errors,
           (double)g_done / window, pct_us(0.5), pct_us(0.9), pct_us(0.99), pct_us(0.999),
           g_nlat ? (double)g_lat[g_nlat - 1] / 1e3 : 0.0,
           (unsigned long long)(measured - g_done - g_errors), g_nconns);
    cleanup();
    return 0;
}
