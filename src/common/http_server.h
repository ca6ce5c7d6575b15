/* SPDX-License-Identifier: MIT */
/*
 * http_server.h - a small HTTP/1.1 server on libuv and http-parser, for the
 * controller's API: keep-alive, one request at a time per connection (later
 * pipelined requests wait their turn), capped heads and bodies, responses
 * that may be sent later (held requests), streamed responses (server-sent
 * events) and WebSocket upgrades. The proxy has its own data path.
 */
#ifndef PLANE_HTTP_SERVER_H
#define PLANE_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>
#include <uv.h>

#include "buf.h"

struct http_server;
struct http_request;
struct http_ws;
struct ws_handler;

#define HTTP_MAX_HEAD (64u << 10)
#define HTTP_MAX_BODY (2u << 20) /* the 2 MiB default of Plane's framework (spec §5) */

struct http_header {
    char *name;  /* owned; lower-cased */
    char *value; /* owned */
};

struct http_request {
    struct http_conn *conn;  /* borrowed */
    const char *method;      /* "GET", ... */
    char *path;              /* owned; without the query, percent-decoding not applied */
    char *query;             /* owned; "" when absent */
    struct http_header *headers; /* owned array */
    size_t nheaders;
    struct buf body;
    bool keep_alive;
    char peer_ip[64];        /* the client's address */
    /* Set by a handler that answers later: runs if the client goes away first. */
    void (*on_abort)(void *arg);
    void *abort_arg;
};

/* Called for each complete request; the handler answers now or later with http_respond*(). */
typedef void http_handler_fn(void *arg, struct http_request *req);

struct http_server *http_server_new(uv_loop_t *loop, http_handler_fn *handler, void *arg);
/* Listens on host:port (port 0: any; see http_server_port). 0 or -errno with a line in err. */
int http_server_listen(struct http_server *s, const char *host, int port, struct buf *err);
int http_server_port(const struct http_server *s);
/* Stops listening and closes every connection (in-flight requests see on_abort); frees s later. */
void http_server_close(struct http_server *s);

/* The value of header name (lower case), or NULL. */
const char *http_header(const struct http_request *r, const char *name);
/* The value of query parameter name, percent-decoded, owned by caller; NULL if absent. */
char *http_query_param(const struct http_request *r, const char *name);

/*
 * Sends a complete response and ends the request. extra_headers is either
 * NULL or "Name: value\r\n..." lines. After this the request must not be used.
 */
void http_respond(struct http_request *r, int status, const char *content_type, const char *body, size_t len,
                  const char *extra_headers);
/* A JSON body (compact); steals body. */
void http_respond_json(struct http_request *r, int status, json_t *body, const char *extra_headers);

/* Starts a streamed (chunked) response; then http_stream_write() any number of times. */
void http_stream_start(struct http_request *r, int status, const char *content_type, const char *extra_headers);
/* 0, or -EPIPE when the client has gone (on_abort has run or will run). */
int http_stream_write(struct http_request *r, const char *data, size_t len);

/*
 * Answers a WebSocket upgrade with 101 and turns the connection into a
 * server-side WebSocket driven by h. The result belongs to the connection:
 * after h->on_close runs, or after http_ws_close(), it must not be used.
 * NULL (and 400 was sent) if the request is not a valid upgrade.
 */
struct http_ws *http_upgrade(struct http_request *r, const struct ws_handler *h, void *arg);
/* 0 or -errno (-EPIPE once closed). */
int http_ws_send(struct http_ws *hw, const char *text, size_t len);
/* Sends a close frame and closes the connection; h->on_close does not run. */
void http_ws_close(struct http_ws *hw, int code);
/* The peer's address ("IP"). */
const char *http_ws_peer_ip(const struct http_ws *hw);

#endif
