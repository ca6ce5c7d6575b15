/* SPDX-License-Identifier: MIT */
/*
 * fuzz_h2.c - libFuzzer target for the proxy's HTTP/2 input path (h2.c):
 * client bytes after the preface go into a session, in two pieces split
 * where the first byte says; every request it turns into an HTTP/1.1 head
 * must parse again as exactly one request (h1.c), and each exchange is then
 * answered with one of a few HTTP/1.1 responses (lengths, chunks, 1xx,
 * bodies cut short) that the session turns into frames. Sanitizers check
 * memory; the session must release every exchange it opened.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/proxy/h1.h"
#include "../../src/proxy/h2.h"

struct fake {
    struct h2_stream *st;
    struct fake *next;
    bool fed;
};

static struct fake *open_list;
static long opened;

static int io_send(struct h2_session *s, const uint8_t *data, size_t len)
{
    (void)s;
    (void)data;
    (void)len;
    return 0;
}

static int io_open(struct h2_stream *st, const char *head, size_t len)
{
    struct h1_parser p;
    struct fake *f;

    h1_init(&p, H1_REQUEST, false);
    /* The head we make must be one complete request that our own HTTP/1.1 side accepts or refuses cleanly. */
    int r = h1_parse_head(&p, head, len);
    if (r == H1_MORE || (r == H1_DONE && p.head_len != len))
        abort(); /* cut short, or a second request behind the first */
    f = calloc(1, sizeof(*f));
    f->st = st;
    f->next = open_list;
    open_list = f;
    h2_stream_set_bridge(st, f);
    opened++;
    return 0;
}

static int io_write(struct h2_stream *st, const char *data, size_t len)
{
    (void)st;
    (void)data;
    (void)len;
    return 1;
}

static void io_pause(struct h2_stream *st, bool paused)
{
    (void)st;
    (void)paused;
}

static void io_close(struct h2_stream *st, bool reuse)
{
    struct fake *f = h2_stream_bridge(st), **pp;

    (void)reuse;
    for (pp = &open_list; *pp && *pp != f; pp = &(*pp)->next)
        ;
    if (!*pp)
        abort(); /* closed twice, or never opened */
    *pp = f->next;
    free(f);
    opened--;
}

static const struct h2_io fuzz_io = {
    .send = io_send, .open = io_open, .write = io_write, .pause = io_pause, .close = io_close,
};

static const char *const answers[] = {
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\nConnection: close\r\n\r\nhello",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nServer: x\r\n\r\n",
    "HTTP/1.1 200 OK\r\n\r\nuntil the connection closes",
    "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ncut short",
    "HTTP/1.1 999 bad\r\nBad Name: v\r\n\r\n",
    "not http at all\r\n\r\n",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct h2_session *s;
    const char *answer;
    size_t cut;
    int r;

    if (size < 1)
        return 0;
    answer = answers[data[0] % (sizeof(answers) / sizeof(answers[0]))];
    cut = size > 1 ? data[0] % (size - 1) : 0;
    data++;
    size--;
    s = h2_session_new(&fuzz_io, NULL, "Plane/fuzz");
    r = h2_session_recv(s, (const uint8_t *)H2_PREFACE, H2_PREFACE_LEN);
    if (r == 0)
        r = h2_session_recv(s, data, cut);
    if (r == 0)
        r = h2_session_recv(s, data + cut, size - cut);
    /* Answer every exchange still open, one at a time (an answer may close other streams). */
    for (;;) {
        struct fake *f = open_list;
        while (f && f->fed)
            f = f->next;
        if (!f || r < 0)
            break;
        f->fed = true;
        struct h2_stream *st = f->st;
        size_t n = strlen(answer);
        h2_stream_response(st, answer, n / 2);
        /* The first half may have closed the stream. */
        for (f = open_list; f && f->st != st; f = f->next)
            ;
        if (f)
            h2_stream_response(st, answer + n / 2, n - n / 2);
        for (f = open_list; f && f->st != st; f = f->next)
            ;
        if (f)
            h2_stream_response_end(st, 0);
    }
    h2_session_free(s);
    if (opened != 0 || open_list)
        abort();
    return 0;
}
