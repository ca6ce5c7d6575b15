/* SPDX-License-Identifier: MIT */
/*
 * sockets.c - the WebSocket endpoints for drones, proxies and DNS servers
 * (spec §6-§9).
 *
 * A session starts with the handshake exchange; the node is registered
 * then. A drone session forwards the actions queued for its drone as they
 * happen, resends unacknowledged ones every 5 s (so drones see duplicates
 * and must be idempotent), accepts state events only when newer (and acks
 * them always), renews keys, and sweeps idle and expired backends every
 * 5 s. A proxy session answers route requests (holding those for backends
 * still starting until they are ready or gone), records keepalives, and
 * tells the proxy when any backend terminates; its certificate lease and
 * TXT requests, like a DNS server's TXT lookups, go to acme.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/json_util.h"
#include "../common/log.h"
#include "../common/names.h"
#include "../common/wire.h"
#include "../common/ws.h"
#include "../common/xalloc.h"
#include "acme.h"
#include "controller.h"
#include "messages.h"

#define ROUTE_WAIT_MS (30 * 60 * 1000) /* §19: route wait for a pending backend */

struct held_route;

struct session {
    struct list_node node; /* in controller->sessions */
    struct controller *c;
    struct http_ws *ws;
    bool drone;            /* kind == NODE_DRONE */
    enum node_kind kind;
    char *cluster;         /* owned; NULL for DNS servers */
    char *pool;            /* owned; drones only */
    char *name;            /* owned, after the handshake */
    char peer_ip[64];
    int64_t node_id;
    int64_t connected_at;
    bool registered;
    struct event_sub *actions;  /* drones: actions for this drone */
    struct event_sub *removals; /* proxies: backends that terminated */
    uv_timer_t sweep, resend;
    struct list_node held;      /* proxies: route requests waiting for a backend */
    int open_timers;
    bool closing;
};

struct held_route {
    struct list_node node;
    struct session *s;
    char *token, *backend_id;
    struct route_row row;
    struct event_sub *sub;
    uv_timer_t timeout;
};

static void send_msg(struct session *s, json_t *msg)
{
    char *text = wire_text(msg);

    if (!s->closing && http_ws_send(s->ws, text, strlen(text)) < 0)
        log_debug("session %s: send failed", s->name ? s->name : "?");
    free(text);
    json_decref(msg);
}

/* ---- drones ---- */

static void action_event(void *arg, enum event_kind kind, const char *key, const json_t *payload)
{
    struct session *s = arg;

    (void)kind;
    (void)key;
    send_msg(s, wire_variant("Action", json_deep_copy(payload)));
}

static void resend_one(void *arg, const char *action_id, const char *backend_id, const char *action_json)
{
    struct session *s = arg;
    json_t *body = json_loads(action_json, 0, NULL);

    (void)action_id;
    (void)backend_id;
    if (body)
        send_msg(s, wire_variant("Action", body));
}

static void resend_cb(uv_timer_t *t)
{
    struct session *s = t->data;

    STORE_CALL(s->c->store, actions_pending, s->node_id, RESEND_BATCH, resend_one, s);
}

static void sweep_one(void *arg, const char *backend_id, int64_t drone_id)
{
    struct session *s = arg;

    log_info("backend %s: idle or past its lifetime, terminating", backend_id);
    controller_queue_action(s->c, backend_id, drone_id,
                            wire_variant("Terminate", json_pack("{s:s, s:s}", "kind", "soft", "reason", "swept")));
}

static void freeze_one(void *arg, const char *backend_id, int64_t drone_id)
{
    struct session *s = arg;

    log_info("backend %s: idle, freezing", backend_id);
    controller_queue_action(s->c, backend_id, drone_id, wire_variant("Freeze", json_object()));
}

void controller_thaw_if_frozen(struct controller *c, const char *backend_id, bool only_if_used)
{
    struct backend_row row;

    if (STORE_CALL(c->store, backend_get, backend_id, &row) < 0)
        return;
    if (row.state.status == BACKEND_READY && row.state.frozen &&
        (!only_if_used || (row.allowed_idle_ms >= 0 && controller_now() - row.last_keepalive <= row.allowed_idle_ms))) {
        log_info("backend %s: wanted while frozen, thawing", backend_id);
        controller_queue_action(c, backend_id, row.drone_id, wire_variant("Thaw", json_object()));
    }
    backend_row_release(&row);
}

static void sweep_cb(uv_timer_t *t)
{
    struct session *s = t->data;

    STORE_CALL(s->c->store, sweep_candidates, s->node_id, controller_now(), sweep_one, s);
    if (s->c->store->ops->freeze_candidates) /* else idle backends are swept, "freeze" or not */
        STORE_CALL(s->c->store, freeze_candidates, s->node_id, controller_now(), freeze_one, s);
}

static void drone_message(struct session *s, const struct node_msg *m)
{
    struct controller *c = s->c;
    bool ok = false;

    switch (m->kind) {
    case MSG_HEARTBEAT:
        STORE_CALL(c->store, drone_heartbeat, s->node_id, m->local_time, controller_now());
        break;
    case MSG_BACKEND_EVENT:
        if (controller_update_state(c, m->backend_id, &m->state, true, &ok) == 0) {
            if (!ok)
                log_debug("backend %s: %s is not newer, ignored", m->backend_id, backend_status_name(m->state.status));
            else if (m->state.status == BACKEND_READY && m->state.frozen)
                controller_thaw_if_frozen(c, m->backend_id, true); /* a request came meanwhile */
            /* Acked even when ignored; not when the store failed, so the drone retries. */
            send_msg(s, wire_variant("AckEvent", json_pack("{s:I}", "event_id", (json_int_t)m->event_id)));
        }
        break;
    case MSG_ACK_ACTION:
        STORE_CALL(c->store, action_ack, s->node_id, m->action_id, controller_now());
        break;
    case MSG_RENEW_KEY:
        if (STORE_CALL(c->store, key_renew, m->backend_id, s->node_id, controller_now(),
                       controller_now() + KEY_EXPIRY_MS(c), &ok) == 0 && ok)
            send_msg(s, wire_variant("RenewKeyResponse",
                                     json_pack("{s:s, s:{s:I, s:I, s:I}}", "backend", m->backend_id, "deadlines",
                                               "renew_at", (json_int_t)(m->local_time + KEY_RENEW_MS(c)),
                                               "soft_terminate_at", (json_int_t)(m->local_time + KEY_SOFT_MS(c)),
                                               "hard_terminate_at", (json_int_t)(m->local_time + KEY_HARD_MS(c)))));
        /* Refused: no reply at all (§7.3). */
        break;
    case MSG_BACKEND_METRICS:
        break; /* published but not consumed, as in Plane (§20.13) */
    default:
        break;
    }
}

/* ---- proxies ---- */

static json_t *route_info(const struct route_row *r, const char *address)
{
    json_t *ud = r->user_data ? json_loads(r->user_data, 0, NULL) : NULL;

    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o}", "backend_id", r->backend_id, "address", address,
                     "secret_token", r->secret_token ? r->secret_token : "", "cluster", r->cluster, "user",
                     r->user ? json_string(r->user) : json_null(), "user_data", ud ? ud : json_null(),
                     "subdomain", r->subdomain ? json_string(r->subdomain) : json_null());
}

static void route_reply(struct session *s, const char *token, json_t *info)
{
    send_msg(s, wire_variant("RouteInfoResponse",
                             json_pack("{s:s, s:o}", "token", token, "route_info", info ? info : json_null())));
}

static void held_closed(uv_handle_t *h)
{
    struct held_route *hr = h->data;

    route_row_release(&hr->row);
    free(hr->token);
    free(hr->backend_id);
    free(hr);
}

static void held_end(struct held_route *hr)
{
    list_remove(&hr->node);
    events_unsubscribe(hr->sub);
    uv_timer_stop(&hr->timeout);
    uv_close((uv_handle_t *)&hr->timeout, held_closed);
}

static void held_event(void *arg, enum event_kind kind, const char *key, const json_t *payload)
{
    struct held_route *hr = arg;
    struct backend_state st;
    struct buf err = BUF_INIT;

    (void)kind;
    (void)key;
    if (backend_state_from_json(json_object_get(payload, "state"), &st, &err) == 0) {
        if (st.status == BACKEND_READY) {
            route_reply(hr->s, hr->token, route_info(&hr->row, st.address));
            held_end(hr);
        } else if (st.status >= BACKEND_TERMINATING) {
            route_reply(hr->s, hr->token, NULL);
            held_end(hr);
        }
    }
    buf_release(&err);
}

/* Looks at the backend's state in the store, as if it had just been published. */
static void held_recheck(struct held_route *hr)
{
    struct backend_row now;

    if (STORE_CALL(hr->s->c->store, backend_get, hr->backend_id, &now) == 0) {
        json_t *payload = json_pack("{s:o, s:i}", "state", backend_state_to_json(&now.state), "time", 0);
        held_event(hr, EVENT_BACKEND_STATE, hr->backend_id, payload);
        json_decref(payload);
        backend_row_release(&now);
    }
}

static void held_timeout(uv_timer_t *t)
{
    held_end(t->data); /* nothing is sent (§8.3) */
}

static void route_request(struct session *s, const char *token)
{
    struct route_row row;
    int rc = STORE_CALL(s->c->store, route_get, token, &row);

    if (rc == -ENOENT) {
        route_reply(s, token, NULL);
        return;
    }
    if (rc < 0)
        return; /* logged by the store */
    if (row.state.status == BACKEND_READY) {
        route_reply(s, token, route_info(&row, row.state.address));
        route_row_release(&row);
        return;
    }
    if (row.state.status >= BACKEND_TERMINATING) {
        route_reply(s, token, NULL);
        route_row_release(&row);
        return;
    }
    /* Still starting: hold the request until it is ready or gone. */
    struct held_route *hr = xcalloc(1, sizeof(*hr));
    hr->s = s;
    hr->token = xstrdup(token);
    hr->backend_id = xstrdup(row.backend_id);
    hr->row = row;
    list_insert_tail(&s->held, &hr->node);
    uv_timer_init(s->c->loop, &hr->timeout);
    hr->timeout.data = hr;
    uv_timer_start(&hr->timeout, held_timeout, ROUTE_WAIT_MS, 0);
    hr->sub = events_subscribe(s->c->events, EVENT_BACKEND_STATE, hr->backend_id, held_event, hr);
    /* Race guard: it may have become ready between the lookup and the subscription. */
    held_recheck(hr);
}

static void removal_event(void *arg, enum event_kind kind, const char *key, const json_t *payload)
{
    struct session *s = arg;

    (void)kind;
    if (json_is_string(json_object_get(json_object_get(payload, "state"), "status")) &&
        strcmp(json_string_value(json_object_get(json_object_get(payload, "state"), "status")), "terminated") == 0)
        send_msg(s, wire_variant("BackendRemoved", json_pack("{s:s}", "backend", key)));
}

static void proxy_message(struct session *s, const struct node_msg *m)
{
    bool alive = false;

    switch (m->kind) {
    case MSG_ROUTE_INFO_REQUEST:
        route_request(s, m->token);
        break;
    case MSG_KEEPALIVE:
        if (STORE_CALL(s->c->store, keepalive, m->backend_id, controller_now(), &alive) == 0 && !alive)
            send_msg(s, wire_variant("BackendRemoved", json_pack("{s:s}", "backend", m->backend_id)));
        else if (alive)
            controller_thaw_if_frozen(s->c, m->backend_id, false); /* the first request to a frozen backend */
        break;
    case MSG_CERT_LEASE_REQUEST:
    case MSG_SET_TXT_RECORD:
    case MSG_RELEASE_CERT_LEASE: {
        json_t *reply = acme_proxy_request(s->c->store, s->cluster, s->node_id, m, controller_now());
        if (reply)
            send_msg(s, reply);
        break;
    }
    default:
        break;
    }
}

static void dns_message(struct session *s, const struct node_msg *m)
{
    json_t *reply = acme_dns_request(s->c->store, m);

    if (reply)
        send_msg(s, reply);
}

static const char *kind_label(const struct session *s)
{
    return s->kind == NODE_DRONE ? "drone" : s->kind == NODE_PROXY ? "proxy" : "DNS server";
}

/* ---- the session ---- */

static void session_closed(uv_handle_t *h)
{
    struct session *s = h->data;

    if (--s->open_timers > 0)
        return;
    free(s->cluster);
    free(s->pool);
    free(s->name);
    free(s);
}

static void session_end(struct session *s)
{
    struct list_node *pos, *tmp;

    if (s->closing)
        return;
    s->closing = true;
    list_remove(&s->node);
    events_unsubscribe(s->actions);
    events_unsubscribe(s->removals);
    list_for_each_safe(pos, tmp, &s->held)
        held_end(list_entry(pos, struct held_route, node));
    if (s->registered) {
        STORE_CALL(s->c->store, node_disconnect, s->node_id, s->c->id, s->connected_at);
        log_info("%s %s: disconnected", kind_label(s), s->name);
    }
    uv_timer_stop(&s->sweep);
    uv_timer_stop(&s->resend);
    uv_close((uv_handle_t *)&s->sweep, session_closed);
    uv_close((uv_handle_t *)&s->resend, session_closed);
}

static void handshake(struct session *s, const json_t *j)
{
    const char *name = wire_handshake_name(j);
    json_t *ours = wire_handshake(s->c->id);
    char *text = wire_text(ours);
    char key[32];

    json_decref(ours);
    if (!name) {
        /* Not a handshake: dropped without a reply (§6). */
        http_ws_close(s->ws, 1002);
        session_end(s);
        free(text);
        return;
    }
    http_ws_send(s->ws, text, strlen(text));
    free(text);
    if (!name_is_valid(name, s->kind == NODE_DRONE ? "dr" : s->kind == NODE_PROXY ? "px" : "ns")) {
        log_warn("controller: rejected a %s named '%s'", kind_label(s), name);
        http_ws_close(s->ws, 1008);
        session_end(s);
        return;
    }
    s->name = xstrdup(name);
    s->connected_at = controller_now();
    if (STORE_CALL(s->c->store, node_connect, s->kind, name, s->cluster, s->peer_ip,
                   s->c->id, s->pool, s->connected_at, &s->node_id) < 0) {
        http_ws_close(s->ws, 1011);
        session_end(s);
        return;
    }
    s->registered = true;
    log_info("%s %s: connected from %s (cluster %s)", kind_label(s), name, s->peer_ip,
             s->cluster ? s->cluster : "none");
    if (s->drone) {
        snprintf(key, sizeof(key), "%lld", (long long)s->node_id);
        s->actions = events_subscribe(s->c->events, EVENT_BACKEND_ACTION, key, action_event, s);
        uv_timer_start(&s->sweep, sweep_cb, SWEEP_INTERVAL_MS, SWEEP_INTERVAL_MS);
        uv_timer_start(&s->resend, resend_cb, 0, RESEND_INTERVAL_MS);
    } else if (s->kind == NODE_PROXY) {
        s->removals = events_subscribe(s->c->events, EVENT_BACKEND_STATE, NULL, removal_event, s);
    }
}

static void on_text(void *arg, const char *msg, size_t len)
{
    struct session *s = arg;
    struct node_msg m;
    struct buf err = BUF_INIT;

    if (s->closing)
        return;
    if (!s->name) {
        json_t *j = json_loadb(msg, len, 0, NULL);
        if (!j) {
            http_ws_close(s->ws, 1002);
            session_end(s);
        } else {
            handshake(s, j);
        }
        json_decref(j);
        return;
    }
    if (node_msg_decode(msg, len, s->kind, &m, &err) < 0)
        log_warn("%s %s: dropped a message: %s", kind_label(s), s->name, buf_cstr(&err));
    else if (s->kind == NODE_DRONE)
        drone_message(s, &m);
    else if (s->kind == NODE_PROXY)
        proxy_message(s, &m);
    else
        dns_message(s, &m);
    node_msg_release(&m);
    buf_release(&err);
}

static void on_close(void *arg, int code)
{
    (void)code;
    session_end(arg);
}

static const struct ws_handler session_handler = {.on_text = on_text, .on_close = on_close};

void sockets_accept(struct controller *c, struct http_request *req, const char *cluster, enum node_kind kind)
{
    struct session *s;
    char *pool;

    if (kind != NODE_DNS && !cluster_valid(cluster)) {
        api_error(req, 400, "InvalidClusterName", "Invalid cluster name");
        return;
    }
    s = xcalloc(1, sizeof(*s));
    s->c = c;
    s->kind = kind;
    s->drone = kind == NODE_DRONE;
    s->cluster = kind == NODE_DNS ? NULL : xstrdup(cluster); /* DNS servers have none (§9) */
    pool = http_query_param(req, "pool");
    s->pool = pool ? pool : xstrdup("");
    snprintf(s->peer_ip, sizeof(s->peer_ip), "%s", req->peer_ip);
    list_init(&s->held);
    uv_timer_init(c->loop, &s->sweep);
    uv_timer_init(c->loop, &s->resend);
    s->sweep.data = s->resend.data = s;
    s->open_timers = 2;
    list_insert_tail(&c->sessions, &s->node);
    s->ws = http_upgrade(req, &session_handler, s);
    if (!s->ws)
        session_end(s); /* 400 was sent */
}

void sockets_close_all(struct controller *c)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &c->sessions) {
        struct session *s = list_entry(pos, struct session, node);
        http_ws_close(s->ws, 1001);
        session_end(s);
    }
}

void sockets_resync(struct controller *c)
{
    struct list_node *pos, *tmp, *hp, *htmp;

    list_for_each_safe(pos, tmp, &c->sessions) {
        struct session *s = list_entry(pos, struct session, node);
        if (!s->registered || s->closing)
            continue;
        if (s->drone)
            uv_timer_start(&s->resend, resend_cb, 0, RESEND_INTERVAL_MS); /* pending actions now */
        else
            list_for_each_safe(hp, htmp, &s->held)
                held_recheck(list_entry(hp, struct held_route, node));
    }
}

bool sockets_is_drone(const struct list_node *session_node)
{
    const struct session *s = list_entry(session_node, struct session, node);

    return s->drone && s->registered;
}
