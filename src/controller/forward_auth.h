/* SPDX-License-Identifier: MIT */
/*
 * forward_auth.h - `plane controller --forward-auth URL` (spec §5.3): before
 * any /ctrl request (WebSocket upgrades included) is handled, the same
 * method and headers go to URL with `x-original-path` and an empty body;
 * a 2xx lets the request through, any other answer is a 401, and no
 * answer (refused, timed out, not HTTP) a 502.
 *
 * Each check is one short HTTP/1.1 exchange on its own connection
 * ("connection: close"), asynchronous on the controller's loop. Headers
 * that describe the original message's framing or connection
 * (content-length, transfer-encoding, connection, upgrade, ...) are not
 * copied: the check has no body and must not be upgraded. A client's own
 * x-original-path is dropped so it cannot speak for the controller.
 */
#ifndef PLANE_FORWARD_AUTH_H
#define PLANE_FORWARD_AUTH_H

#include <stddef.h>

#include <http_parser.h>
#include <uv.h>

#include "../common/buf.h"

struct forward_auth;
struct forward_auth_check;
struct http_request;

enum forward_auth_verdict {
    FORWARD_AUTH_ALLOW,   /* 2xx */
    FORWARD_AUTH_DENY,    /* any other status: 401 */
    FORWARD_AUTH_ERROR,   /* no usable answer: 502 */
};

#define FORWARD_AUTH_TIMEOUT_MS 10000

typedef void forward_auth_cb(void *arg, enum forward_auth_verdict verdict);

/* Checks URL (http:// only: the spec's client cannot do https). NULL with a line in err. */
struct forward_auth *forward_auth_new(uv_loop_t *loop, const char *url, struct buf *err);
/* Checks in flight go on and report; free their requests before this if that matters. */
void forward_auth_free(struct forward_auth *fa);
/* Starts a check of req; cb runs once, later, unless the check is cancelled. */
struct forward_auth_check *forward_auth_start(struct forward_auth *fa, const struct http_request *req,
                                              forward_auth_cb *cb, void *arg);
/*
 * The same check for a question other than req itself: req's headers, with
 * method and x-original-path given (the dashboard asks about its own paths,
 * and whether a viewer may POST).
 */
struct forward_auth_check *forward_auth_start_as(struct forward_auth *fa, const struct http_request *req,
                                                 const char *method, const char *original_path,
                                                 forward_auth_cb *cb, void *arg);
/* cb will not run; the check's resources go away in the background. */
void forward_auth_cancel(struct forward_auth_check *chk);

#define ANSWER_MAX 1024 /* bytes of an answer read before its verdict, at most */

/* Reading an answer (http-parser): interim 1xx heads are skipped. */
struct forward_auth_answer {
    http_parser hp;
    int status;   /* 0 so far; the final status; -1: not HTTP, or none within ANSWER_MAX */
    size_t seen;
};

void forward_auth_answer_init(struct forward_auth_answer *a);
/* Feeds the next bytes: 0 while undecided, else the final status or -1. */
int forward_auth_answer_feed(struct forward_auth_answer *a, const char *data, size_t len);

#endif
