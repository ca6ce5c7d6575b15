/* SPDX-License-Identifier: MIT */
/*
 * state_store.c - the drone's state store on SQLite (see state_store.h).
 * Schema as spec §13.2: backend(id, state) and event(id, backend_id, event,
 * timestamp). WAL mode, synchronous=NORMAL: a state survives a drone crash;
 * a power cut may lose the last ones, which the controller then never saw.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "../common/log.h"
#include "../common/xalloc.h"
#include "state_store.h"

struct state_store {
    sqlite3 *db;
    sqlite3_stmt *upsert, *insert_event, *delete_event, *events, *active, *get;
};

static const char schema[] = "CREATE TABLE IF NOT EXISTS backend (id TEXT PRIMARY KEY, state TEXT NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS event (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                             " backend_id TEXT NOT NULL, event TEXT NOT NULL, timestamp INTEGER NOT NULL);";

static int prepare(struct state_store *s, const char *sql, sqlite3_stmt **out, struct buf *err)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, out, NULL) != SQLITE_OK) {
        buf_printf(err, "cannot prepare state store statement: %s", sqlite3_errmsg(s->db));
        return -EIO;
    }
    return 0;
}

int state_store_open(struct state_store **out, const char *path, struct buf *err)
{
    struct state_store *s = xcalloc(1, sizeof(*s));
    bool memory = !path || strcmp(path, ":memory:") == 0;
    int rc;

    *out = NULL;
    if (!memory) {
        /* Created private: it holds keys and tokens of running backends. */
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        if (fd == -1) {
            buf_printf(err, "cannot open state store '%s': %s", path, strerror(errno));
            free(s);
            return -errno;
        }
        close(fd);
    }
    if (sqlite3_open_v2(memory ? ":memory:" : path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        buf_printf(err, "cannot open state store '%s': %s", memory ? ":memory:" : path, sqlite3_errmsg(s->db));
        sqlite3_close(s->db);
        free(s);
        return -EIO;
    }
    sqlite3_busy_timeout(s->db, 5000);
    if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(s->db, schema, NULL, NULL, NULL) != SQLITE_OK) {
        buf_printf(err, "cannot set up state store: %s", sqlite3_errmsg(s->db));
        rc = -EIO;
        goto fail;
    }
    if ((rc = prepare(s, "INSERT INTO backend(id, state) VALUES(?1, ?2)"
                         " ON CONFLICT(id) DO UPDATE SET state = excluded.state",
                      &s->upsert, err)) < 0 ||
        (rc = prepare(s, "INSERT INTO event(backend_id, event, timestamp) VALUES(?1, ?2, ?3)", &s->insert_event,
                      err)) < 0 ||
        (rc = prepare(s, "DELETE FROM event WHERE id = ?1", &s->delete_event, err)) < 0 ||
        (rc = prepare(s, "SELECT id, backend_id, event, timestamp FROM event ORDER BY timestamp, id", &s->events,
                      err)) < 0 ||
        (rc = prepare(s, "SELECT id, state FROM backend", &s->active, err)) < 0 ||
        (rc = prepare(s, "SELECT state FROM backend WHERE id = ?1", &s->get, err)) < 0)
        goto fail;
    *out = s;
    return 0;
fail:
    state_store_close(s);
    return rc;
}

void state_store_close(struct state_store *s)
{
    if (!s)
        return;
    sqlite3_finalize(s->upsert);
    sqlite3_finalize(s->insert_event);
    sqlite3_finalize(s->delete_event);
    sqlite3_finalize(s->events);
    sqlite3_finalize(s->active);
    sqlite3_finalize(s->get);
    sqlite3_close(s->db);
    free(s);
}

static int step_done(struct state_store *s, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);

    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        log_error("state store: %s", sqlite3_errmsg(s->db));
        return -EIO;
    }
    return 0;
}

int64_t state_store_record(struct state_store *s, const char *backend_id, const struct backend_state *st,
                           int64_t timestamp_ms)
{
    json_t *j = backend_state_to_json(st);
    char *text = json_dumps(j, JSON_COMPACT);
    int64_t id = -EIO;

    json_decref(j);
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_text(s->upsert, 1, backend_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->upsert, 2, text, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->insert_event, 1, backend_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->insert_event, 2, text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->insert_event, 3, timestamp_ms);
    if (step_done(s, s->upsert) < 0 || step_done(s, s->insert_event) < 0) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        goto out;
    }
    id = sqlite3_last_insert_rowid(s->db);
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        id = -EIO;
    }
out:
    sqlite3_clear_bindings(s->upsert);
    sqlite3_clear_bindings(s->insert_event);
    free(text);
    return id;
}

int state_store_ack(struct state_store *s, int64_t event_id)
{
    sqlite3_bind_int64(s->delete_event, 1, event_id);
    return step_done(s, s->delete_event);
}

static bool parse_state(const unsigned char *text, struct backend_state *st)
{
    json_t *j = json_loads((const char *)text, 0, NULL);
    struct buf err = BUF_INIT;
    bool ok = j && backend_state_from_json(j, st, &err) == 0;

    if (!ok)
        log_warn("state store: skipping a state that does not parse: %s", buf_cstr(&err));
    json_decref(j);
    buf_release(&err);
    return ok;
}

int state_store_each_event(struct state_store *s, state_event_fn *fn, void *arg)
{
    int rc;

    while ((rc = sqlite3_step(s->events)) == SQLITE_ROW) {
        struct backend_state st;
        if (parse_state(sqlite3_column_text(s->events, 2), &st))
            fn(arg, sqlite3_column_int64(s->events, 0), (const char *)sqlite3_column_text(s->events, 1), &st,
               sqlite3_column_int64(s->events, 3));
    }
    sqlite3_reset(s->events);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

int state_store_each_active(struct state_store *s, state_backend_fn *fn, void *arg)
{
    int rc;

    while ((rc = sqlite3_step(s->active)) == SQLITE_ROW) {
        struct backend_state st;
        if (parse_state(sqlite3_column_text(s->active, 1), &st) && st.status != BACKEND_TERMINATED)
            fn(arg, (const char *)sqlite3_column_text(s->active, 0), &st);
    }
    sqlite3_reset(s->active);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

int state_store_get(struct state_store *s, const char *backend_id, struct backend_state *out)
{
    int rc;

    sqlite3_bind_text(s->get, 1, backend_id, -1, SQLITE_TRANSIENT);
    rc = sqlite3_step(s->get);
    if (rc == SQLITE_ROW)
        rc = parse_state(sqlite3_column_text(s->get, 0), out) ? 0 : -EIO;
    else
        rc = rc == SQLITE_DONE ? -ENOENT : -EIO;
    sqlite3_reset(s->get);
    sqlite3_clear_bindings(s->get);
    return rc;
}
