/* SPDX-License-Identifier: MIT */
/*
 * dashboard.c - the operators' page and its event stream (see dashboard.h).
 *
 * One hub per controller serves every open stream. While at least one page
 * is open it holds a model of what the pages show (drones by id, backends
 * by id, exactly as last sent) and listens to every backend state event.
 * An event only marks its backend dirty; every DASHBOARD_FLUSH_MS the dirty
 * backends are read back from the store in one query, compared with the
 * model, and the rows that really changed go out to every page as one
 * `update` event. So a burst of state changes costs one query and one
 * message per flush, and a page never receives the whole table again after
 * its first `snapshot`. Drones, heartbeats and idle times change without
 * events: they are read again every DASHBOARD_REFRESH_MS and diffed the
 * same way. With no page open the hub keeps nothing and listens to nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "controller.h"
#include "dashboard.h"
#include "forward_auth.h"

/*
 * The page's files, in the binary's read-only data; each is followed by a
 * NUL so it could be read as a string too. The paths are relative to the
 * directory make runs in, the repository's root.
 */
#define DASHBOARD_ASSET(sym, file)                                                                                 \
    __asm__(".pushsection .rodata\n"                                                                               \
            ".globl " #sym "\n.hidden " #sym "\n" #sym ":\n"                                                       \
            ".incbin \"" file "\"\n"                                                                               \
            ".globl " #sym "_end\n.hidden " #sym "_end\n" #sym "_end:\n"                                           \
            ".byte 0\n"                                                                                            \
            ".popsection\n")
DASHBOARD_ASSET(dashboard_html, "src/controller/dashboard/index.html");
DASHBOARD_ASSET(dashboard_js, "src/controller/dashboard/app.js");
DASHBOARD_ASSET(dashboard_css, "src/controller/dashboard/app.css");
extern const char dashboard_html[], dashboard_html_end[];
extern const char dashboard_js[], dashboard_js_end[];
extern const char dashboard_css[], dashboard_css_end[];

/* The page may load only its own script, style and stream, and may not be framed (its buttons act). */
#define PAGE_HEADERS                                                                                               \
    "Cache-Control: no-cache\r\n"                                                                                  \
    "X-Content-Type-Options: nosniff\r\n"                                                                          \
    "X-Frame-Options: DENY\r\n"                                                                                    \
    "Referrer-Policy: no-referrer\r\n"                                                                             \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "        \
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"

struct dashboard {
    struct controller *c;      /* borrowed; outlives the hub's use of it */
    struct list_node clients;  /* of struct dash_client: streaming, or waiting for the control check */
    int streaming;             /* clients with an open stream */
    struct event_sub *sub;     /* while the model is loaded */
    json_t *backends;          /* backend id -> row as last sent; NULL while nobody looks */
    json_t *drones;            /* drone id (decimal) -> row as last sent */
    json_t *dirty;             /* backend ids to read again at the next flush: id -> true */
    uv_timer_t flush_timer, refresh_timer, keepalive_timer;
    int open_handles;
    bool broadcasting;         /* inside a loop over clients: a client leaving must not unload the model */
    bool closing;
};

struct dash_client {
    struct list_node node;     /* in dashboard->clients */
    struct dashboard *d;
    struct http_request *req;
    struct forward_auth_check *check; /* may the viewer POST? while under way */
    bool control;              /* the page offers terminate and drain */
    bool streaming;
};

static struct dashboard *hub_get(struct controller *c);

/* ---- the model ---- */

static void hub_unload(struct dashboard *d)
{
    events_unsubscribe(d->sub);
    d->sub = NULL;
    json_decref(d->backends);
    json_decref(d->drones);
    d->backends = d->drones = NULL;
    json_object_clear(d->dirty);
    uv_timer_stop(&d->flush_timer);
    uv_timer_stop(&d->refresh_timer);
    uv_timer_stop(&d->keepalive_timer);
}

static void flush_cb(uv_timer_t *t);

static void backend_event(void *arg, enum event_kind kind, const char *key, const json_t *payload)
{
    struct dashboard *d = arg;

    (void)kind;
    (void)payload;
    if (!key)
        return;
    json_object_set_new(d->dirty, key, json_true());
    if (!uv_is_active((uv_handle_t *)&d->flush_timer))
        uv_timer_start(&d->flush_timer, flush_cb, DASHBOARD_FLUSH_MS, 0);
}

/* rows (objects with an "id") as an object keyed by id; numeric ids as decimal strings. New reference. */
static json_t *by_id(json_t *rows, bool numeric)
{
    json_t *map = json_object();
    size_t i;
    json_t *row;

    json_array_foreach(rows, i, row) {
        const json_t *id = json_object_get(row, "id");
        char num[32];
        if (numeric && json_is_integer(id)) {
            snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(id));
            json_object_set(map, num, row);
        } else if (!numeric && json_is_string(id)) {
            json_object_set(map, json_string_value(id), row);
        }
    }
    return map;
}

static void refresh_cb(uv_timer_t *t);
static void keepalive_cb(uv_timer_t *t);

/* Reads everything the pages show; subscribes first so no change falls between. 0 or -EIO. */
static int hub_load(struct dashboard *d)
{
    json_t *backends = NULL, *drones = NULL;

    d->sub = events_subscribe(d->c->events, EVENT_BACKEND_STATE, NULL, backend_event, d);
    if (STORE_CALL(d->c->store, backend_overview, NULL, DASHBOARD_TERMINATED_SHOWN, &backends) < 0 ||
        STORE_CALL(d->c->store, drone_overview, &drones) < 0) {
        json_decref(backends);
        hub_unload(d);
        return -EIO;
    }
    d->backends = by_id(backends, false);
    d->drones = by_id(drones, true);
    json_decref(backends);
    json_decref(drones);
    uv_timer_start(&d->refresh_timer, refresh_cb, DASHBOARD_REFRESH_MS, DASHBOARD_REFRESH_MS);
    uv_timer_start(&d->keepalive_timer, keepalive_cb, DASHBOARD_KEEPALIVE_MS, DASHBOARD_KEEPALIVE_MS);
    return 0;
}

static bool row_terminated(const json_t *row)
{
    const char *status = json_string_value(json_object_get(json_object_get(row, "state"), "status"));

    return status && strcmp(status, "terminated") == 0;
}

static int by_time(const void *a, const void *b)
{
    json_int_t x = json_integer_value(json_object_get(*(json_t *const *)a, "last_status_time"));
    json_int_t y = json_integer_value(json_object_get(*(json_t *const *)b, "last_status_time"));

    return x < y ? -1 : x > y;
}

/* Drops the oldest terminated backends past DASHBOARD_TERMINATED_SHOWN; their ids go to removed. */
static void prune(struct dashboard *d, json_t *removed)
{
    const char *id;
    json_t *row, **ended;
    size_t n = 0, k = 0;

    json_object_foreach(d->backends, id, row) {
        n += row_terminated(row);
    }
    if (n <= DASHBOARD_TERMINATED_SHOWN)
        return;
    ended = xcalloc(n, sizeof(*ended));
    json_object_foreach(d->backends, id, row) {
        if (row_terminated(row))
            ended[k++] = row;
    }
    qsort(ended, n, sizeof(*ended), by_time);
    for (k = 0; k < n - DASHBOARD_TERMINATED_SHOWN; k++)
        json_array_append(removed, json_object_get(ended[k], "id"));
    for (k = 0; k < json_array_size(removed); k++)
        json_object_del(d->backends, json_string_value(json_array_get(removed, k)));
    free(ended);
}

/*
 * Puts rows (read again from the store) into model, keyed by "id"; those
 * that differ from what was sent go to changed. A terminated backend's key
 * is no longer in the store's key table: the one already shown stays.
 */
static void merge(json_t *model, json_t *rows, bool numeric, json_t *changed)
{
    json_t *fresh = by_id(rows, numeric);
    const char *id;
    json_t *row;

    json_object_foreach(fresh, id, row) {
        json_t *old = json_object_get(model, id);
        if (old && json_is_null(json_object_get(row, "key")) && json_object_get(old, "key"))
            json_object_set(row, "key", json_object_get(old, "key"));
        if (old && json_equal(old, row))
            continue;
        json_object_set(model, id, row);
        json_array_append(changed, row);
    }
    json_decref(fresh);
}

/* ---- streams ---- */

static void client_free(struct dash_client *cl)
{
    list_remove(&cl->node);
    free(cl);
}

/* A client that is gone: it stops counting; the last one out unloads the model. */
static void client_gone(struct dash_client *cl)
{
    struct dashboard *d = cl->d;

    if (cl->streaming)
        d->streaming--;
    forward_auth_cancel(cl->check);
    client_free(cl);
    if (d->streaming == 0 && !d->broadcasting && d->backends)
        hub_unload(d);
}

static void client_abort(void *arg)
{
    client_gone(arg);
}

/* One event to one client. A write that fails means the client is going: on_abort follows. */
static void client_send(struct http_request *req, const char *event, const char *data)
{
    char *msg = xasprintf("event:%s\ndata:%s\n\n", event, data);

    http_stream_write(req, msg, strlen(msg));
    free(msg);
}

static void broadcast(struct dashboard *d, const char *event, const char *data)
{
    struct list_node *pos, *tmp;

    d->broadcasting = true;
    list_for_each_safe(pos, tmp, &d->clients) {
        struct dash_client *cl = list_entry(pos, struct dash_client, node);
        if (cl->streaming)
            client_send(cl->req, event, data);
    }
    d->broadcasting = false;
    if (d->streaming == 0 && d->backends)
        hub_unload(d);
}

static json_t *values(json_t *map)
{
    json_t *out = json_array();
    const char *key;
    json_t *v;

    json_object_foreach(map, key, v) {
        json_array_append(out, v);
    }
    return out;
}

/*
 * Reads the dirty backends again (with everything, every backend worth
 * showing: after the event bus was down, any of them may have changed or be
 * new), with drones every drone too, and sends what changed.
 */
static void publish(struct dashboard *d, bool drones, bool everything)
{
    json_t *ids = json_array(), *rows = NULL, *changed = json_array(), *changed_drones = json_array();
    json_t *removed = json_array();
    const char *id;
    json_t *v;
    size_t i;
    int rc;

    json_object_foreach(d->dirty, id, v) {
        json_array_append_new(ids, json_string(id));
    }
    json_object_clear(d->dirty);
    if (everything || json_array_size(ids) > 0) {
        rc = everything ? STORE_CALL(d->c->store, backend_overview, NULL, DASHBOARD_TERMINATED_SHOWN, &rows)
                        : STORE_CALL(d->c->store, backend_overview, ids, 0, &rows);
        if (rc == 0) {
            merge(d->backends, rows, false, changed);
        } else {
            /* They stay dirty: the next flush or refresh tries again. */
            log_warn("dashboard: cannot read %zu changed backends", json_array_size(ids));
            json_array_foreach(ids, i, v) {
                json_object_set_new(d->dirty, json_string_value(v), json_true());
            }
        }
        json_decref(rows);
        rows = NULL;
        prune(d, removed);
    }
    if (drones && STORE_CALL(d->c->store, drone_overview, &rows) == 0)
        merge(d->drones, rows, true, changed_drones);
    json_decref(rows);
    if (json_array_size(changed) || json_array_size(changed_drones) || json_array_size(removed)) {
        json_t *msg = json_pack("{s:I, s:o, s:o, s:o}", "now", (json_int_t)controller_now(), "backends", changed,
                                "drones", changed_drones, "removed", removed);
        char *text = json_dumps(msg, JSON_COMPACT);
        broadcast(d, "update", text);
        free(text);
        json_decref(msg);
    } else {
        json_decref(changed);
        json_decref(changed_drones);
        json_decref(removed);
    }
    json_decref(ids);
}

static void flush_cb(uv_timer_t *t)
{
    struct dashboard *d = t->data;

    if (d->backends)
        publish(d, false, false);
}

static void refresh_cb(uv_timer_t *t)
{
    struct dashboard *d = t->data;
    const char *id;
    json_t *row;

    if (!d->backends)
        return;
    /* Idle times move without events: every backend still running is read again. */
    json_object_foreach(d->backends, id, row) {
        if (!row_terminated(row))
            json_object_set_new(d->dirty, id, json_true());
    }
    uv_timer_stop(&d->flush_timer);
    publish(d, true, false);
}

static void keepalive_cb(uv_timer_t *t)
{
    struct dashboard *d = t->data;
    struct list_node *pos, *tmp;

    d->broadcasting = true;
    list_for_each_safe(pos, tmp, &d->clients) {
        struct dash_client *cl = list_entry(pos, struct dash_client, node);
        if (cl->streaming)
            http_stream_write(cl->req, ":\n\n", 3);
    }
    d->broadcasting = false;
    if (d->streaming == 0 && d->backends)
        hub_unload(d);
}

void dashboard_resync(struct controller *c)
{
    struct dashboard *d = c->dashboard;

    if (d && d->backends)
        publish(d, true, true);
}

void dashboard_drones_changed(struct controller *c)
{
    struct dashboard *d = c->dashboard;

    if (d && d->backends)
        uv_timer_start(&d->refresh_timer, refresh_cb, 0, DASHBOARD_REFRESH_MS);
}

/*
 * Opens cl's stream with a snapshot; the model is loaded first if nobody was
 * looking. Once the stream starts, a failed write can end cl (on_abort) at
 * once: everything is prepared before, and cl is not touched after.
 */
static void client_start(struct dash_client *cl)
{
    struct dashboard *d = cl->d;
    struct http_request *req = cl->req;
    json_t *msg;
    char *text;

    if (!d->backends && hub_load(d) < 0) {
        req->on_abort = NULL;
        client_free(cl);
        api_error(req, 500, "Other", "Database error");
        return;
    }
    log_debug("dashboard: page at %s opened (%s)", req->peer_ip, cl->control ? "may act" : "read-only");
    msg = json_pack("{s:I, s:b, s:o, s:o}", "now", (json_int_t)controller_now(), "control", cl->control,
                    "backends", values(d->backends), "drones", values(d->drones));
    text = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    cl->streaming = true;
    d->streaming++;
    /* X-Accel-Buffering: a reverse proxy in front (nginx) must pass events on as they come. */
    http_stream_start(req, 200, "text/event-stream",
                      "Cache-Control: no-cache\r\nX-Content-Type-Options: nosniff\r\nX-Accel-Buffering: no\r\n");
    client_send(req, "snapshot", text);
    free(text);
}

static void control_checked(void *arg, enum forward_auth_verdict v)
{
    struct dash_client *cl = arg;

    cl->check = NULL;
    cl->control = v == FORWARD_AUTH_ALLOW;
    client_start(cl);
}

static void events_route(struct controller *c, struct http_request *req)
{
    struct dashboard *d = hub_get(c);
    struct dash_client *cl = xcalloc(1, sizeof(*cl));

    cl->d = d;
    cl->req = req;
    list_insert_tail(&d->clients, &cl->node);
    req->on_abort = client_abort;
    req->abort_arg = cl;
    if (!c->forward_auth) {
        cl->control = true;
        client_start(cl);
        return;
    }
    cl->check = forward_auth_start_as(c->forward_auth, req, "POST", "/dashboard", control_checked, cl);
}

/* ---- the hub's life ---- */

static void hub_closed(uv_handle_t *h)
{
    struct dashboard *d = h->data;

    if (--d->open_handles == 0) {
        json_decref(d->dirty);
        free(d);
    }
}

static struct dashboard *hub_get(struct controller *c)
{
    struct dashboard *d = c->dashboard;

    if (d)
        return d;
    d = xcalloc(1, sizeof(*d));
    d->c = c;
    list_init(&d->clients);
    d->dirty = json_object();
    uv_timer_init(c->loop, &d->flush_timer);
    uv_timer_init(c->loop, &d->refresh_timer);
    uv_timer_init(c->loop, &d->keepalive_timer);
    d->flush_timer.data = d->refresh_timer.data = d->keepalive_timer.data = d;
    d->open_handles = 3;
    c->dashboard = d;
    return d;
}

void dashboard_close(struct controller *c)
{
    struct dashboard *d = c->dashboard;
    struct list_node *pos, *tmp;

    if (!d || d->closing)
        return;
    d->closing = true;
    list_for_each_safe(pos, tmp, &d->clients) {
        struct dash_client *cl = list_entry(pos, struct dash_client, node);
        struct http_request *req = cl->req;
        bool streaming = cl->streaming;
        /* The connection may outlive the client (it closes next): it must not call back. */
        req->on_abort = NULL;
        req->abort_arg = NULL;
        forward_auth_cancel(cl->check);
        client_free(cl);
        if (!streaming)
            http_respond(req, 503, NULL, "", 0, NULL);
    }
    d->streaming = 0;
    hub_unload(d);
    uv_close((uv_handle_t *)&d->flush_timer, hub_closed);
    uv_close((uv_handle_t *)&d->refresh_timer, hub_closed);
    uv_close((uv_handle_t *)&d->keepalive_timer, hub_closed);
    c->dashboard = NULL;
}

/* ---- routes ---- */

char *dashboard_auth_path(char *const *seg, int n)
{
    static const char safe[] = "-._~!$&'()*+,;=:@";
    struct buf b = BUF_INIT;

    for (int i = 0; i < n; i++) {
        buf_append_str(&b, "/");
        for (const unsigned char *p = (const unsigned char *)seg[i]; *p; p++) {
            if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                strchr(safe, *p))
                buf_append(&b, p, 1);
            else
                buf_printf(&b, "%%%02X", *p);
        }
    }
    return buf_detach(&b);
}

static void asset(struct http_request *req, const char *type, const char *start, const char *end,
                  const char *headers)
{
    http_respond(req, 200, type, start, (size_t)(end - start), headers);
}

void dashboard_route(struct controller *c, struct http_request *req, char **seg, int n)
{
    const char *tail = req->path + strlen(req->path);

    if (strcmp(req->method, "GET") != 0 || c->stopping) {
        http_respond(req, 404, NULL, "", 0, NULL);
    } else if (n == 0 && tail > req->path && tail[-1] == '/') {
        /* The page's links are relative to /dashboard, not /dashboard/. */
        http_respond(req, 301, NULL, "", 0, "Location: ../dashboard\r\n");
    } else if (n == 0) {
        asset(req, "text/html; charset=utf-8", dashboard_html, dashboard_html_end, PAGE_HEADERS);
    } else if (n == 1 && strcmp(seg[0], "app.js") == 0) {
        asset(req, "text/javascript; charset=utf-8", dashboard_js, dashboard_js_end, PAGE_HEADERS);
    } else if (n == 1 && strcmp(seg[0], "app.css") == 0) {
        asset(req, "text/css; charset=utf-8", dashboard_css, dashboard_css_end, PAGE_HEADERS);
    } else if (n == 1 && strcmp(seg[0], "events") == 0) {
        events_route(c, req);
    } else {
        http_respond(req, 404, NULL, "", 0, NULL);
    }
}
