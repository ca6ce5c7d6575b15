/* SPDX-License-Identifier: MIT */
/*
 * store_pg.c - the controller's store on PostgreSQL (see store.h), for
 * several controllers on one database. Every operation means what it means
 * on SQLite (store_sqlite.c); the same unique indexes carry the invariants:
 * (namespace, key_name) on backend_key is what makes a key hold at most one
 * backend, whichever controller the connects arrive at.
 *
 * One connection, used synchronously from the controller's loop; each
 * statement is prepared once per connection. When the connection breaks the
 * operation fails with -ENOTCONN (the API answers 503) and is not retried:
 * whether a broken COMMIT took effect cannot be known, and every caller
 * already copes with a failed operation. The next operation reconnects, at
 * most every RECONNECT_MS, so a database that is down costs no time.
 *
 * Times are epoch milliseconds, as on SQLite; the controller reads them
 * from the database's clock (store_clock_offset). Fencing tokens come from
 * a sequence. Schema changes are numbered migrations (store_migrate.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "store.h"

#define MAX_STMTS 64
/* The database's time in epoch ms: keys expire by it, whatever the controllers' clocks say. */
#define DB_NOW "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
#define MAX_PARAMS 12
#define RECONNECT_MS 500

struct pg_store {
    struct store base; /* must be first */
    PGconn *conn;
    char *url;                 /* owned */
    int64_t next_connect;      /* boot ms before which no reconnect is tried */
    bool down_logged;
    bool in_tx;                /* BEGIN sent: a broken connection must not be replaced mid-transaction */
    struct {
        const char *sql;
        bool prepared;         /* on the current connection */
    } cache[MAX_STMTS];
    int ncache;
};

/* Parameters of one statement, as text (NULL is SQL NULL). */
struct params {
    const char *v[MAX_PARAMS];
    char num[MAX_PARAMS][24];
    int n;
};

static void p_str(struct params *p, const char *s)
{
    p->v[p->n++] = s;
}

static void p_int(struct params *p, int64_t x)
{
    snprintf(p->num[p->n], sizeof(p->num[p->n]), "%lld", (long long)x);
    p->v[p->n] = p->num[p->n];
    p->n++;
}

static struct pg_store *to_pg(struct store *s)
{
    if (s->ops != &store_pg_ops)
        BUG("not a postgres store");
    return (struct pg_store *)s;
}

/* ---- connection ---- */

static const char *pg_error(const struct pg_store *q)
{
    const char *e = q->conn ? PQerrorMessage(q->conn) : "not connected";
    return *e ? e : "unknown error";
}

/* Whether the connection is usable, reconnecting if it may (never inside a transaction). */
static bool connected(struct pg_store *q)
{
    if (q->conn && PQstatus(q->conn) == CONNECTION_OK)
        return true;
    if (q->in_tx)
        return false; /* what was written in it is gone: the transaction fails, it is not continued elsewhere */
    if (clock_boot_ms() < q->next_connect)
        return false;
    q->next_connect = clock_boot_ms() + RECONNECT_MS;
    if (q->conn)
        PQreset(q->conn);
    else
        q->conn = PQconnectdb(q->url);
    for (int i = 0; i < q->ncache; i++)
        q->cache[i].prepared = false;
    if (PQstatus(q->conn) != CONNECTION_OK) {
        if (!q->down_logged)
            log_error("store: cannot reach PostgreSQL: %s", pg_error(q));
        q->down_logged = true;
        return false;
    }
    if (q->down_logged)
        log_info("store: PostgreSQL reachable again");
    q->down_logged = false;
    return true;
}

/* A failure: -ENOTCONN when the connection is gone, -EEXIST on a unique violation, else -EIO. */
static int failed(struct pg_store *q, PGresult *r, const char *what)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    int rc;

    if (PQstatus(q->conn) != CONNECTION_OK) {
        log_error("store: %s: connection to PostgreSQL lost: %s", what, pg_error(q));
        rc = -ENOTCONN;
    } else if (state && strcmp(state, "23505") == 0) {
        rc = -EEXIST;
    } else {
        log_error("store: %s: %s", what, r ? PQresultErrorMessage(r) : pg_error(q));
        rc = -EIO;
    }
    PQclear(r);
    return rc;
}

/*
 * Runs sql (a string literal: its address names the prepared statement)
 * with p. A result of status ok (PGRES_COMMAND_OK or PGRES_TUPLES_OK), or
 * NULL with *rc set.
 */
static PGresult *run(struct pg_store *q, const char *sql, const struct params *p, const char *what, int *rc)
{
    char name[16];
    int i;
    PGresult *r;

    *rc = 0;
    if (!connected(q)) {
        *rc = -ENOTCONN;
        return NULL;
    }
    for (i = 0; i < q->ncache && q->cache[i].sql != sql; i++)
        ;
    if (i == q->ncache) {
        if (q->ncache == MAX_STMTS)
            BUG("statement cache full");
        q->cache[q->ncache].sql = sql;
        q->cache[q->ncache++].prepared = false;
    }
    snprintf(name, sizeof(name), "s%d", i);
    if (!q->cache[i].prepared) {
        r = PQprepare(q->conn, name, sql, 0, NULL);
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
            *rc = failed(q, r, what);
            return NULL;
        }
        PQclear(r);
        q->cache[i].prepared = true;
    }
    r = PQexecPrepared(q->conn, name, p ? p->n : 0, p ? p->v : NULL, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        *rc = failed(q, r, what);
        return NULL;
    }
    return r;
}

/* run() for a statement that must find a row: NULL with *rc = -ENOENT when it finds none. */
static PGresult *run_row(struct pg_store *q, const char *sql, const struct params *p, const char *what, int *rc)
{
    PGresult *r = run(q, sql, p, what, rc);

    if (r && PQntuples(r) == 0) {
        PQclear(r);
        *rc = -ENOENT;
        return NULL;
    }
    return r;
}

/* Runs sql for its effect; *changed (if not NULL) says whether it touched a row. */
static int exec_p(struct pg_store *q, const char *sql, const struct params *p, const char *what, bool *changed)
{
    int rc;
    PGresult *r = run(q, sql, p, what, &rc);

    if (changed)
        *changed = r && atoi(PQcmdTuples(r)) > 0;
    PQclear(r);
    return rc;
}

static int simple(struct pg_store *q, const char *sql, const char *what)
{
    PGresult *r;

    if (!connected(q))
        return -ENOTCONN;
    r = PQexec(q->conn, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        return failed(q, r, what);
    PQclear(r);
    return 0;
}

static int begin(struct pg_store *q)
{
    int rc = simple(q, "BEGIN", "begin");

    q->in_tx = rc == 0;
    return rc;
}

/* Ends the transaction: COMMIT if rc is 0 and the session that began it is still there, else ROLLBACK. */
static int commit(struct pg_store *q, int rc)
{
    bool same_session = PQstatus(q->conn) == CONNECTION_OK && PQtransactionStatus(q->conn) == PQTRANS_INTRANS;

    if (rc == 0 && !same_session)
        rc = PQstatus(q->conn) == CONNECTION_OK ? -EIO : -ENOTCONN;
    if (rc == 0)
        rc = simple(q, "COMMIT", "commit");
    else if (PQstatus(q->conn) == CONNECTION_OK)
        simple(q, "ROLLBACK", "rollback");
    q->in_tx = false;
    return rc;
}

static char *val(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : xstrdup(PQgetvalue(r, row, col));
}

static int64_t ival(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static bool bval(const PGresult *r, int row, int col)
{
    return !PQgetisnull(r, row, col) && PQgetvalue(r, row, col)[0] == 't';
}

static bool parse_state(const char *text, struct backend_state *out)
{
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    struct buf err = BUF_INIT;
    bool ok = j && backend_state_from_json(j, out, &err) == 0;

    json_decref(j);
    buf_release(&err);
    return ok;
}

/* ---- schema ---- */

/*
 * Migration N brings the schema from version N-1 to N. Append, never edit:
 * a database records the version it is at, and a controller refuses one
 * newer than it knows.
 */
static const char *const migrations[] = {
    "CREATE TABLE node (id bigserial PRIMARY KEY, kind text NOT NULL, name text NOT NULL, cluster text,"
    " plane_version text, plane_hash text, controller text, ip text, last_connection_start_time bigint);"
    "CREATE UNIQUE INDEX node_cluster_name ON node(cluster, name);"
    "CREATE TABLE drone (id bigint PRIMARY KEY REFERENCES node(id), ready boolean NOT NULL DEFAULT true,"
    " draining boolean NOT NULL DEFAULT false, last_heartbeat bigint, last_local_time bigint,"
    " pool text NOT NULL DEFAULT '');"
    "CREATE TABLE backend (id text PRIMARY KEY, cluster text NOT NULL, last_status text NOT NULL,"
    " last_status_time bigint NOT NULL, last_status_number integer, cluster_address text,"
    " drone_id bigint NOT NULL, expiration_time bigint, last_keepalive bigint NOT NULL,"
    " allowed_idle_ms bigint, state text NOT NULL, static_token text, subdomain text);"
    "CREATE INDEX backend_drone ON backend(drone_id, last_status);"
    "CREATE UNIQUE INDEX backend_static_token ON backend(static_token);"
    "CREATE TABLE backend_state (id bigserial PRIMARY KEY, backend_id text NOT NULL, state text NOT NULL,"
    " created_at bigint NOT NULL);"
    "CREATE INDEX backend_state_backend ON backend_state(backend_id, id);"
    "CREATE TABLE backend_action (id text PRIMARY KEY, backend_id text NOT NULL, drone_id bigint NOT NULL,"
    " action text NOT NULL, created_at bigint NOT NULL, acked_at bigint, seq bigserial);"
    "CREATE INDEX backend_action_pending ON backend_action(drone_id, acked_at, created_at);"
    "CREATE TABLE backend_key (id text PRIMARY KEY, namespace text NOT NULL, key_name text NOT NULL,"
    " tag text NOT NULL, expires_at bigint NOT NULL, fencing_token bigint NOT NULL,"
    " allow_renew boolean NOT NULL DEFAULT true);"
    "CREATE UNIQUE INDEX backend_key_name ON backend_key(namespace, key_name);"
    "CREATE TABLE token (token text PRIMARY KEY, backend_id text NOT NULL, expiration_time bigint NOT NULL,"
    " username text, auth text NOT NULL, secret_token text NOT NULL);"
    "CREATE INDEX token_backend ON token(backend_id);"
    /* Counted, never read from a clock; started at the time in ms, as tokens once were. */
    "CREATE SEQUENCE fencing_token;"
    "SELECT setval('fencing_token', (extract(epoch FROM clock_timestamp()) * 1000)::bigint);",
    /* 2: ACME DNS-01 certificate leases and TXT values (§10.1). */
    "CREATE TABLE acme_txt_entries (cluster text PRIMARY KEY, leased_at bigint NOT NULL,"
    " leased_by bigint NOT NULL, txt_value text);",
    /* 3: backends frozen, not swept, when idle (our extension). */
    "CREATE TABLE backend_idle_freeze (id text PRIMARY KEY);",
    /* 4: the highest fencing token each key was given, for a while (see backend_create). */
    "CREATE TABLE key_fence (namespace text NOT NULL, key_name text NOT NULL, last_token bigint NOT NULL,"
    " updated_at bigint NOT NULL, PRIMARY KEY (namespace, key_name));",
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* Applies what is missing, under a lock (a number of our own) that keeps controllers starting together in line. */
static int apply_migrations(struct pg_store *q, struct buf *err)
{
    PGresult *r;
    int version, rc = begin(q);

    if (rc == 0)
        rc = simple(q, "SELECT pg_advisory_xact_lock(7461626)", "schema lock");
    if (rc == 0)
        rc = simple(q, "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)", "schema");
    if (rc < 0) {
        buf_printf(err, "cannot prepare the schema: %s", pg_error(q));
        return commit(q, rc);
    }
    r = PQexec(q->conn, "SELECT coalesce(max(version), 0) FROM schema_version");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        buf_printf(err, "cannot read the schema version: %s", PQresultErrorMessage(r));
        PQclear(r);
        return commit(q, -EIO);
    }
    version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (version > SCHEMA_VERSION) {
        buf_printf(err, "the database's schema is version %d, newer than this plane knows (%d): upgrade plane",
                   version, SCHEMA_VERSION);
        return commit(q, -EPROTO);
    }
    for (int v = version; v < SCHEMA_VERSION && rc == 0; v++) {
        char set[96];
        log_info("store: migrating the schema to version %d", v + 1);
        snprintf(set, sizeof(set), "DELETE FROM schema_version; INSERT INTO schema_version VALUES(%d)", v + 1);
        if ((rc = simple(q, migrations[v], "migration")) == 0)
            rc = simple(q, set, "schema version");
        if (rc < 0)
            buf_printf(err, "schema migration %d failed: %s", v + 1, pg_error(q));
    }
    return commit(q, rc);
}

/* ---- open/close ---- */

char *store_pg_conninfo(const char *url)
{
    /*
     * Unless the URL says otherwise: fail fast when the server cannot be
     * reached, and notice within seconds a server that stops answering (the
     * loop waits on every statement), rather than after TCP's minutes.
     */
    static const char *const defaults[][2] = {
        {"connect_timeout=", "3"},   {"keepalives=", "1"},        {"keepalives_idle=", "5"},
        {"keepalives_interval=", "2"}, {"keepalives_count=", "3"}, {"tcp_user_timeout=", "10000"},
        {"options=", "-c%20statement_timeout%3D10000"},
    };
    char *out = xstrdup(url);

    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        if (strstr(url, defaults[i][0]))
            continue;
        char *next = xasprintf("%s%s%s%s", out, strchr(out, '?') ? "&" : "?", defaults[i][0], defaults[i][1]);
        free(out);
        out = next;
    }
    return out;
}

/* Notices ("already exists, skipping") are not the operator's business. */
static void quiet(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static int pg_open(struct store **out, const char *url, struct buf *err)
{
    struct pg_store *q = xcalloc(1, sizeof(*q));
    int rc;

    q->base.ops = &store_pg_ops;
    q->url = store_pg_conninfo(url);
    q->conn = PQconnectdb(q->url);
    if (PQstatus(q->conn) != CONNECTION_OK) {
        buf_printf(err, "cannot connect to PostgreSQL: %s", pg_error(q));
        rc = -ENOTCONN;
        goto fail;
    }
    PQsetNoticeProcessor(q->conn, quiet, NULL);
    if ((rc = apply_migrations(q, err)) < 0)
        goto fail;
    *out = &q->base;
    return 0;
fail:
    PQfinish(q->conn);
    free(q->url);
    free(q);
    return rc;
}

static void pg_close(struct store *s)
{
    struct pg_store *q = to_pg(s);

    PQfinish(q->conn);
    free(q->url);
    free(q);
}

static int pg_ping(struct store *s)
{
    static const char sql[] = "SELECT 1";
    return exec_p(to_pg(s), sql, NULL, "ping", NULL);
}

static int pg_clock(struct store *s, int64_t *db_ms)
{
    static const char sql[] = "SELECT " DB_NOW;
    int rc;
    PGresult *r = run(to_pg(s), sql, NULL, "clock", &rc);

    if (r)
        *db_ms = ival(r, 0, 0);
    PQclear(r);
    return rc;
}

/* ---- nodes ---- */

static int pg_node_connect(struct store *s, enum node_kind kind, const char *name, const char *cluster,
                           const char *ip, const char *controller, const char *pool, int64_t now, int64_t *node_id)
{
    struct pg_store *q = to_pg(s);
    static const char upsert[] =
        "INSERT INTO node(kind, name, cluster, plane_version, plane_hash, controller, ip, last_connection_start_time)"
        " VALUES($1, $2, $3, '0.5.5', '', $4, $5, $6) ON CONFLICT(cluster, name) DO UPDATE SET"
        " kind = excluded.kind, controller = excluded.controller, ip = excluded.ip,"
        " last_connection_start_time = excluded.last_connection_start_time RETURNING id";
    static const char drone_sql[] = "INSERT INTO drone(id, pool) VALUES($1, $2) ON CONFLICT(id) DO UPDATE SET"
                                    " ready = true"; /* pool only on first insert (§7.3 quirk) */
    struct params p = {0};
    PGresult *r;
    int rc = begin(q);

    if (rc < 0)
        return rc;
    p_str(&p, node_kind_name(kind));
    p_str(&p, name);
    p_str(&p, cluster);
    p_str(&p, controller);
    p_str(&p, ip);
    p_int(&p, now);
    if (!(r = run(q, upsert, &p, "node upsert", &rc)))
        return commit(q, rc);
    *node_id = ival(r, 0, 0);
    PQclear(r);
    if (kind == NODE_DRONE) {
        struct params d = {0};
        p_int(&d, *node_id);
        p_str(&d, pool ? pool : "");
        rc = exec_p(q, drone_sql, &d, "drone upsert", NULL);
    }
    return commit(q, rc);
}

static int pg_node_disconnect(struct store *s, int64_t node_id, const char *controller, int64_t connected_at)
{
    static const char sql[] = "UPDATE node SET controller = NULL WHERE id = $1 AND controller = $2"
                              " AND last_connection_start_time = $3";
    struct params p = {0};

    p_int(&p, node_id);
    p_str(&p, controller);
    p_int(&p, connected_at);
    return exec_p(to_pg(s), sql, &p, "node disconnect", NULL);
}

static int pg_drone_heartbeat(struct store *s, int64_t node_id, int64_t local_time, int64_t now)
{
    static const char sql[] = "UPDATE drone SET last_heartbeat = $2, last_local_time = $3 WHERE id = $1";
    struct params p = {0};

    p_int(&p, node_id);
    p_int(&p, now);
    p_int(&p, local_time);
    return exec_p(to_pg(s), sql, &p, "heartbeat", NULL);
}

static int pg_drone_drain(struct store *s, const char *cluster, const char *name, bool *updated)
{
    struct pg_store *q = to_pg(s);
    static const char find[] = "SELECT node.id, node.kind, drone.draining FROM node LEFT JOIN drone"
                               " ON drone.id = node.id WHERE node.cluster = $1 AND node.name = $2";
    static const char set[] = "UPDATE drone SET draining = true WHERE id = $1";
    struct params p = {0};
    int rc;
    PGresult *r;

    p_str(&p, cluster);
    p_str(&p, name);
    if (!(r = run_row(q, find, &p, "drain", &rc)))
        return rc;
    int64_t id = ival(r, 0, 0);
    bool is_drone = strcmp(PQgetvalue(r, 0, 1), "Drone") == 0;
    *updated = !PQgetisnull(r, 0, 2) && !bval(r, 0, 2);
    PQclear(r);
    if (!is_drone)
        return -EINVAL;
    struct params d = {0};
    p_int(&d, id);
    return exec_p(q, set, &d, "drain", NULL);
}

static int pg_cluster_state(struct store *s, const char *cluster, int64_t now, json_t **out)
{
    static const char sql[] =
        "SELECT node.kind, node.name, node.plane_version, node.plane_hash, node.controller,"
        " drone.ready, drone.draining, drone.last_heartbeat,"
        " (SELECT count(*) FROM backend WHERE backend.drone_id = node.id AND last_status != 'terminated')"
        " FROM node LEFT JOIN drone ON drone.id = node.id"
        " WHERE node.cluster = $1 AND node.controller IS NOT NULL ORDER BY node.id";
    struct params p = {0};
    int rc;
    PGresult *r;

    p_str(&p, cluster);
    if (!(r = run(to_pg(s), sql, &p, "cluster state", &rc)))
        return rc;
    json_t *drones = json_array(), *proxies = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        const char *kind = PQgetvalue(r, i, 0);
        json_t *node = json_pack("{s:{s:s}, s:s, s:s, s:s, s:i}", "name", kind, PQgetvalue(r, i, 1),
                                 "plane_version", PQgetvalue(r, i, 2), "plane_hash", PQgetvalue(r, i, 3),
                                 "controller", PQgetvalue(r, i, 4), "controller_heartbeat_age", 0);
        if (strcmp(kind, "Drone") == 0) {
            int64_t hb = PQgetisnull(r, i, 7) ? now : ival(r, i, 7);
            json_array_append_new(drones, json_pack("{s:b, s:b, s:I, s:I, s:o}", "ready", bval(r, i, 5), "draining",
                                                    bval(r, i, 6), "last_heartbeat_age",
                                                    (json_int_t)((now - hb) / 1000), "backend_count",
                                                    (json_int_t)ival(r, i, 8), "node", node));
        } else if (strcmp(kind, "Proxy") == 0) {
            json_array_append_new(proxies, node);
        } else {
            json_decref(node);
        }
    }
    PQclear(r);
    *out = json_pack("{s:o, s:o}", "drones", drones, "proxies", proxies);
    return 0;
}

static int pg_drone_pick(struct store *s, const char *cluster, const char *pool, int64_t healthy_since, int best_of,
                         int64_t *drone_id, char **drone_name, int64_t *clock_offset)
{
    static const char sql[] =
        "SELECT id, name, off, n FROM (SELECT node.id, node.name,"
        " drone.last_local_time - drone.last_heartbeat AS off,"
        " (SELECT count(*) FROM backend WHERE backend.drone_id = node.id AND last_status != 'terminated') AS n"
        " FROM node JOIN drone ON drone.id = node.id WHERE node.cluster = $1 AND drone.pool = $2"
        " AND drone.ready AND NOT drone.draining AND drone.last_local_time IS NOT NULL"
        " AND drone.last_heartbeat > $3 AND node.controller IS NOT NULL ORDER BY random() LIMIT $4) AS c"
        " ORDER BY n LIMIT 1";
    struct params p = {0};
    int rc;
    PGresult *r;

    p_str(&p, cluster);
    p_str(&p, pool ? pool : "");
    p_int(&p, healthy_since);
    p_int(&p, best_of > 0 ? best_of : 2);
    if (!(r = run_row(to_pg(s), sql, &p, "schedule", &rc)))
        return rc;
    *drone_id = ival(r, 0, 0);
    *drone_name = val(r, 0, 1);
    *clock_offset = ival(r, 0, 2);
    PQclear(r);
    return rc;
}

/* ---- keys, backends, tokens ---- */

/*
 * A key_row from row's columns col.. in this order: backend id, tag,
 * expires_at, fencing_token, the backend's cluster, static_token,
 * subdomain, status number, frozen.
 */
static void key_row_read(const PGresult *r, int row, int col, struct key_row *out)
{
    out->backend_id = val(r, row, col);
    out->tag = val(r, row, col + 1);
    out->expires_at = ival(r, row, col + 2);
    out->fencing_token = ival(r, row, col + 3);
    out->cluster = val(r, row, col + 4);
    out->static_token = val(r, row, col + 5);
    out->subdomain = val(r, row, col + 6);
    out->status = (enum backend_status)ival(r, row, col + 7);
    out->frozen = bval(r, row, col + 8);
}

static int pg_key_get(struct store *s, const char *ns, const char *name, struct key_row *out)
{
    static const char sql[] =
        "SELECT backend_key.id, tag, expires_at, fencing_token, backend.cluster, backend.static_token,"
        " backend.subdomain, backend.last_status_number, (backend.state::jsonb ->> 'frozen') = 'true'"
        " FROM backend_key JOIN backend ON backend.id = backend_key.id WHERE namespace = $1 AND key_name = $2";
    struct params p = {0};
    int rc;
    PGresult *r;

    memset(out, 0, sizeof(*out));
    p_str(&p, ns);
    p_str(&p, name);
    if (!(r = run_row(to_pg(s), sql, &p, "key lookup", &rc)))
        return rc;
    key_row_read(r, 0, 0, out);
    PQclear(r);
    return rc;
}

/*
 * Every connect of a batch in one statement (one round trip, one implicit
 * transaction): the keys with their backends, and a token for each held
 * one, decided by the database's clock. The batch travels as one JSON array.
 */
static int pg_connect_held(struct store *s, struct held_connect *items, size_t n)
{
    static const char sql[] =
        "WITH req AS (SELECT * FROM json_to_recordset($1::json) AS r(i int, ns text, name text, tag text,"
        " token text, secret text, username text, auth text, texp bigint)),"
        " k AS (SELECT req.*, bk.id, bk.tag AS key_tag, bk.expires_at, bk.fencing_token, b.cluster, b.static_token,"
        " b.subdomain, b.last_status_number, (b.state::jsonb ->> 'frozen') = 'true' AS frozen,"
        " bk.expires_at > " DB_NOW " AND bk.tag = req.tag AND b.static_token IS NULL AS take"
        " FROM req JOIN backend_key bk ON bk.namespace = req.ns AND bk.key_name = req.name"
        " JOIN backend b ON b.id = bk.id),"
        " ins AS (INSERT INTO token(token, backend_id, expiration_time, username, auth, secret_token)"
        " SELECT token, id, texp, username, auth, secret FROM k WHERE take)"
        " SELECT i, id, key_tag, expires_at, fencing_token, cluster, static_token, subdomain, last_status_number,"
        " frozen, take FROM k";
    json_t *batch = json_array();
    struct params p = {0};
    int rc;
    PGresult *r;

    for (size_t i = 0; i < n; i++) {
        const struct held_connect *h = &items[i];
        json_array_append_new(batch, json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:s?, s:s, s:I}", "i", (json_int_t)i,
                                               "ns", h->ns, "name", h->name, "tag", h->tag, "token", h->token,
                                               "secret", h->secret, "username", h->user, "auth", h->auth, "texp",
                                               (json_int_t)h->token_expires_at));
    }
    char *text = json_dumps(batch, JSON_COMPACT);
    json_decref(batch);
    if (!text)
        return -EIO; /* a string jansson cannot write (not UTF-8): the JSON body it came from was checked */
    p_str(&p, text);
    r = run(to_pg(s), sql, &p, "connect batch", &rc);
    free(text);
    if (!r)
        return rc;
    for (int row = 0; row < PQntuples(r); row++) {
        int64_t i = ival(r, row, 0);
        if (i < 0 || (size_t)i >= n || items[i].found)
            continue;
        struct held_connect *h = &items[i];
        h->found = true;
        key_row_read(r, row, 1, &h->key);
        h->token_made = bval(r, row, 10);
    }
    PQclear(r);
    return 0;
}

static int pg_key_delete_expired(struct store *s, const char *ns, const char *name, int64_t now, bool *deleted)
{
    static const char sql[] = "DELETE FROM backend_key WHERE namespace = $1 AND key_name = $2 AND expires_at <= " DB_NOW;
    struct params p = {0};

    (void)now;
    p_str(&p, ns);
    p_str(&p, name);
    return exec_p(to_pg(s), sql, &p, "key delete", deleted);
}

static int insert_history(struct pg_store *q, const char *id, const char *state_json, int64_t now)
{
    static const char sql[] = "INSERT INTO backend_state(backend_id, state, created_at) VALUES($1, $2, $3)";
    struct params p = {0};

    p_str(&p, id);
    p_str(&p, state_json);
    p_int(&p, now);
    return exec_p(q, sql, &p, "history", NULL);
}

static int insert_action(struct pg_store *q, const char *action_id, const char *backend_id, int64_t drone_id,
                         const char *action_json, int64_t now)
{
    static const char sql[] =
        "INSERT INTO backend_action(id, backend_id, drone_id, action, created_at) VALUES($1, $2, $3, $4, $5)";
    struct params p = {0};

    p_str(&p, action_id);
    p_str(&p, backend_id);
    p_int(&p, drone_id);
    p_str(&p, action_json);
    p_int(&p, now);
    return exec_p(q, sql, &p, "action insert", NULL);
}

static int pg_backend_create(struct store *s, const struct new_backend *nb)
{
    struct pg_store *q = to_pg(s);
    static const char backend_sql[] =
        "INSERT INTO backend(id, cluster, last_status, last_status_time, last_status_number, drone_id,"
        " expiration_time, last_keepalive, allowed_idle_ms, state, static_token, subdomain)"
        " VALUES($1, $2, 'scheduled', $3, 10, $4, $5, $3, $6, '{\"status\":\"scheduled\"}', $7, $8)";
    /* The lease as the caller meant it (its expiry minus its now), from the database's now. */
    static const char key_sql[] = "INSERT INTO backend_key(id, namespace, key_name, tag, expires_at, fencing_token)"
                                  " VALUES($1, $2, $3, $4, " DB_NOW " + ($5::bigint - $7::bigint), $6)";
    static const char fence_sql[] =
        "INSERT INTO key_fence(namespace, key_name, last_token, updated_at) VALUES($1, $2, $3, $4)"
        " ON CONFLICT(namespace, key_name) DO UPDATE SET last_token = excluded.last_token,"
        " updated_at = excluded.updated_at WHERE key_fence.last_token < excluded.last_token";
    struct params b = {0}, k = {0};
    int rc = begin(q);

    if (rc < 0)
        return rc;
    p_str(&b, nb->id);
    p_str(&b, nb->cluster);
    p_int(&b, nb->now);
    p_int(&b, nb->drone_id);
    if (nb->has_lifetime)
        p_int(&b, nb->now + nb->lifetime_ms);
    else
        p_str(&b, NULL);
    if (nb->has_max_idle)
        p_int(&b, nb->max_idle_ms);
    else
        p_str(&b, NULL);
    p_str(&b, nb->static_token);
    p_str(&b, nb->subdomain);
    rc = exec_p(q, backend_sql, &b, "backend insert", NULL);
    if (rc == 0) {
        p_str(&k, nb->id);
        p_str(&k, nb->key_namespace);
        p_str(&k, nb->key_name);
        p_str(&k, nb->key_tag);
        p_int(&k, nb->key_expires_at);
        p_int(&k, nb->fencing_token);
        p_int(&k, nb->now);
        rc = exec_p(q, key_sql, &k, "key insert", NULL);
    }
    if (rc == 0) {
        /* Tokens come from a sequence outside this transaction: one taken earlier may commit after a
         * later one did for the same key. The key's high-water mark turns that into a retry. */
        struct params f = {0};
        bool raised = false;
        p_str(&f, nb->key_namespace);
        p_str(&f, nb->key_name);
        p_int(&f, nb->fencing_token);
        p_int(&f, nb->now);
        rc = exec_p(q, fence_sql, &f, "key fence", &raised);
        if (rc == 0 && !raised)
            rc = -EEXIST;
    }
    if (rc == 0)
        rc = insert_history(q, nb->id, "{\"status\":\"scheduled\"}", nb->now);
    if (rc == 0)
        rc = insert_action(q, nb->action_id, nb->id, nb->drone_id, nb->action_json, nb->now);
    if (rc == 0 && nb->idle_freeze) {
        static const char freeze_sql[] = "INSERT INTO backend_idle_freeze(id) VALUES($1)";
        struct params f = {0};
        p_str(&f, nb->id);
        rc = exec_p(q, freeze_sql, &f, "idle freeze insert", NULL);
    }
    return commit(q, rc);
}

static int pg_token_create(struct store *s, const char *token, const char *backend_id, const char *user,
                           const char *auth_json, const char *secret, int64_t expires_at)
{
    static const char sql[] = "INSERT INTO token(token, backend_id, expiration_time, username, auth, secret_token)"
                              " VALUES($1, $2, $3, $4, $5, $6)";
    struct params p = {0};

    p_str(&p, token);
    p_str(&p, backend_id);
    p_int(&p, expires_at);
    p_str(&p, user);
    p_str(&p, auth_json);
    p_str(&p, secret);
    return exec_p(to_pg(s), sql, &p, "token insert", NULL);
}

static int pg_backend_get(struct store *s, const char *id, struct backend_row *out)
{
    static const char sql[] =
        "SELECT backend.id, backend.cluster, backend.static_token, backend.subdomain, node.name, backend.drone_id,"
        " backend.state, backend.last_status_time, backend.expiration_time, backend.allowed_idle_ms,"
        " backend.last_keepalive FROM backend LEFT JOIN node ON node.id = backend.drone_id WHERE backend.id = $1";
    struct params p = {0};
    int rc;
    PGresult *r;

    memset(out, 0, sizeof(*out));
    p_str(&p, id);
    if (!(r = run_row(to_pg(s), sql, &p, "backend get", &rc)))
        return rc;
    out->id = val(r, 0, 0);
    out->cluster = val(r, 0, 1);
    out->static_token = val(r, 0, 2);
    out->subdomain = val(r, 0, 3);
    out->drone_name = val(r, 0, 4);
    out->drone_id = ival(r, 0, 5);
    if (!parse_state(PQgetvalue(r, 0, 6), &out->state))
        rc = -EIO;
    out->last_status_time = ival(r, 0, 7);
    out->expiration_time = ival(r, 0, 8);
    out->allowed_idle_ms = PQgetisnull(r, 0, 9) ? -1 : ival(r, 0, 9);
    out->last_keepalive = ival(r, 0, 10);
    PQclear(r);
    if (rc < 0)
        backend_row_release(out);
    return rc;
}

static int pg_backend_history(struct store *s, const char *id, store_history_fn *fn, void *arg)
{
    static const char sql[] = "SELECT state, created_at FROM backend_state WHERE backend_id = $1 ORDER BY id";
    struct params p = {0};
    int rc;
    PGresult *r;

    p_str(&p, id);
    if (!(r = run(to_pg(s), sql, &p, "history", &rc)))
        return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        struct backend_state bs;
        if (parse_state(PQgetvalue(r, i, 0), &bs))
            fn(arg, &bs, ival(r, i, 1));
    }
    PQclear(r);
    return 0;
}

static int pg_backend_update_state(struct store *s, const char *id, const struct backend_state *bs, int64_t now,
                                   bool release_key, bool *accepted)
{
    struct pg_store *q = to_pg(s);
    /* States only move forward, but a ready one may be frozen and thawed (same number, new state). */
    static const char sql[] = "UPDATE backend SET last_status = $2, last_status_time = $3, last_status_number = $4,"
                              " state = $5, cluster_address = $6 WHERE id = $1"
                              " AND (last_status_number IS NULL OR last_status_number < $4"
                              " OR ($4 = 50 AND last_status_number = 50 AND state != $5))";
    static const char del_key[] = "DELETE FROM backend_key WHERE id = $1";
    static const char hold_key[] = "UPDATE backend_key SET allow_renew = false WHERE id = $1";
    json_t *j = backend_state_to_json(bs);
    char *text = json_dumps(j, JSON_COMPACT);
    bool has_addr = bs->status == BACKEND_WAITING || bs->status == BACKEND_READY;
    struct params p = {0}, k = {0};
    int rc;

    json_decref(j);
    *accepted = false;
    if ((rc = begin(q)) < 0)
        goto out;
    p_str(&p, id);
    p_str(&p, backend_status_name(bs->status));
    p_int(&p, now);
    p_int(&p, (int)bs->status);
    p_str(&p, text);
    p_str(&p, has_addr ? bs->address : NULL);
    rc = exec_p(q, sql, &p, "state update", accepted);
    if (rc == 0 && *accepted) {
        rc = insert_history(q, id, text, now);
        if (rc == 0 && bs->status == BACKEND_TERMINATED) {
            p_str(&k, id);
            rc = exec_p(q, release_key ? del_key : hold_key, &k, "key release", NULL);
        }
    }
    rc = commit(q, rc);
    if (rc < 0)
        *accepted = false;
out:
    free(text);
    return rc;
}

static int pg_fencing_next(struct store *s, int64_t *token)
{
    static const char sql[] = "SELECT nextval('fencing_token')";
    int rc;
    PGresult *r = run(to_pg(s), sql, NULL, "fencing token", &rc);

    if (r)
        *token = ival(r, 0, 0);
    PQclear(r);
    return rc;
}

/* ---- actions ---- */

static int pg_action_create(struct store *s, const char *action_id, const char *backend_id, int64_t drone_id,
                            const char *action_json, int64_t now)
{
    return insert_action(to_pg(s), action_id, backend_id, drone_id, action_json, now);
}

static int pg_actions_pending(struct store *s, int64_t drone_id, int limit, store_action_fn *fn, void *arg)
{
    static const char sql[] = "SELECT id, backend_id, action FROM backend_action WHERE drone_id = $1"
                              " AND acked_at IS NULL ORDER BY created_at, seq LIMIT $2";
    struct params p = {0};
    int rc;
    PGresult *r;

    p_int(&p, drone_id);
    p_int(&p, limit);
    if (!(r = run(to_pg(s), sql, &p, "pending actions", &rc)))
        return rc;
    /* The result is ours: the callback may use the store meanwhile. */
    for (int i = 0; i < PQntuples(r); i++)
        fn(arg, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2));
    PQclear(r);
    return 0;
}

static int pg_action_ack(struct store *s, int64_t drone_id, const char *action_id, int64_t now)
{
    static const char sql[] = "UPDATE backend_action SET acked_at = $3 WHERE id = $1 AND drone_id = $2";
    struct params p = {0};

    p_str(&p, action_id);
    p_int(&p, drone_id);
    p_int(&p, now);
    return exec_p(to_pg(s), sql, &p, "action ack", NULL);
}

/* ---- keys, sweeping, keepalives, tokens ---- */

static int pg_key_renew(struct store *s, const char *backend_id, int64_t drone_id, int64_t now, int64_t expires_at,
                        bool *renewed)
{
    static const char sql[] = "UPDATE backend_key SET expires_at = " DB_NOW " + ($2::bigint - $4::bigint)"
                              " WHERE id = $1 AND allow_renew AND expires_at > " DB_NOW
                              " AND EXISTS (SELECT 1 FROM backend WHERE backend.id = $1 AND drone_id = $3)";
    struct params p = {0};

    p_str(&p, backend_id);
    p_int(&p, expires_at);
    p_int(&p, drone_id);
    p_int(&p, now);
    return exec_p(to_pg(s), sql, &p, "key renew", renewed);
}

static int each_id(PGresult *r, store_id_fn *fn, void *arg)
{
    for (int i = 0; i < PQntuples(r); i++)
        fn(arg, PQgetvalue(r, i, 0), ival(r, i, 1));
    PQclear(r);
    return 0;
}

/* Backends of drone_id that sql ($1 the drone, $2 now) selects. */
static int each_candidate(struct pg_store *q, const char *sql, int64_t drone_id, int64_t now, store_id_fn *fn,
                          void *arg, const char *what)
{
    struct params p = {0};
    int rc;
    PGresult *r;

    p_int(&p, drone_id);
    p_int(&p, now);
    return (r = run(q, sql, &p, what, &rc)) ? each_id(r, fn, arg) : rc;
}

static int pg_sweep_candidates(struct store *s, int64_t drone_id, int64_t now, store_id_fn *fn, void *arg)
{
    static const char sql[] =
        "SELECT id, drone_id FROM backend WHERE drone_id = $1 AND last_status NOT IN ('scheduled', 'terminated')"
        " AND ((allowed_idle_ms IS NOT NULL AND $2 - last_keepalive > allowed_idle_ms"
        "       AND id NOT IN (SELECT id FROM backend_idle_freeze))"
        " OR (expiration_time IS NOT NULL AND $2 > expiration_time))";

    return each_candidate(to_pg(s), sql, drone_id, now, fn, arg, "sweep");
}

static int pg_freeze_candidates(struct store *s, int64_t drone_id, int64_t now, store_id_fn *fn, void *arg)
{
    static const char sql[] =
        "SELECT id, drone_id FROM backend WHERE drone_id = $1 AND last_status = 'ready'"
        " AND (state::jsonb ->> 'frozen') IS DISTINCT FROM 'true' AND allowed_idle_ms IS NOT NULL"
        " AND $2 - last_keepalive > allowed_idle_ms AND id IN (SELECT id FROM backend_idle_freeze)";

    return each_candidate(to_pg(s), sql, drone_id, now, fn, arg, "freeze candidates");
}

static int pg_keepalive(struct store *s, const char *backend_id, int64_t now, bool *alive)
{
    static const char sql[] = "UPDATE backend SET last_keepalive = $2 WHERE id = $1 AND last_status != 'terminated'";
    struct params p = {0};

    p_str(&p, backend_id);
    p_int(&p, now);
    return exec_p(to_pg(s), sql, &p, "keepalive", alive);
}

static int pg_revoke(struct store *s, const char *backend_id, const char *user)
{
    static const char sql[] = "DELETE FROM token WHERE backend_id = $1 AND username = $2";
    struct params p = {0};

    p_str(&p, backend_id);
    p_str(&p, user);
    return exec_p(to_pg(s), sql, &p, "revoke", NULL);
}

static int pg_route_get(struct store *s, const char *token, struct route_row *out)
{
    static const char by_static[] = "SELECT id, '', cluster, NULL, NULL, subdomain, state FROM backend"
                                    " WHERE static_token = $1";
    static const char by_token[] =
        "SELECT backend.id, token.secret_token, backend.cluster, token.username, token.auth, backend.subdomain,"
        " backend.state FROM token JOIN backend ON backend.id = token.backend_id WHERE token.token = $1";
    struct params p = {0};
    int rc;
    PGresult *r;

    memset(out, 0, sizeof(*out));
    p_str(&p, token);
    if (!(r = run_row(to_pg(s), strncmp(token, "s.", 2) == 0 ? by_static : by_token, &p, "route", &rc)))
        return rc;
    out->backend_id = val(r, 0, 0);
    out->secret_token = val(r, 0, 1);
    out->cluster = val(r, 0, 2);
    out->user = val(r, 0, 3);
    out->user_data = val(r, 0, 4);
    out->subdomain = val(r, 0, 5);
    if (!parse_state(PQgetvalue(r, 0, 6), &out->state))
        rc = -EIO;
    PQclear(r);
    if (rc < 0)
        route_row_release(out);
    return rc;
}

static int pg_lost_backends(struct store *s, int64_t cutoff, store_id_fn *fn, void *arg)
{
    static const char sql[] =
        "SELECT backend.id, backend.drone_id FROM backend JOIN drone ON drone.id = backend.drone_id"
        " WHERE backend.last_status != 'terminated' AND coalesce(drone.last_heartbeat, 0) < $1";
    struct params p = {0};
    int rc;
    PGresult *r;

    p_int(&p, cutoff);
    return (r = run(to_pg(s), sql, &p, "lost backends", &rc)) ? each_id(r, fn, arg) : rc;
}

static int pg_cleanup_tokens(struct store *s, int64_t now)
{
    static const char sql[] = "DELETE FROM token WHERE expiration_time < $1";
    static const char fences[] = "DELETE FROM key_fence WHERE updated_at < $1::bigint - " KEY_FENCE_KEEP_MS;
    struct params p = {0};
    int rc;

    p_int(&p, now);
    if ((rc = exec_p(to_pg(s), sql, &p, "token cleanup", NULL)) < 0)
        return rc;
    return exec_p(to_pg(s), fences, &p, "key fence cleanup", NULL);
}

static int pg_backend_counts(struct store *s, json_t **out)
{
    static const char sql[] = "SELECT last_status, count(*) FROM backend GROUP BY last_status";
    int rc;
    PGresult *r = run(to_pg(s), sql, NULL, "backend counts", &rc);

    if (!r)
        return rc;
    *out = json_object();
    for (int i = 0; i < PQntuples(r); i++)
        json_object_set_new(*out, PQgetvalue(r, i, 0), json_integer(ival(r, i, 1)));
    PQclear(r);
    return 0;
}

static int pg_prevent_renew(struct store *s, const char *backend_id)
{
    static const char sql[] = "UPDATE backend_key SET allow_renew = false WHERE id = $1";
    struct params p = {0};

    p_str(&p, backend_id);
    return exec_p(to_pg(s), sql, &p, "prevent renew", NULL);
}

/* ---- reads for the dashboard ---- */

/* The rows of sql (each one JSON text) as a JSON array in *out. */
static int json_rows(struct pg_store *q, const char *sql, const struct params *p, json_t **out, const char *what)
{
    int rc;
    PGresult *r = run(q, sql, p, what, &rc);

    if (!r)
        return rc;
    *out = json_array();
    for (int i = 0; i < PQntuples(r); i++) {
        json_t *row = json_loads(PQgetvalue(r, i, 0), 0, NULL);
        if (row)
            json_array_append_new(*out, row);
    }
    PQclear(r);
    return 0;
}

static int pg_drone_overview(struct store *s, json_t **out)
{
    static const char sql[] =
        "SELECT json_build_object('id', node.id, 'name', node.name, 'cluster', node.cluster, 'pool', drone.pool,"
        " 'ip', node.ip, 'ready', drone.ready, 'draining', drone.draining,"
        " 'connected', node.controller IS NOT NULL, 'last_heartbeat', drone.last_heartbeat,"
        " 'backends', (SELECT count(*) FROM backend WHERE backend.drone_id = node.id"
        " AND last_status <> 'terminated'))::text"
        " FROM node JOIN drone ON drone.id = node.id ORDER BY node.cluster, node.name";

    return json_rows(to_pg(s), sql, NULL, out, "drone overview");
}

/* One backend as the dashboard shows it; KEY is the expression of its key object. */
#define PG_OVERVIEW_ROW(KEY)                                                                                \
    "SELECT json_build_object('id', b.id, 'cluster', b.cluster, 'drone', n.name, 'drone_id', b.drone_id,"   \
    " 'key', " KEY ", 'state', b.state::json, 'last_status_time', b.last_status_time,"                      \
    " 'last_keepalive', b.last_keepalive, 'allowed_idle_ms', b.allowed_idle_ms,"                            \
    " 'expiration_time', b.expiration_time,"                                                               \
    " 'history', (SELECT coalesce(json_agg(json_build_array(h.state::json, h.created_at) ORDER BY h.id),"   \
    " '[]'::json) FROM backend_state h WHERE h.backend_id = b.id))::text"
#define PG_OVERVIEW_KEY_ROW \
    "CASE WHEN k.id IS NULL THEN NULL ELSE json_build_object('namespace', k.namespace, 'name', k.key_name," \
    " 'tag', k.tag) END"
#define PG_OVERVIEW_JOINS " LEFT JOIN node n ON n.id = b.drone_id LEFT JOIN backend_key k ON k.id = b.id"

static int pg_backend_overview(struct store *s, const json_t *ids, int terminated, json_t **out)
{
    /* The Spawn actions are read once, for the shown backends only. */
    static const char all_sql[] =
        "WITH shown AS MATERIALIZED (SELECT id FROM backend WHERE last_status <> 'terminated'"
        " UNION ALL (SELECT id FROM backend WHERE last_status = 'terminated'"
        " ORDER BY last_status_time DESC LIMIT $1)),"
        " spawn AS MATERIALIZED (SELECT backend_id, action::json -> 'action' -> 'Spawn' -> 'key' -> 'key' AS key"
        " FROM backend_action WHERE backend_id IN (SELECT id FROM shown) AND action LIKE '%\"Spawn\"%')"
        " " PG_OVERVIEW_ROW("coalesce(" PG_OVERVIEW_KEY_ROW ", spawn.key)")
        " FROM shown JOIN backend b ON b.id = shown.id" PG_OVERVIEW_JOINS
        " LEFT JOIN spawn ON spawn.backend_id = b.id";
    static const char ids_sql[] =
        PG_OVERVIEW_ROW(PG_OVERVIEW_KEY_ROW)
        " FROM json_array_elements_text($1::json) AS j(id) JOIN backend b ON b.id = j.id" PG_OVERVIEW_JOINS;
    struct params p = {0};
    char *text = NULL;
    int rc;

    if (ids) {
        text = json_dumps(ids, JSON_COMPACT);
        p_str(&p, text);
        rc = json_rows(to_pg(s), ids_sql, &p, out, "backend overview");
    } else {
        p_int(&p, terminated);
        rc = json_rows(to_pg(s), all_sql, &p, out, "backend overview");
    }
    free(text);
    return rc;
}

/* ---- ACME DNS-01: the cluster's certificate lease and TXT value (§8.4, §9) ---- */

static int pg_cert_lease(struct store *s, const char *cluster, int64_t node_id, int64_t now, int64_t valid_ms,
                         bool *accepted)
{
    /* One statement: controllers sharing the database race on the row, and one wins. */
    static const char sql[] =
        "INSERT INTO acme_txt_entries(cluster, leased_at, leased_by) VALUES($1, $2, $3)"
        " ON CONFLICT (cluster) DO UPDATE SET leased_at = excluded.leased_at, leased_by = excluded.leased_by"
        " WHERE acme_txt_entries.leased_at < $2::bigint - $4::bigint";
    struct params p = {0};

    p_str(&p, cluster);
    p_int(&p, now);
    p_int(&p, node_id);
    p_int(&p, valid_ms);
    return exec_p(to_pg(s), sql, &p, "cert lease", accepted);
}

static int pg_txt_set(struct store *s, const char *cluster, int64_t node_id, const char *value, bool *accepted)
{
    static const char sql[] = "UPDATE acme_txt_entries SET txt_value = $3 WHERE cluster = $1 AND leased_by = $2";
    struct params p = {0};

    p_str(&p, cluster);
    p_int(&p, node_id);
    p_str(&p, value);
    return exec_p(to_pg(s), sql, &p, "set txt record", accepted);
}

static int pg_cert_release(struct store *s, const char *cluster, int64_t node_id)
{
    static const char sql[] = "DELETE FROM acme_txt_entries WHERE cluster = $1 AND leased_by = $2";
    struct params p = {0};

    p_str(&p, cluster);
    p_int(&p, node_id);
    return exec_p(to_pg(s), sql, &p, "release cert lease", NULL);
}

static int pg_txt_get(struct store *s, const char *cluster, char **value)
{
    static const char sql[] = "SELECT txt_value FROM acme_txt_entries WHERE cluster = $1";
    struct params p = {0};
    int rc;
    PGresult *r;

    *value = NULL;
    p_str(&p, cluster);
    if (!(r = run(to_pg(s), sql, &p, "txt record", &rc)))
        return rc;
    if (PQntuples(r) > 0)
        *value = val(r, 0, 0);
    PQclear(r);
    return 0;
}

const struct store_ops store_pg_ops = {
    .name = "postgres",
    .open = pg_open,
    .close = pg_close,
    .ping = pg_ping,
    .clock = pg_clock,
    .node_connect = pg_node_connect,
    .node_disconnect = pg_node_disconnect,
    .drone_heartbeat = pg_drone_heartbeat,
    .drone_drain = pg_drone_drain,
    .cluster_state = pg_cluster_state,
    .drone_pick = pg_drone_pick,
    .key_get = pg_key_get,
    .connect_held = pg_connect_held,
    .key_delete_expired = pg_key_delete_expired,
    .backend_create = pg_backend_create,
    .token_create = pg_token_create,
    .backend_get = pg_backend_get,
    .backend_history = pg_backend_history,
    .backend_update_state = pg_backend_update_state,
    .action_create = pg_action_create,
    .actions_pending = pg_actions_pending,
    .action_ack = pg_action_ack,
    .key_renew = pg_key_renew,
    .fencing_next = pg_fencing_next,
    .sweep_candidates = pg_sweep_candidates,
    .freeze_candidates = pg_freeze_candidates,
    .keepalive = pg_keepalive,
    .revoke = pg_revoke,
    .route_get = pg_route_get,
    .lost_backends = pg_lost_backends,
    .cleanup_tokens = pg_cleanup_tokens,
    .backend_counts = pg_backend_counts,
    .prevent_renew = pg_prevent_renew,
    .drone_overview = pg_drone_overview,
    .backend_overview = pg_backend_overview,
    .cert_lease = pg_cert_lease,
    .txt_set = pg_txt_set,
    .cert_release = pg_cert_release,
    .txt_get = pg_txt_get,
};
