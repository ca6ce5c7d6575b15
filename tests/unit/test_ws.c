/* SPDX-License-Identifier: MIT */
/*
 * test_ws.c - unit tests of the WebSocket endpoint (ws.c) and client
 * (ws_client.c). A server-side and a client-side ws are wired back to back
 * in memory (each one's writes are queued and fed to the other), with raw
 * frames built here where the peer must misbehave; the client runs against
 * a small libuv TCP server on 127.0.0.1 that does the server handshake with
 * ws_accept_key() and ws_new(true, ...).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>

#include "../../src/common/buf.h"
#include "../../src/common/net.h"
#include "../../src/common/ws.h"
#include "../../src/common/ws_client.h"
#include "../../src/common/xalloc.h"
#include "test.h"

/* ---- in-memory pairs ---- */

#define PEER_MAX_MSGS 64

struct peer {
    struct ws *ws;
    struct buf wire; /* what this side wrote, not yet fed to the other side */
    char *msgs[PEER_MAX_MSGS]; /* owned copies */
    size_t lens[PEER_MAX_MSGS];
    int n;
    int closes, close_code;
    int last_rc;        /* last non-zero ws_feed() result */
    bool echo;          /* answer each text with the same text */
    bool bye_on_text;   /* answer a text with "bye" and a 1001 close, from the handler */
    const char *abort_on; /* ws_abort() when this text arrives */
    bool fail_writes;
};

static int peer_write(void *transport, const char *data, size_t len)
{
    struct peer *p = transport;

    if (p->fail_writes)
        return -EPIPE;
    ASSERT_OK(buf_append(&p->wire, data, len));
    return 0;
}

static void peer_on_text(void *arg, const char *msg, size_t len)
{
    struct peer *p = arg;

    ASSERT_EQ(msg[len], '\0');
    ASSERT_TRUE(p->n < PEER_MAX_MSGS);
    p->msgs[p->n] = xmalloc(len + 1);
    memcpy(p->msgs[p->n], msg, len + 1);
    p->lens[p->n++] = len;
    if (p->echo)
        ASSERT_OK(ws_send_text(p->ws, msg, len));
    if (p->bye_on_text) {
        ASSERT_OK(ws_send_text(p->ws, "bye", 3));
        ASSERT_OK(ws_send_close(p->ws, WS_CLOSE_GOING_AWAY));
        ASSERT_EQ(ws_send_text(p->ws, "late", 4), -EPIPE);
    }
    if (p->abort_on && strcmp(msg, p->abort_on) == 0)
        ws_abort(p->ws);
}

static void peer_on_close(void *arg, int code)
{
    struct peer *p = arg;

    p->closes++;
    p->close_code = code;
    ASSERT_TRUE(ws_is_closed(p->ws));
    ASSERT_EQ(ws_send_text(p->ws, "x", 1), -EPIPE); /* allowed from a handler, and refused */
}

static const struct ws_handler peer_handler = {.on_text = peer_on_text, .on_close = peer_on_close};

struct pair {
    struct peer s, c; /* server side, client side */
};

static void pair_init(struct pair *p)
{
    memset(p, 0, sizeof(*p));
    p->s.ws = ws_new(true, peer_write, &p->s, &peer_handler, &p->s);
    p->c.ws = ws_new(false, peer_write, &p->c, &peer_handler, &p->c);
}

static void peer_release(struct peer *p)
{
    ws_free(p->ws);
    buf_release(&p->wire);
    for (int i = 0; i < p->n; i++)
        free(p->msgs[i]);
}

static void pair_release(struct pair *p)
{
    peer_release(&p->s);
    peer_release(&p->c);
}

/* Feeds data to to in pieces of chunk bytes (0: all at once). */
static void feed(struct peer *to, const char *data, size_t len, size_t chunk)
{
    size_t off = 0;

    if (chunk == 0)
        chunk = len ? len : 1;
    do {
        size_t n = len - off < chunk ? len - off : chunk;
        int rc = ws_feed(to->ws, data + off, n);
        if (rc != 0)
            to->last_rc = rc;
        off += n;
    } while (off < len);
}

/* Moves bytes both ways until neither side has anything more to say. */
static void pump(struct pair *p, size_t chunk)
{
    while (p->s.wire.len || p->c.wire.len) {
        struct peer *from = p->c.wire.len ? &p->c : &p->s;
        struct peer *to = from == &p->c ? &p->s : &p->c;
        size_t len = from->wire.len;
        char *data = buf_detach(&from->wire);
        feed(to, data, len, chunk);
        free(data);
    }
}

static char *pattern(size_t len)
{
    char *s = xmalloc(len + 1);

    for (size_t i = 0; i < len; i++)
        s[i] = (char)('a' + i % 26);
    s[len] = '\0';
    return s;
}

/* A raw frame as a peer would send it; masked frames use a fixed mask. */
static void raw_frame(struct buf *out, bool fin, int opcode, bool masked, const char *payload, size_t len)
{
    static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    uint8_t h[14];
    size_t n = 0;

    h[n++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (len < 126) {
        h[n++] = (uint8_t)((masked ? 0x80 : 0) | len);
    } else if (len < 65536) {
        h[n++] = (uint8_t)((masked ? 0x80 : 0) | 126);
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = (uint8_t)((masked ? 0x80 : 0) | 127);
        for (int i = 7; i >= 0; i--)
            h[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    if (masked) {
        memcpy(h + n, mask, 4);
        n += 4;
    }
    buf_append(out, h, n);
    for (size_t i = 0; i < len; i++) {
        char b = (char)(payload[i] ^ (masked ? mask[i % 4] : 0));
        buf_append(out, &b, 1);
    }
}

TEST(ws_accept_key_rfc_example)
{
    char out[WS_ACCEPT_LEN];
    char key[WS_KEY_LEN], key2[WS_KEY_LEN];

    ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", out); /* RFC 6455 section 1.3 */
    ASSERT_STR_EQ(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ws_random_key(key);
    ws_random_key(key2);
    ASSERT_EQ(strlen(key), 24);
    ASSERT_EQ(key[22], '=');
    ASSERT_TRUE(strcmp(key, key2) != 0);
}

static void round_trip(size_t len, size_t chunk)
{
    struct pair p;
    char *msg = pattern(len);

    pair_init(&p);
    ASSERT_OK(ws_send_text(p.c.ws, msg, len));
    ASSERT_OK(ws_send_text(p.s.ws, msg, len));
    pump(&p, chunk);
    ASSERT_EQ(p.s.n, 1);
    ASSERT_EQ(p.c.n, 1);
    ASSERT_EQ(p.s.lens[0], len);
    ASSERT_EQ(p.c.lens[0], len);
    ASSERT_TRUE(memcmp(p.s.msgs[0], msg, len) == 0);
    ASSERT_TRUE(memcmp(p.c.msgs[0], msg, len) == 0);
    ASSERT_EQ(p.s.last_rc, 0);
    ASSERT_EQ(p.c.last_rc, 0);
    ASSERT_TRUE(ws_is_open(p.s.ws));
    ASSERT_TRUE(ws_is_open(p.c.ws));
    ASSERT_EQ(p.s.closes + p.c.closes, 0);
    pair_release(&p);
    free(msg);
}

TEST(ws_text_messages_both_ways)
{
    static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 70000, 1 << 20};

    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        round_trip(sizes[i], 0);
        round_trip(sizes[i], 4093); /* frames split at odd places */
    }
}

TEST(ws_fragmented_delivery_byte_by_byte)
{
    static const size_t sizes[] = {0, 125, 126, 70000};

    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
        round_trip(sizes[i], 1);
}

TEST(ws_many_messages_in_one_feed_and_echo)
{
    struct pair p;
    char m[16];

    pair_init(&p);
    p.s.echo = true; /* the handler sends from inside ws_feed() */
    for (int i = 0; i < 20; i++) {
        snprintf(m, sizeof(m), "m%d", i);
        ASSERT_OK(ws_send_text(p.c.ws, m, strlen(m)));
    }
    pump(&p, 0);
    ASSERT_EQ(p.s.n, 20);
    ASSERT_EQ(p.c.n, 20);
    ASSERT_STR_EQ(p.c.msgs[0], "m0");
    ASSERT_STR_EQ(p.c.msgs[19], "m19");
    pair_release(&p);
}

TEST(ws_fragmented_frames_with_ping_between)
{
    struct pair p;
    struct buf in = BUF_INIT;

    pair_init(&p);
    raw_frame(&in, false, 0x1, true, "hel", 3);
    raw_frame(&in, false, 0x0, true, "lo ", 3);
    raw_frame(&in, true, 0x9, true, "pi", 2); /* a ping may come between fragments */
    raw_frame(&in, true, 0x0, true, "world", 5);
    raw_frame(&in, true, 0x2, true, "\x00\x01", 2); /* binary: ignored */
    raw_frame(&in, true, 0x1, true, "next", 4);
    feed(&p.s, in.data, in.len, 1);
    ASSERT_EQ(p.s.last_rc, 0);
    ASSERT_EQ(p.s.n, 2);
    ASSERT_STR_EQ(p.s.msgs[0], "hello world");
    ASSERT_STR_EQ(p.s.msgs[1], "next");
    ASSERT_EQ(p.s.wire.len, 4); /* the pong, unmasked */
    ASSERT_TRUE(memcmp(p.s.wire.data, "\x8a\x02pi", 4) == 0);
    buf_release(&in);
    pair_release(&p);
}

TEST(ws_ping_gets_pong)
{
    struct pair p;

    pair_init(&p);
    ASSERT_OK(ws_send_ping(p.c.ws, "abc", 3));
    ASSERT_EQ(p.c.wire.len, 2 + 4 + 3); /* masked ping */
    ASSERT_EQ((uint8_t)p.c.wire.data[0], 0x89);
    ASSERT_EQ((uint8_t)p.c.wire.data[1], 0x83);
    feed(&p.s, p.c.wire.data, p.c.wire.len, 0);
    buf_reset(&p.c.wire);
    ASSERT_EQ(p.s.wire.len, 5);
    ASSERT_TRUE(memcmp(p.s.wire.data, "\x8a\x03" "abc", 5) == 0);
    pump(&p, 0); /* the client takes the pong silently */
    ASSERT_EQ(p.c.last_rc, 0);
    ASSERT_EQ(p.c.n + p.s.n, 0);
    ASSERT_EQ(ws_send_ping(p.c.ws, NULL, 126), -EINVAL);
    ASSERT_OK(ws_send_ping(p.s.ws, NULL, 0));
    pump(&p, 1);
    ASSERT_TRUE(ws_is_open(p.c.ws) && ws_is_open(p.s.ws));
    pair_release(&p);
}

TEST(ws_close_handshake)
{
    struct pair p;

    pair_init(&p);
    ASSERT_OK(ws_send_close(p.c.ws, WS_CLOSE_NORMAL));
    ASSERT_FALSE(ws_is_open(p.c.ws));
    ASSERT_FALSE(ws_is_closed(p.c.ws)); /* waiting for the reply */
    ASSERT_EQ(ws_send_text(p.c.ws, "x", 1), -EPIPE);
    ASSERT_EQ(ws_send_close(p.c.ws, WS_CLOSE_NORMAL), -EPIPE);
    ASSERT_OK(ws_send_text(p.s.ws, "still", 5)); /* the server may still talk until it sees the close */
    pump(&p, 0);
    ASSERT_EQ(p.s.closes, 1);
    ASSERT_EQ(p.s.close_code, 1000);
    ASSERT_EQ(p.c.closes, 1);
    ASSERT_EQ(p.c.close_code, 1000);
    ASSERT_EQ(p.c.n, 1); /* "still" arrived before the close reply */
    ASSERT_EQ(p.s.last_rc, 0);
    ASSERT_EQ(p.c.last_rc, 0);
    ASSERT_TRUE(ws_is_closed(p.s.ws) && ws_is_closed(p.c.ws));
    ASSERT_EQ(ws_feed_eof(p.c.ws), 0); /* already over: no second on_close */
    ASSERT_EQ(ws_feed(p.s.ws, "\x81", 1), 0);
    ASSERT_EQ(p.c.closes + p.s.closes, 2);
    ASSERT_EQ(ws_send_close(p.c.ws, 4000), -EPIPE);
    ASSERT_EQ(ws_send_close(p.c.ws, 1005), -EINVAL);
    pair_release(&p);
}

TEST(ws_handler_sends_then_closes_in_order)
{
    struct pair p;

    pair_init(&p);
    p.s.bye_on_text = true;
    ASSERT_OK(ws_send_text(p.c.ws, "hi", 2));
    pump(&p, 0);
    ASSERT_EQ(p.c.n, 1);
    ASSERT_STR_EQ(p.c.msgs[0], "bye"); /* queued before the close, so sent before it */
    ASSERT_EQ(p.c.closes, 1);
    ASSERT_EQ(p.c.close_code, 1001);
    ASSERT_EQ(p.s.closes, 1);
    ASSERT_EQ(p.s.close_code, 1001); /* the client echoed our code */
    pair_release(&p);
}

TEST(ws_oversized_message_closes_1009)
{
    struct pair p;
    char *big = pattern(1001);
    struct buf in = BUF_INIT;

    pair_init(&p);
    ws_set_max_message(p.s.ws, 1000);
    ASSERT_OK(ws_send_text(p.c.ws, big, 1000)); /* exactly the cap is fine */
    pump(&p, 0);
    ASSERT_EQ(p.s.n, 1);
    ASSERT_OK(ws_send_text(p.c.ws, big, 1001));
    pump(&p, 0);
    ASSERT_EQ(p.s.n, 1);
    ASSERT_EQ(p.s.last_rc, -EPROTO);
    ASSERT_EQ(p.s.closes, 1);
    ASSERT_EQ(p.s.close_code, 1009);
    ASSERT_EQ(p.c.closes, 1);
    ASSERT_EQ(p.c.close_code, 1009);
    pair_release(&p);

    /* The cap holds for the sum of a fragmented message's frames too. */
    pair_init(&p);
    ws_set_max_message(p.s.ws, 1000);
    for (int i = 0; i < 3; i++)
        raw_frame(&in, i == 2, i == 0 ? 0x1 : 0x0, true, big, 400);
    feed(&p.s, in.data, in.len, 0);
    ASSERT_EQ(p.s.last_rc, -EPROTO);
    ASSERT_EQ(p.s.n, 0);
    ASSERT_EQ(p.s.close_code, 1009);
    ASSERT_TRUE(memcmp(p.s.wire.data, "\x88\x02\x03\xf1", 4) == 0);
    buf_release(&in);
    free(big);
    pair_release(&p);
}

static void expect_protocol_error(const char *data, size_t len, int code)
{
    struct pair p;

    pair_init(&p);
    feed(&p.s, data, len, 0);
    ASSERT_EQ(p.s.last_rc, -EPROTO);
    ASSERT_EQ(p.s.closes, 1);
    ASSERT_EQ(p.s.close_code, code);
    ASSERT_TRUE(p.s.wire.len >= 4);
    ASSERT_EQ((uint8_t)p.s.wire.data[0], 0x88);
    ASSERT_EQ(((uint8_t)p.s.wire.data[2] << 8) | (uint8_t)p.s.wire.data[3], code);
    ASSERT_EQ(ws_feed(p.s.ws, data, len), -EPROTO); /* stays over */
    ASSERT_EQ(p.s.closes, 1);
    pair_release(&p);
}

TEST(ws_garbage_is_a_protocol_error)
{
    static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    struct buf in = BUF_INIT;

    expect_protocol_error(http, sizeof(http) - 1, 1002);
    raw_frame(&in, true, 0x1, false, "hi", 2); /* unmasked from a client */
    expect_protocol_error(in.data, in.len, 1002);
    buf_reset(&in);
    raw_frame(&in, true, 0x1, true, "\xff\xfe", 2); /* not UTF-8 */
    expect_protocol_error(in.data, in.len, 1007);
    buf_reset(&in);
    raw_frame(&in, true, 0x0, true, "x", 1); /* continuation without a start */
    expect_protocol_error(in.data, in.len, 1002);
    buf_reset(&in);
    raw_frame(&in, false, 0x9, true, "x", 1); /* fragmented ping */
    expect_protocol_error(in.data, in.len, 1002);
    buf_release(&in);

    /* Random bytes: never a crash, on_close at most once. */
    srand(42);
    for (int round = 0; round < 2000; round++) {
        struct pair p;
        char junk[256];
        size_t n = (size_t)(rand() % (int)sizeof(junk)) + 1;
        for (size_t i = 0; i < n; i++)
            junk[i] = (char)rand();
        pair_init(&p);
        feed(round % 2 ? &p.s : &p.c, junk, n, (size_t)(round % 7));
        ASSERT_TRUE(p.s.closes <= 1 && p.c.closes <= 1);
        pair_release(&p);
    }
}

TEST(ws_abort_from_handler_stops_delivery)
{
    struct pair p;

    pair_init(&p);
    p.s.abort_on = "stop";
    ASSERT_OK(ws_send_text(p.c.ws, "a", 1));
    ASSERT_OK(ws_send_text(p.c.ws, "stop", 4));
    ASSERT_OK(ws_send_text(p.c.ws, "b", 1));
    pump(&p, 0); /* all three in one ws_feed() */
    ASSERT_EQ(p.s.n, 2);
    ASSERT_EQ(p.s.last_rc, -ECONNABORTED);
    ASSERT_EQ(p.s.closes, 0);
    ASSERT_TRUE(ws_is_closed(p.s.ws));
    ASSERT_EQ(ws_send_text(p.s.ws, "x", 1), -EPIPE);
    ASSERT_EQ(ws_feed_eof(p.s.ws), -ECONNABORTED);
    ASSERT_EQ(p.s.closes, 0);
    pair_release(&p);
}

TEST(ws_write_failure_and_eof)
{
    struct pair p;

    pair_init(&p);
    p.s.fail_writes = true;
    ASSERT_EQ(ws_send_text(p.s.ws, "x", 1), -EPIPE);
    ASSERT_FALSE(ws_is_open(p.s.ws));
    ASSERT_EQ(p.s.closes, 0); /* handlers run only inside ws_feed() */
    ASSERT_EQ(ws_feed(p.s.ws, "", 0), -EIO);
    ASSERT_EQ(p.s.closes, 1);
    ASSERT_EQ(p.s.close_code, 1006);

    ASSERT_EQ(ws_feed_eof(p.c.ws), -ECONNRESET);
    ASSERT_EQ(p.c.closes, 1);
    ASSERT_EQ(p.c.close_code, 1006);
    ASSERT_EQ(ws_feed_eof(p.c.ws), -ECONNRESET);
    ASSERT_EQ(p.c.closes, 1);
    pair_release(&p);
}

/* ---- ws_client against a small server on 127.0.0.1 ---- */

enum ts_mode {
    TS_ECHO,       /* 101, then echo; "close-me": close with 4000; "drop-me": hang up without a close frame */
    TS_GREET,      /* 101 and a "hello" frame in the same write */
    TS_HTTP_200,   /* a plain 200 */
    TS_BAD_ACCEPT, /* 101 with a wrong Sec-WebSocket-Accept */
};

struct tserver {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    enum ts_mode mode;
    char *request; /* owned; the last request head */
    int conns, conns_closed;
    int close_code; /* of the last connection's ws */
};

struct tconn {
    struct tserver *srv;
    uv_tcp_t tcp;
    uv_shutdown_t shutdown;
    struct buf head;
    struct ws *ws; /* owned */
    bool ending;
};

static int tconn_write(void *transport, const char *data, size_t len);

static void tconn_on_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static int tconn_write(void *transport, const char *data, size_t len)
{
    struct tconn *t = transport;
    uv_write_t *req = xmalloc(sizeof(*req) + len);
    char *copy = (char *)(req + 1);
    uv_buf_t b;
    int rc;

    memcpy(copy, data, len);
    b = uv_buf_init(copy, (unsigned)len);
    rc = uv_write(req, (uv_stream_t *)&t->tcp, &b, 1, tconn_on_written);
    if (rc < 0)
        free(req);
    return rc;
}

static void tconn_on_closed(uv_handle_t *h)
{
    struct tconn *t = h->data;

    t->srv->conns_closed++;
    ws_free(t->ws);
    buf_release(&t->head);
    free(t);
}

static void tconn_on_shutdown(uv_shutdown_t *req, int status)
{
    struct tconn *t = req->data;

    (void)status;
    if (!uv_is_closing((uv_handle_t *)&t->tcp))
        uv_close((uv_handle_t *)&t->tcp, tconn_on_closed);
}

static void tconn_end(struct tconn *t)
{
    if (t->ending)
        return;
    t->ending = true;
    uv_read_stop((uv_stream_t *)&t->tcp);
    t->shutdown.data = t;
    if (uv_shutdown(&t->shutdown, (uv_stream_t *)&t->tcp, tconn_on_shutdown) != 0)
        uv_close((uv_handle_t *)&t->tcp, tconn_on_closed);
}

static void tconn_on_text(void *arg, const char *msg, size_t len)
{
    struct tconn *t = arg;

    if (strcmp(msg, "close-me") == 0) {
        ASSERT_OK(ws_send_close(t->ws, 4000));
    } else if (strcmp(msg, "drop-me") == 0) {
        ws_abort(t->ws); /* tconn_feed() then hangs up */
    } else
        ASSERT_OK(ws_send_text(t->ws, msg, len));
}

static void tconn_on_close(void *arg, int code)
{
    struct tconn *t = arg;

    t->srv->close_code = code;
}

static const struct ws_handler tconn_handler = {.on_text = tconn_on_text, .on_close = tconn_on_close};

static void tconn_feed(struct tconn *t, const char *data, size_t len)
{
    int rc = ws_feed(t->ws, data, len);

    if (rc < 0 || ws_is_closed(t->ws))
        tconn_end(t);
}

/* The server half of the handshake, by hand. */
static void tconn_handshake(struct tconn *t)
{
    const char *end = strstr(buf_cstr(&t->head), "\r\n\r\n");
    const char *k = strcasestr(buf_cstr(&t->head), "\r\nSec-WebSocket-Key:");
    char key[64] = "", accept[WS_ACCEPT_LEN];
    char *resp;

    free(t->srv->request);
    t->srv->request = xstrndup(t->head.data, (size_t)(end + 4 - t->head.data));
    if (k)
        sscanf(k + 20, " %63[^\r]", key);
    ws_accept_key(key, accept);
    switch (t->srv->mode) {
    case TS_HTTP_200:
        resp = xstrdup("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
        break;
    case TS_BAD_ACCEPT:
        accept[3] ^= 1;
        /* fall through */
    default:
        resp = xasprintf("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         "Sec-WebSocket-Accept: %s\r\n\r\n%s",
                         accept, t->srv->mode == TS_GREET ? "\x81\x05hello" : "");
    }
    tconn_write(t, resp, strlen(resp));
    free(resp);
    if (t->srv->mode == TS_HTTP_200 || t->srv->mode == TS_BAD_ACCEPT)
        return;
    t->ws = ws_new(true, tconn_write, t, &tconn_handler, t);
    size_t used = (size_t)(end + 4 - t->head.data);
    if (used < t->head.len)
        tconn_feed(t, t->head.data + used, t->head.len - used);
}

static void tconn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    (void)h;
    b->base = xmalloc(suggested);
    b->len = suggested;
}

static void tconn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct tconn *t = s->data;

    if (nread < 0) {
        if (t->ws)
            ws_feed_eof(t->ws);
        tconn_end(t);
    } else if (nread > 0 && !t->ending) {
        if (t->ws) {
            tconn_feed(t, b->base, (size_t)nread);
        } else {
            buf_append(&t->head, b->base, (size_t)nread);
            if (strstr(buf_cstr(&t->head), "\r\n\r\n"))
                tconn_handshake(t);
        }
    }
    free(b->base);
}

static void tserver_on_connection(uv_stream_t *l, int status)
{
    struct tserver *srv = l->data;
    struct tconn *t = xcalloc(1, sizeof(*t));

    ASSERT_OK(status);
    t->srv = srv;
    uv_tcp_init(srv->loop, &t->tcp);
    t->tcp.data = t;
    ASSERT_OK(uv_accept(l, (uv_stream_t *)&t->tcp));
    srv->conns++;
    uv_read_start((uv_stream_t *)&t->tcp, tconn_alloc, tconn_on_read);
}

/* 0, or -errno if ip cannot be bound (no IPv6 here). */
static int tserver_start(struct tserver *srv, uv_loop_t *loop, const char *ip, enum ts_mode mode)
{
    struct sockaddr_storage ss;
    char addr[NET_ADDR_LEN];
    int namelen = sizeof(ss);
    int rc;

    memset(srv, 0, sizeof(*srv));
    srv->loop = loop;
    srv->mode = mode;
    net_addr_format(addr, ip, 1);
    ASSERT_OK(net_addr_parse(addr, &ss));
    if (ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&ss)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&ss)->sin6_port = 0;
    uv_tcp_init(loop, &srv->listener);
    srv->listener.data = srv;
    rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&srv->listener, 16, tserver_on_connection);
    if (rc < 0) {
        uv_close((uv_handle_t *)&srv->listener, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        return rc;
    }
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &namelen);
    srv->port = ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
                                              : ((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

static bool all_conns_closed(void *arg)
{
    struct tserver *srv = arg;

    return srv->conns == srv->conns_closed;
}

/* Waits for the server's connections to end, closes it, and checks nothing is left on the loop. */
static void tserver_stop_and_check_loop(struct tserver *srv)
{
    ASSERT_TRUE(test_run_until(srv->loop, 3000, all_conns_closed, srv));
    uv_close((uv_handle_t *)&srv->listener, NULL);
    uv_run(srv->loop, UV_RUN_DEFAULT); /* returns once every handle, the client's included, is closed */
    ASSERT_OK(uv_loop_close(srv->loop));
    free(srv->request);
}

struct tclient {
    struct ws_client *c;
    int opened, closed, n;
    char reason[256];
    char *msgs[8]; /* owned */
    size_t lens[8];
    bool free_on_text, free_on_close, send_on_open;
};

static void tclient_on_open(void *arg)
{
    struct tclient *t = arg;

    t->opened++;
    if (t->send_on_open) {
        ASSERT_OK(ws_client_send_text(t->c, "a", 1));
        ASSERT_OK(ws_client_send_text(t->c, "b", 1));
        ASSERT_OK(ws_client_send_text(t->c, "c", 1));
    }
}

static void tclient_on_text(void *arg, const char *msg, size_t len)
{
    struct tclient *t = arg;

    ASSERT_TRUE(t->n < 8);
    t->msgs[t->n] = xstrndup(msg, len);
    t->lens[t->n++] = len;
    if (t->free_on_text) {
        ws_client_free(t->c);
        t->c = NULL;
    }
}

static void tclient_on_close(void *arg, const char *reason)
{
    struct tclient *t = arg;

    t->closed++;
    snprintf(t->reason, sizeof(t->reason), "%s", reason);
    if (t->free_on_close) {
        ws_client_free(t->c);
        t->c = NULL;
    }
}

static const struct ws_client_handler tclient_handler = {
    .on_open = tclient_on_open, .on_text = tclient_on_text, .on_close = tclient_on_close};

static void tclient_release(struct tclient *t)
{
    ws_client_free(t->c);
    t->c = NULL;
    for (int i = 0; i < t->n; i++)
        free(t->msgs[i]);
}

static bool tclient_opened(void *arg)
{
    return ((struct tclient *)arg)->opened > 0;
}

static bool tclient_closed(void *arg)
{
    return ((struct tclient *)arg)->closed > 0;
}

struct want_msgs {
    struct tclient *t;
    int n;
};

static bool tclient_has_msgs(void *arg)
{
    struct want_msgs *w = arg;

    return w->t->n >= w->n;
}

static struct ws_client *connect_to(uv_loop_t *loop, const char *url, const char *bearer, struct tclient *t)
{
    struct buf err = BUF_INIT;
    struct ws_client *c = ws_client_connect(loop, url, bearer, &tclient_handler, t, &err);

    if (!c)
        test_fail(__FILE__, __LINE__, "connect %s: %s", url, buf_cstr(&err));
    buf_release(&err);
    t->c = c;
    return c;
}

TEST(ws_client_echo_and_close)
{
    uv_loop_t loop;
    struct tserver srv;
    struct tclient t = {0};
    char url[128], host[64];
    char *big = pattern(1 << 20), *mid = pattern(70000);

    uv_loop_init(&loop);
    ASSERT_OK(tserver_start(&srv, &loop, "127.0.0.1", TS_ECHO));
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/v1/connect?x=1#frag", srv.port);
    connect_to(&loop, url, "tok", &t);
    ASSERT_EQ(ws_client_send_text(t.c, "early", 5), -ENOTCONN);
    ASSERT_TRUE(test_run_until(&loop, 3000, tclient_opened, &t));
    ASSERT_CONTAINS(srv.request, "GET /v1/connect?x=1 HTTP/1.1\r\n");
    snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%d\r\n", srv.port);
    ASSERT_CONTAINS(srv.request, host);
    ASSERT_CONTAINS(srv.request, "\r\nAuthorization: Bearer tok\r\n");
    ASSERT_CONTAINS(srv.request, "\r\nSec-WebSocket-Version: 13\r\n");
    ASSERT_CONTAINS(srv.request, "\r\nUpgrade: websocket\r\n");

    ASSERT_OK(ws_client_send_text(t.c, "hello", 5));
    ASSERT_OK(ws_client_send_text(t.c, "", 0));
    ASSERT_OK(ws_client_send_text(t.c, mid, 70000));
    ASSERT_OK(ws_client_send_text(t.c, big, 1 << 20));
    struct want_msgs w = {&t, 4};
    ASSERT_TRUE(test_run_until(&loop, 5000, tclient_has_msgs, &w));
    ASSERT_STR_EQ(t.msgs[0], "hello");
    ASSERT_EQ(t.lens[1], 0);
    ASSERT_EQ(t.lens[2], 70000);
    ASSERT_TRUE(memcmp(t.msgs[2], mid, 70000) == 0);
    ASSERT_EQ(t.lens[3], 1 << 20);
    ASSERT_TRUE(memcmp(t.msgs[3], big, 1 << 20) == 0);
    ASSERT_EQ(t.closed, 0);

    tclient_release(&t); /* sends a close frame */
    tserver_stop_and_check_loop(&srv);
    ASSERT_EQ(srv.close_code, 1000);
    ASSERT_EQ(t.closed, 0);
    free(big);
    free(mid);
}

TEST(ws_client_peer_close_and_greeting)
{
    uv_loop_t loop;
    struct tserver srv;
    struct tclient t = {0};
    char url[128];

    uv_loop_init(&loop);
    ASSERT_OK(tserver_start(&srv, &loop, "127.0.0.1", TS_GREET));
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", srv.port); /* http:// means ws:// */
    connect_to(&loop, url, NULL, &t);
    struct want_msgs w = {&t, 1};
    ASSERT_TRUE(test_run_until(&loop, 3000, tclient_has_msgs, &w));
    ASSERT_STR_EQ(t.msgs[0], "hello"); /* came in the same packet as the 101 */
    ASSERT_CONTAINS(srv.request, "GET / HTTP/1.1\r\n");
    ASSERT_TRUE(strstr(srv.request, "Authorization") == NULL);
    ASSERT_OK(ws_client_send_text(t.c, "close-me", 8));
    ASSERT_TRUE(test_run_until(&loop, 3000, tclient_closed, &t));
    ASSERT_STR_EQ(t.reason, "closed by peer with code 4000");
    ASSERT_EQ(ws_client_send_text(t.c, "x", 1), -EPIPE);
    tclient_release(&t);
    tserver_stop_and_check_loop(&srv);
    ASSERT_EQ(srv.close_code, 4000);
    ASSERT_EQ(t.closed, 1);

    /* A server that hangs up without a close frame. */
    memset(&t, 0, sizeof(t));
    uv_loop_init(&loop);
    ASSERT_OK(tserver_start(&srv, &loop, "127.0.0.1", TS_ECHO));
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", srv.port);
    connect_to(&loop, url, NULL, &t);
    ASSERT_TRUE(test_run_until(&loop, 3000, tclient_opened, &t));
    ASSERT_OK(ws_client_send_text(t.c, "drop-me", 7));
    ASSERT_TRUE(test_run_until(&loop, 3000, tclient_closed, &t));
    ASSERT_CONTAINS(t.reason, "connection to 127.0.0.1:");
    ASSERT_CONTAINS(t.reason, "lost");
    tclient_release(&t);
    tserver_stop_and_check_loop(&srv);
    ASSERT_EQ(t.closed, 1);
}

TEST(ws_client_by_name_and_ipv6)
{
    uv_loop_t loop;
    struct tserver srv;
    struct tclient t = {0};
    char url[128];

    /* "localhost" may resolve to ::1 first: the client must go on to 127.0.0.1. */
    uv_loop_init(&loop);
    ASSERT_OK(tserver_start(&srv, &loop, "127.0.0.1", TS_ECHO));
    snprintf(url, sizeof(url), "ws://localhost:%d/", srv.port);
    connect_to(&loop, url, NULL, &t);
    ASSERT_TRUE(test_run_until(&loop, 5000, tclient_opened, &t));
    tclient_release(&t);
    tserver_stop_and_check_loop(&srv);

    memset(&t, 0, sizeof(t));
    uv_loop_init(&loop);
    if (tserver_start(&srv, &loop, "::1", TS_ECHO) < 0) {
        ASSERT_OK(uv_loop_close(&loop));
        return; /* no IPv6 loopback here */
    }
    snprintf(url, sizeof(url), "ws://[::1]:%d/six", srv.port);
    connect_to(&loop, url, NULL, &t);
    ASSERT_TRUE(test_run_until(&loop, 3000, tclient_opened, &t));
    ASSERT_OK(ws_client_send_text(t.c, "v6", 2));
    struct want_msgs w = {&t, 1};
    ASSERT_TRUE(test_run_until(&loop, 3000, tclient_has_msgs, &w));
    ASSERT_STR_EQ(t.msgs[0], "v6");
    ASSERT_CONTAINS(srv.request, "\r\nHost: [::1]:");
    tclient_release(&t);
    tserver_stop_and_check_loop(&srv);
}

TEST(ws_client_connect_refused)
{
    uv_loop_t loop;
    struct tclient t = {.free_on_close = true};
    char url[128];
    int port = net_pick_free_port("127.0.0.1", 0); /* free, so nobody listens there */

    ASSERT_TRUE(port > 0);
    uv_loop_init(&loop);
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", port);
    connect_to(&loop, url, NULL, &t);
    ASSERT_TRUE(test_run_until(&loop, 3000, tclient_closed, &t));
    ASSERT_CONTAINS(t.reason, "cannot connect to 127.0.0.1:");
    ASSERT_CONTAINS(t.reason, "refused");
    ASSERT_EQ(t.opened, 0);
    ASSERT_NULL(t.c); /* freed from inside on_close */
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_OK(uv_loop_close(&loop));
    ASSERT_EQ(t.closed, 1);
}

TEST(ws_client_handshake_failures)
{
    static const struct {
        enum ts_mode mode;
        const char *reason;
    } cases[] = {{TS_HTTP_200, "failed: HTTP 200"}, {TS_BAD_ACCEPT, "wrong Sec-WebSocket-Accept"}};

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        uv_loop_t loop;
        struct tserver srv;
        struct tclient t = {0};
        char url[128];

        uv_loop_init(&loop);
        ASSERT_OK(tserver_start(&srv, &loop, "127.0.0.1", cases[i].mode));
        snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", srv.port);
        connect_to(&loop, url, NULL, &t);
        ASSERT_TRUE(test_run_until(&loop, 3000, tclient_closed, &t));
        ASSERT_CONTAINS(t.reason, cases[i].reason);
        ASSERT_EQ(t.opened, 0);
        tclient_release(&t);
        tserver_stop_and_check_loop(&srv); /* the server saw the client hang up */
        ASSERT_EQ(t.closed, 1);
    }
}

TEST(ws_client_free_inside_on_text)
{
    uv_loop_t loop;
    struct tserver srv;
    struct tclient t = {.free_on_text = true, .send_on_open = true};
    char url[128];

    uv_loop_init(&loop);
    ASSERT_OK(tserver_start(&srv, &loop, "127.0.0.1", TS_ECHO));
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", srv.port);
    connect_to(&loop, url, NULL, &t);
    struct want_msgs w = {&t, 1};
    ASSERT_TRUE(test_run_until(&loop, 3000, tclient_has_msgs, &w));
    ASSERT_NULL(t.c);
    tserver_stop_and_check_loop(&srv); /* the client's close frame reached the server */
    ASSERT_EQ(srv.close_code, 1000);
    ASSERT_EQ(t.n, 1); /* "b" and "c" were not delivered after the free */
    ASSERT_STR_EQ(t.msgs[0], "a");
    ASSERT_EQ(t.closed, 0);
    tclient_release(&t);
}

TEST(ws_client_free_right_away_and_bad_urls)
{
    static const char *const bad[] = {"ftp://x/", "ws://", "ws://h:99999/", "ws://h/a b", "nope", "ws://[::1/"};
    uv_loop_t loop;
    struct tclient t = {0};
    struct buf err = BUF_INIT;

    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        buf_reset(&err);
        errno = 0;
        ASSERT_NULL(ws_client_connect(NULL, bad[i], NULL, &tclient_handler, &t, &err));
        ASSERT_EQ(errno, EINVAL);
        ASSERT_CONTAINS(buf_cstr(&err), "url");
    }
    buf_reset(&err);
    ASSERT_NULL(ws_client_connect(NULL, "wss://h/", NULL, &tclient_handler, &t, &err));
    ASSERT_EQ(errno, EPROTONOSUPPORT);
    ASSERT_CONTAINS(buf_cstr(&err), "not supported");
    ASSERT_NULL(ws_client_connect(NULL, "ws://h/", "bad token", &tclient_handler, &t, &err));
    ASSERT_NULL(ws_client_connect_with_headers(NULL, "ws://h/", NULL, "X-A: 1", &tclient_handler, &t, &err));
    buf_release(&err);
    ws_client_free(NULL);

    /* Freed while resolving: no handler, nothing left on the loop. */
    uv_loop_init(&loop);
    connect_to(&loop, "ws://127.0.0.1:1/", NULL, &t);
    tclient_release(&t);
    uv_run(&loop, UV_RUN_DEFAULT);
    ASSERT_OK(uv_loop_close(&loop));
    ASSERT_EQ(t.closed + t.opened, 0);
}
