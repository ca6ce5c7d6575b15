/* SPDX-License-Identifier: MIT */
/*
 * listener.c - client connections (see listener.h).
 *
 * One exchange at a time per connection: head -> route -> forward (or a
 * local answer) -> the next head. Bytes that arrive early (a pipelined
 * request, a body while the upstream connects) wait in the stream's input
 * buffer, up to CONN_IN_MAX, and reading stops beyond that or while the
 * upstream cannot take more body: memory per connection stays bounded
 * whatever the client does. The request head is kept in place (and
 * unconsumed) until the route is known, because the rewrite reads it.
 *
 * Local answers follow §16.1: /ready, /, 400, 403, 410, 503 (controller
 * link down, §21) and 502, all with the CORS and server fields; 502 also
 * names the backend. A request with a body that is answered locally closes
 * the connection rather than reading the body it does not want.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "ctrl_link.h"
#include "forward.h"
#include "h2.h"
#include "h2_bridge.h"
#include "listener.h"
#include "stats.h"
#include "monitor.h"
#include "proxy.h"
#include "rules.h"
#include "tls.h"
#include "tunnel.h"
#include "worker.h"

static void conn_input(struct stream *s, const char *data, size_t len);
static void conn_end(struct stream *s, int status);
static void conn_drained(struct stream *s);
static void conn_quiet(struct stream *s);
static void conn_check_eof(struct conn *c);

static const struct stream_ops conn_ops = {.input = conn_input, .end = conn_end, .drained = conn_drained,
                                           .quiet = conn_quiet};

static struct conn *conn_of(struct stream *s)
{
    return container_of(s, struct conn, s);
}

static struct proxy *px_of(struct conn *c)
{
    return c->s.w->px;
}

static uint64_t now_of(struct conn *c)
{
    return worker_now(c->s.w);
}

/* ---- life of a connection ---- */

static void conn_closed(uv_handle_t *h)
{
    struct conn *c = conn_of(h->data);
    struct worker *w = c->s.w;

    free(c);
    w->nconns--;
    worker_conn_gone(w);
}

void conn_close(struct conn *c)
{
    struct proxy *px = px_of(c);

    if (c->s.closing)
        return;
    if (c->waiting) {
        route_cache_cancel(px->cache, &c->waiter);
        c->waiting = false;
    }
    route_put(c->waiter.route);
    c->waiter.route = NULL;
    if (c->state == CONN_TUNNEL)
        tunnel_closing(c);
    if (c->h2)
        h2_conn_free(c);
    forward_detach(c);
    route_put(c->route);
    c->route = NULL;
    route_put(c->memo);
    c->memo = NULL;
    free(c->memo_token);
    c->memo_token = NULL;
    buf_release(&c->head_out);
    list_remove(&c->node);
    stream_close(&c->s, conn_closed);
}

static void conn_update_reading(struct conn *c)
{
    bool on = false;

    if (c->s.closing)
        return;
    switch (c->state) {
    case CONN_HEAD:
    case CONN_LINGER:
        on = true;
        break;
    case CONN_ROUTE:
        on = c->s.in_len < CONN_IN_MAX;
        break;
    case CONN_FORWARD:
        if (!c->req_done)
            on = c->up && forward_writable(c->up) && c->s.in_len < CONN_IN_MAX;
        else
            on = c->s.in_len < CONN_IN_MAX;
        break;
    case CONN_TUNNEL:
        on = c->up && c->up->s.queued == 0;
        break;
    case CONN_H2:
        on = c->s.queued < H2_OUT_HIGH;
        break;
    }
    stream_read(&c->s, on);
}

/* Done with this connection: our FIN once the answer is out, then drain until the peer closes. */
static void conn_linger(struct conn *c)
{
    forward_detach(c);
    c->state = CONN_LINGER;
    c->deadline = now_of(c) + CONN_LINGER_MS;
    if (c->s.queued > 0) {
        c->shutdown_pending = true;
        return;
    }
    stream_shutdown(&c->s);
    if (c->s.ended)
        conn_close(c); /* the peer is done too: nothing left to drain */
}

/* The exchange is over: get ready for the next request, or linger if the connection ends. */
static void conn_exchange_end(struct conn *c, bool close)
{
    route_put(c->route);
    c->route = NULL;
    buf_reset(&c->head_out);
    if (close || c->close_after || c->s.w->draining || (c->client_eof && c->s.in_len == 0)) {
        conn_linger(c);
        return;
    }
    h1_init(&c->req, H1_REQUEST, false);
    c->state = CONN_HEAD;
    c->served = true;
    c->looked_up = c->waiting = false;
    c->keep_alive = c->close_after = c->upgrade = c->http10 = c->head_method = false;
    c->req_done = c->resp_started = false;
    c->deadline = now_of(c) + CONN_IDLE_TIMEOUT_MS;
}

int conn_send(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    int r = stream_write(&c->s, bufs, n);
    uint64_t total = 0;

    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (r >= 0)
        proxy_stats_bytes_out(total);

    if (r < 0) {
        log_debug("client %s: write failed: %s", c->ip, uv_strerror(r));
        conn_close(c);
    }
    return r;
}

/*
 * An answer of our own. plane: add the CORS and server fields (the main
 * listener; the redirect listener adds none). The connection closes after
 * it when the client asked, or when a request body or upgraded bytes would
 * follow that we are not going to read.
 */
static void conn_local(struct conn *c, unsigned status, const char *extra, bool plane, const char *backend_id,
                       const char *body)
{
    struct buf *b = &c->s.w->scratch;
    bool close = !c->keep_alive || c->close_after || c->upgrade || c->s.w->draining ||
                 (!c->req_done && h1_has_body(&c->req));
    uv_buf_t ub;

    buf_reset(b);
    h1_write_local(b, status, extra, plane ? px_of(c)->server_header : NULL, backend_id, close,
                   !close && c->http10, body, c->head_method);
    ub = uv_buf_init(b->data, (unsigned)b->len);
    proxy_stats_response(status);
    if (conn_send(c, &ub, 1) < 0)
        return;
    log_debug("client %s: answered %u", c->ip, status);
    conn_exchange_end(c, close);
}

/* ---- one request ---- */

static bool utf8_valid(const char *s, size_t n)
{
    size_t i = 0;

    while (i < n) {
        unsigned char ch = (unsigned char)s[i];
        size_t k;
        if (ch < 0x80) {
            i++;
            continue;
        }
        if (ch >= 0xc2 && ch <= 0xdf)
            k = 1;
        else if (ch >= 0xe0 && ch <= 0xef)
            k = 2;
        else if (ch >= 0xf0 && ch <= 0xf4)
            k = 3;
        else
            return false;
        if (i + k >= n)
            return false;
        for (size_t j = 1; j <= k; j++)
            if (((unsigned char)s[i + j] & 0xc0) != 0x80)
                return false;
        i += k + 1;
    }
    return true;
}

static void conn_redirect(struct conn *c, const char *head)
{
    struct h1_parser *p = &c->req;
    char *loc = NULL, *extra;

    if (p->host >= 0)
        loc = rules_https_location(head + p->fields[p->host].value.off, p->fields[p->host].value.len,
                                   head + p->target.off, p->target.len);
    if (!loc) {
        conn_local(c, 400, NULL, false, NULL, NULL);
        return;
    }
    extra = xasprintf("location: %s\r\n", loc);
    conn_local(c, 301, extra, false, NULL, NULL);
    free(extra);
    free(loc);
}

/* The route is known: check the host, rewrite the head and start the upstream half. */
static void conn_proxy(struct conn *c, const char *head, const struct rules_target *t)
{
    struct proxy *px = px_of(c);
    struct h1_parser *p = &c->req;
    struct route *r = c->route;
    struct h1_request_out o;
    int st;

    if (p->host < 0) {
        conn_local(c, 400, NULL, true, NULL, "missing or repeated host\n");
        return;
    }
    st = rules_check_host(head + p->fields[p->host].value.off, p->fields[p->host].value.len, r->cluster,
                          r->subdomain);
    if (st) {
        conn_local(c, (unsigned)st, NULL, true, NULL, "host does not match the backend\n");
        return;
    }
    /* Remember the route for the next request on this connection. */
    if (c->memo != r) {
        route_put(c->memo);
        c->memo = route_get(r);
        free(c->memo_token);
        c->memo_token = xstrndup(t->token, t->token_len);
        c->memo_len = t->token_len;
    }
    memset(&o, 0, sizeof(o));
    o.client_ip = c->ip;
    o.proto = c->https ? "https" : "http";
    o.verified_pre = r->verified_pre;
    o.verified_post = r->verified_post;
    o.verified_path = t->path;
    o.verified_path_len = t->path_len;
    o.upgrade = c->upgrade;
    /* The target upstream: the forwarded path and the query. */
    o.target = t->fwd_path;
    o.target_len = t->fwd_path_len;
    o.target2 = t->query;
    o.target2_len = t->query_len;
    buf_reset(&c->head_out);
    h1_write_request(p, head, &o, &c->head_out);

    c->state = CONN_FORWARD;
    c->req_done = c->upgrade; /* an upgrade is forwarded without a body (§16.1 step 8) */
    c->resp_started = false;
    c->deadline = c->req_done ? 0 : now_of(c) + CONN_BODY_TIMEOUT_MS;
    if (!c->upgrade && r->act)
        monitor_touch(px->mon, r->act);
    st = forward_start(c);
    if (st < 0) {
        log_info("backend %s at %s: %s", r->backend_id, r->address, uv_strerror(st));
        conn_local(c, 502, NULL, true, r->backend_id, "backend unreachable\n");
    }
}

/* What the route lookup said, now that it has said it. */
static void conn_routed(struct conn *c, const char *head, const struct rules_target *t, enum route_result res)
{
    switch (res) {
    case ROUTE_FOUND:
        conn_proxy(c, head, t);
        break;
    case ROUTE_NONE:
        conn_local(c, 410, NULL, true, NULL, "no backend for this token\n");
        break;
    default:
        conn_local(c, 503, NULL, true, NULL, "not connected to the controller\n");
        break;
    }
}

/*
 * The head of the current request is complete at head[0..head_len).
 * Returns head_len once the request is answered or forwarded, 0 while its
 * route is being looked up (the head must stay where it is).
 */
static size_t conn_route(struct conn *c, const char *head)
{
    struct proxy *px = px_of(c);
    struct h1_parser *p = &c->req;
    size_t hl = p->head_len;
    struct rules_target t;
    enum rules_kind kind;
    enum route_result res;
    struct route *r = NULL;
    bool ask;

    kind = rules_split_target(head + p->target.off, p->target.len, &t);
    if (c->looked_up) {
        if (c->waiting)
            return 0;
        r = c->waiter.route;
        c->waiter.route = NULL;
        c->route = r;
        conn_routed(c, head, &t, c->waiter.result);
        return hl;
    }
    c->looked_up = true;
    c->keep_alive = h1_keep_alive(p);
    c->http10 = h1_is_http10(p);
    c->head_method = h1_method(p) == HTTP_HEAD;
    c->upgrade = p->conn_upgrade;
    if (c->redirect) {
        conn_redirect(c, head);
        return hl;
    }
    switch (kind) {
    case RULES_READY:
        if (ctrl_link_is_up(px->link))
            conn_local(c, 200, NULL, true, NULL, "ready\n");
        else
            conn_local(c, 503, NULL, true, NULL, "not connected to the controller\n");
        return hl;
    case RULES_ROOT:
        if (px->root_redirect) {
            char *extra = xasprintf("location: %s\r\n", px->root_redirect);
            conn_local(c, 301, extra, true, NULL, NULL);
            free(extra);
        } else {
            conn_local(c, 400, NULL, true, NULL, "no token in the path\n");
        }
        return hl;
    case RULES_BAD:
        conn_local(c, 400, NULL, true, NULL, "no token in the path\n");
        return hl;
    case RULES_TOKEN:
        break;
    }
    /* A keep-alive client asking for the same token again. */
    if (c->memo && c->memo_len == t.token_len && memcmp(c->memo_token, t.token, t.token_len) == 0 &&
        !route_is_removed(c->memo)) {
        c->route = route_get(c->memo);
        conn_proxy(c, head, &t);
        return hl;
    }
    if (t.token_len > RULES_MAX_TOKEN || !utf8_valid(t.token, t.token_len)) {
        conn_local(c, 410, NULL, true, NULL, "no backend for this token\n");
        return hl;
    }
    c->waiter.worker = c->s.w->idx;
    res = route_cache_lookup(px->cache, t.token, t.token_len, &c->waiter, &r, &ask);
    if (res == ROUTE_WAIT) {
        c->waiting = true;
        c->deadline = 0; /* the controller holds lookups for starting backends */
        if (ask)
            ctrl_link_request(px->link, t.token, t.token_len);
        return 0;
    }
    c->route = r;
    conn_routed(c, head, &t, res);
    return hl;
}

/* Request body bytes go upstream as they are; returns how many were used. */
static size_t conn_body(struct conn *c, const char *data, size_t len)
{
    bool complete;
    ssize_t n = h1_parse_body(&c->req, data, len, &complete);

    if (n < 0) {
        /* Bad chunk framing: the upstream has half a request and must go. */
        forward_detach(c);
        c->close_after = true;
        if (c->resp_started)
            conn_close(c);
        else
            conn_local(c, 400, NULL, true, NULL, "bad request body\n");
        return len;
    }
    if (n > 0) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);
        int r = forward_send(c->up, &b, 1);
        if (r < 0) {
            struct upconn *up = c->up;
            c->up = NULL;
            up->c = NULL;
            forward_close(up);
            conn_upstream_failed(c, r);
            return len;
        }
        c->deadline = now_of(c) + CONN_BODY_TIMEOUT_MS;
    }
    if (complete) {
        c->req_done = true;
        c->deadline = 0;
    }
    return (size_t)n;
}

static void conn_error(struct conn *c, unsigned status)
{
    c->keep_alive = false;
    c->close_after = true;
    conn_local(c, status, NULL, !c->redirect, NULL, status == 431 ? "request head too large\n" : "bad request\n");
}

/* Handles data[0..len) as far as the connection's state allows; returns how much was used. */
static size_t conn_process(struct conn *c, const char *data, size_t len)
{
    size_t pos = 0, n;
    int r;

    while (!c->s.closing) {
        switch (c->state) {
        case CONN_HEAD:
            if (pos == len)
                return pos;
            if (c->req.fed == 0 && !c->served && !c->redirect) {
                /* HTTP/2 with prior knowledge, or chosen by ALPN: the preface comes first (RFC 9113 §3.4). */
                r = h2_preface(data + pos, len - pos);
                if (r < 0)
                    return pos;
                if (r == 1) {
                    h2_conn_start(c);
                    break;
                }
            }
            if (c->req.fed == 0)
                c->deadline = now_of(c) + CONN_HEAD_TIMEOUT_MS;
            r = h1_parse_head(&c->req, data + pos, len - pos);
            if (r == H1_MORE)
                return pos;
            if (r < 0) {
                conn_error(c, (unsigned)-r);
                return len;
            }
            c->state = CONN_ROUTE;
            c->looked_up = false;
            /* fall through */
        case CONN_ROUTE:
            n = conn_route(c, data + pos);
            if (n == 0 || c->s.closing)
                return pos;
            pos += n;
            break;
        case CONN_FORWARD:
            if (c->req_done || !c->up || !forward_writable(c->up))
                return pos;
            n = conn_body(c, data + pos, len - pos);
            if (c->s.closing)
                return len;
            pos += n;
            if (c->state == CONN_FORWARD && !c->req_done)
                return pos;
            break;
        case CONN_TUNNEL:
            return pos + tunnel_client_input(c, data + pos, len - pos);
        case CONN_H2:
            return pos + h2_conn_input(c, data + pos, len - pos);
        case CONN_LINGER:
            return len;
        }
    }
    return len;
}

static void conn_input(struct stream *s, const char *data, size_t len)
{
    struct conn *c = conn_of(s);
    bool from_in = data == NULL;
    size_t used;

    if (c->in_process) {
        /* Not expected from libuv; keep the bytes in order all the same. */
        if (!from_in)
            stream_keep(s, data, len);
        c->again = true;
        return;
    }
    for (;;) {
        if (from_in) {
            data = s->in;
            len = s->in_len;
        }
        c->in_process = true;
        c->again = false;
        used = conn_process(c, data, len);
        c->in_process = false;
        if (s->closing)
            return;
        stream_used(s, from_in, data, len, used);
        if (!c->again || s->in_len == 0)
            break;
        from_in = true;
    }
    conn_check_eof(c);
    if (!s->closing)
        conn_update_reading(c);
}

void conn_resume(struct conn *c)
{
    if (c->s.closing)
        return;
    if (c->in_process) {
        c->again = true;
        return;
    }
    if (c->s.in_len > 0 || (c->state == CONN_FORWARD && !c->req_done))
        conn_input(&c->s, NULL, 0);
    else
        conn_update_reading(c);
}

void conn_response_done(struct conn *c)
{
    if (c->s.closing)
        return;
    /* A response that ends before its request: the rest of the request is not read. */
    if (!c->req_done)
        c->close_after = true;
    conn_exchange_end(c, c->close_after);
    conn_resume(c);
}

void conn_upstream_failed(struct conn *c, int status)
{
    if (c->s.closing)
        return;
    log_info("backend %s: %s", c->route ? c->route->backend_id : "?", uv_strerror(status));
    if (c->resp_started || c->state != CONN_FORWARD || !c->route) {
        conn_close(c);
        return;
    }
    conn_local(c, 502, NULL, true, c->route->backend_id, "backend failed\n");
    conn_resume(c);
}

/*
 * After the client's FIN: no more requests will come, but those it sent
 * before are answered (pipelined ones too, from the input buffer) and what
 * is queued for it goes out. Only a request that can no longer be finished
 * (a body cut short) ends the connection at once.
 */
static void conn_check_eof(struct conn *c)
{
    if (!c->client_eof || c->s.closing || c->in_process)
        return;
    switch (c->state) {
    case CONN_ROUTE:
    case CONN_FORWARD:
        /* Complete, or without a body (it completes once the upstream takes it, which with
         * io_uring is only when the kernel reports the head sent): its response comes. */
        if (c->req_done || !h1_has_body(&c->req))
            return;
        if (c->s.in_len > 0)
            return; /* the body's bytes are buffered: checked again once they are used */
        conn_close(c);
        return;
    case CONN_HEAD:
        conn_linger(c); /* what is left is at most part of a head: answer nothing more */
        return;
    case CONN_LINGER:
        if (!c->shutdown_pending)
            conn_close(c); /* else conn_drained closes once the output is out */
        return;
    case CONN_TUNNEL:
        return;
    case CONN_H2:
        conn_close(c); /* an HTTP/2 client that half-closes is done (RFC 9113 §6.8 has GOAWAY for that) */
        return;
    }
}

static void conn_end(struct stream *s, int status)
{
    struct conn *c = conn_of(s);

    if (c->state == CONN_TUNNEL) {
        tunnel_client_end(c, status);
        return;
    }
    if (status != UV_EOF) {
        conn_close(c); /* a reset: nobody is there to answer */
        return;
    }
    c->client_eof = true;
    conn_check_eof(c);
}

static void conn_drained(struct stream *s)
{
    struct conn *c = conn_of(s);

    switch (c->state) {
    case CONN_TUNNEL:
        tunnel_client_drained(c);
        break;
    case CONN_LINGER:
        if (c->shutdown_pending) {
            c->shutdown_pending = false;
            stream_shutdown(&c->s);
            if (c->s.ended)
                conn_close(c);
        }
        break;
    case CONN_FORWARD:
        if (c->up)
            forward_client_drained(c->up);
        break;
    case CONN_H2:
        h2_conn_drained(c);
        break;
    default:
        break;
    }
}

static void conn_quiet(struct stream *s)
{
    struct conn *c = conn_of(s);

    if (c->state == CONN_TUNNEL)
        tunnel_quiet(c);
    else
        stream_hold(s, false);
}

/* ---- accepting ---- */

static void conn_free_unaccepted(uv_handle_t *h)
{
    free(conn_of(h->data));
}

/* The rest of a new connection's setup, once its socket is in c->s.tcp. */
static void conn_begin(struct worker *w, struct conn *c, bool https)
{
    if (https)
        c->s.tls = tls_conn_new(w->px->tls);
    h1_init(&c->req, H1_REQUEST, false);
    buf_init(&c->head_out, 0);
    c->state = CONN_HEAD;
    c->deadline = worker_now(w) + CONN_HEAD_TIMEOUT_MS;
    list_insert_tail(&w->conns, &c->node);
    w->nconns++;
    stream_read(&c->s, true);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    struct worker *w = l->w;
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    struct conn *c;

    if (status < 0) {
        log_warn("accept failed: %s", uv_strerror(status));
        return;
    }
    c = xcalloc(1, sizeof(*c));
    stream_init(&c->s, w, &conn_ops);
    list_init(&c->node);
    if (uv_accept(server, (uv_stream_t *)&c->s.tcp) < 0) {
        stream_close(&c->s, conn_free_unaccepted);
        return;
    }
    uv_tcp_nodelay(&c->s.tcp, 1);
    if (!l->https)
        stream_uring_attach(&c->s); /* a no-op on the epoll path */
    if (uv_tcp_getpeername(&c->s.tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
            if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr))
                inet_ntop(AF_INET, &a6->sin6_addr.s6_addr[12], c->ip, sizeof(c->ip));
            else
                inet_ntop(AF_INET6, &a6->sin6_addr, c->ip, sizeof(c->ip));
        } else {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->ip, sizeof(c->ip));
        }
    }
    c->https = l->https;
    c->redirect = l->redirect;
    conn_begin(w, c, l->https);
}

struct conn *listener_adopt(struct worker *w, int fd, const char *ip, bool https)
{
    struct conn *c = xcalloc(1, sizeof(*c));
    int r;

    stream_init(&c->s, w, &conn_ops);
    list_init(&c->node);
    if ((r = uv_tcp_open(&c->s.tcp, fd)) < 0) {
        log_warn("client %s: cannot adopt a stream: %s", ip, uv_strerror(r));
        close(fd);
        stream_close(&c->s, conn_free_unaccepted);
        return NULL;
    }
    snprintf(c->ip, sizeof(c->ip), "%s", ip);
    c->https = https;
    c->served = true; /* HTTP/1.1 from here on */
    c->bridged = true;
    conn_begin(w, c, false); /* the bytes on a bridge are plaintext: TLS ended at the HTTP/2 side */
    return c;
}

int listener_start(struct worker *w)
{
    int r;

    for (unsigned i = 0; i < w->nlisteners; i++) {
        struct listener *l = &w->listeners[i];
        l->w = w;
        uv_tcp_init(&w->loop, &l->tcp);
        l->tcp.data = l;
    }
    for (unsigned i = 0; i < w->nlisteners; i++) {
        struct listener *l = &w->listeners[i];
        r = uv_tcp_open(&l->tcp, w->listen_fds[i]);
        if (r == 0)
            r = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection);
        w->listen_fds[i] = -1; /* the handle owns it now */
        if (r < 0) {
            log_error("worker %u cannot listen: %s", w->idx, uv_strerror(r));
            return r;
        }
    }
    return 0;
}

void listener_stop(struct worker *w)
{
    for (unsigned i = 0; i < w->nlisteners; i++)
        if (!uv_is_closing((uv_handle_t *)&w->listeners[i].tcp))
            uv_close((uv_handle_t *)&w->listeners[i].tcp, NULL);
}

void listener_route_answers(struct worker *w)
{
    struct list_node done, *pos, *tmp;

    list_init(&done);
    route_cache_take_done(w->px->cache, w->idx, &done);
    list_for_each_safe(pos, tmp, &done) {
        struct route_waiter *wt = list_entry(pos, struct route_waiter, node);
        struct conn *c = container_of(wt, struct conn, waiter);
        list_remove(pos);
        if (c->s.closing) {
            route_put(wt->route);
            wt->route = NULL;
            continue;
        }
        c->waiting = false;
        conn_resume(c);
    }
}

static void conn_timeout(struct conn *c)
{
    switch (c->state) {
    case CONN_HEAD:
        if (c->req.fed > 0 && !c->redirect) {
            /* A head that is taking too long: say so, then close. */
            c->keep_alive = false;
            conn_local(c, 408, NULL, true, NULL, "request head timeout\n");
            if (!c->s.closing)
                conn_update_reading(c);
        } else {
            conn_close(c);
        }
        break;
    case CONN_FORWARD:
        log_info("client %s: request body stalled, closing", c->ip);
        conn_close(c);
        break;
    default:
        conn_close(c);
        break;
    }
}

void listener_tick(struct worker *w, uint64_t now)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &w->conns) {
        struct conn *c = list_entry(pos, struct conn, node);
        if (c->deadline && now >= c->deadline && !c->s.closing)
            conn_timeout(c);
    }
}

void listener_drain(struct worker *w)
{
    struct list_node *pos, *tmp;

    listener_stop(w);
    list_for_each_safe(pos, tmp, &w->conns) {
        struct conn *c = list_entry(pos, struct conn, node);
        if (c->state == CONN_HEAD && c->req.fed == 0 && c->s.in_len == 0 && !c->bridged)
            conn_close(c); /* idle; a bridged one has its request on the way */
        else if (c->state == CONN_H2)
            h2_conn_drain(c);
        else
            c->close_after = true;
    }
}

void listener_close_all(struct worker *w)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &w->conns)
        conn_close(list_entry(pos, struct conn, node));
}
