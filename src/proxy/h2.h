/* SPDX-License-Identifier: MIT */
/*
 * h2.h - HTTP/2 on the proxy's client side (RFC 9113) with libnghttp2: one
 * session per client connection, each request stream turned into one
 * HTTP/1.1 exchange and its HTTP/1.1 response turned back into HEADERS and
 * DATA. This is the protocol half, with no sockets: what a stream's
 * exchange runs on is behind struct h2_io (h2_bridge.c hands each stream
 * to an ordinary proxy connection; the fuzz target to a canned answer).
 *
 * Memory is bounded per connection: at most H2_MAX_STREAMS streams, request
 * bodies are acknowledged (WINDOW_UPDATE) only once the exchange took them,
 * a response is read from its exchange only while less than H2_RESP_HIGH
 * waits for the client, and request heads are capped like HTTP/1.1 ones.
 */
#ifndef PLANE_PROXY_H2_H
#define PLANE_PROXY_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN 24
#define H2_MAX_STREAMS 100           /* SETTINGS_MAX_CONCURRENT_STREAMS */
#define H2_STREAM_WINDOW (256 * 1024) /* SETTINGS_INITIAL_WINDOW_SIZE: request body in flight per stream */
#define H2_CONN_WINDOW (1024 * 1024)  /* the connection's receive window */
#define H2_RESP_HIGH (64 * 1024)      /* response bytes held per stream before reading pauses */
#define H2_OUT_HIGH (256 * 1024)      /* bytes queued to the client before frames stop being made */
#define H2_HEAD_MAX (32 * 1024)       /* a request's fields, as in HTTP/1.1 (431 beyond) */
#define H2_FIELDS_MAX 90

struct h2_session;
struct h2_stream;

struct h2_io {
    /* Frames for the client. 0: sent or queued; 1: queued above H2_OUT_HIGH (stop for now); <0: broken. */
    int (*send)(struct h2_session *s, const uint8_t *data, size_t len);
    /* A request's HTTP/1.1 head: start its exchange. 0, or <0 (the stream is answered 502). */
    int (*open)(struct h2_stream *st, const char *head, size_t len);
    /* Request body bytes, framed for HTTP/1.1. 1: taken; 0: queued (h2_stream_written() follows); <0: broken. */
    int (*write)(struct h2_stream *st, const char *data, size_t len);
    /* Stop (true) or resume reading the exchange's response. */
    void (*pause)(struct h2_stream *st, bool paused);
    /*
     * The exchange is over or abandoned: release it. Called once per
     * successful open. reuse: it ended cleanly (the whole request sent, the
     * whole response read, no "connection: close"), so what carried it may
     * carry the next stream's exchange.
     */
    void (*close)(struct h2_stream *st, bool reuse);
};

/* 1: data (the first bytes of a connection) is the HTTP/2 preface; 0: it is not; -1: a prefix of it. */
int h2_preface(const char *data, size_t len);

/*
 * A server session; arg is for the io callbacks (h2_session_arg()).
 * server_header is the Server field of the answers the session makes itself
 * (borrowed; outlives the session). The SETTINGS frame is queued at once.
 */
struct h2_session *h2_session_new(const struct h2_io *io, void *arg, const char *server_header);
/* Frees the session and closes every exchange still open. NULL is fine. */
void h2_session_free(struct h2_session *s);
void *h2_session_arg(const struct h2_session *s);
/* Bytes from the client; all are used. 0, or <0 if the connection must close (after h2_session_flush). */
int h2_session_recv(struct h2_session *s, const uint8_t *data, size_t len);
/* Makes frames and sends them until there are none or io->send says stop. 0 or <0 (broken). */
int h2_session_flush(struct h2_session *s);
/* Graceful shutdown: GOAWAY; streams already open finish. */
void h2_session_shutdown(struct h2_session *s);
/* Nothing more to read or write: the connection can close. */
bool h2_session_done(const struct h2_session *s);
/* Streams open. */
size_t h2_session_streams(const struct h2_session *s);

void *h2_stream_bridge(const struct h2_stream *st);
void h2_stream_set_bridge(struct h2_stream *st, void *bridge);
struct h2_session *h2_stream_session(const struct h2_stream *st);
/* Response bytes (HTTP/1.1) from the stream's exchange. */
void h2_stream_response(struct h2_stream *st, const char *data, size_t len);
/* The exchange ended (its connection closed: status 0, or an error); io->close follows at once. */
void h2_stream_response_end(struct h2_stream *st, int status);
/* Everything io->write queued has been taken: the client may send more body. */
void h2_stream_written(struct h2_stream *st);

#endif
