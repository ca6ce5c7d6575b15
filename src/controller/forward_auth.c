/* SPDX-License-Identifier: MIT */
/*
 * forward_auth.c - the forward-auth check (see forward_auth.h).
 *
 * A check resolves the host (uv_getaddrinfo; literals directly), connects,
 * writes the request in one go and reads only as far as the status line.
 * One timer bounds the whole exchange. Cancelling (the client went away)
 * only detaches the callback; the handles close as they would anyway.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <http_parser.h>

#include "../common/http_server.h"
#include "../common/log.h"
#include "../common/url.h"
#include "../common/xalloc.h"
#include "forward_auth.h"


struct forward_auth {
    uv_loop_t *loop;
    char *host;         /* owned */
    char *port;         /* owned; for getaddrinfo */
    char *authority;    /* owned; Host when the request has none */
    char *target;       /* owned; the request line's target: the URL's path and query */
};

struct forward_auth_check {
    uv_loop_t *loop;
    forward_auth_cb *cb;       /* NULL once reported or cancelled */
    void *arg;
    uv_getaddrinfo_t resolve;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    uv_timer_t timer;
    struct buf request;        /* the bytes to send */
    struct forward_auth_answer answer;
    char in[1024];             /* reads land here */
    unsigned handles;          /* open handles; freed at 0 */
    bool resolving, tcp_open;
    bool failed_early;         /* could not even start: the timer reports it at once */
};

/* ---- the answer: http-parser, as everywhere else ---- */

/* The first data of a response (its reason, a field, or the head's end):
 * its status is the verdict, unless it is an interim 1xx whose head the
 * parser then skips. */
static int seen_status(http_parser *hp)
{
    struct forward_auth_answer *a = hp->data;

    if (hp->status_code >= 100 && hp->status_code < 200)
        return 0;
    a->status = hp->status_code >= 100 ? (int)hp->status_code : -1;
    http_parser_pause(hp, 1);
    return 0;
}

static int seen_data(http_parser *hp, const char *at, size_t len)
{
    (void)at;
    (void)len;
    return seen_status(hp);
}

static const http_parser_settings answer_settings = {
    .on_status = seen_data,
    .on_header_field = seen_data,
    .on_headers_complete = seen_status,
};

void forward_auth_answer_init(struct forward_auth_answer *a)
{
    http_parser_init(&a->hp, HTTP_RESPONSE);
    a->hp.data = a;
    a->status = 0;
    a->seen = 0;
}

int forward_auth_answer_feed(struct forward_auth_answer *a, const char *data, size_t len)
{
    if (a->status)
        return a->status;
    if (len > ANSWER_MAX - a->seen)
        len = ANSWER_MAX - a->seen;
    http_parser_execute(&a->hp, &answer_settings, data, len);
    a->seen += len;
    if (!a->status && (HTTP_PARSER_ERRNO(&a->hp) != HPE_OK || a->seen >= ANSWER_MAX))
        a->status = -1;
    return a->status;
}

/* ---- set-up ---- */

struct forward_auth *forward_auth_new(uv_loop_t *loop, const char *url, struct buf *err)
{
    struct forward_auth *fa;
    struct url u;

    if (url_parse(url, &u) < 0) {
        buf_printf(err, "invalid --forward-auth URL '%s'", url);
        return NULL;
    }
    if (strcmp(u.scheme, "http") != 0) {
        buf_printf(err, "--forward-auth must be an http:// URL (got '%s'; https is not supported)", url);
        url_release(&u);
        return NULL;
    }
    fa = xcalloc(1, sizeof(*fa));
    fa->loop = loop;
    fa->host = xstrdup(u.host);
    fa->port = xasprintf("%d", u.port);
    fa->authority = url_authority(&u);
    fa->target = xstrdup(u.path);
    url_release(&u);
    return fa;
}

void forward_auth_free(struct forward_auth *fa)
{
    if (!fa)
        return;
    free(fa->host);
    free(fa->port);
    free(fa->authority);
    free(fa->target);
    free(fa);
}

/* ---- one check ---- */

static void report(struct forward_auth_check *chk, enum forward_auth_verdict v);

static void handle_closed(uv_handle_t *h)
{
    struct forward_auth_check *chk = h->data;

    if (--chk->handles == 0) {
        buf_release(&chk->request);
        free(chk);
    }
}

/* Ends the exchange: closes what is open (chk is freed once all is closed). */
static void finish(struct forward_auth_check *chk)
{
    if (chk->resolving) {
        uv_cancel((uv_req_t *)&chk->resolve); /* its callback still runs, with UV_ECANCELED */
        return;
    }
    if (chk->tcp_open) {
        chk->tcp_open = false;
        uv_close((uv_handle_t *)&chk->tcp, handle_closed);
    }
    if (!uv_is_closing((uv_handle_t *)&chk->timer))
        uv_close((uv_handle_t *)&chk->timer, handle_closed);
}

static void report(struct forward_auth_check *chk, enum forward_auth_verdict v)
{
    forward_auth_cb *cb = chk->cb;

    chk->cb = NULL;
    finish(chk);
    if (cb)
        cb(chk->arg, v);
}

static void timeout_cb(uv_timer_t *t)
{
    struct forward_auth_check *chk = t->data;

    if (!chk->failed_early)
        log_warn("forward auth: no answer within %d s", FORWARD_AUTH_TIMEOUT_MS / 1000);
    report(chk, FORWARD_AUTH_ERROR);
}

/* A failure while the check starts: reported from the loop, never from inside forward_auth_start. */
static void fail_early(struct forward_auth_check *chk)
{
    chk->failed_early = true;
    uv_timer_start(&chk->timer, timeout_cb, 0, 0);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct forward_auth_check *chk = h->data;

    (void)hint;
    *b = uv_buf_init(chk->in, sizeof(chk->in));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct forward_auth_check *chk = s->data;
    int status;

    (void)b;
    if (n == 0)
        return;
    if (n < 0) {
        log_warn("forward auth: connection ended before a status line: %s", uv_strerror((int)n));
        report(chk, FORWARD_AUTH_ERROR);
        return;
    }
    status = forward_auth_answer_feed(&chk->answer, chk->in, (size_t)n);
    if (status == 0)
        return;
    if (status < 0) {
        log_warn("forward auth: the answer is not HTTP");
        report(chk, FORWARD_AUTH_ERROR);
        return;
    }
    report(chk, status >= 200 && status < 300 ? FORWARD_AUTH_ALLOW : FORWARD_AUTH_DENY);
}

static void write_cb(uv_write_t *w, int status)
{
    struct forward_auth_check *chk = w->data;

    if (status < 0 && chk->cb) {
        log_warn("forward auth: cannot send the check: %s", uv_strerror(status));
        report(chk, FORWARD_AUTH_ERROR);
    }
}

static void connect_cb(uv_connect_t *req, int status)
{
    struct forward_auth_check *chk = req->data;
    uv_buf_t b;

    if (!chk->cb)
        return; /* cancelled meanwhile: the handle is closing */
    if (status < 0) {
        log_warn("forward auth: cannot connect: %s", uv_strerror(status));
        report(chk, FORWARD_AUTH_ERROR);
        return;
    }
    b = uv_buf_init(chk->request.data, (unsigned)chk->request.len);
    chk->write.data = chk;
    if (uv_write(&chk->write, (uv_stream_t *)&chk->tcp, &b, 1, write_cb) < 0 ||
        uv_read_start((uv_stream_t *)&chk->tcp, alloc_cb, read_cb) < 0)
        report(chk, FORWARD_AUTH_ERROR);
}

static void start_connect(struct forward_auth_check *chk, const struct sockaddr *sa)
{
    int r;

    uv_tcp_init(chk->loop, &chk->tcp);
    chk->tcp.data = chk;
    chk->tcp_open = true;
    chk->handles++;
    chk->connect.data = chk;
    if ((r = uv_tcp_connect(&chk->connect, &chk->tcp, sa, connect_cb)) < 0) {
        log_warn("forward auth: cannot connect: %s", uv_strerror(r));
        fail_early(chk);
    }
}

static void resolved_cb(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct forward_auth_check *chk = req->data;

    chk->resolving = false;
    if (!chk->cb) {
        uv_freeaddrinfo(res);
        finish(chk); /* cancelled while resolving */
        return;
    }
    if (status < 0 || !res) {
        log_warn("forward auth: cannot resolve the host: %s", uv_strerror(status));
        uv_freeaddrinfo(res);
        report(chk, FORWARD_AUTH_ERROR);
        return;
    }
    start_connect(chk, res->ai_addr);
    uv_freeaddrinfo(res);
}

/* Headers of the original request that are not passed on (see forward_auth.h). */
static bool skipped_header(const char *name)
{
    static const char *const skip[] = {"content-length", "transfer-encoding", "connection", "keep-alive",
                                       "upgrade", "te", "trailer", "expect", "proxy-connection",
                                       "x-original-path"};

    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        if (strcmp(name, skip[i]) == 0)
            return true;
    return false;
}

static void build_request(struct forward_auth *fa, const struct http_request *req, const char *method,
                          const char *original_path, struct buf *out)
{
    bool has_host = false;

    buf_printf(out, "%s %s HTTP/1.1\r\n", method, fa->target);
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct http_header *h = &req->headers[i];
        if (skipped_header(h->name))
            continue;
        if (strcmp(h->name, "host") == 0)
            has_host = true;
        buf_printf(out, "%s: %s\r\n", h->name, h->value);
    }
    if (!has_host)
        buf_printf(out, "host: %s\r\n", fa->authority);
    buf_printf(out, "x-original-path: %s\r\n", *original_path ? original_path : "/");
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        buf_append_str(out, "content-length: 0\r\n");
    buf_append_str(out, "connection: close\r\n\r\n");
}

struct forward_auth_check *forward_auth_start(struct forward_auth *fa, const struct http_request *req,
                                              forward_auth_cb *cb, void *arg)
{
    const char *path = req->path;

    /* Without the first segment ("/ctrl", however it was spelled). */
    while (*path == '/')
        path++;
    path += strcspn(path, "/");
    return forward_auth_start_as(fa, req, req->method, path, cb, arg);
}

struct forward_auth_check *forward_auth_start_as(struct forward_auth *fa, const struct http_request *req,
                                                 const char *method, const char *original_path,
                                                 forward_auth_cb *cb, void *arg)
{
    struct forward_auth_check *chk = xcalloc(1, sizeof(*chk));
    struct sockaddr_storage sa;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int port = atoi(fa->port), r;

    chk->loop = fa->loop;
    chk->cb = cb;
    chk->arg = arg;
    buf_init(&chk->request, 0);
    forward_auth_answer_init(&chk->answer);
    build_request(fa, req, method, original_path, &chk->request);
    uv_timer_init(fa->loop, &chk->timer);
    chk->timer.data = chk;
    chk->handles = 1;
    uv_timer_start(&chk->timer, timeout_cb, FORWARD_AUTH_TIMEOUT_MS, 0);
    if (uv_ip4_addr(fa->host, port, (struct sockaddr_in *)&sa) == 0 ||
        uv_ip6_addr(fa->host, port, (struct sockaddr_in6 *)&sa) == 0) {
        start_connect(chk, (struct sockaddr *)&sa);
        return chk;
    }
    chk->resolve.data = chk;
    chk->resolving = true;
    if ((r = uv_getaddrinfo(fa->loop, &chk->resolve, resolved_cb, fa->host, fa->port, &hints)) < 0) {
        chk->resolving = false;
        log_warn("forward auth: cannot resolve the host: %s", uv_strerror(r));
        fail_early(chk);
    }
    return chk;
}

void forward_auth_cancel(struct forward_auth_check *chk)
{
    if (!chk || !chk->cb)
        return;
    chk->cb = NULL;
    finish(chk);
}
