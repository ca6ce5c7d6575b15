/* SPDX-License-Identifier: MIT */
/*
 * connect.c - POST /ctrl/connect (spec §5.2.1): get the backend holding a
 * key, or schedule a new one. The key's row in the store is the lock: its
 * (namespace, name) is unique, so of concurrent connects for a new key
 * exactly one inserts its backend and the others, failing to acquire, retry
 * and find it (3 attempts in all). Connects for named keys first wait for
 * the loop's next turn and are asked of the store together (held_flush):
 * on PostgreSQL the keys that are held get their tokens in one round trip
 * for the whole batch, instead of two round trips each.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/json_util.h"
#include "../common/log.h"
#include "../common/names.h"
#include "../common/wire.h"
#include "../common/xalloc.h"
#include "controller.h"

#define ATTEMPTS 3

enum outcome { DONE, RETRY_ACQUIRE, RETRY_REMOVE };

static bool opt_str(const json_t *o, const char *k, const char **out)
{
    const json_t *v = json_object_get(o, k);

    *out = NULL;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_string(v))
        return false;
    *out = json_string_value(v);
    return true;
}

static bool opt_i32(const json_t *o, const char *k, int64_t *out)
{
    const json_t *v = json_object_get(o, k);

    *out = CONNECT_UNSET;
    if (!v || json_is_null(v))
        return true;
    if (!json_is_integer(v) || json_integer_value(v) < INT32_MIN || json_integer_value(v) > INT32_MAX)
        return false;
    *out = json_integer_value(v);
    return true;
}

#define BAD(msg) (buf_append_str(why, msg), false)

bool connect_request_parse(const json_t *j, struct connect_req *r, struct buf *why)
{
    const json_t *key = json_object_get(j, "key");
    const json_t *auth = json_object_get(j, "auth");
    const json_t *b;

    memset(r, 0, sizeof(*r));
    r->lifetime_s = r->idle_s = CONNECT_UNSET;
    if (!json_is_object(j))
        return BAD("expected a ConnectRequest object");
    if (key && !json_is_null(key)) {
        if (!json_is_object(key) || !json_is_string(json_object_get(key, "name")) ||
            !opt_str(key, "namespace", &r->key_ns) || !opt_str(key, "tag", &r->key_tag))
            return BAD("key: expected {\"name\":string,\"namespace\"?:string,\"tag\"?:string}");
        r->key_name = json_string_value(json_object_get(key, "name"));
    }
    if (!opt_str(j, "user", &r->user))
        return BAD("user: expected a string or null");
    if (auth && !json_is_object(auth))
        return BAD("auth: expected an object");
    json_t *sorted = auth ? json_sorted_copy(auth) : json_object();
    r->auth = json_dumps(sorted, JSON_COMPACT);
    json_decref(sorted);
    r->spawn = json_object_get(j, "spawn_config");
    if (r->spawn && json_is_null(r->spawn))
        r->spawn = NULL;
    if (r->spawn) {
        const json_t *s = r->spawn;
        if (!json_is_object(s) || !opt_str(s, "id", &r->id) || !opt_str(s, "cluster", &r->cluster) ||
            !opt_str(s, "pool", &r->pool) || !opt_str(s, "subdomain", &r->subdomain) ||
            !opt_i32(s, "lifetime_limit_seconds", &r->lifetime_s) || !opt_i32(s, "max_idle_seconds", &r->idle_s))
            return BAD("spawn_config: a field has the wrong type");
        r->executable = json_object_get(s, "executable");
        if (!r->executable)
            return BAD("spawn_config: missing field `executable`");
        b = json_object_get(s, "use_static_token");
        if (b && !json_is_null(b) && !json_is_boolean(b))
            return BAD("spawn_config.use_static_token: expected a boolean");
        r->static_token = json_is_true(b);
        const json_t *idle = json_object_get(s, "idle");
        if (idle && !json_is_null(idle) &&
            (!json_is_string(idle) ||
             (strcmp(json_string_value(idle), "freeze") != 0 && strcmp(json_string_value(idle), "terminate") != 0)))
            return BAD("spawn_config.idle: expected \"freeze\" or \"terminate\"");
        r->idle_freeze = idle && json_is_string(idle) && strcmp(json_string_value(idle), "freeze") == 0;
        /* Plane accepts any id here and fails later on reads (§0 quirk 20); refuse it up front. */
        if (r->id && !name_is_valid(r->id, NULL))
            return BAD("spawn_config.id: only [a-z0-9-], at most 45 chars");
    }
    if (!r->key_name) {
        r->generated_key = name_random("lk");
        r->key_name = r->generated_key;
    }
    if (!r->key_ns)
        r->key_ns = "";
    if (!r->key_tag)
        r->key_tag = "";
    return true;
}

/* A cluster is HTTPS when it has no port or port 443 (§3.4). */
static bool cluster_https(const char *cluster)
{
    const char *colon = strchr(cluster, ':');

    return !colon || strcmp(colon + 1, "443") == 0;
}

bool cluster_valid(const char *cluster)
{
    const char *colon = strchr(cluster, ':');
    size_t hlen = colon ? (size_t)(colon - cluster) : strlen(cluster);

    if (hlen == 0 || hlen > 253)
        return false;
    for (size_t i = 0; i < hlen; i++) {
        char ch = cluster[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
              ch == '.'))
            return false;
    }
    if (colon) {
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1 || port < 0 || port > 65535)
            return false;
    }
    return true;
}

/* An error answer to a connect, counted. */
static void conn_error(struct controller *c, struct http_request *http, int status, const char *kind,
                       const char *message)
{
    metric_counter_add(c->connects_failed, 1);
    api_error(http, status, kind, message);
}

/* A store failure answering a connect: 503 when the database is unreachable, else 500. */
static void store_error(struct controller *c, struct http_request *http, int rc)
{
    metric_counter_add(c->connects_failed, 1);
    api_store_error(http, rc, "Internal error.");
}

static void respond(struct controller *c, struct http_request *http, const char *backend_id, bool spawned,
                    enum backend_status status, const char *token, const char *secret, const char *cluster,
                    const char *subdomain, const char *drone)
{
    char *url = subdomain ? xasprintf("%s://%s.%s/%s/", cluster_https(cluster) ? "https" : "http", subdomain,
                                      cluster, token)
                          : xasprintf("%s://%s/%s/", cluster_https(cluster) ? "https" : "http", cluster, token);
    char *status_url = xasprintf("%s/pub/b/%s/status", c->status_base, backend_id);
    json_t *o = json_object();

    json_object_set_new(o, "backend_id", json_string(backend_id));
    json_object_set_new(o, "spawned", json_boolean(spawned));
    json_object_set_new(o, "status", json_string(backend_status_name(status)));
    json_object_set_new(o, "token", json_string(token));
    json_object_set_new(o, "url", json_string(url));
    json_object_set_new(o, "subdomain", subdomain ? json_string(subdomain) : json_null());
    json_object_set_new(o, "secret_token", secret ? json_string(secret) : json_null());
    json_object_set_new(o, "status_url", json_string(status_url));
    json_object_set_new(o, "drone", drone ? json_string(drone) : json_null());
    metric_counter_add(spawned ? c->connects_spawned : c->connects_existing, 1);
    http_respond_json(http, 200, o, NULL);
    free(url);
    free(status_url);
}

/* A fresh token and secret for backend_id (§5.2.1 step 7). 0 or -EIO. */
static int new_token(struct controller *c, const char *backend_id, const struct connect_req *r, char **token,
                     char **secret)
{
    *token = token_random();
    *secret = token_random();
    return STORE_CALL(c->store, token_create, *token, backend_id, r->user, r->auth, *secret,
                      controller_now() + TOKEN_LIFETIME_MS);
}

/* The answer for a key already held: its backend, with token (and secret, unless a static token). */
static void respond_held(struct controller *c, struct http_request *http, const struct key_row *key,
                         const char *token, const char *secret)
{
    respond(c, http, key->backend_id, false, key->status, token, secret, key->cluster, key->subdomain, NULL);
}

static enum outcome existing(struct controller *c, struct http_request *http, const struct connect_req *r,
                             const struct key_row *key)
{
    char *token = NULL, *secret = NULL;
    int rc;

    if (strcmp(key->tag, r->key_tag) != 0) {
        conn_error(c, http, 409, "KeyHeld", "Lock is held but tag does not match.");
        return DONE;
    }
    if (key->static_token)
        respond_held(c, http, key, key->static_token, NULL);
    else if ((rc = new_token(c, key->backend_id, r, &token, &secret)) < 0)
        store_error(c, http, rc);
    else
        respond_held(c, http, key, token, secret);
    if (key->frozen)
        controller_thaw_if_frozen(c, key->backend_id, false);
    free(token);
    free(secret);
    return DONE;
}

static enum outcome attempt(struct controller *c, struct http_request *http, const struct connect_req *r)
{
    int64_t now = controller_now();
    struct key_row key;
    int rc = STORE_CALL(c->store, key_get, r->key_ns, r->key_name, &key);

    if (rc == 0) {
        if (now < key.expires_at) {
            enum outcome o = existing(c, http, r, &key);
            key_row_release(&key);
            return o;
        }
        key_row_release(&key);
        bool deleted = false;
        if ((rc = STORE_CALL(c->store, key_delete_expired, r->key_ns, r->key_name, now, &deleted)) < 0) {
            store_error(c, http, rc);
            return DONE;
        }
        if (!deleted)
            return RETRY_REMOVE;
    } else if (rc != -ENOENT) {
        store_error(c, http, rc);
        return DONE;
    }

    if (!r->spawn) {
        conn_error(c, http, 409, "KeyUnheldNoSpawnConfig", "Lock is unheld but no spawn config was provided.");
        return DONE;
    }
    const char *cluster = r->cluster ? r->cluster : c->default_cluster;
    if (!cluster) {
        conn_error(c, http, 400, "NoClusterProvided", "No cluster provided, and no default cluster for this controller.");
        return DONE;
    }
    if (!cluster_valid(cluster)) {
        conn_error(c, http, 400, "InvalidClusterName", "Invalid cluster name");
        return DONE;
    }

    int64_t drone_id, clock_offset, local_time;
    char *drone_name = NULL;
    /* A drone we would call lost is no candidate either. */
    int64_t healthy = c->lost_after_ms > 0 && c->lost_after_ms < DRONE_HEALTHY_MS ? c->lost_after_ms : DRONE_HEALTHY_MS;
    rc = STORE_CALL(c->store, drone_pick, cluster, r->pool ? r->pool : "", now - healthy, c->best_of,
                    &drone_id, &drone_name, &clock_offset);
    if (rc == -ENOENT) {
        conn_error(c, http, 500, "NoDroneAvailable", "No active drone available.");
        return DONE;
    }
    if (rc < 0) {
        store_error(c, http, rc);
        return DONE;
    }

    int64_t fencing;
    if ((rc = STORE_CALL(c->store, fencing_next, &fencing)) < 0) {
        free(drone_name);
        store_error(c, http, rc);
        return DONE;
    }
    char *backend_id = r->id ? xstrdup(r->id) : name_random(NULL);
    char *static_token = r->static_token ? token_static_random() : NULL;
    char *action_id = name_random("ak");
    /* Deadlines are in the drone's clock, not ours (§12): its clock now, from the offset
     * seen at its last heartbeat. (Plane uses the heartbeat's time itself, up to a
     * heartbeat interval or more in the past, which can put a short lease's deadlines
     * behind the drone's clock at spawn.) Hard equals soft in Plane's first deadlines
     * (quirk 4). */
    local_time = now + clock_offset;
    json_t *spawn = json_object();
    json_object_set_new(spawn, "executable", json_deep_copy(r->executable));
    json_object_set_new(spawn, "key",
                        json_pack("{s:{s:s, s:s, s:s}, s:{s:I, s:I, s:I}, s:I}", "key", "name", r->key_name,
                                  "namespace", r->key_ns, "tag", r->key_tag, "deadlines", "renew_at",
                                  (json_int_t)(local_time + KEY_RENEW_MS(c)), "soft_terminate_at",
                                  (json_int_t)(local_time + KEY_SOFT_MS(c)), "hard_terminate_at",
                                  (json_int_t)(local_time + KEY_SOFT_MS(c)), "token", (json_int_t)fencing));
    json_object_set_new(spawn, "static_token", static_token ? json_string(static_token) : json_null());
    json_t *body = controller_action_body(action_id, backend_id, drone_id, wire_variant("Spawn", spawn));
    char *body_text = wire_text(body);
    struct new_backend nb = {
        .id = backend_id,
        .cluster = cluster,
        .static_token = static_token,
        .subdomain = r->subdomain,
        .drone_id = drone_id,
        /* Any value counts, as in Plane: <= 0 is swept once the backend has left scheduled. */
        .has_lifetime = r->lifetime_s != CONNECT_UNSET,
        .lifetime_ms = r->lifetime_s != CONNECT_UNSET ? r->lifetime_s * 1000 : 0,
        .has_max_idle = r->idle_s != CONNECT_UNSET,
        .max_idle_ms = r->idle_s != CONNECT_UNSET ? r->idle_s * 1000 : 0,
        .idle_freeze = r->idle_freeze,
        .key_namespace = r->key_ns,
        .key_name = r->key_name,
        .key_tag = r->key_tag,
        .key_expires_at = now + KEY_EXPIRY_MS(c),
        .fencing_token = fencing,
        .action_id = action_id,
        .action_json = body_text,
        .now = now,
    };
    enum outcome o = DONE;
    rc = STORE_CALL(c->store, backend_create, &nb);
    if (rc == -EEXIST) {
        o = RETRY_ACQUIRE;
    } else if (rc < 0) {
        store_error(c, http, rc);
    } else {
        char drone_key[32];
        json_t *payload = json_pack("{s:{s:s}, s:I}", "state", "status", "scheduled", "time", (json_int_t)now);
        events_publish(c->events, EVENT_BACKEND_STATE, backend_id, payload);
        json_decref(payload);
        snprintf(drone_key, sizeof(drone_key), "%lld", (long long)drone_id);
        events_publish(c->events, EVENT_BACKEND_ACTION, drone_key, body);
        log_info("backend %s: scheduled on %s for key '%s'", backend_id, drone_name, r->key_name);
        json_object_set_new(c->scheduled_at, backend_id, json_integer(now));
        char *token = NULL, *secret = NULL;
        if (static_token)
            respond(c, http, backend_id, true, BACKEND_SCHEDULED, static_token, NULL, cluster, r->subdomain,
                    drone_name);
        else if ((rc = new_token(c, backend_id, r, &token, &secret)) < 0)
            store_error(c, http, rc);
        else
            respond(c, http, backend_id, true, BACKEND_SCHEDULED, token, secret, cluster, r->subdomain, drone_name);
        free(token);
        free(secret);
    }
    json_decref(body);
    free(body_text);
    free(action_id);
    free(static_token);
    free(backend_id);
    free(drone_name);
    return o;
}

/* Every attempt a connect gets (3): the general path for any connect. */
static void connect_general(struct controller *c, struct http_request *http, const struct connect_req *r)
{
    enum outcome o = DONE;

    for (int i = 0; i < ATTEMPTS; i++) {
        o = attempt(c, http, r);
        if (o == DONE)
            break;
    }
    if (o == RETRY_ACQUIRE)
        conn_error(c, http, 500, "FailedToAcquireKey", "Failed to acquire lock.");
    else if (o == RETRY_REMOVE)
        conn_error(c, http, 409, "FailedToRemoveKey", "Failed to remove expired lock.");
}

/*
 * A connect for a named key, waiting for the loop's next batch: every such
 * connect that arrived in one turn of the loop is asked of the store at
 * once (store_connect_held: one round trip on PostgreSQL), and those whose
 * key is held are answered from it. The rest take the general path.
 */
struct held_wait {
    struct list_node node;
    struct http_request *http;
    json_t *body;          /* owned: r borrows from it */
    struct connect_req r;
};

#define HELD_BATCH_MAX 128 /* connects in one statement; more wait for the next turn */

static void held_wait_free(struct held_wait *w)
{
    connect_request_release(&w->r);
    json_decref(w->body);
    free(w);
}

static void held_abort(void *arg)
{
    struct held_wait *w = arg;

    list_remove(&w->node);
    held_wait_free(w);
}

static void held_flush(uv_idle_t *idle)
{
    struct controller *c = idle->data;
    struct held_wait *waits[HELD_BATCH_MAX];
    struct held_connect items[HELD_BATCH_MAX];
    char *secrets[HELD_BATCH_MAX], *tokens[HELD_BATCH_MAX];
    size_t n = 0;
    int64_t now = controller_now();

    /* Taken off the list and their abort hooks cleared first: the loop does not run until every one is answered. */
    while (n < HELD_BATCH_MAX && !list_empty(&c->held_connects)) {
        struct held_wait *w = list_entry(c->held_connects.next, struct held_wait, node);
        list_remove(&w->node);
        w->http->on_abort = NULL;
        w->http->abort_arg = NULL;
        waits[n] = w;
        tokens[n] = token_random();
        secrets[n] = token_random();
        items[n] = (struct held_connect){
            .ns = w->r.key_ns,
            .name = w->r.key_name,
            .tag = w->r.key_tag,
            .token = tokens[n],
            .secret = secrets[n],
            .user = w->r.user,
            .auth = w->r.auth,
            .token_expires_at = now + TOKEN_LIFETIME_MS,
            .now = now,
        };
        n++;
    }
    if (list_empty(&c->held_connects))
        uv_idle_stop(idle);
    int rc = n ? store_connect_held(c->store, items, n) : 0;
    for (size_t i = 0; i < n; i++) {
        struct held_wait *w = waits[i];
        const struct key_row *key = &items[i].key;
        if (rc < 0) {
            store_error(c, w->http, rc);
        } else if (items[i].token_made) {
            respond_held(c, w->http, key, tokens[i], secrets[i]);
            if (key->frozen)
                controller_thaw_if_frozen(c, key->backend_id, false);
        } else {
            connect_general(c, w->http, &w->r);
        }
        key_row_release(&items[i].key);
        free(tokens[i]);
        free(secrets[i]);
        held_wait_free(w);
    }
}

void connect_batch_init(struct controller *c)
{
    list_init(&c->held_connects);
    uv_idle_init(c->loop, &c->held_idle);
    c->held_idle.data = c;
}

void api_connect(struct controller *c, struct http_request *http)
{
    json_t *j = api_json_body(http);
    struct connect_req r;

    if (!j)
        return;
    struct buf why = BUF_INIT;
    if (!connect_request_parse(j, &r, &why)) {
        metric_counter_add(c->connects_failed, 1);
        api_unprocessable(http, buf_cstr(&why));
    } else if (!r.generated_key && !c->stopping) {
        /* A named key may be held: into the batch (r and j are the wait's now). */
        struct held_wait *w = xcalloc(1, sizeof(*w));
        w->http = http;
        w->body = j;
        w->r = r;
        http->on_abort = held_abort;
        http->abort_arg = w;
        list_insert_tail(&c->held_connects, &w->node);
        uv_idle_start(&c->held_idle, held_flush);
        buf_release(&why);
        return;
    } else {
        connect_general(c, http, &r);
    }
    connect_request_release(&r);
    buf_release(&why);
    json_decref(j);
}

void connect_request_release(struct connect_req *r)
{
    free(r->generated_key);
    free(r->auth);
    r->generated_key = r->auth = NULL;
}
