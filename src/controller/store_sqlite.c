/* SPDX-License-Identifier: MIT */
/*
 * store_sqlite.c - the controller's store on an embedded SQLite file (see
 * store.h): zero set-up, WAL mode, schema created at open. Every change of
 * several rows runs in one transaction. Statements are prepared once and
 * cached by their SQL text's address.
 *
 * Checkpoints (copying the WAL back into the database, with an fsync) run
 * on a thread of their own with its own connection, every second; left to
 * SQLite they run inside a commit on the event loop and stall every request
 * behind it for tens of milliseconds.
 *
 * One controller process owns the file. Unique indexes carry the
 * invariants: (namespace, key_name) on backend_key is what makes a key
 * hold at most one backend (spec §10.1).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>
#include <time.h>

#include <sqlite3.h>

#include "../common/clock.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "store.h"

#define MAX_STMTS 64

struct sqlite_store {
    struct store base; /* must be first */
    sqlite3 *db;
    char *path;                 /* owned */
    pthread_t checkpointer;
    bool checkpointing;         /* the thread runs */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stop;
    struct {
        const char *sql;
        sqlite3_stmt *stmt;
    } cache[MAX_STMTS];
    int ncache;
};

/*
 * Migration N brings the schema from version N-1 to N (PRAGMA user_version).
 * Append, never edit: a controller refuses a file of a version newer than it
 * knows. The first is written with IF NOT EXISTS, so that files made before
 * versions were counted (version 0, tables present) take it as they are.
 */
static const char *const migrations[] = {
    "CREATE TABLE IF NOT EXISTS node (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL,"
    " name TEXT NOT NULL, cluster TEXT, plane_version TEXT, plane_hash TEXT, controller TEXT, ip TEXT,"
    " last_connection_start_time INTEGER);"
    "CREATE UNIQUE INDEX IF NOT EXISTS node_cluster_name ON node(cluster, name);"
    "CREATE TABLE IF NOT EXISTS drone (id INTEGER PRIMARY KEY REFERENCES node(id), ready INTEGER NOT NULL DEFAULT 1,"
    " draining INTEGER NOT NULL DEFAULT 0, last_heartbeat INTEGER, last_local_time INTEGER,"
    " pool TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE IF NOT EXISTS backend (id TEXT PRIMARY KEY, cluster TEXT NOT NULL, last_status TEXT NOT NULL,"
    " last_status_time INTEGER NOT NULL, last_status_number INTEGER, cluster_address TEXT,"
    " drone_id INTEGER NOT NULL, expiration_time INTEGER, last_keepalive INTEGER NOT NULL,"
    " allowed_idle_ms INTEGER, state TEXT NOT NULL, static_token TEXT, subdomain TEXT);"
    "CREATE INDEX IF NOT EXISTS backend_drone ON backend(drone_id, last_status);"
    "CREATE UNIQUE INDEX IF NOT EXISTS backend_static_token ON backend(static_token);"
    "CREATE TABLE IF NOT EXISTS backend_state (id INTEGER PRIMARY KEY AUTOINCREMENT, backend_id TEXT NOT NULL,"
    " state TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS backend_state_backend ON backend_state(backend_id, id);"
    "CREATE TABLE IF NOT EXISTS backend_action (id TEXT PRIMARY KEY, backend_id TEXT NOT NULL,"
    " drone_id INTEGER NOT NULL, action TEXT NOT NULL, created_at INTEGER NOT NULL, acked_at INTEGER);"
    "CREATE INDEX IF NOT EXISTS backend_action_pending ON backend_action(drone_id, acked_at, created_at);"
    "CREATE TABLE IF NOT EXISTS backend_key (id TEXT PRIMARY KEY, namespace TEXT NOT NULL, key_name TEXT NOT NULL,"
    " tag TEXT NOT NULL, expires_at INTEGER NOT NULL, fencing_token INTEGER NOT NULL,"
    " allow_renew INTEGER NOT NULL DEFAULT 1);"
    "CREATE UNIQUE INDEX IF NOT EXISTS backend_key_name ON backend_key(namespace, key_name);"
    "CREATE TABLE IF NOT EXISTS token (token TEXT PRIMARY KEY, backend_id TEXT NOT NULL,"
    " expiration_time INTEGER NOT NULL, username TEXT, auth TEXT NOT NULL, secret_token TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS token_backend ON token(backend_id);"
    "CREATE TABLE IF NOT EXISTS fencing (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL);",
    /* 2: ACME DNS-01 certificate leases and TXT values (§10.1). */
    "CREATE TABLE acme_txt_entries (cluster TEXT PRIMARY KEY, leased_at INTEGER NOT NULL,"
    " leased_by INTEGER NOT NULL, txt_value TEXT);",
    /* 3: backends frozen, not swept, when idle (our extension). */
    "CREATE TABLE backend_idle_freeze (id TEXT PRIMARY KEY);",
};

#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/*
 * Fencing tokens count up from one row, never from a clock. The counter
 * starts at the clock once (when the table is made), so that tokens stay
 * above those of earlier versions, which were the time in milliseconds.
 */
static const char fencing_seed[] =
    "INSERT OR IGNORE INTO fencing(id, last) SELECT 1, max(?1, coalesce(max(fencing_token), 0)) FROM backend_key";

static struct sqlite_store *to_sqlite(struct store *s)
{
    if (s->ops != &store_sqlite_ops)
        BUG("not a sqlite store");
    return (struct sqlite_store *)s;
}

/* The cached statement for sql (a string literal), reset and unbound. */
static sqlite3_stmt *stmt(struct sqlite_store *q, const char *sql)
{
    for (int i = 0; i < q->ncache; i++)
        if (q->cache[i].sql == sql)
            return q->cache[i].stmt;
    if (q->ncache == MAX_STMTS)
        BUG("statement cache full");
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(q->db, sql, -1, &st, NULL) != SQLITE_OK)
        BUG("sqlite: cannot prepare %s: %s", sql, sqlite3_errmsg(q->db));
    q->cache[q->ncache].sql = sql;
    q->cache[q->ncache].stmt = st;
    q->ncache++;
    return st;
}

static void done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static int db_error(struct sqlite_store *q, const char *what)
{
    log_error("store: %s: %s", what, sqlite3_errmsg(q->db));
    return -EIO;
}

/* Runs st to completion. 0, -EEXIST on a constraint violation, or -EIO. */
static int exec_stmt(struct sqlite_store *q, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);

    done(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc == SQLITE_CONSTRAINT)
        return -EEXIST;
    return db_error(q, what);
}

static int begin(struct sqlite_store *q)
{
    return sqlite3_exec(q->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK ? 0 : db_error(q, "begin");
}

static int commit(struct sqlite_store *q, int rc)
{
    if (rc == 0 && sqlite3_exec(q->db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
        return 0;
    sqlite3_exec(q->db, "ROLLBACK", NULL, NULL, NULL);
    return rc ? rc : db_error(q, "commit");
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);

    return t ? xstrdup((const char *)t) : NULL;
}

static bool parse_state(const unsigned char *text, struct backend_state *out)
{
    json_t *j = text ? json_loads((const char *)text, 0, NULL) : NULL;
    struct buf err = BUF_INIT;
    bool ok = j && backend_state_from_json(j, out, &err) == 0;

    json_decref(j);
    buf_release(&err);
    return ok;
}

/* ---- open/close ---- */

static void *checkpoint_thread(void *arg)
{
    struct sqlite_store *q = arg;
    sqlite3 *db = NULL;

    if (sqlite3_open_v2(q->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        log_error("store: checkpoint connection: %s", sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 1000);
    pthread_mutex_lock(&q->lock);
    while (!q->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&q->wake, &q->lock, &until);
        if (q->stop)
            break;
        pthread_mutex_unlock(&q->lock);
        /* PASSIVE: copies what it can without waiting for, or blocking, the writer. */
        sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&q->lock);
    }
    pthread_mutex_unlock(&q->lock);
    sqlite3_close(db);
    return NULL;
}

/* Brings the file's schema to SCHEMA_VERSION in one transaction, or refuses a newer one. */
static int migrate(sqlite3 *db, const char *path, struct buf *err)
{
    sqlite3_stmt *st;
    int version = -1;

    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return -EIO;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > SCHEMA_VERSION)
        buf_printf(err, "database '%s' has schema version %d, newer than this plane knows (%d): upgrade plane",
                   path, version, SCHEMA_VERSION);
    for (int v = version; v >= 0 && v < SCHEMA_VERSION; v++) {
        char set[48];
        snprintf(set, sizeof(set), "PRAGMA user_version = %d", v + 1);
        if (sqlite3_exec(db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
            sqlite3_exec(db, set, NULL, NULL, NULL) != SQLITE_OK) {
            buf_printf(err, "database '%s': schema migration %d failed: %s", path, v + 1, sqlite3_errmsg(db));
            version = -1;
            break;
        }
    }
    if (version < 0 || version > SCHEMA_VERSION || sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -EIO;
    }
    return 0;
}

static int sqlite_open(struct store **out, const char *path, struct buf *err)
{
    struct sqlite_store *q = xcalloc(1, sizeof(*q));

    if (strcmp(path, ":memory:") != 0) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd == -1) {
            buf_printf(err, "cannot open database '%s': %s", path, strerror(errno));
            free(q);
            return -errno;
        }
        close(fd);
    }
    if (sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(q->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=OFF;"
                     " PRAGMA wal_autocheckpoint=0; PRAGMA cache_size=-65536;", NULL,
                     NULL, NULL) != SQLITE_OK ||
        migrate(q->db, path, err) < 0) {
        if (!err->len)
            buf_printf(err, "cannot open database '%s': %s", path, sqlite3_errmsg(q->db));
        sqlite3_close(q->db);
        free(q);
        return -EIO;
    }
    sqlite3_busy_timeout(q->db, 5000);
    sqlite3_stmt *seed;
    int seeded = sqlite3_prepare_v2(q->db, fencing_seed, -1, &seed, NULL) == SQLITE_OK &&
                 sqlite3_bind_int64(seed, 1, clock_epoch_ms()) == SQLITE_OK && sqlite3_step(seed) == SQLITE_DONE;
    sqlite3_finalize(seed);
    if (!seeded) {
        buf_printf(err, "cannot open database '%s': %s", path, sqlite3_errmsg(q->db));
        sqlite3_close(q->db);
        free(q);
        return -EIO;
    }
    q->path = xstrdup(path);
    pthread_mutex_init(&q->lock, NULL);
    pthread_cond_init(&q->wake, NULL);
    if (strcmp(path, ":memory:") != 0)
        q->checkpointing = pthread_create(&q->checkpointer, NULL, checkpoint_thread, q) == 0;
    /* Nodes connected to a previous run of this controller are not connected now. */
    sqlite3_exec(q->db, "UPDATE node SET controller = NULL", NULL, NULL, NULL);
    *out = &q->base;
    return 0;
}

static void sqlite_close(struct store *s)
{
    struct sqlite_store *q = to_sqlite(s);

    if (q->checkpointing) {
        pthread_mutex_lock(&q->lock);
        q->stop = true;
        pthread_cond_signal(&q->wake);
        pthread_mutex_unlock(&q->lock);
        pthread_join(q->checkpointer, NULL);
    }
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->wake);
    free(q->path);

    for (int i = 0; i < q->ncache; i++)
        sqlite3_finalize(q->cache[i].stmt);
    sqlite3_close(q->db);
    free(q);
}

static int sqlite_ping(struct store *s)
{
    struct sqlite_store *q = to_sqlite(s);
    sqlite3_stmt *st = stmt(q, "SELECT 1");
    int rc = sqlite3_step(st);

    done(st);
    return rc == SQLITE_ROW ? 0 : db_error(q, "ping");
}

/* ---- nodes ---- */

static int sqlite_node_connect(struct store *s, enum node_kind kind, const char *name, const char *cluster,
                               const char *ip, const char *controller, const char *pool, int64_t now,
                               int64_t *node_id)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char upsert[] =
        "INSERT INTO node(kind, name, cluster, plane_version, plane_hash, controller, ip, last_connection_start_time)"
        " VALUES(?1, ?2, ?3, '0.5.5', '', ?4, ?5, ?6) ON CONFLICT(cluster, name) DO UPDATE SET"
        " kind = excluded.kind, controller = excluded.controller, ip = excluded.ip,"
        " last_connection_start_time = excluded.last_connection_start_time RETURNING id";
    static const char drone_sql[] = "INSERT INTO drone(id, pool) VALUES(?1, ?2) ON CONFLICT(id) DO UPDATE SET"
                                    " ready = 1"; /* pool only on first insert (§7.3 quirk) */
    sqlite3_stmt *st;
    int rc = begin(q);

    if (rc < 0)
        return rc;
    st = stmt(q, upsert);
    sqlite3_bind_text(st, 1, node_kind_name(kind), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    bind_text(st, 3, cluster);
    sqlite3_bind_text(st, 4, controller, -1, SQLITE_TRANSIENT);
    bind_text(st, 5, ip);
    sqlite3_bind_int64(st, 6, now);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *node_id = sqlite3_column_int64(st, 0);
        done(st);
    } else {
        done(st);
        return commit(q, db_error(q, "node upsert"));
    }
    if (kind == NODE_DRONE) {
        st = stmt(q, drone_sql);
        sqlite3_bind_int64(st, 1, *node_id);
        sqlite3_bind_text(st, 2, pool ? pool : "", -1, SQLITE_TRANSIENT);
        rc = exec_stmt(q, st, "drone upsert");
    }
    return commit(q, rc);
}

static int sqlite_node_disconnect(struct store *s, int64_t node_id, const char *controller, int64_t connected_at)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "UPDATE node SET controller = NULL WHERE id = ?1 AND controller = ?2"
                              " AND last_connection_start_time = ?3";
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_int64(st, 1, node_id);
    sqlite3_bind_text(st, 2, controller, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, connected_at);
    return exec_stmt(q, st, "node disconnect");
}

static int sqlite_drone_heartbeat(struct store *s, int64_t node_id, int64_t local_time, int64_t now)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "UPDATE drone SET last_heartbeat = ?2, last_local_time = ?3 WHERE id = ?1";
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_int64(st, 1, node_id);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int64(st, 3, local_time);
    return exec_stmt(q, st, "heartbeat");
}

static int sqlite_drone_drain(struct store *s, const char *cluster, const char *name, bool *updated)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char find[] = "SELECT node.id, node.kind, drone.draining FROM node LEFT JOIN drone"
                               " ON drone.id = node.id WHERE node.cluster = ?1 AND node.name = ?2";
    static const char set[] = "UPDATE drone SET draining = 1 WHERE id = ?1";
    sqlite3_stmt *st = stmt(q, find);
    int64_t id;
    int rc;

    sqlite3_bind_text(st, 1, cluster, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        done(st);
        return rc == SQLITE_DONE ? -ENOENT : db_error(q, "drain");
    }
    id = sqlite3_column_int64(st, 0);
    bool is_drone = strcmp((const char *)sqlite3_column_text(st, 1), "Drone") == 0;
    *updated = sqlite3_column_type(st, 2) != SQLITE_NULL && sqlite3_column_int(st, 2) == 0;
    done(st);
    if (!is_drone)
        return -EINVAL;
    st = stmt(q, set);
    sqlite3_bind_int64(st, 1, id);
    return exec_stmt(q, st, "drain");
}

static int sqlite_cluster_state(struct store *s, const char *cluster, int64_t now, json_t **out)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] =
        "SELECT node.kind, node.name, node.plane_version, node.plane_hash, node.controller,"
        " drone.ready, drone.draining, drone.last_heartbeat,"
        " (SELECT count(*) FROM backend WHERE backend.drone_id = node.id AND last_status != 'terminated')"
        " FROM node LEFT JOIN drone ON drone.id = node.id"
        " WHERE node.cluster = ?1 AND node.controller IS NOT NULL ORDER BY node.id";
    sqlite3_stmt *st = stmt(q, sql);
    json_t *drones = json_array(), *proxies = json_array();
    int rc;

    sqlite3_bind_text(st, 1, cluster, -1, SQLITE_TRANSIENT);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(st, 0);
        json_t *node = json_pack("{s:{s:s}, s:s, s:s, s:s, s:i}", "name", kind, sqlite3_column_text(st, 1),
                                 "plane_version", sqlite3_column_text(st, 2), "plane_hash",
                                 sqlite3_column_text(st, 3), "controller", sqlite3_column_text(st, 4),
                                 "controller_heartbeat_age", 0);
        if (strcmp(kind, "Drone") == 0) {
            int64_t hb = sqlite3_column_type(st, 7) == SQLITE_NULL ? now : sqlite3_column_int64(st, 7);
            json_array_append_new(drones, json_pack("{s:b, s:b, s:I, s:I, s:o}", "ready", sqlite3_column_int(st, 5),
                                                    "draining", sqlite3_column_int(st, 6), "last_heartbeat_age",
                                                    (json_int_t)((now - hb) / 1000), "backend_count",
                                                    (json_int_t)sqlite3_column_int64(st, 8), "node", node));
        } else if (strcmp(kind, "Proxy") == 0) {
            json_array_append_new(proxies, node);
        } else {
            json_decref(node);
        }
    }
    done(st);
    if (rc != SQLITE_DONE) {
        json_decref(drones);
        json_decref(proxies);
        return db_error(q, "cluster state");
    }
    *out = json_pack("{s:o, s:o}", "drones", drones, "proxies", proxies);
    return 0;
}

static int sqlite_drone_pick(struct store *s, const char *cluster, const char *pool, int64_t healthy_since,
                             int best_of, int64_t *drone_id, char **drone_name, int64_t *clock_offset)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] =
        "SELECT id, name, offset, n FROM (SELECT node.id, node.name,"
        " drone.last_local_time - drone.last_heartbeat AS offset,"
        " (SELECT count(*) FROM backend WHERE backend.drone_id = node.id AND last_status != 'terminated') AS n"
        " FROM node JOIN drone ON drone.id = node.id WHERE node.cluster = ?1 AND drone.pool = ?2"
        " AND drone.ready AND NOT drone.draining AND drone.last_local_time IS NOT NULL"
        " AND drone.last_heartbeat > ?3 AND node.controller IS NOT NULL ORDER BY random() LIMIT ?4)"
        " ORDER BY n LIMIT 1";
    sqlite3_stmt *st = stmt(q, sql);
    int rc;

    sqlite3_bind_text(st, 1, cluster, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, pool ? pool : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, healthy_since);
    sqlite3_bind_int(st, 4, best_of > 0 ? best_of : 2);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *drone_id = sqlite3_column_int64(st, 0);
        *drone_name = col_text(st, 1);
        *clock_offset = sqlite3_column_int64(st, 2);
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : db_error(q, "schedule");
    }
    done(st);
    return rc;
}

/* ---- keys, backends, tokens ---- */

static int sqlite_key_get(struct store *s, const char *ns, const char *name, struct key_row *out)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] =
        "SELECT backend_key.id, tag, expires_at, fencing_token, backend.cluster, backend.static_token,"
        " backend.subdomain, backend.last_status_number, json_extract(backend.state, '$.frozen') IS 1"
        " FROM backend_key JOIN backend ON backend.id = backend_key.id WHERE namespace = ?1 AND key_name = ?2";
    sqlite3_stmt *st = stmt(q, sql);
    int rc;

    memset(out, 0, sizeof(*out));
    sqlite3_bind_text(st, 1, ns, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->backend_id = col_text(st, 0);
        out->tag = col_text(st, 1);
        out->expires_at = sqlite3_column_int64(st, 2);
        out->fencing_token = sqlite3_column_int64(st, 3);
        out->cluster = col_text(st, 4);
        out->static_token = col_text(st, 5);
        out->subdomain = col_text(st, 6);
        out->status = (enum backend_status)sqlite3_column_int(st, 7);
        out->frozen = sqlite3_column_int(st, 8) != 0;
        rc = 0;
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : db_error(q, "key lookup");
    }
    done(st);
    return rc;
}

static int sqlite_key_delete_expired(struct store *s, const char *ns, const char *name, int64_t now, bool *deleted)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "DELETE FROM backend_key WHERE namespace = ?1 AND key_name = ?2 AND expires_at <= ?3";
    sqlite3_stmt *st = stmt(q, sql);
    int rc;

    sqlite3_bind_text(st, 1, ns, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, now);
    rc = exec_stmt(q, st, "key delete");
    *deleted = rc == 0 && sqlite3_changes(q->db) > 0;
    return rc;
}

static int insert_history(struct sqlite_store *q, const char *id, const char *state_json, int64_t now)
{
    static const char sql[] = "INSERT INTO backend_state(backend_id, state, created_at) VALUES(?1, ?2, ?3)";
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, state_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, now);
    return exec_stmt(q, st, "history insert");
}

static int insert_action(struct sqlite_store *q, const char *action_id, const char *backend_id, int64_t drone_id,
                         const char *action_json, int64_t now)
{
    static const char sql[] = "INSERT INTO backend_action(id, backend_id, drone_id, action, created_at)"
                              " VALUES(?1, ?2, ?3, ?4, ?5)";
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_text(st, 1, action_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, backend_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, drone_id);
    sqlite3_bind_text(st, 4, action_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, now);
    return exec_stmt(q, st, "action insert");
}

static int sqlite_backend_create(struct store *s, const struct new_backend *nb)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char backend_sql[] =
        "INSERT INTO backend(id, cluster, last_status, last_status_time, last_status_number, drone_id,"
        " expiration_time, last_keepalive, allowed_idle_ms, state, static_token, subdomain)"
        " VALUES(?1, ?2, 'scheduled', ?3, 10, ?4, ?5, ?3, ?6, '{\"status\":\"scheduled\"}', ?7, ?8)";
    static const char key_sql[] = "INSERT INTO backend_key(id, namespace, key_name, tag, expires_at, fencing_token)"
                                  " VALUES(?1, ?2, ?3, ?4, ?5, ?6)";
    sqlite3_stmt *st;
    int rc = begin(q);

    if (rc < 0)
        return rc;
    st = stmt(q, backend_sql);
    sqlite3_bind_text(st, 1, nb->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, nb->cluster, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, nb->now);
    sqlite3_bind_int64(st, 4, nb->drone_id);
    if (nb->has_lifetime)
        sqlite3_bind_int64(st, 5, nb->now + nb->lifetime_ms);
    else
        sqlite3_bind_null(st, 5);
    if (nb->has_max_idle)
        sqlite3_bind_int64(st, 6, nb->max_idle_ms);
    else
        sqlite3_bind_null(st, 6);
    bind_text(st, 7, nb->static_token);
    bind_text(st, 8, nb->subdomain);
    rc = exec_stmt(q, st, "backend insert");
    if (rc == 0) {
        st = stmt(q, key_sql);
        sqlite3_bind_text(st, 1, nb->id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, nb->key_namespace, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, nb->key_name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, nb->key_tag, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 5, nb->key_expires_at);
        sqlite3_bind_int64(st, 6, nb->fencing_token);
        rc = exec_stmt(q, st, "key insert");
    }
    if (rc == 0)
        rc = insert_history(q, nb->id, "{\"status\":\"scheduled\"}", nb->now);
    if (rc == 0)
        rc = insert_action(q, nb->action_id, nb->id, nb->drone_id, nb->action_json, nb->now);
    if (rc == 0 && nb->idle_freeze) {
        static const char freeze_sql[] = "INSERT INTO backend_idle_freeze(id) VALUES(?1)";
        st = stmt(q, freeze_sql);
        sqlite3_bind_text(st, 1, nb->id, -1, SQLITE_TRANSIENT);
        rc = exec_stmt(q, st, "idle freeze insert");
    }
    return commit(q, rc);
}

static int sqlite_token_create(struct store *s, const char *token, const char *backend_id, const char *user,
                               const char *auth_json, const char *secret, int64_t expires_at)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "INSERT INTO token(token, backend_id, expiration_time, username, auth, secret_token)"
                              " VALUES(?1, ?2, ?3, ?4, ?5, ?6)";
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_text(st, 1, token, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, backend_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, expires_at);
    bind_text(st, 4, user);
    sqlite3_bind_text(st, 5, auth_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, secret, -1, SQLITE_TRANSIENT);
    return exec_stmt(q, st, "token insert");
}

static int sqlite_backend_get(struct store *s, const char *id, struct backend_row *out)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] =
        "SELECT backend.id, backend.cluster, backend.static_token, backend.subdomain, node.name, backend.drone_id,"
        " backend.state, backend.last_status_time, backend.expiration_time, backend.allowed_idle_ms,"
        " backend.last_keepalive FROM backend LEFT JOIN node ON node.id = backend.drone_id WHERE backend.id = ?1";
    sqlite3_stmt *st = stmt(q, sql);
    int rc;

    memset(out, 0, sizeof(*out));
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->id = col_text(st, 0);
        out->cluster = col_text(st, 1);
        out->static_token = col_text(st, 2);
        out->subdomain = col_text(st, 3);
        out->drone_name = col_text(st, 4);
        out->drone_id = sqlite3_column_int64(st, 5);
        rc = parse_state(sqlite3_column_text(st, 6), &out->state) ? 0 : db_error(q, "backend state decode");
        out->last_status_time = sqlite3_column_int64(st, 7);
        out->expiration_time = sqlite3_column_int64(st, 8);
        out->allowed_idle_ms = sqlite3_column_type(st, 9) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 9);
        out->last_keepalive = sqlite3_column_int64(st, 10);
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : db_error(q, "backend get");
    }
    done(st);
    if (rc < 0)
        backend_row_release(out);
    return rc;
}

static int sqlite_backend_history(struct store *s, const char *id, store_history_fn *fn, void *arg)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "SELECT state, created_at FROM backend_state WHERE backend_id = ?1 ORDER BY id";
    sqlite3_stmt *st = stmt(q, sql);
    int rc;

    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct backend_state bs;
        if (parse_state(sqlite3_column_text(st, 0), &bs))
            fn(arg, &bs, sqlite3_column_int64(st, 1));
    }
    done(st);
    return rc == SQLITE_DONE ? 0 : db_error(q, "history");
}

static int sqlite_backend_update_state(struct store *s, const char *id, const struct backend_state *bs, int64_t now,
                                       bool release_key, bool *accepted)
{
    struct sqlite_store *q = to_sqlite(s);
    /* States only move forward, but a ready one may be frozen and thawed (same number, new state). */
    static const char sql[] = "UPDATE backend SET last_status = ?2, last_status_time = ?3, last_status_number = ?4,"
                              " state = ?5, cluster_address = ?6 WHERE id = ?1"
                              " AND (last_status_number IS NULL OR last_status_number < ?4"
                              " OR (?4 = 50 AND last_status_number = 50 AND state != ?5))";
    static const char del_key[] = "DELETE FROM backend_key WHERE id = ?1";
    static const char hold_key[] = "UPDATE backend_key SET allow_renew = 0 WHERE id = ?1";
    json_t *j = backend_state_to_json(bs);
    char *text = json_dumps(j, JSON_COMPACT);
    bool has_addr = bs->status == BACKEND_WAITING || bs->status == BACKEND_READY;
    sqlite3_stmt *st;
    int rc;

    json_decref(j);
    *accepted = false;
    rc = begin(q);
    if (rc < 0)
        goto out;
    st = stmt(q, sql);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, backend_status_name(bs->status), -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    sqlite3_bind_int(st, 4, (int)bs->status);
    sqlite3_bind_text(st, 5, text, -1, SQLITE_TRANSIENT);
    bind_text(st, 6, has_addr ? bs->address : NULL);
    rc = exec_stmt(q, st, "state update");
    if (rc == 0 && sqlite3_changes(q->db) > 0) {
        *accepted = true;
        rc = insert_history(q, id, text, now);
        if (rc == 0 && bs->status == BACKEND_TERMINATED) {
            st = stmt(q, release_key ? del_key : hold_key);
            sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
            rc = exec_stmt(q, st, "key delete");
        }
    }
    rc = commit(q, rc);
out:
    free(text);
    return rc;
}

/* ---- actions ---- */

static int sqlite_action_create(struct store *s, const char *action_id, const char *backend_id, int64_t drone_id,
                                const char *action_json, int64_t now)
{
    return insert_action(to_sqlite(s), action_id, backend_id, drone_id, action_json, now);
}

static int sqlite_actions_pending(struct store *s, int64_t drone_id, int limit, store_action_fn *fn, void *arg)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "SELECT id, backend_id, action FROM backend_action WHERE drone_id = ?1"
                              " AND acked_at IS NULL ORDER BY created_at, rowid LIMIT ?2";
    sqlite3_stmt *st = stmt(q, sql);
    int rc;

    sqlite3_bind_int64(st, 1, drone_id);
    sqlite3_bind_int(st, 2, limit);
    /* Collect first: the callback may write to the store. */
    json_t *rows = json_array();
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(rows, json_pack("[s,s,s]", sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
                                              sqlite3_column_text(st, 2)));
    done(st);
    if (rc == SQLITE_DONE) {
        for (size_t i = 0; i < json_array_size(rows); i++) {
            json_t *r = json_array_get(rows, i);
            fn(arg, json_string_value(json_array_get(r, 0)), json_string_value(json_array_get(r, 1)),
               json_string_value(json_array_get(r, 2)));
        }
    }
    json_decref(rows);
    return rc == SQLITE_DONE ? 0 : db_error(q, "pending actions");
}

static int sqlite_action_ack(struct store *s, int64_t drone_id, const char *action_id, int64_t now)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "UPDATE backend_action SET acked_at = ?3 WHERE id = ?1 AND drone_id = ?2";
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_text(st, 1, action_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, drone_id);
    sqlite3_bind_int64(st, 3, now);
    return exec_stmt(q, st, "action ack");
}

/* ---- keys, sweeping, keepalives, tokens ---- */

static int sqlite_key_renew(struct store *s, const char *backend_id, int64_t drone_id, int64_t now,
                            int64_t expires_at, bool *renewed)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "UPDATE backend_key SET expires_at = ?2 WHERE id = ?1 AND allow_renew AND expires_at > ?4"
                              " AND EXISTS (SELECT 1 FROM backend WHERE backend.id = ?1 AND drone_id = ?3)";
    sqlite3_stmt *st = stmt(q, sql);
    int rc;

    sqlite3_bind_text(st, 1, backend_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, expires_at);
    sqlite3_bind_int64(st, 3, drone_id);
    sqlite3_bind_int64(st, 4, now);
    rc = exec_stmt(q, st, "key renew");
    *renewed = rc == 0 && sqlite3_changes(q->db) > 0;
    return rc;
}

static int sqlite_fencing_next(struct store *s, int64_t *token)
{
    struct sqlite_store *q = to_sqlite(s);
    sqlite3_stmt *st = stmt(q, "UPDATE fencing SET last = last + 1 WHERE id = 1 RETURNING last");
    int rc = sqlite3_step(st);

    if (rc == SQLITE_ROW)
        *token = sqlite3_column_int64(st, 0);
    done(st);
    return rc == SQLITE_ROW ? 0 : db_error(q, "fencing token");
}

static int each_id(struct sqlite_store *q, sqlite3_stmt *st, store_id_fn *fn, void *arg, const char *what)
{
    json_t *rows = json_array();
    int rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_array_append_new(rows, json_pack("[s,I]", sqlite3_column_text(st, 0),
                                              (json_int_t)sqlite3_column_int64(st, 1)));
    done(st);
    if (rc == SQLITE_DONE)
        for (size_t i = 0; i < json_array_size(rows); i++)
            fn(arg, json_string_value(json_array_get(json_array_get(rows, i), 0)),
               json_integer_value(json_array_get(json_array_get(rows, i), 1)));
    json_decref(rows);
    return rc == SQLITE_DONE ? 0 : db_error(q, what);
}

/* Runs one of the sweep's queries (?1 the drone, ?2 now) and hands over the ids it finds. */
static int each_candidate(struct sqlite_store *q, const char *sql, int64_t drone_id, int64_t now, store_id_fn *fn,
                          void *arg, const char *what)
{
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_int64(st, 1, drone_id);
    sqlite3_bind_int64(st, 2, now);
    return each_id(q, st, fn, arg, what);
}

static int sqlite_sweep_candidates(struct store *s, int64_t drone_id, int64_t now, store_id_fn *fn, void *arg)
{
    static const char sql[] =
        "SELECT id, drone_id FROM backend WHERE drone_id = ?1 AND last_status NOT IN ('scheduled', 'terminated')"
        " AND ((allowed_idle_ms IS NOT NULL AND ?2 - last_keepalive > allowed_idle_ms"
        "       AND id NOT IN (SELECT id FROM backend_idle_freeze))"
        " OR (expiration_time IS NOT NULL AND ?2 > expiration_time))";

    return each_candidate(to_sqlite(s), sql, drone_id, now, fn, arg, "sweep");
}

static int sqlite_freeze_candidates(struct store *s, int64_t drone_id, int64_t now, store_id_fn *fn, void *arg)
{
    static const char sql[] =
        "SELECT id, drone_id FROM backend WHERE drone_id = ?1 AND last_status = 'ready'"
        " AND json_extract(state, '$.frozen') IS NOT 1 AND allowed_idle_ms IS NOT NULL"
        " AND ?2 - last_keepalive > allowed_idle_ms AND id IN (SELECT id FROM backend_idle_freeze)";

    return each_candidate(to_sqlite(s), sql, drone_id, now, fn, arg, "freeze candidates");
}

static int sqlite_keepalive(struct store *s, const char *backend_id, int64_t now, bool *alive)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] =
        "UPDATE backend SET last_keepalive = ?2 WHERE id = ?1 AND last_status != 'terminated'";
    sqlite3_stmt *st = stmt(q, sql);
    int rc;

    sqlite3_bind_text(st, 1, backend_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, now);
    rc = exec_stmt(q, st, "keepalive");
    *alive = rc == 0 && sqlite3_changes(q->db) > 0;
    return rc;
}

static int sqlite_revoke(struct store *s, const char *backend_id, const char *user)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "DELETE FROM token WHERE backend_id = ?1 AND username = ?2";
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_text(st, 1, backend_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, user, -1, SQLITE_TRANSIENT);
    return exec_stmt(q, st, "revoke");
}

static int sqlite_route_get(struct store *s, const char *token, struct route_row *out)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char by_static[] = "SELECT id, '', cluster, NULL, NULL, subdomain, state FROM backend"
                                    " WHERE static_token = ?1";
    static const char by_token[] =
        "SELECT backend.id, token.secret_token, backend.cluster, token.username, token.auth, backend.subdomain,"
        " backend.state FROM token JOIN backend ON backend.id = token.backend_id WHERE token.token = ?1";
    sqlite3_stmt *st = stmt(q, strncmp(token, "s.", 2) == 0 ? by_static : by_token);
    int rc;

    memset(out, 0, sizeof(*out));
    sqlite3_bind_text(st, 1, token, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->backend_id = col_text(st, 0);
        out->secret_token = col_text(st, 1);
        out->cluster = col_text(st, 2);
        out->user = col_text(st, 3);
        out->user_data = col_text(st, 4);
        out->subdomain = col_text(st, 5);
        rc = parse_state(sqlite3_column_text(st, 6), &out->state) ? 0 : db_error(q, "route state decode");
    } else {
        rc = rc == SQLITE_DONE ? -ENOENT : db_error(q, "route");
    }
    done(st);
    if (rc < 0)
        route_row_release(out);
    return rc;
}

static int sqlite_lost_backends(struct store *s, int64_t cutoff, store_id_fn *fn, void *arg)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] =
        "SELECT backend.id, backend.drone_id FROM backend JOIN drone ON drone.id = backend.drone_id"
        " WHERE backend.last_status != 'terminated' AND coalesce(drone.last_heartbeat, 0) < ?1";
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_int64(st, 1, cutoff);
    return each_id(q, st, fn, arg, "lost backends");
}

static int sqlite_cleanup_tokens(struct store *s, int64_t now)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "DELETE FROM token WHERE expiration_time < ?1";
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_int64(st, 1, now);
    return exec_stmt(q, st, "token cleanup");
}

static int sqlite_backend_counts(struct store *s, json_t **out)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "SELECT last_status, count(*) FROM backend GROUP BY last_status";
    sqlite3_stmt *st = stmt(q, sql);
    json_t *o = json_object();
    int rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        json_object_set_new(o, (const char *)sqlite3_column_text(st, 0), json_integer(sqlite3_column_int64(st, 1)));
    done(st);
    if (rc != SQLITE_DONE) {
        json_decref(o);
        return db_error(q, "backend counts");
    }
    *out = o;
    return 0;
}

static int sqlite_prevent_renew(struct store *s, const char *backend_id)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "UPDATE backend_key SET allow_renew = 0 WHERE id = ?1";
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_text(st, 1, backend_id, -1, SQLITE_TRANSIENT);
    return exec_stmt(q, st, "prevent renew");
}

/* ---- reads for the dashboard ---- */

/* Runs st, whose rows are each one JSON text, into a JSON array. */
static int json_rows(struct sqlite_store *q, sqlite3_stmt *st, json_t **out, const char *what)
{
    json_t *rows = json_array();
    int rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
        if (row)
            json_array_append_new(rows, row);
    }
    done(st);
    if (rc != SQLITE_DONE) {
        json_decref(rows);
        return db_error(q, what);
    }
    *out = rows;
    return 0;
}

static int sqlite_drone_overview(struct store *s, json_t **out)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] =
        "SELECT json_object('id', node.id, 'name', node.name, 'cluster', node.cluster, 'pool', drone.pool,"
        " 'ip', node.ip, 'ready', json(iif(drone.ready, 'true', 'false')),"
        " 'draining', json(iif(drone.draining, 'true', 'false')),"
        " 'connected', json(iif(node.controller IS NOT NULL, 'true', 'false')),"
        " 'last_heartbeat', drone.last_heartbeat,"
        " 'backends', (SELECT count(*) FROM backend WHERE backend.drone_id = node.id"
        " AND last_status != 'terminated'))"
        " FROM node JOIN drone ON drone.id = node.id ORDER BY node.cluster, node.name";

    return json_rows(q, stmt(q, sql), out, "drone overview");
}

/* One backend as the dashboard shows it; KEY is the expression of its key object. */
#define OVERVIEW_ROW(KEY)                                                                                   \
    "SELECT json_object('id', b.id, 'cluster', b.cluster, 'drone', n.name, 'drone_id', b.drone_id,"         \
    " 'key', " KEY ", 'state', json(b.state), 'last_status_time', b.last_status_time,"                      \
    " 'last_keepalive', b.last_keepalive, 'allowed_idle_ms', b.allowed_idle_ms,"                            \
    " 'expiration_time', b.expiration_time,"                                                               \
    " 'history', (SELECT json_group_array(json_array(json(h.state), h.created_at)) FROM backend_state h"   \
    " WHERE h.backend_id = b.id))"
#define OVERVIEW_KEY_ROW "json_object('namespace', k.namespace, 'name', k.key_name, 'tag', k.tag)"
#define OVERVIEW_JOINS " LEFT JOIN node n ON n.id = b.drone_id LEFT JOIN backend_key k ON k.id = b.id"

static int sqlite_backend_overview(struct store *s, const json_t *ids, int terminated, json_t **out)
{
    struct sqlite_store *q = to_sqlite(s);
    /* The Spawn actions are read once, for the shown backends only. */
    static const char all_sql[] =
        "WITH shown(id) AS MATERIALIZED (SELECT id FROM backend WHERE last_status != 'terminated'"
        " UNION ALL SELECT * FROM (SELECT id FROM backend WHERE last_status = 'terminated'"
        " ORDER BY last_status_time DESC LIMIT ?1)),"
        " spawn(backend_id, key) AS MATERIALIZED (SELECT backend_id, json_extract(action, '$.action.Spawn.key.key')"
        " FROM backend_action WHERE backend_id IN (SELECT id FROM shown) AND action LIKE '%\"Spawn\"%')"
        " " OVERVIEW_ROW("json(coalesce(iif(k.id IS NULL, NULL, " OVERVIEW_KEY_ROW "), spawn.key))")
        " FROM shown JOIN backend b ON b.id = shown.id" OVERVIEW_JOINS
        " LEFT JOIN spawn ON spawn.backend_id = b.id";
    static const char ids_sql[] =
        OVERVIEW_ROW("json(iif(k.id IS NULL, NULL, " OVERVIEW_KEY_ROW "))")
        " FROM json_each(?1) j JOIN backend b ON b.id = j.value" OVERVIEW_JOINS;
    sqlite3_stmt *st;

    if (ids) {
        char *text = json_dumps(ids, JSON_COMPACT);
        st = stmt(q, ids_sql);
        sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
        free(text);
    } else {
        st = stmt(q, all_sql);
        sqlite3_bind_int(st, 1, terminated);
    }
    return json_rows(q, st, out, "backend overview");
}

/* ---- ACME DNS-01: the cluster's certificate lease and TXT value (§8.4, §9) ---- */

static int sqlite_cert_lease(struct store *s, const char *cluster, int64_t node_id, int64_t now, int64_t valid_ms,
                             bool *accepted)
{
    struct sqlite_store *q = to_sqlite(s);
    /* A lease younger than valid_ms holds, even against its own holder (§8.4). */
    static const char sql[] =
        "INSERT INTO acme_txt_entries(cluster, leased_at, leased_by) VALUES(?1, ?2, ?3)"
        " ON CONFLICT(cluster) DO UPDATE SET leased_at = excluded.leased_at, leased_by = excluded.leased_by"
        " WHERE acme_txt_entries.leased_at < ?2 - ?4";
    sqlite3_stmt *st = stmt(q, sql);
    int rc;

    sqlite3_bind_text(st, 1, cluster, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_int64(st, 3, node_id);
    sqlite3_bind_int64(st, 4, valid_ms);
    rc = exec_stmt(q, st, "cert lease");
    *accepted = rc == 0 && sqlite3_changes(q->db) > 0;
    return rc;
}

static int sqlite_txt_set(struct store *s, const char *cluster, int64_t node_id, const char *value, bool *accepted)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "UPDATE acme_txt_entries SET txt_value = ?3 WHERE cluster = ?1 AND leased_by = ?2";
    sqlite3_stmt *st = stmt(q, sql);
    int rc;

    sqlite3_bind_text(st, 1, cluster, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, node_id);
    sqlite3_bind_text(st, 3, value, -1, SQLITE_TRANSIENT);
    rc = exec_stmt(q, st, "set txt record");
    *accepted = rc == 0 && sqlite3_changes(q->db) > 0;
    return rc;
}

static int sqlite_cert_release(struct store *s, const char *cluster, int64_t node_id)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "DELETE FROM acme_txt_entries WHERE cluster = ?1 AND leased_by = ?2";
    sqlite3_stmt *st = stmt(q, sql);

    sqlite3_bind_text(st, 1, cluster, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, node_id);
    return exec_stmt(q, st, "release cert lease");
}

static int sqlite_txt_get(struct store *s, const char *cluster, char **value)
{
    struct sqlite_store *q = to_sqlite(s);
    static const char sql[] = "SELECT txt_value FROM acme_txt_entries WHERE cluster = ?1";
    sqlite3_stmt *st = stmt(q, sql);
    int rc;

    *value = NULL;
    sqlite3_bind_text(st, 1, cluster, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *value = col_text(st, 0);
    done(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_error(q, "txt record");
}

const struct store_ops store_sqlite_ops = {
    .name = "sqlite",
    .open = sqlite_open,
    .close = sqlite_close,
    .ping = sqlite_ping,
    .node_connect = sqlite_node_connect,
    .node_disconnect = sqlite_node_disconnect,
    .drone_heartbeat = sqlite_drone_heartbeat,
    .drone_drain = sqlite_drone_drain,
    .cluster_state = sqlite_cluster_state,
    .drone_pick = sqlite_drone_pick,
    .key_get = sqlite_key_get,
    .key_delete_expired = sqlite_key_delete_expired,
    .backend_create = sqlite_backend_create,
    .token_create = sqlite_token_create,
    .backend_get = sqlite_backend_get,
    .backend_history = sqlite_backend_history,
    .backend_update_state = sqlite_backend_update_state,
    .action_create = sqlite_action_create,
    .actions_pending = sqlite_actions_pending,
    .action_ack = sqlite_action_ack,
    .key_renew = sqlite_key_renew,
    .fencing_next = sqlite_fencing_next,
    .sweep_candidates = sqlite_sweep_candidates,
    .freeze_candidates = sqlite_freeze_candidates,
    .keepalive = sqlite_keepalive,
    .revoke = sqlite_revoke,
    .route_get = sqlite_route_get,
    .lost_backends = sqlite_lost_backends,
    .cleanup_tokens = sqlite_cleanup_tokens,
    .backend_counts = sqlite_backend_counts,
    .prevent_renew = sqlite_prevent_renew,
    .drone_overview = sqlite_drone_overview,
    .backend_overview = sqlite_backend_overview,
    .cert_lease = sqlite_cert_lease,
    .txt_set = sqlite_txt_set,
    .cert_release = sqlite_cert_release,
    .txt_get = sqlite_txt_get,
};
