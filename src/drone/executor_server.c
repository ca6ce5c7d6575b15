/* SPDX-License-Identifier: MIT */
/*
 * executor_server.c - the server side of the executor protocol (spec §15):
 * reads request lines from clients on a Unix socket, runs them on a runtime
 * and writes the responses, and sends the runtime's exit and metrics events
 * to every connected client.
 *
 * Unlike Plane's server, which serves one client at a time, clients are
 * served together, so a second client never hangs waiting for the first.
 * Exit events that happen while no client is connected are kept (up to a
 * bound) and sent to the next client, after a hello listing the backends
 * still running (executor_proto.h). Malformed lines are logged and dropped,
 * and answered with an error when their id can be read.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/line_reader.h"
#include "../common/log.h"
#include "../common/xalloc.h"
#include "executor_proto.h"
#include "executor_server.h"
#include "runtime.h"

#define MAX_QUEUED_EVENTS 4096
#define MAX_CLIENT_BACKLOG (64u << 20) /* unsent bytes before a client counts as stuck */

struct client {
    struct list_node node; /* in server->clients */
    struct executor_server *server;
    uv_pipe_t pipe;
    struct line_reader reader;
    struct list_node reqs; /* of struct request, in flight */
    unsigned serial;       /* for log lines */
    bool closing;
};

struct request {
    struct list_node node; /* in client->reqs or server->orphans */
    struct executor_server *server;
    struct client *client; /* NULL once the client is gone */
    char *id;              /* owned */
    enum exec_kind kind;   /* the request's kind */
    char *backend_id;      /* owned; spawn */
    struct runtime_op *op;
};

struct queued_line {
    struct list_node node;
    char *line;
};

struct tracked {
    struct list_node node;
    char *id;
};

struct executor_server {
    uv_loop_t *loop;
    struct runtime *rt; /* borrowed */
    uv_pipe_t listener;
    bool listening;
    char *path;
    struct list_node clients;
    struct list_node orphans;  /* requests whose client left */
    struct list_node backlog;  /* exit events waiting for a client */
    size_t backlog_len;
    struct list_node backends; /* of struct tracked: running, for the hello */
    unsigned next_serial;
    unsigned open_handles;
    bool closing;
};

struct out_write {
    uv_write_t req;
    char *line;
};

static void server_unref(struct executor_server *s);

/* ---- backends we run ---- */

static void track(struct executor_server *s, const char *id)
{
    struct tracked *t = xcalloc(1, sizeof(*t));

    t->id = xstrdup(id);
    list_insert_tail(&s->backends, &t->node);
}

static void untrack(struct executor_server *s, const char *id)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &s->backends) {
        struct tracked *t = list_entry(pos, struct tracked, node);
        if (strcmp(t->id, id) == 0) {
            list_remove(&t->node);
            free(t->id);
            free(t);
        }
    }
}

/* ---- writing ---- */

static void client_close(struct client *c);

static void write_done(uv_write_t *req, int status)
{
    struct out_write *w = container_of(req, struct out_write, req);

    (void)status;
    free(w->line);
    free(w);
}

/* Sends one line; takes line. */
static void client_send(struct client *c, char *line)
{
    struct out_write *w;
    uv_buf_t b;

    if (c->closing) {
        free(line);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) > MAX_CLIENT_BACKLOG) {
        log_warn("executor client %u: not reading its messages, disconnecting it", c->serial);
        free(line);
        client_close(c);
        return;
    }
    w = xcalloc(1, sizeof(*w));
    w->line = line;
    b = uv_buf_init(line, (unsigned)strlen(line));
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, write_done) < 0) {
        free(w->line);
        free(w);
        client_close(c);
    }
}

static void broadcast(struct executor_server *s, const char *line)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &s->clients)
        client_send(list_entry(pos, struct client, node), xstrdup(line));
}

/* ---- runtime events ---- */

void executor_server_on_exit(void *server, const char *backend_id, int exit_code)
{
    struct executor_server *s = server;
    char *line = exec_encode_exit(backend_id, exit_code);

    untrack(s, backend_id);
    if (!list_empty(&s->clients)) {
        broadcast(s, line);
        free(line);
        return;
    }
    /* Nobody to tell now: keep it for the next client. */
    if (s->backlog_len >= MAX_QUEUED_EVENTS) {
        struct queued_line *old = list_entry(s->backlog.next, struct queued_line, node);
        log_warn("event backlog full, dropping the oldest event");
        list_remove(&old->node);
        free(old->line);
        free(old);
        s->backlog_len--;
    }
    struct queued_line *q = xcalloc(1, sizeof(*q));
    q->line = line;
    list_insert_tail(&s->backlog, &q->node);
    s->backlog_len++;
}

void executor_server_on_metrics(void *server, const struct backend_metrics *m)
{
    struct executor_server *s = server;
    char *line;

    if (list_empty(&s->clients))
        return; /* metrics are only worth something live */
    line = exec_encode_metrics(m);
    broadcast(s, line);
    free(line);
}

/* ---- requests ---- */

static void request_free(struct request *r)
{
    list_remove(&r->node);
    free(r->id);
    free(r->backend_id);
    free(r);
}

static void request_done(void *arg, const struct runtime_result *res)
{
    struct request *r = arg;
    struct client *c = r->client;

    if (r->kind == EXEC_SPAWN && res->status == 0)
        track(r->server, r->backend_id);
    /* Off the client's list first: a failed send closes the client, which walks that list. */
    list_remove(&r->node);
    if (c && r->kind == EXEC_SPAWN && res->status == 0 && res->pid > 0)
        client_send(c, exec_encode_process(r->backend_id, res->pid, exec_pid_namespace()));
    if (c)
        client_send(c, exec_encode_result(exec_response_kind(r->kind), r->id, res));
    request_free(r);
}

static void handle_request(struct client *c, struct exec_msg *m)
{
    struct executor_server *s = c->server;
    struct request *r = xcalloc(1, sizeof(*r));

    r->server = s;
    r->client = c;
    r->id = xstrdup(m->id);
    r->kind = m->kind;
    list_insert_tail(&c->reqs, &r->node);
    switch (m->kind) {
    case EXEC_PREPARE:
        r->op = runtime_prepare(s->rt, m->executable, request_done, r);
        break;
    case EXEC_SPAWN: {
        struct spawn_spec spec = {
            .backend_id = m->backend_id,
            .executable = m->executable,
            .key = m->has_key ? &m->key : NULL,
            .static_token = m->static_token,
        };
        r->backend_id = xstrdup(m->backend_id);
        r->op = runtime_spawn(s->rt, &spec, request_done, r);
        break;
    }
    case EXEC_TERMINATE:
        r->op = runtime_terminate(s->rt, m->backend_id, m->hard, request_done, r);
        break;
    case EXEC_WAIT_FOR_BACKEND:
        r->op = runtime_wait_ready(s->rt, m->backend_id, m->address, request_done, r);
        break;
    default:
        BUG("handle_request for kind %d", m->kind);
    }
}

static int handle_line(void *arg, const char *line, size_t len)
{
    struct client *c = arg;
    struct exec_msg m;
    struct buf err = BUF_INIT;

    if (!line) {
        log_warn("executor client %u: dropped a line of %zu bytes (longer than %u)", c->serial, len, EXEC_MAX_LINE);
        return 0;
    }
    if (len == 0)
        return 0;
    if (exec_msg_parse(line, len, &m, &err) < 0) {
        log_warn("executor client %u: dropped a malformed line: %s", c->serial, buf_cstr(&err));
        if (m.id) {
            enum exec_kind rk = exec_response_kind(m.kind);
            struct runtime_result res = {.status = -EINVAL, .error = (char *)buf_cstr(&err)};
            client_send(c, rk != EXEC_UNKNOWN ? exec_encode_result(rk, m.id, &res) : exec_encode_error(m.id, buf_cstr(&err)));
        }
    } else if (exec_response_kind(m.kind) == EXEC_UNKNOWN) {
        log_warn("executor client %u: dropped a %s message, which clients do not send", c->serial,
                 exec_kind_name(m.kind));
        if (m.id)
            client_send(c, exec_encode_error(m.id, "not a request"));
    } else if (!m.id) {
        log_warn("executor client %u: dropped a %s request without an id", c->serial, exec_kind_name(m.kind));
    } else {
        handle_request(c, &m);
    }
    exec_msg_release(&m);
    buf_release(&err);
    return c->closing ? 1 : 0;
}

/* ---- clients ---- */

static void client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    struct executor_server *s = c->server;

    line_reader_release(&c->reader);
    free(c);
    server_unref(s);
}

static void client_close(struct client *c)
{
    struct executor_server *s = c->server;
    struct list_node *pos, *tmp;

    if (c->closing)
        return;
    c->closing = true;
    list_remove(&c->node);
    list_for_each_safe(pos, tmp, &c->reqs) {
        struct request *r = list_entry(pos, struct request, node);
        if (r->kind == EXEC_WAIT_FOR_BACKEND) {
            /* Only the asker cared. */
            runtime_op_cancel(r->op);
            request_free(r);
            continue;
        }
        /* Let it finish: a spawn must still be tracked, a terminate still done. */
        r->client = NULL;
        list_remove(&r->node);
        list_insert_tail(&s->orphans, &r->node);
    }
    log_info("executor client %u: disconnected", c->serial);
    c->pipe.data = c;
    uv_close((uv_handle_t *)&c->pipe, client_closed);
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char slab[65536];

    (void)h;
    (void)suggested;
    *b = uv_buf_init(slab, sizeof(slab));
}

static void client_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct client *c = stream->data;

    if (nread == 0)
        return;
    if (nread < 0) {
        client_close(c);
        return;
    }
    line_reader_feed(&c->reader, b->base, (size_t)nread, handle_line, c);
}

static void on_connection(uv_stream_t *listener, int status)
{
    struct executor_server *s = listener->data;
    struct client *c;
    struct list_node *pos, *tmp;
    const char **ids;
    size_t n = 0;

    if (status < 0 || s->closing)
        return;
    c = xcalloc(1, sizeof(*c));
    c->server = s;
    c->serial = ++s->next_serial;
    list_init(&c->reqs);
    line_reader_init(&c->reader, EXEC_MAX_LINE);
    uv_pipe_init(s->loop, &c->pipe, 0);
    c->pipe.data = c;
    s->open_handles++;
    list_insert_tail(&s->clients, &c->node);
    if (uv_accept(listener, (uv_stream_t *)&c->pipe) < 0) {
        client_close(c);
        return;
    }
    log_info("executor client %u: connected", c->serial);
    /* Greet with what runs here, then what happened while nobody listened. */
    list_for_each_safe(pos, tmp, &s->backends) n++;
    ids = xcalloc(n + 1, sizeof(*ids));
    n = 0;
    list_for_each_safe(pos, tmp, &s->backends) ids[n++] = list_entry(pos, struct tracked, node)->id;
    client_send(c, exec_encode_hello(ids, n));
    free(ids);
    list_for_each_safe(pos, tmp, &s->backlog) {
        struct queued_line *q = list_entry(pos, struct queued_line, node);
        list_remove(&q->node);
        client_send(c, q->line);
        free(q);
    }
    s->backlog_len = 0;
    c->pipe.data = c;
    uv_read_start((uv_stream_t *)&c->pipe, client_alloc, client_read);
}

/* ---- the server ---- */

struct executor_server *executor_server_new(uv_loop_t *loop)
{
    struct executor_server *s = xcalloc(1, sizeof(*s));

    s->loop = loop;
    list_init(&s->clients);
    list_init(&s->orphans);
    list_init(&s->backlog);
    list_init(&s->backends);
    s->open_handles = 1; /* the server's own reference, dropped by close */
    return s;
}

int executor_server_listen(struct executor_server *s, const char *path, struct runtime *rt, struct buf *err)
{
    struct stat st;
    mode_t old;
    int rc;

    s->rt = rt;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            buf_printf(err, "'%s' exists and is not a socket", path);
            return -EEXIST;
        }
        unlink(path); /* stale, from a server that did not stop cleanly */
    }
    uv_pipe_init(s->loop, &s->listener, 0);
    s->listener.data = s;
    s->open_handles++;
    s->listening = true;
    /* Whoever reaches the socket can run programs: only our user may. */
    old = umask(0077);
    rc = uv_pipe_bind(&s->listener, path);
    umask(old);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&s->listener, 64, on_connection);
    if (rc < 0) {
        buf_printf(err, "cannot listen on '%s': %s", path, uv_strerror(rc));
        return -EADDRINUSE;
    }
    s->path = xstrdup(path);
    log_info("serving the %s runtime on '%s'", runtime_name(rt), path);
    return 0;
}

static void server_unref(struct executor_server *s)
{
    struct list_node *pos, *tmp;

    if (--s->open_handles > 0)
        return;
    list_for_each_safe(pos, tmp, &s->backlog) {
        struct queued_line *q = list_entry(pos, struct queued_line, node);
        free(q->line);
        free(q);
    }
    list_for_each_safe(pos, tmp, &s->backends) {
        struct tracked *t = list_entry(pos, struct tracked, node);
        free(t->id);
        free(t);
    }
    free(s->path);
    free(s);
}

static void listener_closed(uv_handle_t *h)
{
    server_unref(h->data);
}

void executor_server_close(struct executor_server *s)
{
    struct list_node *pos, *tmp;

    s->closing = true;
    list_for_each_safe(pos, tmp, &s->clients)
        client_close(list_entry(pos, struct client, node));
    /* Requests still running belong to the runtime, which is closed after us. */
    list_for_each_safe(pos, tmp, &s->orphans) {
        struct request *r = list_entry(pos, struct request, node);
        runtime_op_cancel(r->op);
        request_free(r);
    }
    if (s->listening) {
        uv_close((uv_handle_t *)&s->listener, listener_closed);
        if (s->path)
            unlink(s->path);
    }
    server_unref(s);
}
