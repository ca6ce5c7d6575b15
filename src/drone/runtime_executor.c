/* SPDX-License-Identifier: MIT */
/*
 * runtime_executor.c - a runtime that is a client of an executor server on
 * a Unix socket (spec §15): each operation is a request line with a fresh
 * 43-char id, answered by one response line with the same id; exits and
 * metrics arrive as events.
 *
 * The connection is made in the background with backoff (10 ms x1.5 up to
 * 1 s) and remade whenever it drops. Requests made while disconnected wait
 * in a bounded queue and go out once connected; if no connection comes
 * within 30 s they fail. Unlike Plane's client, requests already written
 * when the connection drops fail at once instead of hanging. After every
 * (re)connection the server's hello lists the backends it still runs; any
 * backend we saw start that is not on the list is reported as exited
 * (exit code unknown), so a restarted executor never leaves a backend
 * looking alive.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../common/line_reader.h"
#include "../common/log.h"
#include "../common/names.h"
#include "../common/xalloc.h"
#include "executor_proto.h"
#include "runtime.h"

#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 1000
#define CONNECT_DEADLINE_MS 30000
#define MAX_QUEUED 1024

struct creq {
    struct list_node node; /* in queue or sent */
    struct runtime_op *op;
    char id[TOKEN_LEN + 1];
    enum exec_kind kind;   /* the request's kind */
    char *line;            /* owned until written */
};

struct conn {
    uv_pipe_t pipe;
    uv_connect_t connect;
    struct exec_runtime *ert; /* NULL once abandoned */
};

struct tracked {
    struct list_node node;
    char *id;
};

struct exec_runtime {
    struct runtime base; /* must be first */
    char *socket_path;
    struct conn *conn;   /* current connection or attempt, or NULL */
    bool connected;
    uv_timer_t retry;
    unsigned backoff_ms;
    uint64_t down_since; /* uv_now() when we last lost (or began without) a connection */
    bool ever_connected;
    bool warned;
    struct line_reader reader;
    struct list_node queue;  /* of struct creq, not yet written */
    size_t queued;
    struct list_node sent;   /* of struct creq, awaiting a response */
    struct list_node backends; /* of struct tracked: spawned, no exit seen */
    json_t *pids; /* backend id -> pid, from BackendProcess until the spawn's result */
};

struct out_write {
    uv_write_t req;
    char *line;
};

static struct exec_runtime *to_exec(struct runtime *rt)
{
    assert(rt->ops == &runtime_executor_ops);
    return (struct exec_runtime *)rt;
}

/* ---- tracking ---- */

static struct tracked *tracked_find(struct exec_runtime *ert, const char *id)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &ert->backends) {
        struct tracked *t = list_entry(pos, struct tracked, node);
        if (strcmp(t->id, id) == 0)
            return t;
    }
    return NULL;
}

static void track(struct exec_runtime *ert, const char *id)
{
    struct tracked *t;

    if (tracked_find(ert, id))
        return;
    t = xcalloc(1, sizeof(*t));
    t->id = xstrdup(id);
    list_insert_tail(&ert->backends, &t->node);
}

static void tracked_free(struct tracked *t)
{
    list_remove(&t->node);
    free(t->id);
    free(t);
}

/* ---- requests ---- */

static void creq_finish(struct creq *r, int status, const char *error)
{
    list_remove(&r->node);
    r->op->impl = NULL;
    free(r->line);
    if (status < 0)
        runtime_op_complete(r->op, status, "%s", error);
    else
        runtime_op_complete(r->op, 0, NULL);
    free(r);
}

static void fail_list(struct list_node *list, int status, const char *error)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, list)
        creq_finish(list_entry(pos, struct creq, node), status, error);
}

static void write_done(uv_write_t *req, int status)
{
    struct out_write *w = container_of(req, struct out_write, req);

    (void)status; /* a failed write shows up as a read error too */
    free(w->line);
    free(w);
}

static int conn_write(struct exec_runtime *ert, char *line)
{
    struct out_write *w = xcalloc(1, sizeof(*w));
    uv_buf_t b = uv_buf_init(line, (unsigned)strlen(line));
    int rc;

    w->line = line;
    rc = uv_write(&w->req, (uv_stream_t *)&ert->conn->pipe, &b, 1, write_done);
    if (rc < 0) {
        free(w->line);
        free(w);
    }
    return rc;
}

static void flush_queue(struct exec_runtime *ert)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &ert->queue) {
        struct creq *r = list_entry(pos, struct creq, node);
        char *line = r->line;
        r->line = NULL;
        list_remove(&r->node);
        ert->queued--;
        list_insert_tail(&ert->sent, &r->node);
        if (conn_write(ert, line) < 0) {
            creq_finish(r, -EPIPE, "cannot write to the executor");
            return;
        }
    }
}

/* Starts a request whose line is built by the caller with r->id. */
static struct creq *creq_new(struct runtime_op *op, enum exec_kind kind)
{
    struct creq *r = xcalloc(1, sizeof(*r));
    char *tok = token_random();

    memcpy(r->id, tok, TOKEN_LEN);
    r->id[TOKEN_LEN] = '\0';
    free(tok);
    r->op = op;
    r->kind = kind;
    op->impl = r;
    list_init(&r->node);
    return r;
}

static void creq_send(struct exec_runtime *ert, struct creq *r)
{
    if (ert->queued >= MAX_QUEUED) {
        list_insert_tail(&ert->queue, &r->node);
        creq_finish(r, -ENOBUFS, "too many requests waiting for the executor connection");
        return;
    }
    list_insert_tail(&ert->queue, &r->node);
    ert->queued++;
    if (ert->connected)
        flush_queue(ert);
}

/* ---- responses and events ---- */

static struct creq *sent_find(struct exec_runtime *ert, const char *id)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &ert->sent) {
        struct creq *r = list_entry(pos, struct creq, node);
        if (strcmp(r->id, id) == 0)
            return r;
    }
    return NULL;
}

static void handle_response(struct exec_runtime *ert, struct exec_msg *m)
{
    struct creq *r = sent_find(ert, m->id);

    if (!r) {
        log_warn("executor: dropped a response for unknown request %.43s", m->id);
        return;
    }
    /* A pid announced for a spawn belongs to this answer only, whatever it says. */
    int pid = 0;
    if (r->kind == EXEC_SPAWN) {
        pid = (int)json_integer_value(json_object_get(ert->pids, r->op->backend_id));
        json_object_del(ert->pids, r->op->backend_id);
    }
    if (m->kind == EXEC_ERROR) {
        creq_finish(r, -EPROTO, m->error);
        return;
    }
    if (m->kind != exec_response_kind(r->kind)) {
        creq_finish(r, -EPROTO, "Unexpected response from server");
        return;
    }
    if (m->status < 0) {
        creq_finish(r, m->status, m->error);
        return;
    }
    switch (m->kind) {
    case EXEC_SPAWN_RESULT:
        r->op->res.port = m->port;
        r->op->res.container_id = xstrdup(m->container_id);
        r->op->res.pid = pid;
        track(ert, r->op->backend_id);
        break;
    case EXEC_TERMINATE_RESULT:
        r->op->res.was_running = m->was_running;
        break;
    default:
        break;
    }
    creq_finish(r, 0, NULL);
}

static void handle_hello(struct exec_runtime *ert, const json_t *backends)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &ert->backends) {
        struct tracked *t = list_entry(pos, struct tracked, node);
        bool running = false;
        for (size_t i = 0; i < json_array_size(backends) && !running; i++)
            running = strcmp(json_string_value(json_array_get(backends, i)), t->id) == 0;
        if (running)
            continue;
        log_warn("backend %s: the executor no longer runs it; reporting it gone", t->id);
        char *id = xstrdup(t->id);
        tracked_free(t);
        runtime_emit_exit(&ert->base, id, RUNTIME_EXIT_UNKNOWN);
        free(id);
    }
}

static int handle_line(void *arg, const char *line, size_t len)
{
    struct exec_runtime *ert = arg;
    struct exec_msg m;
    struct buf err = BUF_INIT;

    if (!line) {
        log_warn("executor: dropped a line of %zu bytes (longer than %u)", len, EXEC_MAX_LINE);
        return 0;
    }
    if (len == 0)
        return 0;
    if (exec_msg_parse(line, len, &m, &err) < 0) {
        log_warn("executor: dropped a malformed line: %s", buf_cstr(&err));
        /* A response we cannot read still answers its request. */
        struct creq *r = m.id ? sent_find(ert, m.id) : NULL;
        if (r)
            creq_finish(r, -EPROTO, buf_cstr(&err));
    } else if (m.id) {
        handle_response(ert, &m);
    } else if (m.kind == EXEC_TERMINATE_EVENT) {
        struct tracked *t = tracked_find(ert, m.backend_id);
        if (t)
            tracked_free(t);
        runtime_emit_exit(&ert->base, m.backend_id, m.exit_code);
    } else if (m.kind == EXEC_METRICS) {
        runtime_emit_metrics(&ert->base, &m.metrics);
    } else if (m.kind == EXEC_HELLO) {
        handle_hello(ert, m.backends);
    } else if (m.kind == EXEC_PROCESS) {
        /* A pid means something only in the namespace it was read in. */
        if (strcmp(m.pid_ns, exec_pid_namespace()) == 0 && json_object_size(ert->pids) < 4096)
            json_object_set_new(ert->pids, m.backend_id, json_integer(m.pid));
    } else {
        log_warn("executor: dropped an unexpected %s message", exec_kind_name(m.kind));
    }
    exec_msg_release(&m);
    buf_release(&err);
    return ert->connected ? 0 : 1;
}

/* ---- the connection ---- */

static void conn_free(void *ptr)
{
    free(ptr);
}

static void retry_cb(uv_timer_t *t);

static void conn_lost(struct exec_runtime *ert, const char *why)
{
    struct conn *c = ert->conn;

    if (!c)
        return;
    ert->conn = NULL;
    c->ert = NULL;
    runtime_close_handle(&ert->base, (uv_handle_t *)&c->pipe, conn_free, c);
    line_reader_release(&ert->reader);
    line_reader_init(&ert->reader, EXEC_MAX_LINE);
    if (ert->connected) {
        log_warn("executor: connection to '%s' lost: %s", ert->socket_path, why);
        ert->connected = false;
        ert->down_since = uv_now(ert->base.loop);
        ert->warned = false;
        ert->backoff_ms = BACKOFF_MIN_MS;
        /* Written but unanswered: the answer will never come on this connection. */
        fail_list(&ert->sent, -ECONNRESET, "executor connection lost");
    }
    uv_timer_start(&ert->retry, retry_cb, ert->backoff_ms, 0);
    ert->backoff_ms = ert->backoff_ms * 3 / 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ert->backoff_ms * 3 / 2;
}

static void read_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char slab[65536];

    (void)h;
    (void)suggested;
    *b = uv_buf_init(slab, sizeof(slab));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = container_of((uv_pipe_t *)s, struct conn, pipe);
    struct exec_runtime *ert = c->ert;

    if (!ert || nread == 0)
        return;
    if (nread < 0) {
        conn_lost(ert, nread == UV_EOF ? "closed by the executor" : uv_strerror((int)nread));
        return;
    }
    line_reader_feed(&ert->reader, b->base, (size_t)nread, handle_line, ert);
}

static void connect_cb(uv_connect_t *req, int status)
{
    struct conn *c = container_of(req, struct conn, connect);
    struct exec_runtime *ert = c->ert;

    if (!ert)
        return;
    if (status < 0) {
        uint64_t down = uv_now(ert->base.loop) - ert->down_since;
        if (!ert->warned && down >= 1000) {
            log_warn("executor: cannot connect to '%s': %s (retrying)", ert->socket_path, uv_strerror(status));
            ert->warned = true;
        }
        if (down >= CONNECT_DEADLINE_MS && !list_empty(&ert->queue)) {
            fail_list(&ert->queue, -ECONNREFUSED, "executor unreachable");
            ert->queued = 0;
        }
        ert->connected = false;
        conn_lost(ert, uv_strerror(status));
        return;
    }
    ert->connected = true;
    ert->ever_connected = true;
    ert->backoff_ms = BACKOFF_MIN_MS;
    log_info("executor: connected to '%s'", ert->socket_path);
    uv_read_start((uv_stream_t *)&c->pipe, read_alloc, read_cb);
    flush_queue(ert);
}

static void connect_now(struct exec_runtime *ert)
{
    struct conn *c = xcalloc(1, sizeof(*c));

    c->ert = ert;
    uv_pipe_init(ert->base.loop, &c->pipe, 0);
    ert->conn = c;
    uv_pipe_connect(&c->connect, &c->pipe, ert->socket_path, connect_cb);
}

static void retry_cb(uv_timer_t *t)
{
    struct exec_runtime *ert = container_of(t, struct exec_runtime, retry);

    if (!ert->conn)
        connect_now(ert);
}

/* ---- operations ---- */

static void exec_prepare(struct runtime *rt, struct runtime_op *op, const json_t *executable)
{
    struct creq *r = creq_new(op, EXEC_PREPARE);

    r->line = exec_encode_prepare(r->id, executable);
    creq_send(to_exec(rt), r);
}

static void exec_spawn(struct runtime *rt, struct runtime_op *op, const struct spawn_spec *spec)
{
    struct creq *r = creq_new(op, EXEC_SPAWN);

    r->line = exec_encode_spawn(r->id, spec);
    creq_send(to_exec(rt), r);
}

static void exec_wait_ready(struct runtime *rt, struct runtime_op *op, const char *address)
{
    struct creq *r = creq_new(op, EXEC_WAIT_FOR_BACKEND);

    r->line = exec_encode_wait(r->id, op->backend_id, address ? address : "");
    creq_send(to_exec(rt), r);
}

static void exec_terminate(struct runtime *rt, struct runtime_op *op, bool hard)
{
    struct creq *r = creq_new(op, EXEC_TERMINATE);

    r->line = exec_encode_terminate(r->id, op->backend_id, hard);
    creq_send(to_exec(rt), r);
}

static void exec_cancel(struct runtime *rt, struct runtime_op *op)
{
    struct exec_runtime *ert = to_exec(rt);
    struct creq *r = op->impl;

    /* Not yet written: take it back. Written: its answer is simply ignored. */
    if (r && r->line) {
        ert->queued--;
        creq_finish(r, -ECANCELED, "cancelled");
    }
}

static int exec_open(struct runtime **out, const struct runtime_config *cfg, struct buf *err)
{
    struct exec_runtime *ert;

    if (!cfg->executor_socket || !*cfg->executor_socket) {
        buf_printf(err, "the executor runtime needs --executor-socket");
        return -EINVAL;
    }
    ert = xcalloc(1, sizeof(*ert));
    ert->socket_path = xstrdup(cfg->executor_socket);
    ert->backoff_ms = BACKOFF_MIN_MS;
    list_init(&ert->queue);
    list_init(&ert->sent);
    list_init(&ert->backends);
    ert->pids = json_object();
    line_reader_init(&ert->reader, EXEC_MAX_LINE);
    uv_timer_init(cfg->loop, &ert->retry);
    ert->down_since = uv_now(cfg->loop);
    /* Connect in the background: the runtime is usable at once (§15.4). */
    uv_timer_start(&ert->retry, retry_cb, 0, 0);
    *out = &ert->base;
    return 0;
}

static void exec_close(struct runtime *rt)
{
    struct exec_runtime *ert = to_exec(rt);
    struct conn *c = ert->conn;

    uv_timer_stop(&ert->retry);
    runtime_close_handle(rt, (uv_handle_t *)&ert->retry, NULL, NULL);
    if (c) {
        ert->conn = NULL;
        c->ert = NULL;
        runtime_close_handle(rt, (uv_handle_t *)&c->pipe, conn_free, c);
    }
    ert->connected = false;
    fail_list(&ert->queue, -ESHUTDOWN, "runtime closed");
    fail_list(&ert->sent, -ESHUTDOWN, "runtime closed");
    ert->queued = 0;
}

static void exec_free(struct runtime *rt)
{
    struct exec_runtime *ert = to_exec(rt);
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &ert->backends)
        tracked_free(list_entry(pos, struct tracked, node));
    line_reader_release(&ert->reader);
    json_decref(ert->pids);
    free(ert->socket_path);
    free(ert);
}

const struct runtime_ops runtime_executor_ops = {
    .name = "executor",
    .caps = RUNTIME_CAP_METRICS,
    .open = exec_open,
    .close = exec_close,
    .free = exec_free,
    .prepare = exec_prepare,
    .spawn = exec_spawn,
    .wait_ready = exec_wait_ready,
    .terminate = exec_terminate,
    .cancel = exec_cancel,
};
