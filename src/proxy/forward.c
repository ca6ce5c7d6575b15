/* SPDX-License-Identifier: MIT */
/*
 * forward.c - upstream connections and the response path (see forward.h).
 *
 * A response is parsed only as far as its framing needs: the head is
 * rebuilt for the client (§16.1 step 9), then body bytes are written to the
 * client straight from the read buffer, chunk framing included, in the same
 * write as the head when they came in the same read. While the client has
 * writes queued the upstream is not read. Interim 1xx heads go to the
 * client as they are; a 101 hands both sockets to the tunnel.
 *
 * After a complete exchange the connection goes back to its pool when both
 * sides allow it. A pooled connection the backend closed while it sat idle
 * is noticed by reading it; if one fails before any response byte, a
 * request without a body is retried once on a new connection, the way
 * HTTP clients treat keep-alive races.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "forward.h"
#include "stats.h"
#include "listener.h"
#include "proxy.h"
#include "route_cache.h"
#include "tunnel.h"
#include "worker.h"

struct pool_slot {
    struct pool_slot *next;
    struct list_node idle;   /* of struct upconn, most recently used first */
    unsigned n;
    char key[NET_ADDR_LEN];
};

static void up_input(struct stream *s, const char *data, size_t len);
static void up_end(struct stream *s, int status);
static void up_drained(struct stream *s);
static void up_quiet(struct stream *s);

static const struct stream_ops up_ops = {.input = up_input, .end = up_end, .drained = up_drained,
                                         .quiet = up_quiet};

static struct upconn *up_of(struct stream *s)
{
    return container_of(s, struct upconn, s);
}

/* ---- the pool ---- */

static unsigned key_hash(const char *key)
{
    uint32_t h = 2166136261u;

    while (*key)
        h = (h ^ (unsigned char)*key++) * 16777619u;
    return h % POOL_BUCKETS;
}

static struct pool_slot **slot_find(struct pool *p, const char *key)
{
    struct pool_slot **pp = &p->buckets[key_hash(key)];

    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->key, key) == 0)
            break;
    return pp;
}

static void pool_remove(struct worker *w, struct upconn *up)
{
    struct pool_slot *slot = up->slot;

    if (!slot)
        return;
    list_remove(&up->idle);
    up->slot = NULL;
    slot->n--;
    w->pool.idle--;
    if (slot->n == 0) {
        struct pool_slot **pp = slot_find(&w->pool, slot->key);
        if (*pp == slot)
            *pp = slot->next;
        free(slot);
    }
}

static struct upconn *pool_take(struct worker *w, const char *key)
{
    struct pool_slot *slot = *slot_find(&w->pool, key);
    struct upconn *up;

    if (!slot || list_empty(&slot->idle))
        return NULL;
    up = list_entry(slot->idle.next, struct upconn, idle);
    pool_remove(w, up);
    return up;
}

static void up_closed(uv_handle_t *h)
{
    free(up_of(h->data));
}

void forward_close(struct upconn *up)
{
    struct worker *w = up->s.w;

    if (up->s.closing)
        return;
    pool_remove(w, up);
    list_remove(&up->node);
    up->c = NULL;
    stream_close(&up->s, up_closed);
}

static void pool_put(struct upconn *up)
{
    struct worker *w = up->s.w;
    struct pool_slot **pp = slot_find(&w->pool, up->key), *slot = *pp;

    if (w->draining || (slot && slot->n >= POOL_MAX_PER_ADDRESS)) {
        forward_close(up);
        return;
    }
    if (!slot) {
        slot = xcalloc(1, sizeof(*slot));
        memcpy(slot->key, up->key, sizeof(slot->key));
        list_init(&slot->idle);
        slot->next = w->pool.buckets[key_hash(up->key)];
        w->pool.buckets[key_hash(up->key)] = slot;
    }
    /* Most recently used first: the warm connections get reused, the old ones time out. */
    up->idle.next = slot->idle.next;
    up->idle.prev = &slot->idle;
    slot->idle.next->prev = &up->idle;
    slot->idle.next = &up->idle;
    up->slot = slot;
    slot->n++;
    w->pool.idle++;
    up->state = UP_IDLE;
    up->c = NULL;
    up->deadline = worker_now(w) + POOL_IDLE_MS;
    stream_read(&up->s, true); /* to notice the backend closing it */
}

void forward_close_idle(struct worker *w)
{
    for (unsigned i = 0; i < POOL_BUCKETS; i++)
        while (w->pool.buckets[i]) {
            struct pool_slot *slot = w->pool.buckets[i];
            forward_close(list_entry(slot->idle.next, struct upconn, idle));
        }
}

/* ---- connecting and sending ---- */

bool forward_writable(const struct upconn *up)
{
    return up->state == UP_ACTIVE && up->s.queued == 0 && !up->s.closing;
}

int forward_send(struct upconn *up, const uv_buf_t *bufs, unsigned n)
{
    return stream_write(&up->s, bufs, n);
}

static void up_update_reading(struct upconn *up)
{
    bool on;

    if (up->s.closing)
        return;
    switch (up->state) {
    case UP_IDLE:
        on = true;
        break;
    case UP_ACTIVE:
    case UP_TUNNEL:
        on = up->c && up->c->s.queued == 0 && up->s.in_len < CONN_IN_MAX;
        break;
    default:
        on = false;
        break;
    }
    stream_read(&up->s, on);
}

/* Detaches up from its client and reports the failure to it. */
static void up_fail(struct upconn *up, int status)
{
    struct conn *c = up->c;

    if (c)
        c->up = NULL;
    forward_close(up);
    if (c)
        conn_upstream_failed(c, status);
}

static int send_head(struct upconn *up)
{
    struct conn *c = up->c;
    uv_buf_t b = uv_buf_init(c->head_out.data, (unsigned)c->head_out.len);

    up->sent_at = uv_hrtime();
    return stream_write(&up->s, &b, 1);
}

static void connect_cb(uv_connect_t *req, int status)
{
    struct upconn *up = req->data;
    struct conn *c = up->c;

    if (up->s.closing || !c)
        return;
    if (status < 0) {
        up_fail(up, status);
        return;
    }
    uv_tcp_nodelay(&up->s.tcp, 1);
    stream_uring_attach(&up->s); /* a no-op on the epoll path */
    up->state = UP_ACTIVE;
    up->deadline = 0;
    stream_read(&up->s, true);
    if ((status = send_head(up)) < 0) {
        up_fail(up, status);
        return;
    }
    conn_resume(c);
}

static int connect_new(struct conn *c)
{
    struct worker *w = c->s.w;
    struct upconn *up = xcalloc(1, sizeof(*up));
    int r;

    stream_init(&up->s, w, &up_ops);
    list_init(&up->idle);
    memcpy(up->key, c->route->address, sizeof(up->key));
    list_insert_tail(&w->upconns, &up->node);
    up->state = UP_CONNECTING;
    up->deadline = worker_now(w) + FORWARD_CONNECT_TIMEOUT_MS;
    up->creq.data = up;
    h1_init(&up->resp, H1_RESPONSE, c->head_method);
    r = uv_tcp_connect(&up->creq, &up->s.tcp, (const struct sockaddr *)&c->route->sa, connect_cb);
    if (r < 0) {
        forward_close(up);
        return r;
    }
    up->c = c;
    c->up = up;
    return 0;
}

int forward_start(struct conn *c)
{
    struct upconn *up = pool_take(c->s.w, c->route->address);
    int r;

    if (!up)
        return connect_new(c);
    up->c = c;
    c->up = up;
    up->state = UP_ACTIVE;
    up->reused = true;
    up->got_bytes = up->head_pending = false;
    up->deadline = 0;
    h1_init(&up->resp, H1_RESPONSE, c->head_method);
    r = send_head(up);
    if (r < 0) {
        /* The pooled connection is dead already: a new one. */
        c->up = NULL;
        forward_close(up);
        return connect_new(c);
    }
    return 0;
}

void forward_detach(struct conn *c)
{
    struct upconn *up = c->up;

    if (!up)
        return;
    c->up = NULL;
    up->c = NULL;
    forward_close(up);
}

void forward_client_drained(struct upconn *up)
{
    if (up->s.in_len > 0)
        up_input(&up->s, NULL, 0);
    else
        up_update_reading(up);
}

/* ---- the response ---- */

static bool response_reusable(const struct h1_parser *p)
{
    if (p->conn_close || h1_body_until_eof(p))
        return false;
    return !h1_is_http10(p) || p->conn_keep_alive;
}

static void response_complete(struct upconn *up, bool extra)
{
    struct conn *c = up->c;
    /* Not after HEAD: a backend that sends a body anyway would hand it to the next request. */
    bool reuse = !extra && response_reusable(&up->resp) && c->req_done && !c->upgrade && !c->head_method;

    c->up = NULL;
    up->c = NULL;
    if (reuse)
        pool_put(up);
    else
        forward_close(up);
    conn_response_done(c);
}

/* Handles response bytes; returns how many were used. */
static size_t up_process(struct upconn *up, const char *data, size_t len)
{
    struct worker *w = up->s.w;
    struct proxy *px = w->px;
    struct conn *c = up->c;
    size_t pos = 0;
    int r;

    if (up->state == UP_IDLE || !c) {
        /* Bytes from an idle connection: nothing can be trusted on it any more. */
        forward_close(up);
        return len;
    }
    if (up->state == UP_TUNNEL)
        return tunnel_up_input(c, data, len);
    for (;;) {
        if (!up->resp.head_done) {
            if (pos == len)
                return pos;
            up->got_bytes = true;
            r = h1_parse_head(&up->resp, data + pos, len - pos);
            if (r == H1_MORE)
                return pos;
            if (r < 0) {
                log_info("backend %s: malformed response head", c->route->backend_id);
                up_fail(up, UV_EPROTO);
                return len;
            }
            const char *head = data + pos;
            size_t hl = up->resp.head_len;
            unsigned st = h1_status(&up->resp);
            if (st >= 100 && st < 200 && st != 101) {
                /* Interim response (100 Continue): passed on as it is; HTTP/1.0 clients know none. */
                uv_buf_t b = uv_buf_init((char *)head, (unsigned)hl);
                if (!c->http10 && conn_send(c, &b, 1) < 0)
                    return len;
                pos += hl;
                h1_init(&up->resp, H1_RESPONSE, c->head_method);
                continue;
            }
            buf_reset(&w->scratch);
            if (st == 101) {
                if (!c->upgrade) {
                    up_fail(up, UV_EPROTO);
                    return len;
                }
                struct h1_response_out o = {.server = px->server_header, .backend_id = c->route->backend_id,
                                            .upgrade = true};
                h1_write_response(&up->resp, head, &o, &w->scratch);
                tunnel_start(c, up, w->scratch.data, w->scratch.len, head + hl, len - pos - hl);
                return len;
            }
            c->resp_started = true;
            proxy_stats_response(st);
            if (up->sent_at)
                proxy_stats_upstream(uv_hrtime() - up->sent_at);
            buf_reset(&c->head_out); /* no retry once a response has begun; the storage is reused */
            /* The client's FIN with nothing more buffered: this is the last answer. */
            if (!c->keep_alive || h1_body_until_eof(&up->resp) || w->draining || c->upgrade ||
                (c->client_eof && c->s.in_len == 0))
                c->close_after = true;
            struct h1_response_out o = {.server = px->server_header, .backend_id = c->route->backend_id,
                                        .close = c->close_after, .keep_alive = !c->close_after && c->http10};
            h1_write_response(&up->resp, head, &o, &w->scratch);
            up->head_pending = true;
            pos += hl;
        }
        bool complete;
        ssize_t n = h1_parse_body(&up->resp, data + pos, len - pos, &complete);
        if (n < 0) {
            log_info("backend %s: malformed response body", c->route->backend_id);
            if (up->head_pending) {
                up_fail(up, UV_EPROTO);
            } else {
                forward_detach(c);
                conn_close(c);
            }
            return len;
        }
        uv_buf_t bufs[2];
        unsigned k = 0;
        if (up->head_pending)
            bufs[k++] = uv_buf_init(w->scratch.data, (unsigned)w->scratch.len);
        if (n > 0)
            bufs[k++] = uv_buf_init((char *)data + pos, (unsigned)n);
        up->head_pending = false;
        if (k && conn_send(c, bufs, k) < 0)
            return len; /* c closed, and up with it */
        pos += (size_t)n;
        if (complete) {
            response_complete(up, pos < len);
            return len;
        }
        return pos;
    }
}

static void up_input(struct stream *s, const char *data, size_t len)
{
    struct upconn *up = up_of(s);
    bool from_in = data == NULL;
    size_t used;

    if (from_in) {
        data = s->in;
        len = s->in_len;
    }
    used = up_process(up, data, len);
    if (s->closing)
        return;
    stream_used(s, from_in, data, len, used);
    up_update_reading(up);
}

static void up_end(struct stream *s, int status)
{
    struct upconn *up = up_of(s);
    struct conn *c = up->c;

    if (up->state == UP_TUNNEL && c) {
        tunnel_up_end(c, status);
        return;
    }
    if (up->state != UP_ACTIVE || !c) {
        forward_close(up);
        return;
    }
    if (!up->resp.head_done) {
        if (up->reused && !up->got_bytes && !h1_has_body(&c->req)) {
            /* A keep-alive race: the backend closed the pooled connection as we reused it. */
            log_debug("backend %s: pooled connection closed, retrying", c->route->backend_id);
            c->up = NULL;
            forward_close(up);
            int r = connect_new(c);
            if (r < 0)
                conn_upstream_failed(c, r);
            return;
        }
        up_fail(up, status == UV_EOF ? UV_ECONNRESET : status);
        return;
    }
    if (status == UV_EOF && h1_parse_eof(&up->resp)) {
        if (up->head_pending) {
            uv_buf_t b = uv_buf_init(s->w->scratch.data, (unsigned)s->w->scratch.len);
            up->head_pending = false;
            if (conn_send(c, &b, 1) < 0)
                return;
        }
        response_complete(up, true);
        return;
    }
    /* Cut off mid-body: the client cannot be told any more than that. */
    log_info("backend %s: response cut off", c->route->backend_id);
    forward_detach(c);
    conn_close(c);
}

static void up_drained(struct stream *s)
{
    struct upconn *up = up_of(s);

    if (!up->c)
        return;
    if (up->state == UP_TUNNEL)
        tunnel_up_drained(up->c);
    else if (up->state == UP_ACTIVE)
        conn_resume(up->c);
}

static void up_quiet(struct stream *s)
{
    struct upconn *up = up_of(s);

    if (up->state == UP_TUNNEL && up->c)
        tunnel_quiet(up->c);
    else
        stream_hold(s, false);
}

void forward_tick(struct worker *w, uint64_t now)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &w->upconns) {
        struct upconn *up = list_entry(pos, struct upconn, node);
        if (!up->deadline || now < up->deadline || up->s.closing)
            continue;
        if (up->state == UP_CONNECTING)
            up_fail(up, UV_ETIMEDOUT);
        else if (up->state == UP_IDLE)
            forward_close(up);
    }
}
