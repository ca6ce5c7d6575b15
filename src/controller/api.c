/* SPDX-License-Identifier: MIT */
/*
 * api.c - the controller's HTTP routes (spec §5.1): status and health,
 * cluster state, drain, terminate, revoke, backend status and the
 * server-sent status stream, CORS on /pub, and dispatch to connect, the
 * WebSocket endpoints and the dashboard. Errors carry the ApiError JSON of §4.8.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/backend_state.h"
#include "../common/json_util.h"
#include "../common/log.h"
#include "../common/names.h"
#include "../common/version.h"
#include "../common/wire.h"
#include "../common/xalloc.h"
#include "controller.h"
#include "dashboard.h"
#include "forward_auth.h"

#define SSE_KEEPALIVE_MS 15000
#define CORS_HEADERS "Access-Control-Allow-Origin: *\r\n"

void api_error(struct http_request *req, int status, const char *kind, const char *message)
{
    char id[NAME_RANDOM_LEN + 1];
    bool pub = strncmp(req->path, "/pub/", 5) == 0;

    random_alnum(id, NAME_RANDOM_LEN);
    http_respond_json(req, status, json_pack("{s:s, s:s, s:s}", "id", id, "kind", kind, "message", message),
                      pub ? CORS_HEADERS : NULL);
}

void api_store_error(struct http_request *req, int rc, const char *message)
{
    if (rc == -ENOTCONN)
        api_error(req, 503, "DatabaseError", "Database unavailable.");
    else
        api_error(req, 500, "Other", message);
}

static void not_found(struct http_request *req)
{
    http_respond(req, 404, NULL, "", 0, NULL);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decodes a path segment in place ('+' stays '+'). */
static void decode_segment(char *s)
{
    char *o = s;

    for (; *s; s++) {
        if (s[0] == '%' && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
            *o++ = (char)(hexval(s[1]) * 16 + hexval(s[2]));
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

/* Splits path into at most max decoded segments; returns how many (max + 1 if more). */
static int split(char *path, char **seg, int max)
{
    int n = 0;

    for (char *save = NULL, *t = strtok_r(path, "/", &save); t; t = strtok_r(NULL, "/", &save)) {
        if (n == max)
            return max + 1;
        decode_segment(t);
        seg[n++] = t;
    }
    return n;
}

static bool method_is(const struct http_request *req, const char *m)
{
    return strcmp(req->method, m) == 0;
}

/* ---- simple routes ---- */

static void status_route(struct controller *c, struct http_request *req, bool pub)
{
    int rc = STORE_CALL(c->store, ping);
    if (rc < 0) {
        api_store_error(req, rc, "Database health check failed");
        return;
    }
    if (pub)
        http_respond_json(req, 200, json_pack("{s:s}", "status", "ok"), CORS_HEADERS);
    else
        http_respond_json(req, 200,
                          json_pack("{s:s, s:s, s:s}", "status", "ok", "version", PLANE_VERSION, "hash",
                                    plane_git_hash()),
                          NULL);
}

static void cluster_state_route(struct controller *c, struct http_request *req, const char *cluster)
{
    json_t *state;
    int rc = STORE_CALL(c->store, cluster_state, cluster, controller_now(), &state);

    if (rc < 0) {
        api_store_error(req, rc, "Database error");
        return;
    }
    http_respond_json(req, 200, state, NULL);
}

static void drain_route(struct controller *c, struct http_request *req, const char *cluster, const char *drone)
{
    bool updated = false;
    int rc = STORE_CALL(c->store, drone_drain, cluster, drone, &updated);

    if (rc == -ENOENT)
        api_error(req, 404, "NotFound", "Drone does not exist");
    else if (rc < 0)
        api_store_error(req, rc, "Database error");
    else
        http_respond_json(req, 200, json_pack("{s:b}", "updated", updated), NULL);
    if (rc == 0 && updated)
        dashboard_drones_changed(c);
}

static void terminate_route(struct controller *c, struct http_request *req, const char *backend_id, bool hard)
{
    struct backend_row row;
    int rc = STORE_CALL(c->store, backend_get, backend_id, &row);

    if (rc == -ENOENT) {
        api_error(req, 404, "NotFound", "Backend does not exist");
        return;
    }
    if (rc == 0)
        rc = controller_queue_action(
            c, backend_id, row.drone_id,
            wire_variant("Terminate", json_pack("{s:s, s:s}", "kind", hard ? "hard" : "soft", "reason", "external")));
    if (rc < 0)
        api_store_error(req, rc, "Database error");
    else
        http_respond_json(req, 200, json_null(), NULL);
    backend_row_release(&row);
}

/* Parses a JSON body the way Plane's framework does: 415, 400, then the caller checks shape (422). */
json_t *api_json_body(struct http_request *req)
{
    const char *ct = http_header(req, "content-type");
    json_error_t jerr;
    json_t *j;

    if (!ct || strncasecmp(ct, "application/json", 16) != 0) {
        static const char msg[] = "Expected request with `Content-Type: application/json`";
        http_respond(req, 415, "text/plain; charset=utf-8", msg, sizeof(msg) - 1, NULL);
        return NULL;
    }
    j = json_loadb(req->body.data ? req->body.data : "", req->body.len, JSON_DECODE_ANY, &jerr);
    if (!j) {
        char msg[256];
        int n = snprintf(msg, sizeof(msg), "Failed to parse the request body as JSON: %s", jerr.text);
        http_respond(req, 400, "text/plain; charset=utf-8", msg, (size_t)n, NULL);
    }
    return j;
}

void api_unprocessable(struct http_request *req, const char *what)
{
    char msg[256];
    int n = snprintf(msg, sizeof(msg), "Failed to deserialize the JSON body into the target type: %s", what);

    http_respond(req, 422, "text/plain; charset=utf-8", msg, (size_t)n, NULL);
}

static void revoke_route(struct controller *c, struct http_request *req)
{
    json_t *j = api_json_body(req);
    const char *backend, *user;
    int rc;

    if (!j)
        return;
    backend = json_get_str(j, "backend_id");
    user = json_get_str(j, "user");
    if (!json_is_object(j) || !backend || !user)
        api_unprocessable(req, "expected {\"backend_id\":string,\"user\":string}");
    else if ((rc = STORE_CALL(c->store, revoke, backend, user)) < 0)
        api_store_error(req, rc, "Failed to revoke token");
    else
        http_respond_json(req, 200, json_string("Token revoked successfully"), NULL);
    json_decref(j);
}

static void backend_status_route(struct controller *c, struct http_request *req, const char *backend_id)
{
    struct backend_row row;
    int rc = STORE_CALL(c->store, backend_get, backend_id, &row);

    if (rc == -ENOENT)
        api_error(req, 404, "NotFound", "Backend does not exist");
    else if (rc < 0)
        api_store_error(req, rc, "Database error");
    else
        http_respond_json(req, 200, backend_status_entry(&row.state, row.last_status_time), CORS_HEADERS);
    backend_row_release(&row);
}

/* ---- the status stream (§5.2.4) ---- */

struct stream {
    struct list_node node; /* in controller->streams */
    struct controller *c;
    struct http_request *req;
    struct event_sub *sub;
    uv_timer_t keepalive;
    int last_sent;  /* status number of the last entry sent, 0 for none */
    int skip_upto;  /* Last-Event-ID: entries up to this status are skipped */
    bool history_done;
    bool ended;      /* stream_end has run */
    json_t *pending; /* live events that arrived while reading the history */
    char *backend_id; /* owned */
};

static void stream_closed(uv_handle_t *h)
{
    struct stream *s = h->data;

    json_decref(s->pending);
    free(s->backend_id);
    free(s);
}

/* Once, whether the client went away or the controller stops first. */
static void stream_end(struct stream *s)
{
    if (s->ended)
        return;
    s->ended = true;
    /* The request may outlive s (the controller stopping): it must not call back into it. */
    s->req->on_abort = NULL;
    s->req->abort_arg = NULL;
    list_remove(&s->node);
    events_unsubscribe(s->sub);
    s->sub = NULL;
    uv_timer_stop(&s->keepalive);
    uv_close((uv_handle_t *)&s->keepalive, stream_closed);
}

static void stream_abort(void *arg)
{
    stream_end(arg);
}

static void stream_send(struct stream *s, const struct backend_state *st, int64_t time)
{
    json_t *entry;
    char *text, *line;

    if ((int)st->status <= s->last_sent || (int)st->status <= s->skip_upto)
        return;
    s->last_sent = (int)st->status;
    entry = backend_status_entry(st, time);
    text = wire_text(entry);
    /* Exactly this shape: no space after the colons, LF only (§5.2.4). */
    line = xasprintf("data:%s\nid:%s\n\n", text, backend_status_name(st->status));
    http_stream_write(s->req, line, strlen(line));
    uv_timer_again(&s->keepalive);
    free(line);
    free(text);
    json_decref(entry);
}

static void stream_history(void *arg, const struct backend_state *st, int64_t time)
{
    stream_send(arg, st, time);
}

static void stream_event(void *arg, enum event_kind kind, const char *key, const json_t *payload)
{
    struct stream *s = arg;
    struct backend_state st;
    struct buf err = BUF_INIT;

    (void)kind;
    (void)key;
    if (!s->history_done) {
        json_array_append((json_t *)s->pending, (json_t *)payload);
        return;
    }
    if (backend_state_from_json(json_object_get(payload, "state"), &st, &err) == 0)
        stream_send(s, &st, json_integer_value(json_object_get(payload, "time")));
    buf_release(&err);
}

static void stream_keepalive(uv_timer_t *t)
{
    struct stream *s = t->data;

    http_stream_write(s->req, ":\n\n", 3);
}

static void status_stream_route(struct controller *c, struct http_request *req, const char *backend_id)
{
    struct stream *s = xcalloc(1, sizeof(*s));
    const char *last = http_header(req, "last-event-id");
    enum backend_status ls;

    s->c = c;
    s->req = req;
    s->backend_id = xstrdup(backend_id);
    s->pending = json_array();
    if (last) {
        char *trimmed = xstrdup(last);
        char *p = trimmed;
        while (*p == ' ' || *p == '\t')
            p++;
        for (char *e = p + strlen(p); e > p && (e[-1] == ' ' || e[-1] == '\t'); e--)
            e[-1] = '\0';
        if (backend_status_parse(p, &ls) == 0)
            s->skip_upto = (int)ls;
        free(trimmed);
    }
    /* Subscribe first, then read the history, so nothing falls between (§5.2.4). */
    s->sub = events_subscribe(c->events, EVENT_BACKEND_STATE, backend_id, stream_event, s);
    http_stream_start(req, 200, "text/event-stream", "Cache-Control: no-cache\r\n" CORS_HEADERS);
    req->on_abort = stream_abort;
    req->abort_arg = s;
    uv_timer_init(c->loop, &s->keepalive);
    s->keepalive.data = s;
    uv_timer_start(&s->keepalive, stream_keepalive, SSE_KEEPALIVE_MS, SSE_KEEPALIVE_MS);
    list_insert_tail(&c->streams, &s->node);
    if (STORE_CALL(c->store, backend_history, backend_id, stream_history, s) < 0)
        log_warn("status stream %s: cannot read the history", backend_id);
    s->history_done = true;
    for (size_t i = 0; i < json_array_size(s->pending); i++)
        stream_event(s, EVENT_BACKEND_STATE, backend_id, json_array_get(s->pending, i));
    json_array_clear(s->pending);
}

void api_streams_resync(struct controller *c)
{
    struct list_node *pos, *tmp;

    /* Entries already sent are skipped: the history only fills what was missed. */
    list_for_each_safe(pos, tmp, &c->streams) {
        struct stream *s = list_entry(pos, struct stream, node);
        if (s->history_done)
            STORE_CALL(c->store, backend_history, s->backend_id, stream_history, s);
    }
    dashboard_resync(c);
}

void api_streams_close(struct controller *c)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &c->streams)
        stream_end(list_entry(pos, struct stream, node));
    dashboard_close(c);
}

static void metrics_route(struct controller *c, struct http_request *req)
{
    static const char *const statuses[] = {"scheduled", "loading", "starting", "waiting", "ready",
                                           "terminating", "hard-terminating", "terminated"};
    struct buf out = BUF_INIT;
    struct list_node *pos, *tmp;
    json_t *counts = NULL;
    int drones = 0, proxies = 0;

    int rc = STORE_CALL(c->store, backend_counts, &counts);
    if (rc < 0) {
        api_store_error(req, rc, "Database error");
        return;
    }
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        char labels[64];
        snprintf(labels, sizeof(labels), "status=\"%s\"", statuses[i]);
        metrics_gauge(&out, "plane_backends", labels, (double)json_integer_value(json_object_get(counts, statuses[i])),
                      i == 0 ? "Backends by status (all time, from the store)." : NULL);
    }
    json_decref(counts);
    list_for_each_safe(pos, tmp, &c->sessions) {
        if (sockets_is_drone(pos))
            drones++;
        else
            proxies++;
    }
    metrics_gauge(&out, "plane_connected_drones", NULL, drones, "Drones connected to this controller.");
    metrics_gauge(&out, "plane_connected_proxies", NULL, proxies, "Proxies connected to this controller.");
    metrics_render(c->metrics, &out);
    http_respond(req, 200, "text/plain; version=0.0.4", out.data ? out.data : "", out.len, NULL);
    buf_release(&out);
}

/* ---- dispatch ---- */

static void dispatch(struct controller *c, struct http_request *req);

/* A /ctrl request waiting for the forward-auth answer (§5.3). */
struct auth_wait {
    struct controller *c;
    struct http_request *req;
    struct forward_auth_check *check;
};

static void auth_abort(void *arg)
{
    struct auth_wait *aw = arg;

    forward_auth_cancel(aw->check);
    free(aw);
}

static void auth_done(void *arg, enum forward_auth_verdict v)
{
    struct auth_wait *aw = arg;
    struct http_request *req = aw->req;
    struct controller *c = aw->c;

    free(aw);
    req->on_abort = NULL;
    req->abort_arg = NULL;
    if (v == FORWARD_AUTH_ALLOW)
        dispatch(c, req);
    else if (v == FORWARD_AUTH_DENY)
        http_respond(req, 401, NULL, "Unauthorized", 12, NULL);
    else
        http_respond(req, 502, NULL, "Error forwarding auth.", 22, NULL);
}

/*
 * Whether forward auth guards req, decided on the same decoded segments as
 * dispatch(), so no spelling of the path ("//ctrl", "/%63trl") can reach a
 * guarded route around it: /ctrl routes (*ask stays NULL: the check strips
 * "/ctrl" itself), and the dashboard's (*ask: the canonical path to ask
 * about, "/dashboard/...", owned by the caller).
 */
static bool is_guarded(const struct http_request *req, char **ask)
{
    char *path = xstrdup(req->path);
    char *seg[8];
    int n = split(path, seg, 7);
    bool guarded = n >= 1 && (strcmp(seg[0], "ctrl") == 0 || strcmp(seg[0], "dashboard") == 0);

    *ask = NULL;
    if (guarded && strcmp(seg[0], "dashboard") == 0)
        *ask = dashboard_auth_path(seg, n < 7 ? n : 7);
    free(path);
    return guarded;
}

void api_handle(void *arg, struct http_request *req)
{
    struct controller *c = arg;
    char *ask = NULL;

    if (c->forward_auth && is_guarded(req, &ask)) {
        struct auth_wait *aw = xcalloc(1, sizeof(*aw));
        aw->c = c;
        aw->req = req;
        req->on_abort = auth_abort;
        req->abort_arg = aw;
        aw->check = ask ? forward_auth_start_as(c->forward_auth, req, req->method, ask, auth_done, aw)
                        : forward_auth_start(c->forward_auth, req, auth_done, aw);
        free(ask);
        return;
    }
    dispatch(c, req);
}

static void dispatch(struct controller *c, struct http_request *req)
{
    char *path = xstrdup(req->path);
    char *seg[8];
    int n = split(path, seg, 7);
    bool get = method_is(req, "GET"), post = method_is(req, "POST");

    if (n >= 1 && strcmp(seg[0], "pub") == 0 && method_is(req, "OPTIONS")) {
        /* CORS preflight (§5.4). */
        http_respond(req, 200, NULL, "", 0,
                     CORS_HEADERS "Access-Control-Allow-Methods: GET, POST\r\n"
                                  "Access-Control-Allow-Headers: content-type\r\n");
    } else if (n == 2 && strcmp(seg[0], "pub") == 0 && strcmp(seg[1], "health") == 0 && get) {
        status_route(c, req, true);
    } else if (n == 4 && strcmp(seg[0], "pub") == 0 && strcmp(seg[1], "b") == 0 && strcmp(seg[3], "status") == 0 &&
               get) {
        backend_status_route(c, req, seg[2]);
    } else if (n == 4 && strcmp(seg[0], "pub") == 0 && strcmp(seg[1], "b") == 0 &&
               strcmp(seg[3], "status-stream") == 0 && get) {
        status_stream_route(c, req, seg[2]);
    } else if (n == 1 && strcmp(seg[0], "metrics") == 0 && get) {
        metrics_route(c, req);
    } else if (n == 2 && strcmp(seg[0], "ctrl") == 0 && strcmp(seg[1], "status") == 0 && get) {
        status_route(c, req, false);
    } else if (n == 2 && strcmp(seg[0], "ctrl") == 0 && strcmp(seg[1], "connect") == 0 && post) {
        api_connect(c, req);
    } else if (n == 4 && strcmp(seg[0], "ctrl") == 0 && strcmp(seg[1], "c") == 0 && strcmp(seg[3], "state") == 0 &&
               get) {
        cluster_state_route(c, req, seg[2]);
    } else if (n == 4 && strcmp(seg[0], "ctrl") == 0 && strcmp(seg[1], "c") == 0 &&
               (strcmp(seg[3], "drone-socket") == 0 || strcmp(seg[3], "proxy-socket") == 0) && get) {
        sockets_accept(c, req, seg[2], strcmp(seg[3], "drone-socket") == 0 ? NODE_DRONE : NODE_PROXY);
    } else if (n == 2 && strcmp(seg[0], "ctrl") == 0 && strcmp(seg[1], "dns-socket") == 0 && get) {
        sockets_accept(c, req, NULL, NODE_DNS);
    } else if (n == 6 && strcmp(seg[0], "ctrl") == 0 && strcmp(seg[1], "c") == 0 && strcmp(seg[3], "d") == 0 &&
               strcmp(seg[5], "drain") == 0 && post) {
        drain_route(c, req, seg[2], seg[4]);
    } else if (n == 3 && strcmp(seg[0], "ctrl") == 0 && strcmp(seg[1], "b") == 0 && strcmp(seg[2], "revoke") == 0 &&
               post) {
        revoke_route(c, req);
    } else if (n == 4 && strcmp(seg[0], "ctrl") == 0 && strcmp(seg[1], "b") == 0 &&
               (strcmp(seg[3], "soft-terminate") == 0 || strcmp(seg[3], "hard-terminate") == 0) && post) {
        terminate_route(c, req, seg[2], strcmp(seg[3], "hard-terminate") == 0);
    } else if (n >= 1 && strcmp(seg[0], "dashboard") == 0) {
        dashboard_route(c, req, seg + 1, n - 1);
    } else {
        not_found(req);
    }
    free(path);
}
