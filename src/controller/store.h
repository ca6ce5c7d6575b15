/* SPDX-License-Identifier: MIT */
/*
 * store.h - the controller's store: the source of truth for nodes, drones,
 * backends, keys, tokens, actions and state history (spec §10.1). An
 * interface (struct store_ops, the runtime's vtable pattern) so that
 * PostgreSQL can sit beside the embedded SQLite implementation; the
 * controller calls the store_*() wrappers below, never ->ops directly.
 *
 * Times are epoch milliseconds: the controller's clock, corrected to the
 * database's where the database has one (see the clock op). Every call
 * returns 0 or a negative errno: -EIO means the database failed, -ENOTCONN
 * that it cannot be reached (the controller answers 503 and retries later).
 */
#ifndef PLANE_STORE_H
#define PLANE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "../common/backend_state.h"
#include "../common/buf.h"

struct store;

enum node_kind { NODE_DRONE, NODE_PROXY, NODE_DNS };

struct backend_row {
    char *id, *cluster, *static_token, *subdomain, *drone_name; /* owned; static_token/subdomain may be NULL */
    int64_t drone_id;
    struct backend_state state;
    int64_t last_status_time;
    int64_t expiration_time; /* 0: none */
    int64_t allowed_idle_ms; /* -1: none */
    int64_t last_keepalive;
};

/* A key and what a connect needs to answer with its backend (one read). */
struct key_row {
    char *backend_id, *tag; /* owned */
    int64_t expires_at;
    int64_t fencing_token;
    char *cluster, *static_token, *subdomain; /* the backend's, owned; the last two may be NULL */
    enum backend_status status;               /* the backend's */
    bool frozen;                              /* the backend is ready and frozen (freeze on idle) */
};

/* Everything connect writes for a new backend, in one transaction (§5.2.1 step 6). */
struct new_backend {
    const char *id, *cluster, *static_token, *subdomain; /* static_token, subdomain may be NULL */
    int64_t drone_id;
    bool has_lifetime;       /* lifetime_ms applies; it may be <= 0 (swept at once, as Plane) */
    int64_t lifetime_ms;
    bool has_max_idle;       /* max_idle_ms applies; <= 0 is swept at once, as Plane */
    int64_t max_idle_ms;
    bool idle_freeze;        /* idle: frozen instead of swept */
    const char *key_namespace, *key_name, *key_tag;
    int64_t key_expires_at;
    int64_t fencing_token;
    const char *action_id;
    const char *action_json; /* the full Action message body */
    int64_t now;
};

/*
 * A connect for a named key (§5.2.1 steps 2-4 and 7), asked in batches: the
 * key with its backend is read, and when it is held (unexpired), its tag
 * matches and its backend has no static token, the token is stored for it,
 * all in one step. Anything else (not found, expired, another tag, a static
 * token) is left to the connect's general path.
 */
struct held_connect {
    const char *ns, *name, *tag;          /* in */
    const char *token, *secret, *user;    /* in: the token to store if held; user may be NULL */
    const char *auth;                     /* in: the auth object as JSON */
    int64_t token_expires_at;             /* in */
    int64_t now;                          /* in: for stores without a clock of their own */
    bool found;                           /* out: the key exists (key is filled) */
    bool token_made;                      /* out: held, tag matched, no static token: the token is stored */
    struct key_row key;                   /* out, when found: release with key_row_release */
};

struct route_row {
    char *backend_id, *secret_token, *cluster, *user, *user_data, *subdomain; /* owned; user/subdomain may be NULL */
    struct backend_state state;
};

typedef void store_history_fn(void *arg, const struct backend_state *st, int64_t time_ms);
typedef void store_action_fn(void *arg, const char *action_id, const char *backend_id, const char *action_json);
typedef void store_id_fn(void *arg, const char *backend_id, int64_t drone_id);

struct store_ops {
    const char *name;
    int (*open)(struct store **out, const char *url, struct buf *err);
    void (*close)(struct store *s);
    int (*ping)(struct store *s);
    /* Optional (NULL: the controller's clock is the store's): the database's time now, epoch ms. */
    int (*clock)(struct store *s, int64_t *db_ms);

    int (*node_connect)(struct store *s, enum node_kind kind, const char *name, const char *cluster, const char *ip,
                        const char *controller, const char *pool, int64_t now, int64_t *node_id);
    int (*node_disconnect)(struct store *s, int64_t node_id, const char *controller, int64_t connected_at);
    int (*drone_heartbeat)(struct store *s, int64_t node_id, int64_t local_time, int64_t now);
    int (*drone_drain)(struct store *s, const char *cluster, const char *name, bool *updated);
    int (*cluster_state)(struct store *s, const char *cluster, int64_t now, json_t **out);
    /*
     * Scheduling (§10.3): of up to best_of random drones that can take a
     * backend, the one with the fewest non-terminated backends. -ENOENT if none.
     * clock_offset: the drone's clock minus ours, as of its last heartbeat.
     */
    int (*drone_pick)(struct store *s, const char *cluster, const char *pool, int64_t healthy_since, int best_of,
                      int64_t *drone_id, char **drone_name, int64_t *clock_offset);

    int (*key_get)(struct store *s, const char *ns, const char *name, struct key_row *out);
    /* Optional (NULL: key_get and token_create one item at a time): see struct held_connect. */
    int (*connect_held)(struct store *s, struct held_connect *items, size_t n);
    int (*key_delete_expired)(struct store *s, const char *ns, const char *name, int64_t now, bool *deleted);
    int (*backend_create)(struct store *s, const struct new_backend *nb);
    int (*token_create)(struct store *s, const char *token, const char *backend_id, const char *user,
                        const char *auth_json, const char *secret, int64_t expires_at);
    int (*backend_get)(struct store *s, const char *id, struct backend_row *out);
    int (*backend_history)(struct store *s, const char *id, store_history_fn *fn, void *arg);
    /*
     * Applies st if it is newer than the stored state (§10.5). On reaching
     * terminated, release_key deletes the backend's key (the drone saw it
     * end); without it the key stays held, unrenewable, until its expiry
     * (the controller only believes it ended: a lost drone may still run it).
     */
    int (*backend_update_state)(struct store *s, const char *id, const struct backend_state *st, int64_t now,
                                bool release_key, bool *accepted);
    /*
     * The next fencing token: strictly greater than every token handed out
     * before, across restarts. backend_create refuses (-EEXIST, a retry) a
     * token lower than one its key was given already, so that of several
     * controllers, the later holder of a key always has the higher token.
     */
    int (*fencing_next)(struct store *s, int64_t *token);

    int (*action_create)(struct store *s, const char *action_id, const char *backend_id, int64_t drone_id,
                         const char *action_json, int64_t now);
    int (*actions_pending)(struct store *s, int64_t drone_id, int limit, store_action_fn *fn, void *arg);
    int (*action_ack)(struct store *s, int64_t drone_id, const char *action_id, int64_t now);

    /* Extends the key of backend_id on drone_id to expires_at, unless it has expired or renewal is refused. */
    int (*key_renew)(struct store *s, const char *backend_id, int64_t drone_id, int64_t now, int64_t expires_at,
                     bool *renewed);
    int (*sweep_candidates)(struct store *s, int64_t drone_id, int64_t now, store_id_fn *fn, void *arg);
    /*
     * Optional (freeze on idle): ready, unfrozen backends of the drone that
     * asked to be frozen on idle and are idle now. A store that has it also
     * leaves those out of sweep_candidates' idle test and takes a ready
     * state that differs from the stored ready one (frozen, thawed).
     */
    int (*freeze_candidates)(struct store *s, int64_t drone_id, int64_t now, store_id_fn *fn, void *arg);
    int (*keepalive)(struct store *s, const char *backend_id, int64_t now, bool *alive);
    int (*revoke)(struct store *s, const char *backend_id, const char *user);
    int (*route_get)(struct store *s, const char *token, struct route_row *out);
    /* Non-terminated backends on drones not heard from since before cutoff. */
    int (*lost_backends)(struct store *s, int64_t cutoff, store_id_fn *fn, void *arg);
    int (*cleanup_tokens)(struct store *s, int64_t now);
    /* Backends by status: {"ready": N, ...}. New reference in *out. */
    int (*backend_counts)(struct store *s, json_t **out);
    /* A test and operator hook: stop renewals of backend_id's key (db-cli prevent-renew). */
    int (*prevent_renew)(struct store *s, const char *backend_id);

    /* ---- reads for the dashboard (dashboard.c) ---- */
    /*
     * Every drone of every cluster, connected or not, ordered by cluster and
     * name: a JSON array (new reference in *out) of {"id", "name", "cluster",
     * "pool", "ip", "ready", "draining", "connected", "last_heartbeat" (ms or
     * null), "backends" (how many are not terminated)}.
     */
    int (*drone_overview)(struct store *s, json_t **out);
    /*
     * Backends as the dashboard shows them: those named in ids (a JSON array
     * of backend ids; unknown ones are left out), or, when ids is NULL, every
     * backend not terminated plus the `terminated` most recently terminated.
     * A JSON array (new reference in *out) of {"id", "cluster", "drone",
     * "drone_id", "key" ({"namespace","name","tag"} or null), "state" (§4.2),
     * "last_status_time", "last_keepalive", "allowed_idle_ms" (or null),
     * "expiration_time" (or null), "history" ([[state, time], ...], in no set
     * order)}. A terminated backend's key row is gone: with ids NULL its key
     * is read from its Spawn action instead; with ids it is null.
     */
    int (*backend_overview)(struct store *s, const json_t *ids, int terminated, json_t **out);
    /*
     * ACME DNS-01 (§8.4, §9; table acme_txt_entries). cert_lease takes the
     * cluster's certificate lease for node_id unless a lease at most
     * valid_ms old exists (whoever holds it); the TXT value stays. txt_set sets the TXT value only
     * under node_id's lease. cert_release drops node_id's lease and its
     * value. txt_get: *value is the value (owned) or NULL when there is none.
     */
    int (*cert_lease)(struct store *s, const char *cluster, int64_t node_id, int64_t now, int64_t valid_ms,
                      bool *accepted);
    int (*txt_set)(struct store *s, const char *cluster, int64_t node_id, const char *value, bool *accepted);
    int (*cert_release)(struct store *s, const char *cluster, int64_t node_id);
    int (*txt_get)(struct store *s, const char *cluster, char **value);
};

struct store {
    const struct store_ops *ops;
};

/* How long a key's highest fencing token is kept after its last acquisition (a connect takes far less). */
#define KEY_FENCE_KEEP_MS "3600000"

extern const struct store_ops store_sqlite_ops;
extern const struct store_ops store_pg_ops;
/* A postgres:// URL with a short connect timeout unless it sets one: for libpq. */
char *store_pg_conninfo(const char *url);

/* Opens the store url names: a path (SQLite) or postgres://... 0 or -errno with a line in err. */
int store_open(struct store **out, const char *url, struct buf *err);
void store_close(struct store *s);
/*
 * Answers n held_connects with the store's connect_held, or item by item
 * with key_get and token_create. 0, or the failure of the batch (every
 * item then failed; none of the out fields need releasing).
 */
int store_connect_held(struct store *s, struct held_connect *items, size_t n);
void backend_row_release(struct backend_row *r);
void key_row_release(struct key_row *r);
void route_row_release(struct route_row *r);
const char *node_kind_name(enum node_kind k);

#define STORE_CALL(s, op, ...) ((s)->ops->op((s), ##__VA_ARGS__))

#endif
