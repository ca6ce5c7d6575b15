/* SPDX-License-Identifier: MIT */
/*
 * ws_client.h - a WebSocket client over libuv TCP: resolve, connect, HTTP/1.1
 * upgrade handshake, then text messages through a ws endpoint (ws.h). Plain
 * ws:// only for now. Every outcome after a successful ws_client_connect()
 * arrives through the handler, never from inside the call that caused it.
 */
#ifndef PLANE_WS_CLIENT_H
#define PLANE_WS_CLIENT_H

#include <stddef.h>

#include <uv.h>

struct buf;
struct ws_client;

#define WS_CLIENT_CONNECT_TIMEOUT_MS 10000   /* resolve + TCP connect */
#define WS_CLIENT_HANDSHAKE_TIMEOUT_MS 10000 /* request sent -> 101 received */
#define WS_CLIENT_MAX_RESPONSE_HEAD 16384    /* bytes of the 101 response head */
/*
 * Once open, a ping goes out every WS_CLIENT_PING_MS, and a peer that has
 * sent nothing (not even the pong) for WS_CLIENT_SILENCE_MS is given up
 * ("no answer ..."): a partition without a reset is noticed in seconds, not
 * after TCP's minutes of retransmissions.
 */
#define WS_CLIENT_PING_MS 5000
#define WS_CLIENT_SILENCE_MS 15000

struct ws_client_handler {
    /* Handshake done, may send now. */
    void (*on_open)(void *arg);
    /* One text message, NUL-terminated, valid only during the call. */
    void (*on_text)(void *arg, const char *msg, size_t len);
    /*
     * Connect failure, handshake failure, peer close, error: exactly once
     * unless ws_client_free() was called first. reason is one line, borrowed
     * for the call ("closed by peer with code 1000", "cannot connect to
     * 127.0.0.1:1: connection refused", "handshake failed: HTTP 200").
     */
    void (*on_close)(void *arg, const char *reason);
};

/*
 * Connects to url ("ws://host[:port]/path?query"; http:// is taken as ws://;
 * wss:// and https:// are refused with EPROTONOSUPPORT for now). host may be
 * a name (resolved asynchronously, every address tried in turn) or an
 * IPv4/IPv6 literal ("[::1]"). The request carries "Host: host:port".
 * bearer, if not NULL, is sent as "Authorization: Bearer <bearer>"; a
 * "user@" part of the URL is used as the bearer when bearer is NULL.
 * Strings are copied; loop is borrowed and must outlive the client; h is
 * copied; arg is passed to every handler.
 *
 * On a bad URL (or a bearer with control characters), returns NULL, sets
 * errno (EINVAL, EPROTONOSUPPORT) and writes one line into err; no handler
 * ever runs. Otherwise all outcomes arrive through the handler, and the
 * caller must eventually call ws_client_free() (also after on_close).
 */
struct ws_client *ws_client_connect(uv_loop_t *loop, const char *url, const char *bearer,
                                    const struct ws_client_handler *h, void *arg, struct buf *err);
/*
 * The same, with extra request header lines: NULL, or "Name: value\r\n"
 * lines (each ending in CRLF, no empty line; else EINVAL).
 */
struct ws_client *ws_client_connect_with_headers(uv_loop_t *loop, const char *url, const char *bearer,
                                                 const char *headers, const struct ws_client_handler *h,
                                                 void *arg, struct buf *err);

/* 0 or -errno: -ENOTCONN before on_open, -EPIPE once closing or closed. */
int ws_client_send_text(struct ws_client *c, const char *msg, size_t len);

/*
 * Closes (sending a close frame with 1000 if open, given a moment to reach
 * the peer) and frees asynchronously; no handler runs afterwards. Safe to
 * call from inside any handler of this client. NULL is fine.
 */
void ws_client_free(struct ws_client *c);

#endif
