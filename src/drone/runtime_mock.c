/* SPDX-License-Identifier: MIT */
/*
 * runtime_mock.c - fake backends for testing the layers above the runtime.
 *
 * Every mock backend answers on ONE shared port: a small HTTP server in
 * this file tells backends apart by the x-verified-backend request header,
 * the port-reuse design the proxy's header contract allows (DESIGN.md).
 * A request naming a running backend gets 200 and a JSON echo (backend id,
 * key, method, path, headers); one naming no running backend gets 404; one
 * without the header (a readiness probe) gets 200.
 *
 * Test hooks live in the executable under "mock" and make each step fail,
 * take time, or make the backend exit:
 *   {"mock": {"prepare_delay_ms":N, "prepare_error":"msg",
 *             "spawn_delay_ms":N,   "spawn_error":"msg",
 *             "ready_delay_ms":N,   "ready_error":"msg", "never_ready":true,
 *             "exit_after_ms":N,    "exit_code":C,
 *             "terminate_delay_ms":N, "ignore_soft_terminate":true,
 *             "terminate_error":"msg"}}
 * A soft terminate makes the backend exit 0 after terminate_delay_ms; one
 * that ignores it is killed (137) after the grace period; hard is 137 now.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <http_parser.h>

#include "../common/json_util.h"
#include "../common/log.h"
#include "../common/net.h"
#include "../common/xalloc.h"
#include "ready_probe.h"
#include "runtime.h"

#define EXIT_KILLED 137 /* 128 + SIGKILL, as Docker reports it */
#define MAX_REQUEST_HEAD (64u << 10)

struct mock_hooks {
    int64_t prepare_delay_ms, spawn_delay_ms, ready_delay_ms, exit_after_ms, terminate_delay_ms;
    const char *prepare_error, *spawn_error, *ready_error, *terminate_error; /* borrowed */
    bool never_ready, ignore_soft_terminate;
    int exit_code;
};

enum mock_state { MOCK_STARTING, MOCK_RUNNING, MOCK_EXITED };

struct mock_backend {
    struct list_node node; /* in runtime->backends */
    struct mock_runtime *mrt;
    char *id;
    char *key;             /* key name or NULL */
    char *static_token;
    enum mock_state state;
    uv_timer_t exit_timer; /* exit_after_ms, then terminate delays and grace */
    bool soft_sent;
    bool ignore_soft;
    int64_t terminate_delay_ms;
    int pending_exit_code;
    int64_t ready_delay_ms;
    char *ready_error;     /* owned, or NULL */
    bool never_ready;
    struct list_node waiters; /* of struct mock_delay (wait_ready) */
};

/* An operation that waits (a delay hook, or a probe) before completing. */
struct mock_delay {
    struct list_node node; /* in runtime->delays or backend->waiters */
    struct mock_runtime *mrt;
    struct runtime_op *op;
    uv_timer_t timer;
    struct ready_probe *probe;
    char *address;
    json_t *executable;    /* spawn: kept until the delay ends */
    struct mock_backend *backend;
    bool closing;
};

struct mock_conn {
    struct list_node node; /* in runtime->conns */
    struct mock_runtime *mrt;
    uv_tcp_t tcp;
    http_parser parser;
    struct buf field, value;  /* the header being read */
    struct buf url;
    char *backend_header;     /* x-verified-backend, owned */
    json_t *headers;
    bool last_was_value;
    size_t head_bytes;
    bool closing;
};

struct mock_runtime {
    struct runtime base; /* must be first */
    uv_tcp_t listener;
    uint16_t port;
    char *bind_ip;
    struct list_node backends;
    struct list_node delays;
    struct list_node conns;
    http_parser_settings settings;
};

static struct mock_runtime *to_mock(struct runtime *rt)
{
    assert(rt->ops == &runtime_mock_ops);
    return (struct mock_runtime *)rt;
}

static int64_t hook_int(const json_t *h, const char *name)
{
    const json_t *v = json_object_get(h, name);

    return json_is_integer(v) && json_integer_value(v) > 0 ? json_integer_value(v) : 0;
}

static void parse_hooks(const json_t *executable, struct mock_hooks *k)
{
    const json_t *h = json_object_get(executable, "mock");
    const json_t *code;

    memset(k, 0, sizeof(*k));
    if (!json_is_object(h))
        return;
    k->prepare_delay_ms = hook_int(h, "prepare_delay_ms");
    k->spawn_delay_ms = hook_int(h, "spawn_delay_ms");
    k->ready_delay_ms = hook_int(h, "ready_delay_ms");
    k->exit_after_ms = hook_int(h, "exit_after_ms");
    k->terminate_delay_ms = hook_int(h, "terminate_delay_ms");
    k->prepare_error = json_get_str(h, "prepare_error");
    k->spawn_error = json_get_str(h, "spawn_error");
    k->ready_error = json_get_str(h, "ready_error");
    k->terminate_error = json_get_str(h, "terminate_error");
    k->never_ready = json_is_true(json_object_get(h, "never_ready"));
    k->ignore_soft_terminate = json_is_true(json_object_get(h, "ignore_soft_terminate"));
    code = json_object_get(h, "exit_code");
    k->exit_code = json_is_integer(code) ? (int)json_integer_value(code) : 0;
}

static struct mock_backend *backend_find(struct mock_runtime *mrt, const char *id)
{
    struct list_node *pos, *tmp;

    list_for_each_safe(pos, tmp, &mrt->backends) {
        struct mock_backend *b = list_entry(pos, struct mock_backend, node);
        if (strcmp(b->id, id) == 0)
            return b;
    }
    return NULL;
}

/* ---- operations that wait ---- */

static void delay_free(void *ptr)
{
    struct mock_delay *d = ptr;

    free(d->address);
    json_decref(d->executable);
    free(d);
}

/* Ends d: completes its op (if not done) and frees d once its timer closes. */
static void delay_end(struct mock_delay *d)
{
    if (d->closing)
        return;
    d->closing = true;
    list_remove(&d->node);
    uv_timer_stop(&d->timer);
    runtime_close_handle(&d->mrt->base, (uv_handle_t *)&d->timer, delay_free, d);
}

static struct mock_delay *delay_new(struct mock_runtime *mrt, struct runtime_op *op)
{
    struct mock_delay *d = xcalloc(1, sizeof(*d));

    d->mrt = mrt;
    d->op = op;
    uv_timer_init(mrt->base.loop, &d->timer);
    d->timer.data = d;
    list_insert_tail(&mrt->delays, &d->node);
    op->impl = d;
    return d;
}

/* ---- backends ---- */

static void backend_free(void *ptr)
{
    struct mock_backend *b = ptr;

    free(b->id);
    free(b->key);
    free(b->static_token);
    free(b->ready_error);
    free(b);
}

static void backend_remove(struct mock_backend *b)
{
    list_remove(&b->node);
    uv_timer_stop(&b->exit_timer);
    runtime_close_handle(&b->mrt->base, (uv_handle_t *)&b->exit_timer, backend_free, b);
}

static void backend_exit(struct mock_backend *b, int code)
{
    struct mock_runtime *mrt = b->mrt;
    struct list_node *pos, *tmp;
    char *id;

    if (b->state == MOCK_EXITED)
        return;
    b->state = MOCK_EXITED;
    list_for_each_safe(pos, tmp, &b->waiters) {
        struct mock_delay *d = list_entry(pos, struct mock_delay, node);
        if (d->probe)
            ready_probe_stop(d->probe, -ECHILD, "backend exited before it was ready");
        else {
            runtime_op_complete(d->op, -ECHILD, "backend exited with code %d before it was ready", code);
            delay_end(d);
        }
    }
    id = xstrdup(b->id);
    backend_remove(b);
    log_info("backend %s: mock backend exited with code %d", id, code);
    runtime_emit_exit(&mrt->base, id, code);
    free(id);
}

static void exit_timer_cb(uv_timer_t *t)
{
    struct mock_backend *b = container_of(t, struct mock_backend, exit_timer);

    backend_exit(b, b->pending_exit_code);
}

/* ---- prepare ---- */

static void prepare_timer_cb(uv_timer_t *t)
{
    struct mock_delay *d = t->data;
    struct mock_hooks k;

    parse_hooks(d->executable, &k);
    if (k.prepare_error)
        runtime_op_complete(d->op, -EIO, "%s", k.prepare_error);
    else
        runtime_op_complete(d->op, 0, NULL);
    delay_end(d);
}

static void mock_prepare(struct runtime *rt, struct runtime_op *op, const json_t *executable)
{
    struct mock_runtime *mrt = to_mock(rt);
    struct mock_hooks k;
    struct mock_delay *d;

    parse_hooks(executable, &k);
    if (!k.prepare_delay_ms) {
        if (k.prepare_error)
            runtime_op_complete(op, -EIO, "%s", k.prepare_error);
        else
            runtime_op_complete(op, 0, NULL);
        return;
    }
    d = delay_new(mrt, op);
    d->executable = json_deep_copy(executable);
    uv_timer_start(&d->timer, prepare_timer_cb, (uint64_t)k.prepare_delay_ms, 0);
}

/* ---- spawn ---- */

static void spawn_finish(struct mock_backend *b, struct runtime_op *op, const struct mock_hooks *k)
{
    struct mock_runtime *mrt = b->mrt;

    if (k->spawn_error) {
        runtime_op_complete(op, -EIO, "%s", k->spawn_error);
        backend_remove(b);
        return;
    }
    b->state = MOCK_RUNNING;
    b->ignore_soft = k->ignore_soft_terminate;
    b->terminate_delay_ms = k->terminate_delay_ms;
    b->ready_delay_ms = k->ready_delay_ms;
    b->ready_error = k->ready_error ? xstrdup(k->ready_error) : NULL;
    b->never_ready = k->never_ready;
    if (k->exit_after_ms) {
        b->pending_exit_code = k->exit_code;
        uv_timer_start(&b->exit_timer, exit_timer_cb, (uint64_t)k->exit_after_ms, 0);
    }
    op->res.port = mrt->port;
    op->res.container_id = xasprintf("mock-%s", b->id);
    log_info("backend %s: mock backend running on shared port %u", b->id, mrt->port);
    runtime_op_complete(op, 0, NULL);
}

static void spawn_timer_cb(uv_timer_t *t)
{
    struct mock_delay *d = t->data;
    struct mock_hooks k;

    parse_hooks(d->executable, &k);
    spawn_finish(d->backend, d->op, &k);
    delay_end(d);
}

static void mock_spawn(struct runtime *rt, struct runtime_op *op, const struct spawn_spec *spec)
{
    struct mock_runtime *mrt = to_mock(rt);
    struct mock_backend *b;
    struct mock_hooks k;

    if (backend_find(mrt, spec->backend_id)) {
        runtime_op_complete(op, -EEXIST, "backend %s is already running here", spec->backend_id);
        return;
    }
    parse_hooks(spec->executable, &k);
    b = xcalloc(1, sizeof(*b));
    b->mrt = mrt;
    b->id = xstrdup(spec->backend_id);
    b->key = spec->key && spec->key->name ? xstrdup(spec->key->name) : NULL;
    b->static_token = spec->static_token ? xstrdup(spec->static_token) : NULL;
    b->state = MOCK_STARTING;
    list_init(&b->waiters);
    uv_timer_init(rt->loop, &b->exit_timer);
    list_insert_tail(&mrt->backends, &b->node);
    if (!k.spawn_delay_ms) {
        spawn_finish(b, op, &k);
        return;
    }
    struct mock_delay *d = delay_new(mrt, op);
    d->executable = json_deep_copy(spec->executable);
    d->backend = b;
    uv_timer_start(&d->timer, spawn_timer_cb, (uint64_t)k.spawn_delay_ms, 0);
}

/* ---- wait_ready ---- */

static void probe_done(void *arg, int status, const char *error)
{
    struct mock_delay *d = arg;

    d->probe = NULL;
    if (status < 0)
        runtime_op_complete(d->op, status, "%s", error ? error : strerror(-status));
    else
        runtime_op_complete(d->op, 0, NULL);
    delay_end(d);
}

static void ready_timer_cb(uv_timer_t *t)
{
    struct mock_delay *d = t->data;
    struct mock_runtime *mrt = d->mrt;
    struct mock_backend *b = d->backend; /* still running: its exit ends its waiters */
    struct buf err = BUF_INIT;

    if (b->ready_error) {
        runtime_op_complete(d->op, -EIO, "%s", b->ready_error);
        delay_end(d);
    } else if (b->never_ready) {
        runtime_op_complete(d->op, -ETIMEDOUT, "backend did not become ready in time");
        delay_end(d);
    } else {
        d->probe = ready_probe_start(mrt->base.loop, d->address, mrt->base.ready_timeout_ms, probe_done, d, &err);
        if (!d->probe) {
            runtime_op_complete(d->op, -EINVAL, "%s", buf_cstr(&err));
            delay_end(d);
        }
    }
    buf_release(&err);
}

static void mock_wait_ready(struct runtime *rt, struct runtime_op *op, const char *address)
{
    struct mock_runtime *mrt = to_mock(rt);
    struct mock_backend *b = backend_find(mrt, op->backend_id);
    struct mock_delay *d;

    if (!b || b->state != MOCK_RUNNING) {
        runtime_op_complete(op, -ESRCH, "backend %s is not running", op->backend_id);
        return;
    }
    d = delay_new(mrt, op);
    /* Waiters hang off their backend so that its exit can end them. */
    list_remove(&d->node);
    list_insert_tail(&b->waiters, &d->node);
    d->backend = b;
    d->address = xstrdup(address ? address : "");
    /* never_ready behaves like a backend that never answers: it times out. */
    uv_timer_start(&d->timer, ready_timer_cb,
                   b->never_ready ? rt->ready_timeout_ms : (uint64_t)b->ready_delay_ms, 0);
}

static void mock_cancel(struct runtime *rt, struct runtime_op *op)
{
    struct mock_delay *d = op->impl;

    (void)rt;
    if (!d || d->closing)
        return;
    if (d->probe) {
        ready_probe_stop(d->probe, -ECANCELED, "cancelled");
        return;
    }
    if (op->kind == RUNTIME_OP_SPAWN && d->backend)
        backend_remove(d->backend);
    runtime_op_complete(op, -ECANCELED, "cancelled");
    delay_end(d);
}

/* ---- terminate ---- */

static void mock_terminate(struct runtime *rt, struct runtime_op *op, bool hard)
{
    struct mock_runtime *mrt = to_mock(rt);
    struct mock_backend *b = backend_find(mrt, op->backend_id);

    if (!b || b->state == MOCK_EXITED) {
        op->res.was_running = false;
        runtime_op_complete(op, 0, NULL);
        return;
    }
    if (b->state == MOCK_STARTING) {
        /* Still inside a spawn delay: abort the start; nothing ran. */
        struct list_node *pos, *tmp;
        list_for_each_safe(pos, tmp, &mrt->delays) {
            struct mock_delay *d = list_entry(pos, struct mock_delay, node);
            if (d->backend == b && d->op->kind == RUNTIME_OP_SPAWN) {
                runtime_op_complete(d->op, -ECANCELED, "backend terminated before it started");
                delay_end(d);
            }
        }
        backend_remove(b);
        op->res.was_running = false;
        runtime_op_complete(op, 0, NULL);
        return;
    }
    op->res.was_running = true;
    if (hard) {
        b->pending_exit_code = EXIT_KILLED;
        uv_timer_start(&b->exit_timer, exit_timer_cb, 0, 0);
    } else if (!b->soft_sent) {
        b->soft_sent = true;
        if (b->ignore_soft) {
            b->pending_exit_code = EXIT_KILLED;
            uv_timer_start(&b->exit_timer, exit_timer_cb, rt->grace_ms, 0);
        } else {
            b->pending_exit_code = 0;
            uv_timer_start(&b->exit_timer, exit_timer_cb, (uint64_t)b->terminate_delay_ms, 0);
        }
    }
    runtime_op_complete(op, 0, NULL);
}

/* ---- the shared HTTP server ---- */

static void conn_free(void *ptr)
{
    struct mock_conn *c = ptr;

    buf_release(&c->field);
    buf_release(&c->value);
    buf_release(&c->url);
    free(c->backend_header);
    json_decref(c->headers);
    free(c);
}

static void conn_close(struct mock_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    list_remove(&c->node);
    runtime_close_handle(&c->mrt->base, (uv_handle_t *)&c->tcp, conn_free, c);
}

static void flush_header(struct mock_conn *c)
{
    if (c->field.len == 0)
        return;
    for (char *p = c->field.data; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    if (strcmp(c->field.data, "x-verified-backend") == 0) {
        free(c->backend_header);
        c->backend_header = xstrdup(buf_cstr(&c->value));
    }
    json_object_set_new(c->headers, c->field.data, json_string_safe(buf_cstr(&c->value)));
    buf_reset(&c->field);
    buf_reset(&c->value);
}

static int on_message_begin(http_parser *p)
{
    struct mock_conn *c = p->data;

    buf_reset(&c->url);
    buf_reset(&c->field);
    buf_reset(&c->value);
    free(c->backend_header);
    c->backend_header = NULL;
    json_decref(c->headers);
    c->headers = json_object();
    c->last_was_value = false;
    c->head_bytes = 0;
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct mock_conn *c = p->data;

    return buf_append(&c->url, at, n) < 0 ? -1 : 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct mock_conn *c = p->data;

    if (c->last_was_value)
        flush_header(c);
    c->last_was_value = false;
    c->head_bytes += n;
    return c->head_bytes > MAX_REQUEST_HEAD || buf_append(&c->field, at, n) < 0 ? -1 : 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct mock_conn *c = p->data;

    c->last_was_value = true;
    c->head_bytes += n;
    return c->head_bytes > MAX_REQUEST_HEAD || buf_append(&c->value, at, n) < 0 ? -1 : 0;
}

static int on_headers_complete(http_parser *p)
{
    flush_header(p->data);
    return 0;
}

struct mock_write {
    uv_write_t req;
    struct mock_conn *conn;
    char *data;
    bool close_after; /* the client did not ask for keep-alive */
};

static void write_done(uv_write_t *req, int status)
{
    struct mock_write *w = container_of(req, struct mock_write, req);

    if (status < 0 || w->close_after)
        conn_close(w->conn);
    free(w->data);
    free(w);
}

static void respond(struct mock_conn *c, int code, const char *reason, const char *body, bool head, bool keep)
{
    struct buf out = BUF_INIT;
    struct mock_write *w = xcalloc(1, sizeof(*w));
    uv_buf_t b;

    buf_printf(&out,
               "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
               "Server: plane-mock\r\nConnection: %s\r\n\r\n",
               code, reason, strlen(body), keep ? "keep-alive" : "close");
    if (!head)
        buf_append_str(&out, body);
    b = uv_buf_init(out.data, (unsigned)out.len);
    w->conn = c;
    w->close_after = !keep;
    w->data = buf_detach(&out);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_done) < 0) {
        free(w->data);
        free(w);
        conn_close(c);
    }
}

static int on_message_complete(http_parser *p)
{
    struct mock_conn *c = p->data;
    struct mock_runtime *mrt = c->mrt;
    bool head = p->method == HTTP_HEAD;
    bool keep = http_should_keep_alive(p);
    json_t *o;
    char *body;

    if (!c->backend_header) {
        o = json_pack("{s:b, s:i}", "mock", 1, "port", (int)mrt->port);
        body = json_dumps(o, JSON_COMPACT);
        respond(c, 200, "OK", body, head, keep);
    } else {
        struct mock_backend *b = backend_find(mrt, c->backend_header);
        if (!b || b->state != MOCK_RUNNING) {
            o = json_pack("{s:s, s:o}", "error", "no such backend", "backend_id", json_string_safe(c->backend_header));
            body = json_dumps(o, JSON_COMPACT);
            respond(c, 404, "Not Found", body, head, keep);
        } else {
            o = json_pack("{s:s, s:o, s:s, s:o, s:o, s:O}", "backend_id", b->id, "key",
                          b->key ? json_string(b->key) : json_null(), "method",
                          http_method_str((enum http_method)p->method), "path", json_string_safe(buf_cstr(&c->url)),
                          "static_token", b->static_token ? json_string(b->static_token) : json_null(),
                          "headers", c->headers);
            body = json_dumps(o, JSON_COMPACT);
            respond(c, 200, "OK", body, head, keep);
        }
    }
    free(body);
    json_decref(o);
    if (!keep)
        uv_read_stop((uv_stream_t *)&c->tcp); /* closed once the reply is out */
    return 0;
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char slab[65536]; /* the loop is single-threaded and reads finish before the next */

    (void)h;
    (void)suggested;
    *b = uv_buf_init(slab, sizeof(slab));
}

static void conn_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct mock_conn *c = container_of((uv_tcp_t *)s, struct mock_conn, tcp);
    size_t n;

    if (nread == 0)
        return;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    n = http_parser_execute(&c->parser, &c->mrt->settings, b->base, (size_t)nread);
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || c->parser.upgrade || n != (size_t)nread) {
        static const char bad[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        uv_buf_t out = uv_buf_init((char *)bad, sizeof(bad) - 1);
        uv_try_write(s, &out, 1);
        conn_close(c);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct mock_runtime *mrt = container_of((uv_tcp_t *)server, struct mock_runtime, listener);
    struct mock_conn *c;

    if (status < 0)
        return;
    c = xcalloc(1, sizeof(*c));
    c->mrt = mrt;
    buf_init(&c->url, MAX_REQUEST_HEAD);
    buf_init(&c->field, MAX_REQUEST_HEAD);
    buf_init(&c->value, MAX_REQUEST_HEAD);
    c->headers = json_object();
    uv_tcp_init(mrt->base.loop, &c->tcp);
    list_insert_tail(&mrt->conns, &c->node);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
}

/* ---- open / close ---- */

/* A listening socket on addr, made without libuv so failure leaves no handle. */
static int listen_socket(const struct sockaddr_storage *ss, int *out)
{
    socklen_t len = ss->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    int one = 1;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int rc;

    if (fd == -1)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)ss, len) == -1 || listen(fd, 511) == -1) {
        rc = -errno;
        close(fd);
        return rc;
    }
    *out = fd;
    return 0;
}

static int mock_open(struct runtime **out, const struct runtime_config *cfg, struct buf *err)
{
    struct mock_runtime *mrt;
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char addr[NET_ADDR_LEN];
    int fd = -1;
    int rc;

    net_addr_format(addr, cfg->bind_ip ? cfg->bind_ip : "127.0.0.1", (uint16_t)(cfg->mock_port ? cfg->mock_port : 1));
    if (cfg->mock_port > 65535 || net_addr_parse(addr, &ss) < 0) {
        buf_printf(err, "invalid mock listen address '%s'", addr);
        return -EINVAL;
    }
    if (!cfg->mock_port) /* port 0: any free one (the port field is at the same offset for v6) */
        ((struct sockaddr_in *)&ss)->sin_port = 0;
    rc = listen_socket(&ss, &fd);
    if (rc < 0) {
        buf_printf(err, "mock runtime cannot listen on %s: %s", addr, strerror(-rc));
        return rc;
    }
    getsockname(fd, (struct sockaddr *)&ss, &len);
    mrt = xcalloc(1, sizeof(*mrt));
    mrt->bind_ip = xstrdup(cfg->bind_ip ? cfg->bind_ip : "127.0.0.1");
    mrt->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    list_init(&mrt->backends);
    list_init(&mrt->delays);
    list_init(&mrt->conns);
    http_parser_settings_init(&mrt->settings);
    mrt->settings.on_message_begin = on_message_begin;
    mrt->settings.on_url = on_url;
    mrt->settings.on_header_field = on_header_field;
    mrt->settings.on_header_value = on_header_value;
    mrt->settings.on_headers_complete = on_headers_complete;
    mrt->settings.on_message_complete = on_message_complete;
    uv_tcp_init(cfg->loop, &mrt->listener);
    uv_tcp_open(&mrt->listener, fd);
    uv_listen((uv_stream_t *)&mrt->listener, 511, on_connection);
    log_info("mock runtime: backends share %s:%u", mrt->bind_ip, mrt->port);
    *out = &mrt->base;
    return 0;
}

static void mock_close(struct runtime *rt)
{
    struct mock_runtime *mrt = to_mock(rt);
    struct list_node *pos, *tmp;

    runtime_close_handle(rt, (uv_handle_t *)&mrt->listener, NULL, NULL);
    list_for_each_safe(pos, tmp, &mrt->conns)
        conn_close(list_entry(pos, struct mock_conn, node));
    list_for_each_safe(pos, tmp, &mrt->delays) {
        struct mock_delay *d = list_entry(pos, struct mock_delay, node);
        if (!d->op->completed)
            runtime_op_complete(d->op, -ESHUTDOWN, "runtime closed");
        delay_end(d);
    }
    list_for_each_safe(pos, tmp, &mrt->backends) {
        struct mock_backend *b = list_entry(pos, struct mock_backend, node);
        struct list_node *wp, *wt;
        list_for_each_safe(wp, wt, &b->waiters) {
            struct mock_delay *d = list_entry(wp, struct mock_delay, node);
            if (d->probe)
                ready_probe_stop(d->probe, -ESHUTDOWN, "runtime closed");
            else {
                if (!d->op->completed)
                    runtime_op_complete(d->op, -ESHUTDOWN, "runtime closed");
                delay_end(d);
            }
        }
        backend_remove(b);
    }
}

static void mock_free(struct runtime *rt)
{
    struct mock_runtime *mrt = to_mock(rt);

    free(mrt->bind_ip);
    free(mrt);
}

const struct runtime_ops runtime_mock_ops = {
    .name = "mock",
    .caps = RUNTIME_CAP_SHARED_PORT,
    .open = mock_open,
    .close = mock_close,
    .free = mock_free,
    .prepare = mock_prepare,
    .spawn = mock_spawn,
    .wait_ready = mock_wait_ready,
    .terminate = mock_terminate,
    .cancel = mock_cancel,
};
