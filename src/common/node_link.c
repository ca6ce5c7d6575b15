/* SPDX-License-Identifier: MIT */
/*
 * node_link.c - a node's controller connection with reconnects (see node_link.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "controller_urls.h"
#include "log.h"
#include "names.h"
#include "node_link.h"
#include "wire.h"
#include "ws_client.h"
#include "xalloc.h"

#define BACKOFF_FIRST_MS 1000   /* §19 */
#define BACKOFF_MAX_MS 60000
#define STABLE_MS 60000         /* up this long: the next attempt is immediate */

struct node_link {
    uv_loop_t *loop;       /* borrowed */
    struct node_link_handler h;
    void *arg;
    struct controller_urls urls; /* owned: the socket URL of each controller, tried in turn */
    char *name;            /* owned */
    struct ws_client *ws;  /* owned while connecting or connected */
    bool up;
    uint64_t up_since;
    unsigned backoff_ms;   /* before the next attempt */
    uv_timer_t retry;
    uv_timer_t cycle;      /* voluntary reconnect, when cycle_ms */
    unsigned cycle_ms, cycle_jitter_ms;
    unsigned open_handles;
    bool closing;
};

static void connect_now(struct node_link *l);

bool node_link_is_up(const struct node_link *l)
{
    return l->up;
}

int node_link_send(struct node_link *l, json_t *msg)
{
    char *text;
    int rc = -ENOTCONN;

    if (l->up) {
        text = wire_text(msg);
        rc = ws_client_send_text(l->ws, text, strlen(text));
        free(text);
    }
    json_decref(msg);
    return rc;
}

static void retry_cb(uv_timer_t *t)
{
    connect_now(t->data);
}

static void lost(struct node_link *l, const char *reason)
{
    bool was_up = l->up;

    if (was_up)
        log_warn("%s: lost the controller: %s", l->name, reason);
    else
        log_info("%s: cannot reach the controller: %s", l->name, reason);
    ws_client_free(l->ws);
    l->ws = NULL;
    l->up = false;
    uv_timer_stop(&l->cycle);
    if (was_up && uv_now(l->loop) - l->up_since >= STABLE_MS)
        l->backoff_ms = 0;
    /* Another controller, if there are several: at once after a working connection ended. */
    controller_urls_next(&l->urls);
    uv_timer_start(&l->retry, retry_cb, was_up && l->urls.n > 1 ? 0 : l->backoff_ms, 0);
    l->backoff_ms = l->backoff_ms == 0 ? BACKOFF_FIRST_MS
                    : l->backoff_ms * 11 / 10 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                               : l->backoff_ms * 11 / 10;
    if (was_up && l->h.on_down)
        l->h.on_down(l->arg);
}

static void cycle_cb(uv_timer_t *t)
{
    struct node_link *l = t->data;

    log_info("%s: periodic reconnect to the controller", l->name);
    l->backoff_ms = 0;
    lost(l, "periodic reconnect");
}

void node_link_cycle(struct node_link *l, unsigned period_ms, unsigned jitter_ms)
{
    l->cycle_ms = period_ms;
    l->cycle_jitter_ms = jitter_ms;
}

static void ws_open(void *arg)
{
    struct node_link *l = arg;
    json_t *hs = wire_handshake(l->name);
    char *text = wire_text(hs);

    json_decref(hs);
    ws_client_send_text(l->ws, text, strlen(text));
    free(text);
}

static void ws_text(void *arg, const char *msg, size_t len)
{
    struct node_link *l = arg;
    json_error_t jerr;
    json_t *j = json_loadb(msg, len, 0, &jerr), *payload;
    const char *tag;

    if (!j) {
        log_warn("%s: dropped a controller message that is not JSON: %s", l->name, jerr.text);
        return;
    }
    if (!l->up) {
        const char *controller = wire_handshake_name(j);
        if (controller) {
            log_info("%s: connected to controller %s", l->name, controller);
            l->up = true;
            l->up_since = uv_now(l->loop);
            if (l->cycle_ms) {
                unsigned jitter = 0;
                if (l->cycle_jitter_ms)
                    random_bytes(&jitter, sizeof(jitter));
                uv_timer_start(&l->cycle, cycle_cb,
                               l->cycle_ms - l->cycle_jitter_ms +
                                   (l->cycle_jitter_ms ? jitter % (2 * l->cycle_jitter_ms) : 0),
                               0);
            }
            if (l->h.on_up)
                l->h.on_up(l->arg);
        } else {
            lost(l, "bad handshake");
        }
    } else if (!(tag = wire_variant_of(j, &payload))) {
        log_warn("%s: dropped a controller message that is not a variant", l->name);
    } else {
        l->h.on_message(l->arg, tag, payload);
    }
    json_decref(j);
}

static void ws_closed(void *arg, const char *reason)
{
    lost(arg, reason);
}

static const struct ws_client_handler ws_handler = {.on_open = ws_open, .on_text = ws_text, .on_close = ws_closed};

static void connect_now(struct node_link *l)
{
    struct buf err = BUF_INIT;

    if (l->ws || l->closing)
        return;
    l->ws = ws_client_connect(l->loop, CONTROLLER_URL_SOCKET(&l->urls), CONTROLLER_URL_BEARER(&l->urls),
                              &ws_handler, l, &err);
    if (!l->ws) {
        log_error("%s: %s", l->name, buf_cstr(&err));
        uv_timer_start(&l->retry, retry_cb, BACKOFF_MAX_MS, 0);
    }
    buf_release(&err);
}

struct node_link *node_link_new(uv_loop_t *loop, const char *controller_url, const char *path, const char *name,
                                const struct node_link_handler *h, void *arg, struct buf *err)
{
    struct node_link *l = xcalloc(1, sizeof(*l));

    if (controller_urls_parse(&l->urls, controller_url, path, err) < 0) {
        free(l);
        return NULL;
    }
    l->loop = loop;
    l->h = *h;
    l->arg = arg;
    l->name = xstrdup(name);
    uv_timer_init(loop, &l->retry);
    uv_timer_init(loop, &l->cycle);
    l->retry.data = l->cycle.data = l;
    l->open_handles = 2;
    l->backoff_ms = BACKOFF_FIRST_MS;
    connect_now(l);
    return l;
}

static void handle_closed(uv_handle_t *h)
{
    struct node_link *l = h->data;

    if (--l->open_handles > 0)
        return;
    controller_urls_release(&l->urls);
    free(l->name);
    free(l);
}

void node_link_free(struct node_link *l)
{
    if (!l)
        return;
    l->closing = true;
    l->up = false;
    ws_client_free(l->ws);
    l->ws = NULL;
    uv_timer_stop(&l->retry);
    uv_timer_stop(&l->cycle);
    uv_close((uv_handle_t *)&l->retry, handle_closed);
    uv_close((uv_handle_t *)&l->cycle, handle_closed);
}
