/* SPDX-License-Identifier: MIT */
/*
 * bus_pg.c - LISTEN/NOTIFY between controllers (see bus_pg.h).
 *
 * One connection of its own: it LISTENs on channel plane_events, its socket
 * is polled by the loop, and NOTIFYs go out on it too (after the change they
 * announce has committed on the store's connection). A notification's
 * payload is {"from":controller id,"kind":N,"key":S|null,"payload":…}; our
 * own come back to us and are dropped. PostgreSQL refuses payloads from
 * 8000 bytes on (a Spawn action with a large executable): such an event is
 * not sent, and the other controllers learn of it from the tables.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "bus_pg.h"
#include "store.h"

#define CHANNEL "plane_events"
#define MAX_PAYLOAD 7900
#define RETRY_MS 1000

struct pg_bus {
    uv_loop_t *loop;
    char *conninfo, *self;
    struct events *events;
    void (*resync)(void *arg);
    void *arg;
    PGconn *conn;     /* NULL while down */
    uv_poll_t poll;   /* on conn's socket, while up */
    bool polling;
    uv_timer_t retry;
    unsigned open_handles;
    bool stopping, down_logged;
};

static void bus_down(struct pg_bus *b, const char *why);

static void poll_closed(uv_handle_t *h)
{
    struct pg_bus *b = h->data;

    if (--b->open_handles == 0 && b->stopping) {
        free(b->conninfo);
        free(b->self);
        free(b);
    }
}

/* Hands what arrived to our subscribers; false once the connection is unusable. */
static bool drain(struct pg_bus *b)
{
    PGnotify *n;

    if (!PQconsumeInput(b->conn))
        return false;
    while ((n = PQnotifies(b->conn))) {
        json_t *j = json_loads(n->extra, 0, NULL);
        const char *from = json_string_value(json_object_get(j, "from"));
        json_t *kind = json_object_get(j, "kind");
        json_t *key = json_object_get(j, "key");
        if (!from || !json_is_integer(kind) || json_integer_value(kind) < EVENT_BACKEND_STATE ||
            json_integer_value(kind) > EVENT_NODE_CONNECTION || !(json_is_string(key) || json_is_null(key)))
            log_warn("bus: dropped a notification that is not ours");
        else if (strcmp(from, b->self) != 0)
            events_deliver(b->events, (enum event_kind)json_integer_value(kind), json_string_value(key),
                           json_object_get(j, "payload"));
        json_decref(j);
        PQfreemem(n);
    }
    return true;
}

static void on_readable(uv_poll_t *p, int status, int events)
{
    struct pg_bus *b = p->data;

    (void)events;
    if (status < 0 || !drain(b))
        bus_down(b, b->conn ? PQerrorMessage(b->conn) : "poll error");
}

static void forward(void *arg, enum event_kind kind, const char *key, const json_t *payload)
{
    struct pg_bus *b = arg;
    json_t *j;
    char *text;

    if (!b->conn)
        return; /* the tables will tell */
    j = json_pack("{s:s, s:i, s:s?, s:O}", "from", b->self, "kind", (int)kind, "key", key, "payload", payload);
    text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (text && strlen(text) <= MAX_PAYLOAD) {
        const char *params[] = {text};
        PGresult *r = PQexecParams(b->conn, "SELECT pg_notify('" CHANNEL "', $1)", 1, NULL, params, NULL, NULL, 0);
        bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
        /* Notifications may have been read while waiting for the answer. */
        if (!ok || !drain(b))
            bus_down(b, PQerrorMessage(b->conn));
    }
    free(text);
}

static void retry_cb(uv_timer_t *t);

static void bus_down(struct pg_bus *b, const char *why)
{
    if (!b->conn)
        return;
    if (!b->stopping)
        log_warn("bus: lost the notification connection to PostgreSQL: %s", why && *why ? why : "closed");
    if (b->polling) {
        b->polling = false;
        uv_close((uv_handle_t *)&b->poll, poll_closed);
    }
    PQfinish(b->conn);
    b->conn = NULL;
    if (!b->stopping)
        uv_timer_start(&b->retry, retry_cb, RETRY_MS, 0);
}

static void bus_up(struct pg_bus *b)
{
    PGresult *r;

    b->conn = PQconnectdb(b->conninfo);
    if (PQstatus(b->conn) == CONNECTION_OK) {
        r = PQexec(b->conn, "LISTEN " CHANNEL);
        if (PQresultStatus(r) == PGRES_COMMAND_OK) {
            PQclear(r);
            b->open_handles++;
            uv_poll_init(b->loop, &b->poll, PQsocket(b->conn));
            b->poll.data = b;
            uv_poll_start(&b->poll, UV_READABLE, on_readable);
            b->polling = true;
            if (b->down_logged)
                log_info("bus: listening again");
            b->down_logged = false;
            /* What was announced while we were not listening is in the tables. */
            b->resync(b->arg);
            return;
        }
        PQclear(r);
    }
    if (!b->down_logged)
        log_error("bus: cannot listen for other controllers' events: %s", PQerrorMessage(b->conn));
    b->down_logged = true;
    PQfinish(b->conn);
    b->conn = NULL;
    uv_timer_start(&b->retry, retry_cb, RETRY_MS, 0);
}

static void retry_cb(uv_timer_t *t)
{
    bus_up(t->data);
}

struct pg_bus *pg_bus_start(uv_loop_t *loop, const char *url, const char *self_id, struct events *events,
                            void (*resync)(void *arg), void *arg)
{
    struct pg_bus *b = xcalloc(1, sizeof(*b));

    b->loop = loop;
    b->conninfo = store_pg_conninfo(url);
    b->self = xstrdup(self_id);
    b->events = events;
    b->resync = resync;
    b->arg = arg;
    uv_timer_init(loop, &b->retry);
    b->retry.data = b;
    b->open_handles = 1;
    events_set_forwarder(events, forward, b);
    bus_up(b);
    return b;
}

void pg_bus_stop(struct pg_bus *b)
{
    if (!b)
        return;
    b->stopping = true;
    events_set_forwarder(b->events, NULL, NULL);
    bus_down(b, "stopping");
    uv_timer_stop(&b->retry);
    uv_close((uv_handle_t *)&b->retry, poll_closed);
}
