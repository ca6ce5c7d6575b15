/* SPDX-License-Identifier: MIT */
/*
 * test_store.c - the store contract (controller/store.h), one suite run
 * against every implementation: SQLite on a temporary file, and PostgreSQL
 * on a fresh database of the server PLANE_TEST_PG_URL names (`make test`
 * starts one with scripts/pg-up.sh). Each operation must mean the same on
 * both: the controller cannot tell them apart.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "../../src/common/clock.h"
#include "../../src/common/xalloc.h"
#include "../../src/controller/store.h"
#include "test.h"

char *test_tmpdir(void);

/*
 * Now, when the suite starts. The stores take the caller's times, except
 * that PostgreSQL expires and renews keys by the database's own clock: key
 * expiry is checked against real time, on both.
 */
static int64_t t0_ms;
#define T0 t0_ms

static void new_backend_until(struct store *s, const char *id, const char *key, int64_t drone, int64_t token,
                              int rc_want, bool lifetime, int64_t lifetime_ms, int64_t key_expires_at)
{
    char action[128];
    snprintf(action, sizeof(action), "{\"action_id\":\"ak-%s\"}", id);
    char *action_id = xasprintf("ak-%s", id);
    struct new_backend nb = {.id = id, .cluster = "c.test", .drone_id = drone, .has_lifetime = lifetime,
                             .lifetime_ms = lifetime_ms, .key_namespace = "", .key_name = key, .key_tag = "",
                             .key_expires_at = key_expires_at, .fencing_token = token, .action_id = action_id,
                             .action_json = action, .now = T0};
    ASSERT_EQ(STORE_CALL(s, backend_create, &nb), rc_want);
    free(action_id);
}

/* A backend whose key's lease is a minute. */
static void new_backend(struct store *s, const char *id, const char *key, int64_t drone, int64_t token, int rc_want,
                        bool lifetime, int64_t lifetime_ms)
{
    new_backend_until(s, id, key, drone, token, rc_want, lifetime, lifetime_ms, T0 + 60000);
}

static void collect(void *arg, const char *backend_id, int64_t drone_id)
{
    (void)drone_id;
    strcat((char *)arg, backend_id);
    strcat((char *)arg, " ");
}

static void collect_action(void *arg, const char *action_id, const char *backend_id, const char *json)
{
    (void)backend_id;
    (void)json;
    strcat((char *)arg, action_id);
    strcat((char *)arg, " ");
}

static void count_history(void *arg, const struct backend_state *st, int64_t t)
{
    (void)st;
    (void)t;
    (*(int *)arg)++;
}

static const json_t *by_id(const json_t *rows, const char *id)
{
    size_t i;
    json_t *row;

    json_array_foreach(rows, i, row) {
        if (strcmp(json_string_value(json_object_get(row, "id")), id) == 0)
            return row;
    }
    return NULL;
}

/* The dashboard's reads, on what contract() left: b4 ready on dr-a (draining), b1 and b3 terminated. */
static void dashboard_reads(struct store *s, int64_t token)
{
    static const char spawn[] = "{\"action_id\":\"ak-b5\",\"action\":{\"Spawn\":{\"key\":{\"key\":"
                                "{\"name\":\"k5\",\"namespace\":\"ns\",\"tag\":\"t\"}}}}}";
    struct new_backend nb = {.id = "b5", .cluster = "c.test", .key_namespace = "ns", .key_name = "k5",
                             .key_tag = "t", .key_expires_at = T0 + 60000, .fencing_token = token,
                             .action_id = "ak-b5", .action_json = spawn, .now = T0 + 50};
    struct backend_state done = {.status = BACKEND_TERMINATED, .last_status = BACKEND_SCHEDULED};
    json_t *rows, *ids;
    const json_t *row;
    bool b;

    ASSERT_OK(STORE_CALL(s, drone_overview, &rows));
    ASSERT_EQ(json_array_size(rows), 2);
    row = json_array_get(rows, 0);
    ASSERT_STR_EQ(json_string_value(json_object_get(row, "name")), "dr-a");
    nb.drone_id = json_integer_value(json_object_get(row, "id"));
    ASSERT_TRUE(json_is_true(json_object_get(row, "draining")) && json_is_true(json_object_get(row, "connected")));
    ASSERT_EQ(json_integer_value(json_object_get(row, "backends")), 1);
    ASSERT_EQ(json_integer_value(json_object_get(row, "last_heartbeat")), T0);
    row = json_array_get(rows, 1);
    ASSERT_STR_EQ(json_string_value(json_object_get(row, "name")), "dr-b");
    ASSERT_TRUE(json_is_false(json_object_get(row, "draining")) && json_is_null(json_object_get(row, "last_heartbeat")));
    json_decref(rows);

    /* b5 ends at once: its key row goes, the key is read back from its Spawn action. */
    ASSERT_OK(STORE_CALL(s, backend_create, &nb));
    ASSERT_OK(STORE_CALL(s, backend_update_state, "b5", &done, T0 + 60, true, &b));
    ASSERT_OK(STORE_CALL(s, backend_overview, NULL, 10, &rows));
    ASSERT_EQ(json_array_size(rows), 5); /* b4, and the terminated b1, bx, b3, b5 */
    row = by_id(rows, "b4");
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(row, "key"), "name")), "k4");
    ASSERT_STR_EQ(json_string_value(json_object_get(row, "drone")), "dr-a");
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(row, "state"), "status")), "ready");
    ASSERT_EQ(json_array_size(json_object_get(row, "history")), 2);
    row = by_id(rows, "b5");
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(row, "key"), "namespace")), "ns");
    ASSERT_STR_EQ(json_string_value(json_object_get(json_object_get(row, "key"), "tag")), "t");
    /* The history in no set order: scheduled at T0 + 50, terminated at T0 + 60. */
    const json_t *h = json_object_get(row, "history");
    ASSERT_EQ(json_array_size(h), 2);
    ASSERT_EQ(json_integer_value(json_array_get(json_array_get(h, 0), 1)) +
                  json_integer_value(json_array_get(json_array_get(h, 1), 1)),
              2 * T0 + 110);
    json_decref(rows);
    /* Of the terminated, the most recent only. */
    ASSERT_OK(STORE_CALL(s, backend_overview, NULL, 1, &rows));
    ASSERT_EQ(json_array_size(rows), 2);
    ASSERT_NOT_NULL(by_id(rows, "b4"));
    ASSERT_NOT_NULL(by_id(rows, "b5"));
    json_decref(rows);
    /* By id: unknown ids are left out; a terminated backend's key is not looked for. */
    ids = json_pack("[s, s]", "b5", "nope");
    ASSERT_OK(STORE_CALL(s, backend_overview, ids, 0, &rows));
    ASSERT_EQ(json_array_size(rows), 1);
    ASSERT_TRUE(json_is_null(json_object_get(json_array_get(rows, 0), "key")));
    json_decref(rows);
    json_decref(ids);
}

/* store_connect_held: each kind of key a connect can find, in one batch. */
static void held_batch(struct store *s, int64_t drone, int64_t token)
{
    static const char odd[] = "q\"\\\xc3\xa9 {,}"; /* quotes, a backslash, UTF-8, braces: through JSON intact */
    new_backend_until(s, "b6", "k6", drone, token + 2, 0, false, 0, T0 - 1000); /* expired */
    new_backend(s, "b8", odd, drone, token + 4, 0, false, 0);
    char *action_id = xstrdup("ak-b7");
    struct new_backend nb = {.id = "b7", .cluster = "c.test", .static_token = "s.static", .drone_id = drone,
                             .key_namespace = "", .key_name = "k7", .key_tag = "", .key_expires_at = T0 + 60000,
                             .fencing_token = token + 3, .action_id = action_id, .action_json = "{}", .now = T0};
    ASSERT_OK(STORE_CALL(s, backend_create, &nb));
    free(action_id);

    int64_t now = clock_epoch_ms();
    struct held_connect h[] = {
        {.ns = "", .name = "k4", .tag = "", .token = "tok-h0", .secret = "s0", .user = "bob", .auth = "{\"b\":2}"},
        {.ns = "", .name = "nokey", .tag = "", .token = "tok-h1", .secret = "s1", .auth = "{}"},
        {.ns = "", .name = "k4", .tag = "x", .token = "tok-h2", .secret = "s2", .auth = "{}"},
        {.ns = "", .name = "k6", .tag = "", .token = "tok-h3", .secret = "s3", .auth = "{}"},
        {.ns = "", .name = "k7", .tag = "", .token = "tok-h4", .secret = "s4", .auth = "{}"},
        {.ns = "", .name = "k4", .tag = "", .token = "tok-h5", .secret = "s5", .auth = "{}"},
        {.ns = "", .name = odd, .tag = "", .token = "tok-h6", .secret = "s6", .auth = "{}"},
        {.ns = "other", .name = "k4", .tag = "", .token = "tok-h7", .secret = "s7", .auth = "{}"},
    };
    size_t n = sizeof(h) / sizeof(h[0]);
    for (size_t i = 0; i < n; i++) {
        h[i].token_expires_at = now + 3600000;
        h[i].now = now;
    }
    ASSERT_OK(store_connect_held(s, h, n));
    bool found[] = {true, false, true, true, true, true, true, false};
    bool made[] = {true, false, false, false, false, true, true, false};
    for (size_t i = 0; i < n; i++) {
        ASSERT_EQ(h[i].found, found[i]);
        ASSERT_EQ(h[i].token_made, made[i]);
        struct route_row route;
        ASSERT_EQ(STORE_CALL(s, route_get, h[i].token, &route), made[i] ? 0 : -ENOENT);
        if (made[i]) {
            ASSERT_STR_EQ(route.backend_id, i == 6 ? "b8" : "b4");
            ASSERT_STR_EQ(route.secret_token, h[i].secret);
            route_row_release(&route);
        }
    }
    ASSERT_STR_EQ(h[0].key.backend_id, "b4");
    ASSERT_STR_EQ(h[0].key.cluster, "c.test");
    struct key_row one;
    ASSERT_OK(STORE_CALL(s, key_get, "", "k4", &one)); /* the same row key_get reads */
    ASSERT_EQ(h[0].key.status, one.status);
    ASSERT_EQ(h[0].key.expires_at, one.expires_at);
    ASSERT_EQ(h[0].key.fencing_token, one.fencing_token);
    ASSERT_EQ(h[0].key.frozen, one.frozen);
    key_row_release(&one);
    ASSERT_STR_EQ(h[2].key.tag, "");       /* the key's tag, not the one asked for */
    ASSERT_STR_EQ(h[3].key.backend_id, "b6");
    ASSERT_TRUE(h[3].key.expires_at < now);
    ASSERT_STR_EQ(h[4].key.static_token, "s.static");
    struct route_row route;
    ASSERT_OK(STORE_CALL(s, route_get, "tok-h0", &route));
    ASSERT_STR_EQ(route.user, "bob");
    ASSERT_STR_EQ(route.user_data, "{\"b\":2}");
    route_row_release(&route);
    ASSERT_OK(STORE_CALL(s, route_get, "tok-h5", &route));
    ASSERT_NULL(route.user);
    route_row_release(&route);
    for (size_t i = 0; i < n; i++)
        key_row_release(&h[i].key);
    ASSERT_OK(store_connect_held(s, h, 0));
}

static void contract(struct store *s)
{
    t0_ms = clock_epoch_ms();
    int64_t drone, other, tok[3], offset;
    char *name = NULL;
    bool b;

    /* Nodes and scheduling (§10.3): a drone is a candidate once it has sent a heartbeat. */
    ASSERT_OK(STORE_CALL(s, node_connect, NODE_DRONE, "dr-a", "c.test", "127.0.0.1", "co-1", "", T0, &drone));
    ASSERT_OK(STORE_CALL(s, node_connect, NODE_DRONE, "dr-b", "c.test", "127.0.0.2", "co-1", "", T0, &other));
    ASSERT_NE(drone, other);
    ASSERT_EQ(STORE_CALL(s, drone_pick, "c.test", "", T0 - 1000, 2, &drone, &name, &offset), -ENOENT);
    ASSERT_OK(STORE_CALL(s, drone_heartbeat, drone, T0 + 250, T0));
    ASSERT_OK(STORE_CALL(s, drone_pick, "c.test", "", T0 - 1000, 2, &other, &name, &offset));
    ASSERT_STR_EQ(name, "dr-a");
    ASSERT_EQ(offset, 250);
    free(name);
    ASSERT_EQ(STORE_CALL(s, drone_pick, "c.test", "gpu", T0 - 1000, 2, &other, &name, &offset), -ENOENT);
    ASSERT_EQ(STORE_CALL(s, drone_drain, "c.test", "dr-none", &b), -ENOENT);
    ASSERT_OK(STORE_CALL(s, node_connect, NODE_DRONE, "dr-a", "c.test", "127.0.0.1", "co-1", "", T0, &other));
    ASSERT_EQ(other, drone); /* a reconnect keeps the node */

    /* Fencing tokens strictly increase. */
    for (int i = 0; i < 3; i++)
        ASSERT_OK(STORE_CALL(s, fencing_next, &tok[i]));
    ASSERT_TRUE(tok[0] < tok[1] && tok[1] < tok[2]);

    /* The key's uniqueness is the one-backend-per-key lock. */
    new_backend(s, "b1", "k1", drone, tok[0], 0, false, 0);
    new_backend(s, "b2", "k1", drone, tok[1], -EEXIST, false, 0);
    struct key_row key;
    ASSERT_OK(STORE_CALL(s, key_get, "", "k1", &key));
    ASSERT_STR_EQ(key.backend_id, "b1");
    ASSERT_EQ(key.fencing_token, tok[0]);
    ASSERT_TRUE(llabs(key.expires_at - (T0 + 60000)) < 5000); /* the database's clock, on PostgreSQL */
    ASSERT_STR_EQ(key.cluster, "c.test"); /* and what a connect answers with */
    ASSERT_EQ(key.status, BACKEND_SCHEDULED);
    ASSERT_TRUE(key.static_token == NULL && key.subdomain == NULL);
    key_row_release(&key);
    ASSERT_EQ(STORE_CALL(s, backend_get, "b2", &(struct backend_row){0}), -ENOENT); /* rolled back whole */
    ASSERT_EQ(STORE_CALL(s, key_get, "other", "k1", &key), -ENOENT);

    /* Renewal: the backend's own drone, an unexpired key. */
    ASSERT_OK(STORE_CALL(s, key_renew, "b1", other + 1000, T0, T0 + 90000, &b));
    ASSERT_FALSE(b);
    new_backend_until(s, "bx", "kx", drone, tok[1], 0, false, 0, T0 - 1000);
    ASSERT_OK(STORE_CALL(s, key_renew, "bx", drone, T0, T0 + 60000, &b));
    ASSERT_FALSE(b); /* expired */
    struct backend_state gone = {.status = BACKEND_TERMINATED, .last_status = BACKEND_SCHEDULED};
    ASSERT_OK(STORE_CALL(s, backend_update_state, "bx", &gone, T0, true, &b));
    ASSERT_OK(STORE_CALL(s, key_renew, "b1", drone, T0 + 1000, T0 + 61000, &b));
    ASSERT_TRUE(b);
    ASSERT_OK(STORE_CALL(s, key_delete_expired, "", "k1", T0 + 60999, &b));
    ASSERT_FALSE(b);

    /* State updates are monotonic; each accepted one is history. */
    struct backend_state ready = {.status = BACKEND_READY}, waiting = {.status = BACKEND_WAITING};
    snprintf(ready.address, sizeof(ready.address), "127.0.0.1:9");
    snprintf(waiting.address, sizeof(waiting.address), "127.0.0.1:9");
    ASSERT_OK(STORE_CALL(s, backend_update_state, "b1", &ready, T0 + 10, true, &b));
    ASSERT_TRUE(b);
    ASSERT_OK(STORE_CALL(s, backend_update_state, "b1", &waiting, T0 + 20, true, &b));
    ASSERT_FALSE(b);
    struct backend_row row;
    ASSERT_OK(STORE_CALL(s, backend_get, "b1", &row));
    ASSERT_EQ(row.state.status, BACKEND_READY);
    ASSERT_STR_EQ(row.drone_name, "dr-a");
    ASSERT_EQ(row.last_status_time, T0 + 10);
    backend_row_release(&row);
    int n = 0;
    ASSERT_OK(STORE_CALL(s, backend_history, "b1", count_history, &n));
    ASSERT_EQ(n, 2); /* scheduled, ready */

    /* Ended as the drone saw it: the key is released at once. */
    struct backend_state done = {.status = BACKEND_TERMINATED, .last_status = BACKEND_READY};
    ASSERT_OK(STORE_CALL(s, backend_update_state, "b1", &done, T0 + 30, true, &b));
    ASSERT_TRUE(b);
    ASSERT_EQ(STORE_CALL(s, key_get, "", "k1", &key), -ENOENT);

    /* Ended as the controller believes (lost): held, unrenewable, until it expires. */
    new_backend_until(s, "b3", "k3", drone, tok[2], 0, false, 0, T0 + 1500);
    done.reason = REASON_LOST;
    ASSERT_OK(STORE_CALL(s, backend_update_state, "b3", &done, T0 + 40, false, &b));
    ASSERT_TRUE(b);
    ASSERT_OK(STORE_CALL(s, key_get, "", "k3", &key));
    key_row_release(&key);
    ASSERT_OK(STORE_CALL(s, key_renew, "b3", drone, T0 + 50, T0 + 90000, &b));
    ASSERT_FALSE(b);
    ASSERT_OK(STORE_CALL(s, key_delete_expired, "", "k3", clock_epoch_ms(), &b));
    ASSERT_FALSE(b);
    usleep(1700000); /* its lease runs out */
    ASSERT_OK(STORE_CALL(s, key_delete_expired, "", "k3", clock_epoch_ms(), &b));
    ASSERT_TRUE(b);

    /* Actions: pending in order until acked, by their drone only. */
    char seen[256] = "";
    ASSERT_OK(STORE_CALL(s, action_create, "ak-x", "b3", drone, "{}", T0 + 100));
    ASSERT_OK(STORE_CALL(s, actions_pending, drone, 50, collect_action, seen));
    ASSERT_STR_EQ(seen, "ak-b1 ak-bx ak-b3 ak-x ");
    ASSERT_OK(STORE_CALL(s, action_ack, other + 1000, "ak-b1", T0));
    ASSERT_OK(STORE_CALL(s, action_ack, drone, "ak-b3", T0));
    seen[0] = '\0';
    ASSERT_OK(STORE_CALL(s, actions_pending, drone, 1, collect_action, seen));
    ASSERT_STR_EQ(seen, "ak-b1 ");

    /* Tokens and routes. */
    new_backend(s, "b4", "k4", drone, tok[2] + 1, 0, true, 0); /* lifetime 0: swept at once */
    ASSERT_OK(STORE_CALL(s, token_create, "tok-1", "b4", "alice", "{\"a\":1}", "sec", T0 + 3600000));
    struct route_row route;
    ASSERT_OK(STORE_CALL(s, route_get, "tok-1", &route));
    ASSERT_STR_EQ(route.backend_id, "b4");
    ASSERT_STR_EQ(route.secret_token, "sec");
    ASSERT_STR_EQ(route.user, "alice");
    ASSERT_STR_EQ(route.user_data, "{\"a\":1}");
    ASSERT_EQ(route.state.status, BACKEND_SCHEDULED);
    route_row_release(&route);
    ASSERT_EQ(STORE_CALL(s, route_get, "tok-none", &route), -ENOENT);
    ASSERT_OK(STORE_CALL(s, revoke, "b4", "alice"));
    ASSERT_EQ(STORE_CALL(s, route_get, "tok-1", &route), -ENOENT);
    ASSERT_OK(STORE_CALL(s, token_create, "tok-2", "b4", NULL, "{}", "sec", T0));
    ASSERT_OK(STORE_CALL(s, cleanup_tokens, T0 + 1));
    ASSERT_EQ(STORE_CALL(s, route_get, "tok-2", &route), -ENOENT);

    /* Sweeping (never while scheduled), keepalives, lost drones, counts. */
    seen[0] = '\0';
    ASSERT_OK(STORE_CALL(s, sweep_candidates, drone, T0 + 1, collect, seen));
    ASSERT_STR_EQ(seen, "");
    ASSERT_OK(STORE_CALL(s, backend_update_state, "b4", &ready, T0 + 5, true, &b));
    ASSERT_OK(STORE_CALL(s, sweep_candidates, drone, T0 + 1, collect, seen));
    ASSERT_STR_EQ(seen, "b4 ");
    ASSERT_OK(STORE_CALL(s, keepalive, "b4", T0 + 7, &b));
    ASSERT_TRUE(b);
    ASSERT_OK(STORE_CALL(s, keepalive, "b1", T0 + 7, &b));
    ASSERT_FALSE(b); /* terminated */
    seen[0] = '\0';
    ASSERT_OK(STORE_CALL(s, lost_backends, T0 - 1, collect, seen));
    ASSERT_STR_EQ(seen, "");
    ASSERT_OK(STORE_CALL(s, lost_backends, T0 + 1, collect, seen));
    ASSERT_STR_EQ(seen, "b4 ");
    json_t *counts;
    ASSERT_OK(STORE_CALL(s, backend_counts, &counts));
    ASSERT_EQ(json_integer_value(json_object_get(counts, "terminated")), 3);
    ASSERT_EQ(json_integer_value(json_object_get(counts, "ready")), 1);
    json_decref(counts);
    json_t *state;
    ASSERT_OK(STORE_CALL(s, cluster_state, "c.test", T0 + 2000, &state));
    ASSERT_EQ(json_array_size(json_object_get(state, "drones")), 2);
    json_decref(state);
    ASSERT_OK(STORE_CALL(s, drone_drain, "c.test", "dr-a", &b));
    ASSERT_TRUE(b);
    ASSERT_OK(STORE_CALL(s, drone_drain, "c.test", "dr-a", &b));
    ASSERT_FALSE(b);
    ASSERT_EQ(STORE_CALL(s, drone_pick, "c.test", "", T0 - 1000, 2, &other, &name, &offset), -ENOENT);
    dashboard_reads(s, tok[2] + 2);
    /* A token taken before a later holder's (another controller's, stalled) never takes the key. */
    int64_t early, late;
    ASSERT_OK(STORE_CALL(s, fencing_next, &early));
    ASSERT_OK(STORE_CALL(s, fencing_next, &late));
    new_backend(s, "bf1", "kf", drone, late, 0, false, 0);
    ASSERT_OK(STORE_CALL(s, backend_update_state, "bf1", &done, T0 + 31, true, &b));
    new_backend(s, "bf2", "kf", drone, early, -EEXIST, false, 0);
    ASSERT_OK(STORE_CALL(s, fencing_next, &late));
    new_backend(s, "bf2", "kf", drone, late, 0, false, 0);
    ASSERT_OK(STORE_CALL(s, backend_update_state, "bf2", &done, T0 + 32, true, &b));

    ASSERT_OK(STORE_CALL(s, ping));

    /* ACME DNS-01 (§8.4, §9): one lease per cluster, holding a minute even against its holder; the TXT value under it. */
    char *txt;
    ASSERT_OK(STORE_CALL(s, txt_get, "c.test", &txt));
    ASSERT_NULL(txt);
    ASSERT_OK(STORE_CALL(s, cert_lease, "c.test", 7, T0, 60000, &b));
    ASSERT_TRUE(b);
    ASSERT_OK(STORE_CALL(s, cert_lease, "c.test", 8, T0 + 60000, 60000, &b));
    ASSERT_FALSE(b);
    ASSERT_OK(STORE_CALL(s, cert_lease, "c.test", 7, T0 + 1, 60000, &b));
    ASSERT_FALSE(b);
    ASSERT_OK(STORE_CALL(s, txt_set, "c.test", 8, "not-the-holder", &b));
    ASSERT_FALSE(b);
    ASSERT_OK(STORE_CALL(s, txt_get, "c.test", &txt));
    ASSERT_NULL(txt);
    ASSERT_OK(STORE_CALL(s, txt_set, "c.test", 7, "v1", &b));
    ASSERT_TRUE(b);
    ASSERT_OK(STORE_CALL(s, txt_get, "c.test", &txt));
    ASSERT_STR_EQ(txt, "v1");
    free(txt);
    ASSERT_OK(STORE_CALL(s, cert_lease, "other.test", 8, T0, 60000, &b)); /* per cluster */
    ASSERT_TRUE(b);
    ASSERT_OK(STORE_CALL(s, cert_lease, "c.test", 8, T0 + 60001, 60000, &b)); /* lapsed */
    ASSERT_TRUE(b);
    ASSERT_OK(STORE_CALL(s, txt_set, "c.test", 7, "v2", &b));
    ASSERT_FALSE(b);
    ASSERT_OK(STORE_CALL(s, cert_release, "c.test", 7)); /* not its lease any more: nothing */
    ASSERT_OK(STORE_CALL(s, txt_get, "c.test", &txt));
    ASSERT_STR_EQ(txt, "v1");
    free(txt);
    ASSERT_OK(STORE_CALL(s, cert_release, "c.test", 8));
    ASSERT_OK(STORE_CALL(s, txt_get, "c.test", &txt));
    ASSERT_NULL(txt);
    ASSERT_OK(STORE_CALL(s, cert_lease, "c.test", 9, T0 + 60002, 60000, &b)); /* free again */
    ASSERT_TRUE(b);

    /* Connects for named keys in one batch: a token only for a held key with the asked tag and no static token. */
    held_batch(s, drone, tok[2]);
}

TEST(store_contract_sqlite)
{
    char *dir = test_tmpdir();
    char *path = xasprintf("%s/controller.db", dir);
    struct buf err = BUF_INIT;
    struct store *s;

    ASSERT_OK(store_open(&s, path, &err));
    contract(s);
    store_close(s);
    /* Reopened: the same data, the schema not applied twice. */
    ASSERT_OK(store_open(&s, path, &err));
    struct key_row key;
    ASSERT_OK(STORE_CALL(s, key_get, "", "k4", &key));
    key_row_release(&key);
    store_close(s);
    free(path);
    free(dir);
}

/* A fresh database on the test server; its URL, or NULL (and a note) without a server. */
static char *pg_fresh_database(void)
{
    const char *base = getenv("PLANE_TEST_PG_URL");
    char sql[96], *url;

    if (!base || !*base) {
        printf("  (no PLANE_TEST_PG_URL: `make test` starts a server with scripts/pg-up.sh)\n");
        return NULL;
    }
    PGconn *c = PQconnectdb(base);
    ASSERT_TRUE(PQstatus(c) == CONNECTION_OK);
    snprintf(sql, sizeof(sql), "CREATE DATABASE unit_%d_%ld", getpid(), (long)random());
    PGresult *r = PQexec(c, sql);
    ASSERT_TRUE(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
    PQfinish(c);
    const char *slash = strrchr(base, '/');
    ASSERT_TRUE(slash && slash > base + 11);
    url = xasprintf("%.*s/%s", (int)(slash - base), base, sql + strlen("CREATE DATABASE "));
    return url;
}

TEST(store_contract_postgres)
{
    struct buf err = BUF_INIT;
    struct store *s;
    char *url = pg_fresh_database();

    if (!url)
        return;
    ASSERT_OK(store_open(&s, url, &err));
    contract(s);
    store_close(s);
    ASSERT_OK(store_open(&s, url, &err)); /* migrations already applied: nothing to do */
    store_close(s);
    free(url);
    buf_release(&err);
}
