/* SPDX-License-Identifier: MIT */
/*
 * ctrl_link.c - the controller connection of the proxy (see ctrl_link.h).
 *
 * States: waiting (backoff timer) -> connecting (ws_client) -> handshake
 * (ours sent, the controller's awaited) -> up. Only "up" answers route
 * lookups; the route cache is told of every change, and a drop answers the
 * lookups in flight with "unavailable" (503) rather than leaving them to
 * hang (the original would, §21). Like the drone, the first attempt is made
 * at once; after that the wait before each attempt is 1 s x 1.1^n, capped at
 * 60 s, and skipped after a connection that stayed up 60 s (§6). A
 * connection is also dropped and remade every 60 +- 10 minutes.
 *
 * Route requests come from worker threads through a mutex-protected
 * outbox and an async handle.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../common/buf.h"
#include "../common/controller_urls.h"
#include "../common/json_util.h"
#include "../common/list.h"
#include "../common/log.h"
#include "../common/names.h"
#include "../common/url.h"
#include "../common/wire.h"
#include "../common/ws_client.h"
#include "../common/xalloc.h"
#include "ctrl_link.h"
#include "monitor.h"
#include "route_cache.h"

struct outbox_item {
    struct list_node node;
    size_t len;
    bool message;   /* token is a whole message's text, not a token */
    char token[];
};

struct ctrl_link {
    uv_loop_t *loop;            /* borrowed */
    struct route_cache *cache;  /* borrowed */
    struct monitor *mon;        /* borrowed */
    struct controller_urls urls; /* owned: ws://host:port/ctrl/c/<cluster>/proxy-socket, one per controller */
    char *name;                 /* owned; our node name */
    struct ws_client *ws;       /* owned while connecting or connected */
    bool handshaken;
    atomic_bool up;
    uint64_t up_since;
    unsigned backoff_ms;
    uv_timer_t retry;           /* backoff wait */
    uv_timer_t cycle;           /* voluntary reconnect */
    uv_async_t async;           /* the outbox has items */
    uv_mutex_t lock;
    struct list_node outbox;    /* of struct outbox_item, under lock */
    ctrl_link_cert_fn *cert_fn; /* CertManagerResponse goes here, or is dropped */
    void *cert_arg;
    unsigned open_handles;
    bool closing;
};

static void connect_now(struct ctrl_link *l);

bool ctrl_link_is_up(const struct ctrl_link *l)
{
    return atomic_load_explicit(&l->up, memory_order_relaxed);
}

static void send_json(struct ctrl_link *l, json_t *msg)
{
    char *text = wire_text(msg);

    if (l->ws && l->handshaken && ws_client_send_text(l->ws, text, strlen(text)) < 0)
        log_debug("cannot send to the controller");
    free(text);
    json_decref(msg);
}

void ctrl_link_keepalive(struct ctrl_link *l, const char *backend_id)
{
    if (ctrl_link_is_up(l))
        send_json(l, wire_variant("KeepAlive", json_string(backend_id)));
}

static void outbox_put(struct ctrl_link *l, const char *text, size_t len, bool message)
{
    struct outbox_item *it = xmalloc(sizeof(*it) + len + 1);

    memcpy(it->token, text, len);
    it->token[len] = '\0';
    it->len = len;
    it->message = message;
    uv_mutex_lock(&l->lock);
    list_insert_tail(&l->outbox, &it->node);
    uv_mutex_unlock(&l->lock);
    uv_async_send(&l->async);
}

void ctrl_link_request(struct ctrl_link *l, const char *token, size_t len)
{
    outbox_put(l, token, len, false);
}

int ctrl_link_send(struct ctrl_link *l, json_t *msg)
{
    char *text;

    if (!ctrl_link_is_up(l)) {
        json_decref(msg);
        return -ENOTCONN;
    }
    text = wire_text(msg);
    json_decref(msg);
    outbox_put(l, text, strlen(text), true);
    free(text);
    return 0;
}

void ctrl_link_on_cert_response(struct ctrl_link *l, ctrl_link_cert_fn *fn, void *arg)
{
    l->cert_fn = fn;
    l->cert_arg = arg;
}

static void outbox_cb(uv_async_t *a)
{
    struct ctrl_link *l = a->data;
    struct list_node q, *pos, *tmp;

    list_init(&q);
    uv_mutex_lock(&l->lock);
    list_for_each_safe(pos, tmp, &l->outbox) {
        list_remove(pos);
        list_insert_tail(&q, pos);
    }
    uv_mutex_unlock(&l->lock);
    list_for_each_safe(pos, tmp, &q) {
        struct outbox_item *it = list_entry(pos, struct outbox_item, node);
        list_remove(pos);
        /* A request made while the link was up but sent after it dropped: the
         * drop already answered its waiters. */
        if (ctrl_link_is_up(l) && !l->closing && it->message)
            ws_client_send_text(l->ws, it->token, it->len);
        else if (ctrl_link_is_up(l) && !l->closing)
            send_json(l, wire_variant("RouteInfoRequest", json_pack("{s:s}", "token", it->token)));
        free(it);
    }
}

/* ---- messages ---- */

static void route_response(struct ctrl_link *l, const json_t *payload)
{
    const char *token = json_get_str(payload, "token");
    json_t *info = json_object_get(payload, "route_info");
    struct route *r = NULL;
    struct buf err = BUF_INIT;

    if (!token) {
        log_warn("controller sent a RouteInfoResponse without a token");
        return;
    }
    if (info && !json_is_null(info)) {
        r = route_from_json(info, l->mon, &err);
        if (!r)
            log_warn("controller sent an unusable route for a token: %s", buf_cstr(&err));
    }
    route_cache_resolve(l->cache, token, r);
    route_put(r);
    buf_release(&err);
}

static void handle_message(struct ctrl_link *l, const json_t *j)
{
    json_t *payload;
    const char *tag = wire_variant_of(j, &payload);

    if (!tag) {
        log_warn("dropped a controller message that is not a variant");
    } else if (strcmp(tag, "RouteInfoResponse") == 0) {
        route_response(l, payload);
    } else if (strcmp(tag, "BackendRemoved") == 0) {
        const char *b = json_get_str(payload, "backend");
        if (b) {
            log_debug("backend %s removed", b);
            route_cache_remove_backend(l->cache, b);
            monitor_removed(l->mon, b);
        }
    } else if (strcmp(tag, "CertManagerResponse") == 0) {
        json_t *inner;
        const char *kind = wire_variant_of(payload, &inner);
        json_t *accepted = json_object_get(inner, "accepted");
        if (!kind || !json_is_boolean(accepted))
            log_warn("dropped a malformed CertManagerResponse");
        else if (l->cert_fn)
            l->cert_fn(l->cert_arg, kind, json_is_true(accepted));
    } else {
        log_warn("dropped a '%s' message from the controller", tag);
    }
}

/* ---- the connection ---- */

static void retry_cb(uv_timer_t *t)
{
    connect_now(t->data);
}

static void lost(struct ctrl_link *l, const char *reason)
{
    bool was_up = ctrl_link_is_up(l);

    if (was_up)
        log_warn("%s: lost the controller: %s", l->name, reason);
    else
        log_info("%s: cannot reach the controller: %s", l->name, reason);
    if (was_up && uv_now(l->loop) - l->up_since >= CTRL_LINK_STABLE_MS)
        l->backoff_ms = 0;
    atomic_store(&l->up, false);
    l->handshaken = false;
    uv_timer_stop(&l->cycle);
    ws_client_free(l->ws);
    l->ws = NULL;
    if (was_up)
        route_cache_set_link(l->cache, ROUTE_LINK_DOWN);
    if (l->closing)
        return;
    /* Another controller, if there are several: at once after a working connection ended. */
    controller_urls_next(&l->urls);
    uv_timer_start(&l->retry, retry_cb, was_up && l->urls.n > 1 ? 0 : l->backoff_ms, 0);
    if (l->backoff_ms == 0)
        l->backoff_ms = CTRL_LINK_BACKOFF_FIRST_MS;
    else
        l->backoff_ms = l->backoff_ms * 11 / 10 > CTRL_LINK_BACKOFF_MAX_MS ? CTRL_LINK_BACKOFF_MAX_MS
                                                                         : l->backoff_ms * 11 / 10;
}

static void cycle_cb(uv_timer_t *t)
{
    struct ctrl_link *l = t->data;

    log_info("%s: periodic reconnect to the controller", l->name);
    l->backoff_ms = 0;
    lost(l, "periodic reconnect");
}

static void ws_open(void *arg)
{
    struct ctrl_link *l = arg;
    json_t *hs = wire_handshake(l->name);
    char *text = wire_text(hs);

    json_decref(hs);
    ws_client_send_text(l->ws, text, strlen(text));
    free(text);
}

static void ws_text(void *arg, const char *msg, size_t len)
{
    struct ctrl_link *l = arg;
    json_error_t jerr;
    json_t *j = json_loadb(msg, len, 0, &jerr);
    unsigned jitter;

    if (!j) {
        log_warn("dropped a controller message that is not JSON: %s", jerr.text);
        return;
    }
    if (!l->handshaken) {
        const char *name = wire_handshake_name(j);
        if (!name) {
            json_decref(j);
            lost(l, "bad handshake");
            return;
        }
        log_info("%s: connected to controller %s", l->name, name);
        l->handshaken = true;
        l->up_since = uv_now(l->loop);
        atomic_store(&l->up, true);
        route_cache_set_link(l->cache, ROUTE_LINK_UP);
        random_bytes(&jitter, sizeof(jitter));
        uv_timer_start(&l->cycle, cycle_cb,
                       CTRL_LINK_RECONNECT_MS - CTRL_LINK_RECONNECT_JITTER_MS +
                           jitter % (2 * CTRL_LINK_RECONNECT_JITTER_MS),
                       0);
        json_decref(j);
        return;
    }
    handle_message(l, j);
    json_decref(j);
}

static void ws_closed(void *arg, const char *reason)
{
    lost(arg, reason);
}

static const struct ws_client_handler ws_handler = {.on_open = ws_open, .on_text = ws_text, .on_close = ws_closed};

static void connect_now(struct ctrl_link *l)
{
    struct buf err = BUF_INIT;

    if (l->ws || l->closing)
        return;
    l->ws = ws_client_connect(l->loop, CONTROLLER_URL_SOCKET(&l->urls), CONTROLLER_URL_BEARER(&l->urls), &ws_handler,
                              l, &err);
    if (!l->ws) {
        log_error("%s", buf_cstr(&err));
        uv_timer_start(&l->retry, retry_cb, CTRL_LINK_BACKOFF_MAX_MS, 0);
    }
    buf_release(&err);
}

/* ---- life ---- */

static void handle_closed(uv_handle_t *h)
{
    struct ctrl_link *l = h->data;
    struct list_node *pos, *tmp;

    if (--l->open_handles > 0)
        return;
    list_for_each_safe(pos, tmp, &l->outbox) {
        list_remove(pos);
        free(list_entry(pos, struct outbox_item, node));
    }
    uv_mutex_destroy(&l->lock);
    controller_urls_release(&l->urls);
    free(l->name);
    free(l);
}

struct ctrl_link *ctrl_link_new(uv_loop_t *loop, const char *controller_url, const char *cluster,
                                const char *name, struct route_cache *cache, struct monitor *mon,
                                struct buf *err)
{
    struct ctrl_link *l = xcalloc(1, sizeof(*l));
    /* A cluster name is host[:port] (§3.4): safe in a path as it is. */
    char *path = xasprintf("/ctrl/c/%s/proxy-socket", cluster);
    int rc = controller_urls_parse(&l->urls, controller_url, path, err);

    free(path);
    if (rc < 0) {
        free(l);
        return NULL;
    }
    l->loop = loop;
    l->cache = cache;
    l->mon = mon;
    l->name = xstrdup(name);
    atomic_init(&l->up, false);
    uv_mutex_init(&l->lock);
    list_init(&l->outbox);
    uv_timer_init(loop, &l->retry);
    uv_timer_init(loop, &l->cycle);
    uv_async_init(loop, &l->async, outbox_cb);
    l->retry.data = l->cycle.data = l->async.data = l;
    l->open_handles = 3;
    l->backoff_ms = CTRL_LINK_BACKOFF_FIRST_MS;
    connect_now(l);
    return l;
}

void ctrl_link_free(struct ctrl_link *l)
{
    if (!l)
        return;
    l->closing = true;
    if (ctrl_link_is_up(l))
        route_cache_set_link(l->cache, ROUTE_LINK_DOWN);
    atomic_store(&l->up, false);
    ws_client_free(l->ws);
    l->ws = NULL;
    uv_timer_stop(&l->retry);
    uv_timer_stop(&l->cycle);
    uv_close((uv_handle_t *)&l->retry, handle_closed);
    uv_close((uv_handle_t *)&l->cycle, handle_closed);
    uv_close((uv_handle_t *)&l->async, handle_closed);
}
