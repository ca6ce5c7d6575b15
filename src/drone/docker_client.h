/* SPDX-License-Identifier: MIT */
/*
 * docker_client.h - an asynchronous HTTP client for the Docker Engine API on
 * its Unix socket, on libcurl's multi interface driven by a libuv loop
 * (curl_multi_socket_action with uv_poll per socket and one uv_timer). No
 * call blocks the loop. Requests are plain (the whole body is handed over at
 * the end) or streams (the body is handed over line by line as it arrives:
 * /events, /containers/ID/stats, image pulls).
 *
 * Every callback runs from the loop, outside libcurl, never inside the call
 * that started the request; a callback may start or cancel requests and may
 * close the client. The paths given are below the pinned API version
 * (DOCKER_API_VERSION), e.g. "/containers/json?all=1".
 */
#ifndef PLANE_DOCKER_CLIENT_H
#define PLANE_DOCKER_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <uv.h>

#include "../common/buf.h"

/* Docker 20.10 and every later engine serve it. */
#define DOCKER_API_VERSION "v1.41"

struct docker_client;
struct docker_request;

/* How a request ended; everything borrowed for the callback. */
struct docker_response {
    int status;          /* HTTP status, 0 if no response arrived */
    int error;           /* 0, or -errno when the exchange failed (no response, cut short) */
    const char *message; /* for humans when error < 0 or status >= 400 (Docker's "message"), else NULL */
    const char *body;    /* the body of a plain request (NUL-terminated, "" if none); NULL for streams */
    size_t body_len;
};

typedef void docker_done_fn(void *arg, const struct docker_response *res);
/*
 * A stream's events: first (status, NULL, 0) once the response headers are
 * in (so the stream is established), then one call per line of a 2xx body
 * (without the newline). A non-2xx body is not given line by line: it ends
 * up in the done callback's message.
 */
typedef void docker_line_fn(void *arg, int status, const char *line, size_t len);
/* Closes a libuv handle; done(ptr) must run once it is closed. */
typedef void docker_close_handle_fn(void *ctx, uv_handle_t *h, void (*done)(void *ptr), void *ptr);

struct docker_request_spec {
    const char *method;      /* "GET", "POST", "DELETE" */
    const char *path;        /* below /DOCKER_API_VERSION, with its query */
    const char *body;        /* a JSON document, or NULL */
    const char *auth;        /* X-Registry-Auth header value, or NULL */
    long timeout_ms;         /* for the whole exchange; 0: none */
    docker_line_fn *on_line; /* non-NULL makes it a stream */
    docker_done_fn *on_done; /* required */
    void *arg;
};

/*
 * A client of the engine listening on socket_path (copied). Handles are
 * closed through close_handle(ctx, ...) when given (a runtime counts its
 * handles that way), else with uv_close.
 */
struct docker_client *docker_client_new(uv_loop_t *loop, const char *socket_path,
                                        docker_close_handle_fn *close_handle, void *ctx);
/*
 * Cancels every request (no callback runs) and starts closing the client's
 * handles; the client frees itself once they are closed. Safe from inside
 * a callback of the client. NULL does nothing.
 */
void docker_client_close(struct docker_client *c);

/*
 * Starts a request. Its done callback runs exactly once, later, unless it is
 * cancelled first. Never fails: a request that cannot be set up completes
 * with an error.
 */
struct docker_request *docker_request_start(struct docker_client *c, const struct docker_request_spec *spec);
/* The request's callbacks will not run; r must not be used afterwards. NULL does nothing. */
void docker_request_cancel(struct docker_request *r);

/* Appends s percent-encoded for a URL query value. */
void docker_url_escape(struct buf *out, const char *s);

#endif
