/* SPDX-License-Identifier: MIT */
/*
 * controller.h - `plane controller`: the HTTP/JSON API, the WebSocket
 * endpoints for drones and proxies, scheduling, keys, sweeping and lost-drone
 * handling, over the store (spec §5-§12). This header is shared by the
 * controller's files; the outside world sees controller_main().
 */
#ifndef PLANE_CONTROLLER_H
#define PLANE_CONTROLLER_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>
#include <uv.h>

#include "../common/buf.h"
#include "../common/http_server.h"
#include "../common/list.h"
#include "../common/metrics.h"
#include "bus_pg.h"
#include "events.h"
#include "store.h"

/* Key lease offsets (§12) as fractions of the lease: 30 / 40 / 50 of 60 s by default. */
#define KEY_RENEW_MS(c) ((c)->key_lease_ms / 2)
#define KEY_SOFT_MS(c) ((c)->key_lease_ms * 2 / 3)
#define KEY_HARD_MS(c) ((c)->key_lease_ms * 5 / 6)
#define KEY_EXPIRY_MS(c) ((c)->key_lease_ms)
#define DRONE_HEALTHY_MS 45000 /* §10.3 */
#define TOKEN_LIFETIME_MS 3600000
#define SWEEP_INTERVAL_MS 5000
#define RESEND_INTERVAL_MS 5000
#define RESEND_BATCH 50

struct controller_config {
    const char *id;             /* co-...; NULL: a fresh random one */
    const char *db;
    const char *host;
    int port;
    const char *controller_url; /* NULL: http://host:port */
    const char *default_cluster;
    int best_of;
    int64_t lost_after_ms;      /* a drone silent this long is lost; 0 disables */
    int64_t key_lease_ms;       /* 0: the spec's 60 s */
    const char *forward_auth;   /* §5.3 URL, or NULL */
};

struct controller {
    uv_loop_t *loop;
    struct store *store;
    struct events *events;
    struct http_server *http;
    char *id;             /* co-... */
    char *status_base;    /* scheme://authority of --controller-url */
    char *default_cluster;
    int best_of;
    int64_t lost_after_ms;
    int64_t key_lease_ms;
    int64_t started_at;   /* epoch ms: drone silence counts from here at the earliest */
    struct forward_auth *forward_auth; /* NULL without --forward-auth */
    struct pg_bus *bus;        /* the other controllers' events (PostgreSQL), or NULL */
    struct list_node sessions; /* drone and proxy sockets */
    struct list_node streams;  /* open status streams */
    struct dashboard *dashboard; /* the dashboard's streams (dashboard.c); NULL until a page is opened */
    struct metrics *metrics;
    struct metric_counter *connects_spawned, *connects_existing, *connects_failed;
    struct metric_histogram *spawn_ready;  /* scheduled -> ready */
    json_t *scheduled_at;                  /* backend id -> ms, until it is ready or gone */
    struct list_node held_connects;        /* connects for named keys waiting for the next batch (connect.c) */
    uv_idle_t held_idle;                   /* runs the batch on the loop's next turn */
    uv_timer_t tick_timer;
    uv_timer_t cleanup_timer;
    int open_handles;                      /* of the three handles above, those not closed yet */
    bool stopping;
};

int controller_start(struct controller **out, uv_loop_t *loop, const struct controller_config *cfg, struct buf *err);
void controller_stop(struct controller *c);
int controller_port(const struct controller *c);
int controller_main(int argc, char **argv);

/* api.c */
void api_handle(void *arg, struct http_request *req);
void api_error(struct http_request *req, int status, const char *kind, const char *message);
/* A store failure rc: 503 DatabaseError when the database cannot be reached, else 500 with message. */
void api_store_error(struct http_request *req, int rc, const char *message);
void api_streams_close(struct controller *c);
void api_streams_resync(struct controller *c);
/* The request's JSON body; NULL after answering 415 or 400 (§5). */
json_t *api_json_body(struct http_request *req);
/* 422: the body has the wrong shape. */
void api_unprocessable(struct http_request *req, const char *what);

/* connect.c */
void api_connect(struct controller *c, struct http_request *req);
/* Sets up the batch of held-key connects (c->held_connects, c->held_idle: closed with the timers). */
void connect_batch_init(struct controller *c);
/* A ClusterName (§4.1): host[:port], host of letters, digits, '-' and '.'. */
bool cluster_valid(const char *cluster);

#define CONNECT_UNSET INT64_MIN
/* A ConnectRequest (§4.7), checked; strings borrow from the JSON it came from. */
struct connect_req {
    const char *key_name, *key_ns, *key_tag;
    char *generated_key;  /* owned: lk-... when the request names no key */
    const json_t *spawn;  /* spawn_config, or NULL */
    const char *id, *cluster, *pool, *subdomain;
    const json_t *executable;
    int64_t lifetime_s, idle_s; /* CONNECT_UNSET: none; any other value counts, <= 0 included (as Plane) */
    bool static_token;
    bool idle_freeze;     /* spawn_config.idle "freeze" (our extension): frozen, not swept, when idle */
    const char *user;     /* or NULL */
    char *auth;           /* owned: the auth object as JSON with sorted keys */
};
/* false, with the reason in why (a 422), if j is not a valid ConnectRequest. Release r either way. */
bool connect_request_parse(const json_t *j, struct connect_req *r, struct buf *why);
void connect_request_release(struct connect_req *r);

/* sockets.c: the drone, proxy and DNS server WebSocket endpoints; cluster is NULL for NODE_DNS */
void sockets_accept(struct controller *c, struct http_request *req, const char *cluster, enum node_kind kind);
void sockets_close_all(struct controller *c);
/* Catches up from the store with what the other controllers' lost notifications said. */
void sockets_resync(struct controller *c);
/* Whether a node of controller->sessions is a registered drone (else a proxy or not yet registered). */
bool sockets_is_drone(const struct list_node *session_node);

/*
 * Thaws the backend if it is frozen (freeze on idle): a request or a connect
 * wants it. With only_if_used, only when it was kept alive within its idle
 * limit (a freeze that crossed a request). In sockets.c, beside the sweep.
 */
void controller_thaw_if_frozen(struct controller *c, const char *backend_id, bool only_if_used);

/* controller.c: shared operations */
/* Queues action (a BackendAction, stolen) for the backend's drone: stored, then delivered. 0 or -errno. */
int controller_queue_action(struct controller *c, const char *backend_id, int64_t drone_id, json_t *action);
/* The full Action message body for an action. New reference. */
json_t *controller_action_body(const char *action_id, const char *backend_id, int64_t drone_id, json_t *action);
/* Applies a state update from a drone (or the controller itself): monotonic; publishes when accepted. */
int controller_update_state(struct controller *c, const char *backend_id, const struct backend_state *st,
                            bool release_key, bool *accepted);
int64_t controller_now(void);

#endif
