/* SPDX-License-Identifier: MIT */
/*
 * ctrl_link.c - the controller connection of the proxy (see ctrl_link.h).
 *
 * The connection itself (handshake, backoff, the reconnect every 60 +- 10
 * minutes) is a node_link. Only "up" answers route lookups; the route
 * cache is told of every change, and a drop answers the lookups in flight
 * with "unavailable" (503) rather than leaving them to hang (the original
 * would, §21).
 *
 * Route requests come from worker threads, and certificate requests from
 * the certificate thread, through a mutex-protected outbox and an async
 * handle.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "../common/buf.h"
#include "../common/json_util.h"
#include "../common/list.h"
#include "../common/log.h"
#include "../common/node_link.h"
#include "../common/wire.h"
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
    char *name;                 /* owned; our node name */
    struct node_link *node;     /* the connection */
    atomic_bool up;
    uv_async_t async;           /* the outbox has items */
    uv_mutex_t lock;
    struct list_node outbox;    /* of struct outbox_item, under lock */
    ctrl_link_cert_fn *cert_fn; /* CertManagerResponse goes here, or is dropped */
    void *cert_arg;
    bool closing;
};

bool ctrl_link_is_up(const struct ctrl_link *l)
{
    return atomic_load_explicit(&l->up, memory_order_relaxed);
}

static void send_json(struct ctrl_link *l, json_t *msg)
{
    if (node_link_send(l->node, msg) < 0)
        log_debug("cannot send to the controller");
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
            send_json(l, json_loadb(it->token, it->len, 0, NULL));
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

static void link_message(void *arg, const char *tag, json_t *payload)
{
    struct ctrl_link *l = arg;

    if (strcmp(tag, "RouteInfoResponse") == 0) {
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

static void link_up(void *arg)
{
    struct ctrl_link *l = arg;

    atomic_store(&l->up, true);
    route_cache_set_link(l->cache, ROUTE_LINK_UP);
}

static void link_down(void *arg)
{
    struct ctrl_link *l = arg;

    atomic_store(&l->up, false);
    route_cache_set_link(l->cache, ROUTE_LINK_DOWN);
}

static const struct node_link_handler link_handler = {
    .on_up = link_up, .on_down = link_down, .on_message = link_message};

/* ---- life ---- */

static void async_closed(uv_handle_t *h)
{
    struct ctrl_link *l = h->data;
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &l->outbox) {
        list_remove(pos);
        free(list_entry(pos, struct outbox_item, node));
    }
    uv_mutex_destroy(&l->lock);
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

    l->loop = loop;
    l->cache = cache;
    l->mon = mon;
    l->name = xstrdup(name);
    atomic_init(&l->up, false);
    l->node = node_link_new(loop, controller_url, path, name, &link_handler, l, err);
    free(path);
    if (!l->node) {
        free(l->name);
        free(l);
        return NULL;
    }
    node_link_cycle(l->node, CTRL_LINK_RECONNECT_MS, CTRL_LINK_RECONNECT_JITTER_MS);
    uv_mutex_init(&l->lock);
    list_init(&l->outbox);
    uv_async_init(loop, &l->async, outbox_cb);
    l->async.data = l;
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
    node_link_free(l->node);
    l->node = NULL;
    uv_close((uv_handle_t *)&l->async, async_closed);
}
