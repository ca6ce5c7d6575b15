/* SPDX-License-Identifier: MIT */
/*
 * proxy_wsbench.c - WebSocket load for bench/proxy.sh: many client
 * connections on one epoll loop, talking to the echo backend either
 * directly or through the proxy.
 *
 *   proxy_wsbench echo ADDR PORT PATH HOST N SECONDS [BYTES]
 *       N connections, each sending one masked message of BYTES (default 64)
 *       and waiting for its echo before the next; prints messages/s and the
 *       round-trip p50/p99 in microseconds. A message is one echo round
 *       trip: the client's frame out and the echoed frame back (a relay
 *       forwards two frames per message). msgs= is their count in the
 *       measured window; with WSBENCH_PIDS set (process ids, space
 *       separated), relay_ticks= is those processes' CPU time (all
 *       threads, clock ticks of hz=) over the same window.
 *   proxy_wsbench idle ADDR PORT PATH HOST N
 *       opens N connections (upgrade done, one echo each), prints "ready N",
 *       then holds them until stdin closes.
 *
 * Output is one line of key=value pairs for the script to read.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { C_CONNECTING, C_HANDSHAKE, C_OPEN };

struct conn {
    int fd;
    int state;
    char *in;
    size_t in_len, in_cap;
    uint64_t sent_at;
    size_t out_left;  /* bytes of the current frame still to write */
    size_t out_off;
    int echoed;       /* idle mode: the first echo arrived */
};

static const char *g_path, *g_host;
static size_t g_bytes = 64;
static unsigned char *g_frame;
static size_t g_frame_len;
static uint64_t *g_lat;
static size_t g_nlat, g_caplat;
static uint64_t g_msgs;
static int g_ep;
static struct sockaddr_in g_addr;

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void build_frame(void)
{
    size_t hl = g_bytes < 126 ? 2 : g_bytes < 65536 ? 4 : 10;

    g_frame_len = hl + 4 + g_bytes;
    g_frame = malloc(g_frame_len);
    g_frame[0] = 0x82; /* FIN, binary */
    if (g_bytes < 126) {
        g_frame[1] = (unsigned char)(0x80 | g_bytes);
    } else if (g_bytes < 65536) {
        g_frame[1] = 0x80 | 126;
        g_frame[2] = (unsigned char)(g_bytes >> 8);
        g_frame[3] = (unsigned char)g_bytes;
    } else {
        g_frame[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            g_frame[2 + i] = (unsigned char)((uint64_t)g_bytes >> (56 - 8 * i));
    }
    memcpy(g_frame + hl, "\x12\x34\x56\x78", 4);
    for (size_t i = 0; i < g_bytes; i++)
        g_frame[hl + 4 + i] = (unsigned char)(i ^ "\x12\x34\x56\x78"[i & 3]);
}

static struct conn *open_conn(void)
{
    struct conn *c = calloc(1, sizeof(*c));
    int one = 1;

    c->in_cap = g_bytes + 1024 > 4096 ? g_bytes + 1024 : 4096;
    c->in = malloc(c->in_cap);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("socket");
        exit(1);
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(c->fd, (struct sockaddr *)&g_addr, sizeof(g_addr)) < 0 && errno != EINPROGRESS) {
        perror("connect");
        exit(1);
    }
    c->state = C_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(g_ep, EPOLL_CTL_ADD, c->fd, &ev);
    return c;
}

static void send_frame(struct conn *c)
{
    c->out_off = 0;
    c->out_left = g_frame_len;
    c->sent_at = now_us();
    while (c->out_left) {
        ssize_t n = write(c->fd, g_frame + c->out_off, c->out_left);
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN) {
                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
                return;
            }
            perror("write");
            exit(1);
        }
        c->out_off += (size_t)n;
        c->out_left -= (size_t)n;
    }
}

/* Returns the length of one complete server frame at the start of in, or 0. */
static size_t frame_len(const unsigned char *p, size_t n)
{
    uint64_t len;
    size_t hl = 2;

    if (n < 2)
        return 0;
    len = p[1] & 0x7f;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        hl = 10;
    }
    return n >= hl + len ? hl + (size_t)len : 0;
}

static int handle(struct conn *c, uint32_t events, int echo_mode)
{
    if (c->state == C_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            fprintf(stderr, "connect: %s\n", strerror(err));
            exit(1);
        }
        char req[1024];
        int n = snprintf(req, sizeof(req),
                         "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
                         g_path, g_host);
        if (write(c->fd, req, (size_t)n) != n) {
            perror("write handshake");
            exit(1);
        }
        c->state = C_HANDSHAKE;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
        return 0;
    }
    if ((events & EPOLLOUT) && c->out_left) {
        while (c->out_left) {
            ssize_t n = write(c->fd, g_frame + c->out_off, c->out_left);
            if (n < 0 && errno == EAGAIN)
                break;
            if (n <= 0) {
                perror("write");
                exit(1);
            }
            c->out_off += (size_t)n;
            c->out_left -= (size_t)n;
        }
        if (!c->out_left) {
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
            epoll_ctl(g_ep, EPOLL_CTL_MOD, c->fd, &ev);
        }
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return 0;
    for (;;) {
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0 && errno == EAGAIN)
            break;
        if (n <= 0) {
            fprintf(stderr, "connection closed by the server (%s)\n", n ? strerror(errno) : "eof");
            exit(1);
        }
        c->in_len += (size_t)n;
        if (c->state == C_HANDSHAKE) {
            char *end = memmem(c->in, c->in_len, "\r\n\r\n", 4);
            if (!end)
                continue;
            if (strncmp(c->in, "HTTP/1.1 101", 12) != 0) {
                fprintf(stderr, "handshake refused: %.*s\n", (int)(end - c->in), c->in);
                exit(1);
            }
            size_t hl = (size_t)(end - c->in) + 4;
            memmove(c->in, c->in + hl, c->in_len - hl);
            c->in_len -= hl;
            c->state = C_OPEN;
            send_frame(c);
            continue;
        }
        size_t fl;
        while ((fl = frame_len((unsigned char *)c->in, c->in_len)) > 0) {
            memmove(c->in, c->in + fl, c->in_len - fl);
            c->in_len -= fl;
            if (!echo_mode) {
                c->echoed = 1;
                return 1;
            }
            g_msgs++;
            if (g_nlat < g_caplat)
                g_lat[g_nlat++] = now_us() - c->sent_at;
            send_frame(c);
        }
        if (c->in_len == c->in_cap) {
            fprintf(stderr, "frame too large\n");
            exit(1);
        }
    }
    return 0;
}

/* CPU clock ticks (user + system, all threads) of the processes in WSBENCH_PIDS. */
static unsigned long long pids_ticks(void)
{
    const char *pids = getenv("WSBENCH_PIDS");
    unsigned long long total = 0;
    char *end;

    if (!pids)
        return 0;
    for (const char *p = pids; *p;) {
        long pid = strtol(p, &end, 10);
        if (end == p) {
            p++;
            continue;
        }
        p = end;
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        /* Fields after the ")" that ends comm: state is field 3, utime 14, stime 15. */
        char *q = strrchr(buf, ')');
        unsigned long long ut, st;
        if (q && sscanf(q + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) == 2)
            total += ut + st;
    }
    return total;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    struct rlimit rl;
    int echo_mode;
    unsigned n;
    double seconds = 0;

    if (argc < 7 || (strcmp(argv[1], "echo") && strcmp(argv[1], "idle"))) {
        fprintf(stderr, "usage: %s echo|idle ADDR PORT PATH HOST N [SECONDS [BYTES]]\n", argv[0]);
        return 2;
    }
    echo_mode = strcmp(argv[1], "echo") == 0;
    g_addr.sin_family = AF_INET;
    inet_pton(AF_INET, argv[2], &g_addr.sin_addr);
    g_addr.sin_port = htons((uint16_t)atoi(argv[3]));
    g_path = argv[4];
    g_host = argv[5];
    n = (unsigned)atoi(argv[6]);
    if (echo_mode) {
        if (argc < 8) {
            fprintf(stderr, "echo needs SECONDS\n");
            return 2;
        }
        seconds = atof(argv[7]);
        if (argc > 8)
            g_bytes = (size_t)atol(argv[8]);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    build_frame();
    g_caplat = 4u << 20;
    g_lat = malloc(g_caplat * sizeof(*g_lat));
    g_ep = epoll_create1(EPOLL_CLOEXEC);

    struct conn **conns = calloc(n, sizeof(*conns));
    unsigned opened = 0, ready = 0;
    struct epoll_event evs[512];
    /* Idle mode: open in waves so the accept queues never overflow. */
    while (opened < n && opened - ready < 256)
        conns[opened++] = open_conn();
    if (echo_mode) {
        while (opened < n)
            conns[opened++] = open_conn();
        /* Warm up until every connection has had one echo. */
        uint64_t start = 0, end = 0;
        unsigned long long ticks0 = 0;
        int measuring = 0;
        uint64_t warm_deadline = now_us() + 30000000u;
        for (;;) {
            int k = epoll_wait(g_ep, evs, 512, 100);
            for (int i = 0; i < k; i++)
                handle(evs[i].data.ptr, evs[i].events, 1);
            uint64_t t = now_us();
            if (!measuring && (g_msgs >= n || t > warm_deadline)) {
                measuring = 1;
                g_msgs = 0;
                g_nlat = 0;
                ticks0 = pids_ticks();
                start = t;
                end = t + (uint64_t)(seconds * 1e6);
            }
            if (measuring && t >= end)
                break;
        }
        unsigned long long ticks = pids_ticks() - ticks0;
        double el = (double)(now_us() - start) / 1e6;
        qsort(g_lat, g_nlat, sizeof(*g_lat), cmp_u64);
        printf("msgs_per_sec=%.0f p50_us=%llu p99_us=%llu conns=%u bytes=%zu msgs=%llu secs=%.3f", (double)g_msgs / el,
               (unsigned long long)(g_nlat ? g_lat[g_nlat / 2] : 0),
               (unsigned long long)(g_nlat ? g_lat[g_nlat * 99 / 100] : 0), n, g_bytes,
               (unsigned long long)g_msgs, el);
        if (getenv("WSBENCH_PIDS"))
            printf(" relay_ticks=%llu hz=%ld", ticks, sysconf(_SC_CLK_TCK));
        printf("\n");
        return 0;
    }
    while (ready < n) {
        int k = epoll_wait(g_ep, evs, 512, 10000);
        if (k == 0) {
            fprintf(stderr, "stalled at %u of %u connections\n", ready, n);
            return 1;
        }
        for (int i = 0; i < k; i++)
            if (handle(evs[i].data.ptr, evs[i].events, 0)) {
                ready++;
                struct conn *c = evs[i].data.ptr;
                epoll_ctl(g_ep, EPOLL_CTL_DEL, c->fd, NULL);
            }
        while (opened < n && opened - ready < 256)
            conns[opened++] = open_conn();
    }
    printf("ready=%u\n", ready);
    fflush(stdout);
    /* Hold until stdin closes. */
    char b[64];
    while (read(0, b, sizeof(b)) > 0)
        ;
    return 0;
}
