/* SPDX-License-Identifier: MIT */
/*
 * drone.c - the drone: one runtime, one state store, one key manager, the
 * backends it runs, and a WebSocket to the controller (spec §7.4, §13).
 *
 * On start it terminates whatever a previous run of the same store left
 * running (§13.1), then connects. On every (re)connection: handshake,
 * heartbeat now and every 7 s, renewals restart, and every state event the
 * controller has not acknowledged is replayed. Actions are acknowledged
 * after they are applied; duplicates are harmless. States are persisted
 * before they are sent, so nothing is lost across reconnects or restarts.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/backend_state.h"
#include "../common/clock.h"
#include "../common/controller_urls.h"
#include "../common/json_util.h"
#include "../common/http_server.h"
#include "../common/log.h"
#include "../common/metrics.h"
#include "../common/names.h"
#include "../common/url.h"
#include "../common/wire.h"
#include "../common/ws_client.h"
#include "../common/xalloc.h"
#include "backend.h"
#include "drone.h"
#include "fence.h"
#include "key_manager.h"
#include "state_store.h"

#define HEARTBEAT_MS 7000          /* §19 */
#define BACKOFF_FIRST_MS 1000      /* §6: 1 s x1.1, at most 60 s */
#define BACKOFF_MAX_MS 60000
#define STABLE_CONNECTION_MS 60000 /* a connection this old resets the backoff */
#define CLEANUP_MS 60000           /* §14.9 prune interval */

struct drone {
    uv_loop_t *loop;
    char *name, *cluster, *pool, *ip;
    struct controller_urls urls; /* ws://host:port/ctrl/c/<cluster>/drone-socket?pool=..., one per controller */
    struct runtime *rt;
    struct state_store *store;
    struct key_manager *km;
    struct fence *fence; /* NULL if its keeper could not start */
    struct backend_env env;
    struct list_node backends;
    struct list_node orphan_stops; /* of struct orphan_stop */
    struct ws_client *ws;
    bool connected;     /* handshake done */
    uint64_t connected_at;
    uv_timer_t heartbeat, reconnect, cleanup;
    int64_t cleanup_min_age_ms;
    unsigned backoff_ms;
    bool stopping;
    unsigned open_handles;
    struct metrics *metrics;
    struct backend_metrics_sink sink;
    struct metric_counter *events_sent;
    struct http_server *http; /* /metrics, or NULL */
};

static void connect_now(struct drone *d);

/* ---- sending ---- */

static void send_msg(struct drone *d, json_t *msg)
{
    char *text = wire_text(msg);

    if (d->connected && ws_client_send_text(d->ws, text, strlen(text)) < 0)
        log_warn("drone: cannot send to the controller");
    free(text);
    json_decref(msg);
}

static void send_event(struct drone *d, int64_t event_id, const char *backend_id, const struct backend_state *st,
                       int64_t ts)
{
    json_t *e = json_object();

    json_object_set_new(e, "event_id", json_integer(event_id));
    json_object_set_new(e, "backend_id", json_string(backend_id));
    json_object_set_new(e, "state", backend_state_to_json(st));
    json_object_set_new(e, "timestamp", json_integer(ts));
    if (d->events_sent)
        metric_counter_add(d->events_sent, 1);
    send_msg(d, wire_variant("BackendEvent", e));
}

static void metrics_handler(void *arg, struct http_request *req)
{
    static const enum backend_status statuses[] = {BACKEND_SCHEDULED, BACKEND_LOADING, BACKEND_STARTING,
                                                   BACKEND_WAITING, BACKEND_READY, BACKEND_TERMINATING,
                                                   BACKEND_HARD_TERMINATING};
    struct drone *d = arg;
    struct buf out = BUF_INIT;
    struct list_node *pos, *tmp;

    if (strcmp(req->path, "/metrics") != 0 || strcmp(req->method, "GET") != 0) {
        http_respond(req, 404, NULL, "", 0, NULL);
        return;
    }
    for (size_t i = 0; i < ARRAY_SIZE(statuses); i++) {
        int n = 0;
        char labels[64];
        list_for_each_safe(pos, tmp, &d->backends)
            n += list_entry(pos, struct backend, node)->state.status == statuses[i];
        snprintf(labels, sizeof(labels), "status=\"%s\"", backend_status_name(statuses[i]));
        metrics_gauge(&out, "plane_drone_backends", labels, n, i == 0 ? "Backends on this drone by status." : NULL);
    }
    metrics_gauge(&out, "plane_drone_connected", NULL, d->connected, "1 while connected to a controller.");
    metrics_render(d->metrics, &out);
    http_respond(req, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len, NULL);
    buf_release(&out);
}

static void setup_metrics(struct drone *d)
{
    static const char *const ops[] = {"prepare", "spawn", "wait_ready", "terminate"};
    char labels[64];

    d->metrics = metrics_new();
    for (int i = 0; i < 4; i++) {
        snprintf(labels, sizeof(labels), "op=\"%s\",result=\"ok\"", ops[i]);
        d->sink.ok[i] = metrics_counter(d->metrics, "plane_drone_runtime_operations_total", labels,
                                        "Runtime operations by kind and result.");
        snprintf(labels, sizeof(labels), "op=\"%s\",result=\"error\"", ops[i]);
        d->sink.failed[i] = metrics_counter(d->metrics, "plane_drone_runtime_operations_total", labels, "");
    }
    for (int i = 0; i < 4; i++) {
        char name[96];
        snprintf(name, sizeof(name), "plane_drone_runtime_%s_seconds", ops[i]);
        d->sink.seconds[i] = metrics_histogram(d->metrics, name, "How long the runtime operation took.");
    }
    d->events_sent = metrics_counter(d->metrics, "plane_drone_state_events_sent_total", NULL,
                                     "Backend state events sent to the controller (replays included).");
    d->env.metrics = &d->sink;
}

static void replay_event(void *arg, int64_t event_id, const char *backend_id, const struct backend_state *st,
                         int64_t ts)
{
    send_event(arg, event_id, backend_id, st, ts);
}

/* ---- backends ---- */

static struct backend *find_backend(struct drone *d, const char *id)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &d->backends) {
        struct backend *b = list_entry(pos, struct backend, node);
        if (strcmp(b->id, id) == 0)
            return b;
    }
    return NULL;
}

/*
 * (Re)arms the lease fence for b at its key's hard deadline plus a quarter
 * of the soft-to-hard interval (at most 1 s): after the drone's own hard
 * terminate had its chance, well before the key expires at the controller
 * (as long after the hard deadline as the hard deadline is after the soft).
 */
static void fence_backend(struct drone *d, struct backend *b)
{
    int64_t soft, hard;

    if (b->pid <= 0 || !key_manager_deadlines(d->km, b->id, &soft, &hard))
        return;
    int64_t slack = (hard - soft) / 4;
    int64_t deadline = hard + (slack < 0 ? 0 : slack > 1000 ? 1000 : slack);
    if (b->fenced) {
        fence_move(d->fence, b->id, deadline);
    } else {
        fence_arm(d->fence, b->id, b->pid, deadline);
        b->fenced = true;
    }
}

static void on_state(void *arg, struct backend *b, int64_t event_id, const struct backend_state *st, int64_t ts)
{
    struct drone *d = arg;

    if (event_id > 0 && d->connected)
        send_event(d, event_id, b->id, st, ts);
    if (st->status == BACKEND_WAITING)
        fence_backend(d, b); /* spawned: its process is known */
    if (st->status == BACKEND_TERMINATED) {
        /* Renewals stop with the backend (§7.4), and so does our bookkeeping. */
        if (b->fenced)
            fence_disarm(d->fence, b->id);
        key_manager_unregister(d->km, b->id);
        backend_free(b);
    }
}

static void on_exit_event(void *arg, const char *backend_id, int exit_code)
{
    struct drone *d = arg;
    struct backend *b = find_backend(d, backend_id);

    if (!b) {
        log_debug("drone: exit of unknown backend %s ignored", backend_id);
        return;
    }
    backend_exited(b, exit_code != RUNTIME_EXIT_UNKNOWN, exit_code);
}

static void on_metrics(void *arg, const struct backend_metrics *m)
{
    struct drone *d = arg;
    json_t *o;

    if (!d->connected)
        return;
    o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "backend_id", m->backend_id, "mem_used",
                  (json_int_t)m->mem_used, "mem_total", (json_int_t)m->mem_total, "mem_active",
                  (json_int_t)m->mem_active, "mem_inactive", (json_int_t)m->mem_inactive, "mem_unevictable",
                  (json_int_t)m->mem_unevictable, "mem_limit",
                  (json_int_t)(m->mem_limit > INT64_MAX ? INT64_MAX : m->mem_limit), "cpu_used",
                  (json_int_t)m->cpu_used, "sys_cpu", (json_int_t)m->sys_cpu);
    if (o)
        send_msg(d, wire_variant("BackendMetrics", o));
}

static void key_renew(void *arg, const char *backend_id, int64_t local_time)
{
    send_msg(arg, wire_variant("RenewKey", json_pack("{s:s, s:I}", "backend", backend_id, "local_time",
                                                     (json_int_t)local_time)));
}

static void key_deadlines(void *arg, const char *backend_id, int64_t soft_at, int64_t hard_at)
{
    struct drone *d = arg;
    struct backend *b = find_backend(d, backend_id);

    (void)soft_at;
    (void)hard_at;
    if (b)
        fence_backend(d, b);
}

static void key_expire(void *arg, const char *backend_id, enum termination_kind kind)
{
    struct drone *d = arg;
    struct backend *b = find_backend(d, backend_id);

    if (b)
        backend_terminate(b, kind, REASON_KEYEXPIRED);
}

/* ---- actions from the controller ---- */

static bool parse_deadlines(const json_t *j, struct key_deadlines *dl)
{
    return json_is_object(j) && json_get_int(j, "renew_at", 0, &dl->renew_at) &&
           json_get_int(j, "soft_terminate_at", 0, &dl->soft_terminate_at) &&
           json_get_int(j, "hard_terminate_at", 0, &dl->hard_terminate_at);
}

static void ack_action(struct drone *d, const char *action_id)
{
    send_msg(d, wire_variant("AckAction", json_pack("{s:s}", "action_id", action_id)));
}

static void do_spawn(struct drone *d, const char *action_id, const char *backend_id, const json_t *spawn)
{
    const json_t *key = json_object_get(spawn, "key");
    const json_t *kc = json_object_get(key, "key");
    const json_t *tok = json_object_get(spawn, "static_token");
    struct acquired_key ak = {0};
    struct key_deadlines dl = {0};
    struct backend *b;

    struct backend_state known;
    if (key_manager_has(d->km, backend_id) || find_backend(d, backend_id) ||
        state_store_get(d->store, backend_id, &known) == 0) {
        /* A resend of an action we applied (its ack was lost), maybe long after the backend
         * ended: never a second start. Acked, unlike Plane (§7.4), or the controller would
         * resend it for ever, ahead of newer actions. */
        log_debug("drone: spawn of %s again ignored", backend_id);
        ack_action(d, action_id);
        return;
    }
    if (!json_is_object(kc) || !json_get_str(kc, "name") || !parse_deadlines(json_object_get(key, "deadlines"), &dl) ||
        !json_is_integer(json_object_get(key, "token"))) {
        log_warn("drone: spawn action %s without a valid key, dropped", action_id);
        return;
    }
    ak.name = json_get_str(kc, "name");
    ak.namespace = json_get_str(kc, "namespace") ? json_get_str(kc, "namespace") : "";
    ak.tag = json_get_str(kc, "tag") ? json_get_str(kc, "tag") : "";
    ak.renew_at = dl.renew_at;
    ak.soft_terminate_at = dl.soft_terminate_at;
    ak.hard_terminate_at = dl.hard_terminate_at;
    ak.token = json_integer_value(json_object_get(key, "token"));
    if (dl.hard_terminate_at <= clock_epoch_ms()) {
        /* Delivered after its lease's end (a long partition, a stalled drone): the key may be
         * another backend's by now. Never started; reported as ended by its key. */
        struct backend_state st = {.status = BACKEND_TERMINATED, .last_status = BACKEND_SCHEDULED,
                                   .termination = TERMINATION_HARD, .reason = REASON_KEYEXPIRED};
        int64_t ts = clock_epoch_ms();
        int64_t id = state_store_record(d->store, backend_id, &st, ts);
        log_warn("backend %s: its key's lease ended before the spawn arrived; not started", backend_id);
        if (id > 0)
            send_event(d, id, backend_id, &st, ts);
        ack_action(d, action_id);
        return;
    }
    key_manager_register(d->km, backend_id, &dl);
    b = backend_new(&d->env, backend_id, json_object_get(spawn, "executable"), &ak,
                    json_is_string(tok) ? json_string_value(tok) : NULL);
    list_insert_tail(&d->backends, &b->node);
    ack_action(d, action_id);
    backend_start(b);
}

/* A hard terminate of a backend the drone does not know, waiting for the runtime. */
struct orphan_stop {
    struct list_node node; /* in drone->orphan_stops */
    struct drone *d;
    char *backend_id, *action_id;
    struct runtime_op *op;
};

static void orphan_stop_free(struct orphan_stop *o)
{
    list_remove(&o->node);
    free(o->backend_id);
    free(o->action_id);
    free(o);
}

static void orphan_stopped(void *arg, const struct runtime_result *res)
{
    struct orphan_stop *o = arg;
    struct drone *d = o->d;

    if (res->status < 0) {
        log_warn("backend %s: cannot make sure it is stopped: %s (the controller will ask again)", o->backend_id,
                 res->error);
    } else {
        struct backend_state st = {.status = BACKEND_TERMINATED, .last_status = BACKEND_READY, .reason = REASON_LOST};
        int64_t ts = clock_epoch_ms();
        int64_t id = state_store_record(d->store, o->backend_id, &st, ts);
        if (id > 0)
            send_event(d, id, o->backend_id, &st, ts);
        ack_action(d, o->action_id);
    }
    orphan_stop_free(o);
}

static void do_terminate(struct drone *d, const char *action_id, const char *backend_id, const json_t *t)
{
    const char *kind = json_get_str(t, "kind");
    const char *reason = json_get_str(t, "reason");
    enum termination_reason r = REASON_EXTERNAL;
    struct backend *b = find_backend(d, backend_id);

    if (!kind || (strcmp(kind, "soft") && strcmp(kind, "hard")) || !reason ||
        termination_reason_parse(reason, &r) < 0) {
        log_warn("drone: terminate action %s is malformed, dropped", action_id);
        return;
    }
    if (b) {
        backend_terminate(b, strcmp(kind, "hard") == 0 ? TERMINATION_HARD : TERMINATION_SOFT, r);
        ack_action(d, action_id);
        return;
    }
    struct backend_state cur;
    if (state_store_get(d->store, backend_id, &cur) == 0 && cur.status == BACKEND_TERMINATED) {
        ack_action(d, action_id); /* already reported as terminated */
        return;
    }
    /* Not ours (any more): make sure nothing runs, then say it is lost (§7.4). Only once the
     * runtime has answered: that frees its key. A failure is not acked, so it comes again. */
    struct orphan_stop *o = xcalloc(1, sizeof(*o));
    o->d = d;
    o->backend_id = xstrdup(backend_id);
    o->action_id = xstrdup(action_id);
    list_insert_tail(&d->orphan_stops, &o->node);
    o->op = runtime_terminate(d->rt, backend_id, true, orphan_stopped, o);
}

/* Freeze on idle (our extension): a backend that is not here has nothing to freeze or thaw. */
static void do_freeze(struct drone *d, const char *action_id, const char *backend_id, bool frozen)
{
    struct backend *b = find_backend(d, backend_id);

    if (b)
        backend_freeze(b, frozen);
    ack_action(d, action_id);
}

static void handle_message(struct drone *d, const json_t *msg)
{
    json_t *p;
    const char *tag = wire_variant_of(msg, &p);

    if (!tag) {
        log_warn("drone: dropped a message that is not a known variant");
    } else if (strcmp(tag, "Action") == 0) {
        const char *action_id = json_get_str(p, "action_id");
        const char *backend_id = json_get_str(p, "backend_id");
        json_t *ap;
        const char *kind = wire_variant_of(json_object_get(p, "action"), &ap);
        if (!action_id || !backend_id || !kind || !name_is_valid(backend_id, NULL))
            log_warn("drone: dropped a malformed action");
        else if (strcmp(kind, "Spawn") == 0)
            do_spawn(d, action_id, backend_id, ap);
        else if (strcmp(kind, "Terminate") == 0)
            do_terminate(d, action_id, backend_id, ap);
        else if (strcmp(kind, "Freeze") == 0 || strcmp(kind, "Thaw") == 0)
            do_freeze(d, action_id, backend_id, strcmp(kind, "Freeze") == 0);
        else
            log_warn("drone: dropped an action of unknown kind '%s'", kind);
    } else if (strcmp(tag, "AckEvent") == 0) {
        int64_t id;
        if (json_get_int(p, "event_id", 0, &id) && id > 0)
            state_store_ack(d->store, id);
    } else if (strcmp(tag, "RenewKeyResponse") == 0) {
        const char *backend = json_get_str(p, "backend");
        struct key_deadlines dl;
        if (backend && parse_deadlines(json_object_get(p, "deadlines"), &dl))
            key_manager_update(d->km, backend, &dl);
        else
            log_info("drone: key renewal for %s refused", backend ? backend : "?");
    } else {
        log_warn("drone: dropped a '%s' message", tag);
    }
}

/* ---- the connection ---- */

static void heartbeat_cb(uv_timer_t *t)
{
    struct drone *d = t->data;

    send_msg(d, wire_variant("Heartbeat", json_pack("{s:I}", "local_time", (json_int_t)clock_epoch_ms())));
}

static void ws_open(void *arg)
{
    struct drone *d = arg;
    json_t *hs = wire_handshake(d->name);
    char *text = wire_text(hs);

    json_decref(hs);
    ws_client_send_text(d->ws, text, strlen(text));
    free(text);
}

static void reconnect_cb(uv_timer_t *t)
{
    connect_now(t->data);
}

static void cleanup_cb(uv_timer_t *t)
{
    struct drone *d = t->data;

    runtime_cleanup(d->rt, d->cleanup_min_age_ms);
}

/* The connection is gone (or unusable): forget it and try again after the backoff. */
static void lost(struct drone *d, const char *reason)
{
    if (d->connected)
        log_warn("drone %s: lost the controller: %s", d->name, reason);
    else
        log_info("drone %s: cannot reach the controller: %s", d->name, reason);
    if (d->connected && uv_now(d->loop) - d->connected_at >= STABLE_CONNECTION_MS)
        d->backoff_ms = BACKOFF_FIRST_MS;
    bool was_connected = d->connected;
    d->connected = false;
    key_manager_set_connected(d->km, false);
    uv_timer_stop(&d->heartbeat);
    ws_client_free(d->ws);
    d->ws = NULL;
    if (d->stopping)
        return;
    /* Another controller, if there are several: at once after a working connection ended. */
    controller_urls_next(&d->urls);
    uv_timer_start(&d->reconnect, reconnect_cb, was_connected && d->urls.n > 1 ? 0 : d->backoff_ms, 0);
    d->backoff_ms = d->backoff_ms * 11 / 10 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : d->backoff_ms * 11 / 10;
}

static void ws_text(void *arg, const char *msg, size_t len)
{
    struct drone *d = arg;
    json_error_t jerr;
    json_t *j = json_loadb(msg, len, 0, &jerr);

    if (!j) {
        log_warn("drone: dropped a message that is not JSON: %s", jerr.text);
        return;
    }
    if (!d->connected) {
        const char *name = wire_handshake_name(j);
        if (!name) {
            json_decref(j);
            lost(d, "bad handshake");
            return;
        }
        log_info("drone %s: connected to controller %s", d->name, name);
        d->connected = true;
        d->connected_at = uv_now(d->loop);
        uv_timer_start(&d->heartbeat, heartbeat_cb, 0, HEARTBEAT_MS);
        key_manager_set_connected(d->km, true);
        state_store_each_event(d->store, replay_event, d);
        json_decref(j);
        return;
    }
    handle_message(d, j);
    json_decref(j);
}

static void ws_closed(void *arg, const char *reason)
{
    lost(arg, reason);
}

static const struct ws_client_handler ws_handler = {.on_open = ws_open, .on_text = ws_text, .on_close = ws_closed};

static void connect_now(struct drone *d)
{
    struct buf err = BUF_INIT;

    if (d->ws || d->stopping)
        return;
    d->ws = ws_client_connect(d->loop, CONTROLLER_URL_SOCKET(&d->urls), CONTROLLER_URL_BEARER(&d->urls), &ws_handler, d,
                              &err);
    if (!d->ws) {
        log_error("drone: %s", buf_cstr(&err));
        uv_timer_start(&d->reconnect, reconnect_cb, BACKOFF_MAX_MS, 0);
    }
    buf_release(&err);
}

/* ---- start and stop ---- */

/* Frees what the drone owns; its handles must be closed already. */
static void drone_free(struct drone *d)
{
    metrics_free(d->metrics);
    state_store_close(d->store);
    controller_urls_release(&d->urls);
    free(d->name);
    free(d->cluster);
    free(d->pool);
    free(d->ip);
    free(d);
}

/*
 * §13.1: a backend the store says was running when the drone last stopped.
 * It goes through the state machine like any other: hard-terminating, the
 * runtime asked until it succeeds (with backoff, never given up), and
 * terminated only once the runtime says it is gone. Plane records
 * terminated after at most 10 failed attempts, which frees the key at the
 * controller while the backend may still run; and it derives that state
 * from the stored one (termination and reason null), where ours says hard
 * and keyexpired.
 */
static void adopt_leftover(void *arg, const char *backend_id, const struct backend_state *st)
{
    struct drone *d = arg;
    struct backend *b = backend_new(&d->env, backend_id, NULL, NULL, NULL);

    log_info("backend %s: left %s by a previous run, terminating", backend_id, backend_status_name(st->status));
    backend_adopt(b, st);
    list_insert_tail(&d->backends, &b->node);
}

/* Adopts them all first: terminating writes to the store, which must not change under the reading. */
static int terminate_leftovers(struct drone *d)
{
    struct list_node *pos, *tmp;

    if (state_store_each_active(d->store, adopt_leftover, d) < 0)
        return -EIO;
    list_for_each_safe(pos, tmp, &d->backends)
        backend_terminate(list_entry(pos, struct backend, node), TERMINATION_HARD, REASON_KEYEXPIRED);
    return 0;
}

static int build_socket_urls(struct drone *d, const char *controller_url, struct buf *err)
{
    char *pool = url_encode(d->pool);
    /* a cluster name is a host[:port]: safe in a path as it is */
    char *path = xasprintf("/ctrl/c/%s/drone-socket%s%s", d->cluster, *d->pool ? "?pool=" : "", *d->pool ? pool : "");
    int rc = controller_urls_parse(&d->urls, controller_url, path, err);

    free(path);
    free(pool);
    return rc;
}

int drone_start(struct drone **out, uv_loop_t *loop, const struct drone_config *cfg, struct buf *err)
{
    struct drone *d = xcalloc(1, sizeof(*d));
    struct runtime_config rc = cfg->runtime_config;
    struct key_manager_hooks hooks = {.renew = key_renew, .expire = key_expire, .deadlines = key_deadlines, .arg = d};
    int rc_;

    *out = NULL;
    d->loop = loop;
    d->name = cfg->name ? xstrdup(cfg->name) : name_random("dr");
    d->cluster = xstrdup(cfg->cluster);
    d->pool = xstrdup(cfg->pool ? cfg->pool : "");
    d->ip = xstrdup(cfg->ip ? cfg->ip : "127.0.0.1");
    d->backoff_ms = BACKOFF_FIRST_MS;
    list_init(&d->backends);
    list_init(&d->orphan_stops);
    if ((rc_ = build_socket_urls(d, cfg->controller_url, err)) < 0)
        goto fail;
    if ((rc_ = state_store_open(&d->store, cfg->db_path, err)) < 0)
        goto fail;
    rc.loop = loop;
    rc.on_exit = on_exit_event;
    rc.on_metrics = on_metrics;
    rc.cb_arg = d;
    if ((rc_ = runtime_open(&d->rt, cfg->runtime, &rc, err)) < 0)
        goto fail;
    d->km = key_manager_new(loop, &hooks);
    struct buf ferr = BUF_INIT;
    if (!(d->fence = fence_start(&ferr)))
        log_error("drone: %s; backends will not be stopped at their key deadlines while the drone is stalled",
                  buf_cstr(&ferr));
    buf_release(&ferr);
    d->env.loop = loop;
    d->env.rt = d->rt;
    d->env.store = d->store;
    d->env.ip = d->ip;
    d->env.on_state = on_state;
    d->env.arg = d;
    setup_metrics(d);
    if (cfg->metrics_port) {
        d->http = http_server_new(loop, metrics_handler, d);
        if ((rc_ = http_server_listen(d->http, "127.0.0.1", cfg->metrics_port, err)) < 0)
            goto fail;
    }
    if (terminate_leftovers(d) < 0) {
        buf_printf(err, "cannot read the state store");
        rc_ = -EIO;
        goto fail;
    }
    uv_timer_init(loop, &d->heartbeat);
    uv_timer_init(loop, &d->reconnect);
    uv_timer_init(loop, &d->cleanup);
    d->heartbeat.data = d->reconnect.data = d->cleanup.data = d;
    d->open_handles = 3;
    d->cleanup_min_age_ms = cfg->cleanup_min_age_ms;
    uv_timer_start(&d->cleanup, cleanup_cb, CLEANUP_MS, CLEANUP_MS);
    log_info("drone %s: cluster %s, runtime %s, backends at %s", d->name, d->cluster, runtime_name(d->rt), d->ip);
    /* Plane waits 1 s before the first attempt; there is no reason to. */
    connect_now(d);
    *out = d;
    return 0;
fail:
    if (d->http)
        http_server_close(d->http);
    struct list_node *pos, *tmp;
    list_for_each_safe(pos, tmp, &d->backends)
        backend_free(list_entry(pos, struct backend, node));
    if (d->km)
        key_manager_free(d->km);
    fence_detach(d->fence);
    if (d->rt)
        runtime_close(d->rt, NULL, NULL);
    drone_free(d);
    return rc_;
}

const char *drone_name(const struct drone *d)
{
    return d->name;
}

static void handle_closed(uv_handle_t *h)
{
    struct drone *d = h->data;

    if (--d->open_handles == 0)
        drone_free(d);
}

void drone_stop(struct drone *d)
{
    struct list_node *pos, *tmp;

    if (!d || d->stopping)
        return;
    d->stopping = true;
    if (d->http)
        http_server_close(d->http);
    d->http = NULL;
    if (d->ws)
        ws_client_free(d->ws);
    d->ws = NULL;
    d->connected = false;
    list_for_each_safe(pos, tmp, &d->backends)
        backend_free(list_entry(pos, struct backend, node));
    list_for_each_safe(pos, tmp, &d->orphan_stops) {
        struct orphan_stop *o = list_entry(pos, struct orphan_stop, node);
        runtime_op_cancel(o->op);
        orphan_stop_free(o);
    }
    key_manager_free(d->km);
    d->km = NULL;
    fence_detach(d->fence);
    d->fence = NULL;
    runtime_close(d->rt, NULL, NULL);
    uv_close((uv_handle_t *)&d->heartbeat, handle_closed);
    uv_close((uv_handle_t *)&d->reconnect, handle_closed);
    uv_close((uv_handle_t *)&d->cleanup, handle_closed);
}
